//! Fuzz the JSON decoders (see `src/lib.rs` for the properties checked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    echolab_protocol_fuzz::check(echolab_protocol::Protocol::Json, data);
});
