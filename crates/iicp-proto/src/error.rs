//! The error catalogue: every code IICP puts in `error.code`, with its HTTP status.
//!
//! One table, one place. Servers render [`ErrorBody`]; clients parse it back with
//! [`ErrorCode::parse`]. Messages are written for the caller and never carry internals
//! (paths, stack traces, storage details).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal), )*) => {
        /// A code from the spec's error catalogue (digest §3.6).
        ///
        /// A few numbered codes carry two meanings in the spec (E039, E049, E050); each meaning is
        /// its own variant with its own status, and they share the wire string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every catalogue entry, in catalogue order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire string for `error.code`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status this code is sent with.
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }
        }
    };
}

catalogue! {
    // Phase 1 slug codes (core §7, p1 §8).
    /// Missing or invalid credential.
    Unauthorized => ("unauthorized", 401),
    /// Valid credential, not permitted.
    Forbidden => ("forbidden", 403),
    /// Unknown node or resource.
    NotFound => ("not_found", 404),
    /// Duplicate `task_id`, replayed nonce or gossip signature.
    Conflict => ("conflict", 409),
    /// Request rate limit (registration, gossip). Sent with `iicp_code: IICP-E034` on register.
    RateLimited => ("rate_limited", 429),
    /// Every slot is busy; the caller should move to another node at once.
    CapacityExceeded => ("capacity_exceeded", 429),
    /// The task exceeded `constraints.timeout_ms`.
    TaskTimeout => ("task_timeout", 504),
    /// The inference backend failed.
    BackendError => ("backend_error", 502),
    /// Consensus found no majority.
    NoConsensus => ("no_consensus", 502),
    /// Schema or field validation failed.
    ValidationError => ("validation_error", 422),
    /// The registration health check of the node's endpoint failed.
    LivenessFailed => ("liveness_failed", 422),

    // Transport-level slugs every HTTP server needs.
    /// Malformed request (bad JSON, bad query string).
    BadRequest => ("bad_request", 400),
    /// Route exists, method does not.
    MethodNotAllowed => ("method_not_allowed", 405),
    /// Body larger than the server accepts.
    PayloadTooLarge => ("payload_too_large", 413),
    /// Body media type not supported (CBOR without CBOR support, anything but JSON).
    UnsupportedMediaType => ("unsupported_media_type", 415),
    /// Unexpected server-side failure; details stay in the server.
    InternalError => ("internal_error", 500),

    // Proxy, SDK and admission slugs.
    /// The intent is unknown to this component.
    UnknownIntent => ("unknown_intent", 422),
    /// Candidates existed but all failed.
    NoAvailableNode => ("no_available_node", 503),
    /// Every attempt timed out.
    Timeout => ("timeout", 504),
    /// Local configuration is invalid.
    InvalidConfig => ("invalid_config", 400),
    /// Local refusal of a prohibited or high-risk intent; terminal.
    PolicyRefused => ("IICP-POLICY-001", 403),
    /// Probe target is private or not routable.
    PrivateAddress => ("private_address", 422),
    /// A required profile is not supported.
    UnsupportedProfile => ("unsupported_profile", 422),
    /// The deadline cannot be met.
    DeadlineUnachievable => ("deadline_unachievable", 504),
    /// The service is temporarily unavailable.
    TemporarilyUnavailable => ("temporarily_unavailable", 503),
    /// Refused by the provider's policy.
    PolicyRejected => ("policy_rejected", 403),
    /// CIP gate: tool execution is not allowed on this provider.
    ToolExecutionDenied => ("tool_execution_denied", 403),
    /// CIP gate: caller reputation too low.
    ReputationTooLow => ("reputation_too_low", 403),
    /// Billing: budget limit exceeded.
    BillingLimitExceeded => ("billing_limit_exceeded", 422),
    /// Billing: service unavailable.
    BillingUnavailable => ("billing_unavailable", 422),
    /// Billing: receipt conflicts with an earlier one.
    ReceiptConflict => ("receipt_conflict", 409),
    /// Audit: invalid target.
    InvalidTarget => ("invalid_target", 422),
    /// Federation: attestation unavailable.
    AttestationUnavailable => ("attestation_unavailable", 503),
    /// Federation: no probe data.
    NoProbeData => ("no_probe_data", 503),

    // Numbered codes (digest §3.6).
    /// Coordinator reputation below the provider's minimum.
    E020CoordinatorReputation => ("IICP-E020", 403),
    /// Worker at `max_concurrent_remote`.
    E021WorkerCapacity => ("IICP-E021", 503),
    /// No CIP-eligible workers.
    E022NoCipWorkers => ("IICP-E022", 503),
    /// Policy-evaluation rate limit.
    E023PolicyRateLimit => ("IICP-E023", 429),
    /// Every worker timed out.
    E024WorkersTimedOut => ("IICP-E024", 504),
    /// `majority_vote` replicas not odd and at least 3.
    E025BadReplicas => ("IICP-E025", 422),
    /// Map-reduce split has coverage gaps.
    E026CoverageGap => ("IICP-E026", 422),
    /// Receipt rejected.
    E027ReceiptInvalid => ("IICP-E027", 422),
    /// Invalid CIP field, or an unknown `+modifier` on an intent.
    E028InvalidField => ("IICP-E028", 422),
    /// Model not served by this node.
    E029ModelNotServed => ("IICP-E029", 404),
    /// Relay target not in the peer list.
    E030RelayTargetUnknown => ("IICP-E030", 404),
    /// Relay forwarding failed.
    E031RelayForwardFailed => ("IICP-E031", 502),
    /// `proxy_token` invalid or missing on telemetry.
    E032ProxyTokenInvalid => ("IICP-E032", 401),
    /// The directory answered with zero candidates.
    E033NoCandidates => ("IICP-E033", 503),
    /// Registration rate limit (60 per rolling 60 s per source IP).
    E034RegisterRateLimited => ("IICP-E034", 429),
    /// Endpoint host is not publicly routable.
    E035NonRoutableEndpoint => ("IICP-E035", 422),
    /// Insufficient credits.
    E036InsufficientCredits => ("IICP-E036", 402),
    /// Relay session cap reached.
    E039RelaySessionCap => ("IICP-E039", 503),
    /// Relay bind rate limit.
    E039RelayBindRateLimited => ("IICP-E039", 429),
    /// Replica DID does not resolve.
    E040DidUnresolved => ("IICP-E040", 422),
    /// Replica DID has no Ed25519 method.
    E041NoEd25519Method => ("IICP-E041", 422),
    /// Replica `/iicp/health` not 200.
    E042ReplicaUnhealthy => ("IICP-E042", 422),
    /// Replica endpoint not https or private.
    E043ReplicaEndpoint => ("IICP-E043", 422),
    /// Bad `trust_tier_request`.
    E044TrustTierRequest => ("IICP-E044", 422),
    /// Snapshot required. The spec gives no status; 409 says "not in a state to serve this".
    E045SnapshotRequired => ("IICP-E045", 409),
    /// Snapshot timed out; retry after 30 s.
    E046SnapshotTimeout => ("IICP-E046", 503),
    /// Replica mode misconfigured.
    E047ReplicaMisconfigured => ("IICP-E047", 503),
    /// Replica signing misconfigured.
    E048ReplicaSigningMisconfigured => ("IICP-E048", 503),
    /// `cx_public_key` change without ownership proof (directory).
    E049CxKeyOwnership => ("IICP-E049", 403),
    /// CX key rejected by the CX layer.
    E049CxKeyInvalid => ("IICP-E049", 422),
    /// Routing-field change without ownership proof (directory).
    E050RouteOwnership => ("IICP-E050", 403),
    /// CX decryption failed, or the node has no CX support.
    E050CxDecryptFailed => ("IICP-E050", 422),
    /// Mailbox message too large.
    E053MailboxTooLarge => ("IICP-E053", 413),
    /// Unknown CX key id or prekey.
    E060UnknownKeyId => ("IICP-E060", 422),
    /// Unsupported CX version.
    E061UnsupportedCxVersion => ("IICP-E061", 422),
    /// CX decrypt or tag failure.
    E062CxTagFailure => ("IICP-E062", 400),
    /// CX key expired.
    E063CxKeyExpired => ("IICP-E063", 422),
    /// Node has no CX support.
    E064NoCxSupport => ("IICP-E064", 422),
    /// Operator key-binding signature invalid.
    E065OperatorBindingInvalid => ("IICP-E065", 422),
}

impl ErrorCode {
    /// The code a client reads back. Codes shared by two catalogue meanings resolve to the first
    /// (directory) meaning; callers that care use the HTTP status to tell them apart.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// The codes a client may retry on another node (digest §5.4).
    pub fn is_retryable_elsewhere(self) -> bool {
        matches!(
            self,
            ErrorCode::CapacityExceeded
                | ErrorCode::RateLimited
                | ErrorCode::TaskTimeout
                | ErrorCode::Timeout
                | ErrorCode::TemporarilyUnavailable
                | ErrorCode::NoAvailableNode
        )
    }

    /// Builds an [`ErrorBody`] with this code and a caller-facing message.
    pub fn with_message(self, message: impl Into<String>) -> ErrorBody {
        ErrorBody::new(self, message)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object: `{"code","message"}` plus optional structured hints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Extra, code-specific fields (`retry_after_ms`, `qos_class`, `retry_after`, `iicp_code`,
    /// `problems`). Flattened so they sit beside `code` on the wire.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// The spec's error envelope: `{"error":{"code","message",…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// Not serialized: the status the server answers with.
    #[serde(skip)]
    status: u16,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.into(),
                extra: Map::new(),
            },
            status: code.http_status(),
        }
    }

    /// Adds a structured hint beside `code` and `message`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.error.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The HTTP status to send (0 when parsed from the wire).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The code, when it is one of the catalogue's.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.error.code)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("error body always serializes")
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error.code, self.error.message)
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_one_slugs_have_the_spec_statuses() {
        let table = [
            ("unauthorized", 401),
            ("forbidden", 403),
            ("not_found", 404),
            ("conflict", 409),
            ("rate_limited", 429),
            ("capacity_exceeded", 429),
            ("task_timeout", 504),
            ("backend_error", 502),
            ("no_consensus", 502),
            ("validation_error", 422),
            ("liveness_failed", 422),
        ];
        for (code, status) in table {
            let parsed = ErrorCode::parse(code).unwrap_or_else(|| panic!("{code} missing"));
            assert_eq!(parsed.http_status(), status, "{code}");
        }
    }

    #[test]
    fn numbered_codes_carry_their_statuses() {
        let table = [
            (ErrorCode::E029ModelNotServed, "IICP-E029", 404),
            (ErrorCode::E033NoCandidates, "IICP-E033", 503),
            (ErrorCode::E034RegisterRateLimited, "IICP-E034", 429),
            (ErrorCode::E035NonRoutableEndpoint, "IICP-E035", 422),
            (ErrorCode::E036InsufficientCredits, "IICP-E036", 402),
            (ErrorCode::E049CxKeyOwnership, "IICP-E049", 403),
            (ErrorCode::E050RouteOwnership, "IICP-E050", 403),
            (ErrorCode::E050CxDecryptFailed, "IICP-E050", 422),
        ];
        for (code, wire, status) in table {
            assert_eq!(code.as_str(), wire);
            assert_eq!(code.http_status(), status);
        }
    }

    #[test]
    fn every_code_has_an_error_status() {
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code:?}");
            assert!(!code.as_str().is_empty());
        }
    }

    #[test]
    fn body_renders_the_envelope_with_hints_beside_the_code() {
        let body = ErrorCode::CapacityExceeded
            .with_message("all slots busy")
            .with("qos_class", "batch")
            .with("retry_after_ms", 500);
        let json: Value = serde_json::from_str(&body.to_json()).unwrap();
        assert_eq!(json["error"]["code"], "capacity_exceeded");
        assert_eq!(json["error"]["message"], "all slots busy");
        assert_eq!(json["error"]["qos_class"], "batch");
        assert_eq!(json["error"]["retry_after_ms"], 500);
        assert_eq!(body.status(), 429);
        assert_eq!(json.as_object().unwrap().len(), 1);
    }

    #[test]
    fn body_parses_back_with_its_hints() {
        let wire = r#"{"error":{"code":"rate_limited","message":"slow down","retry_after":12}}"#;
        let body: ErrorBody = serde_json::from_str(wire).unwrap();
        assert_eq!(body.code(), Some(ErrorCode::RateLimited));
        assert_eq!(body.error.extra["retry_after"], 12);
    }
}
