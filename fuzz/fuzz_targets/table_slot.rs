//! cargo-fuzz target `table_slot`: see `keygate_fuzz_targets::table_slot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_fuzz_targets::table_slot::check(data);
});
