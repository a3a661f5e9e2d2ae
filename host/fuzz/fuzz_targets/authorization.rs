#![no_main]
//! See `hookwall::fuzzing::verify::authorization`: the same entry point the corpus replay test calls.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookwall::fuzzing::verify::authorization(data));
