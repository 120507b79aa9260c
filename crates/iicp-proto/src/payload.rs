//! Intent payload validation against the registry's input JSON Schemas (2020-12).
//!
//! The schemas are the registry's own files, embedded at build time and compiled once. Intents
//! with no registered schema (custom `x.` intents, anything unknown) carry opaque payloads: only
//! "is an object" is checked for them.

use crate::registry::Registry;
use crate::validate::Problems;
use crate::Intent;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Input schemas by file name, as the registry names them.
const SCHEMAS: &[(&str, &str)] = &[
    (
        "audio-speech-v1-input.json",
        include_str!("../data/schemas/audio-speech-v1-input.json"),
    ),
    (
        "audio-transcribe-v1-input.json",
        include_str!("../data/schemas/audio-transcribe-v1-input.json"),
    ),
    (
        "classify-v1-input.json",
        include_str!("../data/schemas/classify-v1-input.json"),
    ),
    (
        "code-lint-v1-input.json",
        include_str!("../data/schemas/code-lint-v1-input.json"),
    ),
    (
        "code-optimize-v1-input.json",
        include_str!("../data/schemas/code-optimize-v1-input.json"),
    ),
    (
        "education-tutor-v1-input.json",
        include_str!("../data/schemas/education-tutor-v1-input.json"),
    ),
    (
        "embedding-multimodal-v1-input.json",
        include_str!("../data/schemas/embedding-multimodal-v1-input.json"),
    ),
    (
        "llm-chat-v1-input.json",
        include_str!("../data/schemas/llm-chat-v1-input.json"),
    ),
    (
        "llm-classify-v1-input.json",
        include_str!("../data/schemas/llm-classify-v1-input.json"),
    ),
    (
        "llm-completion-v1-input.json",
        include_str!("../data/schemas/llm-completion-v1-input.json"),
    ),
    (
        "llm-embedding-v1-input.json",
        include_str!("../data/schemas/llm-embedding-v1-input.json"),
    ),
    (
        "llm-rerank-v1-input.json",
        include_str!("../data/schemas/llm-rerank-v1-input.json"),
    ),
    (
        "llm-summarize-v1-input.json",
        include_str!("../data/schemas/llm-summarize-v1-input.json"),
    ),
    (
        "mcp-tools-call-v1-input.json",
        include_str!("../data/schemas/mcp-tools-call-v1-input.json"),
    ),
    (
        "research-summarize-v1-input.json",
        include_str!("../data/schemas/research-summarize-v1-input.json"),
    ),
    (
        "safety-moderate-v1-input.json",
        include_str!("../data/schemas/safety-moderate-v1-input.json"),
    ),
    (
        "translate-v1-input.json",
        include_str!("../data/schemas/translate-v1-input.json"),
    ),
];

/// The embedded schema text for a registry file name.
pub fn schema_source(file: &str) -> Option<&'static str> {
    SCHEMAS.iter().find(|(f, _)| *f == file).map(|(_, s)| *s)
}

fn validators() -> &'static HashMap<&'static str, jsonschema::Validator> {
    static VALIDATORS: OnceLock<HashMap<&'static str, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        Registry::global()
            .intents
            .iter()
            .filter_map(|entry| {
                let source = schema_source(entry.input_schema_file()?)?;
                let schema: Value = serde_json::from_str(source).expect("embedded schema is JSON");
                let validator =
                    jsonschema::validator_for(&schema).expect("embedded schema compiles");
                Some((entry.urn.as_str(), validator))
            })
            .collect()
    })
}

/// True when the registry has an input schema for this intent.
pub fn has_schema(intent: &Intent) -> bool {
    validators().contains_key(intent.as_str())
}

/// Checks `payload` (found at `path`) against the intent's input schema.
pub fn check_payload(intent: &Intent, payload: &Value, path: &str, problems: &mut Problems) {
    if !payload.is_object() {
        problems.invalid(path, "must be an object");
        return;
    }
    let Some(validator) = validators().get(intent.as_str()) else {
        return;
    };
    // The common case costs a yes/no walk; the problems are collected only when there are some.
    if validator.is_valid(payload) {
        return;
    }
    for error in validator.iter_errors(payload) {
        let pointer = error.instance_path().to_string();
        problems.invalid(pointer_to_path(path, &pointer), describe(error.kind()));
    }
}

/// States what a schema requires without quoting the offending value: problem messages reach
/// callers and logs, and payload values are the caller's private data. Everything quoted here
/// (property names, limits, allowed options, types) comes from the schema itself.
fn describe(kind: &ValidationErrorKind) -> String {
    use ValidationErrorKind as K;
    match kind {
        K::Required { property } => format!("required property {property} is missing"),
        K::Type { kind } => match kind {
            TypeKind::Single(t) => format!("must be of type {t}"),
            TypeKind::Multiple(set) => {
                let names: Vec<String> = set.iter().map(|t| t.to_string()).collect();
                format!("must be one of the types {}", names.join(", "))
            }
        },
        K::Enum { options } => format!("must be one of {options}"),
        K::Constant { expected_value } => format!("must equal {expected_value}"),
        K::MinLength { limit } => format!("must be at least {limit} characters long"),
        K::MaxLength { limit } => format!("must be at most {limit} characters long"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::MinProperties { limit } => format!("must have at least {limit} properties"),
        K::MaxProperties { limit } => format!("must have at most {limit} properties"),
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::Pattern { pattern } => format!("must match the pattern {pattern}"),
        K::Format { format } => format!("must be a valid {format}"),
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            format!(
                "has {} property(ies) the schema does not allow",
                unexpected.len()
            )
        }
        K::AdditionalItems { .. } | K::UnevaluatedItems { .. } => {
            "has more items than the schema allows".to_owned()
        }
        K::UniqueItems => "items must be unique".to_owned(),
        K::AnyOf { .. } | K::OneOfNotValid { .. } => {
            "does not match any of the allowed shapes".to_owned()
        }
        K::OneOfMultipleValid { .. } => "matches more than one of the allowed shapes".to_owned(),
        K::Not { .. } => "matches a shape the schema forbids".to_owned(),
        _ => "does not match the schema".to_owned(),
    }
}

/// Turns a JSON pointer (`/messages/0/role`) under `base` into a JSON path (`$.payload.messages[0].role`).
fn pointer_to_path(base: &str, pointer: &str) -> String {
    let mut out = base.to_owned();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else {
            out.push('.');
            out.push_str(&token);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(intent: &str, payload: Value) -> Problems {
        let mut p = Problems::new();
        check_payload(
            &Intent::parse(intent).unwrap(),
            &payload,
            "$.payload",
            &mut p,
        );
        p
    }

    #[test]
    fn every_registry_schema_is_embedded_and_compiles() {
        for entry in &Registry::global().intents {
            let file = entry
                .input_schema_file()
                .expect("entry names an input schema");
            assert!(schema_source(file).is_some(), "{file} not embedded");
            assert!(
                has_schema(&Intent::parse(&entry.urn).unwrap()),
                "{}",
                entry.urn
            );
        }
    }

    #[test]
    fn chat_problems_point_into_the_payload() {
        let p = problems(
            crate::intent::LLM_CHAT_V1,
            json!({"messages":[{"role":"robot","content":"x"}],"temperature":3}),
        );
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"$.payload.messages[0].role"), "{paths:?}");
        assert!(paths.contains(&"$.payload.temperature"), "{paths:?}");
    }

    #[test]
    fn problem_messages_never_quote_payload_values() {
        let canary = "canary-5d1e";
        let p = problems(
            crate::intent::LLM_CHAT_V1,
            json!({
                "messages": [{"role": canary, "content": 7, canary: 1}],
                "temperature": canary,
                "max_tokens": -5
            }),
        );
        assert!(p.len() >= 3, "{:?}", p.iter().collect::<Vec<_>>());
        for problem in p.iter() {
            assert!(!problem.message.contains(canary), "{}", problem.message);
            assert!(!problem.message.contains("-5"), "{}", problem.message);
        }
        let role = p
            .iter()
            .find(|p| p.path == "$.payload.messages[0].role")
            .expect("role problem");
        assert!(role.message.contains("must be one of"), "{}", role.message);
    }

    #[test]
    fn custom_intents_carry_opaque_objects() {
        assert!(problems("urn:iicp:intent:x.acme:thing:v1", json!({"anything": 1})).is_empty());
        assert_eq!(
            problems("urn:iicp:intent:x.acme:thing:v1", json!([1])).len(),
            1
        );
    }

    #[test]
    fn pointer_tokens_are_unescaped() {
        assert_eq!(pointer_to_path("$", "/a~1b/0/c~0d"), "$.a/b[0].c~d");
        assert_eq!(pointer_to_path("$.payload", ""), "$.payload");
    }
}
