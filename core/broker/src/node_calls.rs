//! Calls between shards of different nodes: a transaction's steps where the partitions they
//! touch are led by other nodes — a partition's leader asks the transaction coordinator to
//! add it, a coordinator writes markers on the partitions' leaders and a transaction's
//! offsets at the group's coordinator (Kafka's AddPartitionsToTxn and WriteTxnMarkers between
//! brokers). A call goes over the node links as a [`NodeMessage::Call`] to the same shard
//! number of the node asked, runs there as the same-node [`TxnCall`] would, and its
//! [`NodeMessage::CallReply`] comes back to the calling shard; no answer within
//! [`NODE_CALL_TIMEOUT`] is a `Timeout` (the caller's drive retries).

use std::rc::Rc;
use std::time::Duration;

use quiver_broker_api::{ApiError, ErrorCode, OffsetCommit, TopicPartition};
use quiver_cluster::messages::{CallFailure, NodeCall, NodeMessage};
use quiver_storage::signal::oneshot;

use crate::metadata::NodeId;
use crate::shard::Shard;
use crate::txn::TxnCall;
use quiver_group::types::TxnStamp;

/// How long a call to another node may take.
pub const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn pairs(partitions: &[TopicPartition]) -> Vec<(String, i32)> {
    partitions
        .iter()
        .map(|tp| (tp.topic.clone(), tp.partition))
        .collect()
}

fn partitions(pairs: Vec<(String, i32)>) -> Vec<TopicPartition> {
    pairs
        .into_iter()
        .map(|(topic, partition)| TopicPartition::new(&topic, partition))
        .collect()
}

/// The wire form of a same-node call.
pub fn to_node_call(call: &TxnCall) -> NodeCall {
    match call {
        TxnCall::AddPartitions {
            transactional_id,
            producer_id,
            epoch,
            partitions,
        } => NodeCall::AddPartitionsToTxn {
            transactional_id: transactional_id.clone(),
            producer_id: *producer_id,
            epoch: *epoch,
            partitions: pairs(partitions),
        },
        TxnCall::WriteMarkers {
            producer_id,
            epoch,
            commit,
            partitions,
        } => NodeCall::WriteTxnMarkers {
            producer_id: *producer_id,
            epoch: *epoch,
            commit: *commit,
            partitions: pairs(partitions),
        },
        TxnCall::GroupOffsets {
            offsets,
            validate_only,
            stamp,
        } => NodeCall::TxnGroupOffsets {
            group: offsets.group.clone(),
            member_id: offsets.member_id.clone(),
            member_epoch: offsets.member_epoch,
            offsets: offsets
                .offsets
                .iter()
                .map(|(tp, offset, meta)| (tp.topic.clone(), tp.partition, *offset, meta.clone()))
                .collect(),
            validate_only: *validate_only,
            txn: stamp
                .as_ref()
                .map(|s| (s.transactional_id.clone(), s.producer_id, s.epoch)),
        },
    }
}

/// The same-node call a wire call asks for.
pub fn from_node_call(call: NodeCall) -> TxnCall {
    match call {
        NodeCall::AddPartitionsToTxn {
            transactional_id,
            producer_id,
            epoch,
            partitions: p,
        } => TxnCall::AddPartitions {
            transactional_id,
            producer_id,
            epoch,
            partitions: partitions(p),
        },
        NodeCall::WriteTxnMarkers {
            producer_id,
            epoch,
            commit,
            partitions: p,
        } => TxnCall::WriteMarkers {
            producer_id,
            epoch,
            commit,
            partitions: partitions(p),
        },
        NodeCall::TxnGroupOffsets {
            group,
            member_id,
            member_epoch,
            offsets,
            validate_only,
            txn,
        } => TxnCall::GroupOffsets {
            offsets: OffsetCommit {
                group,
                member_id,
                member_epoch,
                offsets: offsets
                    .into_iter()
                    .map(|(topic, partition, offset, meta)| {
                        (TopicPartition::new(&topic, partition), offset, meta)
                    })
                    .collect(),
            },
            validate_only,
            stamp: txn.map(|(transactional_id, producer_id, epoch)| TxnStamp {
                transactional_id,
                producer_id,
                epoch,
            }),
        },
    }
}

fn failure(e: ApiError) -> CallFailure {
    CallFailure {
        code: e.code.name(),
        message: e.message,
    }
}

fn api_error(f: CallFailure) -> ApiError {
    ApiError::new(
        ErrorCode::from_name(&f.code).unwrap_or(ErrorCode::Unknown),
        f.message,
    )
}

impl Shard {
    /// Runs `call` on shard `shard` of `node` (this node: over the shard mesh).
    pub(crate) async fn call_txn_at(
        self: &Rc<Self>,
        node: NodeId,
        shard: usize,
        call: TxnCall,
    ) -> Result<(), ApiError> {
        if node == self.settings().node_id {
            return self.call_txn(shard, call).await;
        }
        self.call_node(node, shard, call).await
    }

    /// The node taking appends for `topic`/`partition` (this one for a partition of a node
    /// alone, which lists no replicas).
    pub(crate) fn leader_node(&self, topic: &str, partition: i32) -> NodeId {
        match self.metadata().partition(topic, partition) {
            Some(pm) if !pm.replicas.is_empty() => pm.leader,
            _ => self.settings().node_id,
        }
    }

    async fn call_node(&self, node: NodeId, shard: usize, call: TxnCall) -> Result<(), ApiError> {
        let unreachable = |why: String| {
            ApiError::new(
                ErrorCode::Timeout,
                format!("node {node} could not be asked ({why}); retry"),
            )
        };
        let Some(links) = self.links.borrow().clone() else {
            return Err(unreachable("this node has no links to others".into()));
        };
        let Some(addr) = self
            .metadata()
            .client_address(node, shard)
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        else {
            return Err(unreachable("its address is not registered".into()));
        };
        let id = self.next_forward_id.get();
        self.next_forward_id.set(id + 1);
        let (tx, rx) = oneshot();
        self.node_calls.borrow_mut().insert(id, tx);
        let message = NodeMessage::Call {
            from: self.settings().node_id,
            from_shard: u32::try_from(self.id).unwrap_or(u32::MAX),
            id,
            call: to_node_call(&call),
        };
        if !links.send(addr, message.encode()).await {
            self.node_calls.borrow_mut().remove(&id);
            return Err(unreachable("no link".into()));
        }
        let answer = futures_lite::future::or(rx, async {
            glommio::timer::sleep(NODE_CALL_TIMEOUT).await;
            None
        })
        .await;
        self.node_calls.borrow_mut().remove(&id);
        answer.unwrap_or_else(|| {
            Err(unreachable(format!(
                "no answer within {} s",
                NODE_CALL_TIMEOUT.as_secs()
            )))
        })
    }

    /// Whether this node leads what `call` touches. A call is sent to the leader its
    /// sender's metadata names; one whose metadata names yet another node is answered
    /// `NotOwner` rather than passed on (no chains between nodes whose metadata differ).
    fn leads_for(&self, call: &TxnCall) -> Result<(), ApiError> {
        let me = self.settings().node_id;
        let n = self.settings().shard_count;
        let meta = self.metadata();
        let mut touched: Vec<(String, i32)> = Vec::new();
        match call {
            TxnCall::AddPartitions {
                transactional_id, ..
            } => touched.extend(
                crate::routing::coordinator(&meta, quiver_txn::TXN_TOPIC, transactional_id, n)
                    .map(|(p, _)| (quiver_txn::TXN_TOPIC.to_string(), p)),
            ),
            TxnCall::WriteMarkers { partitions, .. } => {
                touched.extend(partitions.iter().map(|tp| (tp.topic.clone(), tp.partition)))
            }
            TxnCall::GroupOffsets { offsets, .. } => touched.extend(
                crate::routing::coordinator(&meta, quiver_group::OFFSETS_TOPIC, &offsets.group, n)
                    .map(|(p, _)| (quiver_group::OFFSETS_TOPIC.to_string(), p)),
            ),
        }
        match touched
            .iter()
            .find(|(t, p)| self.leader_node(t, *p) != me)
        {
            Some((t, p)) => Err(ApiError::new(
                ErrorCode::NotOwner,
                format!(
                    "node {me} does not lead {t}/{p} (node {} does, as far as it knows); retry once metadata agrees",
                    self.leader_node(t, *p)
                ),
            )),
            None => Ok(()),
        }
    }

    /// Another node's call to this shard: run, then answer it.
    pub fn on_node_call(self: &Rc<Self>, from: NodeId, from_shard: u32, id: u64, call: NodeCall) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            let call = from_node_call(call);
            let result = match shard.leads_for(&call) {
                Ok(()) => shard.clone().run_txn_call(call).await,
                Err(e) => Err(e),
            };
            let Some(links) = shard.links.borrow().clone() else {
                return;
            };
            let addr = shard
                .metadata()
                .client_address(from, from_shard as usize)
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
            let Some(addr) = addr else {
                tracing::debug!(
                    from,
                    "cannot answer a node's call: its address is not registered"
                );
                return;
            };
            let reply = NodeMessage::CallReply {
                id,
                result: result.map_err(failure),
            };
            if !links.send(addr, reply.encode()).await {
                tracing::debug!(from, "could not answer a node's call (no link)");
            }
        })
        .detach();
    }

    /// The answer to a call this shard made.
    pub fn on_node_reply(&self, id: u64, result: Result<(), CallFailure>) {
        if let Some(tx) = self.node_calls.borrow_mut().remove(&id) {
            tx.send(result.map_err(api_error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_survives_its_wire_form() {
        let calls = vec![
            TxnCall::AddPartitions {
                transactional_id: "tx".into(),
                producer_id: 7,
                epoch: 2,
                partitions: vec![TopicPartition::new("a", 1)],
            },
            TxnCall::WriteMarkers {
                producer_id: 7,
                epoch: 3,
                commit: true,
                partitions: vec![TopicPartition::new("a", 1), TopicPartition::new("b", 0)],
            },
            TxnCall::GroupOffsets {
                offsets: OffsetCommit {
                    group: "g".into(),
                    member_id: "m".into(),
                    member_epoch: 4,
                    offsets: vec![(TopicPartition::new("a", 1), 10, "x".into())],
                },
                validate_only: false,
                stamp: Some(TxnStamp {
                    transactional_id: "tx".into(),
                    producer_id: 7,
                    epoch: 4,
                }),
            },
        ];
        for c in calls {
            let wire = to_node_call(&c);
            assert_eq!(to_node_call(&from_node_call(wire.clone())), wire);
        }
        let e = api_error(failure(ApiError::new(ErrorCode::ProducerFenced, "old")));
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::ProducerFenced, "old")
        );
    }
}
