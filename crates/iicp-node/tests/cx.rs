//! IICP-CX end to end: a consumer takes the node's `cx_public_key` from the directory, seals the
//! payload to it, and opens the sealed response; the node decrypts before anything else reads
//! the payload, and refuses what does not open.

mod common;

use common::*;
use iicp_proto::control::CxPublicKey;
use iicp_proto::cx::{self, Sealed};
use iicp_testkit::{BackendDouble, Flavor};
use serde_json::{json, Value};
use uuid::Uuid;

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).unwrap();
    b
}

/// A directory, a CX-enabled node registered with it, and the key the directory publishes.
async fn setup(flavor: Flavor) -> (TestDirectory, BackendDouble, TestNode, CxPublicKey) {
    let d = double(flavor).await;
    let dir = TestDirectory::start().await;
    let (node, id) = registered_node(&dir, &d, |_| {}).await;
    let record = dir.node(&id).await.expect("registered");
    let key: CxPublicKey = serde_json::from_value(record["cx_public_key"].clone())
        .unwrap_or_else(|e| panic!("cx_public_key in {record}: {e}"));
    assert_eq!(key.algorithm, "X25519");
    assert!(key.features.iter().any(|f| f == "response_encryption_v1"));
    (dir, d, node, key)
}

/// A CALL whose payload is sealed to `key`, asking for a sealed response.
fn sealed_task(key: &CxPublicKey, intent: &str, payload: &Value) -> (Value, Sealed) {
    let task_id = Uuid::new_v4();
    let sealed = cx::seal(
        key,
        &task_id.to_string(),
        intent,
        payload,
        random::<32>(),
        random::<12>(),
    )
    .unwrap();
    let task = json!({
        "task_id": task_id,
        "intent": intent,
        "iicp_conf": sealed.conf,
        "cx_response_encryption": "required",
        "constraints": {"timeout_ms": 10_000},
    });
    (task, sealed)
}

fn chat_payload(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

fn open(task: &Value, sealed: &Sealed, body: &Value) -> Value {
    let task_id = task["task_id"].as_str().unwrap();
    cx::open_response(&sealed.response_key, task_id, &body["iicp_conf_resp"])
        .unwrap_or_else(|e| panic!("the sealed response opens: {e}: {body}"))
}

async fn a_sealed_task_round_trips(flavor: Flavor) {
    let (_dir, d, node, key) = setup(flavor).await;
    let (task, sealed) = sealed_task(&key, CHAT, &chat_payload(PROMPT));
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "success");
    assert!(
        r.body["result"].is_null(),
        "the result travels sealed: {}",
        r.text
    );
    assert!(
        !r.text.contains(PROMPT),
        "no plaintext on the wire: {}",
        r.text
    );
    assert_eq!(r.body["metrics"]["tokens_used"], TOKENS);
    let result = open(&task, &sealed, &r.body);
    assert_eq!(result["choices"][0]["message"]["content"], REPLY);
    // The backend got the decrypted payload.
    let sent = d.last_body().unwrap();
    let sent_text = sent.to_string();
    assert!(sent_text.contains(PROMPT), "{sent_text}");
}

#[tokio::test]
async fn openai_a_sealed_task_round_trips() {
    a_sealed_task_round_trips(Flavor::OpenAi).await
}

#[tokio::test]
async fn ollama_a_sealed_task_round_trips() {
    a_sealed_task_round_trips(Flavor::Ollama).await
}

#[tokio::test]
async fn anthropic_a_sealed_task_round_trips() {
    a_sealed_task_round_trips(Flavor::Anthropic).await
}

#[tokio::test]
async fn a_sealed_embedding_round_trips() {
    let (_dir, _d, node, key) = setup(Flavor::OpenAi).await;
    let (task, sealed) = sealed_task(&key, EMBEDDING, &json!({"input": "alpha beta"}));
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let result = open(&task, &sealed, &r.body);
    let got: Vec<f64> = result["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let want = iicp_testkit::embedding("alpha beta");
    assert!(got
        .iter()
        .zip(want)
        .all(|(g, w)| (g - f64::from(w)).abs() < 1e-5));
}

#[tokio::test]
async fn without_response_encryption_the_result_comes_back_in_the_clear() {
    let (_dir, _d, node, key) = setup(Flavor::OpenAi).await;
    let (mut task, _) = sealed_task(&key, CHAT, &chat_payload(PROMPT));
    task.as_object_mut()
        .unwrap()
        .remove("cx_response_encryption");
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("iicp_conf_resp").is_none(), "{}", r.text);
    assert_eq!(r.body["result"]["choices"][0]["message"]["content"], REPLY);
}

#[tokio::test]
async fn a_tampered_ciphertext_is_422_e050() {
    let (_dir, d, node, key) = setup(Flavor::OpenAi).await;
    let (original, sealed) = sealed_task(&key, CHAT, &chat_payload(PROMPT));
    let mut task = original.clone();
    let body = task["iicp_conf"]["encrypted_body"].as_str().unwrap();
    let mut chars: Vec<char> = body.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    task["iicp_conf"]["encrypted_body"] = json!(chars.into_iter().collect::<String>());
    let before = d.requests();
    let r = node.task(&task).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "IICP-E050");
    assert_eq!(d.requests(), before, "nothing reached the backend");
    // The refused task never ran: sent intact under the same task_id, it is served.
    let r = node.task(&original).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        open(&original, &sealed, &r.body)["choices"][0]["message"]["content"],
        REPLY
    );

    // Sealed for another task: the AEAD binds the task_id.
    let (task_a, _) = sealed_task(&key, CHAT, &chat_payload(PROMPT));
    let mut moved = task_a.clone();
    moved["task_id"] = json!(Uuid::new_v4());
    let r = node.task(&moved).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "IICP-E050");
    node.wait_idle().await;
}

#[tokio::test]
async fn a_node_without_cx_refuses_sealed_payloads_with_e050() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::start(backend_for(&d), |c| c.cx = false).await;
    // Any well-formed X25519 key: the node holds none.
    let kp = cx::CxKeyPair::from_secret_bytes(random::<32>());
    let key = cx::advertisement(&kp, 4_000_000_000);
    let (task, _) = sealed_task(&key, CHAT, &chat_payload(PROMPT));
    let r = node.task(&task).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "IICP-E050");
}

#[tokio::test]
async fn a_sealed_payload_chooses_its_model() {
    let (_dir, d, node, key) = setup(Flavor::Ollama).await;
    let wanted = models(Flavor::Ollama).chat[1].clone();
    let mut payload = chat_payload(PROMPT);
    payload["model"] = json!(wanted);
    let (task, _) = sealed_task(&key, CHAT, &payload);
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["model_used"], wanted.as_str());
    assert_eq!(d.last_body().unwrap()["model"], wanted.as_str());

    payload["model"] = json!("gpt-9-ultra");
    let (task, _) = sealed_task(&key, CHAT, &payload);
    let r = node.task(&task).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error_code(), "IICP-E029");
}

#[tokio::test]
async fn a_sealed_cip_call_asking_for_tools_is_403() {
    let (_dir, d, node, key) = setup(Flavor::OpenAi).await;
    let mut payload = chat_payload(PROMPT);
    payload["tools"] = json!([{"type": "function", "function": {"name": "rm_rf"}}]);
    let (mut task, _) = sealed_task(&key, CHAT, &payload);
    task["constraints"]["cip"] = json!({"role": "delegate"});
    let before = d.requests();
    let r = node.task(&task).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error_code(), "tool_execution_denied");
    assert_eq!(d.requests(), before, "nothing reached the backend");
}

#[tokio::test]
async fn a_sealed_response_is_never_streamed_in_the_clear() {
    let (_dir, _d, node, key) = setup(Flavor::OpenAi).await;
    let (task, sealed) = sealed_task(&key, CHAT, &chat_payload(PROMPT));
    let r = node.stream(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !r.text.contains("world") && !r.text.contains("tests"),
        "reply words on the wire: {}",
        r.text
    );
    // Whatever the framing, the sealed envelope is there and opens to the whole reply.
    let envelope = if r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream")
    {
        let events = r.sse();
        let done = events.iter().find(|e| e.event == "done").expect("done");
        done.json()
    } else {
        r.body.clone()
    };
    assert_eq!(envelope["status"], "success");
    let result = open(&task, &sealed, &envelope);
    assert_eq!(result["choices"][0]["message"]["content"], REPLY);
}
