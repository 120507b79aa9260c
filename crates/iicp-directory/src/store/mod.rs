//! Durable storage behind a trait.
//!
//! The store is write-mostly: the directory loads every node once at start and serves reads from
//! memory, so a store only has to apply batches of writes atomically and durably. SQLite is the
//! embedded default; a PostgreSQL store for several replicas implements the same trait.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::model::{LiveState, Node};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// One change to durable state.
#[derive(Debug, Clone)]
pub enum Write {
    /// A registration or refresh: the whole record, credentials included.
    Upsert(Box<Node>),
    /// Heartbeat-driven state of an existing node.
    Live(Uuid, Box<LiveState>),
    /// Deregistration.
    Delete(Uuid),
}

pub trait Store: Send + 'static {
    /// Every stored node, for the in-memory index.
    fn load(&mut self) -> Result<Vec<Node>, StoreError>;
    /// Applies the writes in order as one atomic, durable transaction.
    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError>;
}
