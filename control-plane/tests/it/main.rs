//! The control plane's integration tests, one test binary: the real control
//! plane (in-process, or its binary for `cli` and `limits`) on SQLite and
//! PostgreSQL, driven over HTTP. One binary links the crate once and lets
//! every module share the helpers of [`common`].

// First, so its `both_backends!` macro is in scope in the modules below.
#[macro_use]
mod common;

mod api;
mod audit;
mod cli;
mod console_api;
mod feed;
mod hostile;
mod lifecycle;
mod limits;
mod oidc;
mod policy;
mod provider;
mod rotation;
mod scale;
mod sessions;
mod signin;
