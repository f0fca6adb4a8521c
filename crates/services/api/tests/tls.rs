//! TLS 1.3 on the API's listener (issue 17 §1): a certificate made for the test, a rustls client that trusts only
//! it. TLS 1.3 answers; a client that offers only TLS 1.2, and one that speaks plain HTTP, get nothing.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ProtocolVersion;
use tally_api::config::{ApiConfig, EncryptionKey, StripeApi};
use tally_api::tls::TlsConfig;
use tally_domain::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Files {
    dir: std::path::PathBuf,
    cert_pem: String,
}

impl Files {
    /// A self-signed certificate for 127.0.0.1 and localhost, its key, and a second key that does not match it.
    fn new() -> Files {
        let dir = std::env::temp_dir().join(tally_testkit::unique("tally_tls_"));
        std::fs::create_dir_all(&dir).expect("dir");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("cert");
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).expect("write");
        std::fs::write(dir.join("other.pem"), other.serialize_pem()).expect("write");
        Files { cert_pem: made.cert.pem(), dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(tls: Option<TlsConfig>) -> ApiConfig {
    ApiConfig {
        encryption_keys: vec![EncryptionKey { id: "k1".into(), key: tally_api::vault::Vault::generate_key() }],
        // No call reaches it: the test only asks /healthz.
        stripe: Some(StripeApi { base_url: "http://127.0.0.1:9".into(), secret_key: Secret::new("sk_test".into()) }),
        tls,
        ..ApiConfig::default()
    }
}

fn client(cert_pem: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem")).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn the_listener_speaks_tls_1_3_only_and_refuses_a_bad_certificate_configuration() {
    let files = Files::new();
    let (pg, _pool) = tally_testkit::database("api_tls").await;

    // A key that is not the certificate's, and a missing file: refused at start-up, naming the setting.
    let mismatched = TlsConfig { cert_path: files.path("cert.pem"), key_path: files.path("other.pem") };
    let err = tally_api::build(config(Some(mismatched)), pg.clone()).await.err().expect("a mismatched key is refused");
    assert!(err.contains("api.tls"), "{err}");
    let missing = TlsConfig { cert_path: files.path("nope.pem"), key_path: files.path("key.pem") };
    let err = tally_api::build(config(Some(missing)), pg.clone()).await.err().expect("a missing file is refused");
    assert!(err.contains("api.tls.cert_path") && err.contains("nope.pem"), "{err}");

    let tls = TlsConfig { cert_path: files.path("cert.pem"), key_path: files.path("key.pem") };
    let api = tally_api::build(config(Some(tls)), pg).await.expect("the API builds with TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let served = tokio::spawn(tally_api::serve(api, listener, stop.clone()));

    // TLS 1.3: the handshake verifies the test's certificate, and HTTP/1.1 answers inside it.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls =
        client(&files.cert_pem, &[&rustls::version::TLS13]).connect(name.clone(), tcp).await.expect("TLS 1.3");
    assert_eq!(tls.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(tls.get_ref().1.alpn_protocol(), None, "the client offered no ALPN");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // TLS 1.2 only: no handshake.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let refused = client(&files.cert_pem, &[&rustls::version::TLS12]).connect(name, tcp).await;
    assert!(refused.is_err(), "a TLS 1.2 client must be refused");

    // Plain HTTP on the TLS port: no answer (the bytes are not a ClientHello).
    let plain = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
    assert!(plain.is_err(), "plain HTTP must get no answer: {plain:?}");

    // The listener still serves after the refusals.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = client(&files.cert_pem, &[&rustls::version::TLS13]).connect(name, tcp).await.expect("TLS 1.3");
    tls.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.expect("read");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"openapi\""),
        "{}",
        &answer[..200.min(answer.len())]
    );

    stop.cancel();
    served.await.expect("joined").expect("a clean stop");
}
