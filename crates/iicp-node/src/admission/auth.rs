//! Who may submit a task.
//!
//! `open`: unauthenticated calls are accepted, but any credential presented must be valid (a
//! wrong credential is a mistake worth reporting). `token`: a credential is required, either the
//! node's own token (shared by its operator) or a directory-signed consumer token addressed to
//! this node. Tokens are compared in constant time.

use ed25519_dalek::VerifyingKey;
use iicp_proto::tokens;
use parking_lot::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    #[default]
    Open,
    Token,
}

/// The credentials a call presented.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// `auth.node_token` in the body, or `Authorization: Bearer`.
    pub node_token: Option<&'a str>,
    /// `X-IICP-Consumer-Token`.
    pub consumer_token: Option<&'a str>,
}

impl Presented<'_> {
    fn is_empty(&self) -> bool {
        self.node_token.is_none() && self.consumer_token.is_none()
    }
}

/// What the node knows to check credentials with; updated by the directory lifecycle.
#[derive(Default)]
pub struct Credentials {
    pub node_id: RwLock<Option<String>>,
    pub node_token: RwLock<Option<String>>,
    pub directory_key: RwLock<Option<VerifyingKey>>,
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credentials {
    fn node_token_ok(&self, presented: &str) -> bool {
        self.node_token
            .read()
            .as_deref()
            .is_some_and(|own| constant_time_eq(own.as_bytes(), presented.as_bytes()))
    }

    fn consumer_token_ok(&self, token: &str, intent: &str, now_s: u64) -> bool {
        let key = *self.directory_key.read();
        let node_id = self.node_id.read().clone();
        match (key, node_id) {
            (Some(key), Some(id)) => {
                tokens::verify_consumer_token(&key, token, &id, intent, now_s).is_ok()
            }
            _ => false,
        }
    }

    /// True when the call may proceed under `mode`.
    pub fn allows(
        &self,
        mode: AuthMode,
        presented: Presented<'_>,
        intent: &str,
        now_s: u64,
    ) -> bool {
        if presented.is_empty() {
            return mode == AuthMode::Open;
        }
        // Every credential presented must verify, in either mode.
        presented.node_token.is_none_or(|t| self.node_token_ok(t))
            && presented
                .consumer_token
                .is_none_or(|t| self.consumer_token_ok(t, intent, now_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use iicp_proto::tokens::ConsumerTokenClaims;

    fn creds() -> (Credentials, SigningKey) {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let c = Credentials::default();
        *c.node_id.write() = Some("node-a".into());
        *c.node_token.write() = Some("secret-token".into());
        *c.directory_key.write() = Some(key.verifying_key());
        (c, key)
    }

    #[test]
    fn open_mode_accepts_nothing_but_refuses_wrong_credentials() {
        let (c, _) = creds();
        let none = Presented::default();
        assert!(c.allows(AuthMode::Open, none, "i", 0));
        assert!(!c.allows(AuthMode::Token, none, "i", 0));
        let wrong = Presented {
            node_token: Some("nope"),
            ..Default::default()
        };
        assert!(!c.allows(AuthMode::Open, wrong, "i", 0));
        let right = Presented {
            node_token: Some("secret-token"),
            ..Default::default()
        };
        assert!(c.allows(AuthMode::Token, right, "i", 0));
    }

    #[test]
    fn consumer_tokens_must_name_this_node_and_intent() {
        let (c, key) = creds();
        let claims = ConsumerTokenClaims::new(
            "dir",
            "caller",
            "node-a",
            "urn:iicp:intent:llm:chat:v1",
            1000,
        );
        let token = tokens::sign_consumer_token(&key, &claims);
        let p = Presented {
            consumer_token: Some(&token),
            ..Default::default()
        };
        assert!(c.allows(AuthMode::Token, p, "urn:iicp:intent:llm:chat:v1", 1100));
        assert!(!c.allows(AuthMode::Token, p, "urn:iicp:intent:llm:embedding:v1", 1100));
        assert!(
            !c.allows(AuthMode::Token, p, "urn:iicp:intent:llm:chat:v1", 2000),
            "expired"
        );
        let other = ConsumerTokenClaims::new("dir", "caller", "node-b", "*", 1000);
        let token = tokens::sign_consumer_token(&key, &other);
        let p = Presented {
            consumer_token: Some(&token),
            ..Default::default()
        };
        assert!(!c.allows(AuthMode::Token, p, "urn:iicp:intent:llm:chat:v1", 1100));
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
