//! # iicp-client: consume the IICP mesh
//!
//! ```no_run
//! # async fn demo() -> Result<(), iicp_client::ClientError> {
//! use iicp_client::{Call, Client, ClientConfig};
//! let client = Client::new(ClientConfig::new("http://127.0.0.1:8010".parse().unwrap()));
//! let answer = client
//!     .call(Call::new(
//!         "urn:iicp:intent:llm:chat:v1",
//!         serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
//!     ))
//!     .await?;
//! println!("{} answered: {:?}", answer.node_id, answer.response.result);
//! # Ok(()) }
//! ```
//!
//! Components:
//! - `discovery`: discover (cached per the directory's `Cache-Control`), dispatch tickets,
//!   consumer tokens.
//! - `select`: hard requirements, then power-of-two-choices over the client's own load cost with
//!   the directory's score as prior. Pure and seeded.
//! - `health`: per-node circuit breaker and peak-EWMA latency, on tokio time.
//! - `client`: the attempt loop (failover, retries, IICP-CX, traceparent, streaming).
//! - `transport`: the one HTTP seam (reqwest in production, scripted in the crate's tests).
//! - [`ClientError`]: the spec's distinct failure kinds.
#![forbid(unsafe_code)]

mod client;
mod discovery;
mod error;
mod health;
mod rng;
mod select;
#[cfg(test)]
mod testing;
mod transport;

pub use client::{Answer, Call, Client, ClientConfig, StreamAnswer, StreamItem};
pub use error::ClientError;
pub use select::Candidate;
