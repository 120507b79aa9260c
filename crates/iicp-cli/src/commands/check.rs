//! `iicp check task|register FILE|-`: validate an envelope offline.
//!
//! Exit status: 0 valid, 1 invalid (every problem printed), 2 unreadable input.

use iicp_proto::control::RegisterRequest;
use iicp_proto::task::TaskRequest;
use iicp_proto::Rejection;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

#[derive(Clone, Copy)]
pub enum Kind {
    Task,
    Register,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Task => "task envelope",
            Kind::Register => "register body",
        }
    }

    fn check(self, bytes: &[u8]) -> Result<(), Rejection> {
        match self {
            Kind::Task => TaskRequest::from_slice(bytes).map(drop),
            Kind::Register => RegisterRequest::from_slice(bytes).map(drop),
        }
    }
}

fn read_input(file: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes)?;
    } else {
        bytes = std::fs::read(file)?;
    }
    Ok(bytes)
}

pub fn run(kind: Kind, file: &Path) -> ExitCode {
    let name = if file.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let bytes = match read_input(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: cannot read {name}: {e}");
            return ExitCode::from(2);
        }
    };
    match kind.check(&bytes) {
        Ok(()) => {
            println!("{name}: valid {}", kind.noun());
            ExitCode::SUCCESS
        }
        Err(Rejection::Syntax {
            line,
            column,
            message,
        }) => {
            println!("{name}:{line}:{column}: not valid JSON: {message} [bad_request]");
            ExitCode::FAILURE
        }
        Err(Rejection::Invalid(problems)) => {
            for problem in problems.iter() {
                println!(
                    "{name}: {}: {} [{}]",
                    problem.path, problem.message, problem.code
                );
            }
            println!(
                "{name}: invalid {} ({} problems)",
                kind.noun(),
                problems.len()
            );
            ExitCode::FAILURE
        }
    }
}
