//! Node credentials: generation, storage form and fast verification.
//!
//! A node token is 32 CSPRNG bytes (64 hex characters). It is stored only as a bcrypt hash
//! (DIR-REG-07). bcrypt's work factor exists to slow down guessing of low-entropy secrets such as
//! passwords; a token with 256 random bits cannot be guessed whatever the hash costs, so the cost
//! is set to bcrypt's minimum and the hash only guards against a stolen database being usable
//! as-is. Even so, a heartbeat should not pay for bcrypt at all: [`TokenCache`] remembers, per
//! SHA-256 digest of a token, which node and token generation it was verified for, so repeat
//! checks are a hash and a map lookup.

use crate::model::StoredCredentials;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

/// bcrypt's minimum cost; see the module docs for why that is enough here.
pub const DEFAULT_BCRYPT_COST: u32 = 4;
/// Entries kept before the cache is cleared; losing it only costs one bcrypt per node.
const CACHE_CAPACITY: usize = 1 << 20;

/// `n` bytes from the operating system's CSPRNG, hex encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).expect("the OS random source is available");
    hex::encode(buf)
}

/// Freshly issued credentials: the plaintext (returned once in the ACK) and the stored form.
pub struct Issued {
    pub node_token: String,
    pub proxy_token: String,
    pub stored: StoredCredentials,
}

/// Issues a new token set. `generation` is the previous generation + 1 (1 for a new node); the
/// HMAC key is kept across rotations unless `hmac_key` is `None`.
pub fn issue(cost: u32, generation: u64, hmac_key: Option<String>) -> Issued {
    let node_token = random_hex(32);
    let proxy_token = random_hex(40);
    let token_hash = bcrypt::hash(&node_token, cost).expect("bcrypt cost is in range");
    Issued {
        stored: StoredCredentials {
            token_hash,
            token_generation: generation,
            hmac_key: hmac_key.unwrap_or_else(|| random_hex(32)),
            proxy_token_hash: sha256_hex(&proxy_token),
        },
        node_token,
        proxy_token,
    }
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Verified tokens: digest → (node, generation). Safe to lose; a second replica builds its own.
#[derive(Default)]
pub struct TokenCache {
    map: Mutex<HashMap<TokenDigest, (Uuid, u64)>>,
}

impl TokenCache {
    /// The node a token was verified for, if it still belongs to the current generation.
    pub fn lookup(&self, d: &TokenDigest) -> Option<(Uuid, u64)> {
        self.map.lock().get(d).copied()
    }

    pub fn remember(&self, d: TokenDigest, node: Uuid, generation: u64) {
        let mut map = self.map.lock();
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(d, (node, generation));
    }

    pub fn forget(&self, d: &TokenDigest) {
        self.map.lock().remove(d);
    }

    /// Drops every entry of a node (rotation, deregistration).
    pub fn forget_node(&self, node: Uuid) {
        self.map.lock().retain(|_, (n, _)| *n != node);
    }
}

/// Checks `token` against a node's stored credentials, using and filling the cache.
pub fn verify(cache: &TokenCache, node: Uuid, creds: &StoredCredentials, token: &str) -> bool {
    let d = digest(token);
    if let Some((cached_node, generation)) = cache.lookup(&d) {
        if cached_node == node && generation == creds.token_generation {
            return true;
        }
    }
    // Bound the input: bcrypt reads at most 72 bytes, and our tokens are 64.
    if token.len() > 128 || !bcrypt::verify(token, &creds.token_hash).unwrap_or(false) {
        return false;
    }
    cache.remember(d, node, creds.token_generation);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_and_unique() {
        let a = issue(DEFAULT_BCRYPT_COST, 1, None);
        let b = issue(DEFAULT_BCRYPT_COST, 1, None);
        assert_eq!(a.node_token.len(), 64);
        assert!(a.node_token.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.proxy_token.len(), 80);
        assert_ne!(a.node_token, b.node_token);
        assert!(!a.stored.token_hash.contains(&a.node_token));
    }

    #[test]
    fn verification_uses_bcrypt_once_then_the_cache() {
        let cache = TokenCache::default();
        let node = Uuid::new_v4();
        let issued = issue(DEFAULT_BCRYPT_COST, 1, None);
        assert!(verify(&cache, node, &issued.stored, &issued.node_token));
        assert_eq!(cache.lookup(&digest(&issued.node_token)), Some((node, 1)));
        assert!(!verify(&cache, node, &issued.stored, "wrong"));
        // A rotated credential set voids the cached generation.
        let rotated = issue(DEFAULT_BCRYPT_COST, 2, Some(issued.stored.hmac_key.clone()));
        assert!(!verify(&cache, node, &rotated.stored, &issued.node_token));
        assert!(verify(&cache, node, &rotated.stored, &rotated.node_token));
        // Another node never matches a cached entry.
        assert!(!verify(
            &cache,
            Uuid::new_v4(),
            &rotated.stored,
            &issued.node_token
        ));
    }
}
