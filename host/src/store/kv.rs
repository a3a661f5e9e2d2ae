//! The plugins' key-value store, embedded: a redb table keyed by (plugin, key).
//!
//! Reads are snapshot reads on the calling thread. Writes go through the writer thread like
//! every other write, so they share group commits and are durable when the call returns.
//! Values carry their expiry; an expired value reads as absent and is overwritten freely.

use redb::ReadableDatabase;
use tokio::sync::oneshot;

use super::writer::{Job, KvOp, Op, Reply};
use super::{PLUGIN_KV, Store, StoreError};
use crate::plugin::{KvError, PluginKv};

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

impl PluginKv for Store {
    fn get(&self, plugin: &str, key: &str, now_ms: u64) -> Result<Option<Vec<u8>>, KvError> {
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| backend(StoreError::storage(e)))?;
        let table = txn
            .open_table(PLUGIN_KV)
            .map_err(|e| backend(StoreError::storage(e)))?;
        let found = table
            .get((plugin, key))
            .map_err(|e| backend(StoreError::storage(e)))?;
        Ok(found.and_then(|v| live(v.value(), now_ms).map(<[u8]>::to_vec)))
    }

    fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
    ) -> Result<(), KvError> {
        self.kv_write(KvOp::Set {
            plugin: plugin.into(),
            key: key.into(),
            stored: encode(&value, expires_at_ms),
        })
        .map(|_| ())
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<bool, KvError> {
        self.kv_write(KvOp::Delete {
            plugin: plugin.into(),
            key: key.into(),
        })
    }

    fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, KvError> {
        self.kv_write(KvOp::CompareAndSwap {
            plugin: plugin.into(),
            key: key.into(),
            expected,
            stored: encode(&value, expires_at_ms),
            now_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_cas_delete_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kv: &dyn PluginKv = &store;
        assert_eq!(kv.get("p", "k", 0).unwrap(), None);
        // CAS from absent.
        assert!(
            kv.compare_and_swap("p", "k", None, b"1".to_vec(), None, 0)
                .unwrap()
        );
        assert!(
            !kv.compare_and_swap("p", "k", None, b"2".to_vec(), None, 0)
                .unwrap()
        );
        assert!(
            kv.compare_and_swap("p", "k", Some(b"1".to_vec()), b"2".to_vec(), None, 0)
                .unwrap()
        );
        assert_eq!(kv.get("p", "k", 0).unwrap(), Some(b"2".to_vec()));
        // Scoped per plugin.
        assert_eq!(kv.get("other", "k", 0).unwrap(), None);
        // Expiry.
        kv.set("p", "t", b"v".to_vec(), Some(1_000)).unwrap();
        assert_eq!(kv.get("p", "t", 999).unwrap(), Some(b"v".to_vec()));
        assert_eq!(kv.get("p", "t", 1_000).unwrap(), None);
        assert!(
            kv.compare_and_swap("p", "t", None, b"w".to_vec(), None, 1_000)
                .unwrap()
        );
        assert!(kv.delete("p", "k").unwrap());
        assert!(!kv.delete("p", "k").unwrap());
    }
}
