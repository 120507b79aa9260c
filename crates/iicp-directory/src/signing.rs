//! The directory's Ed25519 signing key: generated on first start and kept next to the database
//! (mode 0600), or loaded from a configured path.

use ed25519_dalek::SigningKey;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read signing key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write signing key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("signing key {0} is not 64 hex characters")]
    Malformed(String),
}

/// Loads the key at `path`, or creates one there if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| KeyError::Malformed(shown.clone()))?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed).expect("the OS random source is available");
            write_private(path, &format!("{}\n", hex::encode(seed))).map_err(|source| {
                KeyError::Write {
                    path: shown,
                    source,
                }
            })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(source) => Err(KeyError::Read {
            path: shown,
            source,
        }),
    }
}

/// Writes a secret file atomically with mode 0600.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reloaded_identically() {
        let dir = std::env::temp_dir().join(format!("iicp-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dir.ed25519");
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        std::fs::write(&path, "nope").unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyError::Malformed(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
