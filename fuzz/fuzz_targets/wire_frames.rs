#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncnet_proto::fuzzing::wire_frames(data));
