//! TLS on the webhook listener, through the real binary: HTTP/2 and HTTP/1.1 over TLS (ALPN),
//! `hookwall send` over https, certificate rotation without a restart, a bad new pair keeping
//! the old one, and mutual TLS. Certificates are generated here, per test (no committed keys).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use hookwall_testkit::{Hookwall, sign_sha256_hex, wait_for};

use super::{BIN, SECRET, config, serve, stored, workdir, write_config};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `localhost` and 127.0.0.1, with `cn` as its common name.
    pub fn leaf(&self, cn: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A rustls client config trusting this CA, with ALPN `alpn` and an optional identity.
    pub fn client(&self, alpn: &[u8], identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.der.clone()],
                    PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

/// Writes a leaf's cert and key where `[server.tls]` points (key first, like a careful tool).
fn install(dir: &Path, leaf: &Leaf) {
    std::fs::write(dir.join("key.pem"), &leaf.key_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &leaf.cert_pem).unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// [`tls_post`] of `body` as event `id` to the `demo` source, run to completion on `rt`.
fn post_demo(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    id: &str,
    body: &[u8],
) -> Result<TlsReply, String> {
    rt.block_on(tls_post(addr, config, "/hooks/demo", id, body))
}

/// What one TLS request saw.
#[derive(Debug)]
pub struct TlsReply {
    pub status: u16,
    pub version: http::Version,
    pub alpn: Option<Vec<u8>>,
    pub peer_cert: CertificateDer<'static>,
    pub body: Bytes,
}

/// One signed POST over a new TLS connection, as HTTP/2 if `config` offers `h2`, else HTTP/1.1.
pub async fn tls_post(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    id: &str,
    body: &[u8],
) -> Result<TlsReply, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let h2 = config.alpn_protocols.iter().any(|p| p == b"h2");
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let peer_cert = session
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no peer certificate")?;
    let request = http::Request::post(format!("https://localhost:{}{path}", addr.port()))
        .header("x-signature", sign_sha256_hex(SECRET, body))
        .header("x-event-id", id)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().unwrap();
        parts
            .headers
            .insert(http::header::HOST, "localhost".parse().unwrap());
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let version = response.version();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(TlsReply {
        status,
        version,
        alpn,
        peer_cert,
        body,
    })
}

/// Hookwall in `dir` (holding `cert.pem` and `key.pem`), source `demo` without plugins, TLS
/// on the webhook listener with `extra` lines in `[server.tls]`.
fn serve_tls(dir: &tempfile::TempDir, extra: &str) -> Hookwall {
    let tls = format!("[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n{extra}");
    serve(dir, &[("demo", "")], &tls)
}

#[test]
fn tls_serves_http2_and_http11_and_send_works_over_https() {
    let dir = workdir(&[]);
    let ca = TestCa::new("hookwall test CA");
    install(dir.path(), &ca.leaf("server-a"));
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let hw = serve_tls(&dir, "");
    let rt = runtime();
    let body = br#"{"type":"order.created","n":1}"#;

    // Each protocol offered alone is the one spoken.
    for (alpn, id, version) in [
        (&b"h2"[..], "tls-h2", http::Version::HTTP_2),
        (&b"http/1.1"[..], "tls-h1", http::Version::HTTP_11),
    ] {
        let reply = post_demo(&rt, hw.addr, ca.client(alpn, None), id, body).unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.version, version);
        assert_eq!(reply.alpn.as_deref(), Some(alpn));
    }

    // Plain HTTP on a TLS port gets no answer.
    assert!(
        hookwall_testkit::http(hw.addr, "POST", "/hooks/demo", &[], body)
            .map(|r| r.status)
            .is_err()
    );

    // The CLI: the default URL is https (the config has [server.tls]); trust the test CA.
    std::fs::write(dir.path().join("event.json"), body).unwrap();
    let ca_pem = dir.path().join("ca.pem");
    let event = dir.path().join("event.json");
    let (ca_pem, event) = (ca_pem.to_str().unwrap(), event.to_str().unwrap());
    let send = |id: &str, more: &[&str]| {
        let args = [&["send", "--source", "demo", "--id", id][..], more].concat();
        hw.cli(&args)
    };
    let (ok, out, err) = send("tls-cli", &["--ca-cert", ca_pem, event]);
    assert!(ok, "send: {out}{err}");
    assert!(out.starts_with("200 "));
    // Without the CA the system roots do not know the test CA: the handshake fails.
    let (ok, _, _) = send("tls-cli-2", &[event]);
    assert!(!ok);
    for id in ["tls-h2", "tls-h1", "tls-cli"] {
        stored(&hw, id);
    }
}

#[test]
fn tls_certificate_rotates_without_restart_and_a_bad_pair_keeps_the_old_one() {
    let dir = workdir(&[]);
    let ca = TestCa::new("hookwall rotation CA");
    let a = ca.leaf("server-a");
    install(dir.path(), &a);
    let hw = serve_tls(&dir, "");
    let rt = runtime();
    let body = br#"{"n":1}"#;
    let seen = |id: &str| {
        let reply = post_demo(&rt, hw.addr, ca.client(b"http/1.1", None), id, body).unwrap();
        assert_eq!(reply.status, 200);
        reply.peer_cert
    };
    assert_eq!(seen("rot-1"), a.der);

    // Rotate: the next handshakes present B, with no restart.
    let b = ca.leaf("server-b");
    install(dir.path(), &b);
    let mut n = 0;
    let rotated = wait_for(Duration::from_secs(10), || {
        n += 1;
        seen(&format!("rot-2-{n}")) == b.der
    });
    assert!(
        rotated,
        "the new certificate was not picked up:\n{}",
        hw.log()
    );
    assert!(hw.log().contains("TLS certificate reloaded"));

    // A pair that does not match (C's certificate, B's key) is refused; B keeps serving.
    let c = ca.leaf("server-c");
    std::fs::write(dir.path().join("cert.pem"), &c.cert_pem).unwrap();
    assert!(wait_for(Duration::from_secs(10), || hw
        .log()
        .contains("new TLS certificate not used")));
    assert_eq!(seen("rot-3"), b.der);
    // So is a garbage file.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(seen("rot-4"), b.der);
    assert_eq!(
        hw.log().matches("new TLS certificate not used").count(),
        2,
        "{}",
        hw.log()
    );
    // And a good pair after the bad ones is taken.
    install(dir.path(), &c);
    let mut n = 0;
    assert!(wait_for(Duration::from_secs(10), || {
        n += 1;
        seen(&format!("rot-5-{n}")) == c.der
    }));
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let dir = workdir(&[]);
    let server_ca = TestCa::new("hookwall server CA");
    let client_ca = TestCa::new("hookwall client CA");
    let other_ca = TestCa::new("someone else's CA");
    install(dir.path(), &server_ca.leaf("server"));
    std::fs::write(dir.path().join("clients.pem"), client_ca.pem()).unwrap();
    let hw = serve_tls(&dir, "client_ca = \"clients.pem\"\n");
    let rt = runtime();
    let body = br#"{"n":1}"#;
    let post = |identity: Option<&Leaf>, id: &str| {
        post_demo(
            &rt,
            hw.addr,
            server_ca.client(b"http/1.1", identity),
            id,
            body,
        )
    };
    let without = post(None, "mtls-none");
    assert!(without.is_err(), "no client certificate: {without:?}");
    let wrong = other_ca.leaf("intruder");
    let stranger = post(Some(&wrong), "mtls-wrong");
    assert!(
        stranger.is_err(),
        "a certificate from another CA: {stranger:?}"
    );
    let good = client_ca.leaf("producer");
    let reply = post(Some(&good), "mtls-good").unwrap();
    assert_eq!(reply.status, 200);

    // `hookwall send` with a client certificate.
    std::fs::write(dir.path().join("server-ca.pem"), server_ca.pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), &good.cert_pem).unwrap();
    std::fs::write(dir.path().join("client.key"), &good.key_pem).unwrap();
    std::fs::write(dir.path().join("event.json"), body).unwrap();
    let d = dir.path();
    hookwall_testkit::run_ok(
        std::process::Command::new(BIN)
            .args(["send", "--source", "demo", "--id", "mtls-cli", "--config"])
            .arg(&hw.config_path)
            .arg("--ca-cert")
            .arg(d.join("server-ca.pem"))
            .arg("--client-cert")
            .arg(d.join("client.pem"))
            .arg("--client-key")
            .arg(d.join("client.key"))
            .arg(d.join("event.json")),
    );
    assert!(!hw.log().contains("panicked"));
}

#[test]
fn serve_warns_when_a_public_listener_has_no_tls() {
    let dir = workdir(&[]);
    let port = hookwall_testkit::free_port();
    // 0.0.0.0 is reachable from other hosts; nothing here sends it anything.
    let config_path = write_config(
        dir.path(),
        &config(&[("demo", "")], ""),
        &format!("0.0.0.0:{port}"),
        &format!("127.0.0.1:{}", hookwall_testkit::free_port()),
    );
    let log_path = dir.path().join("hookwall.log");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config_path)
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let up = wait_for(Duration::from_secs(60), || log().contains("listening"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "{}", log());
    assert!(
        log().contains("reachable from other hosts without TLS"),
        "{}",
        log()
    );
}
