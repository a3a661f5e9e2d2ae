//! Shared-secret credentials: `bearer` (token in `Authorization`), `basic` (user and password)
//! and `api-key` (a named header).
//!
//! Credentials are compared as SHA-256 digests in constant time, so neither the content nor the
//! length of a configured token leaks through timing; every configured secret is compared even
//! after a match.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::parse::{self, Authorization};
use super::{Diagnostic, VerifyError};
use crate::config::Secret;
use crate::event::InboundRequest;

const AUTHORIZATION: &str = "authorization";

#[derive(Debug)]
pub(crate) enum Kind {
    Bearer,
    Basic { username: String },
    ApiKey { header: String },
}

pub(crate) struct CredentialVerifier {
    kind: Kind,
    digests: Vec<[u8; 32]>,
    /// Kept to attach credentials in `hookwall send`.
    first: Secret,
}

impl std::fmt::Debug for CredentialVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialVerifier")
            .field("kind", &self.kind)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.digests.len()),
            )
            .finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether `given` equals the secret `expected`, in time that reveals neither the secret's
/// content nor its length: both sides are hashed to 32 bytes first, then the digests are
/// compared in constant time. The one compare for a single secret outside the schemes (the
/// admin token).
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    bool::from(digest(given).ct_eq(&digest(expected)))
}

impl CredentialVerifier {
    /// `secrets` is non-empty (config validation requires it).
    pub(crate) fn new(kind: Kind, secrets: &[Secret]) -> CredentialVerifier {
        let kind = match kind {
            Kind::ApiKey { header } => Kind::ApiKey {
                header: header.to_ascii_lowercase(),
            },
            other => other,
        };
        CredentialVerifier {
            kind,
            digests: secrets.iter().map(|s| digest(s.expose())).collect(),
            first: secrets
                .first()
                .cloned()
                .unwrap_or_else(|| Secret::new(Vec::new())),
        }
    }

    fn any_matches(&self, given: &[u8]) -> subtle::Choice {
        let given = digest(given);
        let mut hit = subtle::Choice::from(0);
        for d in &self.digests {
            hit |= d.ct_eq(&given);
        }
        hit
    }

    /// The (lowercase) header the credential is read from.
    pub(crate) fn header(&self) -> &str {
        match &self.kind {
            Kind::ApiKey { header } => header.as_str(),
            _ => AUTHORIZATION,
        }
    }

    pub(crate) fn check(
        &self,
        request: &InboundRequest,
        diag: &mut Diagnostic,
    ) -> Result<(), VerifyError> {
        let header = self.header();
        diag.header = Some(header.to_string());
        let value = request
            .header(header)
            .ok_or_else(|| VerifyError::SignatureMissing {
                header: header.to_string(),
            })?;
        diag.header_bytes = Some(value.len());
        let malformed = |reason: &str| VerifyError::SignatureMalformed {
            header: header.to_string(),
            reason: reason.to_string(),
        };
        if value.len() > parse::MAX_SIGNATURE_HEADER_BYTES {
            return Err(malformed("too long"));
        }
        let invalid = VerifyError::SignatureInvalid {
            header: header.to_string(),
            signed_bytes: 0,
        };
        let ok = match (&self.kind, parse::authorization(value)) {
            (Kind::ApiKey { .. }, _) => {
                let key = value.trim();
                if key.is_empty() {
                    return Err(malformed("empty"));
                }
                self.any_matches(key.as_bytes())
            }
            (Kind::Bearer, Authorization::Bearer(token)) => self.any_matches(token.as_bytes()),
            (Kind::Basic { username }, Authorization::Basic(user, password)) => {
                digest(username.as_bytes()).ct_eq(&digest(&user)) & self.any_matches(&password)
            }
            (Kind::Bearer, _) => return Err(malformed("expected `Bearer <token>`")),
            (Kind::Basic { .. }, _) => {
                return Err(malformed("expected `Basic <base64 of user:password>`"));
            }
        };
        if bool::from(ok) { Ok(()) } else { Err(invalid) }
    }

    /// The header that authenticates a request, with the first secret.
    pub(crate) fn sign(&self) -> (String, String) {
        let secret = String::from_utf8_lossy(self.first.expose()).into_owned();
        match &self.kind {
            Kind::Bearer => (AUTHORIZATION.into(), format!("Bearer {secret}")),
            Kind::Basic { username } => (
                AUTHORIZATION.into(),
                format!("Basic {}", BASE64.encode(format!("{username}:{secret}"))),
            ),
            Kind::ApiKey { header } => (header.clone(), secret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::secret_eq;

    #[test]
    fn secret_eq_matches_only_the_same_bytes_whatever_the_lengths() {
        assert!(secret_eq(b"s3cret-admin", b"s3cret-admin"));
        assert!(!secret_eq(b"s3cret-admiN", b"s3cret-admin"));
        assert!(!secret_eq(b"s3cret", b"s3cret-admin"));
        assert!(!secret_eq(b"", b"s3cret-admin"));
        assert!(secret_eq(b"", b""));
    }
}
