//! The plugins' key-value store: the [`PluginKv`] capability beside its consumer (the
//! `kv` WIT import, [`super::imports`]), with its two backends next to it:
//! [`store`] (the store's own table: embedded for one replica, or PostgreSQL shared by replicas)
//! and [`redis`] (`[storage] redis`, shared by replicas). Both follow one contract, checked by one test (`check_kv_contract`) run
//! against each.

pub mod redis;
pub mod store;

use std::time::Instant;

pub use redis::RedisKv;
pub use store::StoreKv;

/// Key and value bounds for the key-value store.
pub const MAX_KV_KEY_BYTES: usize = 512;
/// The largest value a plugin may store, in bytes (1 MiB).
pub const MAX_KV_VALUE_BYTES: usize = 1024 * 1024;

/// Why a key-value operation failed; the plugin sees the message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// The key or value is over its size bound.
    #[error("{0}")]
    TooLarge(String),
    /// The backend is unreachable, failed, or did not answer before the call's deadline.
    #[error("key-value store unavailable: {0}")]
    Backend(String),
}

/// Who is asking and until when. Every operation is confined to one plugin's keys and must
/// give up by its call's deadline: time spent in a host call counts against the plugin's wall
/// deadline, and a backend that waits (Redis) must not hold the call past it.
#[derive(Debug, Clone, Copy)]
pub struct KvScope<'a> {
    /// The calling plugin: its keys are invisible to every other plugin.
    pub plugin: &'a str,
    /// Wall-clock now (ms since the Unix epoch): the embedded store's expiry clock.
    pub now_ms: u64,
    /// When the plugin's call runs out of time.
    pub deadline: Instant,
}

/// A key-value store scoped per plugin: embedded (the redb store, one replica) or Redis
/// (`[storage] redis`, shared by replicas). Calls are async: a plugin call runs on its
/// request's task, and waiting for the store's writer or for Redis must not hold the worker
/// thread. TTLs are relative, so each backend expires values by its own clock (Redis': one
/// clock for every replica).
#[async_trait::async_trait]
pub trait PluginKv: Send + Sync {
    /// The live value of `key` (`None`: absent or expired).
    async fn get(&self, scope: KvScope<'_>, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key`, expiring after `ttl_ms` when given (replacing any previous expiry).
    async fn set(
        &self,
        scope: KvScope<'_>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError>;
    /// Removes `key`; true when it was set.
    async fn delete(&self, scope: KvScope<'_>, key: &str) -> Result<bool, KvError>;
    /// Sets `key` only if its live value equals `expected` (`None`: absent or expired),
    /// atomically with respect to every other caller (other threads, other replicas).
    async fn compare_and_swap(
        &self,
        scope: KvScope<'_>,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError>;
}

/// Checks the key/value bounds shared by every backend.
pub fn check_kv_sizes(key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
    if key.len() > MAX_KV_KEY_BYTES {
        return Err(KvError::TooLarge(format!(
            "key of {} bytes is over the {MAX_KV_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    if let Some(v) = value
        && v.len() > MAX_KV_VALUE_BYTES
    {
        return Err(KvError::TooLarge(format!(
            "value of {} bytes is over the {MAX_KV_VALUE_BYTES}-byte limit",
            v.len()
        )));
    }
    Ok(())
}

/// The semantics every [`PluginKv`] backend must have, checked on an empty store; `scope`
/// gives a live scope for a plugin name. Expiry is each backend's own test (clocks differ).
#[cfg(test)]
pub(crate) async fn check_kv_contract(kv: &dyn PluginKv, scope: fn(&str) -> KvScope<'_>) {
    let p = scope("p");
    assert_eq!(kv.get(p, "k").await.unwrap(), None);
    // Compare-and-swap from absent, a conflict either way, then from the current value.
    assert!(
        kv.compare_and_swap(p, "k", None, b"1".to_vec(), None)
            .await
            .unwrap()
    );
    assert!(
        !kv.compare_and_swap(p, "k", None, b"2".to_vec(), None)
            .await
            .unwrap()
    );
    let wrong = Some(b"0".to_vec());
    assert!(
        !kv.compare_and_swap(p, "k", wrong, b"2".to_vec(), None)
            .await
            .unwrap()
    );
    let right = Some(b"1".to_vec());
    assert!(
        kv.compare_and_swap(p, "k", right, b"2".to_vec(), None)
            .await
            .unwrap()
    );
    assert_eq!(kv.get(p, "k").await.unwrap(), Some(b"2".to_vec()));
    // Expecting a value of an absent key is a conflict, not a write.
    let empty = Some(Vec::new());
    assert!(
        !kv.compare_and_swap(p, "nope", empty, b"x".to_vec(), None)
            .await
            .unwrap()
    );
    assert_eq!(kv.get(p, "nope").await.unwrap(), None);
    // Any bytes; an empty value is present, not absent.
    let bytes = vec![0u8, 0xff, b':', 0, 7];
    kv.set(p, "bin", bytes.clone(), None).await.unwrap();
    assert_eq!(kv.get(p, "bin").await.unwrap(), Some(bytes.clone()));
    assert!(
        kv.compare_and_swap(p, "bin", Some(bytes), Vec::new(), None)
            .await
            .unwrap()
    );
    assert_eq!(kv.get(p, "bin").await.unwrap(), Some(Vec::new()));
    // Scoped per plugin, even when names and keys contain `:`.
    assert_eq!(kv.get(scope("other"), "k").await.unwrap(), None);
    kv.set(scope("a:b"), "c", b"ab-c".to_vec(), None)
        .await
        .unwrap();
    kv.set(scope("a"), "b:c", b"a-bc".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(
        kv.get(scope("a:b"), "c").await.unwrap(),
        Some(b"ab-c".to_vec())
    );
    assert_eq!(
        kv.get(scope("a"), "b:c").await.unwrap(),
        Some(b"a-bc".to_vec())
    );
    // A zero TTL expires at once.
    kv.set(p, "z", b"v".to_vec(), Some(0)).await.unwrap();
    assert_eq!(kv.get(p, "z").await.unwrap(), None);
    assert!(kv.delete(p, "k").await.unwrap());
    assert!(!kv.delete(p, "k").await.unwrap());
    assert_eq!(kv.get(p, "k").await.unwrap(), None);
}
