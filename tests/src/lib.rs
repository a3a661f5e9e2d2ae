//! Test kit for Hookwall's end-to-end tests (`tests/e2e`): the harness that runs the real
//! binary, and the paths of the WebAssembly components that `build.rs` builds from source.

pub mod wasm {
    include!(concat!(env!("OUT_DIR"), "/wasm_paths.rs"));
}

pub mod guests;
mod harness;
pub mod otlp;
mod postgres;
mod rabbitmq;
mod services;
mod tmpfs;
pub mod upstream;

pub use harness::*;
pub use postgres::PostgresServer;
pub use rabbitmq::{AmqpMessage, RabbitServer};
pub use services::{NatsServer, RedisServer, StreamEntry};
pub use tmpfs::Tmpfs;
