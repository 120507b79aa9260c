//! Intent URNs: `urn:iicp:intent:<domain>:<action>:v<N>` and custom
//! `urn:iicp:intent:x.<vendor>:<action>:v<N>`.
//!
//! Matching is exact and case-sensitive on the whole URN, so an [`Intent`] compares as its
//! string. Labels are lowercase ASCII letters, digits, `-` and `_` (the practical grammar of
//! `nodelist.json`); vendors may also contain `.`.
//!
//! Three registry entries (`translate:v1`, `classify:v1`, `mcp:tools/call:v1`) fail that grammar
//! (digest C10). They are accepted exactly as registered and only in that spelling: the registry
//! is the authority on standard intents, and refusing its own entries would break peers that
//! advertise them. Every other string must follow the grammar.

use crate::error::ErrorCode;
use crate::registry;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The prefix every intent URN starts with (PROTO-URN-01).
pub const PREFIX: &str = "urn:iicp:intent:";
/// Longest URN accepted. No registered intent is near it; it bounds what peers make us store.
pub const MAX_LEN: usize = 256;

/// The canonical chat intent.
pub const LLM_CHAT_V1: &str = "urn:iicp:intent:llm:chat:v1";
/// The canonical embedding intent (the registry's spelling; `llm:embed:v1` is not it).
pub const LLM_EMBEDDING_V1: &str = "urn:iicp:intent:llm:embedding:v1";

/// A validated intent URN.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Intent(Box<str>);

/// Why a string is not an intent URN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    #[error("intent must start with \"urn:iicp:intent:\"")]
    MissingPrefix,
    #[error("intent modifiers (\"+…\") are not supported; send the bare URN")]
    Modifier,
    #[error("intent is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("intent must end with a version segment \":v<N>\"")]
    MissingVersion,
    #[error("intent must have the form urn:iicp:intent:<domain>:<action>:v<N>")]
    WrongShape,
    #[error("intent {segment} segment {value:?} may only contain a-z, 0-9, '-' and '_'")]
    BadLabel {
        segment: &'static str,
        value: String,
    },
}

impl IntentError {
    /// The catalogue code this failure is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            IntentError::Modifier => ErrorCode::E028InvalidField,
            _ => ErrorCode::ValidationError,
        }
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_vendor(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}

fn is_version(s: &str) -> bool {
    s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Checks the grammar alone, without the registry's legacy spellings.
fn check_grammar(s: &str) -> Result<(), IntentError> {
    let rest = s.strip_prefix(PREFIX).ok_or(IntentError::MissingPrefix)?;
    if s.contains('+') {
        return Err(IntentError::Modifier);
    }
    let mut parts = rest.split(':');
    let (Some(domain), Some(action), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(if rest.rsplit(':').next().is_some_and(is_version) {
            IntentError::WrongShape
        } else {
            IntentError::MissingVersion
        });
    };
    if !is_version(version) {
        return Err(IntentError::MissingVersion);
    }
    let domain_ok = match domain.strip_prefix("x.") {
        Some(vendor) => is_vendor(vendor),
        None => is_label(domain),
    };
    if !domain_ok {
        return Err(IntentError::BadLabel {
            segment: "domain",
            value: domain.to_owned(),
        });
    }
    if !is_label(action) {
        return Err(IntentError::BadLabel {
            segment: "action",
            value: action.to_owned(),
        });
    }
    Ok(())
}

impl Intent {
    /// Parses and validates an intent URN.
    pub fn parse(s: &str) -> Result<Intent, IntentError> {
        if s.len() > MAX_LEN {
            return Err(IntentError::TooLong);
        }
        match check_grammar(s) {
            Ok(()) => Ok(Intent(s.into())),
            Err(_) if registry::Registry::global().get(s).is_some() => Ok(Intent(s.into())),
            Err(e) => Err(e),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn body(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The domain segment (`llm`, `x.acme`).
    pub fn domain(&self) -> &str {
        self.body().split(':').next().unwrap_or_default()
    }

    /// The version number after `:v`.
    pub fn version(&self) -> Option<u32> {
        self.body()
            .rsplit(':')
            .next()?
            .strip_prefix('v')?
            .parse()
            .ok()
    }

    /// True for vendor intents in the `x.` namespace, which no registry governs.
    pub fn is_custom(&self) -> bool {
        self.domain().starts_with("x.")
    }

    /// True when the URN follows the published grammar (false only for the registry's three
    /// legacy spellings).
    pub fn follows_grammar(&self) -> bool {
        check_grammar(&self.0).is_ok()
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Intent({})", &self.0)
    }
}

impl std::str::FromStr for Intent {
    type Err = IntentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Intent::parse(s)
    }
}

impl AsRef<str> for Intent {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Intent {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Intent {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for Intent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Intent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Intent::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_standard_and_custom_intents() {
        for ok in [
            LLM_CHAT_V1,
            LLM_EMBEDDING_V1,
            "urn:iicp:intent:x.acme:summarize-legal:v2",
            "urn:iicp:intent:x.exp:thing_1:v10",
            "urn:iicp:intent:x.acme.labs:do:v1",
        ] {
            Intent::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rejects_each_malformation_with_its_reason() {
        let table = [
            ("llm:chat:v1", IntentError::MissingPrefix),
            ("URN:IICP:INTENT:llm:chat:v1", IntentError::MissingPrefix),
            ("urn:iicp:intent:llm:chat", IntentError::MissingVersion),
            ("urn:iicp:intent:llm:chat:1", IntentError::MissingVersion),
            ("urn:iicp:intent:llm:chat:v", IntentError::MissingVersion),
            (
                "urn:iicp:intent:llm:chat:v1+attested",
                IntentError::Modifier,
            ),
            ("urn:iicp:intent:llm:v1", IntentError::WrongShape),
            ("urn:iicp:intent:a:b:c:v1", IntentError::WrongShape),
        ];
        for (input, want) in table {
            assert_eq!(Intent::parse(input), Err(want), "{input}");
        }
        assert!(matches!(
            Intent::parse("urn:iicp:intent:LLM:chat:v1"),
            Err(IntentError::BadLabel {
                segment: "domain",
                ..
            })
        ));
        assert!(matches!(
            Intent::parse("urn:iicp:intent:llm:ch at:v1"),
            Err(IntentError::BadLabel {
                segment: "action",
                ..
            })
        ));
        assert!(matches!(
            Intent::parse("urn:iicp:intent:x.:chat:v1"),
            Err(IntentError::BadLabel { .. })
        ));
    }

    #[test]
    fn modifier_is_reported_with_e028() {
        let err = Intent::parse("urn:iicp:intent:llm:chat:v1+fast").unwrap_err();
        assert_eq!(err.code(), ErrorCode::E028InvalidField);
        assert_eq!(
            Intent::parse("llm").unwrap_err().code(),
            ErrorCode::ValidationError
        );
    }

    #[test]
    fn registry_legacy_spellings_are_accepted_only_exactly() {
        for legacy in [
            "urn:iicp:intent:translate:v1",
            "urn:iicp:intent:classify:v1",
            "urn:iicp:intent:mcp:tools/call:v1",
        ] {
            let intent = Intent::parse(legacy).unwrap();
            assert!(!intent.follows_grammar());
        }
        assert!(Intent::parse("urn:iicp:intent:summarize:v1").is_err());
        assert!(Intent::parse("urn:iicp:intent:mcp:tools/list:v1").is_err());
    }

    #[test]
    fn matching_is_exact_and_case_sensitive() {
        let a = Intent::parse(LLM_CHAT_V1).unwrap();
        assert_eq!(a, LLM_CHAT_V1);
        assert_ne!(a, Intent::parse("urn:iicp:intent:llm:chat:v2").unwrap());
        assert_eq!(a.domain(), "llm");
        assert_eq!(a.version(), Some(1));
        assert!(!a.is_custom());
    }

    #[test]
    fn serde_round_trip_validates() {
        let a: Intent = serde_json::from_str("\"urn:iicp:intent:llm:chat:v1\"").unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            "\"urn:iicp:intent:llm:chat:v1\""
        );
        assert!(serde_json::from_str::<Intent>("\"urn:iicp:intent:llm\"").is_err());
    }
}
