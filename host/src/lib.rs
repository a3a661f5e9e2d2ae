//! Hookwall: a WebAssembly-pluggable webhook edge receiver.
//!
//! # Layout
//!
//! The host is a pipeline and its modules are floors: a module imports only modules on lower
//! floors, so every pipe runs downhill. The table below is the plan, and the test
//! `host/tests/floors.rs` reads it and fails, naming the file and the import, when a module
//! imports its own floor or a higher one.
//!
//! | floor | modules |
//! |---|---|
//! | 0 | `clock`, `event` |
//! | 1 | `config`, `tls` |
//! | 2 | `telemetry`, `redis` |
//! | 3 | `store`, `verify` |
//! | 4 | `sink`, `ratelimit`, `dedupe`, `plugin` |
//! | 5 | `delivery` |
//! | 6 | `pipeline` |
//! | 7 | `server` |
//! | 8 | `admin`, `fuzzing` |
//! | 9 | `app` |
//! | 10 | `cli` |
//!
//! - Ground floor: [`clock`] (wall and monotonic time, injectable), [`event`] (the nouns every
//!   stage shares: the inbound request, the event plugins see, a routed message, a refusal, a
//!   direct reply, a delivery's priority), [`config`] (the TOML file as
//!   plain data, validated before any port is bound), [`telemetry`] (logs, metric names and
//!   helpers that take `&'static str` labels, traces exported over OTLP), [`redis`] (the one connection replicas share
//!   state through), [`tls`] (reading certificates, the TLS client side).
//! - The stages, in the order a request meets them: [`verify`] authenticates the sender (only it
//!   can make a `VerifiedRequest`); [`ratelimit`] applies per-source GCRA limits (429) and sheds
//!   load (503) before a body is read; [`dedupe`] recognises copies of an event so each is stored
//!   once; [`plugin`] runs the source's WebAssembly plugins (wasmtime components), sandboxed;
//!   [`store`] is the durable inbox/outbox (redb, group commit), and an event is acknowledged
//!   only once it is there; [`delivery`] moves pending deliveries to the [`sink`]s, with retries.
//! - [`pipeline`]: the stages above in order, for one request, without HTTP.
//! - [`server`]: HTTP ingress (hyper), path → source, body limits; [`server::respond`]
//!   classifies every outcome once into the answer and its metric labels.
//! - [`admin`]: the operator API and dashboard, with [`admin::guard`] against browser pages.
//! - [`app`]: the composition root: `App::build` does everything that can fail before any
//!   port is bound, `App::serve` binds and runs until a signal. [`cli`]: one file per
//!   subcommand; `main.rs` only parses the command line and dispatches.
//! - `fuzzing` (tests and `--cfg fuzzing` only): the fuzz entry points and the corpus replay.

#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dedupe;
pub mod delivery;
pub mod event;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod pipeline;
pub mod plugin;
pub mod ratelimit;
pub mod redis;
pub mod server;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod verify;
