pub mod check;
pub mod consume;
pub mod directory;
pub mod gateway;
pub mod intents;
pub mod node;
mod paths;
mod runtime;
