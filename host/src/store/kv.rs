//! The `plugin_kv` table: values by (namespace, key), each with an absolute expiry, for the
//! plugins' embedded key-value store ([`crate::plugin::kv::StoreKv`]). The store knows
//! bytes and expiries, not plugins.
//!
//! Reads are snapshot reads on the calling thread. Writes go through the writer thread like
//! every other write, so they share group commits and are durable when the call returns; the
//! caller awaits the commit.

use tokio::sync::oneshot;

use super::writer::{Job, KvOp};
use super::{Embedded, PLUGIN_KV, StoreError};

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

impl Embedded {
    /// Runs a key-value write on the writer thread and waits for its commit.
    async fn kv_write(&self, op: KvOp) -> Result<bool, StoreError> {
        let (resp, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(Job::Kv { op, resp })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The value of `key` in `namespace` that is live at `now_ms`.
    pub fn kv_get(
        &self,
        namespace: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(PLUGIN_KV).map_err(StoreError::storage)?;
        let found = table.get((namespace, key)).map_err(StoreError::storage)?;
        Ok(found.and_then(|v| live(v.value(), now_ms).map(<[u8]>::to_vec)))
    }

    /// Sets `key` in `namespace`, expiring at `expires_at_ms` (never: `None`).
    pub async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        self.kv_write(KvOp::Set {
            plugin: namespace.into(),
            key: key.into(),
            stored: encode(value, expires_at_ms),
        })
        .await
        .map(|_| ())
    }

    /// Removes `key` from `namespace`; true when it was there.
    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        self.kv_write(KvOp::Delete {
            plugin: namespace.into(),
            key: key.into(),
        })
        .await
    }

    /// Sets `key` only if its value live at `now_ms` equals `expected` (`None`: absent or
    /// expired), in the writer's transaction, so no other write interleaves.
    pub async fn kv_compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: &[u8],
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.kv_write(KvOp::CompareAndSwap {
            plugin: namespace.into(),
            key: key.into(),
            expected,
            stored: encode(value, expires_at_ms),
            now_ms,
        })
        .await
    }
}
