//! The `hookwall:plugin` WIT world on the host side: wasmtime's generated bindings, every
//! conversion between WIT types and host types (each pair converted in one place), and the
//! check that a component was built against a WIT version this host speaks.
//!
//! Conversions that change a value say why: a plugin's refusal must be a client error and its
//! handshake reply a success, whatever status it asked for.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::event::Priority;

use super::PluginError;
use super::action::{Action, Delivery, Event, Rejection, Reply};

mod bindings {
    // Calls are async (`call_handle` is driven on the request's own task, yielding to the
    // executor at epoch ticks); of the imports only key-value waits on I/O (the store's writer,
    // Redis), so only it is async: the rest are plain functions, cheaper to call.
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { "hookwall:plugin/kv": async },
        exports: { default: async },
    });
}
pub(super) use bindings::hookwall::plugin::{clock, host, kv, metrics, types};
pub(super) use bindings::{Plugin, PluginPre};

/// The version of our WIT package this host implements; components built against another
/// major version (for 0.x: another minor) are refused by name, before linking fails obscurely.
const WIT_PACKAGE: &str = "hookwall:plugin";
const WIT_VERSION: (u64, u64) = (0, 1);

impl From<&Event> for types::Event {
    fn from(event: &Event) -> types::Event {
        types::Event {
            id: event.id.clone(),
            source: event.source.clone(),
            received_at_ms: event.received_at_ms,
            method: event.method.clone(),
            path: event.path.clone(),
            query: event.query.clone(),
            headers: event.headers.clone(),
            body: event.body.clone(),
        }
    }
}

impl From<types::Priority> for Priority {
    fn from(priority: types::Priority) -> Priority {
        match priority {
            types::Priority::High => Priority::High,
            types::Priority::Normal => Priority::Normal,
        }
    }
}

impl From<types::Delivery> for Delivery {
    fn from(d: types::Delivery) -> Delivery {
        Delivery {
            sink: d.sink,
            headers: d.headers,
            body: d.body,
            priority: d.priority.into(),
        }
    }
}

impl From<types::Rejection> for Rejection {
    fn from(r: types::Rejection) -> Rejection {
        Rejection {
            // Only client errors make sense for a refusal; anything else would tell the
            // provider to retry or that we are broken.
            status: if (400..500).contains(&r.status) {
                r.status
            } else {
                422
            },
            code: r.code,
            message: r.message,
            field: r.field,
        }
    }
}

impl From<types::Reply> for Reply {
    fn from(r: types::Reply) -> Reply {
        Reply {
            // A handshake answer that is not a success would read as a failed delivery.
            status: if (200..300).contains(&r.status) {
                r.status
            } else {
                200
            },
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<types::Action> for Action {
    fn from(action: types::Action) -> Action {
        match action {
            types::Action::Forward(ds) => Action::Forward(ds.into_iter().map(Into::into).collect()),
            types::Action::Drop(reason) => Action::Drop(reason),
            types::Action::Reject(r) => Action::Reject(r.into()),
            types::Action::Respond(r) => Action::Respond(r.into()),
        }
    }
}

/// Refuses a component that imports our package at a version this host does not implement.
pub(super) fn check_wit_version(
    name: &str,
    component: &Component,
    engine: &Engine,
) -> Result<(), PluginError> {
    let ty = component.component_type();
    for (import, _) in ty.imports(engine) {
        let Some(rest) = import.strip_prefix(WIT_PACKAGE) else {
            continue;
        };
        let Some((_, version)) = rest.split_once('@') else {
            continue;
        };
        if !compatible(version) {
            return Err(PluginError::Version {
                name: name.to_string(),
                found: format!("{WIT_PACKAGE}@{version}"),
                supported: format!("{WIT_PACKAGE}@{}.{}.x", WIT_VERSION.0, WIT_VERSION.1),
            });
        }
    }
    Ok(())
}

/// Whether a component built against `version` of our package links with this host.
fn compatible(version: &str) -> bool {
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(u64::MAX));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if WIT_VERSION.0 == 0 {
        (major, minor) == WIT_VERSION
    } else {
        major == WIT_VERSION.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_minor_of_a_zero_major_is_compatible() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.1.0"));
        assert!(!compatible("0.x"));
    }

    #[test]
    fn a_refusal_is_a_client_error_and_a_reply_a_success() {
        let reject = |status| types::Rejection {
            status,
            code: "c".into(),
            message: "m".into(),
            field: None,
        };
        assert_eq!(Rejection::from(reject(409)).status, 409);
        assert_eq!(Rejection::from(reject(500)).status, 422);
        assert_eq!(Rejection::from(reject(200)).status, 422);
        let reply = |status| types::Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(Reply::from(reply(204)).status, 204);
        assert_eq!(Reply::from(reply(302)).status, 200);
    }
}
