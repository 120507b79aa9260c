//! IICP-CX Tier 1: end-to-end encryption of a task payload to the executing node (S.16).
//!
//! The node advertises a long-term X25519 key (`cx_public_key`, §3.1). A consumer seals the
//! payload of `POST /v1/task` into `iicp_conf` (§4.1) with the construction of §5:
//!
//! ```text
//! shared = X25519(eph_secret, node_public)                 kem_ciphertext = b64url(eph_public)
//! key    = HKDF-SHA256(ikm = shared, salt = nonce, info = "IICP-CX-v1" || task_id || intent)
//! aad    = UTF8(task_id "|" intent)
//! encrypted_body = AES-256-GCM(key, nonce, payload_json, aad)  (ciphertext || 16-byte tag)
//! ```
//!
//! When both sides negotiate `response_encryption_v1` (§5a.3), the node seals its reply into
//! `iicp_conf_resp` under `HKDF(shared, salt = resp_nonce, info = "IICP-CX-RESP-v1" || task_id)`
//! with AAD `task_id "|resp"`. The spec names neither the response AAD nor the envelope's
//! fields beyond "mirrors `iicp_conf`"; both follow what deployed providers send, for interop.
//!
//! Every binary field is written as unpadded base64url and read leniently (either alphabet,
//! padded or not). The `aad` field is only a consistency check: the AEAD always authenticates
//! the `task_id` and `intent` of the envelope it arrived in, so a ciphertext moved to another
//! task fails whatever `aad` says.
//!
//! No I/O: callers pass the ephemeral secret and nonces, drawn from the OS CSPRNG. Nothing here
//! panics on hostile input, and secrets are zeroized when dropped.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hkdf::Hkdf;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::control::CxPublicKey;
use crate::ErrorCode;

/// The only `iicp_conf.version` Tier 1 defines.
pub const CX_VERSION: u64 = 1;
/// `cx_public_key.algorithm`.
pub const CX_ALGORITHM: &str = "X25519";
/// `cx_public_key.encoding`.
pub const CX_KEY_ENCODING: &str = "base64url";
/// `cx_public_key.features` entry that offers response encryption (§5a.3).
pub const RESPONSE_ENCRYPTION_FEATURE: &str = "response_encryption_v1";
/// Value of the task's `cx_response_encryption` that asks for an encrypted reply (§5a.3).
pub const RESPONSE_ENCRYPTION_REQUIRED: &str = "required";
/// Longest key lifetime a node should advertise (CX-NODE-01: rotate at least every 90 days).
pub const MAX_KEY_LIFETIME_SECS: u64 = 90 * 86_400;
/// Largest `encrypted_body` (ciphertext and tag) we seal or open.
pub const MAX_ENCRYPTED_BODY: usize = 16 * 1024 * 1024;

const REQUEST_INFO: &[u8] = b"IICP-CX-v1";
const RESPONSE_INFO: &[u8] = b"IICP-CX-RESP-v1";
const TAG_LEN: usize = 16;

type Key = Zeroizing<[u8; 32]>;
type Secret = Zeroizing<Vec<u8>>;
/// DER SubjectPublicKeyInfo header of an X25519 key (RFC 8410); `key_id` hashes the DER form.
const X25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
];

/// base64url: written unpadded; reads also accept padding (and, via [`decode_b64`], `+` `/`).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an envelope or key was refused. Messages name the failed check, never content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CxError {
    /// A field is missing, of the wrong type, badly encoded or of the wrong length.
    #[error("CX envelope is malformed ({0})")]
    Malformed(&'static str),
    /// `recipient_key_id` names a key this node does not hold.
    #[error("CX envelope is for another key")]
    UnknownKey,
    /// `version` is not 1.
    #[error("CX envelope version is not supported")]
    UnsupportedVersion,
    /// The `aad` field names another task or intent.
    #[error("CX envelope is bound to another task")]
    AadMismatch,
    /// The body or its plaintext exceeds [`MAX_ENCRYPTED_BODY`].
    #[error("CX envelope is too large")]
    TooLarge,
    /// Authentication failed: wrong key, wrong task, or a tampered field.
    #[error("CX decryption failed")]
    Decrypt,
    /// The node's advertised key is unusable (consumer side, before sealing).
    #[error("CX public key is invalid")]
    InvalidKey,
}

impl CxError {
    /// The code to answer with. Tier 1 as shipped collapses every CX failure into `IICP-E050`
    /// (§6 "Implementation status"); E060–E064 are the Tier-2 target. An unusable advertised
    /// key is the catalogue's "CX key rejected" meaning of `IICP-E049`.
    pub fn error_code(self) -> ErrorCode {
        match self {
            CxError::InvalidKey => ErrorCode::E049CxKeyInvalid,
            _ => ErrorCode::E050CxDecryptFailed,
        }
    }
}

/// A node's long-term CX key pair. `Debug` does not print the secret.
pub struct CxKeyPair {
    secret: Key,
    private: x25519::PrivateKey,
    public: [u8; 32],
    key_id: String,
}

impl CxKeyPair {
    /// The key pair for a 32-byte secret (from the OS CSPRNG, or as stored).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = Zeroizing::new(bytes);
        let private = x25519::PrivateKey::new(&secret);
        let public = private.public();
        let key_id = key_id(&public);
        CxKeyPair {
            secret,
            private,
            public,
            key_id,
        }
    }

    /// The secret, for storing. Zeroized when the returned value drops.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.secret.clone()
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.public
    }

    /// The public key as it is advertised: unpadded base64url of 32 bytes (43 characters).
    pub fn public_b64url(&self) -> String {
        B64URL.encode(self.public)
    }

    /// See [`key_id`].
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

impl std::fmt::Debug for CxKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CxKeyPair")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `key_id` of an X25519 public key: the first 8 bytes (16 lowercase hex) of SHA-256 over its
/// DER SubjectPublicKeyInfo encoding (§3.1 "sha256 of DER-encoded key, first 8 hex bytes").
/// Consumers only echo it back, so the derivation matters to the node alone.
pub fn key_id(public: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(X25519_SPKI_PREFIX)
        .chain_update(public)
        .finalize();
    hex::encode(&digest[..8])
}

/// The `cx_public_key` a node advertises, offering response encryption. `not_after` is written
/// as ISO 8601 UTC (§3.1); keep it within [`MAX_KEY_LIFETIME_SECS`] of now.
pub fn advertisement(kp: &CxKeyPair, not_after_unix: u64) -> CxPublicKey {
    CxPublicKey {
        algorithm: CX_ALGORITHM.to_owned(),
        encoding: CX_KEY_ENCODING.to_owned(),
        key: kp.public_b64url(),
        key_id: kp.key_id.clone(),
        not_after: Some(Value::String(iso8601_utc(not_after_unix))),
        hybrid_pq: None,
        features: vec![RESPONSE_ENCRYPTION_FEATURE.to_owned()],
    }
}

/// The session secret both sides keep to seal and open the response. `Debug` is redacted.
pub struct ResponseKey {
    shared: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ResponseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseKey(<redacted>)")
    }
}

/// A sealed request: the `iicp_conf` object, and the key to open the node's reply with.
#[derive(Debug)]
pub struct Sealed {
    pub conf: Value,
    pub response_key: ResponseKey,
}

/// Consumer side: seals `payload` for the node holding `node_key`. `eph_secret` (32 bytes) and
/// `nonce` (12 bytes) must be fresh CSPRNG output for every task (CX-06).
pub fn seal(
    node_key: &CxPublicKey,
    task_id: &str,
    intent: &str,
    payload: &Value,
    eph_secret: [u8; 32],
    nonce: [u8; 12],
) -> Result<Sealed, CxError> {
    if !node_key.algorithm.eq_ignore_ascii_case(CX_ALGORITHM) {
        return Err(CxError::InvalidKey);
    }
    let node_public: [u8; 32] = decode_fixed(&node_key.key).ok_or(CxError::InvalidKey)?;
    let eph = x25519::PrivateKey::new(&Zeroizing::new(eph_secret));
    // A low-order "public key" would give an all-zero secret anyone can compute: refused.
    let shared = eph.agree(&node_public).ok_or(CxError::InvalidKey)?;
    let plaintext = json_bytes(payload, "payload")?;
    let aad = request_aad(task_id, intent);
    let key = request_key(&shared, &nonce, task_id, intent);
    let body = encrypt(&key, &nonce, &plaintext, aad.as_bytes())?;
    let conf = json!({
        "version": CX_VERSION,
        "recipient_key_id": node_key.key_id,
        "kem_ciphertext": B64URL.encode(eph.public()),
        "encrypted_body": B64URL.encode(&body),
        "nonce": B64URL.encode(nonce),
        "aad": B64URL.encode(aad.as_bytes()),
        "plaintext_size": plaintext.len(),
    });
    Ok(Sealed {
        conf,
        response_key: ResponseKey { shared },
    })
}

/// The `recipient_key_id` of an envelope, so a node holding several keys (rotation) can pick
/// the one to [`open`] with.
pub fn recipient_key_id(conf: &Value) -> Option<&str> {
    conf.get("recipient_key_id")?.as_str()
}

/// Node side: opens `iicp_conf` for the task `task_id`/`intent` of the envelope it came in.
/// Returns the payload and the key to seal the response with.
pub fn open(
    kp: &CxKeyPair,
    task_id: &str,
    intent: &str,
    conf: &Value,
) -> Result<(Value, ResponseKey), CxError> {
    let obj = conf.as_object().ok_or(CxError::Malformed("iicp_conf"))?;
    check_version(obj, true)?;
    let key_id = str_field(obj, "recipient_key_id")?;
    if key_id != kp.key_id {
        return Err(CxError::UnknownKey);
    }
    let aad = request_aad(task_id, intent);
    // §4.1 describes the field as "task_id + intent concatenated"; §5 puts a "|" between them.
    check_aad(obj, &[&aad, &format!("{task_id}{intent}")])?;
    let (body, nonce) = body_and_nonce(obj)?;
    let eph: [u8; 32] = decode_fixed(str_field(obj, "kem_ciphertext")?)
        .ok_or(CxError::Malformed("kem_ciphertext"))?;
    // X25519 ignores the top bit, so a set bit would be a second spelling of the same key:
    // refuse it to keep the envelope non-malleable (honest encoders never set it).
    if eph[31] & 0x80 != 0 {
        return Err(CxError::Malformed("kem_ciphertext"));
    }
    let shared = kp.private.agree(&eph).ok_or(CxError::Decrypt)?;
    let key = request_key(&shared, &nonce, task_id, intent);
    let plaintext = decrypt(&key, &nonce, &body, aad.as_bytes())?;
    let payload = serde_json::from_slice(&plaintext).map_err(|_| CxError::Malformed("payload"))?;
    Ok((payload, ResponseKey { shared }))
}

/// Node side: seals `response` (what would otherwise be sent in the clear) into
/// `iicp_conf_resp` = `{version, nonce, encrypted_body}`. `nonce` must be fresh CSPRNG output.
pub fn seal_response(
    rk: &ResponseKey,
    task_id: &str,
    response: &Value,
    nonce: [u8; 12],
) -> Result<Value, CxError> {
    let plaintext = json_bytes(response, "response")?;
    let key = response_key(&rk.shared, &nonce, task_id);
    let body = encrypt(&key, &nonce, &plaintext, response_aad(task_id).as_bytes())?;
    Ok(json!({
        "version": CX_VERSION,
        "nonce": B64URL.encode(nonce),
        "encrypted_body": B64URL.encode(&body),
    }))
}

/// Consumer side: opens the node's `iicp_conf_resp` for `task_id`.
pub fn open_response(rk: &ResponseKey, task_id: &str, conf_resp: &Value) -> Result<Value, CxError> {
    let obj = conf_resp
        .as_object()
        .ok_or(CxError::Malformed("iicp_conf_resp"))?;
    // §5a.3 says only that the envelope "mirrors iicp_conf": a missing version reads as 1.
    check_version(obj, false)?;
    let aad = response_aad(task_id);
    check_aad(obj, &[&aad])?;
    let (body, nonce) = body_and_nonce(obj)?;
    let key = response_key(&rk.shared, &nonce, task_id);
    let plaintext = decrypt(&key, &nonce, &body, aad.as_bytes())?;
    serde_json::from_slice(&plaintext).map_err(|_| CxError::Malformed("response"))
}

/// X25519 (RFC 7748) through AWS-LC.
mod x25519 {
    use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
    use zeroize::Zeroizing;

    pub struct PrivateKey(agreement::PrivateKey);

    impl PrivateKey {
        pub fn new(secret: &[u8; 32]) -> Self {
            // Every 32-byte string is an X25519 private key (it is clamped when used).
            let key = agreement::PrivateKey::from_private_key(&X25519, secret)
                .expect("X25519 accepts any 32 bytes");
            PrivateKey(key)
        }

        pub fn public(&self) -> [u8; 32] {
            let public = self
                .0
                .compute_public_key()
                .expect("an X25519 public key is always computable");
            let mut out = [0u8; 32];
            out.copy_from_slice(public.as_ref());
            out
        }

        /// The shared secret with `peer`, or `None` when it is all zeros (a low-order point).
        pub fn agree(&self, peer: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
            let peer = UnparsedPublicKey::new(&X25519, peer);
            agreement::agree(&self.0, peer, (), |shared| {
                let mut out = Zeroizing::new([0u8; 32]);
                out.copy_from_slice(shared);
                Ok(out)
            })
            .ok()
        }
    }
}

fn request_aad(task_id: &str, intent: &str) -> String {
    format!("{task_id}|{intent}")
}

/// §5a.3 gives no response AAD; deployed providers use this one (see the module docs).
fn response_aad(task_id: &str) -> String {
    format!("{task_id}|resp")
}

fn request_key(ss: &[u8; 32], nonce: &[u8; 12], task: &str, intent: &str) -> Key {
    derive(
        ss,
        nonce,
        &[REQUEST_INFO, task.as_bytes(), intent.as_bytes()],
    )
}

fn response_key(ss: &[u8; 32], nonce: &[u8; 12], task: &str) -> Key {
    derive(ss, nonce, &[RESPONSE_INFO, task.as_bytes()])
}

fn derive(shared: &[u8; 32], salt: &[u8; 12], info: &[&[u8]]) -> Key {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expansion cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), shared).expand_multi_info(info, key.as_mut());
    key
}

fn encrypt(key: &Key, nonce: &[u8; 12], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, CxError> {
    if msg.len() > MAX_ENCRYPTED_BODY - TAG_LEN {
        return Err(CxError::TooLarge);
    }
    let cipher = Aes256Gcm::new(key.as_ref().into());
    cipher
        .encrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .map_err(|_| CxError::TooLarge)
}

fn decrypt(key: &Key, nonce: &[u8; 12], body: &[u8], aad: &[u8]) -> Result<Secret, CxError> {
    let cipher = Aes256Gcm::new(key.as_ref().into());
    // The tag check inside `decrypt` is constant-time; on failure nothing is released.
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .map(Zeroizing::new)
        .map_err(|_| CxError::Decrypt)
}

fn json_bytes(value: &Value, what: &'static str) -> Result<Secret, CxError> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(|_| CxError::Malformed(what))
}

fn check_version(obj: &Map<String, Value>, required: bool) -> Result<(), CxError> {
    match obj.get("version").map(Value::as_u64) {
        Some(Some(CX_VERSION)) => Ok(()),
        Some(Some(_)) => Err(CxError::UnsupportedVersion),
        None if !required => Ok(()),
        _ => Err(CxError::Malformed("version")),
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, CxError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or(CxError::Malformed(name))
}

/// `encrypted_body` (bounded before decoding) and `nonce`, with `plaintext_size` checked
/// against the body when present.
fn body_and_nonce(obj: &Map<String, Value>) -> Result<(Vec<u8>, [u8; 12]), CxError> {
    let text = str_field(obj, "encrypted_body")?;
    if text.len() > MAX_ENCRYPTED_BODY.div_ceil(3) * 4 {
        return Err(CxError::TooLarge);
    }
    let body = decode_b64(text).ok_or(CxError::Malformed("encrypted_body"))?;
    if body.len() > MAX_ENCRYPTED_BODY {
        return Err(CxError::TooLarge);
    }
    let Some(plain_len) = body.len().checked_sub(TAG_LEN) else {
        return Err(CxError::Malformed("encrypted_body"));
    };
    match obj.get("plaintext_size") {
        None | Some(Value::Null) => {}
        Some(size) if size.as_u64() == Some(plain_len as u64) => {}
        Some(_) => return Err(CxError::Malformed("plaintext_size")),
    }
    let nonce = decode_fixed(str_field(obj, "nonce")?).ok_or(CxError::Malformed("nonce"))?;
    Ok((body, nonce))
}

/// An absent or null `aad` is accepted; otherwise it must be one of `expected`, as base64 of
/// its UTF-8 or as the plain string.
fn check_aad(obj: &Map<String, Value>, expected: &[&str]) -> Result<(), CxError> {
    let field = match obj.get("aad") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(CxError::Malformed("aad")),
    };
    let decoded = decode_b64(field);
    let matches = |want: &&str| field == *want || decoded.as_deref() == Some(want.as_bytes());
    if expected.iter().any(matches) {
        Ok(())
    } else {
        Err(CxError::AadMismatch)
    }
}

/// Lenient base64: URL or standard alphabet, padded or not.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    if text.contains(['+', '/']) {
        B64URL.decode(text.replace('+', "-").replace('/', "_")).ok()
    } else {
        B64URL.decode(text).ok()
    }
}

fn decode_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Exactly N bytes never needs more than this; refuse longer input before decoding it.
    if text.len() > N.div_ceil(3) * 4 {
        return None;
    }
    decode_b64(text)?.try_into().ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds (proleptic Gregorian, days-to-civil conversion).
fn iso8601_utc(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
