//! Black-box tests of the `iicp` binary.

use iicp_testkit::support::TempDir;
use proptest::prelude::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn iicp(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iicp"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const VALID_TASK: &str = r#"{
  "task_id": "550e8400-e29b-41d4-a716-446655440000",
  "intent": "urn:iicp:intent:llm:chat:v1",
  "payload": {"messages": [{"role": "user", "content": "Hello"}]},
  "constraints": {"timeout_ms": 5000}
}"#;

#[test]
fn version_names_the_crate_version() {
    let out = iicp(&["--version"], b"");
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("iicp {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn intents_lists_the_whole_registry() {
    let out = iicp(&["intents"], b"");
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("urn:iicp:intent:llm:chat:v1"));
    assert!(text.contains("registry v1.4.0, 17 intents"));
    let json = iicp(&["intents", "--json"], b"");
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 17);
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[0]["phase"], 1);
}

#[test]
fn check_task_accepts_a_valid_envelope_from_a_file() {
    let dir = TempDir::new("cli");
    let file = dir.path().join("task.json");
    std::fs::write(&file, VALID_TASK).unwrap();
    let out = iicp(&["check", "task", file.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("valid task envelope"));
}

#[test]
fn check_task_prints_each_problem_with_path_and_code() {
    let bad = br#"{"task_id": "nope", "intent": "urn:iicp:intent:llm:chat:v1+x",
        "payload": {}, "constraints": {"timeout_ms": 10}}"#;
    let out = iicp(&["check", "task", "-"], bad);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(
            "<stdin>: $.task_id: must be a UUID (8-4-4-4-12 hex digits) [validation_error]"
        ),
        "{text}"
    );
    assert!(
        text.contains("$.intent: ") && text.contains("[IICP-E028]"),
        "{text}"
    );
    assert!(
        text.contains("$.constraints.timeout_ms: must be between 100 and 300000, found 10"),
        "{text}"
    );
    assert!(
        text.contains("invalid task envelope (3 problems)"),
        "{text}"
    );
}

#[test]
fn check_reports_where_the_json_broke() {
    let out = iicp(
        &["check", "task", "-"],
        b"{\n  \"task_id\": \"x\",\n  oops\n}",
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("<stdin>:3:3: not valid JSON"), "{text}");
}

#[test]
fn check_register_reports_field_precise_problems() {
    let body = br#"{"endpoint": "https://node.example.com", "region": "eu",
        "capabilities": [{"intent": "urn:iicp:intent:llm:chat:v1", "models": ["m"]}],
        "limits": {"max_concurrent": 0}}"#;
    let out = iicp(&["check", "register", "-"], body);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("$.limits.max_concurrent: must be between 1 and 256"));
    let ok =
        String::from_utf8_lossy(body).replace("\"max_concurrent\": 0", "\"max_concurrent\": 4");
    let out = iicp(&["check", "register", "-"], ok.as_bytes());
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn unreadable_file_exits_two() {
    let out = iicp(&["check", "task", "/nonexistent/task.json"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_bytes_on_stdin_never_crash_the_binary(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for kind in ["task", "register"] {
            let out = iicp(&["check", kind, "-"], &bytes);
            // 0 or 1 are answers; 101 would be a panic.
            prop_assert!(matches!(out.status.code(), Some(0 | 1)), "exit {:?}", out.status);
        }
    }
}
