//! Routing (sans-IO): which shard serves a request, from the metadata alone.
//!
//! - A data-plane request (produce, fetch, list offsets) goes to the shard owning its
//!   partitions; one naming partitions of several shards runs where it landed, and answers the
//!   partitions it does not own one by one with `NotOwner` (a shard-aware client never sends
//!   such a request).
//! - A metadata change runs on the controller shard.
//! - A coordinator key (a consumer group, a transactional id) maps to one partition of its
//!   internal topic, as Kafka places them (`abs(java_hash(key)) % partitions`), and so to the
//!   shard owning that partition: the coordinators will follow partition ownership.

use quiver_broker_api::{ApiError, ErrorCode, Request};

use crate::metadata::Metadata;

/// The shard that runs metadata changes.
pub const CONTROLLER_SHARD: usize = 0;

/// Where a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// On the shard it arrived at.
    Here,
    /// Forwarded whole to this shard.
    Shard(usize),
}

/// The shard owning `topic/partition` on a node of `shard_count` shards (a table recorded
/// with more shards than now folds onto the ones that exist).
pub fn owner(meta: &Metadata, topic: &str, partition: i32, shard_count: usize) -> Option<usize> {
    meta.shard_of(topic, partition)
        .map(|s| s % shard_count.max(1))
}

/// Where a request arrived: this node, its shard, and how many shards it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Here {
    pub node: crate::metadata::NodeId,
    pub shard: usize,
    pub shard_count: usize,
}

/// Decides where `request`, arriving `here`, runs. A coordinator key whose partition another
/// node leads is refused with `NotOwner` naming that node (the client sends it there).
pub fn route(request: &Request, meta: &Metadata, here: Here) -> Result<Route, ApiError> {
    let shard_count = here.shard_count;
    let coordinator_of = |topic: &str, key: &str| -> Result<Option<usize>, ApiError> {
        let Some((partition, shard)) = coordinator(meta, topic, key, shard_count) else {
            return Ok(None);
        };
        match meta.partition(topic, partition) {
            Some(pm) if pm.leader != here.node && !pm.replicas.is_empty() => {
                let addr = meta
                    .client_address(pm.leader, pm.shard % shard_count.max(1))
                    .unwrap_or_else(|| "an address not registered yet".into());
                Err(ApiError::new(
                    ErrorCode::NotOwner,
                    format!(
                        "the coordinator of {key:?} ({topic}/{partition}) is node {} at {addr}, not node {}; send it there (refresh metadata)",
                        pm.leader, here.node
                    ),
                ))
            }
            _ => Ok(Some(shard)),
        }
    };
    let target = if request.is_control() {
        Some(CONTROLLER_SHARD)
    } else if let Some(group) = request.group() {
        // Until the offsets topic exists, where it lands (which creates it, then forwards).
        coordinator_of(quiver_group::OFFSETS_TOPIC, group)?
    } else if let Some(id) = request.transactional_id() {
        coordinator_of(quiver_txn::TXN_TOPIC, id)?
    } else {
        data_owner(request, meta, shard_count)?
    };
    Ok(match target {
        Some(shard) if shard != here.shard => Route::Shard(shard),
        _ => Route::Here,
    })
}

/// The one shard owning every partition a data-plane request names; `None` to run where it
/// landed (no partitions, or partitions of several shards).
fn data_owner(
    request: &Request,
    meta: &Metadata,
    shard_count: usize,
) -> Result<Option<usize>, ApiError> {
    let mut found = None;
    for (topic, partition) in request.partitions() {
        match owner(meta, topic, partition, shard_count) {
            Some(o) if found.is_none_or(|f| f == o) => found = Some(o),
            Some(_) => return Ok(None),
            // ListOffsets names one partition: an unknown one fails the whole request.
            None if matches!(request, Request::ListOffsets { .. }) => {
                return Err(unknown_partition(meta, topic, partition))
            }
            None => return Ok(None),
        }
    }
    Ok(found)
}

/// The error for a partition the metadata does not know.
pub fn unknown_partition(meta: &Metadata, topic: &str, partition: i32) -> ApiError {
    let code = if meta.topics.contains_key(topic) {
        ErrorCode::UnknownPartition
    } else {
        ErrorCode::UnknownTopic
    };
    ApiError::new(
        code,
        format!("no partition {partition} of topic {topic:?} on this node; list topics with a Metadata request (quiver topic list)"),
    )
}

pub use quiver_group::coordinator_key::{coordinator_partition, java_string_hash};

/// The partition and owning shard of the coordinator for `key` in `internal_topic`; `None`
/// while that topic does not exist.
pub fn coordinator(
    meta: &Metadata,
    internal_topic: &str,
    key: &str,
    shard_count: usize,
) -> Option<(i32, usize)> {
    let partitions = meta.topics.get(internal_topic)?.partitions.len();
    let partition = coordinator_partition(key, u32::try_from(partitions).ok()?);
    owner(meta, internal_topic, partition, shard_count).map(|s| (partition, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicMeta;
    use bytes::BytesMut;
    use quiver_broker_api::{Acks, Fetch, FetchPartition, OffsetQuery, Produce, ProducePartition};

    /// Arriving at node 0's `shard` of `shard_count`.
    fn at(shard_count: usize, shard: usize) -> Here {
        Here {
            node: 0,
            shard,
            shard_count,
        }
    }

    /// Topic "t": partitions 0, 1, 2 on shards 0, 1, 0 (of 2).
    fn meta() -> Metadata {
        let mut m = Metadata::default();
        m.topics
            .insert("t".into(), TopicMeta::on_shards(0, &[0, 1, 0]));
        m
    }

    fn produce(parts: &[i32]) -> Request {
        Request::Produce(Produce {
            acks: Acks::All,
            timeout_ms: 1,
            partitions: parts
                .iter()
                .map(|p| ProducePartition {
                    topic: "t".into(),
                    partition: *p,
                    records: BytesMut::new(),
                })
                .collect(),
            transactional_id: None,
        })
    }

    #[test]
    fn data_requests_go_to_the_owner_of_their_partitions() {
        let m = meta();
        assert_eq!(route(&produce(&[1]), &m, at(2, 0)), Ok(Route::Shard(1)));
        assert_eq!(route(&produce(&[1]), &m, at(2, 1)), Ok(Route::Here));
        assert_eq!(route(&produce(&[0, 2]), &m, at(2, 1)), Ok(Route::Shard(0)));
        assert_eq!(
            route(&produce(&[0, 1]), &m, at(2, 1)),
            Ok(Route::Here),
            "partitions of two shards run where they landed"
        );
        assert_eq!(
            route(&produce(&[7]), &m, at(2, 1)),
            Ok(Route::Here),
            "an unknown partition is answered per entry"
        );
        let fetch = Request::Fetch(Fetch {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1,
            partitions: vec![FetchPartition {
                topic: "t".into(),
                partition: 1,
                offset: 0,
                max_bytes: 1,
            }],
            isolation: Default::default(),
        });
        assert_eq!(route(&fetch, &m, at(2, 0)), Ok(Route::Shard(1)));
        assert_eq!(
            route(&fetch, &m, at(1, 0)),
            Ok(Route::Here),
            "a table of 2 shards folds onto 1"
        );
    }

    #[test]
    fn control_requests_go_to_the_controller_and_unknown_offsets_fail_whole() {
        let m = meta();
        let delete = Request::DeleteTopics(vec!["t".into()]);
        assert_eq!(
            route(&delete, &m, at(2, 1)),
            Ok(Route::Shard(CONTROLLER_SHARD))
        );
        assert_eq!(route(&delete, &m, at(2, 0)), Ok(Route::Here));
        let metadata = Request::Metadata { topics: vec![] };
        assert_eq!(route(&metadata, &m, at(2, 1)), Ok(Route::Here));
        let offsets = |topic: &str, partition| Request::ListOffsets {
            topic: topic.into(),
            partition,
            query: OffsetQuery::Latest,
        };
        assert_eq!(route(&offsets("t", 1), &m, at(2, 0)), Ok(Route::Shard(1)));
        let e = route(&offsets("t", 9), &m, at(2, 0)).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownPartition);
        let e = route(&offsets("nope", 0), &m, at(2, 0)).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownTopic);
    }

    #[test]
    fn coordinators_are_placed_as_kafka_places_them() {
        // Java's own values (javac + java on this machine): "".hashCode() == 0, "a" == 97,
        // "my-group" == -1906497762, "polygenelubricants" == Integer.MIN_VALUE.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(java_string_hash("orders-service"), 23_943_117);
        assert_eq!(coordinator_partition("orders-service", 50), 23_943_117 % 50);
        assert_eq!(
            coordinator_partition("my-group", 50),
            1_906_497_762 % 50,
            "a negative hash: abs first"
        );
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(
            coordinator_partition("polygenelubricants", 16),
            0,
            "Kafka's Utils.abs(MIN_VALUE) is 0"
        );
        let mut m = meta();
        assert_eq!(coordinator(&m, "__consumer_offsets", "g", 2), None);
        m.topics.insert(
            "__consumer_offsets".into(),
            TopicMeta::on_shards(0, &[0, 1, 0, 1]),
        );
        let (p, s) = coordinator(&m, "__consumer_offsets", "g", 2).unwrap();
        assert_eq!(p, coordinator_partition("g", 4));
        assert_eq!(s, owner(&m, "__consumer_offsets", p, 2).unwrap());
    }

    #[test]
    fn a_coordinator_on_another_node_is_refused_naming_that_node() {
        use quiver_cluster::NodeMeta;
        let mut m = meta();
        let mut offsets = TopicMeta::on_shards(0, &[0, 1]);
        // Partition 1 of the offsets topic is led by node 2 (its shard 1).
        offsets.partitions[1].leader = 2;
        offsets.partitions[1].replicas = vec![2];
        m.topics.insert("__consumer_offsets".into(), offsets);
        m.nodes.insert(
            2,
            NodeMeta {
                client_addr: "10.0.0.2:7420".into(),
                internal_addr: "10.0.0.2:7420".into(),
                rack: None,
                shards: 2,
                decommissioned: false,
            },
        );
        let group_on = |p: i32| {
            (0..1000)
                .map(|i| format!("g{i}"))
                .find(|g| coordinator_partition(g, 2) == p)
                .unwrap()
        };
        let request = |g: String| Request::OffsetFetch {
            group: g,
            partitions: vec![],
        };
        assert_eq!(
            route(&request(group_on(0)), &m, at(2, 1)),
            Ok(Route::Shard(0)),
            "a local coordinator: its shard"
        );
        let e = route(&request(group_on(1)), &m, at(2, 0)).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotOwner);
        assert!(
            e.message.contains("node 2 at 10.0.0.2:7421"),
            "{}",
            e.message
        );
    }
}
