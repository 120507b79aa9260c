//! IICP-CX Tier 1: an independent vector, round trips, tampering, task binding, key and
//! version checks, lenient reading, and no panic on any envelope.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use iicp_proto::control::CxPublicKey;
use iicp_proto::cx::{
    advertisement, key_id, open, open_response, recipient_key_id, seal, seal_response, CxError,
    CxKeyPair, ResponseKey, Sealed, MAX_ENCRYPTED_BODY, RESPONSE_ENCRYPTION_FEATURE,
};
use iicp_proto::ErrorCode;
use proptest::prelude::*;
use serde_json::{json, Value};

const TASK: &str = "7d2f0a44-1c2b-4e5f-9a6b-0c1d2e3f4a5b";
const CHAT: &str = "urn:iicp:intent:llm:chat:v1";
const EMBED: &str = "urn:iicp:intent:llm:embedding:v1";

/// Generated from the spec text (S.16 §3.1, §4.1, §5, §5a.3) with pyca/cryptography, not with
/// this crate: node secret 01..20, ephemeral secret 65..84, nonce c9..d4, response nonce dd..e8.
const VECTOR_KEY: &str = "B6N8vBQgk8i3VdwbEOhstCY3StFqqFPtC9_AsrhtHHw";
const VECTOR_KEY_ID: &str = "ef1f7d8ef0ab699b";
const VECTOR_CONF: &str = r#"{
    "version": 1,
    "recipient_key_id": "ef1f7d8ef0ab699b",
    "kem_ciphertext": "VxR2nRFr92Q2rnS8eT0sMK0ZA8WaxSc4BcfiaYtBDDY",
    "encrypted_body": "HwPTzTh5cU7K3JpKsLOaEOb0E-lWRMx9AGqHGTqzbHQSqQbbtGhvEQ",
    "nonce": "ycrLzM3Oz9DR0tPU",
    "aad": "N2QyZjBhNDQtMWMyYi00ZTVmLTlhNmItMGMxZDJlM2Y0YTVifHVybjppaWNwOmludGVudDpsbG06Y2hhdDp2MQ",
    "plaintext_size": 24
}"#;
const VECTOR_CONF_RESP: &str = r#"{
    "version": 1,
    "nonce": "3d7f4OHi4-Tl5ufo",
    "encrypted_body": "2ivuGmT4y-r72nQohPyAx3CTaUOdTmov6j5kzHrNMl6VKWXbip54RQDw"
}"#;

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start + i as u8)
}

fn node() -> CxKeyPair {
    CxKeyPair::from_secret_bytes(seq(1))
}

fn node_key(kp: &CxKeyPair) -> CxPublicKey {
    advertisement(kp, 1_900_000_000)
}

fn payload() -> Value {
    json!({"messages": [{"role": "user", "content": "what is the capital of France?"}]})
}

fn sealed() -> Sealed {
    seal(&node_key(&node()), TASK, CHAT, &payload(), [9; 32], [5; 12]).unwrap()
}

fn opened(conf: &Value) -> Result<(Value, ResponseKey), CxError> {
    open(&node(), TASK, CHAT, conf)
}

fn b64_bytes(conf: &Value, field: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(conf[field].as_str().unwrap())
        .unwrap()
}

#[test]
fn independent_vector_seals_and_opens_byte_for_byte() {
    let kp = node();
    assert_eq!(kp.public_b64url(), VECTOR_KEY);
    assert_eq!(kp.key_id(), VECTOR_KEY_ID);
    let expected: Value = serde_json::from_str(VECTOR_CONF).unwrap();
    let payload = json!({"prompt": "hello, node"});

    let sealed = seal(&node_key(&kp), TASK, CHAT, &payload, seq(101), seq(201)).unwrap();
    assert_eq!(sealed.conf, expected);

    let (got, rk) = open(&kp, TASK, CHAT, &expected).unwrap();
    assert_eq!(got, payload);
    let response = json!({"text": "hello, consumer"});
    let expected_resp: Value = serde_json::from_str(VECTOR_CONF_RESP).unwrap();
    assert_eq!(
        seal_response(&rk, TASK, &response, seq(221)).unwrap(),
        expected_resp
    );
    assert_eq!(
        open_response(&sealed.response_key, TASK, &expected_resp).unwrap(),
        response
    );
}

#[test]
fn round_trip_request_and_response() {
    let sealed = sealed();
    let conf = &sealed.conf;
    assert_eq!(conf["version"], 1);
    assert_eq!(recipient_key_id(conf), Some(node().key_id()));
    assert_eq!(b64_bytes(conf, "kem_ciphertext").len(), 32);
    assert_eq!(b64_bytes(conf, "nonce"), [5; 12]);
    assert_eq!(b64_bytes(conf, "aad"), format!("{TASK}|{CHAT}").as_bytes());
    let size = conf["plaintext_size"].as_u64().unwrap() as usize;
    assert_eq!(size, serde_json::to_vec(&payload()).unwrap().len());
    assert_eq!(b64_bytes(conf, "encrypted_body").len(), size + 16);
    assert!(!conf.to_string().contains("capital"), "plaintext leaked");

    let (got, rk) = opened(conf).unwrap();
    assert_eq!(got, payload());
    let response = json!({"task_id": TASK, "status": "success", "result": {"text": "Paris"}});
    let resp = seal_response(&rk, TASK, &response, [6; 12]).unwrap();
    assert_eq!(
        resp.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["encrypted_body", "nonce", "version"]
    );
    assert!(!resp.to_string().contains("Paris"), "plaintext leaked");
    assert_eq!(
        open_response(&sealed.response_key, TASK, &resp).unwrap(),
        response
    );
}

#[test]
fn advertisement_is_a_valid_tier1_key() {
    let kp = node();
    let ad = node_key(&kp);
    assert_eq!(ad.algorithm, "X25519");
    assert_eq!(ad.encoding, "base64url");
    assert_eq!(ad.key.len(), 43);
    assert_eq!(ad.key_id, key_id(&kp.public_bytes()));
    assert_eq!(ad.key_id.len(), 16);
    assert_eq!(ad.not_after, Some(json!("2030-03-17T17:46:40Z")));
    for (unix, iso) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (4_107_542_399, "2100-02-28T23:59:59Z"),
    ] {
        assert_eq!(advertisement(&kp, unix).not_after, Some(json!(iso)));
    }
    assert_eq!(ad.features, [RESPONSE_ENCRYPTION_FEATURE]);
    let wire = serde_json::to_value(&ad).unwrap();
    assert_eq!(wire["hybrid_pq"], Value::Null);

    let mut register = json!({
        "endpoint": "https://node.example.com", "region": "eu-west",
        "capabilities": [{"intent": CHAT}],
    });
    register["cx_public_key"] = wire;
    let mut problems = iicp_proto::Problems::default();
    iicp_proto::control::check_register(&register, &mut problems);
    assert!(
        !format!("{problems:?}").contains("cx_public_key"),
        "{problems:?}"
    );
    register["cx_public_key"]["key"] = json!("too-short");
    let mut problems = iicp_proto::Problems::default();
    iicp_proto::control::check_register(&register, &mut problems);
    assert!(format!("{problems:?}").contains("cx_public_key.key"));
}

#[test]
fn secrets_round_trip_and_never_print() {
    let kp = node();
    let again = CxKeyPair::from_secret_bytes(*kp.secret_bytes());
    assert_eq!(again.public_bytes(), kp.public_bytes());
    let secret_hex = hex::encode(*kp.secret_bytes());
    let printed = format!("{kp:?} {:?}", sealed());
    assert!(!printed.contains(&secret_hex));
    assert!(printed.contains("redacted"));
}

#[test]
fn tampering_with_any_byte_fails() {
    let conf = sealed().conf;
    for field in ["encrypted_body", "nonce", "kem_ciphertext"] {
        let bytes = b64_bytes(&conf, field);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let mut tampered = conf.clone();
            tampered[field] = json!(URL_SAFE_NO_PAD.encode(&bad));
            let err = opened(&tampered).unwrap_err();
            assert_eq!(err, CxError::Decrypt, "{field}[{i}]");
            assert_eq!(err.error_code(), ErrorCode::E050CxDecryptFailed);
        }
    }
    // The one bit X25519 ignores is refused outright rather than decrypting.
    let mut eph = b64_bytes(&conf, "kem_ciphertext");
    eph[31] ^= 0x80;
    let mut tampered = conf.clone();
    tampered["kem_ciphertext"] = json!(URL_SAFE_NO_PAD.encode(&eph));
    assert_eq!(
        opened(&tampered).unwrap_err(),
        CxError::Malformed("kem_ciphertext")
    );
}

#[test]
fn response_tampering_and_wrong_task_fail() {
    let sealed = sealed();
    let (_, rk) = opened(&sealed.conf).unwrap();
    let resp = seal_response(&rk, TASK, &json!({"text": "Paris"}), [6; 12]).unwrap();
    for field in ["encrypted_body", "nonce"] {
        let mut bad = b64_bytes(&resp, field);
        bad[0] ^= 0x80;
        let mut tampered = resp.clone();
        tampered[field] = json!(URL_SAFE_NO_PAD.encode(&bad));
        let err = open_response(&sealed.response_key, TASK, &tampered);
        assert_eq!(err, Err(CxError::Decrypt), "{field}");
    }
    let err = open_response(&sealed.response_key, "other-task", &resp);
    assert_eq!(err, Err(CxError::Decrypt));
    // The request envelope is not a response: different label, different AAD.
    let err = open_response(&sealed.response_key, TASK, &sealed.conf);
    assert!(err.is_err());
}

#[test]
fn ciphertext_is_bound_to_its_task_and_intent() {
    let mut conf = sealed().conf;
    assert_eq!(
        open(&node(), "other-task", CHAT, &conf).unwrap_err(),
        CxError::AadMismatch
    );
    assert_eq!(
        open(&node(), TASK, EMBED, &conf).unwrap_err(),
        CxError::AadMismatch
    );
    // Without the aad field the AEAD itself still refuses the move.
    conf.as_object_mut().unwrap().remove("aad");
    assert_eq!(
        open(&node(), "other-task", CHAT, &conf).unwrap_err(),
        CxError::Decrypt
    );
    assert_eq!(
        open(&node(), TASK, EMBED, &conf).unwrap_err(),
        CxError::Decrypt
    );
    // A rewritten aad field does not help either.
    let forged = format!("other-task|{CHAT}");
    conf["aad"] = json!(URL_SAFE_NO_PAD.encode(forged));
    assert_eq!(
        open(&node(), "other-task", CHAT, &conf).unwrap_err(),
        CxError::Decrypt
    );
}

#[test]
fn wrong_recipient_key_id_is_refused() {
    let mut conf = sealed().conf;
    conf["recipient_key_id"] = json!("0000000000000000");
    let err = opened(&conf).unwrap_err();
    assert_eq!(err, CxError::UnknownKey);
    assert_eq!(err.error_code(), ErrorCode::E050CxDecryptFailed);
}

#[test]
fn another_nodes_key_cannot_open() {
    let conf = sealed().conf;
    let other = CxKeyPair::from_secret_bytes([42; 32]);
    assert_eq!(
        open(&other, TASK, CHAT, &conf).unwrap_err(),
        CxError::UnknownKey
    );
    // Even when the key id is made to match, decryption fails.
    let mut conf = conf;
    conf["recipient_key_id"] = json!(other.key_id());
    assert_eq!(
        open(&other, TASK, CHAT, &conf).unwrap_err(),
        CxError::Decrypt
    );
}

#[test]
fn only_version_one_is_accepted() {
    let conf = sealed().conf;
    for (version, err) in [
        (json!(2), CxError::UnsupportedVersion),
        (json!(0), CxError::UnsupportedVersion),
        (json!("1"), CxError::Malformed("version")),
        (json!(1.5), CxError::Malformed("version")),
        (Value::Null, CxError::Malformed("version")),
    ] {
        let mut bad = conf.clone();
        bad["version"] = version.clone();
        assert_eq!(opened(&bad).unwrap_err(), err, "{version}");
    }
    let mut missing = conf;
    missing.as_object_mut().unwrap().remove("version");
    assert_eq!(opened(&missing).unwrap_err(), CxError::Malformed("version"));
}

#[test]
fn fields_are_read_leniently() {
    let conf = sealed().conf;
    let restyle = |conf: &Value, engine: &dyn Fn(&[u8]) -> String| {
        let mut out = conf.clone();
        for field in ["kem_ciphertext", "encrypted_body", "nonce", "aad"] {
            out[field] = json!(engine(&b64_bytes(conf, field)));
        }
        out
    };
    let standard_padded = restyle(&conf, &|b| STANDARD.encode(b));
    let url_padded = restyle(&conf, &|b| {
        base64::engine::general_purpose::URL_SAFE.encode(b)
    });
    for variant in [standard_padded, url_padded] {
        assert_eq!(opened(&variant).unwrap().0, payload());
    }
    let mut relaxed = conf.clone();
    for aad in [
        json!(format!("{TASK}|{CHAT}")),
        json!(format!("{TASK}{CHAT}")),
        Value::Null,
    ] {
        relaxed["aad"] = aad;
        assert_eq!(opened(&relaxed).unwrap().0, payload());
    }
    relaxed.as_object_mut().unwrap().remove("plaintext_size");
    assert_eq!(opened(&relaxed).unwrap().0, payload());
}

#[test]
fn plaintext_size_and_lengths_are_checked() {
    let conf = sealed().conf;
    let size = conf["plaintext_size"].as_u64().unwrap();
    for (field, value) in [
        ("plaintext_size", json!(size + 1)),
        ("plaintext_size", json!(-1)),
        ("nonce", json!(URL_SAFE_NO_PAD.encode([0u8; 16]))),
        ("kem_ciphertext", json!(URL_SAFE_NO_PAD.encode([0u8; 31]))),
        ("encrypted_body", json!(URL_SAFE_NO_PAD.encode([0u8; 15]))),
        ("encrypted_body", json!("not base64!")),
        ("aad", json!(7)),
    ] {
        let mut bad = conf.clone();
        bad[field] = value;
        assert!(
            matches!(opened(&bad), Err(CxError::Malformed(_))),
            "{field}"
        );
    }
    let mut huge = conf;
    huge["encrypted_body"] = json!("A".repeat(MAX_ENCRYPTED_BODY / 3 * 4 + 8));
    assert_eq!(opened(&huge).unwrap_err(), CxError::TooLarge);
}

#[test]
fn low_order_keys_are_refused() {
    // The all-zero point makes the shared secret zero: anyone could compute it.
    let mut bad_key = node_key(&node());
    bad_key.key = URL_SAFE_NO_PAD.encode([0u8; 32]);
    let err = seal(&bad_key, TASK, CHAT, &payload(), [9; 32], [5; 12]).unwrap_err();
    assert_eq!(err, CxError::InvalidKey);
    assert_eq!(err.error_code(), ErrorCode::E049CxKeyInvalid);

    let mut conf = sealed().conf;
    conf["kem_ciphertext"] = json!(URL_SAFE_NO_PAD.encode([0u8; 32]));
    assert_eq!(opened(&conf).unwrap_err(), CxError::Decrypt);

    let mut wrong_alg = node_key(&node());
    wrong_alg.algorithm = "P-256".into();
    let err = seal(&wrong_alg, TASK, CHAT, &payload(), [9; 32], [5; 12]);
    assert_eq!(err.unwrap_err(), CxError::InvalidKey);
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
        "[A-Za-z0-9_+/=-]{0,60}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 7] = [
    "version",
    "recipient_key_id",
    "kem_ciphertext",
    "encrypted_body",
    "nonce",
    "aad",
    "plaintext_size",
];

proptest! {
    #[test]
    fn open_never_panics_on_arbitrary_json(conf in arb_json()) {
        let _ = opened(&conf);
        let _ = open_response(&sealed().response_key, TASK, &conf);
    }

    #[test]
    fn open_never_panics_when_one_field_is_replaced(
        field in prop::sample::select(FIELDS.to_vec()),
        value in arb_json(),
    ) {
        let mut conf = sealed().conf;
        let original = conf[field].clone();
        conf[field] = value.clone();
        let result = opened(&conf);
        // Only an equal value, or an absent-like aad/plaintext_size, may still open.
        if result.is_ok() {
            let lenient = matches!(field, "aad" | "plaintext_size") && value.is_null();
            prop_assert!(value == original || lenient || field == "aad", "{field}: {value}");
        }
    }
}
