//! Property tests: envelope round trips, URN parsing, and no panic on any input.

use iicp_proto::control::{Heartbeat, RegisterRequest};
use iicp_proto::task::{Constraints, Priority, Qos, TaskRequest};
use iicp_proto::Intent;
use proptest::prelude::*;
use serde_json::{json, Value};

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,20}"
}

fn intent_string() -> impl Strategy<Value = String> {
    (
        prop_oneof![label(), "[a-z0-9_.-]{1,20}".prop_map(|v| format!("x.{v}"))],
        label(),
        0u32..1000,
    )
        .prop_map(|(d, a, n)| format!("urn:iicp:intent:{d}:{a}:v{n}"))
}

fn qos() -> impl Strategy<Value = Qos> {
    prop_oneof![
        Just(Qos::Realtime),
        Just(Qos::Interactive),
        Just(Qos::Batch),
        Just(Qos::BestEffort)
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Low),
        Just(Priority::Normal),
        Just(Priority::High),
        Just(Priority::Critical)
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("task_id".to_owned()),
                    Just("intent".to_owned()),
                    Just("payload".to_owned()),
                    Just("constraints".to_owned()),
                    Just("timeout_ms".to_owned()),
                    Just("capabilities".to_owned()),
                    Just("limits".to_owned()),
                    Just("metrics".to_owned()),
                    ".{0,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn grammatical_urns_parse_and_print_back(urn in intent_string()) {
        let intent = Intent::parse(&urn).unwrap();
        prop_assert_eq!(intent.to_string(), urn.clone());
        prop_assert!(intent.follows_grammar());
        prop_assert_eq!(intent.is_custom(), intent.domain().starts_with("x."));
    }

    #[test]
    fn uppercase_or_modified_urns_are_refused(urn in intent_string(), suffix in "[a-z]{1,8}") {
        let modified = format!("{urn}+{suffix}");
        prop_assert!(Intent::parse(&modified).is_err());
        let shouted = urn.replacen("urn:iicp:intent:", "urn:iicp:intent:Q", 1);
        prop_assert!(Intent::parse(&shouted).is_err());
    }

    #[test]
    fn any_string_parses_or_errs_without_panic(s in ".{0,300}") {
        let _ = Intent::parse(&s);
    }

    #[test]
    fn task_envelopes_round_trip(
        urn in intent_string(),
        timeout in 100u32..=300_000,
        qos in qos(),
        priority in priority(),
        text in ".{0,40}",
    ) {
        let mut constraints = Constraints::new(timeout);
        constraints.qos = qos;
        constraints.priority = priority;
        let task = TaskRequest::new(
            Intent::parse(&urn).unwrap(),
            json!({"messages": [{"role": "user", "content": text}]}),
            constraints,
        );
        let wire = serde_json::to_vec(&task).unwrap();
        let back = TaskRequest::from_slice(&wire).unwrap();
        prop_assert_eq!(back, task);
    }

    #[test]
    fn register_bodies_round_trip(
        urn in intent_string(),
        max_concurrent in 1u32..=256,
        region in "[a-z]{2}-[a-z]{4,8}",
        models in prop::collection::vec("[a-z0-9.:-]{1,30}", 1..4),
    ) {
        let body = json!({
            "endpoint": "https://node.example.com:8443",
            "region": region,
            "capabilities": [{"intent": urn, "models": models, "max_tokens": 2048}],
            "limits": {"max_concurrent": max_concurrent},
            "availability": [{"start": "08:00", "end": "20:00", "share": 0.5}],
        });
        let req = RegisterRequest::from_value(body).unwrap();
        let wire = serde_json::to_value(&req).unwrap();
        let again = RegisterRequest::from_value(wire).unwrap();
        prop_assert_eq!(again, req);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = TaskRequest::from_slice(&bytes);
        let _ = RegisterRequest::from_slice(&bytes);
        let _ = Heartbeat::from_slice(&bytes);
    }

    #[test]
    fn random_json_never_panics_and_errors_render(value in json_value()) {
        if let Err(p) = TaskRequest::from_value(value.clone()) {
            prop_assert!(!p.is_empty());
            let body = p.to_error_body();
            prop_assert!(body.status() >= 400);
        }
        let _ = RegisterRequest::from_value(value.clone());
        let _ = Heartbeat::from_value(value);
    }
}
