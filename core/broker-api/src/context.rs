//! [`RequestContext`]: who sent a request, as the listener that received it knows them.

use std::net::SocketAddr;

use bytes::Bytes;

/// The authenticated identity a request acts as. Authentication (mTLS subjects, SCRAM users)
/// will fill it; until then every request is [`Principal::Anonymous`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Principal {
    /// No identity was established.
    #[default]
    Anonymous,
    /// A named user (a SCRAM user, or a client certificate's mapped subject).
    User(String),
}

/// Who sent a request: set by the listener, carried with the request to whichever shard
/// serves it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestContext {
    /// The peer's address (`None` for requests made inside the node).
    pub peer: Option<SocketAddr>,
    /// The DER of the client certificate the peer presented over TLS, if any.
    pub client_certificate: Option<Bytes>,
    /// The identity the request acts as.
    pub principal: Principal,
    /// The client's own name for itself (Kafka's `client.id`), empty when it gave none.
    pub client_id: String,
}

impl RequestContext {
    /// A request made by the node itself (forwarded metadata changes, tests).
    pub fn internal() -> Self {
        Self::default()
    }
}
