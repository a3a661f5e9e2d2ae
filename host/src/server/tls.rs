//! TLS termination for the webhook listener (`[server.tls]`), with rustls.
//!
//! TLS 1.2 and 1.3 with rustls' default suites for the `ring` provider (ECDHE with AEAD ciphers
//! only: no CBC, no RSA key exchange), ALPN `h2` then `http/1.1`. With `client_ca`, a client
//! must present a certificate issued by one of those CAs, or the handshake fails.
//!
//! The certificate and key are re-read when either file changes (a poll of their size and
//! mtime every [`RELOAD_POLL`]; polling also sees renames and the symlink swaps that secret
//! mounts do, which a file watcher can miss). A new pair is loaded completely and checked —
//! parses, key matches the leaf certificate — before it replaces the old one; a bad or
//! half-written pair keeps the old one serving and logs why, and is retried at the next change.
//! New handshakes use the new pair; established connections keep theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
pub use crate::tls::TlsError;
use crate::tls::read_certs;

/// How often the certificate and key files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// The TLS side of a listener: an acceptor whose certificate follows the files.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    certs: Arc<ReloadingCert>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.certs.cert_path)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair (and client CAs) once; fails if the files are not usable.
    pub fn load(config: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = Stamp::of(&config.cert, &config.key);
        let key = load_pair(&config.cert, &config.key, &provider)?;
        let certs = Arc::new(ReloadingCert {
            cert_path: config.cert.clone(),
            key_path: config.key.clone(),
            provider: provider.clone(),
            current: ArcSwap::from_pointee(key),
            seen: std::sync::Mutex::new(stamp),
        });
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Pair {
                cert: config.cert.clone(),
                key: config.key.clone(),
                reason: e.to_string(),
            })?;
        let builder = match &config.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path, "client CA certificates")? {
                    roots.add(cert).map_err(|e| TlsError::ClientCa {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::ClientCa {
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(certs.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certs,
        })
    }

    /// The acceptor to run handshakes with.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Starts polling the files for changes; the task ends when the last `Tls` clone is dropped.
    pub fn watch(&self) {
        let weak = Arc::downgrade(&self.certs);
        tokio::spawn(poll_files(weak));
    }

    /// Re-reads the files now if they changed since the last look; returns whether a new pair
    /// was taken. (The poll task calls this; tests may too.)
    pub fn reload_if_changed(&self) -> bool {
        self.certs.reload_if_changed()
    }
}

async fn poll_files(certs: Weak<ReloadingCert>) {
    let mut tick = tokio::time::interval(RELOAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(certs) = certs.upgrade() else { return };
        // Reading files blocks; it is rare and small, but keep it off the reactor threads.
        let _ = tokio::task::spawn_blocking(move || certs.reload_if_changed()).await;
    }
}

/// Serves the current pair to every handshake; swapped atomically on reload.
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The files' stamp at the last load attempt, good or bad (a bad pair is logged once).
    seen: std::sync::Mutex<Stamp>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCert {
    fn reload_if_changed(&self) -> bool {
        let stamp = Stamp::of(&self.cert_path, &self.key_path);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == stamp {
                return false;
            }
            *seen = stamp;
        }
        match load_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "new TLS certificate not used; still serving the previous one");
                false
            }
        }
    }
}

/// What tells that a file changed: its size and modification time (both files).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp([Option<(u64, SystemTime)>; 2]);

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Stamp {
        let one = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        };
        Stamp([one(cert), one(key)])
    }
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert, "certificate chain")?;
    // The key's text never reaches the error: only the parser's reason.
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
        what: "private key",
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    })
}
