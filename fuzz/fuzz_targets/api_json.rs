//! cargo-fuzz target `api_json`: see `keygate_fuzz_targets::api_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_fuzz_targets::api_json::check(data);
});
