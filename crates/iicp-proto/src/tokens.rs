//! Ed25519 dispatch route tickets and consumer tokens (spec §7.3), signed and verified offline.
//!
//! Both share one layout: `b64url(payload_json) "." hex(signature)`, where the payload is
//! base64url without padding and the 64-byte signature covers `domain || ascii(b64url_payload)`.
//! The domain string differs per token kind, so a signature made for one kind never verifies
//! as the other.
//!
//! - A **dispatch route ticket** proves that the directory disclosed one route (one node, one
//!   intent) to a caller. It authorizes disclosure only, not execution.
//! - A **consumer token** lets a caller authenticate to a provider without sharing its
//!   `node_token`. The provider checks it with the directory's public key
//!   (`GET /api/v1/directory-key`), without calling the directory.
//!
//! No I/O and no clock: callers pass `now` in unix seconds, and the directory supplies the
//! random ticket id. Verification checks the signature over the raw token text before it
//! decodes or trusts any claim, bounds the input length, and never panics.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Domain separator signed in front of a consumer token's payload.
pub const CONSUMER_TOKEN_DOMAIN: &[u8] = b"iicp:consumer-token:v1\n";
/// Domain separator signed in front of a dispatch route ticket's payload.
pub const DISPATCH_TICKET_DOMAIN: &[u8] = b"iicp:dispatch-route-ticket:v1\n";
/// The only `aud` a v1 dispatch route ticket may carry.
pub const DISPATCH_AUDIENCE: &str = "iicp.directory.dispatch";
/// The only `typ` a v1 dispatch route ticket may carry.
pub const DISPATCH_TICKET_TYPE: &str = "dispatch-route-ticket";
/// The claims version both token kinds carry in `v`.
pub const TOKEN_VERSION: u32 = 1;
/// A consumer-token `intent` that admits any task intent.
pub const ANY_INTENT: &str = "*";
/// Default consumer-token lifetime (`exp = iat + 300`).
pub const CONSUMER_TOKEN_TTL_SECS: u64 = 300;
/// Clock-skew grace a provider allows past a consumer token's `exp`.
pub const CONSUMER_TOKEN_GRACE_SECS: u64 = 10;
/// Longest token text we look at. Real tokens are a few hundred bytes; the bound keeps a
/// hostile header from costing more than a small decode.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Hex length of an Ed25519 signature (64 bytes).
const SIGNATURE_HEX_LEN: usize = 128;

/// base64url. Writes omit padding, as the spec's tokens do; reads also accept padding, which
/// is safe because the signature covers the payload text exactly as sent.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token or key was refused. Messages name the failed check only, never token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `payload.signature`, too long, bad encoding, or claims of the wrong shape.
    #[error("token is malformed")]
    Malformed,
    /// The signature does not verify under the directory key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `v` is not 1.
    #[error("token version is not supported")]
    WrongVersion,
    /// `typ` is not `dispatch-route-ticket`.
    #[error("token type is wrong")]
    WrongType,
    /// `iss` is not the expected directory.
    #[error("token issuer is wrong")]
    WrongIssuer,
    /// `aud` is not this audience (dispatch audience, or the provider's own node id).
    #[error("token audience is wrong")]
    WrongAudience,
    /// The ticket names another node.
    #[error("token is for another node")]
    WrongNode,
    /// The token does not cover this intent.
    #[error("token is for another intent")]
    WrongIntent,
    /// Past `exp` (plus grace, for consumer tokens).
    #[error("token has expired")]
    Expired,
    /// A public key that is not 64 hex characters naming a valid Ed25519 point.
    #[error("public key is invalid")]
    InvalidKey,
}

/// Claims of a dispatch route ticket v1. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchTicketClaims {
    pub v: u32,
    pub typ: String,
    pub iss: String,
    pub aud: String,
    /// Ticket id: 24 lowercase hex characters (12 random bytes). Log only a prefix.
    pub jti: String,
    /// The disclosed node. Any string; not necessarily a UUID.
    pub node_id: String,
    pub intent: String,
    pub iat: u64,
    pub exp: u64,
    /// SHA-256 (64 hex) of the node's policy manifest, when the directory binds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_manifest_sha256: Option<String>,
}

impl DispatchTicketClaims {
    /// Claims for a fresh ticket: the fixed `v`, `typ` and `aud`, the given route scope, and a
    /// ticket id from `jti` (12 random bytes the directory draws). `exp = iat + ttl_secs`.
    pub fn new(
        iss: &str,
        node_id: &str,
        intent: &str,
        jti: [u8; 12],
        iat: u64,
        ttl_secs: u64,
    ) -> Self {
        DispatchTicketClaims {
            v: TOKEN_VERSION,
            typ: DISPATCH_TICKET_TYPE.to_owned(),
            iss: iss.to_owned(),
            aud: DISPATCH_AUDIENCE.to_owned(),
            jti: hex::encode(jti),
            node_id: node_id.to_owned(),
            intent: intent.to_owned(),
            iat,
            exp: iat.saturating_add(ttl_secs),
            policy_manifest_sha256: None,
        }
    }
}

/// Claims of a consumer token v1. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerTokenClaims {
    pub v: u32,
    /// The issuing directory.
    pub iss: String,
    /// The caller's node id.
    pub sub: String,
    /// The target provider's node id.
    pub aud: String,
    /// The intent URN the token covers, or [`ANY_INTENT`].
    pub intent: String,
    pub iat: u64,
    pub exp: u64,
}

impl ConsumerTokenClaims {
    /// Claims for a fresh token with the default lifetime (`exp = iat + 300`).
    pub fn new(iss: &str, caller: &str, target: &str, intent: &str, iat: u64) -> Self {
        ConsumerTokenClaims {
            v: TOKEN_VERSION,
            iss: iss.to_owned(),
            sub: caller.to_owned(),
            aud: target.to_owned(),
            intent: intent.to_owned(),
            iat,
            exp: iat.saturating_add(CONSUMER_TOKEN_TTL_SECS),
        }
    }
}

/// What a dispatch ticket must match: the directory that issued it and the route it was
/// presented for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketExpectation<'a> {
    pub issuer: &'a str,
    pub node_id: &'a str,
    pub intent: &'a str,
}

/// Signs a dispatch route ticket. The claims are written as given (compact JSON, wire order).
pub fn sign_dispatch_ticket(key: &SigningKey, claims: &DispatchTicketClaims) -> String {
    sign(key, DISPATCH_TICKET_DOMAIN, claims)
}

/// Verifies a dispatch route ticket: signature, then `v`, `typ`, `iss`, `aud`, `node_id`,
/// `intent`, integer `iat`/`exp`, and `now < exp`. Returns the claims when all hold.
pub fn verify_dispatch_ticket(
    key: &VerifyingKey,
    ticket: &str,
    expect: &TicketExpectation<'_>,
    now: u64,
) -> Result<DispatchTicketClaims, TokenError> {
    let claims: DispatchTicketClaims = open(key, DISPATCH_TICKET_DOMAIN, ticket)?;
    if claims.typ != DISPATCH_TICKET_TYPE {
        return Err(TokenError::WrongType);
    }
    if claims.iss != expect.issuer {
        return Err(TokenError::WrongIssuer);
    }
    if claims.aud != DISPATCH_AUDIENCE {
        return Err(TokenError::WrongAudience);
    }
    if claims.node_id != expect.node_id {
        return Err(TokenError::WrongNode);
    }
    if claims.intent != expect.intent {
        return Err(TokenError::WrongIntent);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Signs a consumer token. The claims are written as given (compact JSON, wire order).
pub fn sign_consumer_token(key: &SigningKey, claims: &ConsumerTokenClaims) -> String {
    sign(key, CONSUMER_TOKEN_DOMAIN, claims)
}

/// Verifies a consumer token the way a provider does before serving a task: signature, then
/// `v`, `aud` equal to `own_node_id`, `intent` equal to `task_intent` or `"*"`, and
/// `now <= exp + 10` (the grace absorbs clock skew between directory and provider).
/// `iss` is returned, not checked: the key already names the directory.
pub fn verify_consumer_token(
    key: &VerifyingKey,
    token: &str,
    own_node_id: &str,
    task_intent: &str,
    now: u64,
) -> Result<ConsumerTokenClaims, TokenError> {
    let claims: ConsumerTokenClaims = open(key, CONSUMER_TOKEN_DOMAIN, token)?;
    if claims.aud != own_node_id {
        return Err(TokenError::WrongAudience);
    }
    if claims.intent != task_intent && claims.intent != ANY_INTENT {
        return Err(TokenError::WrongIntent);
    }
    if now > claims.exp.saturating_add(CONSUMER_TOKEN_GRACE_SECS) {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Parses a directory public key as served by `GET /api/v1/directory-key` (64 hex chars).
pub fn verifying_key_from_hex(text: &str) -> Result<VerifyingKey, TokenError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| TokenError::InvalidKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| TokenError::InvalidKey)
}

/// A public key as 64 lowercase hex characters, the form `directory-key` serves.
pub fn verifying_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

fn signed_message(domain: &[u8], payload: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + payload.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(payload.as_bytes());
    message
}

fn sign<T: Serialize>(key: &SigningKey, domain: &[u8], claims: &T) -> String {
    // Claims are strings and integers only, so serializing cannot fail.
    let json = serde_json::to_vec(claims).expect("token claims always serialize");
    let payload = B64URL.encode(json);
    let signature = key.sign(&signed_message(domain, &payload));
    format!("{payload}.{}", hex::encode(signature.to_bytes()))
}

/// Checks the token's shape and signature, then decodes its claims and version. Nothing in the
/// payload is read before the signature verifies.
fn open<T: DeserializeOwned>(
    key: &VerifyingKey,
    domain: &[u8],
    token: &str,
) -> Result<T, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (payload, signature_hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.is_empty() || signature_hex.len() != SIGNATURE_HEX_LEN {
        return Err(TokenError::Malformed);
    }
    let mut signature = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut signature).map_err(|_| TokenError::Malformed)?;
    // Strict verification refuses non-canonical signatures and small-order keys, so one
    // ticket has exactly one valid signature text.
    key.verify_strict(
        &signed_message(domain, payload),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| TokenError::BadSignature)?;

    let json = B64URL.decode(payload).map_err(|_| TokenError::Malformed)?;
    let value: Value = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    // An object only: serde would otherwise build a struct from a JSON array.
    let object = value.as_object().ok_or(TokenError::Malformed)?;
    // Version first, so a future version is refused as such rather than as a bad shape.
    if object.get("v").and_then(Value::as_u64) != Some(u64::from(TOKEN_VERSION)) {
        return Err(TokenError::WrongVersion);
    }
    T::deserialize(&value).map_err(|_| TokenError::Malformed)
}
