//! A scratch directory per test (or per shared fixture) under
//! `$TMPDIR/keygate-e2e`: deleted when the test passes, kept (and its path
//! printed) when it fails, so process logs can be read afterwards.
//!
//! Directories of shared fixtures live in statics that are never dropped;
//! they are removed when the test binary exits, unless a test failed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static REMOVE_AT_EXIT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static A_TEST_FAILED: AtomicBool = AtomicBool::new(false);
static AT_EXIT_REGISTERED: std::sync::Once = std::sync::Once::new();

extern "C" fn remove_shared_dirs() {
    let dirs = std::mem::take(&mut *REMOVE_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in dirs {
        if A_TEST_FAILED.load(Ordering::SeqCst) {
            eprintln!(
                "a test failed: shared fixture logs kept in {}",
                dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Records that a test failed, so shared directories are kept at exit.
pub fn note_test_failure() {
    A_TEST_FAILED.store(true, Ordering::SeqCst);
}

#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// A new unique directory whose name starts with `label`.
    pub fn new(label: &str) -> Self {
        let root = std::env::temp_dir().join("keygate-e2e");
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{label}-"))
            .tempdir_in(&root)
            .unwrap_or_else(|e| panic!("create temp dir in {}: {e}", root.display()));
        let path = dir.path().to_path_buf();
        Self {
            dir: Some(dir),
            path,
        }
    }

    /// For a fixture that is never dropped: remove the directory when the
    /// test binary exits, unless some test failed.
    pub fn remove_at_exit(&mut self) {
        if let Some(dir) = self.dir.take() {
            REMOVE_AT_EXIT
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dir.keep());
            AT_EXIT_REGISTERED.call_once(|| {
                // SAFETY: registers a plain extern "C" function with no captured state.
                unsafe {
                    libc::atexit(remove_shared_dirs);
                }
            });
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            note_test_failure();
            let kept = dir.keep();
            eprintln!("test failed: logs kept in {}", kept.display());
        }
    }
}
