//! Producer ids for idempotent producers, handed out by the controller shard. Ids are taken
//! from blocks whose end is made durable (`producer-ids` in the data directory) before any
//! id of the block is given out, so an id is never given twice, across restarts too (a
//! restart skips the rest of its block). The cluster issue moves the block counter into the
//! controller's log, as Kafka's KIP-730 does.

use std::cell::Cell;

use glommio::sync::Semaphore;
use quiver_broker_api::{ApiError, ErrorCode};

use crate::shard::{storage_error, Shard};

/// Ids reserved per durable write.
pub const PRODUCER_ID_BLOCK: i64 = 1_000;
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
        let id = ids.next.get();
        ids.next.set(id + 1);
        Ok((id, 0))
    }
}
