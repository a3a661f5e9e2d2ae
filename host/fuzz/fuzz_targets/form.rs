#![no_main]
//! See `hookwall::fuzzing::verify::form`: the same entry point the corpus replay test calls.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookwall::fuzzing::verify::form(data));
