//! The `iicp-backend-double` binary: flags, the printed URL, answers, SIGTERM.

mod common;

use common::*;
use iicp_testkit::support::{get_json, ChildGuard};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn serves_until_sigterm() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iicp-backend-double"));
    cmd.args(["--flavor", "ollama", "--listen", "127.0.0.1:0"])
        .args(["--chat-model", "llama3.2", "--chat-model", "llava:7b"])
        .args([
            "--embedding-model",
            "all-minilm",
            "--delay-ms",
            "20",
            "--tokens",
            "3",
            "--threads",
            "1",
        ])
        .stdout(Stdio::piped());
    let mut child = ChildGuard::spawn("iicp-backend-double", &mut cmd);
    let mut line = String::new();
    BufReader::new(child.child_mut().stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let tags = get_json(&client(), &format!("{url}/api/tags")).await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["llama3.2:latest", "llava:7b", "all-minilm:latest"]);

    let started = Instant::now();
    let body = json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "a b c d"}]});
    let reply: Value = client()
        .post(format!("{url}/api/chat"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert_eq!(reply["message"]["content"], "a b c");

    let status = child
        .stop_with("TERM", Duration::from_secs(5))
        .await
        .expect("the double did not exit on SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn rejects_an_unknown_flavor() {
    let out = Command::new(env!("CARGO_BIN_EXE_iicp-backend-double"))
        .args(["--flavor", "gemini"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flavor"));
}
