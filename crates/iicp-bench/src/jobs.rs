//! The three benchmarks as [`Job`]s: REGISTER, authenticated HEARTBEAT and discover.

use crate::client::{Conn, Target};
use crate::load::Job;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use uuid::Uuid;

const API: &str = "/api/v1";

/// One line of the tokens file.
#[derive(Debug, Serialize, Deserialize)]
struct TokenLine {
    node_id: Uuid,
    node_token: String,
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

fn expect_status(status: u16, wanted: u16, body: &[u8]) -> Result<(), String> {
    if status == wanted {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", snippet(body)))
    }
}

/// `POST /api/v1/register` for `count` fresh node ids, all pointing at one endpoint.
pub struct Register {
    target: Target,
    ids: Vec<Uuid>,
    next: AtomicUsize,
    endpoint: String,
    intent: String,
    model: String,
    region: String,
    tokens: Mutex<Vec<Option<String>>>,
}

impl Register {
    pub fn new(
        target: &Target,
        count: usize,
        endpoint: &str,
        intent: &str,
        model: &str,
        region: &str,
    ) -> Register {
        Register {
            target: target.clone(),
            ids: (0..count).map(|_| Uuid::new_v4()).collect(),
            next: AtomicUsize::new(0),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            intent: intent.to_owned(),
            model: model.to_owned(),
            region: region.to_owned(),
            tokens: Mutex::new(vec![None; count]),
        }
    }

    /// Writes every issued token as a JSON line; returns how many were written.
    pub fn write_tokens(&self, path: &Path) -> Result<usize, String> {
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let file = std::fs::File::create(path).map_err(fail)?;
        let mut out = std::io::BufWriter::new(file);
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let mut written = 0;
        for (id, token) in self.ids.iter().zip(tokens.iter()) {
            if let Some(token) = token {
                let line = TokenLine {
                    node_id: *id,
                    node_token: token.clone(),
                };
                let text = serde_json::to_string(&line).map_err(|e| e.to_string())?;
                writeln!(out, "{text}").map_err(fail)?;
                written += 1;
            }
        }
        out.flush().map_err(fail)?;
        Ok(written)
    }
}

impl Job for Register {
    fn next_index(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.ids.len()).then_some(i)
    }

    fn request(&self, index: usize, out: &mut Vec<u8>) {
        let body = json!({
            "node_id": self.ids[index],
            "endpoint": self.endpoint,
            "region": self.region,
            "capabilities": [{"intent": self.intent, "models": [self.model]}],
            "limits": {"max_concurrent": 4},
            "backend": "iicp-bench",
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        out.extend_from_slice(
            &self
                .target
                .post_json(&format!("{API}/register"), None, &body),
        );
    }

    fn check(&self, index: usize, status: u16, body: &[u8]) -> Result<(), String> {
        if !(200..300).contains(&status) {
            return Err(format!("register: HTTP {status}: {}", snippet(body)));
        }
        let ack: TokenLine = serde_json::from_slice(body)
            .map_err(|e| format!("register: unreadable ACK ({e}): {}", snippet(body)))?;
        if ack.node_id != self.ids[index] {
            return Err(format!(
                "register: ACK for {} instead of {}",
                ack.node_id, self.ids[index]
            ));
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens[index] = Some(ack.node_token);
        Ok(())
    }
}

/// `POST /api/v1/heartbeat` with each node's bearer token, round-robin over the nodes.
pub struct Heartbeat {
    requests: Vec<Vec<u8>>,
    next: AtomicUsize,
}

impl Heartbeat {
    pub fn from_file(target: &Target, path: &Path) -> Result<Heartbeat, String> {
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let file = std::fs::File::open(path).map_err(fail)?;
        let mut requests = Vec::new();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(fail)?;
            if line.trim().is_empty() {
                continue;
            }
            let node: TokenLine = serde_json::from_str(&line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            let body = json!({"node_id": node.node_id, "load": 0.1, "active_jobs": 0});
            let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
            requests.push(target.post_json(
                &format!("{API}/heartbeat"),
                Some(&node.node_token),
                &body,
            ));
        }
        if requests.is_empty() {
            return Err(format!("{}: no nodes", path.display()));
        }
        Ok(Heartbeat {
            requests,
            next: AtomicUsize::new(0),
        })
    }
}

impl Job for Heartbeat {
    fn next_index(&self) -> Option<usize> {
        Some(self.next.fetch_add(1, Ordering::Relaxed) % self.requests.len())
    }

    fn request(&self, index: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.requests[index]);
    }

    fn check(&self, _: usize, status: u16, body: &[u8]) -> Result<(), String> {
        expect_status(status, 200, body).map_err(|e| format!("heartbeat: {e}"))
    }
}

/// `GET /api/v1/discover?intent=…[&limit=…]`, the same request every time.
pub struct Discover {
    request: Vec<u8>,
}

impl Discover {
    pub fn new(target: &Target, intent: &str, limit: Option<usize>) -> Discover {
        let intent: String = url::form_urlencoded::byte_serialize(intent.as_bytes()).collect();
        let mut path = format!("{API}/discover?intent={intent}");
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        Discover {
            request: target.get(&path),
        }
    }

    /// Sends the request once and returns how many nodes the NODELIST holds.
    pub async fn preflight(&self, target: &Target) -> Result<usize, String> {
        let mut conn = Conn::connect(target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", target.addr))?;
        let response = conn
            .send(&self.request)
            .await
            .map_err(|e| format!("discover: {e}"))?;
        expect_status(response.status, 200, response.body).map_err(|e| format!("discover: {e}"))?;
        let list: serde_json::Value = serde_json::from_slice(response.body)
            .map_err(|e| format!("discover: unreadable NODELIST ({e})"))?;
        list.get("nodes")
            .and_then(|n| n.as_array())
            .map(Vec::len)
            .ok_or_else(|| "discover: no `nodes` array in the response".to_owned())
    }
}

impl Job for Discover {
    fn next_index(&self) -> Option<usize> {
        Some(0)
    }

    fn request(&self, _: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request);
    }

    fn check(&self, _: usize, status: u16, body: &[u8]) -> Result<(), String> {
        expect_status(status, 200, body).map_err(|e| format!("discover: {e}"))
    }
}
