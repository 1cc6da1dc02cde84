//! Replays every committed corpus file (`fuzz/corpus/<target>/*`) through
//! the same function its cargo-fuzz target calls, on stable: a crash the
//! fuzzer once found, once its input is in the corpus, is a test from then
//! on. A target without corpus files fails: nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn replay(target: &str) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus of {target} at {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no corpus files for {target} in {}",
        dir.display()
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            // A fuzzer running on this corpus replaces inputs with smaller
            // ones as it goes; the replacement is in the listing next time.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", file.display()),
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            assert!(
                keygate_fuzz_targets::run(target, &data),
                "unknown target {target}"
            );
        }));
        if outcome.is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus files fail: {failed:#?}",
        failed.len(),
        files.len()
    );
    println!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn every_target_has_a_test_here() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for target in keygate_fuzz_targets::TARGETS {
        assert!(
            fuzz_dir.join(format!("{target}.rs")).is_file(),
            "no cargo-fuzz target {target}"
        );
        assert!(corpus_dir(target).is_dir(), "no corpus for {target}");
    }
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(#[test] fn $target() { replay(stringify!($target)); })*
        #[test]
        fn the_list_above_is_every_target() {
            assert_eq!(&[$(stringify!($target)),*][..], keygate_fuzz_targets::TARGETS);
        }
    };
}

replay_tests!(
    token,
    key_headers,
    path_class,
    plugin_config,
    feed_answer,
    table_slot,
    usage_report,
    api_json,
);
