//! Field-precise validation: every check reports a [`Problem`] with the JSON path of the field,
//! the spec code and a message, and checking goes on so one pass reports every problem.
//!
//! Validators walk a `serde_json::Value` instead of failing inside serde, because serde stops at
//! the first error and cannot say which field broke a range or a grammar rule. Typed structs are
//! deserialized only after a clean pass, so their serde derive never sees an input the
//! validators did not approve.

use crate::error::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// One thing wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON path of the field, e.g. `$.constraints.timeout_ms` or `$.capabilities[0].intent`.
    pub path: String,
    /// The catalogue code this problem is reported with.
    #[serde(serialize_with = "code_str")]
    pub code: ErrorCode,
    pub message: String,
}

fn code_str<S: serde::Serializer>(code: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} [{}]", self.path, self.message, self.code)
    }
}

/// Every problem one validation pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn new() -> Self {
        Problems::default()
    }

    pub fn push(&mut self, path: impl Into<String>, code: ErrorCode, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            code,
            message: message.into(),
        });
    }

    /// Shorthand for a `validation_error` problem.
    pub fn invalid(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(path, ErrorCode::ValidationError, message);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `Ok(())` when nothing was found.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The error envelope: the first problem's code and message, and every problem under
    /// `problems` so a caller can fix them all at once.
    pub fn to_error_body(&self) -> ErrorBody {
        let Some(first) = self.0.first() else {
            return ErrorCode::ValidationError.with_message("invalid request");
        };
        let message = if self.0.len() == 1 {
            format!("{}: {}", first.path, first.message)
        } else {
            format!(
                "{}: {} (and {} more)",
                first.path,
                first.message,
                self.0.len() - 1
            )
        };
        let list = serde_json::to_value(&self.0).unwrap_or(Value::Null);
        first.code.with_message(message).with("problems", list)
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Why a body was refused: it was not JSON at all, or it was JSON with problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The bytes are not JSON; `line` and `column` are 1-based and point where parsing stopped.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    Invalid(Problems),
}

impl Rejection {
    pub fn to_error_body(&self) -> ErrorBody {
        match self {
            Rejection::Syntax {
                line,
                column,
                message,
            } => ErrorCode::BadRequest
                .with_message(format!(
                    "body is not valid JSON: {message} at line {line} column {column}"
                ))
                .with("line", *line)
                .with("column", *column),
            Rejection::Invalid(problems) => problems.to_error_body(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_error_body())
    }
}

impl std::error::Error for Rejection {}

/// Parses bytes as JSON, reporting where the syntax broke.
pub fn parse_json(bytes: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message ends with " at line L column C"; keep only the reason.
        let full = e.to_string();
        let message = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(reason, _)| reason)
            .to_owned();
        Rejection::Syntax {
            line: e.line(),
            column: e.column(),
            message,
        }
    })
}

/// Runs a validator, then deserializes the approved value into its typed form.
pub(crate) fn validated<T: DeserializeOwned>(
    value: Value,
    check: impl FnOnce(&Value, &mut Problems),
) -> Result<T, Problems> {
    let mut problems = Problems::new();
    check(&value, &mut problems);
    problems.into_result()?;
    typed(value)
}

/// The typed form of a value a validator approved.
pub(crate) fn typed<T: DeserializeOwned>(value: Value) -> Result<T, Problems> {
    serde_json::from_value(value).map_err(|e| {
        // Only reachable if a validator lets through what the typed model refuses.
        let mut p = Problems::new();
        p.invalid("$", e.to_string());
        p
    })
}

// ---- small checkers used by the envelope validators ----

pub(crate) fn key_path(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

pub(crate) fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The value of `key`, treating an explicit `null` as absent (lenient on input).
pub(crate) fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

pub(crate) fn object<'a>(
    v: &'a Value,
    path: &str,
    p: &mut Problems,
) -> Option<&'a Map<String, Value>> {
    let obj = v.as_object();
    if obj.is_none() {
        p.invalid(path, format!("must be an object, found {}", kind(v)));
    }
    obj
}

pub(crate) fn required<'a>(
    obj: &'a Map<String, Value>,
    path: &str,
    key: &str,
    p: &mut Problems,
) -> Option<&'a Value> {
    let v = get(obj, key);
    if v.is_none() {
        p.invalid(key_path(path, key), "is required");
    }
    v
}

pub(crate) fn string<'a>(v: &'a Value, path: &str, p: &mut Problems) -> Option<&'a str> {
    let s = v.as_str();
    if s.is_none() {
        p.invalid(path, format!("must be a string, found {}", kind(v)));
    }
    s
}

/// A string of 1..=max characters.
pub(crate) fn bounded_string<'a>(
    v: &'a Value,
    path: &str,
    max: usize,
    p: &mut Problems,
) -> Option<&'a str> {
    let s = string(v, path, p)?;
    if s.is_empty() {
        p.invalid(path, "must not be empty");
        return None;
    }
    if s.chars().count() > max {
        p.invalid(path, format!("must be at most {max} characters"));
        return None;
    }
    Some(s)
}

pub(crate) fn integer(v: &Value, path: &str, min: i64, max: i64, p: &mut Problems) -> Option<i64> {
    // Integral floats such as 5000.0 are refused too: the typed model reads integers.
    let Some(n) = v.as_i64() else {
        p.invalid(path, format!("must be an integer, found {}", kind(v)));
        return None;
    };
    if n < min || n > max {
        p.invalid(path, format!("must be between {min} and {max}, found {n}"));
        return None;
    }
    Some(n)
}

pub(crate) fn number(v: &Value, path: &str, min: f64, max: f64, p: &mut Problems) -> Option<f64> {
    let Some(n) = v.as_f64() else {
        p.invalid(path, format!("must be a number, found {}", kind(v)));
        return None;
    };
    if !(min..=max).contains(&n) {
        p.invalid(path, format!("must be between {min} and {max}, found {n}"));
        return None;
    }
    Some(n)
}

pub(crate) fn boolean(v: &Value, path: &str, p: &mut Problems) -> Option<bool> {
    let b = v.as_bool();
    if b.is_none() {
        p.invalid(path, format!("must be true or false, found {}", kind(v)));
    }
    b
}

pub(crate) fn one_of<'a>(
    v: &'a Value,
    path: &str,
    allowed: &[&str],
    p: &mut Problems,
) -> Option<&'a str> {
    let s = string(v, path, p)?;
    if !allowed.contains(&s) {
        p.invalid(path, format!("must be one of {}", allowed.join(", ")));
        return None;
    }
    Some(s)
}

pub(crate) fn array<'a>(v: &'a Value, path: &str, p: &mut Problems) -> Option<&'a Vec<Value>> {
    let a = v.as_array();
    if a.is_none() {
        p.invalid(path, format!("must be an array, found {}", kind(v)));
    }
    a
}

/// An array of 1..=max strings of 1..=item_max characters.
pub(crate) fn string_list(
    v: &Value,
    path: &str,
    max: usize,
    item_max: usize,
    p: &mut Problems,
) -> Option<()> {
    let items = array(v, path, p)?;
    if items.is_empty() {
        p.invalid(path, "must not be empty");
    }
    if items.len() > max {
        p.invalid(path, format!("must have at most {max} entries"));
    }
    for (i, item) in items.iter().enumerate() {
        bounded_string(item, &index_path(path, i), item_max, p);
    }
    Some(())
}

pub(crate) fn uuid_v4(v: &Value, path: &str, p: &mut Problems) -> Option<uuid::Uuid> {
    let s = string(v, path, p)?;
    match uuid::Uuid::try_parse(s) {
        Ok(id) if id.get_version_num() == 4 => Some(id),
        Ok(_) => {
            p.invalid(path, "must be a version 4 UUID");
            None
        }
        Err(_) => {
            p.invalid(path, "must be a UUID (8-4-4-4-12 hex digits)");
            None
        }
    }
}

pub(crate) fn intent(v: &Value, path: &str, p: &mut Problems) -> Option<crate::Intent> {
    let s = string(v, path, p)?;
    match crate::Intent::parse(s) {
        Ok(i) => Some(i),
        Err(e) => {
            p.push(path, e.code(), e.to_string());
            None
        }
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_point_at_line_and_column() {
        let err = parse_json(b"{\n  \"a\": 1,\n  \"b\": }").unwrap_err();
        match &err {
            Rejection::Syntax { line, column, .. } => {
                assert_eq!(*line, 3);
                assert_eq!(*column, 8);
            }
            other => panic!("unexpected {other:?}"),
        }
        let body = err.to_error_body();
        assert_eq!(body.status(), 400);
        assert!(body.error.message.contains("line 3 column 8"));
    }

    #[test]
    fn problems_render_every_problem_in_the_envelope() {
        let mut p = Problems::new();
        p.invalid("$.a", "is required");
        p.push("$.b", ErrorCode::E028InvalidField, "bad modifier");
        let body = p.to_error_body();
        assert_eq!(body.error.code, "validation_error");
        assert_eq!(body.error.message, "$.a: is required (and 1 more)");
        assert_eq!(body.error.extra["problems"][1]["code"], "IICP-E028");
        assert_eq!(body.error.extra["problems"][1]["path"], "$.b");
    }

    #[test]
    fn integer_checks_type_and_range() {
        let mut p = Problems::new();
        assert_eq!(
            integer(&serde_json::json!(5000), "$", 0, 10_000, &mut p),
            Some(5000)
        );
        assert_eq!(integer(&serde_json::json!(5.5), "$", 0, 10, &mut p), None);
        assert_eq!(integer(&serde_json::json!("5"), "$", 0, 10, &mut p), None);
        assert_eq!(integer(&serde_json::json!(11), "$", 0, 10, &mut p), None);
        assert_eq!(p.len(), 3);
        assert!(p
            .iter()
            .last()
            .unwrap()
            .message
            .contains("between 0 and 10"));
    }
}
