//! TLS pieces more than one stage uses: reading certificates, and the client side
//! (`hookwall send` to a TLS listener, the PostgreSQL store to its database), with rustls and
//! the `ring` provider like the rest of the tree. The server side is `server::tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up, or a new certificate pair was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the expected kind.
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        /// What the file should hold (`"certificate chain"`, `"private key"`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O or PEM error, or that no such item was found.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refused the pair.
    #[error("certificate {cert} and key {key} do not make a usable pair: {reason}")]
    Pair {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// Why the pair was refused.
        reason: String,
    },
    /// The client CA file did not make a usable verifier.
    #[error("client_ca {path}: {reason}")]
    ClientCa {
        /// The `client_ca` file.
        path: PathBuf,
        /// Why rustls refused it.
        reason: String,
    },
}

/// The certificates in the PEM file `path` (`what` names them in errors).
pub fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// A client's TLS config (`hookwall send`, the PostgreSQL store): trusts the CA certificates in
/// `ca` (PEM) if given, else the system's roots, presents `identity` (certificate chain, key)
/// when the server asks for a client certificate, and offers `alpn`.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path, "CA certificates")? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Read {
            what: "TLS versions",
            path: PathBuf::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = read_certs(cert, "client certificate")?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
                what: "client key",
                path: key.to_path_buf(),
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| TlsError::Pair {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                    reason: e.to_string(),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}
