/// Prints a line on stdout; a closed stdout is ignored rather than a panic.
macro_rules! say {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod check;
pub mod consume;
pub mod directory;
pub mod doctor;
pub mod gateway;
pub mod intents;
pub mod node;
mod occupant;
mod paths;
mod runtime;
mod settings;
pub mod up;
