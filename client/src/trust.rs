//! How the client decides to trust a node's certificate. There is no "verification off".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::ClientError;

/// Which certificate the client accepts from a node.
#[derive(Debug, Clone)]
pub enum TlsTrust {
    /// Certificates signed by the CAs in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint (hex, as `quiver serve` prints it).
    Fingerprint(String),
    /// The dev certificate a local node keeps in `<data_dir>/tls/dev-cert.pem`.
    LocalDataDir(PathBuf),
}

/// SHA-256 of a certificate's DER as lowercase hex.
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Pins one certificate by fingerprint; signatures are still verified.
#[derive(Debug)]
struct PinnedCert {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint_sha256(end_entity).eq_ignore_ascii_case(&self.fingerprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the node's certificate (sha256 {}) is not the pinned one ({})",
                fingerprint_sha256(end_entity),
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn dev_cert_fingerprint(data_dir: &Path) -> Result<String, ClientError> {
    let path = data_dir.join("tls").join("dev-cert.pem");
    let cert = CertificateDer::from_pem_file(&path).map_err(|e| {
        ClientError::Trust(format!(
            "cannot read the node's dev certificate {}: {e}; pass --ca or the fingerprint instead",
            path.display()
        ))
    })?;
    Ok(fingerprint_sha256(&cert))
}

impl TlsTrust {
    /// The rustls client config for this trust, TLS 1.3 only, with Quiver's ALPN, presenting
    /// `client_cert` (PEM chain, PEM key) when the node requires mTLS.
    pub fn client_config(
        &self,
        alpn: &[u8],
        client_cert: Option<&(PathBuf, PathBuf)>,
    ) -> Result<rustls::ClientConfig, ClientError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::Trust(e.to_string()))?;
        let mut config: rustls::ClientConfig = match self {
            TlsTrust::CaFile(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        ClientError::Trust(format!(
                            "cannot read CA certificates from {}: {e}",
                            path.display()
                        ))
                    })?;
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        ClientError::Trust(format!("bad CA certificate in {}: {e}", path.display()))
                    })?;
                }
                finish(builder.with_root_certificates(roots), client_cert)?
            }
            TlsTrust::Fingerprint(hex) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert {
                    fingerprint: hex.trim().to_string(),
                    provider,
                }))
                .pipe(|b| finish(b, client_cert))?,
            TlsTrust::LocalDataDir(dir) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert {
                    fingerprint: dev_cert_fingerprint(dir)?,
                    provider,
                }))
                .pipe(|b| finish(b, client_cert))?,
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

fn finish(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<rustls::ClientConfig, ClientError> {
    let Some((cert_path, key_path)) = client_cert else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ClientError::Trust(format!(
                "cannot read the client certificate {}: {e}",
                cert_path.display()
            ))
        })?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        ClientError::Trust(format!(
            "cannot read the client key {}: {e}",
            key_path.display()
        ))
    })?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| ClientError::Trust(format!("client certificate and key are unusable: {e}")))
}

/// `value.pipe(f)` = `f(value)`, to keep builder chains readable.
trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}

impl<T> Pipe for T {}
