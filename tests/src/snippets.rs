//! The client snippets the console shows after a key is created, read from
//! their one source (`control-plane/console/snippets/`: a manifest and one
//! template per client) and filled in as the console fills them, so tests
//! can run them and compare them with the README.

use std::path::PathBuf;

use serde::Deserialize;

/// One entry of `snippets.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snippet {
    pub id: String,
    pub label: String,
    pub file: String,
    /// What stands for the key when it is not filled in.
    pub key_reference: String,
    /// The key filled in: `{key}` is replaced by it.
    pub key_literal: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    snippets: Vec<Snippet>,
}

/// `control-plane/console/snippets/`.
pub fn snippets_dir() -> PathBuf {
    crate::env::workspace_dir().join("control-plane/console/snippets")
}

/// Every snippet of the manifest, in its order.
pub fn all() -> Vec<Snippet> {
    let path = snippets_dir().join("snippets.json");
    let text = read(&path);
    let manifest: Manifest =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    manifest.snippets
}

/// The snippet for `server` behind the edge at `origin` (e.g.
/// `http://127.0.0.1:8080`), with `key` filled in when given, exactly as
/// `control-plane/console/connect.js` renders it.
pub fn render(snippet: &Snippet, origin: &str, server: &str, key: Option<&str>) -> String {
    let path = snippets_dir().join(&snippet.file);
    let template = read(&path);
    let key_text = match key {
        Some(key) => snippet.key_literal.replace("{key}", key),
        None => snippet.key_reference.clone(),
    };
    template
        .replace("{{SERVER}}", server)
        .replace("{{URL}}", &format!("{origin}/mcp-connect/{server}/mcp"))
        .replace("{{ORIGIN}}", origin)
        .replace("{{KEY}}", &key_text)
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
