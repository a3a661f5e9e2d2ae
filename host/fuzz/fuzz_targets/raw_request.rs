#![no_main]
//! Raw request bytes through the server's connection code and handler, in process. See
//! `hookwall::fuzzing::server::raw_request`: the same entry point the corpus replay test calls.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookwall::fuzzing::server::raw_request(data));
