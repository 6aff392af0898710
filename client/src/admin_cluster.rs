//! [`Admin`]'s cluster operations: move a partition's replicas, hand its leadership to a
//! replica, decommission a node, and read the replication progress of what a node leads
//! (`quiver topic alter-replicas`, `quiver cluster ...` use these).

use quiver_broker_api::{PartitionReplication, Response};
use quiver_schema::cluster_ops;
use quiver_schema::wire::ErrorCode;

use crate::admin::Admin;
use crate::error::{ClientError, Result};
use crate::group::{broker_error, unexpected};

impl Admin {
    async fn cluster_op(&self, encode: impl Fn(u64) -> bytes::Bytes) -> Result<Response> {
        let resp = self.client.bootstrap_request(encode).await?;
        cluster_ops::read_response(&resp.envelope()).ok_or_else(|| unexpected("cluster operation"))
    }

    /// Moves `topic`/`partition` to `replicas` (distinct nodes; the first is its preferred
    /// leader). Returns once the move is recorded; the partition's leader carries it out
    /// (new replicas copy the log first, then the leaving ones are removed).
    pub async fn alter_replicas(
        &self,
        topic: &str,
        partition: i32,
        replicas: &[i32],
    ) -> Result<()> {
        match self
            .cluster_op(|id| cluster_ops::alter_replicas(id, topic, partition, replicas))
            .await?
        {
            Response::AlterReplicas(r) => r.map_err(broker_error),
            Response::Refused { error, .. } => Err(broker_error(error)),
            _ => Err(unexpected("AlterReplicas")),
        }
    }

    /// Makes `node` the preferred leader of `topic`/`partition` (first of its replicas); its
    /// leader hands leadership over as soon as `node` holds the whole log.
    pub async fn transfer_leadership(&self, topic: &str, partition: i32, node: i32) -> Result<()> {
        let t = self.describe_topic(topic).await?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| ClientError::Broker {
                code: ErrorCode::UnknownPartition,
                message: format!("topic {topic:?} has no partition {partition}"),
            })?;
        if !p.replicas.contains(&node) {
            return Err(ClientError::Broker {
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "node {node} holds no replica of {topic}/{partition} (its replicas: {:?}); move one there first with `quiver topic alter-replicas`",
                    p.replicas
                ),
            });
        }
        let mut order = vec![node];
        order.extend(p.replicas.iter().copied().filter(|r| *r != node));
        self.alter_replicas(topic, partition, &order).await
    }

    /// Moves every replica off `node` and keeps new ones off it: how many partitions started
    /// moving. Once it holds none (see [`Self::describe_topic`]) it may be stopped.
    pub async fn decommission_node(&self, node: i32) -> Result<u32> {
        match self
            .cluster_op(|id| cluster_ops::decommission_node(id, node))
            .await?
        {
            Response::DecommissionNode(r) => r.map_err(broker_error),
            Response::Refused { error, .. } => Err(broker_error(error)),
            _ => Err(unexpected("DecommissionNode")),
        }
    }

    /// The partitions the node this admin is connected to leads, with each follower's
    /// progress (its log end as the leader knows it, learner or voter, reachable).
    pub async fn describe_replication(&self) -> Result<Vec<PartitionReplication>> {
        match self.cluster_op(cluster_ops::describe_replication).await? {
            Response::DescribeReplication(r) => r.map_err(broker_error),
            Response::Refused { error, .. } => Err(broker_error(error)),
            _ => Err(unexpected("DescribeReplication")),
        }
    }
}
