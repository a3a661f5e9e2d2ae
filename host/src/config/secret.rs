//! Secrets in config: `env:NAME`, `file:PATH` or a literal, resolved once at load.
//!
//! A [`Secret`] never prints its value: `Debug` and `Display` show `[redacted]`, and resolution
//! errors name the reference (`env:DEMO_SECRET`), never the content.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// How a secret is written in the config file, before resolution.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretRef(String);

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once(':') {
            Some((kind @ ("env" | "file"), name)) => write!(f, "{kind}:{name}"),
            _ => f.write_str("[redacted literal]"),
        }
    }
}

impl SecretRef {
    /// A literal secret (used by tests and the `send` command's overrides).
    pub fn literal(value: impl Into<String>) -> Self {
        SecretRef(value.into())
    }

    /// Reads the secret's value. `base_dir` anchors relative `file:` paths.
    pub fn resolve(&self, base_dir: &Path, key: &str) -> Result<Secret, ConfigError> {
        let bad = |reason: String| ConfigError::Secret {
            key: key.to_string(),
            reference: format!("{self:?}"),
            reason,
        };
        let value = if let Some(name) = self.0.strip_prefix("env:") {
            std::env::var(name)
                .map_err(|_| bad(format!("environment variable {name} is not set")))?
        } else if let Some(path) = self.0.strip_prefix("file:") {
            let path = base_dir.join(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            // Files written by editors and `echo` end in a newline that is not part of the secret.
            text.trim_end_matches(['\n', '\r']).to_string()
        } else {
            self.0.clone()
        };
        if value.is_empty() {
            return Err(bad("the secret is empty".into()));
        }
        Ok(Secret(value.into_bytes()))
    }
}

/// A resolved secret value. Cloning copies the bytes; printing never does.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret holding `bytes` as they are (no resolution, no trimming).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// The raw bytes, for keying a MAC. Do not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_literal_values() {
        let r = SecretRef::literal("s3cr3t-value");
        assert!(!format!("{r:?}").contains("s3cr3t"));
        let s = r.resolve(Path::new("."), "k").unwrap();
        assert!(!format!("{s:?} {s}").contains("s3cr3t"));
        assert_eq!(s.expose(), b"s3cr3t-value");
    }

    #[test]
    fn env_and_file_references_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "from-file\n").unwrap();
        let s = SecretRef("file:key".into())
            .resolve(dir.path(), "k")
            .unwrap();
        assert_eq!(s.expose(), b"from-file");
        let err = SecretRef("env:HOOKWALL_TEST_SURELY_UNSET".into())
            .resolve(dir.path(), "sources.x.verify.secrets")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HOOKWALL_TEST_SURELY_UNSET"), "{err}");
        assert!(err.contains("sources.x.verify.secrets"), "{err}");
    }
}
