//! `iicp intents`: the embedded registry, one intent a line.

use iicp_proto::registry::Registry;
use std::process::ExitCode;

pub fn run(json: bool) -> ExitCode {
    let registry = Registry::global();
    if json {
        let list: Vec<_> = registry
            .intents
            .iter()
            .map(|e| {
                serde_json::json!({
                    "urn": e.urn, "name": e.name, "status": e.status.as_str(), "phase": e.phase,
                    "deprecated_by": e.deprecated_by,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return ExitCode::SUCCESS;
    }
    let width = registry
        .intents
        .iter()
        .map(|e| e.urn.len())
        .max()
        .unwrap_or(0);
    println!("{:width$}  {:12}  PHASE  NAME", "URN", "STATUS");
    for e in &registry.intents {
        let note = match &e.deprecated_by {
            Some(successor) => format!(" (use {successor})"),
            None => String::new(),
        };
        println!(
            "{:width$}  {:12}  {:>5}  {}{note}",
            e.urn,
            e.status.as_str(),
            e.phase,
            e.name
        );
    }
    println!(
        "\nregistry v{}, {} intents",
        registry.version,
        registry.intents.len()
    );
    ExitCode::SUCCESS
}
