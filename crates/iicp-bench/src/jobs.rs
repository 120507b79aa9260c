//! The three benchmarks as [`Job`]s: REGISTER, authenticated HEARTBEAT and discover.

use crate::client::{Conn, Target};
use crate::load::Job;
use iicp_proto::control::CxPublicKey;
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

/// The chat payload every node and backend benchmark sends (the same words, the same cap).
pub fn chat_payload(model: &str, prompt: &str, max_tokens: u32) -> serde_json::Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Task ids for `POST /v1/task`: UUID v4, unique within a run and across runs (a node refuses
/// a task id it saw in the last 5 minutes), made without a system call per request: a
/// SplitMix64 over a counter, both halves seeded from the OS once.
pub struct TaskIds {
    seeds: [u64; 2],
    counter: AtomicUsize,
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl TaskIds {
    pub fn new() -> TaskIds {
        let seed = Uuid::new_v4().as_u64_pair();
        TaskIds {
            seeds: [seed.0, seed.1],
            counter: AtomicUsize::new(0),
        }
    }

    /// The next id. SplitMix64's output function is a bijection, so the high half alone differs
    /// between any two ids of one run (up to the 4 version bits).
    pub fn next(&self) -> Uuid {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) as u64;
        let hi = splitmix64(self.seeds[0].wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let lo = splitmix64(self.seeds[1] ^ n);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// Where a task id goes in the pre-built request: a placeholder no real id equals.
const ID_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";

/// `POST /v1/task` with a chat CALL. Plaintext: pre-built once, only the `task_id` (a fresh v4
/// per request) is written into the copy sent. Sealed (IICP-CX, for a node's public key): built
/// per request, as a client must (fresh ephemeral key and nonce each time), before the request's
/// clock starts; the response is asked sealed when the node offers it, as the client SDK does.
pub struct Task {
    target: Target,
    request: Vec<u8>,
    id_at: usize,
    ids: TaskIds,
    intent: String,
    payload: serde_json::Value,
    timeout_ms: u32,
    cx: Option<CxPublicKey>,
}

impl Task {
    pub fn new(
        target: &Target,
        intent: &str,
        payload: &serde_json::Value,
        timeout_ms: u32,
        cx: Option<CxPublicKey>,
    ) -> Task {
        let body = json!({
            "task_id": ID_PLACEHOLDER,
            "intent": intent,
            "payload": payload,
            "constraints": {"timeout_ms": timeout_ms},
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let request = target.post_json("/v1/task", None, &body);
        let id_at = request
            .windows(ID_PLACEHOLDER.len())
            .position(|w| w == ID_PLACEHOLDER.as_bytes())
            .unwrap_or(0);
        Task {
            target: target.clone(),
            request,
            id_at,
            ids: TaskIds::new(),
            intent: intent.to_owned(),
            payload: payload.clone(),
            timeout_ms,
            cx,
        }
    }

    fn sealed(&self, key: &CxPublicKey, out: &mut Vec<u8>) -> Result<(), String> {
        let id = self.ids.next().to_string();
        let mut secret = [0u8; 32];
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut secret).map_err(|e| e.to_string())?;
        getrandom::getrandom(&mut nonce).map_err(|e| e.to_string())?;
        let sealed = iicp_proto::cx::seal(key, &id, &self.intent, &self.payload, secret, nonce)
            .map_err(|e| format!("cannot seal for this key: {e}"))?;
        let mut body = json!({
            "task_id": id,
            "intent": self.intent,
            "iicp_conf": sealed.conf,
            "constraints": {"timeout_ms": self.timeout_ms},
        });
        let respond_sealed = key
            .features
            .iter()
            .any(|f| f == iicp_proto::cx::RESPONSE_ENCRYPTION_FEATURE);
        if respond_sealed {
            body["cx_response_encryption"] = json!("required");
        }
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        out.extend_from_slice(&self.target.post_json("/v1/task", None, &body));
        Ok(())
    }
}

impl Job for Task {
    fn next_index(&self) -> Option<usize> {
        Some(0)
    }

    fn request(&self, _: usize, out: &mut Vec<u8>) {
        if let Some(key) = &self.cx {
            if let Err(e) = self.sealed(key, out) {
                // An empty request fails visibly (the server answers 400 or closes).
                eprintln!("error: {e}");
                out.clear();
            }
            return;
        }
        out.extend_from_slice(&self.request);
        let id = self.ids.next();
        let slot = &mut out[self.id_at..self.id_at + ID_PLACEHOLDER.len()];
        id.hyphenated().encode_lower(slot);
    }

    fn check(&self, _: usize, status: u16, body: &[u8]) -> Result<(), String> {
        expect_status(status, 200, body).map_err(|e| format!("task: {e}"))?;
        if contains(body, br#""status":"success""#) {
            Ok(())
        } else {
            Err(format!("task: not a success RESPONSE: {}", snippet(body)))
        }
    }
}

/// `POST /v1/chat/completions` (OpenAI shape), the same request every time: to a backend
/// directly, or to a gateway.
pub struct Chat {
    request: Vec<u8>,
}

impl Chat {
    pub fn new(target: &Target, payload: &serde_json::Value) -> Chat {
        let mut body = payload.clone();
        if let Some(obj) = body.as_object_mut() {
            // What a node sends its backend for a non-streamed task.
            obj.insert("stream".into(), json!(false));
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Chat {
            request: target.post_json("/v1/chat/completions", None, &body),
        }
    }
}

impl Job for Chat {
    fn next_index(&self) -> Option<usize> {
        Some(0)
    }

    fn request(&self, _: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request);
    }

    fn check(&self, _: usize, status: u16, body: &[u8]) -> Result<(), String> {
        expect_status(status, 200, body).map_err(|e| format!("chat: {e}"))?;
        if contains(body, br#""choices""#) {
            Ok(())
        } else {
            Err(format!("chat: not a chat completion: {}", snippet(body)))
        }
    }
}

/// The IICP-CX public key of the first node a directory lists for `intent` (dispatch view).
pub async fn node_cx_key(directory: &Target, intent: &str) -> Result<CxPublicKey, String> {
    let intent: String = url::form_urlencoded::byte_serialize(intent.as_bytes()).collect();
    let request = directory.get(&format!("{API}/discover?intent={intent}&view=dispatch"));
    let mut conn = Conn::connect(directory.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", directory.addr))?;
    let response = conn
        .send(&request)
        .await
        .map_err(|e| format!("discover: {e}"))?;
    expect_status(response.status, 200, response.body).map_err(|e| format!("discover: {e}"))?;
    let list: serde_json::Value = serde_json::from_slice(response.body)
        .map_err(|e| format!("discover: unreadable NODELIST ({e})"))?;
    let key = list
        .pointer("/nodes/0/cx_public_key")
        .filter(|k| !k.is_null())
        .ok_or("discover: the first node lists no cx_public_key")?;
    serde_json::from_value(key.clone()).map_err(|e| format!("discover: bad cx_public_key ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_v4_and_distinct() {
        let ids = TaskIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next();
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn each_task_request_carries_a_fresh_id() {
        let target = Target::parse("http://127.0.0.1:9").unwrap();
        let payload = chat_payload("m", "hi", 8);
        let job = Task::new(
            &target,
            "urn:iicp:intent:llm:chat:v1",
            &payload,
            30_000,
            None,
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        job.request(0, &mut a);
        job.request(0, &mut b);
        assert_ne!(a, b);
        assert_eq!(a.len(), b.len());
        let text = String::from_utf8(a).unwrap();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let id: Uuid = v["task_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(v["payload"]["model"], "m");
        assert!(!text.contains(ID_PLACEHOLDER));
    }
}
