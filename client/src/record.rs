//! Records as the application sends and receives them. Bytes are `bytes::Bytes`: a consumed
//! record's key and value are slices of the fetched batch (no copy).

use bytes::Bytes;

/// A record to produce. `partition: None` lets the partitioner choose (key hash, or sticky for
/// keyless records).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic to send to.
    pub topic: String,
    /// Target partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// Key; picks the partition when `partition` is `None`.
    pub key: Option<Bytes>,
    /// Value; `None` sends a null value.
    pub value: Option<Bytes>,
    /// Headers as `(key, value)` pairs; a `None` value is a null header.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// Milliseconds since the Unix epoch; `None` = now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value for `topic`.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition instead of letting the partitioner choose.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header with a value.
    pub fn header(mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch (default: when it is enqueued).
    pub fn timestamp_ms(mut self, ts: i64) -> Self {
        self.timestamp_ms = Some(ts);
        self
    }
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Partition the record was written to.
    pub partition: i32,
    /// Offset of the record in its partition; -1 when unknown (`Acks::None`).
    pub offset: i64,
    /// The record's timestamp as sent, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic the record was read from.
    pub topic: std::sync::Arc<str>,
    /// Partition the record was read from.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// The record's timestamp, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key, if the record has one.
    pub key: Option<Bytes>,
    /// Value; `None` for a null value.
    pub value: Option<Bytes>,
    /// Headers as `(key, value)` pairs; a `None` value is a null header.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

impl ConsumerRecord {
    /// The value of the first header named `name` (`None`: absent or null).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.as_ref() == name.as_bytes())
            .and_then(|(_, v)| v.as_deref())
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
