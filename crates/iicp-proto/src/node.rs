//! What a node tells the directory about itself: capabilities, limits and availability
//! windows (digest §2.1, §4.5), shared by REGISTER and the discover NODELIST.

use crate::validate::{self as v, Problems};
use crate::Intent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Input modalities a capability may accept.
pub const MODALITIES: &[&str] = &["text", "image", "audio", "video"];

/// One capability variant (`capabilities[]`).
///
/// Vocabulary fields the directory does not interpret (`features`, `extensions`, `hardware`, …)
/// are kept in `extra` so a directory stores and serves them unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    pub intent: Intent,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_modalities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_streaming: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Capability {
    pub fn new(intent: Intent, models: Vec<String>) -> Self {
        Capability {
            intent,
            models,
            max_tokens: None,
            input_modalities: None,
            variant_id: None,
            supports_streaming: None,
            quantization: None,
            inference_engine: None,
            context_length: None,
            extra: Map::new(),
        }
    }

    /// Declared input modalities; `["text"]` when absent.
    pub fn modalities(&self) -> Vec<&str> {
        match &self.input_modalities {
            Some(m) => m.iter().map(String::as_str).collect(),
            None => vec!["text"],
        }
    }

    pub fn accepts_modality(&self, modality: &str) -> bool {
        self.modalities().contains(&modality)
    }
}

/// `limits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_concurrent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_min: Option<u64>,
}

/// Bounds of `limits.max_concurrent`.
pub const MAX_CONCURRENT_MAX: i64 = 256;

/// A UTC time of day, minutes since midnight, written `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub fn parse(s: &str) -> Option<TimeOfDay> {
        let (h, m) = s.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let h: u16 = h.parse().ok()?;
        let m: u16 = m.parse().ok()?;
        (h < 24 && m < 60).then_some(TimeOfDay(h * 60 + m))
    }

    pub fn from_minutes(minutes: u16) -> Option<TimeOfDay> {
        (minutes < 24 * 60).then_some(TimeOfDay(minutes))
    }

    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        TimeOfDay::parse(&s).ok_or_else(|| serde::de::Error::custom("expected HH:MM"))
    }
}

/// One availability window: between `start` and `end` (UTC), the node offers `share` of its
/// capacity. A window whose end is before its start runs past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityWindow {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
    #[serde(default = "full_share")]
    pub share: f64,
}

fn full_share() -> f64 {
    1.0
}

impl AvailabilityWindow {
    pub fn contains(&self, t: TimeOfDay) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// The share of capacity offered at `t` under `windows`: 1.0 when no windows are declared,
/// the largest share among windows covering `t`, and 0.0 outside every window.
pub fn availability_share(windows: &[AvailabilityWindow], t: TimeOfDay) -> f64 {
    if windows.is_empty() {
        return 1.0;
    }
    windows
        .iter()
        .filter(|w| w.contains(t))
        .map(|w| w.share)
        .fold(0.0, f64::max)
}

pub(crate) fn check_capabilities(value: &Value, p: &mut Problems) {
    let path = "$.capabilities";
    let Some(items) = v::array(value, path, p) else {
        return;
    };
    if items.is_empty() {
        p.invalid(path, "must list at least one capability");
    }
    if items.len() > 256 {
        p.invalid(path, "must list at most 256 capabilities");
        return;
    }
    let mut variant_keys: Vec<(&str, &str)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = v::index_path(path, i);
        if items[..i].contains(item) {
            p.invalid(&path, "duplicates an earlier capability exactly");
            continue;
        }
        let Some(cap) = v::object(item, &path, p) else {
            continue;
        };
        if let Some(intent) = v::required(cap, &path, "intent", p) {
            v::intent(intent, &v::key_path(&path, "intent"), p);
        }
        if let Some(models) = v::get(cap, "models") {
            v::string_list(models, &v::key_path(&path, "models"), 1024, 256, p);
        }
        for key in ["max_tokens", "context_length", "dimensions", "batch_size"] {
            if let Some(n) = v::get(cap, key) {
                v::integer(n, &v::key_path(&path, key), 1, i64::MAX, p);
            }
        }
        for key in ["input_modalities", "output_modalities"] {
            if let Some(list) = v::get(cap, key) {
                check_modalities(list, &v::key_path(&path, key), p);
            }
        }
        if let Some(flag) = v::get(cap, "supports_streaming") {
            v::boolean(flag, &v::key_path(&path, "supports_streaming"), p);
        }
        for key in ["quantization", "inference_engine", "hardware", "version"] {
            if let Some(s) = v::get(cap, key) {
                v::bounded_string(s, &v::key_path(&path, key), 128, p);
            }
        }
        if let Some(variant) = v::get(cap, "variant_id") {
            let variant_path = v::key_path(&path, "variant_id");
            if let (Some(id), Some(intent)) = (
                v::bounded_string(variant, &variant_path, 128, p),
                v::get(cap, "intent").and_then(Value::as_str),
            ) {
                if variant_keys.contains(&(intent, id)) {
                    p.invalid(variant_path, "(intent, variant_id) must be unique");
                } else {
                    variant_keys.push((intent, id));
                }
            }
        }
    }
}

fn check_modalities(value: &Value, path: &str, p: &mut Problems) {
    let Some(items) = v::array(value, path, p) else {
        return;
    };
    if items.is_empty() {
        p.invalid(path, "must not be empty");
    }
    for (i, item) in items.iter().enumerate() {
        v::one_of(item, &v::index_path(path, i), MODALITIES, p);
    }
}

pub(crate) fn check_limits(value: &Value, p: &mut Problems) {
    let path = "$.limits";
    let Some(limits) = v::object(value, path, p) else {
        return;
    };
    if let Some(n) = v::required(limits, path, "max_concurrent", p) {
        v::integer(n, "$.limits.max_concurrent", 1, MAX_CONCURRENT_MAX, p);
    }
    if let Some(n) = v::get(limits, "tokens_per_min") {
        v::integer(n, "$.limits.tokens_per_min", 1, i64::MAX, p);
    }
}

pub(crate) fn check_availability(value: &Value, p: &mut Problems) {
    let path = "$.availability";
    let Some(items) = v::array(value, path, p) else {
        return;
    };
    if items.len() > 48 {
        p.invalid(path, "must list at most 48 windows");
        return;
    }
    for (i, item) in items.iter().enumerate() {
        let path = v::index_path(path, i);
        let Some(w) = v::object(item, &path, p) else {
            continue;
        };
        let mut bounds = [None, None];
        for (slot, key) in ["start", "end"].into_iter().enumerate() {
            let key_path = v::key_path(&path, key);
            if let Some(s) = v::required(w, &path, key, p).and_then(|s| v::string(s, &key_path, p))
            {
                bounds[slot] = TimeOfDay::parse(s);
                if bounds[slot].is_none() {
                    p.invalid(
                        key_path,
                        "must be a UTC time written HH:MM (00:00 to 23:59)",
                    );
                }
            }
        }
        if let [Some(start), Some(end)] = bounds {
            if start == end {
                p.invalid(v::key_path(&path, "end"), "must differ from start");
            }
        }
        if let Some(share) = v::get(w, "share") {
            v::number(share, &v::key_path(&path, "share"), 0.0, 1.0, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> TimeOfDay {
        TimeOfDay::parse(s).unwrap()
    }

    #[test]
    fn time_of_day_parses_only_valid_clock_times() {
        assert_eq!(at("00:00").minutes(), 0);
        assert_eq!(at("23:59").minutes(), 1439);
        for bad in ["24:00", "12:60", "1:00", "12:5", "ab:cd", "12-00", ""] {
            assert!(TimeOfDay::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(at("07:05").to_string(), "07:05");
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let night = AvailabilityWindow {
            start: at("22:00"),
            end: at("06:00"),
            share: 0.5,
        };
        assert!(night.contains(at("23:00")));
        assert!(night.contains(at("05:59")));
        assert!(!night.contains(at("06:00")));
        assert!(!night.contains(at("12:00")));
    }

    #[test]
    fn share_is_full_without_windows_and_zero_outside_them() {
        let day = AvailabilityWindow {
            start: at("08:00"),
            end: at("18:00"),
            share: 0.25,
        };
        assert_eq!(availability_share(&[], at("03:00")), 1.0);
        assert_eq!(availability_share(&[day], at("09:00")), 0.25);
        assert_eq!(availability_share(&[day], at("19:00")), 0.0);
    }

    #[test]
    fn capability_defaults_to_text() {
        let cap: Capability = serde_json::from_value(serde_json::json!({
            "intent": "urn:iicp:intent:llm:chat:v1", "models": ["m"], "hardware": "cpu"
        }))
        .unwrap();
        assert!(cap.accepts_modality("text"));
        assert!(!cap.accepts_modality("image"));
        assert_eq!(cap.extra["hardware"], "cpu");
    }
}
