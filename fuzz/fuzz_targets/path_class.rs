//! cargo-fuzz target `path_class`: see `keygate_fuzz_targets::path_class`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_fuzz_targets::path_class::check(data);
});
