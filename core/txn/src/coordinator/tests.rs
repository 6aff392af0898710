use super::*;

fn tp(t: &str, p: i32) -> TopicPartition {
    TopicPartition::new(t, p)
}

/// A coordinator rebuilt from `records` is the one that wrote them.
fn rebuilt(records: &[Record]) -> Coordinator {
    let mut c = Coordinator::new(Limits::default());
    for r in records {
        let (k, v) = r.encode();
        c.replay(&Record::decode(&k, v.as_deref()).unwrap());
    }
    c
}

#[test]
fn a_committed_transaction_marks_its_partitions_with_the_next_epoch() {
    let mut c = Coordinator::new(Limits::default());
    let mut log = Vec::new();
    assert_eq!(c.init("t", 60_000, 0, None), Err(TxnError::NeedsProducerId));
    let init = c.init("t", 60_000, 0, Some(7)).unwrap();
    assert_eq!((init.producer_id, init.epoch, init.markers), (7, 0, None));
    log.extend(init.records);
    log.extend(
        c.add_partitions("t", 7, 0, &[tp("a", 0), tp("b", 1)], 1)
            .unwrap(),
    );
    // Adding what is in already changes nothing.
    assert!(c
        .add_partitions("t", 7, 0, &[tp("a", 0)], 2)
        .unwrap()
        .is_empty());
    log.extend(
        c.add_offsets(
            "t",
            7,
            0,
            GroupOffsets {
                group: "g".into(),
                offsets: vec![(tp("in", 0), 10, String::new())],
            },
            3,
        )
        .unwrap(),
    );
    let end = c.end("t", 7, 0, true, 4, None).unwrap();
    assert_eq!((end.producer_id, end.epoch), (7, 1));
    let m = end.markers.clone().unwrap();
    assert_eq!((m.producer_id, m.epoch, m.commit), (7, 1, true));
    assert_eq!(m.partitions, vec![tp("a", 0), tp("b", 1)]);
    assert_eq!(m.offsets.len(), 1);
    log.extend(end.records);
    // Until the markers are written, a new transaction waits; a retried end is told so.
    assert!(matches!(
        c.add_partitions("t", 7, 1, &[tp("a", 0)], 5),
        Err(TxnError::ConcurrentTransactions(_))
    ));
    assert!(matches!(
        c.end("t", 7, 0, true, 5, None),
        Err(TxnError::ConcurrentTransactions(_))
    ));
    // A load in between resumes the markers.
    assert_eq!(rebuilt(&log).preparing(), vec![m]);
    log.extend(c.complete("t", 6));
    assert_eq!(c.get("t").unwrap().status, Status::CompleteCommit);
    // The retried end is answered as the first; the other decision is refused.
    let again = c.end("t", 7, 0, true, 7, None).unwrap();
    assert_eq!(
        (again.producer_id, again.epoch, again.markers),
        (7, 1, None)
    );
    assert!(matches!(
        c.end("t", 7, 0, false, 7, None),
        Err(TxnError::InvalidTxnState { .. })
    ));
    // A delayed add of the ended transaction is refused: its epoch ended.
    assert!(c.add_partitions("t", 7, 0, &[tp("c", 0)], 8).is_err());
    assert!(rebuilt(&log).preparing().is_empty());
    assert_eq!(rebuilt(&log).get("t"), c.get("t"));
}

#[test]
fn a_new_instance_fences_the_old_and_aborts_its_open_transaction() {
    let mut c = Coordinator::new(Limits::default());
    c.init("t", 60_000, 0, Some(1)).unwrap();
    c.add_partitions("t", 1, 0, &[tp("a", 0)], 1).unwrap();
    let init = c.init("t", 60_000, 2, None).unwrap();
    assert_eq!((init.producer_id, init.epoch), (1, 1));
    let m = init.markers.unwrap();
    assert_eq!(
        (m.epoch, m.commit, m.partitions.clone()),
        (1, false, vec![tp("a", 0)])
    );
    // The zombie: fenced on every call.
    assert!(matches!(
        c.end("t", 1, 0, true, 3, None),
        Err(TxnError::ProducerFenced {
            got: 0,
            current: 1,
            ..
        })
    ));
    // The new instance waits for the abort to complete.
    assert!(matches!(
        c.add_partitions("t", 1, 1, &[tp("a", 0)], 3),
        Err(TxnError::ConcurrentTransactions(_))
    ));
    c.complete("t", 4);
    assert!(matches!(
        c.add_partitions("t", 1, 0, &[tp("a", 0)], 5),
        Err(TxnError::ProducerFenced { .. })
    ));
    assert_eq!(
        c.add_partitions("t", 1, 1, &[tp("a", 0)], 5).unwrap().len(),
        1
    );
    // Unknown ids and other producer ids are refused.
    assert!(matches!(
        c.add_partitions("u", 1, 1, &[tp("a", 0)], 5),
        Err(TxnError::InvalidProducerIdMapping(_))
    ));
    assert!(matches!(
        c.add_partitions("t", 2, 1, &[tp("a", 0)], 5),
        Err(TxnError::InvalidProducerIdMapping(_))
    ));
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_told_why() {
    let mut c = Coordinator::new(Limits::default());
    c.init("t", 1_000, 0, Some(3)).unwrap();
    c.add_partitions("t", 3, 0, &[tp("a", 0)], 100).unwrap();
    assert_eq!(c.tick(1_100).1, Vec::new());
    let (records, markers) = c.tick(1_101);
    assert_eq!(records.len(), 1);
    assert_eq!((markers[0].epoch, markers[0].commit), (1, false));
    c.complete("t", 1_102);
    assert!(matches!(
        c.end("t", 3, 0, true, 1_200, None),
        Err(TxnError::TransactionAborted(_))
    ));
    assert!(matches!(
        c.add_partitions("t", 3, 0, &[tp("a", 0)], 1_200),
        Err(TxnError::TransactionAborted(_))
    ));
    // The producer aborts on its side and carries on with the new epoch.
    let end = c.end("t", 3, 0, false, 1_200, None).unwrap();
    assert_eq!((end.producer_id, end.epoch), (3, 1));
    assert!(c.add_partitions("t", 3, 1, &[tp("a", 0)], 1_300).is_ok());
}

#[test]
fn exhausted_epochs_move_the_producer_to_a_fresh_id() {
    let mut c = Coordinator::new(Limits::default());
    c.init("t", 60_000, 0, Some(1)).unwrap();
    // Walk the epoch to the last one a producer may hold.
    let mut epoch = 0;
    while epoch < LAST_PRODUCER_EPOCH {
        c.add_partitions("t", 1, epoch, &[tp("a", 0)], 1).unwrap();
        let end = c.end("t", 1, epoch, true, 1, None).unwrap();
        c.complete("t", 1);
        epoch = end.epoch;
    }
    c.add_partitions("t", 1, epoch, &[tp("a", 0)], 1).unwrap();
    assert_eq!(
        c.end("t", 1, epoch, true, 1, None),
        Err(TxnError::NeedsProducerId)
    );
    let end = c.end("t", 1, epoch, true, 1, Some(9)).unwrap();
    assert_eq!((end.producer_id, end.epoch), (9, 0));
    assert_eq!(end.markers.unwrap().producer_id, 1);
}

#[test]
fn idle_ids_expire_and_limits_hold() {
    let mut c = Coordinator::new(Limits {
        max_ids: 1,
        max_partitions: 2,
        id_expiration_ms: 10,
        ..Limits::default()
    });
    c.init("t", 60_000, 0, Some(1)).unwrap();
    assert!(matches!(
        c.init("u", 60_000, 0, Some(2)),
        Err(TxnError::LimitExceeded { .. })
    ));
    assert!(matches!(
        c.init("t", 0, 0, None),
        Err(TxnError::LimitExceeded { .. })
    ));
    assert!(matches!(
        c.add_partitions("t", 1, 0, &[tp("a", 0), tp("a", 1), tp("a", 2)], 1),
        Err(TxnError::LimitExceeded { .. })
    ));
    assert!(
        c.get("t").unwrap().status == Status::Empty,
        "a refused add changes nothing"
    );
    let (records, _) = c.tick(100);
    assert_eq!(records[0].value, None);
    assert!(c.is_empty());
}
