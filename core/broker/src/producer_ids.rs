//! Producer ids for idempotent producers, handed out by the controller shard. Ids are taken
//! from blocks whose end is made durable (`producer-ids` in the data directory) before any
//! id of the block is given out, so an id is never given twice, across restarts too (a
//! restart skips the rest of its block). In a cluster each node counts its own ids below
//! 2^40 with its node id above ([`node_producer_id`]): unique without asking the controller
//! (Kafka allocates blocks through its controller, KIP-730).

use std::cell::Cell;

use glommio::sync::Semaphore;
use quiver_broker_api::{ApiError, ErrorCode};

use crate::shard::{storage_error, Shard};

/// Ids reserved per durable write.
pub const PRODUCER_ID_BLOCK: i64 = 1_000;
/// Bits of a producer id counted by its node; the node id fills the bits above, so nodes of
/// a cluster never hand out the same id (node 0, a single node, keeps its ids as before).
pub const NODE_LOCAL_ID_BITS: u32 = 40;

/// The cluster-unique id of `node`'s `local`-th producer id.
pub fn node_producer_id(node: crate::metadata::NodeId, local: i64) -> Result<i64, ApiError> {
    let node = i64::from(node);
    if !(0..1 << (62 - NODE_LOCAL_ID_BITS)).contains(&node)
        || !(0..1 << NODE_LOCAL_ID_BITS).contains(&local)
    {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("node {node} has no producer ids left (local id {local}): node ids must be below 2^22 and a node hands out at most 2^40 ids"),
        ));
    }
    Ok(node << NODE_LOCAL_ID_BITS | local)
}

/// The file holding the first id not reserved yet.
pub const PRODUCER_IDS_FILE: &str = "producer-ids";

/// The controller's block of producer ids: `next..end` may be given out.
pub struct ProducerIds {
    next: Cell<i64>,
    end: Cell<i64>,
    /// One reservation at a time.
    gate: Semaphore,
}

impl Default for ProducerIds {
    fn default() -> Self {
        Self {
            next: Cell::new(0),
            end: Cell::new(0),
            gate: Semaphore::new(1),
        }
    }
}

impl Shard {
    /// A new producer id with epoch 0, or `current`'s id with the next epoch (a new id when
    /// the epoch would overflow). A transactional id's producer comes from its transaction
    /// coordinator ([`crate::txn`]), which takes its ids from here.
    pub(crate) async fn init_producer_id(
        &self,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ApiError> {
        if let Some((id, epoch)) = current.filter(|(_, e)| *e < i16::MAX) {
            return Ok((id, epoch + 1));
        }
        let ids = &self.producer_ids;
        let _permit = ids
            .gate
            .acquire_permit(1)
            .await
            .map_err(|_| ApiError::new(ErrorCode::ShuttingDown, "the node is stopping"))?;
        if ids.next.get() >= ids.end.get() {
            let dir = &self.settings().data_dir;
            let start = match quiver_storage::files::read_small(&dir.join(PRODUCER_IDS_FILE), 64)
                .await
                .map_err(|e| storage_error(&e))?
            {
                None => 0,
                Some(bytes) => std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::CorruptData,
                            format!(
                                "{} does not hold a number; restore it (ids must never be reused)",
                                dir.join(PRODUCER_IDS_FILE).display()
                            ),
                        )
                    })?,
            };
            let end = start.saturating_add(PRODUCER_ID_BLOCK);
            quiver_storage::files::write_atomically(
                dir,
                PRODUCER_IDS_FILE,
                end.to_string().into_bytes(),
            )
            .await
            .map_err(|e| storage_error(&e))?;
            ids.next.set(start);
            ids.end.set(end);
        }
        let local = ids.next.get();
        ids.next.set(local + 1);
        node_producer_id(self.settings().node_id, local).map(|id| (id, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_unique_across_nodes_and_unchanged_on_node_0() {
        assert_eq!(node_producer_id(0, 17), Ok(17));
        assert_eq!(node_producer_id(3, 17), Ok((3 << 40) + 17));
        assert_ne!(node_producer_id(1, 0), node_producer_id(2, 0));
        assert!(node_producer_id(1, 1 << 40).is_err());
        assert!(node_producer_id(-1, 0).is_err());
    }
}
