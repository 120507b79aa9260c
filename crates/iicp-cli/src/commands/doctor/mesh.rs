//! The checks of what runs on the mesh: the node, the gateway, and whether the directory can
//! reach the node's advertised endpoint.

use super::checks::{bare, get, join, plural, some_names, START_BACKEND};
use super::{Check, DoctorArgs};
use crate::commands::occupant::{self, Role};
use iicp_proto::endpoint::EndpointPolicy;
use serde_json::Value;
use std::net::IpAddr;

/// The node's health, its registration, and the endpoint the directory has for it.
pub(super) async fn node_check(
    http: &reqwest::Client,
    url: Option<&url::Url>,
    args: &DoctorArgs,
    directory_up: bool,
) -> (Check, Option<url::Url>) {
    const NAME: &str = "node";
    let directory = bare(&args.directory);
    let Some(url) = url else {
        return (
            Check::skip(
                NAME,
                format!(
                    "no node on 127.0.0.1:9484 (start one with `iicp up`, or `iicp node \
                     --directory {directory}`)"
                ),
            ),
            None,
        );
    };
    let health = match get(http, &join(url, "/iicp/health")).await {
        Ok(a)
            if a.status == 200
                && a.body.as_ref().and_then(occupant::role_of) == Some(Role::Node) =>
        {
            a
        }
        Ok(a) => {
            return (
                Check::fail(
                    NAME,
                    format!(
                        "{} answers (HTTP {}), but not as an IICP node",
                        bare(url),
                        a.status
                    ),
                    "check --node",
                ),
                None,
            )
        }
        Err(e) => {
            return (
                Check::fail(
                    NAME,
                    format!("nothing answers at {} ({e})", bare(url)),
                    format!("start it: iicp node --directory {directory}"),
                ),
                None,
            )
        }
    };
    let body = health.body.unwrap_or_default();
    let models: Vec<String> = body
        .get("models")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let node_id = body
        .get("node_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut problems: Vec<(String, String)> = Vec::new();
    if body.get("status").and_then(Value::as_str) == Some("degraded") {
        problems.push((
            "its backend does not answer".into(),
            format!("{START_BACKEND}; the node picks it up within a minute"),
        ));
    } else if models.is_empty() {
        problems.push((
            "it serves no models".into(),
            "pull or load a model into its backend (`ollama pull llama3.2`)".into(),
        ));
    }
    let mut advertised = None;
    match (&node_id, directory_up) {
        (None, _) => problems.push((
            "it is not registered with a directory".into(),
            format!(
                "run it with --directory {directory}; if it has one, its log says why \
                 registration fails"
            ),
        )),
        (Some(id), true) => {
            match get(http, &join(&args.directory, &format!("/v1/node/{id}"))).await {
                Ok(a) if a.status == 200 => {
                    advertised = a
                        .body
                        .as_ref()
                        .and_then(|b| b.get("endpoint"))
                        .and_then(Value::as_str)
                        .and_then(|e| url::Url::parse(e).ok());
                }
                Ok(a) if a.status == 404 => problems.push((
                    format!("the directory at {directory} does not know node {id}"),
                    format!(
                    "it is registered with another directory: run it with --directory {directory}, \
                     or pass that directory's URL to doctor"
                ),
                )),
                _ => {}
            }
        }
        (Some(_), false) => {}
    }
    let registered = match &node_id {
        Some(id) => format!("registered as {id}"),
        None => "not registered".into(),
    };
    let summary = format!(
        "{}: {registered}, serves {}",
        bare(url),
        if models.is_empty() {
            "no models".to_owned()
        } else {
            some_names(&models)
        }
    );
    if problems.is_empty() {
        return (Check::ok(NAME, summary), advertised);
    }
    let (messages, fixes): (Vec<String>, Vec<String>) = problems.into_iter().unzip();
    (
        Check::warn(
            NAME,
            format!("{summary}; {}", messages.join("; ")),
            fixes.join("; "),
        ),
        advertised,
    )
}

pub(super) async fn gateway(
    http: &reqwest::Client,
    url: Option<&url::Url>,
    args: &DoctorArgs,
) -> Check {
    const NAME: &str = "gateway";
    let directory = bare(&args.directory);
    let Some(url) = url else {
        return Check::skip(
            NAME,
            "no gateway on 127.0.0.1:9483 (optional: `iicp up` or `iicp gateway` starts one)",
        );
    };
    match get(http, &join(url, "/v1/models")).await {
        Ok(a) if a.status == 200 => {
            let names: Vec<String> = a
                .body
                .as_ref()
                .and_then(|b| b.get("data"))
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(|m| m.get("id").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if names.is_empty() {
                Check::warn(
                    NAME,
                    format!("{} answers, but no live node serves a model", bare(url)),
                    format!("start a node: iicp node --directory {directory}"),
                )
            } else {
                Check::ok(
                    NAME,
                    format!(
                        "{} offers {} from the mesh: {}",
                        bare(url),
                        plural(names.len(), "model"),
                        some_names(&names)
                    ),
                )
            }
        }
        Ok(a) => Check::fail(
            NAME,
            format!("{} answers HTTP {} at /v1/models", bare(url), a.status),
            "is it an IICP gateway? check --gateway",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("nothing answers at {} ({e})", bare(url)),
            format!("start it: iicp gateway --directory {directory}"),
        ),
    }
}

/// Whether the public policy accepts a URL's host (names are resolved and every address
/// judged, as a public directory does), with the reason when it does not.
async fn publicly_routable(url: &url::Url) -> Result<(), String> {
    match EndpointPolicy::PUBLIC.check_url_host(url) {
        Err(refusal) => Err(refusal.to_string()),
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let host = url.host_str().unwrap_or_default();
            let port = url.port_or_known_default().unwrap_or(80);
            let ips: Vec<IpAddr> = tokio::net::lookup_host((host, port))
                .await
                .map(|a| a.map(|s| s.ip()).collect())
                .unwrap_or_default();
            EndpointPolicy::PUBLIC
                .check_resolved(&ips)
                .map_err(|r| r.to_string())
        }
    }
}

/// Can the directory reach the advertised endpoint? A directory on this machine or a private
/// network sees what we see, so we ask the endpoint ourselves; a public directory is asked
/// through its `GET /v1/probe`.
pub(super) async fn endpoint(
    http: &reqwest::Client,
    target: Option<&url::Url>,
    directory: &url::Url,
    directory_up: bool,
) -> Check {
    const NAME: &str = "endpoint";
    let Some(target) = target else {
        return Check::skip(
            NAME,
            "no advertised endpoint to check (no registered node; pass --public-url URL)",
        );
    };
    let shown = bare(target);
    let share_fix = "advertise an address the internet reaches: iicp node --public-url \
                     https://YOUR-HOST (forward the port, or use a tunnel)";
    if publicly_routable(directory).await.is_err() {
        return match get(http, &join(target, "/iicp/health")).await {
            Ok(a) if a.status == 200 => Check::ok(
                NAME,
                format!(
                    "{shown} answers, and the directory is on this machine or network, so \
                     it reaches it too"
                ),
            ),
            Ok(a) => Check::fail(
                NAME,
                format!("{shown} answers HTTP {} at /iicp/health", a.status),
                "is the node listening there? it advertises --public-url, or http://<listen>",
            ),
            Err(e) => Check::fail(
                NAME,
                format!("{shown} does not answer ({e})"),
                "is the node running and listening there? it advertises --public-url, or \
                 http://<listen>",
            ),
        };
    }
    if let Err(why) = publicly_routable(target).await {
        return Check::fail(
            NAME,
            format!("{shown} is not publicly routable ({why}); a public directory refuses it (IICP-E035)"),
            share_fix,
        );
    }
    if !directory_up {
        return Check::skip(NAME, "the directory does not answer, so it cannot be asked");
    }
    let (Some(host), Some(port)) = (target.host_str(), target.port_or_known_default()) else {
        return Check::fail(NAME, format!("{shown} has no host or port"), share_fix);
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut probe = match url::Url::parse(&join(directory, "/v1/probe")) {
        Ok(u) => u,
        Err(e) => return Check::fail(NAME, format!("bad directory URL: {e}"), "check --directory"),
    };
    probe
        .query_pairs_mut()
        .append_pair("host", host)
        .append_pair("port", &port.to_string());
    match get(http, probe.as_str()).await {
        Ok(a) if a.status == 200 => {
            let body = a.body.unwrap_or_default();
            if body.get("reachable").and_then(Value::as_bool) == Some(true) {
                let ms = body.get("latency_ms").and_then(Value::as_u64).unwrap_or(0);
                Check::ok(
                    NAME,
                    format!("the directory reaches {host}:{port} ({ms} ms)"),
                )
            } else {
                Check::fail(
                    NAME,
                    format!("the directory cannot connect to {host}:{port}"),
                    format!(
                        "open TCP port {port} in the firewall and forward it on the router, or \
                         put the node behind a tunnel and pass its URL as --public-url"
                    ),
                )
            }
        }
        Ok(a) if a.status == 422 => Check::fail(
            NAME,
            format!("the directory refuses to probe {host}:{port}: it is not a public address"),
            share_fix,
        ),
        Ok(a) => Check::warn(
            NAME,
            format!(
                "the directory has no usable /v1/probe (HTTP {}); its view of {shown} is unknown",
                a.status
            ),
            format!(
                "check from another network: curl {}",
                join(target, "/iicp/health")
            ),
        ),
        Err(e) => Check::warn(
            NAME,
            format!("could not ask the directory to probe {shown} ({e})"),
            format!(
                "check from another network: curl {}",
                join(target, "/iicp/health")
            ),
        ),
    }
}
