//! Which models a live node serves right now: the union of the models of the nodes the
//! directory lists for the chat and the embedding intents (discover answers are cached by the
//! SDK as long as the directory allows, a few seconds).

use crate::Shared;
use iicp_client::ClientError;
use iicp_proto::intent::{LLM_CHAT_V1, LLM_EMBEDDING_V1};
use std::collections::BTreeSet;

impl Shared {
    /// Every model a live chat or embedding node serves, sorted.
    pub async fn live_models(&self) -> Result<Vec<String>, ClientError> {
        let (chat, embedding) = tokio::join!(
            self.client.discover(LLM_CHAT_V1, None, None),
            self.client.discover(LLM_EMBEDDING_V1, None, None)
        );
        let mut names = BTreeSet::new();
        for c in chat?.into_iter().chain(embedding?) {
            names.extend(c.models);
        }
        Ok(names.into_iter().collect())
    }

    /// The live model an Ollama-style name refers to: the name itself, or the same model with
    /// or without the `:latest` tag (`llama3.2` ↔ `llama3.2:latest`). `None` when no live node
    /// serves it.
    pub async fn resolve_tagged(&self, intent: &str, model: &str) -> Option<String> {
        let candidates = self.client.discover(intent, None, None).await.ok()?;
        let live = |name: &str| {
            candidates
                .iter()
                .any(|c| c.models.iter().any(|m| m == name))
        };
        if live(model) {
            return Some(model.to_owned());
        }
        let other = match model.strip_suffix(":latest") {
            Some(bare) => bare.to_owned(),
            None if !model.contains(':') => format!("{model}:latest"),
            None => return None,
        };
        live(&other).then_some(other)
    }
}
