//! # hookwall-guest: write Hookwall plugins in plain Rust
//!
//! A Hookwall plugin is a WebAssembly component that implements the `hookwall:plugin` world
//! (`wit/plugin.wit`): the host calls `handle` once per verified event, in a fresh sandboxed
//! instance, and acts on the returned [`Action`]. This crate hides the generated bindings behind
//! ordinary Rust types:
//!
//! - [`Event`]: the request as received (or as the previous plugin of the chain reshaped it), with
//!   [`Event::header`], [`Event::json`], [`Event::body_str`].
//! - [`Action`] and [`Delivery`]: what to do with it — forward deliveries (to a named sink, or
//!   unrouted so the next plugin or the source's sinks get it), drop it, or reject it with a 4xx.
//! - [`config`] / [`config_json`]: this plugin's settings from the host config.
//! - [`log`]: lines in the host's log, tagged with the plugin and event.
//! - [`Plugin`] and [`export!`]: the entry point.
//!
//! A plugin crate is a `cdylib` built with `cargo build --release --target wasm32-wasip2`, which
//! emits a component directly.
//!
//! ```no_run
//! use hookwall_guest::{Action, Delivery, Event, Plugin, config, log};
//!
//! struct Tagger;
//!
//! impl Plugin for Tagger {
//!     fn handle(event: Event) -> Result<Action, String> {
//!         let body: hookwall_guest::serde_json::Value = event.json()?;
//!         let Some(kind) = body.get("type").and_then(|t| t.as_str()) else {
//!             return Ok(Action::reject(422, "missing_field", "`type` is required").field("/type"));
//!         };
//!         let sink = config("sink").unwrap_or_else(|| "events".to_owned());
//!         log::info!("routing {} ({kind}) to {sink}", event.id);
//!         Ok(Action::forward([Delivery::to(sink)
//!             .headers(event.headers)
//!             .header("x-event-kind", kind)
//!             .body(event.body)]))
//!     }
//! }
//!
//! hookwall_guest::export!(Tagger);
//! ```
//!
//! Failures: return `Err(message)` (the `?` operator works on this crate's [`Error`]) and the
//! host dead-letters the event with it. A panic aborts the instance (a trap); the host keeps
//! the panic message (the guest's stderr) in the dead-letter reason.

mod action;
mod event;
mod host;

pub use action::{Action, Delivery, Priority, Rejection, Reply};
pub use event::Event;
pub use host::{clock, config, config_json, kv, log, metrics};
/// Re-exported so plugins can name `Value` and friends without a version skew.
pub use serde_json;

use std::fmt;

// Lets the generated export macro name this crate by path from plugin crates and from here alike.
extern crate self as hookwall_guest;

/// The generated low-level bindings. Not part of the stable API: use the types at the crate root.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // the generated lifting of `event`'s fields
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_hookwall_plugin",
        default_bindings_module: "hookwall_guest::bindings",
    });
}

/// A plugin: one function from an event to an action.
///
/// Implement it on a unit struct and export that with [`export!`]. A fresh instance handles
/// each event, so there is no state to keep between calls.
pub trait Plugin {
    /// Handle one event. `Err` is a plugin failure: the host dead-letters the event with the message.
    fn handle(event: Event) -> Result<Action, String>;
}

/// Exports a [`Plugin`] implementation as the component's `handle` function.
///
/// Use it once per plugin crate, at the top level: `hookwall_guest::export!(MyPlugin);`
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        const _: () = {
            struct __HookwallGuest;

            impl $crate::bindings::Guest for __HookwallGuest {
                fn handle(
                    event: $crate::bindings::Event,
                ) -> ::core::result::Result<$crate::bindings::Action, ::std::string::String>
                {
                    $crate::__private::handle::<$plugin>(event)
                }
            }

            $crate::bindings::__export_hookwall_plugin!(
                __HookwallGuest with_types_in $crate::bindings
            );
        };
    };
}

/// Support for [`export!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use crate::{Event, Plugin, bindings};

    pub fn handle<P: Plugin>(event: bindings::Event) -> Result<bindings::Action, String> {
        P::handle(Event::from(event)).map(Into::into)
    }
}

/// An error from this crate's helpers (a body or config value that is not the expected JSON,
/// a body that is not UTF-8, …). It converts into `String`, so `?` works inside
/// [`Plugin::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message, as the host will record it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(error: Error) -> Self {
        error.message
    }
}
