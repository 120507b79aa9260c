//! The `iicp-backend-double` binary: flags, the printed URL, answers, SIGTERM.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn serves_until_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iicp-backend-double"))
        .args(["--flavor", "ollama", "--listen", "127.0.0.1:0"])
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
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let tags: Value = client()
        .get(format!("{url}/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the double did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
