//! Endpoint security (SSRF) policy: which node endpoints a public directory may register, and
//! which addresses it may dial.
//!
//! A directory dials endpoints that strangers registered (liveness probes, health checks). Without
//! this policy a node could register `http://169.254.169.254/` or a name that resolves to the
//! directory's own loopback and make the directory probe its own network for it. Refusals map to
//! `IICP-E035` (422).
//!
//! The policy is applied twice, because a name can change between the two looks (DNS rebinding):
//!
//! 1. at registration, on the URL's host *by name* ([`EndpointPolicy::check_url_host`]), and
//! 2. before every connection, on the whole DNS answer ([`EndpointPolicy::check_resolved`]);
//!    the caller then connects to one of those validated addresses (keeping the original TLS
//!    hostname) instead of resolving again.
//!
//! Pure policy, no I/O: the caller resolves and connects. Ranges are written out explicitly
//! (IANA special-purpose registries) because most of std's `is_global`-style helpers are
//! unstable.

use crate::error::{ErrorBody, ErrorCode};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Most redirects a dial-back follows (spec: "maximum 3").
pub const MAX_REDIRECTS: u32 = 3;

/// Name suffixes that never resolve publicly: special-use names (RFC 6761, 6762, 8375, 9476,
/// 7686) and the private TLDs commonly used on internal networks. Matched on whole labels.
pub const RESERVED_SUFFIXES: &[&str] = &[
    "local",
    "localhost",
    "test",
    "example",
    "invalid",
    "lan",
    "internal",
    "localdomain",
    "home.arpa",
    "intranet",
    "corp",
    "private",
    "onion",
    "alt",
];

/// What a deployment allows. `allow_private` is the explicit local/dev opt-in.
///
/// The default (`allow_private: false`) is the public-directory policy: every address must be
/// globally routable. Even with the opt-in, unspecified, `0.0.0.0/8`, multicast and broadcast
/// addresses are refused, since they are never a single reachable host (and `0.0.0.0` reaches
/// the local machine on many systems).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub allow_private: bool,
}

/// Why an endpoint or address was refused.
///
/// `Display` is the caller-facing message: it names the rule, never a resolved address (that
/// would let a caller map the directory's own DNS view). The fields are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefusal {
    /// The URL is not `http` or `https`.
    #[error("endpoint must be an http or https URL")]
    NotHttp,
    /// The URL has no host (or only dots).
    #[error("endpoint URL has no host")]
    MissingHost,
    /// `localhost` or a name under `.localhost`.
    #[error("endpoint host must not be localhost")]
    Localhost,
    /// A name under a reserved, non-public suffix (the field is the suffix, e.g. `local`).
    #[error("endpoint host uses the reserved suffix .{0}, which is not publicly resolvable")]
    ReservedName(&'static str),
    /// A single-label name (e.g. a container service name); the field is the name.
    #[error("endpoint host must be a fully qualified public domain name, not a bare hostname")]
    BareHostname(String),
    /// The address is in a special-purpose range (the field names it).
    #[error("endpoint address is not publicly routable ({1})")]
    NonGlobalAddress(IpAddr, &'static str),
    /// The DNS answer mixes allowed and refused addresses; the fields are the first refused one.
    #[error("endpoint host resolves to both public and non-public addresses")]
    MixedAnswer(IpAddr, &'static str),
    /// The DNS answer was empty.
    #[error("endpoint host did not resolve to any address")]
    NoAddresses,
}

impl EndpointRefusal {
    /// The catalogue code to answer with: malformed URLs are a `validation_error`, everything
    /// else is `IICP-E035` (endpoint not publicly routable).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            EndpointRefusal::NotHttp | EndpointRefusal::MissingHost => ErrorCode::ValidationError,
            _ => ErrorCode::E035NonRoutableEndpoint,
        }
    }

    /// The error envelope, with the caller-facing message.
    pub fn to_error_body(&self) -> ErrorBody {
        self.error_code().with_message(self.to_string())
    }
}

impl EndpointPolicy {
    /// The public-directory policy: only globally routable endpoints.
    pub const PUBLIC: EndpointPolicy = EndpointPolicy {
        allow_private: false,
    };
    /// The explicit local/dev opt-in.
    pub const PRIVATE_ALLOWED: EndpointPolicy = EndpointPolicy {
        allow_private: true,
    };

    /// Checks the host of an http(s) URL by name, before any resolution.
    ///
    /// IP literals are classified; the `url` crate has already normalised the WHATWG IPv4
    /// spellings (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`) into `Host::Ipv4`. Names are
    /// lowercased and stripped of trailing dots, then refused if they are localhost, under a
    /// [`RESERVED_SUFFIXES`] entry, or a bare single label.
    ///
    /// Returns `Ok(Some(ip))` for an IP literal and `Ok(None)` for a name that the caller must
    /// still resolve and pass to [`check_resolved`](Self::check_resolved).
    pub fn check_url_host(&self, url: &Url) -> Result<Option<IpAddr>, EndpointRefusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EndpointRefusal::NotHttp);
        }
        let name = match url.host() {
            None => return Err(EndpointRefusal::MissingHost),
            Some(Host::Ipv4(v4)) => return self.check_literal(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => return self.check_literal(IpAddr::V6(v6)),
            Some(Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
        };
        if name.is_empty() {
            return Err(EndpointRefusal::MissingHost);
        }
        // Belt and braces: a name that still reads as an address is treated as one.
        if let Ok(ip) = name.parse::<IpAddr>() {
            return self.check_literal(ip);
        }
        if self.allow_private {
            return Ok(None);
        }
        check_name(&name).map(|()| None)
    }

    /// Checks one address: the one actually connected to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EndpointRefusal> {
        match classify(ip) {
            None => Ok(()),
            Some(special) if self.allow_private && !special.never_dialable => Ok(()),
            Some(special) => Err(EndpointRefusal::NonGlobalAddress(ip, special.name)),
        }
    }

    /// Checks a whole DNS answer: it must be non-empty and every address must pass. A mixed
    /// answer is refused as a whole, because the connecting client may pick any of them.
    pub fn check_resolved(&self, addrs: &[IpAddr]) -> Result<(), EndpointRefusal> {
        if addrs.is_empty() {
            return Err(EndpointRefusal::NoAddresses);
        }
        let Some(refusal) = addrs.iter().find_map(|&ip| self.check_ip(ip).err()) else {
            return Ok(());
        };
        let any_allowed = addrs.iter().any(|&ip| self.check_ip(ip).is_ok());
        match refusal {
            EndpointRefusal::NonGlobalAddress(ip, range) if any_allowed => {
                Err(EndpointRefusal::MixedAnswer(ip, range))
            }
            other => Err(other),
        }
    }

    /// Whether a dial-back may follow a redirect: only same-origin 307/308 (which keep the
    /// method and body), and only while fewer than [`MAX_REDIRECTS`] have been followed.
    ///
    /// `hops_so_far` counts redirects already followed. A `true` is not the end of it: the
    /// caller re-resolves the target and passes it through [`check_resolved`](Self::check_resolved).
    pub fn allows_redirect(&self, status: u16, same_origin: bool, hops_so_far: u32) -> bool {
        matches!(status, 307 | 308) && same_origin && hops_so_far < MAX_REDIRECTS
    }

    fn check_literal(&self, ip: IpAddr) -> Result<Option<IpAddr>, EndpointRefusal> {
        self.check_ip(ip).map(|()| Some(ip))
    }
}

/// Name rules for the public policy; `name` is lowercase without trailing dots.
fn check_name(name: &str) -> Result<(), EndpointRefusal> {
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(EndpointRefusal::Localhost);
    }
    for &suffix in RESERVED_SUFFIXES {
        let under = name
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
        if under {
            return Err(EndpointRefusal::ReservedName(suffix));
        }
    }
    if !name.contains('.') {
        return Err(EndpointRefusal::BareHostname(name.to_owned()));
    }
    Ok(())
}

/// The special-purpose range an address falls in, or `None` if it is globally routable.
///
/// IPv4-mapped, NAT64 (`64:ff9b::/96`) and 6to4 addresses are classified by the IPv4 address
/// they carry, so `::ffff:127.0.0.1` is loopback and `::ffff:93.184.216.34` is global.
pub fn classify_ip(ip: IpAddr) -> Option<&'static str> {
    classify(ip).map(|special| special.name)
}

/// A special-purpose range: its name, and whether even the private opt-in must refuse it.
#[derive(Debug, Clone, Copy)]
struct Special {
    name: &'static str,
    never_dialable: bool,
}

const fn private(name: &'static str) -> Option<Special> {
    Some(Special {
        name,
        never_dialable: false,
    })
}

const fn never(name: &'static str) -> Option<Special> {
    Some(Special {
        name,
        never_dialable: true,
    })
}

fn classify(ip: IpAddr) -> Option<Special> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: u32, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    ip & mask == u32::from_be_bytes(net) & mask
}

fn in_v6(ip: u128, net: u128, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    ip & mask == net & mask
}

/// IANA IPv4 special-purpose ranges that are not globally reachable:
/// (network, prefix length, never dialable, name).
const V4_RANGES: &[([u8; 4], u32, bool, &str)] = &[
    // Broadcast lies inside 240/4 and 0.0.0.0 inside 0/8: the narrower entry comes first.
    ([255, 255, 255, 255], 32, true, "broadcast"),
    ([0, 0, 0, 0], 32, true, "unspecified"),
    ([0, 0, 0, 0], 8, true, "this network"),
    ([10, 0, 0, 0], 8, false, "private"),
    ([100, 64, 0, 0], 10, false, "shared address space (CGNAT)"),
    ([127, 0, 0, 0], 8, false, "loopback"),
    ([169, 254, 0, 0], 16, false, "link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, false, "private"),
    ([192, 0, 0, 0], 24, false, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, false, "documentation"),
    ([192, 88, 99, 0], 24, false, "6to4 relay anycast"),
    ([192, 168, 0, 0], 16, false, "private"),
    ([198, 18, 0, 0], 15, false, "benchmarking"),
    ([198, 51, 100, 0], 24, false, "documentation"),
    ([203, 0, 113, 0], 24, false, "documentation"),
    ([224, 0, 0, 0], 4, true, "multicast"),
    ([240, 0, 0, 0], 4, false, "reserved"),
];

fn classify_v4(ip: Ipv4Addr) -> Option<Special> {
    let n = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|(net, len, _, _)| in_v4(n, *net, *len))
        .map(|&(_, _, never_dialable, name)| Special {
            name,
            never_dialable,
        })
}

/// IANA IPv6 special-purpose ranges, plus everything outside global unicast `2000::/3`.
fn classify_v6(ip: Ipv6Addr) -> Option<Special> {
    let n = u128::from(ip);
    // The IPv4 address in the low 32 bits (mapped, compatible, NAT64). Truncation intended.
    let low_v4 = Ipv4Addr::from(n as u32);
    if ip.is_unspecified() {
        return never("unspecified");
    }
    if ip.is_loopback() {
        return private("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if in_v6(n, 0, 96) {
        // Deprecated IPv4-compatible (::a.b.c.d): never global, but name the embedded range
        // when it has one so `::127.0.0.1` reads as loopback.
        return classify_v4(low_v4).or(private("IPv4-compatible (deprecated)"));
    }
    if in_v6(n, 0x0064_ff9b << 96, 96) {
        return classify_v4(low_v4);
    }
    if in_v6(n, 0x0064_ff9b_0001 << 80, 48) {
        return private("NAT64 local-use");
    }
    if in_v6(n, 0x0100 << 112, 64) {
        return private("discard-only");
    }
    if in_v6(n, 0x2001_0db8 << 96, 32) || in_v6(n, 0x3fff << 112, 20) {
        return private("documentation");
    }
    if in_v6(n, 0x2001 << 112, 32) {
        return private("Teredo");
    }
    if in_v6(n, 0x2001 << 112, 23) {
        return private("IETF protocol assignments");
    }
    if in_v6(n, 0x2002 << 112, 16) {
        // 6to4: the relayed IPv4 address is bits 16..48.
        return classify_v4(Ipv4Addr::from((n >> 80) as u32));
    }
    if in_v6(n, 0x5f00 << 112, 16) {
        return private("segment routing (SRv6)");
    }
    if in_v6(n, 0xfc00 << 112, 7) {
        return private("unique local");
    }
    if in_v6(n, 0xfe80 << 112, 10) {
        return private("link-local");
    }
    if in_v6(n, 0xfec0 << 112, 10) {
        return private("site-local (deprecated)");
    }
    if ip.is_multicast() {
        return never("multicast");
    }
    if !in_v6(n, 0x2000 << 112, 3) {
        return private("not global unicast");
    }
    None
}
