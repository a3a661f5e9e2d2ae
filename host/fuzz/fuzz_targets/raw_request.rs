#![no_main]
//! Raw request bytes through the server's connection code and handler, in process. See
//! `hookwall::server::fuzzing::raw_request`: the same entry point the corpus replay test calls.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookwall::server::fuzzing::raw_request(data));
