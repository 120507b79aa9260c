//! From the backend's model list to the capabilities a node advertises: chat models under the
//! chat intent, embedding models under the embedding intent, and one capability per
//! (intent, input modalities) so a client looking for vision finds exactly the vision models.

use crate::backend::ModelInfo;
use iicp_proto::intent::{LLM_CHAT_V1, LLM_EMBEDDING_V1};
use iicp_proto::node::Capability;
use iicp_proto::Intent;

/// Advertised when the backend does not say; C3 asks nodes to always send `max_tokens`.
const DEFAULT_MAX_TOKENS: u64 = 4096;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub chat: Vec<String>,
    pub embedding: Vec<String>,
    pub capabilities: Vec<Capability>,
}

fn tokens(name: &str) -> Vec<String> {
    name.to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Input modalities a chat model accepts, judged from its name.
pub fn modalities(name: &str) -> Vec<&'static str> {
    let toks = tokens(name);
    let has = |pred: &dyn Fn(&str) -> bool| toks.iter().any(|t| pred(t));
    // "vl" as its own token or right after a version number ("qwen2.5vl", "qwen2-vl").
    let vision = has(&|t| {
        t == "vl"
            || t.contains("vision")
            || t.contains("llava")
            || t.contains("omni")
            || (t.ends_with("vl") && t[..t.len() - 2].ends_with(|c: char| c.is_ascii_digit()))
    });
    let audio = has(&|t| t.contains("audio") || t.contains("voxtral") || t.contains("omni"));
    let mut m = vec!["text"];
    if vision {
        m.push("image");
    }
    if audio {
        m.push("audio");
    }
    m
}

/// Builds the catalog; `allowed`, when not empty, restricts which models are served.
pub fn build(models: &[ModelInfo], allowed: &[String]) -> Catalog {
    let served = models
        .iter()
        .filter(|m| allowed.is_empty() || allowed.contains(&m.name));
    let mut catalog = Catalog::default();
    let mut groups: Vec<(Vec<&'static str>, Vec<String>)> = Vec::new();
    for m in served {
        if m.embedding {
            catalog.embedding.push(m.name.clone());
            continue;
        }
        catalog.chat.push(m.name.clone());
        let mods = modalities(&m.name);
        match groups.iter_mut().find(|(g, _)| *g == mods) {
            Some((_, names)) => names.push(m.name.clone()),
            None => groups.push((mods, vec![m.name.clone()])),
        }
    }
    let chat = Intent::parse(LLM_CHAT_V1).expect("chat intent parses");
    for (mods, names) in groups {
        let mut cap = Capability::new(chat.clone(), names);
        cap.max_tokens = Some(DEFAULT_MAX_TOKENS);
        cap.supports_streaming = Some(true);
        cap.input_modalities = Some(mods.iter().map(|m| (*m).to_owned()).collect());
        catalog.capabilities.push(cap);
    }
    if !catalog.embedding.is_empty() {
        let embed = Intent::parse(LLM_EMBEDDING_V1).expect("embedding intent parses");
        let mut cap = Capability::new(embed, catalog.embedding.clone());
        cap.max_tokens = Some(512);
        cap.input_modalities = Some(vec!["text".into()]);
        catalog.capabilities.push(cap);
    }
    catalog
}

impl Catalog {
    pub fn serves(&self, intent: &str) -> bool {
        self.capabilities.iter().any(|c| c.intent == intent)
    }

    /// The model to use for `intent`: the requested one if served, else the first served.
    pub fn pick(&self, intent: &str, requested: Option<&str>) -> Result<String, ()> {
        let pool = if intent == LLM_EMBEDDING_V1 {
            &self.embedding
        } else {
            &self.chat
        };
        match requested {
            Some(m) if pool.iter().any(|p| p == m) => Ok(m.to_owned()),
            Some(_) => Err(()),
            None => pool.first().cloned().ok_or(()),
        }
    }

    pub fn all_models(&self) -> Vec<String> {
        self.chat.iter().chain(&self.embedding).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, embedding: bool) -> ModelInfo {
        ModelInfo {
            name: name.into(),
            embedding,
        }
    }

    #[test]
    fn modalities_come_from_model_names() {
        assert_eq!(modalities("llama3.2:3b"), vec!["text"]);
        assert_eq!(modalities("qwen2.5vl:7b"), vec!["text", "image"]);
        assert_eq!(modalities("Qwen2-VL-7B"), vec!["text", "image"]);
        assert_eq!(modalities("llava:13b"), vec!["text", "image"]);
        assert_eq!(modalities("llama-3.2-vision"), vec!["text", "image"]);
        assert_eq!(modalities("voxtral-mini"), vec!["text", "audio"]);
        assert_eq!(modalities("qwen2.5-omni"), vec!["text", "image", "audio"]);
        assert_eq!(modalities("devstral"), vec!["text"]);
    }

    #[test]
    fn one_capability_per_intent_and_modality_set() {
        let c = build(
            &[
                m("llama3", false),
                m("mistral", false),
                m("llava", false),
                m("nomic-embed-text", true),
            ],
            &[],
        );
        assert_eq!(c.capabilities.len(), 3);
        assert_eq!(c.capabilities[0].models, vec!["llama3", "mistral"]);
        assert_eq!(c.capabilities[1].models, vec!["llava"]);
        assert!(c.capabilities[1].accepts_modality("image"));
        assert_eq!(c.capabilities[2].intent, LLM_EMBEDDING_V1);
        assert_eq!(c.pick(LLM_CHAT_V1, None), Ok("llama3".into()));
        assert_eq!(c.pick(LLM_CHAT_V1, Some("mistral")), Ok("mistral".into()));
        assert!(c.pick(LLM_CHAT_V1, Some("gpt-9")).is_err());
        assert_eq!(
            c.pick(LLM_EMBEDDING_V1, None),
            Ok("nomic-embed-text".into())
        );
    }

    #[test]
    fn allowed_models_restrict_the_catalog() {
        let c = build(&[m("a", false), m("b", false)], &["b".into()]);
        assert_eq!(c.chat, vec!["b"]);
    }
}
