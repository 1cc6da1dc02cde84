//! cargo-fuzz target `key_headers`: see `keygate_fuzz_targets::key_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_fuzz_targets::key_headers::check(data);
});
