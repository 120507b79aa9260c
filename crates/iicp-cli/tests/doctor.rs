//! `iicp doctor` as a process: all ok (exit 0) against a running `iicp up`; a dead backend and a
//! port held by another program fail (exit 1) with fix-it lines; `--json` is a parseable report.

mod up_support;

use iicp_testkit::support::{free_port, TempDir};
use iicp_testkit::{BackendDouble, Flavor, Models};
use serde_json::Value;
use std::process::{Command, Output};
use up_support::Up;

fn doctor<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iicp"))
        .arg("doctor")
        .args(args)
        .env_remove("IICP_BACKEND")
        .env_remove("IICP_DIRECTORY")
        .env_remove("IICP_PUBLIC_URL")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}):\n{}", text(&out.stdout)))
}

fn status_of<'a>(report: &'a Value, check: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no {check} check in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_is_all_ok_against_a_running_mesh() {
    let double =
        BackendDouble::start(Flavor::OpenAi, Models::new(["tiny-chat"], [] as [&str; 0])).await;
    let tmp = TempDir::new("doctor-ok");
    let url = double.url();
    let up = Up::start(
        &["--backend", &url, "--detect", "none"],
        &tmp.path().join("data"),
    );
    let args: Vec<String> = vec![
        "--backend".into(),
        url.clone(),
        "--directory".into(),
        up.directory.clone(),
        "--node".into(),
        up.node.clone().unwrap(),
        "--gateway".into(),
        up.gateway.clone(),
    ];

    let given = args.clone();
    let out = tokio::task::spawn_blocking(move || doctor(&given))
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", up.output());
    let checks: Vec<&str> = stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.trim_start().starts_with("fix:"))
        .collect();
    assert_eq!(checks.len(), 9, "{stdout}");
    for line in &checks {
        assert!(line.starts_with("ok "), "not ok: {line}\n{stdout}");
    }
    assert!(stdout.contains("tiny-chat"), "{stdout}");
    assert!(stdout.contains("9 ok, 0 warnings, 0 failed"), "{stdout}");

    let mut with_json = args.clone();
    with_json.push("--json".into());
    let out = tokio::task::spawn_blocking(move || doctor(&with_json))
        .await
        .unwrap();
    assert!(out.status.success());
    let report = json_report(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["summary"]["ok"], 9, "{report}");
    for check in [
        "backend",
        "directory",
        "clock",
        "port.directory",
        "port.node",
        "port.gateway",
        "node",
        "gateway",
        "endpoint",
    ] {
        assert_eq!(status_of(&report, check), "ok", "{report}");
    }
    drop(up);
}

#[test]
fn doctor_fails_with_fixes_for_a_dead_backend_and_a_busy_port() {
    let dead_backend = format!("http://127.0.0.1:{}", free_port());
    let no_directory = format!("http://127.0.0.1:{}", free_port());
    // A program that is not an IICP gateway holds the gateway port: it accepts connections and
    // never answers.
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = stranger.local_addr().unwrap().port();
    let gateway = format!("http://127.0.0.1:{busy}");
    let args = [
        "--backend",
        dead_backend.as_str(),
        "--directory",
        no_directory.as_str(),
        "--gateway",
        gateway.as_str(),
    ];

    let out = doctor(&args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{stdout}"))
    };
    let lines: Vec<&str> = stdout.lines().collect();
    let backend = line("fail  backend");
    assert!(lines[backend].contains(&dead_backend), "{stdout}");
    assert!(
        lines[backend + 1].trim_start().starts_with("fix: "),
        "{stdout}"
    );
    assert!(lines[backend + 1].contains("ollama serve"), "{stdout}");
    let port = line(&format!("fail  port {busy}"));
    assert!(lines[port].contains("another program"), "{stdout}");
    assert!(lines[port + 1].contains("--gateway-port"), "{stdout}");
    let directory = line("fail  directory");
    assert!(lines[directory + 1].contains("iicp up"), "{stdout}");

    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = doctor(&with_json);
    assert_eq!(out.status.code(), Some(1));
    let report = json_report(&out);
    assert_eq!(report["ok"], false);
    assert_eq!(status_of(&report, "backend"), "fail");
    assert_eq!(status_of(&report, "port.gateway"), "fail");
    assert_eq!(status_of(&report, "directory"), "fail");
    assert_eq!(status_of(&report, "clock"), "skip");
    for check in report["checks"].as_array().unwrap() {
        if check["status"] == "fail" {
            assert!(
                check["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "{check}"
            );
        }
    }
    drop(stranger);
}
