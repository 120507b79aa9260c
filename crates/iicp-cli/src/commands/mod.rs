pub mod check;
pub mod directory;
pub mod intents;
mod runtime;
