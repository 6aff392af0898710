//! The shard QUIC server on a real glommio executor and real UDP sockets, against the tokio
//! client: round trips, concurrency, and typed errors for malformed and oversize frames.

use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use quiver_client::{Connection, TlsTrust};
use quiver_net::server::{Handler, QuicServer};
use quiver_net::tls;
use quiver_schema::frame::{error_frame, parse_frame, DEFAULT_MAX_FRAME_BYTES};
use quiver_schema::requests;
use quiver_schema::wire::{ApiKey, ErrorCode};

/// Answers every request with an error frame naming its request id and body size, so the
/// test can check what the server received.
struct Echo;

impl Handler for Echo {
    fn handle(
        &self,
        _peer: Rc<quiver_net::server::Peer>,
        request: BytesMut,
    ) -> Pin<Box<dyn std::future::Future<Output = Bytes>>> {
        Box::pin(async move {
            match parse_frame(&request, DEFAULT_MAX_FRAME_BYTES) {
                Ok(env) => error_frame(
                    env.request_id(),
                    env.api(),
                    ErrorCode::None,
                    &format!("got {} bytes", request.len()),
                ),
                Err(e) => error_frame(0, ApiKey::Handshake, e.code(), &e.to_string()),
            }
        })
    }
}

fn start_server(
    data_dir: std::path::PathBuf,
    max_frame_bytes: usize,
    client_ca: Option<std::path::PathBuf>,
) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async move {
                let (identity, created) = tls::load_or_create_dev_identity(&data_dir).unwrap();
                assert!(created);
                let config = tls::server_config(
                    &identity,
                    &tls::QuicLimits::default(),
                    client_ca.as_deref(),
                )
                .unwrap();
                let server =
                    QuicServer::bind("127.0.0.1:0".parse().unwrap(), config, max_frame_bytes, 16)
                        .unwrap();
                tx.send(server.local_addr()).unwrap();
                server
                    .run(Rc::new(Echo), std::future::pending())
                    .await
                    .unwrap();
            })
    });
    rx.recv().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn requests_round_trip_concurrently_and_bad_frames_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_server(dir.path().to_path_buf(), 1 << 20, None);
    let conn = Connection::connect(
        addr,
        "localhost",
        &TlsTrust::LocalDataDir(dir.path().to_path_buf()),
    )
    .await
    .unwrap();

    // 100 requests at once, each on its own stream, large enough to need several datagrams.
    let conn = std::sync::Arc::new(conn);
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let records = vec![i as u8; 10_000 + i as usize];
            let frame =
                requests::produce(i, "t", 0, quiver_schema::wire::Acks::All, 1000, &records);
            let len = frame.len();
            let resp = conn.request(frame).await.unwrap();
            let env = resp.envelope();
            assert_eq!(env.request_id(), i);
            assert_eq!(
                env.error().unwrap().message(),
                Some(format!("got {len} bytes").as_str())
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Garbage with a valid length prefix: MalformedRequest, and the connection keeps serving.
    let mut junk = 16u32.to_le_bytes().to_vec();
    junk.extend([0xAB; 16]);
    let resp = conn.raw_exchange(Bytes::from(junk)).await.unwrap();
    let env = parse_frame(&resp, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(env.error().unwrap().code(), ErrorCode::MalformedRequest);

    // A length prefix over max_frame_bytes: FrameTooLarge, without reading the body.
    let mut big = (2u32 << 20).to_le_bytes().to_vec();
    big.extend([0u8; 1000]);
    let resp = conn.raw_exchange(Bytes::from(big)).await;
    let resp = resp.expect("the server answers before stopping the stream");
    let env = parse_frame(&resp, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(env.error().unwrap().code(), ErrorCode::FrameTooLarge);

    // A frame cut short by the end of its stream: a typed truncation error.
    let whole = requests::metadata(7, &["a", "b"]);
    let resp = conn
        .raw_exchange(whole.slice(..whole.len() - 3))
        .await
        .unwrap();
    let env = parse_frame(&resp, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(env.error().unwrap().code(), ErrorCode::MalformedRequest);
    assert!(env
        .error()
        .unwrap()
        .message()
        .unwrap()
        .contains("ended after"));

    // Still serving.
    let resp = conn.request(requests::metadata(8, &[])).await.unwrap();
    assert_eq!(resp.envelope().request_id(), 8);

    // A client that pins another fingerprint is refused: verification is never off.
    let wrong =
        Connection::connect(addr, "localhost", &TlsTrust::Fingerprint("00".repeat(32))).await;
    assert!(wrong.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mtls_requires_a_client_certificate_signed_by_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quiver test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["client.test".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let cert_pem = dir.path().join("client.pem");
    let key_pem = dir.path().join("client.key");
    std::fs::write(&cert_pem, client.pem()).unwrap();
    std::fs::write(&key_pem, client_key.serialize_pem()).unwrap();

    let addr = start_server(dir.path().to_path_buf(), 1 << 20, Some(ca_pem));
    let trust = TlsTrust::LocalDataDir(dir.path().to_path_buf());
    let with_cert =
        Connection::connect_with_cert(addr, "localhost", &trust, Some(&(cert_pem, key_pem)))
            .await
            .unwrap();
    assert_eq!(
        with_cert
            .request(requests::metadata(1, &[]))
            .await
            .unwrap()
            .envelope()
            .request_id(),
        1
    );

    // Without a certificate the handshake is refused (at connect or at the first request).
    let refused = match Connection::connect(addr, "localhost", &trust).await {
        Err(_) => true,
        Ok(c) => c.request(requests::metadata(2, &[])).await.is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");
}
