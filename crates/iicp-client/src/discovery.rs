//! Talking to the directory: discover (cached as long as its `Cache-Control` allows) and
//! ticketed route dispatch. With tickets on, the client discovers with `view=public` (no
//! routes), chooses, and asks a ticket for the chosen node's route; a directory that ignores the
//! view and sends routes anyway is used as is. With tickets off, the route-bearing dispatch view
//! is used.

use crate::error::ClientError;
use crate::select::Candidate;
use iicp_proto::control::CxPublicKey;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a discover answer is reused when the directory does not say.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5);

/// One discover answer.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub candidates: Vec<Candidate>,
}

/// A node's route, from a ticket or the dispatch view.
#[derive(Debug, Clone)]
pub struct Route {
    pub node_id: String,
    pub endpoint: String,
    pub cx_public_key: Option<CxPublicKey>,
}

pub struct Directory {
    base: String,
    http: reqwest::Client,
    use_tickets: bool,
    cache: Mutex<HashMap<String, (Instant, Arc<Snapshot>)>>,
    routes: Mutex<HashMap<String, (Instant, Route)>>,
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|d| d.trim().strip_prefix("max-age="))
                .find_map(|n| n.parse::<u64>().ok())
        })
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_MAX_AGE)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn candidate(n: &Value) -> Option<Candidate> {
    let key = n
        .get("node_id")
        .or_else(|| n.get("node_id_prefix"))?
        .as_str()?
        .to_owned();
    let cx: Option<CxPublicKey> = n
        .get("cx_public_key")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    Some(Candidate {
        key,
        endpoint: n.get("endpoint").and_then(Value::as_str).map(str::to_owned),
        score: n.get("score").and_then(Value::as_f64).unwrap_or(0.1),
        region: n.get("region").and_then(Value::as_str).map(str::to_owned),
        models: strings(n.get("models")),
        modalities: strings(n.get("input_modalities")),
        reputation: n
            .get("reputation_score")
            .and_then(Value::as_f64)
            .unwrap_or(0.5),
        key_ready: cx.is_some() || n.get("key_ready").and_then(Value::as_bool) == Some(true),
        cx_public_key: cx,
        latency_estimate_ms: n.get("latency_estimate_ms").and_then(Value::as_f64),
    })
}

impl Directory {
    pub fn new(base: &url::Url, http: reqwest::Client, use_tickets: bool) -> Self {
        Directory {
            base: base.as_str().trim_end_matches('/').to_owned(),
            http,
            use_tickets,
            cache: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, url: &str) -> Result<(Value, Duration), ClientError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| ClientError::Directory(e.without_url().to_string()))?;
        let age = max_age(resp.headers());
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|_| {
            ClientError::Directory("discover answered something that is not JSON".into())
        })?;
        if !status.is_success() {
            return Err(ClientError::from_error_body(status.as_u16(), &body));
        }
        Ok((body, age))
    }

    /// Candidates for `intent` (best first, as the directory ordered them).
    pub async fn discover(
        &self,
        intent: &str,
        model: Option<&str>,
        modality: Option<&str>,
    ) -> Result<Arc<Snapshot>, ClientError> {
        let view = if self.use_tickets {
            "public"
        } else {
            "dispatch"
        };
        let mut url = url::Url::parse(&format!("{}/api/v1/discover", self.base))
            .map_err(|e| ClientError::Directory(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("intent", intent)
                .append_pair("limit", "50")
                .append_pair("view", view);
            if let Some(m) = model {
                q.append_pair("model", m);
            }
            if let Some(m) = modality {
                q.append_pair("modality", m);
            }
        }
        let key = url.to_string();
        if let Some((expires, snap)) = self.cache.lock().get(&key) {
            if Instant::now() < *expires {
                return Ok(snap.clone());
            }
        }
        let (body, age) = self.get(&key).await?;
        let nodes = body
            .get("nodes")
            .or_else(|| body.pointer("/data/nodes"))
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::Directory("discover answer without nodes".into()))?;
        let snapshot = Arc::new(Snapshot {
            candidates: nodes.iter().filter_map(candidate).collect(),
        });
        self.cache
            .lock()
            .insert(key, (Instant::now() + age, snapshot.clone()));
        Ok(snapshot)
    }

    /// The route of a candidate: its own (dispatch view) or a ticket's.
    pub async fn route(&self, intent: &str, c: &Candidate) -> Result<Route, ClientError> {
        if let Some(endpoint) = &c.endpoint {
            return Ok(Route {
                node_id: c.key.clone(),
                endpoint: endpoint.clone(),
                cx_public_key: c.cx_public_key.clone(),
            });
        }
        let cache_key = format!("{intent} {}", c.key);
        if let Some((expires, route)) = self.routes.lock().get(&cache_key) {
            if Instant::now() < *expires {
                return Ok(route.clone());
            }
        }
        let resp = self
            .http
            .post(format!("{}/api/v1/dispatch/ticket", self.base))
            .json(&json!({"intent": intent, "node_id_prefix": c.key}))
            .send()
            .await
            .map_err(|e| ClientError::Directory(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or_default();
        if status != 201 {
            return Err(ClientError::from_error_body(status, &body));
        }
        let r = &body["route"];
        let route = Route {
            node_id: r["node_id"].as_str().unwrap_or(&c.key).to_owned(),
            endpoint: r["endpoint"]
                .as_str()
                .ok_or_else(|| ClientError::Directory("ticket without a route".into()))?
                .to_owned(),
            cx_public_key: serde_json::from_value(r["cx_public_key"].clone()).ok(),
        };
        // Keep the route a little less long than the ticket lives.
        let ttl = body["expires_at"]
            .as_u64()
            .and_then(|exp| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                exp.checked_sub(now + 5)
            })
            .unwrap_or(30);
        self.routes.lock().insert(
            cache_key,
            (Instant::now() + Duration::from_secs(ttl), route.clone()),
        );
        Ok(route)
    }

    /// A consumer token for calling `target`, signed by the directory for `caller_token`'s node.
    pub async fn consumer_token(
        &self,
        caller_token: &str,
        target: &str,
        intent: &str,
    ) -> Result<String, ClientError> {
        let resp = self
            .http
            .post(format!("{}/api/v1/consumer-token", self.base))
            .bearer_auth(caller_token)
            .json(&json!({"target_node_id": target, "intent": intent}))
            .send()
            .await
            .map_err(|e| ClientError::Directory(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or_default();
        if status != 201 {
            return Err(ClientError::from_error_body(status, &body));
        }
        body["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Directory("consumer-token answer without a token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_comes_from_cache_control() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(max_age(&h), DEFAULT_MAX_AGE);
        h.insert(
            reqwest::header::CACHE_CONTROL,
            "public, max-age=7, s-maxage=10".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Duration::from_secs(7));
    }

    #[test]
    fn public_and_dispatch_nodes_become_candidates() {
        let public = json!({"node_id_prefix": "abcd1234", "score": 0.8, "models": ["m"],
            "input_modalities": ["text", "image"], "key_ready": true});
        let c = candidate(&public).unwrap();
        assert_eq!(c.key, "abcd1234");
        assert!(c.endpoint.is_none() && c.key_ready && c.cx_public_key.is_none());
        assert_eq!(c.modalities, vec!["text", "image"]);
        let dispatch = json!({"node_id": "n-1", "endpoint": "http://x", "score": 0.5});
        let c = candidate(&dispatch).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://x"));
        assert!(!c.key_ready);
    }
}
