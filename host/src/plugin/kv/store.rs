//! The plugins' key-value store in the store itself ([`crate::store::Backend::kv_get`] and
//! friends), with TTLs turned into absolute expiries by the calling plugin's wall clock. Used
//! when no Redis is configured: the embedded store's `plugin_kv` table (one replica), or the
//! shared store's `hookwall.plugin_kv` (every replica sees one state).
//!
//! Embedded, reads are snapshot reads on the calling thread, and writes go through the store's
//! writer thread like every other write, so they share group commits and are durable when the
//! call returns; the call awaits the commit without holding its thread.

use super::{KvError, KvScope, PluginKv};
use crate::store::{Store, StoreError};

/// [`PluginKv`] on the store (embedded or shared).
#[derive(Clone)]
pub struct StoreKv {
    store: Store,
}

impl StoreKv {
    /// The key-value store kept in `store`.
    pub fn new(store: Store) -> StoreKv {
        StoreKv { store }
    }
}

fn backend(e: StoreError) -> KvError {
    KvError::Backend(e.to_string())
}

/// The absolute expiry of a value set at `now_ms` with `ttl_ms` (at least 1: 0 means never).
fn expiry(now_ms: u64, ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|ttl| now_ms.saturating_add(ttl).max(1))
}

#[async_trait::async_trait]
impl PluginKv for StoreKv {
    async fn get(&self, scope: KvScope<'_>, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store
            .kv_get(scope.plugin, key, scope.now_ms)
            .await
            .map_err(backend)
    }

    async fn set(
        &self,
        scope: KvScope<'_>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        self.store
            .kv_set(scope.plugin, key, &value, expiry(scope.now_ms, ttl_ms))
            .await
            .map_err(backend)
    }

    async fn delete(&self, scope: KvScope<'_>, key: &str) -> Result<bool, KvError> {
        self.store
            .kv_delete(scope.plugin, key)
            .await
            .map_err(backend)
    }

    async fn compare_and_swap(
        &self,
        scope: KvScope<'_>,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        self.store
            .kv_compare_and_swap(
                scope.plugin,
                key,
                expected,
                &value,
                expiry(scope.now_ms, ttl_ms),
                scope.now_ms,
            )
            .await
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scope for plugin `plugin` at wall-clock `now_ms`.
    fn at(plugin: &str, now_ms: u64) -> KvScope<'_> {
        KvScope {
            plugin,
            now_ms,
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn follows_the_kv_contract_and_expires_by_the_callers_clock() {
        let dir = tempfile::tempdir().unwrap();
        let kv = StoreKv::new(Store::open(dir.path()).unwrap());
        let kv: &dyn PluginKv = &kv;
        super::super::check_kv_contract(kv, |plugin| at(plugin, 5_000)).await;
        // Expiry: set at 0 with a 1000 ms TTL.
        let p = at("p", 0);
        kv.set(p, "t", b"v".to_vec(), Some(1_000)).await.unwrap();
        assert_eq!(
            kv.get(at("p", 999), "t").await.unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(kv.get(at("p", 1_000), "t").await.unwrap(), None);
        // Expired counts as absent for compare-and-swap.
        assert!(
            kv.compare_and_swap(at("p", 1_000), "t", None, b"w".to_vec(), None)
                .await
                .unwrap()
        );
    }
}
