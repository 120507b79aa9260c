//! The checks `iicp doctor` runs, in order, each ending in one [`Check`].

use super::{mesh, Check, DoctorArgs};
use crate::commands::node;
use crate::commands::occupant::{self, Occupant, Role};
use iicp_node::backend::BackendKind;
use iicp_proto::tokens::CONSUMER_TOKEN_GRACE_SECS;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Skew above this is worth a warning.
const SKEW_WARN_S: f64 = 5.0;
/// Skew above this breaks tokens: a provider allows consumer tokens 10 s of grace (digest
/// §2.17), and ticket lifetimes are short.
const SKEW_FAIL_S: f64 = CONSUMER_TOKEN_GRACE_SECS as f64;

pub(super) const START_BACKEND: &str = "start one: `ollama serve` then `ollama pull llama3.2`, or \
                             `llama-server -m model.gguf --port 8080`";

pub async fn run_all(args: DoctorArgs) -> Result<Vec<Check>, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let mut checks = vec![backend(&args).await];
    let dir = directory(&http, &args.directory).await;
    checks.push(dir.check.clone());
    checks.push(match (&dir.observed, dir.up) {
        (_, false) => Check::skip("clock", "the directory does not answer"),
        (observed, true) => clock(observed.as_ref()),
    });

    let mut found = Vec::new();
    for (role, given, default) in [
        (Role::Directory, Some(&args.directory), 8010),
        (Role::Node, args.node.as_ref(), 9484),
        (Role::Gateway, args.gateway.as_ref(), 9483),
    ] {
        let (check, addr, holder) = port(&http, role, given, default).await;
        checks.push(check);
        if matches!(holder, Occupant::Iicp { role: r, .. } if r == role) {
            found.push((role, addr));
        }
    }
    let here = |role: Role| {
        found
            .iter()
            .find(|(r, _)| *r == role)
            .and_then(|(_, addr)| url::Url::parse(&format!("http://{addr}")).ok())
    };

    let node_url = args.node.clone().or_else(|| here(Role::Node));
    let (node_check, advertised) = mesh::node_check(&http, node_url.as_ref(), &args, dir.up).await;
    checks.push(node_check);
    let gateway_url = args.gateway.clone().or_else(|| here(Role::Gateway));
    checks.push(mesh::gateway(&http, gateway_url.as_ref(), &args).await);
    let target = args.public_url.clone().or(advertised);
    checks.push(mesh::endpoint(&http, target.as_ref(), &args.directory, dir.up).await);
    Ok(checks)
}

/// An HTTP answer, reduced to what the checks read.
pub(super) struct Answer {
    pub status: u16,
    pub body: Option<Value>,
    /// The `Date` header, and our clock just before and just after the exchange.
    observed: Option<Observed>,
}

#[derive(Debug, Clone, Copy)]
struct Observed {
    date: SystemTime,
    before: SystemTime,
    after: SystemTime,
}

pub(super) fn join(base: &url::Url, path: &str) -> String {
    format!("{}{path}", base.as_str().trim_end_matches('/'))
}

pub(super) fn bare(url: &url::Url) -> &str {
    url.as_str().trim_end_matches('/')
}

fn reason(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.without_url().to_string()
    }
}

pub(super) async fn get(http: &reqwest::Client, url: &str) -> Result<Answer, String> {
    let before = SystemTime::now();
    let resp = http.get(url).send().await.map_err(reason)?;
    let after = SystemTime::now();
    let status = resp.status().as_u16();
    let observed = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(|date| Observed {
            date,
            before,
            after,
        });
    let body = resp.json::<Value>().await.ok();
    Ok(Answer {
        status,
        body,
        observed,
    })
}

/// A short list of names for a message.
pub(super) fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", … ({} in all)", names.len()));
    }
    text
}

pub(super) fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

async fn backend(args: &DoctorArgs) -> Check {
    const NAME: &str = "backend";
    let candidates = node::candidates(args.detect.as_deref());
    let explicit = args.backend.is_some();
    let Some((name, backend)) =
        node::choose_backend(args.backend.as_deref(), None, &candidates).await
    else {
        let mut seen = std::collections::BTreeSet::new();
        let places: Vec<&str> = candidates
            .iter()
            .map(|c| c.base_url.as_str())
            .filter(|u| seen.insert(*u))
            .collect();
        return Check::warn(
            NAME,
            format!("no local backend found (looked at {})", places.join(", ")),
            format!("{START_BACKEND}; none is needed if this machine only uses the mesh"),
        );
    };
    let url = backend.base_url().to_owned();
    match backend.models().await {
        Ok(models) if models.is_empty() => Check::warn(
            NAME,
            format!("{name} at {url} answers but has no models"),
            match backend.kind() {
                BackendKind::Ollama => "pull one: `ollama pull llama3.2`".to_owned(),
                _ => "load a model into it".to_owned(),
            },
        ),
        Ok(models) => {
            let names: Vec<String> = models.into_iter().map(|m| m.name).collect();
            Check::ok(
                NAME,
                format!(
                    "{name} at {url} serves {}: {}",
                    plural(names.len(), "model"),
                    some_names(&names)
                ),
            )
        }
        Err(e) => Check::fail(
            NAME,
            // A URL that does not answer says nothing about which server it is.
            format!(
                "{} at {url} does not answer ({e})",
                if explicit { "the backend" } else { name }
            ),
            if explicit {
                format!("start the backend, or correct --backend; to {START_BACKEND}")
            } else {
                format!("restart it, or {START_BACKEND}")
            },
        ),
    }
}

struct DirectoryState {
    check: Check,
    up: bool,
    observed: Option<Observed>,
}

/// Whether a URL's host is this machine.
fn local_addr_of(url: &url::Url) -> Option<SocketAddr> {
    let port = url.port_or_known_default()?;
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        url::Host::Domain(_) => return None,
    };
    (ip.is_loopback() || ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}

async fn directory(http: &reqwest::Client, url: &url::Url) -> DirectoryState {
    const NAME: &str = "directory";
    let fix_missing = if local_addr_of(url).is_some() {
        "start a local mesh with `iicp up`, or a directory alone with `iicp directory --dev`; \
         or pass --directory URL"
            .to_owned()
    } else {
        format!(
            "check the URL and the network: `curl {}` should answer",
            join(url, "/iicp/health")
        )
    };
    let health = match get(http, &join(url, "/iicp/health")).await {
        Ok(a) => a,
        Err(e) => {
            return DirectoryState {
                check: Check::fail(
                    NAME,
                    format!("nothing answers at {} ({e})", bare(url)),
                    fix_missing,
                ),
                up: false,
                observed: None,
            }
        }
    };
    let body = health.body.as_ref();
    if health.status == 200 && body.and_then(occupant::role_of) == Some(Role::Directory) {
        let n = |k: &str| {
            body.and_then(|b| b.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let version = body
            .and_then(|b| b.get("version"))
            .and_then(Value::as_str)
            .map(|v| format!("version {v}, "))
            .unwrap_or_default();
        return DirectoryState {
            check: Check::ok(
                NAME,
                format!(
                    "{} answers ({version}{} registered, {} active)",
                    bare(url),
                    plural(n("nodes_registered") as usize, "node"),
                    n("nodes_active")
                ),
            ),
            up: true,
            observed: health.observed,
        };
    }
    // Other implementations may not name their role in /iicp/health: ask /v1/stats.
    if let Ok(stats) = get(http, &join(url, "/v1/stats")).await {
        let looks_right = stats.status == 200
            && stats.body.as_ref().is_some_and(|b| {
                b.get("nodes_registered").is_some() || b.get("mesh_health").is_some()
            });
        if looks_right {
            return DirectoryState {
                check: Check::ok(NAME, format!("{} answers /v1/stats", bare(url))),
                up: true,
                observed: stats.observed.or(health.observed),
            };
        }
    }
    DirectoryState {
        check: Check::fail(
            NAME,
            format!(
                "{} answers (HTTP {} at /iicp/health), but not as an IICP directory",
                bare(url),
                health.status
            ),
            "check --directory; if it is the default port, see the port check below",
        ),
        up: false,
        observed: None,
    }
}

fn unix_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The smallest clock difference (directory minus local, in seconds) consistent with a `Date`
/// header (whole seconds, truncated) stamped somewhere between `before` and `after`.
fn skew_seconds(o: &Observed) -> f64 {
    let date = unix_f64(o.date);
    let (before, after) = (unix_f64(o.before), unix_f64(o.after));
    if date + 1.0 < before {
        date + 1.0 - before
    } else if date > after {
        date - after
    } else {
        0.0
    }
}

fn clock(observed: Option<&Observed>) -> Check {
    const NAME: &str = "clock";
    let Some(o) = observed else {
        return Check::skip(NAME, "the directory sent no Date header to compare with");
    };
    let skew = skew_seconds(o);
    let side = if skew > 0.0 { "behind" } else { "ahead of" };
    let fix = format!(
        "turn on time sync (`timedatectl set-ntp true`, chrony or ntpd); tokens allow only \
         {CONSUMER_TOKEN_GRACE_SECS} s of skew"
    );
    let amount = skew.abs();
    let message = format!("this machine's clock is {amount:.1} s {side} the directory's");
    if amount == 0.0 {
        Check::ok(
            NAME,
            "this machine's clock is within 1 s of the directory's",
        )
    } else if amount <= SKEW_WARN_S {
        Check::ok(NAME, message)
    } else if amount <= SKEW_FAIL_S {
        Check::warn(NAME, message, fix)
    } else {
        Check::fail(NAME, message, fix)
    }
}

/// Who holds the port `role` uses here: the port of its URL when that is this machine, else the
/// default. A stranger on a port this setup needs is a failure; on the default port of a role
/// that is elsewhere, only a warning (it would stop `iicp up`).
async fn port(
    http: &reqwest::Client,
    role: Role,
    given: Option<&url::Url>,
    default: u16,
) -> (Check, SocketAddr, Occupant) {
    let (addr, needed) = match given.map(local_addr_of) {
        Some(Some(addr)) => (addr, true),
        Some(None) => (SocketAddr::from((Ipv4Addr::LOCALHOST, default)), false),
        None => (SocketAddr::from((Ipv4Addr::LOCALHOST, default)), true),
    };
    let name = format!("port.{role}");
    let label = format!("port {}", addr.port());
    let holder = occupant::identify(http, addr).await;
    let check = match &holder {
        Occupant::Free => Check::ok(&name, format!("{addr} is free (the {role} port)")),
        Occupant::Iicp { role: r, .. } if *r == role => {
            Check::ok(&name, format!("{addr} is in use by {holder}"))
        }
        _ => {
            let message = format!("{addr} (the {role} port) is in use by {holder}");
            let fix = occupant::busy_port_fix(role, addr.port(), &holder);
            if needed {
                Check::fail(&name, message, fix)
            } else {
                Check::warn(&name, message, fix)
            }
        }
    };
    (check.labelled(label), addr, holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs_f64(s)
    }

    #[test]
    fn skew_is_the_smallest_difference_the_date_allows() {
        let o = |date: f64, before: f64, after: f64| Observed {
            date: at(date),
            before: at(before),
            after: at(after),
        };
        // Date truncates: 1000 covers [1000, 1001), which overlaps our [1000.4, 1000.6].
        assert_eq!(skew_seconds(&o(1000.0, 1000.4, 1000.6)), 0.0);
        // The directory is ahead.
        assert!((skew_seconds(&o(1010.0, 1000.0, 1000.5)) - 9.5).abs() < 1e-6);
        // The directory is behind.
        assert!((skew_seconds(&o(990.0, 1000.0, 1000.5)) + 9.0).abs() < 1e-6);
    }

    #[test]
    fn clock_thresholds() {
        let o = |skew: f64| Observed {
            date: at(1000.0 + skew),
            before: at(1000.0),
            after: at(1000.0),
        };
        assert_eq!(clock(Some(&o(0.0))).status, super::super::Status::Ok);
        assert_eq!(clock(Some(&o(4.0))).status, super::super::Status::Ok);
        assert_eq!(clock(Some(&o(8.0))).status, super::super::Status::Warn);
        assert_eq!(clock(Some(&o(-30.0))).status, super::super::Status::Fail);
        assert_eq!(clock(None).status, super::super::Status::Skip);
    }

    #[test]
    fn local_urls_are_recognised() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            local_addr_of(&u("http://127.0.0.1:8010")),
            Some("127.0.0.1:8010".parse().unwrap())
        );
        assert_eq!(
            local_addr_of(&u("http://localhost:9000")),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(local_addr_of(&u("https://dir.example.com")), None);
        assert_eq!(local_addr_of(&u("http://10.0.0.1:8010")), None);
    }
}
