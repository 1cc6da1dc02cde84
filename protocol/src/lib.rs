//! What keygate's edge filter and control plane must agree on.
//!
//! - [`token`]: the `ok1-<userId>-<keyId>-<secret>` API key format and its strict parser.
//! - [`secret`]: key secrets, their SHA-256 hashes and constant-time verification.
//! - [`server_name`]: the rules for an MCP server's name (the `<server-name>` in
//!   `/mcp-connect/<server-name>/mcp`).
//! - [`wire`]: the JSON types of the key-table feed and the usage report.
//! - [`feed`]: the feed's endpoints and the key-table query with its limits.
//! - [`bearer`]: the one `Authorization: Bearer` rule and the
//!   `WWW-Authenticate` challenges.
//!
//! This crate does no I/O and takes no randomness or clock: callers supply
//! secret bytes and times, so the same code runs natively and in `wasm32-wasip1`.

pub mod bearer;
pub mod feed;
pub mod secret;
pub mod server_name;
pub mod token;
pub mod wire;

pub use feed::{FeedQuery, FeedQueryError, PageSize, WaitSeconds};
pub use secret::{Secret, SecretHash, SecretMatch};
pub use server_name::{ServerName, ServerNameError};
pub use token::{ApiKeyToken, TokenError};
pub use wire::{KeyEntry, KeyTable, PreviousSecret, ServerScope, UsageItem, UsageReport};

/// Path prefix under which MCP servers are reached through the edge.
pub const MCP_CONNECT_PREFIX: &str = "/mcp-connect/";

/// Identity headers the filter sets for the upstream (defaults; the filter's
/// configuration may rename them). Clients can never set any `x-keygate-*` header.
pub const HEADER_USER_ID: &str = "x-keygate-user-id";
pub const HEADER_KEY_ID: &str = "x-keygate-key-id";
pub const HEADER_SERVER: &str = "x-keygate-server";
pub const IDENTITY_HEADER_PREFIX: &str = "x-keygate-";
