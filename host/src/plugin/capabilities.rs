//! Host capabilities behind the WIT imports beyond `log`, `config` and the key-value store
//! ([`super::kv`]): plugin counters.

use std::collections::HashMap;
use std::sync::Mutex;

/// Distinct counter names one plugin may create; more are ignored so a plugin cannot blow up
/// the metrics' cardinality.
const MAX_COUNTERS_PER_PLUGIN: usize = 64;
/// Counters bumped by plugins, keyed by (plugin, name).
#[derive(Default)]
pub struct PluginCounters(Mutex<HashMap<(String, String), u64>>);

impl PluginCounters {
    /// Adds `delta` to `plugin`'s counter `name` (saturating). A new name is ignored when it is
    /// empty, longer than 64 bytes, or the plugin already has 64 (`MAX_COUNTERS_PER_PLUGIN`).
    pub fn add(&self, plugin: &str, name: &str, delta: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (plugin.to_string(), name.to_string());
        if let Some(v) = map.get_mut(&key) {
            *v = v.saturating_add(delta);
            return;
        }
        let existing = map.keys().filter(|(p, _)| p == plugin).count();
        if existing < MAX_COUNTERS_PER_PLUGIN && !name.is_empty() && name.len() <= 64 {
            map.insert(key, delta);
        }
    }

    /// A copy of every counter, sorted.
    pub fn snapshot(&self) -> Vec<((String, String), u64)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_capped_per_plugin() {
        let c = PluginCounters::default();
        for i in 0..100 {
            c.add("p", &format!("n{i}"), 1);
        }
        c.add("p", "n0", 5);
        c.add("q", "x", 1);
        let snap = c.snapshot();
        assert_eq!(snap.iter().filter(|((p, _), _)| p == "p").count(), 64);
        assert!(snap.contains(&(("p".into(), "n0".into()), 6)));
        assert!(snap.contains(&(("q".into(), "x".into()), 1)));
    }
}
