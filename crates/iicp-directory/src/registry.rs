//! The in-memory index of registered nodes, by id and by intent.
//!
//! It is a cache of the store that is safe to lose: it is rebuilt from the store at start, and
//! every durable change is written before it is applied here.

use crate::model::Node;
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Default)]
pub struct Registry {
    nodes: HashMap<Uuid, Node>,
    by_intent: HashMap<Box<str>, Vec<Uuid>>,
    by_proxy: HashMap<String, Uuid>,
}

impl Registry {
    pub fn from_nodes(nodes: Vec<Node>) -> Self {
        let mut r = Registry::default();
        for n in nodes {
            r.upsert(n);
        }
        r
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn get(&self, id: &Uuid) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn get_mut(&mut self, id: &Uuid) -> Option<&mut Node> {
        self.nodes.get_mut(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        self.nodes.values_mut()
    }

    /// Nodes advertising `intent` (exact match).
    pub fn serving<'a>(&'a self, intent: &str) -> impl Iterator<Item = &'a Node> + 'a {
        self.by_intent
            .get(intent)
            .into_iter()
            .flatten()
            .filter_map(|id| self.nodes.get(id))
    }

    /// Number of distinct intents advertised, with their node counts.
    pub fn intent_counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.by_intent.iter().map(|(k, v)| (&**k, v.len()))
    }

    /// The node whose proxy token hashes to `hash`.
    pub fn by_proxy_token_hash(&self, hash: &str) -> Option<Uuid> {
        self.by_proxy.get(hash).copied()
    }

    pub fn upsert(&mut self, node: Node) {
        let id = node.id;
        if let Some(old) = self.nodes.remove(&id) {
            self.unindex(&old);
        }
        self.by_proxy
            .insert(node.creds.proxy_token_hash.clone(), id);
        for intent in node.intents() {
            self.by_intent
                .entry(intent.as_str().into())
                .or_default()
                .push(id);
        }
        self.nodes.insert(id, node);
    }

    pub fn remove(&mut self, id: &Uuid) -> Option<Node> {
        let node = self.nodes.remove(id)?;
        self.unindex(&node);
        Some(node)
    }

    fn unindex(&mut self, node: &Node) {
        self.by_proxy.remove(&node.creds.proxy_token_hash);
        for intent in node.intents() {
            if let Some(ids) = self.by_intent.get_mut(intent.as_str()) {
                ids.retain(|x| *x != node.id);
                if ids.is_empty() {
                    self.by_intent.remove(intent.as_str());
                }
            }
        }
    }
}
