//! Registration admission helpers: rate limiting, the guarded liveness dial-back, and the
//! reachability probe.

pub mod liveness;
pub mod ratelimit;
