//! Per-topic configuration as users write it (`key=value`), validated into a [`LogConfig`].
//! Unknown keys and bad values are errors that name the key and the allowed range.

use std::collections::BTreeMap;

use quiver_storage::config::{MAX_BATCH_BYTES_LIMIT, MAX_SEGMENT_BYTES_LIMIT};
use quiver_storage::{CleanupPolicy, FlushPolicy, LogConfig};

/// Every topic config key, with its meaning (shown by `describe`).
pub const TOPIC_CONFIG_KEYS: &[(&str, &str)] = &[
    ("retention_ms", "delete segments whose newest record is older than this; -1 keeps forever (default 604800000, 7 days)"),
    ("retention_bytes", "delete the oldest segments while the partition is larger; -1 = no bound (default)"),
    ("segment_bytes", "roll to a new segment at this size (default 1073741824)"),
    ("segment_ms", "roll a segment older than this (default 604800000)"),
    ("flush_policy", "every_append (fsync each append, default) or interval"),
    ("flush_ms", "with flush_policy=interval: fsync at least this often (default 1000)"),
    ("flush_bytes", "with flush_policy=interval: fsync after this many bytes (default 1048576)"),
    ("max_message_bytes", "largest record batch accepted (default 1048576)"),
    ("cleanup_policy", "delete (retention by time and size, default), compact (keep the latest record of every key), or compact,delete"),
    ("delete_retention_ms", "with compaction: how long a tombstone (key, no value) stays after its timestamp (default 86400000, 1 day)"),
    ("min_cleanable_dirty_ratio", "with compaction: compact once this share of the sealed bytes is new (default 0.5)"),
    ("durability", "with replicas: persisted (acks=all answers once a quorum has the batch fsynced, default) or replicated (once a quorum has it written, before fsync: faster, and lost if a quorum loses power at once)"),
];

/// When a replicated partition counts an entry as held by a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once fsynced (per the flush policy's durability).
    Persisted,
    /// Once written: a quorum's memory, not yet its disks.
    Replicated,
}

impl Durability {
    fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "persisted" => Ok(Self::Persisted),
            "replicated" => Ok(Self::Replicated),
            other => Err(format!(
                "durability = {other:?} must be persisted or replicated"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Persisted => "persisted",
            Self::Replicated => "replicated",
        }
    }
}

/// The topic's durability (`persisted` unless set).
pub fn durability(configs: &BTreeMap<String, String>) -> Result<Durability, String> {
    configs
        .get("durability")
        .map_or(Ok(Durability::Persisted), |v| Durability::parse(v))
}

fn parse_i64(key: &str, value: &str) -> Result<i64, String> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("{key} = {value:?} is not an integer"))
}

fn parse_range(key: &str, value: &str, min: i64, max: i64) -> Result<u64, String> {
    let v = parse_i64(key, value)?;
    if v < min || v > max {
        return Err(format!("{key} = {v} must be within [{min}, {max}]"));
    }
    Ok(v as u64)
}

/// Applies `configs` (validated) on top of `base`.
pub fn to_log_config(
    configs: &BTreeMap<String, String>,
    base: &LogConfig,
) -> Result<LogConfig, String> {
    let mut cfg = base.clone();
    let mut flush_ms = 1000u64;
    let mut flush_bytes = 1u64 << 20;
    let mut interval = matches!(base.flush, FlushPolicy::Interval { .. });
    for (key, value) in configs {
        match key.as_str() {
            "retention_ms" => cfg.retention_ms = positive_or_none(key, value)?,
            "retention_bytes" => cfg.retention_bytes = positive_or_none(key, value)?,
            "segment_bytes" => {
                cfg.segment_bytes = parse_range(key, value, 4096, MAX_SEGMENT_BYTES_LIMIT as i64)?
            }
            "segment_ms" => cfg.segment_ms = parse_range(key, value, 1, i64::MAX)?,
            "flush_policy" => {
                interval = match value.trim() {
                    "every_append" => false,
                    "interval" => true,
                    other => {
                        return Err(format!(
                            "flush_policy = {other:?} must be every_append or interval"
                        ))
                    }
                }
            }
            "flush_ms" => flush_ms = parse_range(key, value, 1, i64::MAX)?,
            "durability" => {
                Durability::parse(value)?;
            }
            "flush_bytes" => flush_bytes = parse_range(key, value, 1, i64::MAX)?,
            "cleanup_policy" => {
                cfg.cleanup_policy = CleanupPolicy::parse(value).ok_or_else(|| {
                    format!("cleanup_policy = {value:?} must be delete, compact or compact,delete")
                })?
            }
            "delete_retention_ms" => {
                cfg.delete_retention_ms = parse_range(key, value, 0, i64::MAX)?
            }
            "min_cleanable_dirty_ratio" => {
                cfg.min_cleanable_dirty_ratio = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("{key} = {value:?} must be a number within [0, 1]"))?
            }
            "max_message_bytes" => {
                cfg.max_batch_bytes =
                    parse_range(key, value, 64, MAX_BATCH_BYTES_LIMIT as i64)? as usize;
                cfg.max_pending_bytes = cfg.max_pending_bytes.max(cfg.max_batch_bytes);
            }
            other => {
                let known: Vec<&str> = TOPIC_CONFIG_KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown topic config key {other:?}; known keys: {}",
                    known.join(", ")
                ));
            }
        }
    }
    cfg.flush = if interval {
        FlushPolicy::Interval {
            flush_ms,
            flush_bytes,
        }
    } else {
        FlushPolicy::EveryAppend
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn positive_or_none(key: &str, value: &str) -> Result<Option<u64>, String> {
    match parse_i64(key, value)? {
        -1 => Ok(None),
        v if v > 0 => Ok(Some(v as u64)),
        v => Err(format!("{key} = {v} must be positive, or -1 for no limit")),
    }
}

/// The effective value of every key for a topic of `configs` (validated into `cfg`), for
/// DescribeConfigs.
pub fn describe_topic(
    configs: &BTreeMap<String, String>,
    cfg: &LogConfig,
) -> Vec<(String, String)> {
    let mut all = describe(cfg);
    let d = durability(configs).unwrap_or(Durability::Persisted);
    all.push(("durability".into(), d.name().into()));
    all
}

/// The effective value of every log key for `cfg`.
pub fn describe(cfg: &LogConfig) -> Vec<(String, String)> {
    let opt = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let (policy, ms, bytes) = match cfg.flush {
        FlushPolicy::EveryAppend => ("every_append", 1000, 1 << 20),
        FlushPolicy::Interval {
            flush_ms,
            flush_bytes,
        } => ("interval", flush_ms, flush_bytes),
    };
    vec![
        ("retention_ms".into(), opt(cfg.retention_ms)),
        ("retention_bytes".into(), opt(cfg.retention_bytes)),
        ("segment_bytes".into(), cfg.segment_bytes.to_string()),
        ("segment_ms".into(), cfg.segment_ms.to_string()),
        ("flush_policy".into(), policy.into()),
        ("flush_ms".into(), ms.to_string()),
        ("flush_bytes".into(), bytes.to_string()),
        ("max_message_bytes".into(), cfg.max_batch_bytes.to_string()),
        ("cleanup_policy".into(), cfg.cleanup_policy.name().into()),
        (
            "delete_retention_ms".into(),
            cfg.delete_retention_ms.to_string(),
        ),
        (
            "min_cleanable_dirty_ratio".into(),
            cfg.min_cleanable_dirty_ratio.to_string(),
        ),
    ]
}

/// Kafka's topic name rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!(
            "topic name must be 1 to 249 characters, got {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} has {c:?}; use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn configs_parse_and_bad_ones_name_the_key() {
        let base = LogConfig::default();
        let cfg = to_log_config(
            &map(&[
                ("retention_ms", "-1"),
                ("segment_bytes", "1048576"),
                ("flush_policy", "interval"),
                ("flush_ms", "50"),
            ]),
            &base,
        )
        .unwrap();
        assert_eq!(cfg.retention_ms, None);
        assert_eq!(cfg.segment_bytes, 1 << 20);
        assert_eq!(
            cfg.flush,
            FlushPolicy::Interval {
                flush_ms: 50,
                flush_bytes: 1 << 20
            }
        );
        let described = describe(&cfg);
        assert!(described.contains(&("flush_ms".to_string(), "50".to_string())));
        for (bad, needle) in [
            (map(&[("retention_mss", "5")]), "retention_mss"),
            (map(&[("segment_bytes", "12")]), "segment_bytes"),
            (map(&[("retention_ms", "0")]), "retention_ms"),
            (map(&[("flush_policy", "sometimes")]), "flush_policy"),
            (map(&[("durability", "eventually")]), "durability"),
            (map(&[("max_message_bytes", "x")]), "max_message_bytes"),
        ] {
            let err = to_log_config(&bad, &base).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            validate_topic_name(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
