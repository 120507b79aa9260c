//! The intent registry (`registry/intents.json` v1.4.0) and the intent risk taxonomy, both
//! embedded at build time so every component can answer "is this intent known?" and "must I
//! refuse it?" without I/O.

use crate::error::{ErrorBody, ErrorCode};
use serde::Deserialize;
use std::sync::OnceLock;

const INTENTS_JSON: &str = include_str!("../data/intents.json");
const RISK_JSON: &str = include_str!("../data/intent-risk-taxonomy.json");

/// Lifecycle status of a registry entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentStatus {
    Active,
    Experimental,
    Deprecated,
    Reserved,
}

impl IntentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::Active => "active",
            IntentStatus::Experimental => "experimental",
            IntentStatus::Deprecated => "deprecated",
            IntentStatus::Reserved => "reserved",
        }
    }
}

#[derive(Debug, Deserialize)]
struct SchemaRef {
    path: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct SchemaRefs {
    input: Option<SchemaRef>,
}

/// One registered intent.
#[derive(Debug, Deserialize)]
pub struct RegistryEntry {
    pub urn: String,
    pub name: String,
    pub status: IntentStatus,
    pub phase: u32,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub deprecated_by: Option<String>,
    #[serde(default)]
    schemas: Option<SchemaRefs>,
}

impl RegistryEntry {
    /// File name of the input JSON Schema (e.g. `llm-chat-v1-input.json`).
    pub fn input_schema_file(&self) -> Option<&str> {
        let path = &self.schemas.as_ref()?.input.as_ref()?.path;
        path.rsplit('/').next()
    }

    /// The registry's sha256 of the input schema, to check the embedded copy against.
    pub fn input_schema_sha256(&self) -> Option<&str> {
        Some(&self.schemas.as_ref()?.input.as_ref()?.sha256)
    }
}

/// The registry document.
#[derive(Debug, Deserialize)]
pub struct Registry {
    pub version: String,
    pub intents: Vec<RegistryEntry>,
}

impl Registry {
    /// The embedded registry, parsed once.
    pub fn global() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            serde_json::from_str(INTENTS_JSON).expect("embedded intents.json is valid")
        })
    }

    /// Exact, case-sensitive lookup.
    pub fn get(&self, urn: &str) -> Option<&RegistryEntry> {
        self.intents.iter().find(|e| e.urn == urn)
    }
}

/// Risk categories of the taxonomy, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskCategory {
    Prohibited,
    HighRisk,
    TransparencyRisk,
    MinimalOrGeneral,
}

/// One taxonomy rule: a category and the URN fragments that trigger it.
#[derive(Debug, Deserialize)]
pub struct RiskRule {
    pub category: RiskCategory,
    pub rule_id: String,
    pub label: String,
    pub fragments: Vec<String>,
}

/// The intent risk taxonomy (`spec/intent-risk-taxonomy.json`).
#[derive(Debug, Deserialize)]
pub struct RiskTaxonomy {
    pub version: String,
    pub rules: Vec<RiskRule>,
}

/// What a component does with high-risk intents. Prohibited intents are refused whatever this
/// says; high-risk ones only pass under an explicit private compliance profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RiskPolicy {
    pub allow_high_risk: bool,
}

impl RiskTaxonomy {
    pub fn global() -> &'static RiskTaxonomy {
        static TAXONOMY: OnceLock<RiskTaxonomy> = OnceLock::new();
        TAXONOMY.get_or_init(|| {
            serde_json::from_str(RISK_JSON).expect("embedded risk taxonomy is valid")
        })
    }

    /// The most severe rule whose fragment occurs in the URN, if any.
    pub fn classify(&self, urn: &str) -> Option<&RiskRule> {
        self.rules
            .iter()
            .filter(|r| r.fragments.iter().any(|f| urn.contains(f.as_str())))
            .min_by_key(|r| r.category)
    }

    /// The refusal a component sends for this intent under `policy`, or `None` to proceed.
    /// Directory and node answer it as 422 `validation_error`; clients refuse locally with
    /// `IICP-POLICY-001` (pass the code to use).
    pub fn refusal(&self, urn: &str, policy: RiskPolicy, code: ErrorCode) -> Option<ErrorBody> {
        let rule = self.classify(urn)?;
        let refused = match rule.category {
            RiskCategory::Prohibited => true,
            RiskCategory::HighRisk => !policy.allow_high_risk,
            RiskCategory::TransparencyRisk | RiskCategory::MinimalOrGeneral => false,
        };
        refused.then(|| {
            code.with_message(format!(
                "intent refused by the risk policy: {} ({})",
                rule.label,
                match rule.category {
                    RiskCategory::Prohibited => "prohibited",
                    _ => "high risk",
                }
            ))
            .with("risk_rule", rule.rule_id.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_the_seventeen_entries_of_v1_4() {
        let r = Registry::global();
        assert_eq!(r.version, "1.4.0");
        assert_eq!(r.intents.len(), 17);
        let chat = r.get("urn:iicp:intent:llm:chat:v1").unwrap();
        assert_eq!(chat.status, IntentStatus::Active);
        assert_eq!(chat.phase, 1);
        assert_eq!(chat.input_schema_file(), Some("llm-chat-v1-input.json"));
        let classify = r.get("urn:iicp:intent:classify:v1").unwrap();
        assert_eq!(classify.status, IntentStatus::Deprecated);
        assert_eq!(
            classify.deprecated_by.as_deref(),
            Some("urn:iicp:intent:llm:classify:v1")
        );
        assert!(r.get("urn:iicp:intent:LLM:chat:v1").is_none());
    }

    #[test]
    fn taxonomy_classifies_by_fragment_most_severe_first() {
        let t = RiskTaxonomy::global();
        let table = [
            (
                "urn:iicp:intent:social-scoring:rank:v1",
                Some(RiskCategory::Prohibited),
            ),
            (
                "urn:iicp:intent:x.acme:csam:v1",
                Some(RiskCategory::Prohibited),
            ),
            (
                "urn:iicp:intent:credit:decision:v1",
                Some(RiskCategory::HighRisk),
            ),
            (
                "urn:iicp:intent:medical:diagnosis:v1",
                Some(RiskCategory::HighRisk),
            ),
            (
                "urn:iicp:intent:x.bot:chatbot:v1",
                Some(RiskCategory::TransparencyRisk),
            ),
            ("urn:iicp:intent:llm:chat:v1", None),
        ];
        for (urn, want) in table {
            assert_eq!(t.classify(urn).map(|r| r.category), want, "{urn}");
        }
    }

    #[test]
    fn refusal_follows_the_public_mesh_defaults() {
        let t = RiskTaxonomy::global();
        let strict = RiskPolicy::default();
        let private = RiskPolicy {
            allow_high_risk: true,
        };
        let code = ErrorCode::PolicyRefused;
        let prohibited = "urn:iicp:intent:social-scoring:rank:v1";
        let high = "urn:iicp:intent:credit:decision:v1";
        assert!(t.refusal(prohibited, strict, code).is_some());
        assert!(t.refusal(prohibited, private, code).is_some());
        let body = t.refusal(high, strict, code).unwrap();
        assert_eq!(body.error.code, "IICP-POLICY-001");
        assert!(t.refusal(high, private, code).is_none());
        assert!(t
            .refusal("urn:iicp:intent:x.bot:chatbot:v1", strict, code)
            .is_none());
        assert!(t
            .refusal("urn:iicp:intent:llm:chat:v1", strict, code)
            .is_none());
    }
}
