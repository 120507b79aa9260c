//! # iicp-proto: the IICP wire, with no I/O
//!
//! Everything two IICP components must agree on, and nothing that touches a socket, a file or
//! the environment:
//!
//! - [`error`]: the error catalogue (every slug and `IICP-E0xx` code with its HTTP status) and
//!   the `{"error":{"code","message"}}` envelope.
//! - [`intent`]: intent URN grammar and exact matching.
//! - [`registry`]: the embedded intent registry and risk taxonomy, so any component can refuse a
//!   prohibited intent locally.
//! - [`payload`]: intent payload validation against the registry's input schemas.
//! - [`task`]: the data plane, CALL (`POST /v1/task`) and RESPONSE.
//! - [`node`]: capabilities, limits and availability windows.
//! - [`control`]: the control plane, REGISTER/ACK, HEARTBEAT/PONG, deregistration, NODELIST.
//! - [`endpoint`]: endpoint security (SSRF) policy: which hosts and addresses a public
//!   directory may register and dial.
//! - [`tokens`]: Ed25519 dispatch route tickets and consumer tokens (sign and verify).
//! - [`cx`]: IICP-CX Tier 1 payload confidentiality (X25519, HKDF-SHA256, AES-256-GCM): node
//!   key advertisement, sealing and opening `iicp_conf` and `iicp_conf_resp`.
//! - [`validate`]: field-precise problems (JSON path + spec code) and JSON syntax errors.
//!
//! Validation walks the JSON value and reports every problem at once; typed structs are built
//! only from values that passed.
#![forbid(unsafe_code)]

pub mod chat;
pub mod control;
pub mod cx;
pub mod endpoint;
pub mod error;
pub mod intent;
pub mod node;
pub mod payload;
pub mod registry;
pub mod task;
pub mod tokens;
pub mod validate;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use intent::Intent;
pub use validate::{Problem, Problems, Rejection};
