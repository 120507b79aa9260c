pub mod check;
pub mod intents;
