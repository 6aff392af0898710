//! Which partition of an internal topic coordinates a key (a group id, a transactional id):
//! Kafka's placement, so the broker routes and the client finds a coordinator alike.

/// Java's `String.hashCode` (over UTF-16 code units), which Kafka uses to place coordinators:
/// the same key lands on the same partition here as in Kafka.
pub fn java_string_hash(key: &str) -> i32 {
    key.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The partition of an internal topic of `partitions` partitions that coordinates `key`
/// (Kafka's `Utils.abs(key.hashCode()) % partitions`).
pub fn coordinator_partition(key: &str, partitions: u32) -> i32 {
    // Kafka's Utils.abs maps i32::MIN to 0 instead of overflowing.
    let hash = java_string_hash(key);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    (abs as u32 % partitions.max(1)) as i32
}
