//! Hookwall: a WebAssembly-pluggable webhook edge receiver.
//!
//! # Layout
//!
//! A request flows through the stages in this order; each module owns its types and errors.
//!
//! - [`config`]: the TOML file, parsed and validated before any port is bound.
//! - [`server`]: HTTP ingress (hyper), path → source, body limits; [`server::respond`] turns
//!   every outcome into a response.
//! - [`verify`]: authenticates the sender; only it can make a `VerifiedRequest`.
//! - [`ratelimit`]: per-source GCRA limits (429), and overload shedding (503) before a body is
//!   read; embedded (`governor`) or shared by replicas through Redis.
//! - [`dedupe`]: recognises copies of an event (by scheme id, header, JSON pointer or body
//!   hash) so each is stored once; marks commit with the event, optionally claimed in Redis.
//! - [`plugin`]: runs the source's WebAssembly plugins (wasmtime components), sandboxed.
//! - [`store`]: the durable inbox/outbox (redb, group commit); an event is acknowledged only
//!   once it is here. [`store::redis`] is the connection replicas share state through.
//! - [`delivery`]: per-sink workers that move pending deliveries to sinks, with retries.
//! - [`sink`]: the destinations (`file`, `stdout`).
//! - [`pipeline`]: the stages above in order, for one request, without HTTP.
//!
//! Beside the flow: [`admin`] (operator API, with [`admin::guard`] against browser pages) and
//! [`telemetry`] (logs).

pub mod admin;
pub mod clock;
pub mod config;
pub mod dedupe;
pub mod delivery;
pub mod pipeline;
pub mod plugin;
pub mod ratelimit;
pub mod server;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod verify;
