//! CPU time of processes over the measured window, from `/proc/<pid>/stat`, and of the whole
//! machine, from `/proc/stat`.
//!
//! `utime + stime` of a process counts every thread it ever ran, exited ones included, in
//! clock ticks (`USER_HZ`, 100 on Linux; `getconf CLK_TCK` tells). The machine's busy time is
//! every core's non-idle time in the same ticks, so what the watched processes did not use is
//! what the rest of the machine used (other programs, the kernel's own threads).

use std::io;

/// What is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Pid(u32),
    /// The load generator itself (`/proc/self`).
    This,
    /// Every core's busy time (`/proc/stat`).
    Machine,
}

/// A process (or the machine) whose CPU time is sampled, and the name it is reported under.
#[derive(Debug, Clone)]
pub struct Watched {
    pub label: String,
    pub source: Source,
}

impl Watched {
    /// Parses `LABEL=PID`.
    pub fn parse(s: &str) -> Result<Watched, String> {
        let (label, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("--cpu {s}: expected LABEL=PID"))?;
        let ok = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(format!("--cpu {s}: the label must be [A-Za-z0-9_]+"));
        }
        let pid = pid
            .parse()
            .map_err(|_| format!("--cpu {s}: {pid} is not a process id"))?;
        Ok(Watched {
            label: label.to_owned(),
            source: Source::Pid(pid),
        })
    }

    /// The load generator itself, as `gen`.
    pub fn this_process() -> Watched {
        Watched {
            label: "gen".into(),
            source: Source::This,
        }
    }

    /// The whole machine, as `machine`.
    pub fn machine() -> Watched {
        Watched {
            label: "machine".into(),
            source: Source::Machine,
        }
    }

    /// CPU ticks (user + system) used so far.
    pub fn ticks(&self) -> io::Result<u64> {
        match self.source {
            Source::Pid(pid) => parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?),
            Source::This => parse_stat(&std::fs::read_to_string("/proc/self/stat")?),
            Source::Machine => parse_machine(&std::fs::read_to_string("/proc/stat")?),
        }
    }
}

/// Busy ticks of all cores from the text of `/proc/stat`: the first line's user, nice, system,
/// irq, softirq and steal (guest time is already inside user).
fn parse_machine(text: &str) -> io::Result<u64> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/stat");
    let line = text
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .ok_or_else(bad)?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if f.len() < 8 {
        return Err(bad());
    }
    // user nice system idle iowait irq softirq steal …
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> io::Result<u64> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/<pid>/stat");
    let rest = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state (3) … utime (14), stime (15).
    let utime: u64 = fields
        .nth(11)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    let stime: u64 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    Ok(utime + stime)
}

/// Ticks of every watched process at one instant (`None` for a process that could not be read).
pub fn sample(watched: &[Watched]) -> Vec<Option<u64>> {
    watched.iter().map(|w| w.ticks().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_the_name() {
        let line = "4242 (iicp (x) y) S 1 4242 4242 0 -1 4194560 1049 0 0 0 250 31 0 0 20 0 \
                    3 0 12345 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line).unwrap(), 281);
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn reads_the_machines_busy_time() {
        let stat = "cpu  100 5 50 9000 20 1 2 3 0 0\ncpu0 50 2 25 4500 10 0 1 1 0 0\n";
        assert_eq!(parse_machine(stat).unwrap(), 161);
        assert!(parse_machine("intr 1 2 3").is_err());
    }

    #[test]
    fn labels_and_pids_parse() {
        let w = Watched::parse("node=123").unwrap();
        assert_eq!((w.label.as_str(), w.source), ("node", Source::Pid(123)));
        assert!(Watched::parse("node").is_err());
        assert!(Watched::parse("a b=1").is_err());
        assert!(Watched::parse("node=x").is_err());
        assert!(Watched::this_process().ticks().is_ok());
        assert!(Watched::machine().ticks().is_ok());
    }
}
