//! cargo-fuzz target `plugin_config`: see `keygate_fuzz_targets::plugin_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_fuzz_targets::plugin_config::check(data);
});
