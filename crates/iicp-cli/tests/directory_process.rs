//! `iicp directory` as a process: crash safety under `kill -9` (every acknowledged registration
//! survives with its current token working, no rotated-away token works) and graceful shutdown
//! on SIGTERM (buffered heartbeat state is written before exit).

use iicp_testkit::support::{free_port, get_json, wait_for_ok, ChildGuard, TempDir};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A minimal node health endpoint on a std thread.
fn health_responder() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let body = r#"{"status":"ok","load":0,"active_jobs":0,"models":["m"]}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn start_directory(db: &Path, port: u16) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iicp"));
    cmd.args(["directory", "--dev", "--register-rate-limit", "1000000"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(db)
        .env("IICP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn("directory", &mut cmd)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let health = format!("{base}/iicp/health");
    wait_for_ok(http, &health, Duration::from_secs(20))
        .await
        .expect("directory did not start");
}

#[derive(Default)]
struct Ledger {
    /// Acknowledged node → its newest acknowledged token.
    current: HashMap<String, String>,
    /// Tokens replaced by an acknowledged rotation.
    rotated_away: Vec<(String, String)>,
    /// Nodes with a rotation sent but not acknowledged when the process died.
    in_flight: HashSet<String>,
}

async fn post(
    http: &reqwest::Client,
    url: String,
    body: &Value,
    token: Option<&str>,
) -> Option<(u16, Value)> {
    let mut req = http.post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

async fn worker(http: reqwest::Client, base: String, endpoint: String, ledger: Arc<Mutex<Ledger>>) {
    let body = json!({
        "endpoint": endpoint,
        "region": "eu-central",
        "capabilities": [{"intent": "urn:iicp:intent:llm:chat:v1", "models": ["m"], "max_tokens": 1024}],
        "limits": {"max_concurrent": 2}
    });
    loop {
        let Some((201, ack)) = post(&http, format!("{base}/api/v1/register"), &body, None).await
        else {
            return;
        };
        let id = ack["node_id"].as_str().unwrap().to_owned();
        let token = ack["node_token"].as_str().unwrap().to_owned();
        ledger
            .lock()
            .unwrap()
            .current
            .insert(id.clone(), token.clone());
        if post(
            &http,
            format!("{base}/api/v1/heartbeat"),
            &json!({"node_id": id}),
            Some(&token),
        )
        .await
        .is_none()
        {
            return;
        }
        let mut refresh = body.clone();
        refresh["node_id"] = json!(id);
        refresh["current_node_token"] = json!(token);
        ledger.lock().unwrap().in_flight.insert(id.clone());
        let Some((201, ack)) = post(&http, format!("{base}/api/v1/register"), &refresh, None).await
        else {
            return;
        };
        let new = ack["node_token"].as_str().unwrap().to_owned();
        let mut l = ledger.lock().unwrap();
        l.in_flight.remove(&id);
        l.current.insert(id.clone(), new);
        l.rotated_away.push((id, token));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = TempDir::new("crash");
    let db = dir.path().join("directory.db");
    let endpoint = format!("http://{}", health_responder());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let mut child = start_directory(&db, port);
    wait_ready(&http, &base).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(worker(
                http.clone(),
                base.clone(),
                endpoint.clone(),
                ledger.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill(); // SIGKILL: no shutdown hook runs.
    for w in workers {
        let _ = w.await;
    }

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        ledger.current.len() >= 20,
        "load was too light: {}",
        ledger.current.len()
    );
    assert!(!ledger.rotated_away.is_empty());
    eprintln!(
        "killed with {} acknowledged nodes, {} rotations, {} rotations in flight",
        ledger.current.len(),
        ledger.rotated_away.len(),
        ledger.in_flight.len()
    );

    let mut child = start_directory(&db, port);
    wait_ready(&http, &base).await;
    for (id, token) in &ledger.current {
        let r = http
            .get(format!("{base}/api/v1/node/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged node {id} lost");
        if ledger.in_flight.contains(id) {
            continue; // a rotation may have landed without its ACK reaching us
        }
        let (status, _) = post(
            &http,
            format!("{base}/api/v1/heartbeat"),
            &json!({"node_id": id}),
            Some(token),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "current token of {id} refused");
    }
    for (id, old) in &ledger.rotated_away {
        let (status, _) = post(
            &http,
            format!("{base}/api/v1/heartbeat"),
            &json!({"node_id": id}),
            Some(old),
        )
        .await
        .unwrap();
        assert_eq!(status, 401, "rotated-away token of {id} still works");
    }
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_keeps_heartbeat_state() {
    let dir = TempDir::new("term");
    let db = dir.path().join("directory.db");
    let endpoint = format!("http://{}", health_responder());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut child = start_directory(&db, port);
    wait_ready(&http, &base).await;
    let body = json!({
        "endpoint": endpoint, "region": "eu-central",
        "capabilities": [{"intent": "urn:iicp:intent:llm:chat:v1", "models": ["m"]}],
        "limits": {"max_concurrent": 2}
    });
    let (status, ack) = post(&http, format!("{base}/api/v1/register"), &body, None)
        .await
        .unwrap();
    assert_eq!(status, 201);
    let id = ack["node_id"].as_str().unwrap();
    let token = ack["node_token"].as_str().unwrap();
    let (status, _) = post(
        &http,
        format!("{base}/api/v1/heartbeat"),
        &json!({"node_id": id, "load": 0.75}),
        Some(token),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    let exit = child
        .stop_with("TERM", Duration::from_secs(10))
        .await
        .expect("directory ignored SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");

    let mut child = start_directory(&db, port);
    wait_ready(&http, &base).await;
    let node = get_json(&http, &format!("{base}/api/v1/node/{id}")).await;
    assert_eq!(
        node["load"], 0.75,
        "heartbeat state was flushed on shutdown"
    );
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_then_environment_then_the_config_file() {
    let tmp = TempDir::new("config");
    let dir = tmp.path();
    let file_port = free_port();
    let env_port = free_port();
    let config = dir.join("iicp.toml");
    std::fs::write(
        &config,
        format!(
            "[directory]\nlisten = \"127.0.0.1:{file_port}\"\ndb = \"{}\"\nheartbeat_interval_ms = 5000\n",
            dir.join("from-file.db").display()
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let spawn = |env_listen: Option<u16>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iicp"));
        cmd.args(["directory", "--config"])
            .arg(&config)
            .env("IICP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = env_listen {
            cmd.env("IICP_LISTEN", format!("127.0.0.1:{p}"));
        }
        ChildGuard::spawn("directory", &mut cmd)
    };

    // The file alone decides the port and the database.
    let mut child = spawn(None);
    wait_ready(&http, &format!("http://127.0.0.1:{file_port}")).await;
    child.kill();
    assert!(dir.join("from-file.db").exists());

    // The environment beats the file.
    let mut child = spawn(Some(env_port));
    wait_ready(&http, &format!("http://127.0.0.1:{env_port}")).await;
    child.kill();

    // A typo in the file is an error, not silently ignored.
    std::fs::write(&config, "[directory]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iicp"))
        .args(["directory", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}
