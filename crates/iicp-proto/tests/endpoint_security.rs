//! Endpoint security (SSRF) policy: the spec's endpoint-security fixture, every URL spelling of a
//! non-public host we know of, and property tests.

use iicp_proto::endpoint::{classify_ip, EndpointPolicy, EndpointRefusal, MAX_REDIRECTS};
use iicp_proto::ErrorCode;
use proptest::prelude::*;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

const PUBLIC: EndpointPolicy = EndpointPolicy {
    allow_private: false,
};
const PRIVATE_OK: EndpointPolicy = EndpointPolicy {
    allow_private: true,
};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/endpoint-security-v1.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn vectors<'a>(fx: &'a Value, key: &str) -> &'a [Value] {
    let list = fx[key].as_array().expect("vector list");
    assert!(!list.is_empty(), "{key} is empty");
    list
}

fn policy_of(v: &Value) -> EndpointPolicy {
    EndpointPolicy {
        allow_private: v["allow_private"].as_bool().expect("allow_private"),
    }
}

fn addrs(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .expect("address list")
        .iter()
        .map(|a| a.as_str().expect("string").parse().expect("IP address"))
        .collect()
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

// ---- 1. spec fixture -------------------------------------------------------------------------

#[test]
fn fixture_address_vectors() {
    let fx = fixture();
    for v in vectors(&fx, "address_vectors") {
        let id = v["id"].as_str().expect("id");
        let got = policy_of(v).check_resolved(&addrs(&v["addresses"]));
        let allowed = v["allowed"].as_bool().expect("allowed");
        assert_eq!(got.is_ok(), allowed, "{id}: {got:?}");
    }
}

#[test]
fn fixture_hostname_vectors() {
    let fx = fixture();
    for v in vectors(&fx, "hostname_vectors") {
        let host = v["host"].as_str().expect("host");
        let got = PUBLIC.check_url_host(&url(&format!("https://{host}/")));
        let allowed = v["allowed"].as_bool().expect("allowed");
        assert_eq!(got.is_ok(), allowed, "{host}: {got:?}");
        if allowed {
            assert_eq!(got, Ok(None), "{host}: a name must still be resolved");
        }
    }
}

#[test]
fn fixture_resolution_attempt_vectors() {
    let fx = fixture();
    for v in vectors(&fx, "resolution_attempt_vectors") {
        let id = v["id"].as_str().expect("id");
        let policy = policy_of(v);
        let attempts = v["attempts"].as_array().expect("attempts");
        let expected = v["expected"].as_array().expect("expected");
        assert_eq!(attempts.len(), expected.len(), "{id}");
        for (i, (attempt, want)) in attempts.iter().zip(expected).enumerate() {
            let got = match policy.check_resolved(&addrs(attempt)) {
                Ok(()) => "allow",
                Err(_) => "refuse",
            };
            assert_eq!(got, want.as_str().expect("string"), "{id} attempt {i}");
        }
    }
}

#[test]
fn fixture_redirect_vectors() {
    let fx = fixture();
    for v in vectors(&fx, "redirect_vectors") {
        let id = v["id"].as_str().expect("id");
        let policy = policy_of(v);
        let status = u16::try_from(v["status"].as_u64().expect("status")).expect("u16");
        let same_origin = v["same_origin"].as_bool().expect("same_origin");
        let follow = policy.allows_redirect(status, same_origin, 0)
            && policy
                .check_resolved(&addrs(&v["target_addresses"]))
                .is_ok();
        let got = if follow {
            "follow_after_revalidation"
        } else {
            "refuse"
        };
        assert_eq!(got, v["expected"].as_str().expect("expected"), "{id}");
    }
}

// ---- 2. URL spellings ------------------------------------------------------------------------

#[test]
fn url_crate_normalises_ipv4_spellings_to_ip_hosts() {
    let loopback = Ipv4Addr::new(127, 0, 0, 1);
    for s in [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://127.0.0.1./",
    ] {
        assert_eq!(url(s).host(), Some(Host::Ipv4(loopback)), "{s}");
        let refusal = PUBLIC.check_url_host(&url(s));
        assert_eq!(
            refusal,
            Err(EndpointRefusal::NonGlobalAddress(
                IpAddr::V4(loopback),
                "loopback"
            )),
            "{s}"
        );
    }
}

#[test]
fn every_non_public_spelling_is_refused() {
    use EndpointRefusal::*;
    let addr = |ip: &str, range| NonGlobalAddress(ip.parse().expect("ip"), range);
    let cases: Vec<(&str, EndpointRefusal)> = vec![
        ("http://127.0.0.1", addr("127.0.0.1", "loopback")),
        ("http://2130706433/", addr("127.0.0.1", "loopback")),
        ("http://0x7f000001/", addr("127.0.0.1", "loopback")),
        ("http://0177.0.0.1/", addr("127.0.0.1", "loopback")),
        ("http://0x7f.0.0.1/", addr("127.0.0.1", "loopback")),
        ("http://127.1/", addr("127.0.0.1", "loopback")),
        ("http://[::1]/", addr("::1", "loopback")),
        (
            "http://[::ffff:127.0.0.1]/",
            addr("::ffff:127.0.0.1", "loopback"),
        ),
        (
            "http://[::ffff:7f00:1]/",
            addr("::ffff:127.0.0.1", "loopback"),
        ),
        ("http://[::127.0.0.1]/", addr("::127.0.0.1", "loopback")),
        (
            "http://[64:ff9b::7f00:1]/",
            addr("64:ff9b::7f00:1", "loopback"),
        ),
        (
            "http://[64:ff9b::a00:1]/",
            addr("64:ff9b::a00:1", "private"),
        ),
        ("http://[2002:7f00:1::]/", addr("2002:7f00:1::", "loopback")),
        ("http://[fe80::1]/", addr("fe80::1", "link-local")),
        ("http://[fd00::1]/", addr("fd00::1", "unique local")),
        ("http://10.0.0.1/", addr("10.0.0.1", "private")),
        ("http://172.16.5.4/", addr("172.16.5.4", "private")),
        ("http://192.168.1.1/", addr("192.168.1.1", "private")),
        (
            "http://169.254.169.254/",
            addr("169.254.169.254", "link-local (cloud metadata)"),
        ),
        (
            "http://100.64.0.1/",
            addr("100.64.0.1", "shared address space (CGNAT)"),
        ),
        ("http://0.0.0.0/", addr("0.0.0.0", "unspecified")),
        ("http://localhost/", Localhost),
        ("http://foo.localhost/", Localhost),
        ("http://LOCALHOST./", Localhost),
        ("http://node.local/", ReservedName("local")),
        ("http://node.local./", ReservedName("local")),
        ("http://x.internal/", ReservedName("internal")),
        ("http://a.test/", ReservedName("test")),
        ("http://b.example/", ReservedName("example")),
        ("http://c.invalid/", ReservedName("invalid")),
        ("http://d.lan/", ReservedName("lan")),
        ("http://router.home.arpa/", ReservedName("home.arpa")),
        ("http://ollama/", BareHostname("ollama".into())),
        ("http://ollama./", BareHostname("ollama".into())),
        ("ftp://93.184.216.34/", NotHttp),
    ];
    for (s, want) in cases {
        let got = PUBLIC.check_url_host(&url(s));
        assert_eq!(got, Err(want.clone()), "{s}");
        let code = want.error_code();
        let expected = if matches!(want, NotHttp) {
            ErrorCode::ValidationError
        } else {
            ErrorCode::E035NonRoutableEndpoint
        };
        assert_eq!(code, expected, "{s}");
        assert_eq!(code.http_status(), 422, "{s}");
    }
}

#[test]
fn public_endpoints_are_accepted() {
    let cases: [(&str, Option<IpAddr>); 6] = [
        (
            "https://93.184.216.34/",
            Some("93.184.216.34".parse().expect("ip")),
        ),
        (
            "https://[2606:4700::1111]/",
            Some("2606:4700::1111".parse().expect("ip")),
        ),
        (
            "https://[::ffff:93.184.216.34]/",
            Some("::ffff:93.184.216.34".parse().expect("ip")),
        ),
        (
            "https://[64:ff9b::5db8:d822]/",
            Some("64:ff9b::5db8:d822".parse().expect("ip")),
        ),
        ("https://provider.example.com/", None),
        ("https://provider.example.com.:8443/v1", None),
    ];
    for (s, want) in cases {
        assert_eq!(PUBLIC.check_url_host(&url(s)), Ok(want), "{s}");
    }
    // A label that merely contains a reserved word is fine; only whole trailing labels count.
    for s in [
        "https://local.example.org/",
        "https://mytest.io/",
        "https://corporate.com/",
    ] {
        assert_eq!(PUBLIC.check_url_host(&url(s)), Ok(None), "{s}");
    }
}

#[test]
fn private_opt_in_allows_local_but_never_unspecified_or_multicast() {
    for s in [
        "http://127.0.0.1:11434/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://169.254.169.254/",
    ] {
        let got = PRIVATE_OK.check_url_host(&url(s));
        assert!(matches!(got, Ok(Some(_))), "{s}: {got:?}");
    }
    for s in ["http://localhost/", "http://ollama/", "http://node.local/"] {
        assert_eq!(PRIVATE_OK.check_url_host(&url(s)), Ok(None), "{s}");
    }
    for (s, range) in [
        ("http://0.0.0.0/", "unspecified"),
        ("http://0/", "unspecified"),
        ("http://0.1.2.3/", "this network"),
        ("http://[::]/", "unspecified"),
        ("http://[::ffff:0.0.0.0]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://239.255.255.250/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
    ] {
        let got = PRIVATE_OK.check_url_host(&url(s));
        assert!(
            matches!(got, Err(EndpointRefusal::NonGlobalAddress(_, r)) if r == range),
            "{s}: {got:?}"
        );
    }
    // The same rule applies to resolved answers.
    let zero: IpAddr = Ipv4Addr::UNSPECIFIED.into();
    assert!(PRIVATE_OK.check_resolved(&[zero]).is_err());
    assert!(PRIVATE_OK
        .check_resolved(&[
            "127.0.0.1".parse().expect("ip"),
            "10.1.1.1".parse().expect("ip")
        ])
        .is_ok());
}

// ---- classification, answers, redirects --------------------------------------------------------

#[test]
fn classify_ip_names_every_range() {
    let cases = [
        ("0.1.2.3", Some("this network")),
        ("10.255.255.255", Some("private")),
        ("100.127.255.255", Some("shared address space (CGNAT)")),
        ("100.128.0.0", None),
        ("172.31.255.255", Some("private")),
        ("172.32.0.0", None),
        ("192.0.0.8", Some("IETF protocol assignments")),
        ("192.0.2.1", Some("documentation")),
        ("198.51.100.1", Some("documentation")),
        ("203.0.113.1", Some("documentation")),
        ("192.88.99.1", Some("6to4 relay anycast")),
        ("198.19.255.255", Some("benchmarking")),
        ("198.20.0.0", None),
        ("240.0.0.1", Some("reserved")),
        ("255.255.255.255", Some("broadcast")),
        ("8.8.8.8", None),
        ("::", Some("unspecified")),
        ("::8.8.8.8", Some("IPv4-compatible (deprecated)")),
        ("::ffff:10.0.0.1", Some("private")),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("64:ff9b:1::1", Some("NAT64 local-use")),
        ("100::1", Some("discard-only")),
        ("2001::1", Some("Teredo")),
        ("2001:100::1", Some("IETF protocol assignments")),
        ("2001:200::1", None),
        ("2001:db8::1", Some("documentation")),
        ("3fff::1", Some("documentation")),
        ("2002:808:808::1", None),
        ("2002:a9fe:a9fe::1", Some("link-local (cloud metadata)")),
        ("5f00::1", Some("segment routing (SRv6)")),
        ("fec0::1", Some("site-local (deprecated)")),
        ("ff05::1", Some("multicast")),
        ("4000::1", Some("not global unicast")),
        ("2606:4700:4700::1111", None),
    ];
    for (ip, want) in cases {
        assert_eq!(classify_ip(ip.parse().expect("ip")), want, "{ip}");
    }
}

#[test]
fn answers_must_be_non_empty_and_all_global() {
    assert_eq!(
        PUBLIC.check_resolved(&[]),
        Err(EndpointRefusal::NoAddresses)
    );
    assert_eq!(
        PRIVATE_OK.check_resolved(&[]),
        Err(EndpointRefusal::NoAddresses)
    );
    let public: IpAddr = "93.184.216.34".parse().expect("ip");
    let metadata: IpAddr = "169.254.169.254".parse().expect("ip");
    let refusal = PUBLIC.check_resolved(&[public, metadata]);
    assert_eq!(
        refusal,
        Err(EndpointRefusal::MixedAnswer(
            metadata,
            "link-local (cloud metadata)"
        ))
    );
    // The caller-facing message never reveals what the directory resolved.
    let message = refusal.expect_err("refused").to_string();
    assert!(!message.contains("169.254"), "{message}");
    let all_private = PUBLIC.check_resolved(&[metadata, "10.0.0.1".parse().expect("ip")]);
    assert!(matches!(
        all_private,
        Err(EndpointRefusal::NonGlobalAddress(ip, _)) if ip == metadata
    ));
    let body = EndpointRefusal::Localhost.to_error_body();
    let json = serde_json::to_value(&body).expect("serialises");
    assert_eq!(json["error"]["code"], "IICP-E035");
}

#[test]
fn redirects_only_same_origin_307_308_up_to_three_hops() {
    for status in [307, 308] {
        for hops in 0..MAX_REDIRECTS {
            assert!(
                PUBLIC.allows_redirect(status, true, hops),
                "{status} {hops}"
            );
        }
        assert!(!PUBLIC.allows_redirect(status, true, MAX_REDIRECTS));
        assert!(!PUBLIC.allows_redirect(status, false, 0));
        assert!(!PRIVATE_OK.allows_redirect(status, false, 0));
    }
    for status in [300, 301, 302, 303, 304, 200, 404] {
        assert!(!PUBLIC.allows_redirect(status, true, 0), "{status}");
    }
    assert_eq!(MAX_REDIRECTS, 3);
}

// ---- 3. properties ---------------------------------------------------------------------------

proptest! {
    #[test]
    fn check_ip_never_panics(bits in any::<u128>(), v4 in any::<u32>(), allow in any::<bool>()) {
        let policy = EndpointPolicy { allow_private: allow };
        let v6 = IpAddr::V6(Ipv6Addr::from(bits));
        let v4 = IpAddr::V4(Ipv4Addr::from(v4));
        for ip in [v6, v4] {
            let verdict = policy.check_ip(ip);
            // The policy and the classifier agree: anything global is allowed.
            if classify_ip(ip).is_none() {
                prop_assert!(verdict.is_ok());
            }
            if !allow {
                prop_assert_eq!(verdict.is_ok(), classify_ip(ip).is_none());
            }
        }
    }

    #[test]
    fn check_url_host_never_panics(
        host in prop_oneof!["\\PC{0,40}", "[0-9a-fx.:%\\[\\]]{0,40}"],
        allow in any::<bool>(),
    ) {
        let policy = EndpointPolicy { allow_private: allow };
        for s in [format!("http://{host}/"), format!("https://[{host}]/"), host.clone()] {
            if let Ok(u) = Url::parse(&s) {
                let _ = policy.check_url_host(&u);
            }
        }
    }

    #[test]
    fn every_address_in_10_slash_8_is_refused(low in 0u32..(1 << 24)) {
        let ip = Ipv4Addr::from((10 << 24) | low);
        prop_assert_eq!(
            PUBLIC.check_ip(IpAddr::V4(ip)),
            Err(EndpointRefusal::NonGlobalAddress(IpAddr::V4(ip), "private"))
        );
        let mapped = IpAddr::V6(ip.to_ipv6_mapped());
        prop_assert!(PUBLIC.check_ip(mapped).is_err());
        let url = Url::parse(&format!("http://{ip}/")).expect("valid URL");
        prop_assert!(PUBLIC.check_url_host(&url).is_err());
        // The same address spelled as one decimal number.
        let decimal = Url::parse(&format!("http://{}/", u32::from(ip))).expect("valid URL");
        let verdict = PUBLIC.check_url_host(&decimal);
        prop_assert!(verdict.is_err());
        prop_assert!(PRIVATE_OK.check_ip(IpAddr::V4(ip)).is_ok());
    }
}
