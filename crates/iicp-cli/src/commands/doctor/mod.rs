//! `iicp doctor`: checks what a local IICP setup needs — the backend and its models, the
//! directory, the clock, the default ports, the node, the gateway, and whether the node's
//! advertised endpoint can be reached — and prints one line per check with a fix-it line for
//! each problem (or a JSON report). Exits 1 when any check fails.

mod checks;
mod mesh;

use clap::Args;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Backend base URL to check; detected on the usual local ports when absent.
    #[arg(long, env = "IICP_BACKEND")]
    backend: Option<String>,
    /// Directory to check.
    #[arg(long, env = "IICP_DIRECTORY", default_value = "http://127.0.0.1:8010")]
    directory: url::Url,
    /// Node to check [default: the one on 127.0.0.1:9484, if any].
    #[arg(long)]
    node: Option<url::Url>,
    /// Gateway to check [default: the one on 127.0.0.1:9483, if any].
    #[arg(long)]
    gateway: Option<url::Url>,
    /// The URL the node advertises, to check from the directory's side [default: the endpoint
    /// the directory has for the node].
    #[arg(long, env = "IICP_PUBLIC_URL")]
    public_url: Option<url::Url>,
    /// Print a JSON report instead of lines.
    #[arg(long)]
    json: bool,
    /// Testing aid: base URLs to look for a backend at instead of the usual ports (`none`:
    /// look nowhere).
    #[arg(long, env = "IICP_DETECT", value_delimiter = ',', hide = true)]
    detect: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not applicable, or not possible because an earlier check failed.
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier (`backend`, `directory`, `clock`, `port.directory`, …).
    pub check: String,
    /// Short label for the text report (`port 8010`).
    #[serde(skip)]
    pub label: String,
    pub status: Status,
    pub message: String,
    /// What to do about it, for `warn` and `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn new(check: &str, status: Status, message: impl Into<String>) -> Check {
        Check {
            check: check.to_owned(),
            label: check.to_owned(),
            status,
            message: message.into(),
            fix: None,
        }
    }

    pub fn ok(check: &str, message: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, message)
    }

    pub fn skip(check: &str, message: impl Into<String>) -> Check {
        Check::new(check, Status::Skip, message)
    }

    pub fn warn(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Status::Warn, message).with_fix(fix)
    }

    pub fn fail(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Status::Fail, message).with_fix(fix)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    pub fn labelled(mut self, label: impl Into<String>) -> Check {
        self.label = label.into();
        self
    }
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    summary: Summary,
    checks: Vec<Check>,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    ok: usize,
    warn: usize,
    fail: usize,
    skip: usize,
}

impl Report {
    fn new(checks: Vec<Check>) -> Report {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Ok => summary.ok += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Report {
            ok: summary.fail == 0,
            summary,
            checks,
        }
    }

    fn print_text(&self) {
        let width = self.checks.iter().map(|c| c.label.len()).max().unwrap_or(0);
        for c in &self.checks {
            say!(
                "{:<4}  {:<width$}  {}",
                c.status.as_str(),
                c.label,
                c.message
            );
            if let (Some(fix), Status::Warn | Status::Fail) = (&c.fix, c.status) {
                say!("{:<4}  {:<width$}  fix: {fix}", "", "");
            }
        }
        let s = &self.summary;
        say!();
        say!(
            "{} ok, {} warning{}, {} failed, {} skipped",
            s.ok,
            s.warn,
            if s.warn == 1 { "" } else { "s" },
            s.fail,
            s.skip
        );
    }
}

pub fn run(args: DoctorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    let checks = match runtime.block_on(checks::run_all(args)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = Report::new(checks);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => say!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        report.print_text();
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
