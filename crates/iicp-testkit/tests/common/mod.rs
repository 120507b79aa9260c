//! Helpers shared by the integration tests: a plain HTTP client, requests to a double, and
//! wire-format parsers.
#![allow(dead_code)]

use iicp_testkit::support::http_client;
use iicp_testkit::BackendDouble;
use serde_json::Value;
use std::time::Duration;

/// A plain client (no proxy, so loopback traffic never leaves the machine).
pub fn client() -> reqwest::Client {
    http_client(Duration::from_secs(10))
}

/// `GET` of `path` on the double, decoded as JSON.
pub async fn get_json(d: &BackendDouble, path: &str) -> Value {
    iicp_testkit::support::get_json(&client(), &format!("{}{path}", d.url())).await
}

/// `POST` of a JSON body to `path` on the double.
pub async fn post(d: &BackendDouble, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", d.url()))
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Reads a body chunk by chunk: the bytes received, and the error that ended it early if any.
pub async fn read_body(mut resp: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8(buf).expect("utf-8 body"), None),
            Err(e) => return (String::from_utf8_lossy(&buf).into_owned(), Some(e)),
        }
    }
}

/// One server-sent event: its `event:` name (if any) and its `data:`.
#[derive(Debug)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// Parses a complete SSE stream, checking that every event ends with a blank line.
pub fn parse_sse(text: &str) -> Vec<Sse> {
    assert!(
        text.ends_with("\n\n"),
        "stream must end with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            Sse {
                event,
                data: data.expect("every event has data"),
            }
        })
        .collect()
}

/// Parses NDJSON, checking that every line (the last included) ends with a newline.
pub fn parse_ndjson(text: &str) -> Vec<Value> {
    assert!(
        text.ends_with('\n'),
        "NDJSON must end with a newline: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The object's keys, in wire order (serde_json sorts them, so compare sorted sets).
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

pub fn sorted(mut k: Vec<&str>) -> Vec<&str> {
    k.sort_unstable();
    k
}

/// Asserts `v` has exactly these keys (any order).
#[track_caller]
pub fn assert_keys(v: &Value, expected: &[&str]) {
    assert_eq!(keys(v), sorted(expected.to_vec()), "keys of {v}");
}

pub fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
