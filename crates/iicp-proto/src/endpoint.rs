//! Endpoint security policy (placeholder, being written).
