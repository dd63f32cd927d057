#![no_main]
//! See fuzz/README.md and peers_tests::fuzz_targets::registry_message.
libfuzzer_sys::fuzz_target!(|data: &[u8]| peers_tests::fuzz_targets::registry_message(data));
