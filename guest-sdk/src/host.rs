//! What the host offers: this plugin's config and the host log.

use serde::de::DeserializeOwned;

use crate::{Error, bindings::hookwall::plugin::host as wit};

/// This plugin's config value for `key`, if set. Non-string TOML values arrive as JSON text
/// (see [`config_json`]).
pub fn config(key: &str) -> Option<String> {
    wit::config(key)
}

/// This plugin's config value for `key` parsed as JSON into `T`: `Ok(None)` when unset, `Err`
/// when set but not the expected JSON.
///
/// Non-string TOML values (arrays, tables, numbers, booleans) arrive as JSON text. A TOML
/// string arrives as-is, so a string meant as JSON must hold JSON text.
pub fn config_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    config(key).map(|text| parse_config(key, &text)).transpose()
}

fn parse_config<T: DeserializeOwned>(key: &str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::new(format!("config `{key}`: invalid JSON: {e}")))
}

/// Lines in the host's log, tagged by the host with the plugin and event.
///
/// Functions take a message; the macros of the same names take `format!` arguments:
///
/// ```no_run
/// use hookwall_guest::log;
/// log::info("accepted");
/// log::warn!("retrying {} (attempt {})", "evt_1", 2);
/// ```
pub mod log {
    use super::wit::{self, Level};

    pub use crate::{debug, error, info, trace, warn};

    /// Logs `message` at trace level.
    pub fn trace(message: &str) {
        wit::log(Level::Trace, message);
    }

    /// Logs `message` at debug level.
    pub fn debug(message: &str) {
        wit::log(Level::Debug, message);
    }

    /// Logs `message` at info level.
    pub fn info(message: &str) {
        wit::log(Level::Info, message);
    }

    /// Logs `message` at warn level.
    pub fn warn(message: &str) {
        wit::log(Level::Warn, message);
    }

    /// Logs `message` at error level.
    pub fn error(message: &str) {
        wit::log(Level::Error, message);
    }
}

/// Logs a `format!` message at trace level: `trace!("got {n} items")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at debug level: `debug!("got {n} items")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at info level: `info!("got {n} items")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at warn level: `warn!("got {n} items")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at error level: `error!("got {n} items")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_errors_name_the_key() {
        assert_eq!(parse_config::<Vec<String>>("k", r#"["a"]"#).unwrap(), ["a"]);
        let err = parse_config::<Vec<String>>("rules", "[oops").unwrap_err();
        assert!(
            err.message().starts_with("config `rules`: invalid JSON:"),
            "{err}"
        );
    }
}

/// The host's clock. WASI clocks are not reachable from a plugin; this is the one clock.
pub mod clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        crate::bindings::hookwall::plugin::clock::now_ms()
    }
}

/// Counters exported by the host as `hookwall_plugin_counter_total{plugin, name}`.
pub mod metrics {
    /// Adds `delta` to counter `name`. Keep names to a small fixed set (the host keeps at most
    /// 64 per plugin).
    pub fn counter_add(name: &str, delta: u64) {
        crate::bindings::hookwall::plugin::metrics::counter_add(name, delta);
    }
}

/// A key-value store private to this plugin, persisted by the host (embedded, or Redis when
/// replicas share state). Use it for state that must outlive one event, e.g. an order's
/// status; use [`kv::compare_and_swap`] when two events may update the same key at once.
///
/// ```no_run
/// use hookwall_guest::kv;
/// # fn f() -> Result<(), hookwall_guest::Error> {
/// let seen: u64 = kv::get_json("count")?.unwrap_or(0);
/// kv::set_json("count", &(seen + 1), None)?;
/// # Ok(()) }
/// ```
pub mod kv {
    use serde::{Serialize, de::DeserializeOwned};

    use crate::Error;
    use crate::bindings::hookwall::plugin::kv as wit;

    fn backend(e: String) -> Error {
        Error::new(format!("kv: {e}"))
    }

    /// The value at `key`, if set and not expired.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        wit::get(key).map_err(backend)
    }

    /// Sets `key`, expiring after `ttl_ms` milliseconds when given.
    pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), Error> {
        wit::set(key, value, ttl_ms).map_err(backend)
    }

    /// Removes `key`; true when it was set.
    pub fn delete(key: &str) -> Result<bool, Error> {
        wit::delete(key).map_err(backend)
    }

    /// Sets `key` to `value` only if its current value is `expected` (`None`: only if unset);
    /// true when it was set.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool, Error> {
        wit::compare_and_swap(key, expected, value, ttl_ms).map_err(backend)
    }

    /// [`get`], parsed as JSON.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        get(key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::new(format!("kv `{key}`: invalid JSON: {e}")))
            })
            .transpose()
    }

    /// [`set`], serialised as JSON.
    pub fn set_json<T: Serialize + ?Sized>(
        key: &str,
        value: &T,
        ttl_ms: Option<u64>,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::new(format!("kv `{key}`: cannot serialize: {e}")))?;
        set(key, &bytes, ttl_ms)
    }
}
