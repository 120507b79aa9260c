//! Deterministic content: reply words, token counts, embeddings, ids and timestamps.

use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// Used when the prompt has no words to echo.
const VOCAB: [&str; 8] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
];

/// Dimensions of every embedding the doubles return.
pub const EMBEDDING_DIMS: usize = 8;

/// A generated reply: the full text plus where each streamed token ends.
pub(crate) struct Reply {
    pub text: String,
    /// Byte offset where each token ends in `text`; token `i` starts where `i-1` ended, so
    /// every token after the first carries its leading space, like real tokenizers.
    pub ends: Vec<usize>,
    /// The request's cap cut the reply short.
    pub truncated: bool,
}

impl Reply {
    /// `wanted` words echoed (cycled) from `prompt`, capped by `cap`.
    pub fn new(prompt: &str, wanted: usize, cap: Option<u64>) -> Reply {
        let n = match cap {
            Some(c) if (c as usize) < wanted => c as usize,
            _ => wanted,
        };
        let mut text = String::with_capacity(n * 8);
        let mut ends = Vec::with_capacity(n);
        let mut push = |w: &str| {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(w);
            ends.push(text.len());
        };
        if prompt.split_whitespace().next().is_some() {
            prompt
                .split_whitespace()
                .cycle()
                .take(n)
                .for_each(&mut push);
        } else {
            VOCAB.iter().cycle().take(n).for_each(|w| push(w));
        }
        Reply {
            text,
            ends,
            truncated: n < wanted,
        }
    }

    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let t = &self.text[start..end];
            start = end;
            t
        })
    }

    pub fn count(&self) -> usize {
        self.ends.len()
    }
}

/// Whitespace-separated words: the doubles' notion of a token.
pub(crate) fn count_words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// The text of a message `content`: a string, or the `text` of an array of parts
/// (OpenAI `{"type":"text","text":…}`, Anthropic text blocks). Images are ignored.
pub(crate) fn content_text(content: Option<&Value>) -> Cow<'_, str> {
    match content {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(parts)) => {
            let mut texts = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str));
            match (texts.next(), texts.next()) {
                (None, _) => Cow::Borrowed(""),
                (Some(one), None) => Cow::Borrowed(one),
                (Some(a), Some(b)) => {
                    let mut s = format!("{a} {b}");
                    texts.for_each(|t| {
                        s.push(' ');
                        s.push_str(t);
                    });
                    Cow::Owned(s)
                }
            }
        }
        _ => Cow::Borrowed(""),
    }
}

/// The prompt to echo (the last user message) and the prompt's token count (every message).
pub(crate) fn chat_prompt(messages: &[Value]) -> (Cow<'_, str>, usize) {
    let mut tokens = 0;
    let mut last_user = Cow::Borrowed("");
    for m in messages {
        let text = content_text(m.get("content"));
        tokens += count_words(&text);
        if m.get("role").and_then(Value::as_str) == Some("user") {
            last_user = text;
        }
    }
    (last_user, tokens)
}

/// The `max_tokens`-like cap among `keys` (first present wins); negative means "no cap".
pub(crate) fn cap(v: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| v.get(*k)).and_then(Value::as_u64)
}

/// FNV-1a, then splitmix64: stable across platforms and runs (unlike `DefaultHasher`).
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A unit-length vector derived from the text alone, so equal inputs embed equally whether
/// sent alone or in a batch.
pub fn embedding(text: &str) -> [f32; EMBEDDING_DIMS] {
    let mut state = hash(text.as_bytes());
    let mut v = [0f32; EMBEDDING_DIMS];
    for x in &mut v {
        *x = (splitmix(&mut state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    }
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// `len` characters of `alphabet` derived from `seed`: ids that look like the real ones.
pub(crate) fn id(prefix: &str, seed: u64, len: usize, alphabet: &[u8]) -> String {
    let mut state = seed;
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        let i = (splitmix(&mut state) % alphabet.len() as u64) as usize;
        s.push(char::from(alphabet[i]));
    }
    s
}

pub(crate) const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub(crate) const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now as RFC 3339 with nanoseconds, like Go's `time.RFC3339Nano` (Ollama's `created_at`).
pub(crate) fn rfc3339_now() -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// A reply body being rendered, with the end offset of every event for streaming.
#[derive(Default)]
pub(crate) struct Events {
    pub buf: Vec<u8>,
    pub ends: Vec<usize>,
}

impl Events {
    /// One SSE event: optional `event:` line, then `data: <json>` and a blank line.
    pub fn sse(&mut self, event: Option<&str>, data: &impl Serialize) {
        if let Some(name) = event {
            self.buf.extend_from_slice(b"event: ");
            self.buf.extend_from_slice(name.as_bytes());
            self.buf.push(b'\n');
        }
        self.buf.extend_from_slice(b"data: ");
        write_json(&mut self.buf, data);
        self.buf.extend_from_slice(b"\n\n");
        self.ends.push(self.buf.len());
    }

    /// A pre-rendered event (`data: [DONE]`, Anthropic's `ping`).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.ends.push(self.buf.len());
    }

    /// Ends an NDJSON line written straight into `buf`.
    pub fn end_line(&mut self) {
        self.buf.push(b'\n');
        self.ends.push(self.buf.len());
    }
}

pub(crate) fn write_json(buf: &mut Vec<u8>, data: &impl Serialize) {
    // Only derived `Serialize` types with string keys are written: this cannot fail.
    serde_json::to_writer(buf, data).expect("serializing a reply");
}

pub(crate) fn to_json(data: &impl Serialize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    write_json(&mut buf, data);
    buf
}
