//! `iicp up` as a process: a whole local mesh in front of a backend double answers an OpenAI
//! chat completion through its gateway, lists its node in discovery, and stops cleanly on
//! SIGTERM (node deregistered first, then gateway, then directory); without a backend the
//! directory and gateway still run and the output says how to add one; a busy port is named
//! with a fix.

mod up_support;

use iicp_testkit::support::{free_port, get_json, http_client, wait_for_ok, ChildGuard, TempDir};
use iicp_testkit::{BackendDouble, Flavor, Models};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use up_support::{Up, CHAT};

fn position(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{haystack}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_chat_through_the_gateway_and_deregisters_on_sigterm() {
    let double =
        BackendDouble::start(Flavor::Ollama, Models::new(["llama3.2"], ["all-minilm"])).await;
    let tmp = TempDir::new("up");
    let data = tmp.path().join("data");
    let url = double.url();
    let mut up = Up::start(&["--backend", &url, "--detect", "none"], &data);
    let out = up.stdout();
    assert!(
        out.contains(&format!("using Ollama at {url} with models:")),
        "{out}"
    );
    assert!(out.contains("node registered as "), "{}", up.output());
    assert!(out.contains("local mesh"), "{out}");
    assert!(
        out.contains(&format!("curl {}/v1/chat/completions", up.gateway)),
        "{out}"
    );
    assert!(
        out.contains(&format!("base_url=\"{}/v1\", api_key=\"any\"", up.gateway)),
        "{out}"
    );

    let http = http_client(Duration::from_secs(30));
    let reply = http
        .post(format!("{}/v1/chat/completions", up.gateway))
        .json(&json!({
            "model": "llama3.2:latest",
            "messages": [{"role": "user", "content": "hello from the test"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", up.output());
    let body: Value = reply.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("hello"), "{body}");

    let found = get_json(
        &http,
        &format!("{}/v1/discover?intent={CHAT}", up.directory),
    )
    .await;
    let node_id = out
        .lines()
        .find_map(|l| l.strip_prefix("node registered as "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(
        found["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node_id"] == node_id.as_str()),
        "{found}"
    );

    let status = up.stop_with("TERM").await;
    assert!(status.success(), "exit {status:?}; {}", up.output());
    let out = up.stdout();
    let node = position(&out, "node stopped (deregistered from the directory)");
    let gateway = position(&out, "gateway stopped");
    let directory = position(&out, "directory stopped");
    assert!(node < gateway && gateway < directory, "{out}");

    // The directory, restarted on the same database, no longer has the node.
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iicp"));
    cmd.args(["directory", "--dev", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(data.join("directory.db"))
        .env("IICP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut directory = ChildGuard::spawn("directory", &mut cmd);
    let url = format!("http://127.0.0.1:{port}/iicp/health");
    let health: Value = wait_for_ok(&http, &url, Duration::from_secs(30))
        .await
        .expect("the directory did not restart")
        .json()
        .await
        .unwrap();
    directory.kill();
    assert_eq!(health["nodes_registered"], 0, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_without_a_backend_runs_directory_and_gateway_and_says_how_to_start_one() {
    let tmp = TempDir::new("up-nobackend");
    let nothing = format!("http://127.0.0.1:{}", free_port());
    let mut up = Up::start(&["--detect", &nothing], &tmp.path().join("data"));
    let out = up.stdout();
    assert!(
        out.contains(&format!("no local backend found (looked at {nothing})")),
        "{out}"
    );
    assert!(out.contains("ollama serve"), "{out}");
    assert!(out.contains("ollama pull llama3.2"), "{out}");
    assert!(
        out.contains("llama-server -m model.gguf --port 8080"),
        "{out}"
    );
    assert!(
        out.contains(&format!("iicp node --directory {}", up.directory)),
        "{out}"
    );
    assert!(up.node.is_none(), "{out}");

    let http = http_client(Duration::from_secs(30));
    let health = get_json(&http, &format!("{}/iicp/health", up.directory)).await;
    assert_eq!(health["role"], "directory");
    let models = http
        .get(format!("{}/v1/models", up.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let models: Value = models.json().await.unwrap();
    assert_eq!(models["data"], json!([]), "{models}");

    let status = up.stop_with("INT").await;
    assert!(status.success(), "exit {status:?}; {}", up.output());
    let out = up.stdout();
    assert!(
        position(&out, "gateway stopped") < position(&out, "directory stopped"),
        "{out}"
    );
}

#[test]
fn up_names_a_busy_port_and_how_to_move() {
    let tmp = TempDir::new("up-busy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_iicp"))
        .args(["up", "--detect", "none", "--directory-port", &port])
        .args(["--node-port", "0", "--gateway-port", "0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("IICP_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {port} on 127.0.0.1 is already in use")),
        "{stderr}"
    );
    assert!(stderr.contains("fix: "), "{stderr}");
    assert!(
        stderr.contains("--directory-port 0 picks a free one"),
        "{stderr}"
    );
    drop(busy);
}
