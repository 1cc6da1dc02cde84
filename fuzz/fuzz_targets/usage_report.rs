//! cargo-fuzz target `usage_report`: see `keygate_fuzz_targets::usage_report`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_fuzz_targets::usage_report::check(data);
});
