#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| soak::fuzzing::spec(data));
