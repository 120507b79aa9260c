//! The single writer: one thread owns the store and applies writes in group commits.
//!
//! Callers that must not answer before their write is durable (registration, rotation,
//! deregistration) await [`Writer::commit`]; everything queued while a transaction runs goes into
//! the next one, so many concurrent registrations share one fsync.

use crate::store::{Store, StoreError, Write};
use tokio::sync::{mpsc, oneshot};

const MAX_BATCH: usize = 4096;

struct Job {
    writes: Vec<Write>,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread. It stops once every `Writer` clone is dropped and the queue
    /// is drained; join the handle to know everything was written.
    pub fn start(mut store: Box<dyn Store>) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(MAX_BATCH);
        let handle = std::thread::Builder::new()
            .name("iicp-store-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let writes: Vec<Write> =
                        jobs.iter_mut().flat_map(|j| j.writes.drain(..)).collect();
                    let result = store.apply(&writes).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!(error = %e, writes = writes.len(), "store write failed");
                    }
                    for job in jobs {
                        let _ = job.done.send(result.clone());
                    }
                }
            })
            .expect("spawn the writer thread");
        (Writer { tx }, handle)
    }

    /// Queues the writes and waits until they are durable.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { writes, done })
            .await
            .map_err(|_| StoreError::Database("writer stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Database("writer stopped".into()))?
            .map_err(StoreError::Database)
    }
}
