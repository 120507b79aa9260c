//! `iicp up` as a child process, for the `up` and `doctor` tests: started on ephemeral ports in
//! a fresh data directory, its stdout read line by line on a thread, killed on drop. Every wait
//! has a deadline.

#![allow(dead_code)]

use iicp_testkit::support::ChildGuard;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Startup (directory, backend, node registration, gateway) in a debug build on a busy machine.
pub const START_BUDGET: Duration = Duration::from_secs(60);

pub const CHAT: &str = "urn:iicp:intent:llm:chat:v1";

/// A running `iicp up`.
pub struct Up {
    child: ChildGuard,
    stderr_path: PathBuf,
    lines: Receiver<String>,
    /// Every stdout line so far.
    pub out: Arc<Mutex<Vec<String>>>,
    pub directory: String,
    pub gateway: String,
    pub node: Option<String>,
}

/// The URL that follows `marker` on a line, up to the next space.
fn url_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    Some(rest.split_whitespace().next()?.to_owned())
}

impl Up {
    /// `iicp up ARGS --data-dir DATA` on ephemeral ports; returns once it printed its ready
    /// block (the line that says how to stop it).
    pub fn start(args: &[&str], data: &Path) -> Up {
        std::fs::create_dir_all(data).unwrap();
        let stderr_path = data.with_extension("stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iicp"));
        cmd.arg("up")
            .args(args)
            .args([
                "--directory-port",
                "0",
                "--node-port",
                "0",
                "--gateway-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(data)
            .env("IICP_LOG", "warn")
            .env_remove("IICP_BACKEND")
            .env_remove("IICP_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = ChildGuard::spawn("iicp up", &mut cmd);
        let stdout = child.child_mut().stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let keep = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                keep.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut up = Up {
            child,
            stderr_path,
            lines,
            out,
            directory: String::new(),
            gateway: String::new(),
            node: None,
        };
        let deadline = Instant::now() + START_BUDGET;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match up.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!("iicp up did not become ready; its output:\n{}", up.output()),
            };
            if let Some(u) = url_after(&line, "directory listening on ") {
                up.directory = u;
            } else if let Some(u) = url_after(&line, "gateway ready at ") {
                up.gateway = u;
            } else if let Some(u) = url_after(&line, "node listening on ") {
                up.node = Some(u);
            } else if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        assert!(
            !up.directory.is_empty() && !up.gateway.is_empty(),
            "{}",
            up.output()
        );
        up
    }

    /// Its stdout so far, then its stderr (logs), for failure messages.
    pub fn output(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!(
            "{}\n--- stderr ---\n{stderr}",
            self.out.lock().unwrap().join("\n")
        )
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the exit, then for stdout to close.
    pub async fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let Some(status) = self.child.stop_with(signal, Duration::from_secs(30)).await else {
            panic!(
                "iicp up ignored SIG{signal}; its output:\n{}",
                self.output()
            );
        };
        // Drain what it printed on the way out (the reader ends at EOF).
        while self.lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
        status
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}
