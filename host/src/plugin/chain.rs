//! Chain semantics, apart from wasm: how the actions of a source's plugins, called in order,
//! become one [`ChainOutcome`].
//!
//! - A delivery that names a sink is final: it is routed there, and no later plugin sees it.
//! - An unrouted delivery (`sink: none`) becomes an input of the next plugin: the same event
//!   (id, source, method, path, query, arrival time) with the delivery's headers and body.
//! - After the last plugin, unrouted output goes to each of the source's default sinks, at
//!   normal priority; with no default sinks, that is the last plugin's invalid output.
//! - A `reject` or `respond` anywhere ends the chain with it; a failure ends it as
//!   [`ChainOutcome::Failed`]; a plugin with no room for a call ends it as [`PluginBusy`].
//! - `drop` ends that branch; the chain is [`ChainOutcome::Dropped`] (with the last drop's
//!   reason) only when nothing at all was routed.
//! - A plugin of the chain that is not loaded fails the chain when its turn comes, even if no
//!   input reaches it.
//!
//! [`run`] takes the plugin calls as a [`Calls`], so the rules above are tested in-process with
//! fake plugins (see `chain/tests.rs`); `PluginHost::run_chain` passes the real wasm calls.

use crate::event::Priority;

use super::action::{Action, ChainOutcome, Event, Routed};
use super::{CallError, CallFailure, PluginBusy};

/// The plugins a chain calls: the loaded wasm plugins, or fakes in tests.
pub(super) trait Calls {
    /// Whether plugin `name` is loaded.
    fn has(&self, name: &str) -> bool;
    /// One call of plugin `name` (loaded) on `input`.
    async fn call(&mut self, name: &str, input: &Event) -> Result<Action, CallError>;
}

/// Why a chain fails at plugin `name` when it is not loaded.
pub(super) fn not_loaded(name: &str) -> CallFailure {
    CallFailure::InvalidOutput(format!("plugin `{name}` is not loaded"))
}

/// Runs the chain of plugins `names` on `event` with `plugins`; `default_sinks` receive the
/// unrouted output of the last plugin; `sink_exists` checks the sink names plugins route to.
pub(super) async fn run(
    names: &[String],
    event: Event,
    default_sinks: &[String],
    sink_exists: impl Fn(&str) -> bool,
    mut plugins: impl Calls,
) -> Result<ChainOutcome, PluginBusy> {
    let mut run = ChainRun {
        inputs: vec![event],
        routed: Vec::new(),
        last_drop: None,
    };
    for name in names {
        if !plugins.has(name) {
            return Ok(ChainOutcome::Failed {
                plugin: name.clone(),
                failure: not_loaded(name),
            });
        }
        let mut next = Vec::new();
        for input in std::mem::take(&mut run.inputs) {
            let action = match plugins.call(name, &input).await {
                Ok(action) => action,
                Err(CallError::Busy(reason)) => {
                    let plugin = name.clone();
                    return Err(PluginBusy { plugin, reason });
                }
                Err(CallError::Failed(failure)) => {
                    let plugin = name.clone();
                    return Ok(ChainOutcome::Failed { plugin, failure });
                }
            };
            if let Some(end) = run.take(name, input, action, &mut next, &sink_exists) {
                return Ok(end);
            }
        }
        run.inputs = next;
    }
    Ok(run.finish(names, default_sinks))
}

/// One event's way through a chain: the next plugin's inputs, and what is routed so far.
struct ChainRun {
    inputs: Vec<Event>,
    routed: Vec<Routed>,
    last_drop: Option<String>,
}

impl ChainRun {
    /// Takes `plugin`'s action on `input`: routed deliveries are final, unrouted ones go to
    /// `next` (the next plugin's inputs). `Some` ends the chain with that outcome.
    fn take(
        &mut self,
        plugin: &str,
        input: Event,
        action: Action,
        next: &mut Vec<Event>,
        sink_exists: &impl Fn(&str) -> bool,
    ) -> Option<ChainOutcome> {
        match action {
            Action::Reject(r) => return Some(ChainOutcome::Rejected(r)),
            Action::Respond(r) => return Some(ChainOutcome::Responded(r)),
            Action::Drop(reason) => self.last_drop = Some(reason),
            Action::Forward(deliveries) => {
                for d in deliveries {
                    match d.sink {
                        Some(sink) if !sink_exists(&sink) => {
                            return Some(ChainOutcome::Failed {
                                plugin: plugin.to_string(),
                                failure: CallFailure::InvalidOutput(format!(
                                    "routed to unknown sink `{sink}`"
                                )),
                            });
                        }
                        Some(sink) => self.routed.push(Routed {
                            sink,
                            headers: d.headers,
                            body: d.body,
                            priority: d.priority,
                        }),
                        None => next.push(Event {
                            headers: d.headers,
                            body: d.body,
                            ..input.clone()
                        }),
                    }
                }
            }
        }
        None
    }

    /// After the last plugin (`names`): unrouted output goes to each of `default_sinks`.
    fn finish(mut self, names: &[String], default_sinks: &[String]) -> ChainOutcome {
        if !self.inputs.is_empty() && default_sinks.is_empty() {
            return ChainOutcome::Failed {
                plugin: names.last().cloned().unwrap_or_default(),
                failure: CallFailure::InvalidOutput(
                    "forwarded unrouted output but the source has no sinks".into(),
                ),
            };
        }
        for input in self.inputs {
            for sink in default_sinks {
                self.routed.push(Routed {
                    sink: sink.clone(),
                    headers: input.headers.clone(),
                    body: input.body.clone(),
                    priority: Priority::Normal,
                });
            }
        }
        match (self.routed.is_empty(), self.last_drop) {
            (true, Some(reason)) => ChainOutcome::Dropped(reason),
            _ => ChainOutcome::Forward(self.routed),
        }
    }
}

#[cfg(test)]
mod tests;
