//! The chat intent's payload and result are OpenAI-shaped (digest §4.3). What every component
//! that meets Ollama's shape needs to turn it into that one.

use serde_json::{json, Value};

/// Ollama tool calls (arguments as an object) → OpenAI's (arguments as a JSON string, an id
/// per call).
pub fn tool_calls_from_ollama(calls: &[Value]) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let f = c.get("function").cloned().unwrap_or_default();
                let arguments = match f.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "{}".into(),
                };
                json!({"id": format!("call_{i}"), "type": "function", "function": {
                    "name": f.get("name").cloned().unwrap_or_default(),
                    "arguments": arguments}})
            })
            .collect(),
    )
}
