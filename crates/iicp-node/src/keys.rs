//! What the node keeps on disk, each file written atomically with mode 0600: its identity with
//! the directory (so a restart keeps its node id and token) and its IICP-CX key.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The node's identity at one directory.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub directory: String,
    pub node_id: String,
    pub node_token: String,
    pub node_hmac_key: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("directory", &self.directory)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Writes a secret file atomically (temp file, fsync, rename) with mode 0600.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

pub fn identity_path(state_dir: &Path) -> PathBuf {
    state_dir.join("node-identity.json")
}

/// The saved identity, if it belongs to `directory`.
pub fn load_identity(state_dir: &Path, directory: &str) -> Option<Identity> {
    let text = std::fs::read(identity_path(state_dir)).ok()?;
    let id: Identity = serde_json::from_slice(&text).ok()?;
    (id.directory == directory).then_some(id)
}

pub fn save_identity(state_dir: &Path, id: &Identity) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(id).map_err(std::io::Error::other)?;
    write_private(&identity_path(state_dir), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_privately_and_per_directory() {
        let dir = std::env::temp_dir().join(format!("iicp-node-keys-{}", uuid::Uuid::new_v4()));
        let id = Identity {
            directory: "http://d".into(),
            node_id: "n".into(),
            node_token: "secret-token".into(),
            node_hmac_key: "k".into(),
        };
        save_identity(&dir, &id).unwrap();
        let mode = std::fs::metadata(identity_path(&dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_identity(&dir, "http://d"), Some(id.clone()));
        assert_eq!(load_identity(&dir, "http://other"), None);
        assert!(!format!("{id:?}").contains("secret-token"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A random id for metric batches and the like.
pub fn random_id() -> String {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    hex::encode(b)
}

use iicp_proto::control::CxPublicKey;
use iicp_proto::cx::{self, CxKeyPair, ResponseKey};
use iicp_proto::task::TaskRequest;

/// A CX key lives 90 days (the spec's maximum) and is replaced after 80, so the advertised key
/// never expires in use; the previous key still opens tasks sealed just before a rotation.
const KEY_LIFETIME_S: u64 = 90 * 24 * 3600;
const ROTATE_AFTER_S: u64 = 80 * 24 * 3600;

#[derive(Serialize, Deserialize)]
struct StoredCx {
    secret: String,
    created_at: u64,
    #[serde(default)]
    previous: Option<(String, u64)>,
}

/// The node's IICP-CX keys.
pub struct CxKeys {
    current: CxKeyPair,
    created_at: u64,
    previous: Option<(CxKeyPair, u64)>,
}

fn keypair(secret_hex: &str) -> Option<CxKeyPair> {
    let bytes: [u8; 32] = hex::decode(secret_hex).ok()?.try_into().ok()?;
    Some(CxKeyPair::from_secret_bytes(bytes))
}

fn fresh_secret() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    b
}

/// Seals the result for a caller that asked for an encrypted response.
pub struct ResponseSealer(ResponseKey);

impl ResponseSealer {
    pub fn seal(&self, task: &TaskRequest, result: &serde_json::Value) -> serde_json::Value {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).expect("the OS random source is available");
        cx::seal_response(&self.0, &task.task_id.to_string(), result, nonce)
            .unwrap_or(serde_json::Value::Null)
    }
}

impl CxKeys {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("cx-key.json")
    }

    /// Loads the key, creating it on first start and rotating it when due.
    pub fn load_or_create(state_dir: &Path, now_s: u64) -> std::io::Result<CxKeys> {
        let stored: Option<StoredCx> = std::fs::read(Self::path(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut keys = match stored.as_ref().and_then(|s| Some((keypair(&s.secret)?, s))) {
            Some((current, s)) => CxKeys {
                current,
                created_at: s.created_at,
                previous: s
                    .previous
                    .as_ref()
                    .and_then(|(secret, created)| Some((keypair(secret)?, *created))),
            },
            None => {
                let k = CxKeys {
                    current: CxKeyPair::from_secret_bytes(fresh_secret()),
                    created_at: now_s,
                    previous: None,
                };
                k.save(state_dir)?;
                k
            }
        };
        keys.rotate_if_due(state_dir, now_s)?;
        Ok(keys)
    }

    fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let stored = StoredCx {
            secret: hex::encode(*self.current.secret_bytes()),
            created_at: self.created_at,
            previous: self
                .previous
                .as_ref()
                .map(|(k, c)| (hex::encode(*k.secret_bytes()), *c)),
        };
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        write_private(&Self::path(state_dir), &bytes)
    }

    /// Replaces the key once it is 80 days old; true when it did.
    pub fn rotate_if_due(&mut self, state_dir: &Path, now_s: u64) -> std::io::Result<bool> {
        if now_s.saturating_sub(self.created_at) < ROTATE_AFTER_S {
            return Ok(false);
        }
        let old = std::mem::replace(
            &mut self.current,
            CxKeyPair::from_secret_bytes(fresh_secret()),
        );
        self.previous = Some((old, self.created_at));
        self.created_at = now_s;
        self.save(state_dir)?;
        Ok(true)
    }

    pub fn advertisement(&self) -> CxPublicKey {
        cx::advertisement(&self.current, self.created_at + KEY_LIFETIME_S)
    }

    /// Opens an encrypted task with whichever of our keys it names.
    pub fn open(
        &self,
        task: &TaskRequest,
        conf: &serde_json::Value,
    ) -> Result<(serde_json::Value, ResponseSealer), String> {
        let wanted = cx::recipient_key_id(conf);
        let key = match &self.previous {
            Some((prev, _)) if wanted == Some(prev.key_id()) => prev,
            _ => &self.current,
        };
        cx::open(key, &task.task_id.to_string(), task.intent.as_str(), conf)
            .map(|(payload, rk)| (payload, ResponseSealer(rk)))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod cx_tests {
    use super::*;

    #[test]
    fn the_cx_key_persists_privately_and_rotates_when_due() {
        let dir = std::env::temp_dir().join(format!("iicp-cx-{}", uuid::Uuid::new_v4()));
        let day = 24 * 3600;
        let a = CxKeys::load_or_create(&dir, 1000).unwrap();
        let mode = std::fs::metadata(CxKeys::path(&dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = CxKeys::load_or_create(&dir, 1000 + day).unwrap();
        assert_eq!(a.advertisement().key, again.advertisement().key);
        assert_eq!(a.advertisement().not_after, again.advertisement().not_after);
        assert!(a.advertisement().not_after.is_some());
        let rotated = CxKeys::load_or_create(&dir, 1000 + 81 * day).unwrap();
        assert_ne!(rotated.advertisement().key, a.advertisement().key);
        assert_eq!(
            rotated.previous.as_ref().map(|(k, _)| k.public_b64url()),
            Some(a.current.public_b64url())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
