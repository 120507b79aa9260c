//! Dispatch route tickets and consumer tokens: the spec's v1 vectors, round trips, tampering,
//! the consumer-token grace window, and no panic on any input.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use iicp_proto::tokens::{
    sign_consumer_token, sign_dispatch_ticket, verify_consumer_token, verify_dispatch_ticket,
    verifying_key_from_hex, verifying_key_hex, ConsumerTokenClaims, DispatchTicketClaims,
    TicketExpectation, TokenError, CONSUMER_TOKEN_DOMAIN, DISPATCH_TICKET_DOMAIN, MAX_TOKEN_LEN,
};
use proptest::prelude::*;
use serde_json::{json, Value};

const CHAT: &str = "urn:iicp:intent:llm:chat:v1";
const EMBED: &str = "urn:iicp:intent:llm:embedding:v1";
const ISSUER: &str = "https://directory.example.test";

fn fixture() -> Value {
    let path = format!(
        "{}/tests/fixtures/dispatch-route-ticket-v1.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn ticket_claims() -> DispatchTicketClaims {
    DispatchTicketClaims::new(
        ISSUER,
        "node-00000001",
        CHAT,
        [0xab; 12],
        1_700_000_000,
        120,
    )
}

fn consumer_claims() -> ConsumerTokenClaims {
    ConsumerTokenClaims::new(ISSUER, "caller-node", "target-node", CHAT, 1_700_000_000)
}

fn expect<'a>(node_id: &'a str, intent: &'a str) -> TicketExpectation<'a> {
    TicketExpectation {
        issuer: ISSUER,
        node_id,
        intent,
    }
}

/// Builds a token over arbitrary payload bytes, to reach the checks behind the signature.
fn raw_token(key: &SigningKey, domain: &[u8], payload_json: &[u8]) -> String {
    let payload = URL_SAFE_NO_PAD.encode(payload_json);
    let mut message = domain.to_vec();
    message.extend_from_slice(payload.as_bytes());
    format!("{payload}.{}", hex::encode(key.sign(&message).to_bytes()))
}

#[test]
fn fixture_vectors_are_judged_as_the_fixture_says() {
    let fx = fixture();
    let key = verifying_key_from_hex(fx["public_key_hex"].as_str().unwrap()).unwrap();
    assert_eq!(
        fx["domain"].as_str().unwrap().as_bytes(),
        DISPATCH_TICKET_DOMAIN
    );
    let valid = fx["valid"]["token"].as_str().unwrap();
    let vectors = fx["validation_vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 8);
    for case in vectors {
        let name = case["name"].as_str().unwrap();
        let token = match case["token"].as_str().unwrap() {
            "valid" => valid.to_owned(),
            "valid+0" => format!("{valid}0"),
            "wrong_audience" => fx["wrong_audience"]["token"].as_str().unwrap().to_owned(),
            literal => literal.to_owned(),
        };
        let expectation = TicketExpectation {
            issuer: case["issuer"].as_str().unwrap(),
            node_id: case["node_id"].as_str().unwrap(),
            intent: case["intent"].as_str().unwrap(),
        };
        let now = case["now_s"].as_u64().unwrap();
        let result = verify_dispatch_ticket(&key, &token, &expectation, now);
        let wanted = match name {
            "valid" => Ok(()),
            "malformed_token" | "bad_signature" => Err(TokenError::Malformed),
            "expired" => Err(TokenError::Expired),
            "wrong_issuer" => Err(TokenError::WrongIssuer),
            "wrong_audience" => Err(TokenError::WrongAudience),
            "wrong_node" => Err(TokenError::WrongNode),
            "wrong_intent" => Err(TokenError::WrongIntent),
            other => panic!("unknown vector {other}"),
        };
        assert_eq!(
            result.as_ref().map(|_| ()).map_err(|e| *e),
            wanted,
            "{name}"
        );
        assert_eq!(case["expected"] == "valid", result.is_ok(), "{name}");
    }
}

#[test]
fn fixture_claims_decode_exactly() {
    let fx = fixture();
    let key = verifying_key_from_hex(fx["public_key_hex"].as_str().unwrap()).unwrap();
    let token = fx["valid"]["token"].as_str().unwrap();
    let claims =
        verify_dispatch_ticket(&key, token, &expect("node-00000001", CHAT), 1_800_000_000).unwrap();
    let wanted: DispatchTicketClaims =
        serde_json::from_value(fx["valid"]["claims"].clone()).unwrap();
    assert_eq!(claims, wanted);
    assert_eq!(claims.policy_manifest_sha256, None);
}

#[test]
fn signing_writes_the_fixture_payload_byte_for_byte() {
    // Same claims, so the same unpadded compact JSON in the same field order.
    let fx = fixture();
    let claims: DispatchTicketClaims =
        serde_json::from_value(fx["valid"]["claims"].clone()).unwrap();
    let ours = sign_dispatch_ticket(&signing_key(), &claims);
    let theirs = fx["valid"]["token"].as_str().unwrap();
    assert_eq!(
        ours.split_once('.').unwrap().0,
        theirs.split_once('.').unwrap().0
    );
}

#[test]
fn a_bad_signature_is_reported_before_any_claim() {
    // The fixture's wrong-audience ticket with a zeroed signature: the claim is never read.
    let fx = fixture();
    let key = verifying_key_from_hex(fx["public_key_hex"].as_str().unwrap()).unwrap();
    let token = fx["wrong_audience"]["token"].as_str().unwrap();
    let forged = format!("{}.{}", token.split_once('.').unwrap().0, "00".repeat(64));
    let result = verify_dispatch_ticket(&key, &forged, &expect("node-00000001", CHAT), 0);
    assert_eq!(result, Err(TokenError::BadSignature));
}

#[test]
fn dispatch_ticket_round_trips() {
    let key = signing_key();
    let mut claims = ticket_claims();
    claims.policy_manifest_sha256 = Some("ab".repeat(32));
    let ticket = sign_dispatch_ticket(&key, &claims);
    assert_eq!(ticket.split_once('.').unwrap().1.len(), 128);
    assert!(!ticket.contains('='));
    assert_eq!(claims.jti, "ab".repeat(12));
    assert_eq!(claims.exp, 1_700_000_120);
    let got = verify_dispatch_ticket(
        &key.verifying_key(),
        &ticket,
        &expect("node-00000001", CHAT),
        1_700_000_119,
    );
    assert_eq!(got, Ok(claims.clone()));
    let late = verify_dispatch_ticket(
        &key.verifying_key(),
        &ticket,
        &expect("node-00000001", CHAT),
        claims.exp,
    );
    assert_eq!(late, Err(TokenError::Expired));
}

#[test]
fn consumer_token_round_trips() {
    let key = signing_key();
    let claims = consumer_claims();
    assert_eq!(claims.exp, claims.iat + 300);
    let token = sign_consumer_token(&key, &claims);
    let got = verify_consumer_token(
        &key.verifying_key(),
        &token,
        "target-node",
        CHAT,
        claims.iat,
    );
    assert_eq!(got, Ok(claims));
}

#[test]
fn a_token_never_verifies_as_the_other_kind() {
    let key = signing_key();
    let vk = key.verifying_key();
    let ticket = sign_dispatch_ticket(&key, &ticket_claims());
    let token = sign_consumer_token(&key, &consumer_claims());
    let now = 1_700_000_000;
    assert_eq!(
        verify_consumer_token(&vk, &ticket, "node-00000001", CHAT, now),
        Err(TokenError::BadSignature)
    );
    let exp = expect("target-node", CHAT);
    assert_eq!(
        verify_dispatch_ticket(&vk, &token, &exp, now),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn another_key_is_refused() {
    let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
    let ticket = sign_dispatch_ticket(&signing_key(), &ticket_claims());
    let result = verify_dispatch_ticket(&other, &ticket, &expect("node-00000001", CHAT), 0);
    assert_eq!(result, Err(TokenError::BadSignature));
}

/// Every single-character change to a valid token, in both halves, breaks the signature.
fn assert_every_byte_is_protected(token: &str, verify: impl Fn(&str) -> Result<(), TokenError>) {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const HEX: &[u8] = b"0123456789abcdef";
    assert_eq!(verify(token), Ok(()));
    let dot = token.find('.').unwrap();
    for i in 0..token.len() {
        if i == dot {
            continue;
        }
        let alphabet = if i < dot { B64 } else { HEX };
        let at = alphabet
            .iter()
            .position(|&c| c == token.as_bytes()[i])
            .unwrap();
        let mut bytes = token.as_bytes().to_vec();
        bytes[i] = alphabet[(at + 1) % alphabet.len()];
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(verify(&tampered), Err(TokenError::BadSignature), "byte {i}");
    }
}

#[test]
fn tampering_any_byte_of_a_ticket_fails() {
    let key = signing_key();
    let vk = key.verifying_key();
    let ticket = sign_dispatch_ticket(&key, &ticket_claims());
    assert_every_byte_is_protected(&ticket, |t| {
        verify_dispatch_ticket(&vk, t, &expect("node-00000001", CHAT), 1_700_000_000).map(|_| ())
    });
}

#[test]
fn tampering_any_byte_of_a_consumer_token_fails() {
    let key = signing_key();
    let vk = key.verifying_key();
    let token = sign_consumer_token(&key, &consumer_claims());
    assert_every_byte_is_protected(&token, |t| {
        verify_consumer_token(&vk, t, "target-node", CHAT, 1_700_000_000).map(|_| ())
    });
}

#[test]
fn tampering_the_fixture_ticket_fails() {
    let fx = fixture();
    let vk = verifying_key_from_hex(fx["public_key_hex"].as_str().unwrap()).unwrap();
    let token = fx["valid"]["token"].as_str().unwrap();
    assert_every_byte_is_protected(token, |t| {
        verify_dispatch_ticket(&vk, t, &expect("node-00000001", CHAT), 1_800_000_000).map(|_| ())
    });
}

#[test]
fn consumer_token_allows_ten_seconds_of_grace() {
    let key = signing_key();
    let claims = consumer_claims();
    let token = sign_consumer_token(&key, &claims);
    let at = |now| verify_consumer_token(&key.verifying_key(), &token, "target-node", CHAT, now);
    assert!(at(claims.exp).is_ok());
    assert!(at(claims.exp + 10).is_ok());
    assert_eq!(at(claims.exp + 11), Err(TokenError::Expired));
}

#[test]
fn consumer_token_checks_audience_and_intent() {
    let key = signing_key();
    let vk = key.verifying_key();
    let now = 1_700_000_000;
    let token = sign_consumer_token(&key, &consumer_claims());
    assert_eq!(
        verify_consumer_token(&vk, &token, "caller-node", CHAT, now),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        verify_consumer_token(&vk, &token, "target-node", EMBED, now),
        Err(TokenError::WrongIntent)
    );
    // Exact, case-sensitive intent match.
    let upper = CHAT.to_uppercase();
    assert_eq!(
        verify_consumer_token(&vk, &token, "target-node", &upper, now),
        Err(TokenError::WrongIntent)
    );

    let any = ConsumerTokenClaims::new(ISSUER, "caller-node", "target-node", "*", now);
    let any = sign_consumer_token(&key, &any);
    for intent in [CHAT, EMBED, "urn:iicp:intent:x.vendor:thing:v9"] {
        assert!(verify_consumer_token(&vk, &any, "target-node", intent, now).is_ok());
    }
    assert_eq!(
        verify_consumer_token(&vk, &any, "someone-else", CHAT, now),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn signed_claims_of_the_wrong_shape_are_refused() {
    let key = signing_key();
    let vk = key.verifying_key();
    let exp = expect("node-00000001", CHAT);
    let mut good = serde_json::to_value(ticket_claims()).unwrap();
    let check = |payload: &Value| {
        let token = raw_token(&key, DISPATCH_TICKET_DOMAIN, payload.to_string().as_bytes());
        verify_dispatch_ticket(&vk, &token, &exp, 1_700_000_000)
    };
    assert!(check(&good).is_ok());

    let cases = [
        ("v", json!(2), TokenError::WrongVersion),
        ("v", json!("1"), TokenError::WrongVersion),
        ("typ", json!("consumer-token"), TokenError::WrongType),
        (
            "aud",
            json!("iicp.directory.wrong-audience"),
            TokenError::WrongAudience,
        ),
        ("exp", json!(4_102_444_800.5), TokenError::Malformed),
        ("exp", json!("4102444800"), TokenError::Malformed),
        ("iat", json!(-1), TokenError::Malformed),
        ("iat", Value::Null, TokenError::Malformed),
        ("node_id", json!(1), TokenError::Malformed),
    ];
    for (field, value, wanted) in cases {
        let mut bad = good.clone();
        bad[field] = value.clone();
        assert_eq!(check(&bad), Err(wanted), "{field} = {value}");
    }
    good.as_object_mut().unwrap().remove("jti");
    assert_eq!(check(&good), Err(TokenError::Malformed));
    // A JSON array carrying the claims in order is not a claims object.
    let as_array = json!([
        1,
        "dispatch-route-ticket",
        ISSUER,
        "iicp.directory.dispatch",
        "ab",
        "node-00000001",
        CHAT,
        1,
        4_102_444_800u64
    ]);
    assert_eq!(check(&as_array), Err(TokenError::Malformed));
    // Unknown claims are ignored, so a later minor revision still verifies.
    let mut extra = serde_json::to_value(ticket_claims()).unwrap();
    extra["future_claim"] = json!(true);
    assert!(check(&extra).is_ok());

    let not_json = raw_token(&key, DISPATCH_TICKET_DOMAIN, b"\xff not json");
    assert_eq!(
        verify_dispatch_ticket(&vk, &not_json, &exp, 0),
        Err(TokenError::Malformed)
    );
}

#[test]
fn structurally_broken_tokens_are_malformed() {
    let key = signing_key();
    let vk = key.verifying_key();
    let ticket = sign_dispatch_ticket(&key, &ticket_claims());
    let (payload, sig) = ticket.split_once('.').unwrap();
    let exp = expect("node-00000001", CHAT);
    let long = format!("{}.{sig}", "A".repeat(MAX_TOKEN_LEN));
    for bad in [
        String::new(),
        ".".to_owned(),
        payload.to_owned(),
        format!(".{sig}"),
        format!("{payload}."),
        format!("{payload}.{}", &sig[..126]),
        format!("{payload}.{}", "zz".repeat(64)),
        format!("{payload}.{sig}.{sig}"),
        long,
    ] {
        assert_eq!(
            verify_dispatch_ticket(&vk, &bad, &exp, 0),
            Err(TokenError::Malformed),
            "{bad:.40}"
        );
    }
}

#[test]
fn keys_round_trip_through_hex() {
    let fx = fixture();
    let text = fx["public_key_hex"].as_str().unwrap();
    let key = verifying_key_from_hex(text).unwrap();
    assert_eq!(verifying_key_hex(&key), text);
    let ours: VerifyingKey = signing_key().verifying_key();
    assert_eq!(verifying_key_from_hex(&verifying_key_hex(&ours)), Ok(ours));
    for bad in [
        "",
        "00",
        &text[..62],
        &format!("{text}00"),
        &"zz".repeat(32),
    ] {
        assert_eq!(
            verifying_key_from_hex(bad),
            Err(TokenError::InvalidKey),
            "{bad}"
        );
    }
}

#[test]
fn errors_do_not_echo_token_content() {
    let key = signing_key();
    let vk = key.verifying_key();
    let ticket = sign_dispatch_ticket(&key, &ticket_claims());
    let err = verify_dispatch_ticket(&vk, &ticket, &expect("node-other", CHAT), 0).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains("node-00000001") && !message.contains(ISSUER));
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let vk = signing_key().verifying_key();
        let _ = verify_dispatch_ticket(&vk, &text, &expect("n", CHAT), 0);
        let _ = verify_consumer_token(&vk, &text, "n", CHAT, u64::MAX);
        let _ = verifying_key_from_hex(&text);
    }

    #[test]
    fn token_shaped_text_never_panics(
        payload in "[A-Za-z0-9_=-]{0,300}",
        sig in "[0-9a-fA-F]{120,136}",
    ) {
        let vk = signing_key().verifying_key();
        let token = format!("{payload}.{sig}");
        prop_assert!(verify_dispatch_ticket(&vk, &token, &expect("n", CHAT), 0).is_err());
        prop_assert!(verify_consumer_token(&vk, &token, "n", CHAT, 0).is_err());
    }

}

proptest! {
    // Each case signs in a debug build (milliseconds apiece), so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signed_arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let key = signing_key();
        let vk = key.verifying_key();
        let ticket = raw_token(&key, DISPATCH_TICKET_DOMAIN, &bytes);
        let _ = verify_dispatch_ticket(&vk, &ticket, &expect("n", CHAT), u64::MAX);
        let token = raw_token(&key, CONSUMER_TOKEN_DOMAIN, &bytes);
        let _ = verify_consumer_token(&vk, &token, "n", CHAT, u64::MAX);
    }

    #[test]
    fn consumer_tokens_round_trip(
        caller in "[a-z0-9-]{1,40}",
        target in "[a-z0-9-]{1,40}",
        iat in 0u64..u64::MAX / 2,
    ) {
        let key = signing_key();
        let claims = ConsumerTokenClaims::new(ISSUER, &caller, &target, CHAT, iat);
        let token = sign_consumer_token(&key, &claims);
        let got = verify_consumer_token(&key.verifying_key(), &token, &target, CHAT, iat);
        prop_assert_eq!(got, Ok(claims));
    }
}
