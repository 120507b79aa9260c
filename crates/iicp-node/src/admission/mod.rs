//! The admission pipeline's building blocks: the concurrency gate, replay guards and
//! credential checks. `task` runs them in order for every transport.

pub mod auth;
pub mod gate;
pub mod replay;
