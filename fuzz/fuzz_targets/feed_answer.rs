//! cargo-fuzz target `feed_answer`: see `keygate_fuzz_targets::feed_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_fuzz_targets::feed_answer::check(data);
});
