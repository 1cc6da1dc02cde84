//! cargo-fuzz target `token`: see `keygate_fuzz_targets::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_fuzz_targets::token::check(data);
});
