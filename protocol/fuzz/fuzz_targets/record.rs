//! Fuzz the record decoders and the compression frame (see `src/lib.rs`, `check_record`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    echolab_protocol_fuzz::check_record(data);
});
