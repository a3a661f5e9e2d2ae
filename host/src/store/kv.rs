//! The plugins' key-value store, embedded: a redb table keyed by (plugin, key).
//!
//! Reads are snapshot reads on the calling thread. Writes go through the writer thread like
//! every other write, so they share group commits and are durable when the call returns.
//! Values carry their expiry; an expired value reads as absent and is overwritten freely.

use tokio::sync::oneshot;

use super::writer::{Job, KvOp, Op, Reply};
use super::{PLUGIN_KV, Store, StoreError};
use crate::plugin::{KvError, KvScope, PluginKv};

/// Stored form: 8 bytes of big-endian expiry (0 = never) followed by the value.
pub(super) fn encode(value: &[u8], expires_at_ms: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The live value of a stored entry, `None` when expired.
pub(super) fn live(stored: &[u8], now_ms: u64) -> Option<&[u8]> {
    let (expiry, value) = stored.split_at_checked(8)?;
    let expires = u64::from_be_bytes(expiry.try_into().ok()?);
    (expires == 0 || expires > now_ms).then_some(value)
}

fn backend(e: StoreError) -> KvError {
    KvError::Backend(e.to_string())
}

impl Store {
    /// Runs a key-value write on the writer thread and waits for its commit. Must be called
    /// from a blocking thread (plugins run there), not from an async task.
    fn kv_write(&self, op: KvOp) -> Result<bool, KvError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .jobs
            .blocking_send(Job {
                op: Op::Kv(op),
                reply,
            })
            .map_err(|_| backend(StoreError::Closed))?;
        match rx
            .blocking_recv()
            .map_err(|_| backend(StoreError::Closed))?
        {
            Ok(Reply::Kv(done)) => Ok(done),
            Ok(_) => Err(KvError::Backend("unexpected reply".into())),
            Err(e) => Err(backend(e)),
        }
    }
}

/// The absolute expiry of a value set at `now_ms` with `ttl_ms` (at least 1: 0 means never).
fn expiry(now_ms: u64, ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|ttl| now_ms.saturating_add(ttl).max(1))
}

impl PluginKv for Store {
    fn get(&self, scope: KvScope<'_>, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let txn = self.inner.db.begin_read().map_err(backend)?;
        let table = txn
            .open_table(PLUGIN_KV)
            .map_err(|e| backend(StoreError::storage(e)))?;
        let found = table
            .get((scope.plugin, key))
            .map_err(|e| backend(StoreError::storage(e)))?;
        Ok(found.and_then(|v| live(v.value(), scope.now_ms).map(<[u8]>::to_vec)))
    }

    fn set(
        &self,
        scope: KvScope<'_>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        self.kv_write(KvOp::Set {
            plugin: scope.plugin.into(),
            key: key.into(),
            stored: encode(&value, expiry(scope.now_ms, ttl_ms)),
        })
        .map(|_| ())
    }

    fn delete(&self, scope: KvScope<'_>, key: &str) -> Result<bool, KvError> {
        self.kv_write(KvOp::Delete {
            plugin: scope.plugin.into(),
            key: key.into(),
        })
    }

    fn compare_and_swap(
        &self,
        scope: KvScope<'_>,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        self.kv_write(KvOp::CompareAndSwap {
            plugin: scope.plugin.into(),
            key: key.into(),
            expected,
            stored: encode(&value, expiry(scope.now_ms, ttl_ms)),
            now_ms: scope.now_ms,
        })
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

    #[test]
    fn follows_the_kv_contract_and_expires_by_the_callers_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kv: &dyn PluginKv = &store;
        crate::plugin::check_kv_contract(kv, |plugin| at(plugin, 5_000));
        // Expiry: set at 0 with a 1000 ms TTL.
        let p = at("p", 0);
        kv.set(p, "t", b"v".to_vec(), Some(1_000)).unwrap();
        assert_eq!(kv.get(at("p", 999), "t").unwrap(), Some(b"v".to_vec()));
        assert_eq!(kv.get(at("p", 1_000), "t").unwrap(), None);
        // Expired counts as absent for compare-and-swap.
        assert!(
            kv.compare_and_swap(at("p", 1_000), "t", None, b"w".to_vec(), None)
                .unwrap()
        );
    }
}
