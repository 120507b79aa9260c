//! The liveness dial-back: `GET {endpoint}/iicp/health` must answer 2xx before any token is
//! issued. Every address the client connects to is checked against the endpoint policy at
//! resolution time (what we connect to, not only the name), redirects are followed only when
//! same-origin 307/308 (at most 3), and the whole probe has a short budget.

use iicp_proto::endpoint::EndpointPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why a dial-back failed; the message is safe to show the registering node.
#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    #[error("endpoint refused: {0}")]
    Refused(String),
    #[error("GET /iicp/health answered HTTP {0}")]
    Status(u16),
    #[error("GET /iicp/health did not answer within {0} ms")]
    Timeout(u128),
    #[error("GET /iicp/health failed: {0}")]
    Unreachable(String),
}

/// Resolves names, then refuses the answer unless every address passes the policy.
struct GuardedResolver {
    policy: EndpointPolicy,
    overrides: Arc<HashMap<String, SocketAddr>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let policy = self.policy;
        let overrides = self.overrides.clone();
        Box::pin(async move {
            // Overrides are judged like any DNS answer: only the name lookup is replaced.
            let addrs: Vec<SocketAddr> = match overrides.get(&host) {
                Some(addr) => vec![*addr],
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let ips: Vec<_> = addrs.iter().map(SocketAddr::ip).collect();
            policy
                .check_resolved(&ips)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A pooled HTTP client for dial-backs and probes.
#[derive(Clone)]
pub struct Liveness {
    client: reqwest::Client,
    policy: EndpointPolicy,
    timeout: Duration,
}

impl Liveness {
    /// `dev` accepts private addresses and self-signed node certificates; `overrides` maps host
    /// names to fixed addresses (the directory allows them in dev mode only), still judged by
    /// the policy.
    pub fn new(dev: bool, overrides: &[(String, SocketAddr)], timeout: Duration) -> Self {
        let policy = EndpointPolicy { allow_private: dev };
        let overrides: HashMap<String, SocketAddr> = overrides
            .iter()
            .map(|(h, a)| (h.to_ascii_lowercase(), *a))
            .collect();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            let same_origin = attempt
                .previous()
                .last()
                .is_some_and(|prev| prev.origin() == attempt.url().origin());
            let hops = attempt.previous().len().saturating_sub(1) as u32;
            if policy.allows_redirect(attempt.status().as_u16(), same_origin, hops) {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy,
                overrides: Arc::new(overrides),
            }))
            .redirect(redirect)
            .timeout(timeout)
            .connect_timeout(timeout)
            .danger_accept_invalid_certs(dev)
            .user_agent(concat!("iicp-directory/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(4)
            .build()
            .expect("TLS backend initialises");
        Liveness {
            client,
            policy,
            timeout,
        }
    }

    pub fn policy(&self) -> EndpointPolicy {
        self.policy
    }

    /// Dials `{endpoint}/iicp/health`.
    pub async fn probe(&self, endpoint: &url::Url) -> Result<(), LivenessError> {
        self.policy
            .check_url_host(endpoint)
            .map_err(|e| LivenessError::Refused(e.to_string()))?;
        let url = format!("{}/iicp/health", endpoint.as_str().trim_end_matches('/'));
        let response = self.client.get(url).send().await.map_err(|e| {
            if e.is_timeout() {
                LivenessError::Timeout(self.timeout.as_millis())
            } else {
                LivenessError::Unreachable(describe(&e))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(LivenessError::Status(status.as_u16()));
        }
        Ok(())
    }
}

/// A short, internals-free description of a client error (the innermost cause's kind).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut source: Option<&dyn Error> = e.source();
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    if e.is_connect() {
        format!("could not connect ({last})")
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name that passes every name rule but resolves to loopback is refused when the client
    /// connects, not only when the name is read.
    #[tokio::test]
    async fn a_public_looking_name_resolving_to_loopback_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let overrides = [("rebind.example.com".to_owned(), addr)];
        let strict = Liveness::new(false, &overrides, Duration::from_secs(2));
        let url = url::Url::parse("http://rebind.example.com/").unwrap();
        let err = strict.probe(&url).await.unwrap_err();
        assert!(
            matches!(err, LivenessError::Unreachable(ref m) if m.contains("loopback")),
            "{err}"
        );
        let literal = url::Url::parse(&format!("http://{addr}/")).unwrap();
        assert!(matches!(
            strict.probe(&literal).await,
            Err(LivenessError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn redirects_leave_only_to_the_same_origin() {
        use axum::response::Redirect;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/away/iicp/health",
                axum::routing::get(|| async {
                    Redirect::temporary("http://127.0.0.2:9/iicp/health")
                }),
            )
            .route(
                "/same/iicp/health",
                axum::routing::get(|| async { Redirect::temporary("/ok") }),
            )
            .route(
                "/found/iicp/health",
                axum::routing::get(|| async { Redirect::to("/ok") }),
            )
            .route("/ok", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dev = Liveness::new(true, &[], Duration::from_secs(2));
        let at = |p: &str| url::Url::parse(&format!("http://{addr}/{p}")).unwrap();
        assert!(dev.probe(&at("same")).await.is_ok());
        assert!(matches!(
            dev.probe(&at("away")).await,
            Err(LivenessError::Status(307))
        ));
        assert!(matches!(
            dev.probe(&at("found")).await,
            Err(LivenessError::Status(303))
        ));
    }
}
