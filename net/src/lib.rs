//! # quiver-net: the QUIC transport (next step, issue "The broker node")
//!
//! Will hold: one QUIC endpoint per shard on the shard's own io_uring (quinn driven by
//! glommio sockets and timers, no extra reactor thread), TLS 1.3 via rustls with a dev
//! certificate made on first start, length-prefixed FlatBuffers frames on one bidirectional
//! stream per request, `max_frame_bytes` and in-flight limits per connection.
