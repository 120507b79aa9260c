//! # iicp-stream: streaming text formats over HTTP bodies
//!
//! - [`lines`]: complete lines from a chunked byte stream (NDJSON, and the lines SSE is made of).
//! - [`sse`]: Server-Sent Events (`event:` / `data:` blocks) from a chunked byte stream.
#![forbid(unsafe_code)]

pub mod lines;
pub mod sse;

pub use lines::lines;
pub use sse::{events, SseEvent};
