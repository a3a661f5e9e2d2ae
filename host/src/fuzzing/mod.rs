//! Fuzz entry points, compiled only for tests and fuzzing (`--cfg fuzzing`, which cargo-fuzz
//! sets), never shipped in the release library. Each function takes arbitrary bytes and must
//! never panic; `host/fuzz/fuzz_targets/*` call them, and [`corpus`]'s test replays the
//! committed seed corpus through the same functions in every `cargo test`.
//!
//! - [`verify`]: the header parsers and the client-address resolution, and sign → verify
//!   round trips that must pass for any body;
//! - [`server`]: raw bytes through the real connection code and webhook handler, in process.

#[cfg(test)]
mod corpus;
pub mod server;
pub mod verify;
