//! The node's TLS identity and QUIC server configuration.
//!
//! With no certificate configured, a node makes a self-signed one on first start, keeps it in
//! `<data>/tls/` (so clients that pinned its fingerprint keep working across restarts), and
//! prints its SHA-256 fingerprint. Production passes PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::NetError;

/// A certificate chain with its private key.
pub struct TlsIdentity {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Where the certificate came from (for the start-up banner).
    pub cert_path: PathBuf,
}

impl TlsIdentity {
    /// SHA-256 of the leaf certificate's DER, as colon-free lowercase hex: what clients pin.
    pub fn fingerprint_sha256(&self) -> String {
        self.cert_chain
            .first()
            .map(|c| fingerprint_sha256(c))
            .unwrap_or_default()
    }
}

pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads a PEM certificate chain and private key.
pub fn load_pem(cert_path: &Path, key_path: &Path) -> Result<TlsIdentity, NetError> {
    let cert_chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            NetError::Tls(format!(
                "cannot read certificates from {}: {e}",
                cert_path.display()
            ))
        })?;
    if cert_chain.is_empty() {
        return Err(NetError::Tls(format!(
            "{} holds no certificate",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        NetError::Tls(format!(
            "cannot read a private key from {}: {e}",
            key_path.display()
        ))
    })?;
    Ok(TlsIdentity {
        cert_chain,
        key,
        cert_path: cert_path.to_path_buf(),
    })
}

/// The dev identity in `<data_dir>/tls/`, made on first use (valid for localhost and
/// 127.0.0.1). Returns it and whether it was just created.
pub fn load_or_create_dev_identity(data_dir: &Path) -> Result<(TlsIdentity, bool), NetError> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("dev-cert.pem");
    let key_path = dir.join("dev-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((load_pem(&cert_path, &key_path)?, false));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| NetError::Tls(format!("making the dev certificate: {e}")))?;
    write_private(&key_path, certified.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certified.cert.pem()).map_err(io(&cert_path))?;
    Ok((load_pem(&cert_path, &key_path)?, true))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))
}

/// Transport limits of one QUIC server. Windows are sized for 64 KiB–1 MiB batches at disk
/// speed; the stream count bounds requests in flight per connection (back-pressure).
#[derive(Debug, Clone)]
pub struct QuicLimits {
    pub max_in_flight_requests_per_connection: u32,
    pub stream_receive_window_bytes: u32,
    pub connection_receive_window_bytes: u32,
    pub send_window_bytes: u64,
    pub idle_timeout_ms: u32,
    pub keep_alive_interval_ms: u64,
    pub max_connections: usize,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            max_in_flight_requests_per_connection: 256,
            stream_receive_window_bytes: 8 << 20,
            connection_receive_window_bytes: 64 << 20,
            send_window_bytes: 64 << 20,
            idle_timeout_ms: 30_000,
            keep_alive_interval_ms: 10_000,
            max_connections: 4096,
        }
    }
}

/// The quinn-proto server config: TLS 1.3 only, ALPN `quiver/0`. With `client_ca`, clients
/// must present a certificate signed by one of its CAs (mTLS).
pub fn server_config(
    identity: &TlsIdentity,
    limits: &QuicLimits,
    client_ca: Option<&Path>,
) -> Result<Arc<quinn_proto::ServerConfig>, NetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    let mut tls = builder
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(|e| {
            NetError::Tls(format!(
                "certificate and key do not match or are unusable: {e}"
            ))
        })?;
    tls.alpn_protocols = vec![crate::ALPN.to_vec(), crate::INTERNAL_ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn_proto::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(limits)));
    Ok(Arc::new(config))
}

/// Idle timeout of a link to another node (keep-alives every quarter of it).
pub const INTERNAL_IDLE_TIMEOUT_MS: u32 = 3_000;

/// One-way frames in flight per internal link (each its own stream): a node's envelopes to a
/// peer go out once per round, so this bounds rounds in flight, not partitions.
pub const MAX_INTERNAL_STREAMS: u32 = 256;

/// How this node connects to other nodes: TLS 1.3 with [`crate::INTERNAL_ALPN`], presenting
/// its own certificate. Peers are trusted when signed by `cluster_ca` (PEM), or without one,
/// when they present this node's own certificate (a dev cluster shares one).
pub fn internal_client_config(
    identity: &TlsIdentity,
    limits: &QuicLimits,
    cluster_ca: Option<&Path>,
) -> Result<quinn_proto::ClientConfig, NetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match cluster_ca {
        Some(path) => {
            for cert in read_certs(path, "cluster CA")? {
                roots.add(cert).map_err(|e| {
                    NetError::Tls(format!(
                        "bad cluster CA certificate in {}: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            for cert in &identity.cert_chain {
                roots.add(cert.clone()).map_err(|e| {
                    NetError::Tls(format!(
                        "this node's certificate {} cannot serve as the cluster's trust root ({e}); pass a cluster CA",
                        identity.cert_path.display()
                    ))
                })?;
            }
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(|e| NetError::Tls(format!("the node certificate is unusable: {e}")))?;
    tls.alpn_protocols = vec![crate::INTERNAL_ALPN.to_vec()];
    let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn_proto::ClientConfig::new(Arc::new(quic));
    let mut transport = transport_config(limits);
    // A peer that vanished without closing (kill -9, a cut cable) is given up on quickly:
    // its queued envelopes are reported lost and the next send reconnects.
    transport
        .max_idle_timeout(Some(quinn_proto::IdleTimeout::from(
            quinn_proto::VarInt::from_u32(INTERNAL_IDLE_TIMEOUT_MS),
        )))
        .keep_alive_interval(Some(std::time::Duration::from_millis(
            u64::from(INTERNAL_IDLE_TIMEOUT_MS) / 4,
        )));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            NetError::Tls(format!(
                "cannot read {what} certificates from {}: {e}",
                path.display()
            ))
        })
}

/// Transport settings of client and internal connections alike.
fn transport_config(limits: &QuicLimits) -> quinn_proto::TransportConfig {
    let mut transport = quinn_proto::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.max_in_flight_requests_per_connection.into())
        // Only internal links use one-way streams; client connections get theirs refused.
        .max_concurrent_uni_streams(MAX_INTERNAL_STREAMS.into())
        .stream_receive_window(limits.stream_receive_window_bytes.into())
        .receive_window(limits.connection_receive_window_bytes.into())
        .send_window(limits.send_window_bytes)
        .max_idle_timeout(Some(quinn_proto::IdleTimeout::from(
            quinn_proto::VarInt::from_u32(limits.idle_timeout_ms),
        )))
        .keep_alive_interval(Some(std::time::Duration::from_millis(
            limits.keep_alive_interval_ms,
        )));

    // Advertise ACK-frequency support, so a client sending at disk speed can ask for fewer
    // ACKs (each one is a datagram, a syscall, for the shard).
    transport.ack_frequency_config(Some(quinn_proto::AckFrequencyConfig::default()));
    // Larger datagrams where the path allows: fewer per request, fewer syscalls and ACKs.
    let mut mtu = quinn_proto::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND_BYTES);
    transport.mtu_discovery_config(Some(mtu));
    transport
}

/// Verifies client certificates against the CAs in the PEM file at `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path, "client CA")? {
        roots.add(cert).map_err(|e| {
            NetError::Tls(format!(
                "bad client CA certificate in {}: {e}",
                path.display()
            ))
        })?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| NetError::Tls(format!("client verification setup: {e}")))
}

/// Largest UDP payload this node accepts (advertised as `max_udp_payload_size`).
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 16_384;

/// Upper bound of MTU discovery: where the path allows (loopback, jumbo-frame networks),
/// datagrams grow from 1,452 bytes up to this, and a 24 KiB request is 4 datagrams instead
/// of 18. It is the largest size of which ten still fit one GSO send (UDP's 65,507-byte
/// payload bound): quinn's client endpoint sends up to ten datagrams per call and a larger
/// call is refused by the kernel and lost whole (docs/decisions/0014-mtu-bound.md). The
/// client uses the same bound.
pub const MTU_UPPER_BOUND_BYTES: u16 = crate::udp::MAX_GSO_PAYLOAD_BYTES / 10;
