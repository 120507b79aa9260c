//! The model catalog: `/api/tags`, `/api/show`, name resolution and plausible details.

use super::{error, JSON};
use crate::server::{Out, Req, Shared};
use crate::text;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};
use std::borrow::Cow;

const MODIFIED_AT: &str = "2025-01-15T10:30:00.123456789Z";

/// `name` with Ollama's implicit `:latest` tag.
fn normalize(name: &str) -> Cow<'_, str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name}:latest"))
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Chat,
    Embedding,
}

pub(super) fn find<'a>(sh: &'a Shared, name: &str) -> Option<(&'a str, Kind)> {
    let name = normalize(name);
    let chat = sh.models.chat.iter().map(|m| (m, Kind::Chat));
    let embed = sh.models.embedding.iter().map(|m| (m, Kind::Embedding));
    chat.chain(embed)
        .find(|(m, _)| normalize(m) == name)
        .map(|(m, k)| (m.as_str(), k))
}

#[derive(Serialize)]
struct Details {
    parent_model: &'static str,
    format: &'static str,
    family: &'static str,
    families: Vec<&'static str>,
    parameter_size: String,
    quantization_level: &'static str,
}

/// Plausible details guessed from the name (`llava:7b` → llama + clip, 7B, Q4_K_M), with the
/// parameter count and the file size.
fn details(name: &str, kind: Kind) -> (Details, u64, u64) {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let (base, tag) = base.split_once(':').unwrap_or((&base, "latest"));
    let family = match base {
        _ if kind == Kind::Embedding && base.contains("nomic") => "nomic-bert",
        _ if kind == Kind::Embedding => "bert",
        b if b.starts_with("qwen") => "qwen2",
        b if b.starts_with("gemma3") => "gemma3",
        b if b.starts_with("gemma") => "gemma2",
        b if b.starts_with("phi") => "phi3",
        _ => "llama",
    };
    let mut families = vec![family];
    if ["llava", "-vl", "vision"].iter().any(|v| base.contains(v)) {
        families.push("clip");
    }
    // A size tag such as `7b` or `3.2b-instruct-q8_0` gives the parameter count.
    let size_tag = tag.split('-').next().unwrap_or(tag);
    let tagged = size_tag
        .strip_suffix('b')
        .and_then(|n| n.parse::<f64>().ok());
    let (parameter_size, params, quant) = match (tagged, kind) {
        (Some(b), _) => (size_tag.to_ascii_uppercase(), b * 1e9, "Q4_K_M"),
        (None, Kind::Embedding) => ("137M".to_owned(), 137e6, "F16"),
        (None, Kind::Chat) => ("3.2B".to_owned(), 3.2e9, "Q4_K_M"),
    };
    let bytes_per_param = if quant == "F16" { 2.0 } else { 0.6 };
    let details = Details {
        parent_model: "",
        format: "gguf",
        family,
        families,
        parameter_size,
        quantization_level: quant,
    };
    (details, params as u64, (params * bytes_per_param) as u64)
}

fn digest(name: &str) -> String {
    let mut state = text::hash(name.as_bytes());
    (0..4)
        .map(|_| format!("{:016x}", text::splitmix(&mut state)))
        .collect()
}

pub(super) fn tags(sh: &Shared) -> Out {
    #[derive(Serialize)]
    struct Tag {
        name: String,
        model: String,
        modified_at: &'static str,
        size: u64,
        digest: String,
        details: Details,
    }
    let chat = sh.models.chat.iter().map(|m| (m, Kind::Chat));
    let embed = sh.models.embedding.iter().map(|m| (m, Kind::Embedding));
    let models: Vec<Tag> = chat
        .chain(embed)
        .map(|(m, kind)| {
            let name = normalize(m).into_owned();
            let (details, _, size) = details(m, kind);
            Tag {
                model: name.clone(),
                digest: digest(&name),
                name,
                modified_at: MODIFIED_AT,
                size,
                details,
            }
        })
        .collect();
    #[derive(Serialize)]
    struct Tags {
        models: Vec<Tag>,
    }
    Out::json(StatusCode::OK, JSON, text::to_json(&Tags { models }))
}

/// `/api/show`: details, model info and capabilities (`completion`, `vision`, `embedding`).
pub(super) fn show(sh: &Shared, req: &Req<'_>) -> Out {
    let name = match req.json {
        Ok(Some(v)) => v
            .get("model")
            .or_else(|| v.get("name"))
            .and_then(Value::as_str),
        _ => None,
    };
    let Some((model, kind)) = name.and_then(|n| find(sh, n)) else {
        let name = name.unwrap_or("");
        return error(StatusCode::NOT_FOUND, &format!("model '{name}' not found"));
    };
    let (details, params, _) = details(model, kind);
    let mut capabilities = vec![if kind == Kind::Chat {
        "completion"
    } else {
        "embedding"
    }];
    if details.families.contains(&"clip") {
        capabilities.push("vision");
    }
    let family = details.family;
    let info = json!({
        "general.architecture": family,
        "general.parameter_count": params,
        format!("{family}.context_length"): 131072,
        format!("{family}.embedding_length"): if kind == Kind::Chat { 3072 } else { 768 },
    });
    #[derive(Serialize)]
    struct Show {
        license: &'static str,
        modelfile: String,
        parameters: &'static str,
        template: &'static str,
        details: Details,
        model_info: Value,
        capabilities: Vec<&'static str>,
        modified_at: &'static str,
    }
    let show = Show {
        license: "",
        modelfile: format!(
            "# Modelfile generated by \"ollama show\"\nFROM {}\n",
            normalize(model)
        ),
        parameters: "",
        template: "{{ .Prompt }}",
        details,
        model_info: info,
        capabilities,
        modified_at: MODIFIED_AT,
    };
    Out::json(StatusCode::OK, JSON, text::to_json(&show))
}
