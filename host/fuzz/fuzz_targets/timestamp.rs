#![no_main]
//! See `hookwall::verify::fuzzing::timestamp`: the same entry point the corpus replay test calls.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookwall::verify::fuzzing::timestamp(data));
