//! Consumer groups on a real `quiver serve` process (2 shards), over the wire: members join
//! through either shard (the request reaches the group's coordinator), partitions move only
//! after their owner gave them up, zombies are fenced, commits are checked against
//! ownership, and committed offsets and membership survive kill -9 and a restart.

use std::collections::BTreeSet;

use quiver_broker_api::{
    ErrorCode, Heartbeat, HeartbeatOutcome, OffsetCommit, Response, TopicPartition,
};
use quiver_client::Connection;
use quiver_schema::groups;
use quiver_schema::requests::{self, NewTopic};
use quiver_tests::node::Node;

async fn call(conn: &Connection, frame: bytes::Bytes) -> Response {
    let r = conn.request(frame).await.expect("an answer");
    groups::read_response(&r.envelope()).expect("a group response")
}

fn hb(member: &str, epoch: i32, owned: &[TopicPartition]) -> Heartbeat {
    Heartbeat {
        group: "g1".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "e2e".into(),
        member_epoch: epoch,
        rebalance_timeout_ms: 30_000,
        subscribed: Some(vec!["events".into()]),
        assignor: None,
        owned: owned.to_vec(),
    }
}

async fn beat(conn: &Connection, h: &Heartbeat) -> Result<HeartbeatOutcome, ErrorCode> {
    match call(conn, groups::heartbeat(conn.next_request_id(), h)).await {
        Response::ConsumerGroupHeartbeat(r) => r.map_err(|e| e.code),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn members_share_partitions_commits_are_fenced_and_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let c0 = node.connect(0).await;
    let c1 = node.connect(1).await;
    c0.request(requests::create_topics(
        c0.next_request_id(),
        &[NewTopic {
            name: "events",
            partitions: 6,
            replication_factor: 0,
            configs: &[],
        }],
    ))
    .await
    .expect("create topic");

    // m1 joins alone: all six partitions.
    let m1 = beat(&c0, &hb("m1", 0, &[])).await.expect("m1 joins");
    assert_eq!(m1.assignment.len(), 6);
    // m2 joins through the other shard: nothing yet, m1 still owns everything.
    let m2 = beat(&c1, &hb("m2", 0, &[])).await.expect("m2 joins");
    assert!(m2.assignment.is_empty());
    // m1 is told to give up three, then confirms; only then m2 gets them.
    let m1b = beat(&c0, &hb("m1", m1.member_epoch, &m1.assignment))
        .await
        .expect("m1 revokes");
    assert_eq!(m1b.assignment.len(), 3);
    let m1c = beat(&c0, &hb("m1", m1b.member_epoch, &m1b.assignment))
        .await
        .expect("m1 confirms");
    let m2b = beat(&c1, &hb("m2", m2.member_epoch, &[]))
        .await
        .expect("m2 gets its share");
    assert_eq!(m2b.assignment.len(), 3);
    let all: BTreeSet<_> = m1c
        .assignment
        .iter()
        .chain(&m2b.assignment)
        .cloned()
        .collect();
    assert_eq!(all.len(), 6, "disjoint and complete");

    // A zombie epoch is fenced.
    assert_eq!(
        beat(&c0, &hb("m1", m1c.member_epoch + 5, &m1c.assignment)).await,
        Err(ErrorCode::FencedMemberEpoch)
    );
    // Commits: its own partition yes, another member's no.
    let mine = m1c.assignment[0].clone();
    let theirs = m2b.assignment[0].clone();
    let commit = OffsetCommit {
        group: "g1".into(),
        member_id: "m1".into(),
        member_epoch: m1c.member_epoch,
        offsets: vec![
            (mine.clone(), 42, "meta".into()),
            (theirs.clone(), 7, String::new()),
        ],
    };
    match call(&c1, groups::offset_commit(c1.next_request_id(), &commit)).await {
        Response::OffsetCommit {
            outcome,
            partitions,
        } => {
            assert_eq!(outcome, Ok(()));
            assert_eq!(partitions[0].1, Ok(()));
            assert_eq!(
                partitions[1].1.as_ref().map_err(|e| e.code),
                Err(ErrorCode::UnassignedPartition)
            );
        }
        other => panic!("unexpected answer {other:?}"),
    }

    // kill -9, restart: the commit and the members are still there.
    let port = node.shard_addr(0).port();
    node.kill();
    let node = Node::start_on(dir.path(), 2, port);
    let c0 = node.connect(0).await;
    match call(&c0, groups::offset_fetch(c0.next_request_id(), "g1", &[])).await {
        Response::OffsetFetch(Ok(offsets)) => {
            assert_eq!(offsets.len(), 1);
            assert_eq!(offsets[0].0, mine);
            assert_eq!(
                (offsets[0].1.offset, offsets[0].1.metadata.as_str()),
                (42, "meta")
            );
        }
        other => panic!("unexpected answer {other:?}"),
    }
    match call(&c0, groups::describe_group(c0.next_request_id(), "g1")).await {
        Response::DescribeGroup(Ok(d)) => assert_eq!(d.members.len(), 2),
        other => panic!("unexpected answer {other:?}"),
    }
    // m1 carries on at its epoch after the restart.
    let again = beat(&c0, &hb("m1", m1c.member_epoch, &m1c.assignment))
        .await
        .expect("m1 resumes");
    assert_eq!(again.assignment, m1c.assignment);
}

#[tokio::test(flavor = "current_thread")]
async fn oversize_ids_and_metadata_and_unknown_groups_get_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let c = node.connect(0).await;
    c.request(requests::create_topics(
        c.next_request_id(),
        &[NewTopic {
            name: "events",
            partitions: 2,
            replication_factor: 0,
            configs: &[],
        }],
    ))
    .await
    .expect("create topic");
    // A member id above the node's bound: refused, nobody joined.
    let long_id = "m".repeat(1_000);
    assert_eq!(
        beat(&c, &hb(&long_id, 0, &[])).await,
        Err(ErrorCode::LimitExceeded)
    );
    match call(&c, groups::describe_group(c.next_request_id(), "g1")).await {
        Response::DescribeGroup(Ok(d)) => assert!(d.members.is_empty(), "{d:?}"),
        Response::DescribeGroup(Err(e)) => assert_eq!(e.code, ErrorCode::UnknownGroup),
        other => panic!("unexpected answer {other:?}"),
    }
    // Offset metadata above the bound: that partition is refused, nothing committed.
    let m = beat(&c, &hb("m1", 0, &[])).await.expect("joins");
    let m = beat(&c, &hb("m1", m.member_epoch, &m.assignment))
        .await
        .expect("owns its partitions");
    let commit = OffsetCommit {
        group: "g1".into(),
        member_id: "m1".into(),
        member_epoch: m.member_epoch,
        offsets: vec![(m.assignment[0].clone(), 5, "x".repeat(100_000))],
    };
    match call(&c, groups::offset_commit(c.next_request_id(), &commit)).await {
        Response::OffsetCommit { partitions, .. } => assert_eq!(
            partitions[0].1.as_ref().map_err(|e| e.code),
            Err(ErrorCode::LimitExceeded)
        ),
        other => panic!("unexpected answer {other:?}"),
    }
    match call(&c, groups::offset_fetch(c.next_request_id(), "g1", &[])).await {
        Response::OffsetFetch(Ok(offsets)) => assert!(offsets.is_empty(), "{offsets:?}"),
        other => panic!("unexpected answer {other:?}"),
    }
    // Unknown groups: describe and delete say so by name.
    match call(&c, groups::describe_group(c.next_request_id(), "nobody")).await {
        Response::DescribeGroup(Err(e)) => {
            assert_eq!(e.code, ErrorCode::UnknownGroup);
            assert!(e.message.contains("nobody"), "{}", e.message);
        }
        other => panic!("unexpected answer {other:?}"),
    }
    match call(
        &c,
        groups::delete_group(c.next_request_id(), "nobody", false),
    )
    .await
    {
        Response::DeleteGroup(r) => assert_eq!(r.map_err(|e| e.code), Err(ErrorCode::UnknownGroup)),
        other => panic!("unexpected answer {other:?}"),
    }
}
