//! Ed25519 tickets and consumer tokens (placeholder, being written).
