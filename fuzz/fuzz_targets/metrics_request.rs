#![no_main]
//! See fuzz/README.md and peers_tests::fuzz_targets::metrics_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| peers_tests::fuzz_targets::metrics_request(data));
