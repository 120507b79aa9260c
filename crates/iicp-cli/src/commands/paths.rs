//! Per-user locations, from the environment (only the CLI reads it).

use std::path::PathBuf;

/// `$XDG_DATA_HOME/iicp`, else `~/.local/share/iicp`, else `./.iicp`.
pub fn data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("iicp");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/iicp");
    }
    PathBuf::from(".iicp")
}
