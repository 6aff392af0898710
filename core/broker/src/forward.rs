//! Shard to shard over glommio's channel mesh: a request another shard owns goes there as a
//! typed [`Request`] (decoded once, by the listener that received it) and its typed
//! [`Response`] comes back; the controller asks every shard to apply new metadata the same
//! way. Payloads (`BytesMut`/`Bytes` record data) move, never copied.

use std::rc::Rc;

use quiver_broker_api::{ApiError, ErrorCode, Request, RequestContext, Response};
use quiver_storage::signal::oneshot;

use crate::shard::Shard;

/// A message between shards.
pub enum ShardMsg {
    Call {
        id: u64,
        from: usize,
        call: ShardCall,
    },
    Reply {
        id: u64,
        reply: ShardReply,
    },
}

/// What one shard asks another.
pub enum ShardCall {
    /// Serve this request (it is the receiving shard's).
    Serve(Box<(RequestContext, Request)>),
    /// Apply the newest metadata (open, close, reconfigure logs), then reply.
    ApplyMetadata,
    /// A step of a transaction that runs on the shard owning what it touches.
    Txn(Box<crate::txn::TxnCall>),
    /// A change for the controller (shard 0 holds the node's controller member).
    Controller(Box<quiver_cluster::messages::ControllerRequest>),
}

/// The answer to a [`ShardCall`].
pub enum ShardReply {
    Served(Box<Response>),
    MetadataApplied,
    /// A [`ShardCall::Txn`] ran.
    Done(Result<(), ApiError>),
    /// The call never ran (the receiving shard is stopping).
    Dropped(ApiError),
}

impl Shard {
    /// Sends `request` to shard `to` and waits for its answer; a shard that does not answer
    /// gives a `ShuttingDown` refusal of the same API.
    pub(crate) async fn forward(
        &self,
        to: usize,
        ctx: RequestContext,
        request: Request,
    ) -> Response {
        let api = request.api();
        match self
            .call(to, ShardCall::Serve(Box::new((ctx, request))))
            .await
        {
            ShardReply::Served(response) => *response,
            ShardReply::Dropped(error) => Response::Refused { api, error },
            ShardReply::MetadataApplied | ShardReply::Done(_) => Response::Refused {
                api,
                error: ApiError::new(
                    ErrorCode::Unknown,
                    format!("shard {to} answered another call"),
                ),
            },
        }
    }

    /// Sends `call` to shard `to` over the mesh and waits for its reply.
    pub(crate) async fn call(&self, to: usize, call: ShardCall) -> ShardReply {
        let id = self.next_forward_id.get();
        self.next_forward_id.set(id + 1);
        let (tx, rx) = oneshot();
        self.pending.borrow_mut().insert(id, tx);
        let from = self.id;
        if self
            .mesh
            .send_to(to, ShardMsg::Call { id, from, call })
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return ShardReply::Dropped(ApiError::new(
                ErrorCode::ShuttingDown,
                format!("shard {to} is not answering; the node may be shutting down"),
            ));
        }
        rx.await.unwrap_or_else(|| {
            ShardReply::Dropped(ApiError::new(
                ErrorCode::ShuttingDown,
                "the forwarded request was dropped; the node may be shutting down",
            ))
        })
    }

    /// Handles one message from another shard.
    pub fn on_mesh_message(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Reply { id, reply } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    tx.send(reply);
                }
            }
            ShardMsg::Call { id, from, call } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let reply = match call {
                        ShardCall::Serve(boxed) => {
                            let (ctx, request) = *boxed;
                            ShardReply::Served(Box::new(shard.clone().handle(ctx, request).await))
                        }
                        ShardCall::ApplyMetadata => {
                            shard.apply_metadata().await;
                            ShardReply::MetadataApplied
                        }
                        ShardCall::Txn(call) => {
                            ShardReply::Done(shard.clone().run_txn_call(*call).await)
                        }
                        ShardCall::Controller(request) => {
                            ShardReply::Done(shard.submit_to_controller(*request).await)
                        }
                    };
                    if shard
                        .mesh
                        .send_to(from, ShardMsg::Reply { id, reply })
                        .await
                        .is_err()
                    {
                        tracing::debug!(
                            shard = shard.id,
                            to = from,
                            "could not answer a forwarded request"
                        );
                    }
                })
                .detach();
            }
        }
    }
}
