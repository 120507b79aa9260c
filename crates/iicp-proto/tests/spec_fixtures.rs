//! Table tests driven by the spec's own fixtures (copied under `tests/fixtures/` so the project
//! stands alone): every example is accepted or rejected exactly as its fixture says.

use iicp_proto::control::{NodeList, RegisterRequest};
use iicp_proto::payload::{check_payload, schema_source};
use iicp_proto::registry::Registry;
use iicp_proto::task::TaskRequest;
use iicp_proto::{Intent, Problems};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn intent_payload_cases_are_judged_as_the_fixture_says() {
    let cases = fixture("intent-payloads-v1.json");
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let intent = Intent::parse(case["intent"].as_str().unwrap()).unwrap();
        let mut problems = Problems::new();
        check_payload(&intent, &case["payload"], "$.payload", &mut problems);
        assert_eq!(
            problems.is_empty(),
            case["valid"].as_bool().unwrap(),
            "{}: {problems:?}",
            case["id"]
        );
    }
}

#[test]
fn payload_cases_also_hold_inside_a_full_call() {
    let cases = fixture("intent-payloads-v1.json");
    for case in cases["cases"].as_array().unwrap() {
        let call = json!({
            "task_id": uuid::Uuid::new_v4().to_string(),
            "intent": case["intent"],
            "payload": case["payload"],
            "constraints": {"timeout_ms": 1000},
        });
        let result = TaskRequest::from_value(call);
        assert_eq!(
            result.is_ok(),
            case["valid"].as_bool().unwrap(),
            "{}",
            case["id"]
        );
        if let Err(problems) = result {
            assert!(problems.iter().all(|p| p.path.starts_with("$.payload")));
        }
    }
}

#[test]
fn task_schema_examples_are_accepted() {
    let schema = fixture("task.json");
    let examples = schema["examples"].as_array().unwrap();
    assert!(!examples.is_empty());
    for example in examples {
        let task = TaskRequest::from_value(example.clone()).unwrap();
        let back = serde_json::to_value(&task).unwrap();
        assert_eq!(back["task_id"], example["task_id"]);
        assert_eq!(back["payload"], example["payload"]);
    }
}

fn base_register() -> Value {
    json!({
        "endpoint": "https://node.example.com",
        "region": "eu-central",
        "capabilities": [{"intent": "urn:iicp:intent:llm:chat:v1", "models": ["m"], "max_tokens": 4096}],
        "limits": {"max_concurrent": 1, "tokens_per_min": 1000}
    })
}

#[test]
fn implementation_metadata_cases_are_judged_as_the_fixture_says() {
    let fixture = fixture("directory-implementation-metadata-v1.json");
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let mut body = base_register();
        for (k, v) in case["input"].as_object().unwrap() {
            body[k] = v.clone();
        }
        let result = RegisterRequest::from_value(body);
        let accepted = case["accepted"].as_bool().unwrap();
        assert_eq!(result.is_ok(), accepted, "{}", case["name"]);
        match result {
            Ok(req) => assert_eq!(
                req.effective_sdk_compatibility_version(),
                case["effective_sdk_compatibility_version"].as_str(),
                "{}",
                case["name"]
            ),
            Err(problems) => {
                let body = problems.to_error_body();
                assert_eq!(body.status(), case["status"].as_u64().unwrap() as u16);
            }
        }
    }
}

/// Replaces the runner's `${name}` captures with plausible values.
fn substitute(value: &Value) -> Value {
    match value {
        Value::String(s) if s == "${node_id}" => json!(uuid::Uuid::new_v4().to_string()),
        Value::String(s) if s.starts_with("${") => json!("a".repeat(64)),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn conformance_registrations_are_accepted() {
    let profile = fixture("directory-lifecycle-v1.json");
    let mut seen = 0;
    for test in profile["tests"].as_array().unwrap() {
        if test["path"] == "/api/v1/register" && test["method"] == "POST" {
            let body = substitute(&test["body"]);
            RegisterRequest::from_value(body).unwrap_or_else(|p| panic!("{}: {p:?}", test["id"]));
            seen += 1;
        }
    }
    assert_eq!(seen, 2);
}

#[test]
fn nodelist_schema_examples_parse() {
    let schema = fixture("nodelist.json");
    for example in schema["examples"].as_array().unwrap() {
        let list: NodeList = serde_json::from_value(example.clone()).unwrap();
        assert!(list.nodes.iter().all(|n| (0.0..=1.0).contains(&n.score)));
    }
}

#[test]
fn embedded_schemas_match_the_registry_hashes() {
    for entry in &Registry::global().intents {
        let file = entry.input_schema_file().unwrap();
        let source = schema_source(file).unwrap();
        let digest = format!("{:x}", Sha256::digest(source.as_bytes()));
        assert_eq!(Some(digest.as_str()), entry.input_schema_sha256(), "{file}");
    }
}
