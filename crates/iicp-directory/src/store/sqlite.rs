//! SQLite store: WAL journal, `synchronous=FULL`, embedded migrations, one writer connection.
//!
//! Only the writer thread touches the connection; reads are served from memory, so writes never
//! block a reader.

use super::{Store, StoreError, Write};
use crate::model::{LiveState, Node, StoredCredentials};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::VecDeque;
use std::path::Path;

/// Migrations in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &["CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        registration TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        token_generation INTEGER NOT NULL,
        hmac_key TEXT NOT NULL,
        proxy_token_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        registered_ms INTEGER NOT NULL,
        live TEXT NOT NULL
    );"];

pub struct SqliteStore {
    conn: Connection,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .map_err(db)?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        let tx = self.conn.transaction().map_err(db)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.execute_batch(sql).map_err(db)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Number of stored nodes (for tests and diagnostics).
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(db)
    }

    /// One stored node, if present.
    pub fn get(&self, id: uuid::Uuid) -> Result<Option<Node>, StoreError> {
        self.conn
            .query_row(
                &format!("{SELECT} WHERE node_id = ?1"),
                [id.to_string()],
                row_to_parts,
            )
            .optional()
            .map_err(db)?
            .map(parts_to_node)
            .transpose()
    }
}

const SELECT: &str = "SELECT node_id, registration, token_hash, token_generation, hmac_key, \
     proxy_token_hash, created_ms, registered_ms, live FROM nodes";

type Parts = (
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    String,
);

fn row_to_parts(r: &rusqlite::Row<'_>) -> rusqlite::Result<Parts> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn parts_to_node(p: Parts) -> Result<Node, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of node {}", p.0));
    Ok(Node {
        id: p.0.parse().map_err(|_| corrupt("id"))?,
        reg: serde_json::from_str(&p.1).map_err(|_| corrupt("registration"))?,
        creds: StoredCredentials {
            token_hash: p.2,
            token_generation: p.3 as u64,
            hmac_key: p.4,
            proxy_token_hash: p.5,
        },
        created_ms: p.6 as u64,
        registered_ms: p.7 as u64,
        live: serde_json::from_str::<LiveState>(&p.8).map_err(|_| corrupt("live state"))?,
        challenge: None,
        gains: VecDeque::new(),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Vec<Node>, StoreError> {
        let mut stmt = self.conn.prepare(SELECT).map_err(db)?;
        let rows = stmt.query_map([], row_to_parts).map_err(db)?;
        let mut nodes = Vec::new();
        for row in rows {
            nodes.push(parts_to_node(row.map_err(db)?)?);
        }
        Ok(nodes)
    }

    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO nodes (node_id, registration, token_hash, token_generation, \
                     hmac_key, proxy_token_hash, created_ms, registered_ms, live) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT(node_id) DO UPDATE SET registration = excluded.registration, \
                     token_hash = excluded.token_hash, token_generation = excluded.token_generation, \
                     hmac_key = excluded.hmac_key, proxy_token_hash = excluded.proxy_token_hash, \
                     created_ms = excluded.created_ms, registered_ms = excluded.registered_ms, \
                     live = excluded.live",
                )
                .map_err(db)?;
            let mut live = tx
                .prepare_cached("UPDATE nodes SET live = ?2 WHERE node_id = ?1")
                .map_err(db)?;
            let mut delete = tx
                .prepare_cached("DELETE FROM nodes WHERE node_id = ?1")
                .map_err(db)?;
            for w in writes {
                match w {
                    Write::Upsert(n) => {
                        upsert
                            .execute(params![
                                n.id.to_string(),
                                to_json(&n.reg)?,
                                n.creds.token_hash,
                                n.creds.token_generation as i64,
                                n.creds.hmac_key,
                                n.creds.proxy_token_hash,
                                n.created_ms as i64,
                                n.registered_ms as i64,
                                to_json(&n.live)?,
                            ])
                            .map_err(db)?;
                    }
                    Write::Live(id, state) => {
                        live.execute(params![id.to_string(), to_json(state)?])
                            .map_err(db)?;
                    }
                    Write::Delete(id) => {
                        delete.execute(params![id.to_string()]).map_err(db)?;
                    }
                }
            }
        }
        tx.commit().map_err(db)
    }
}
