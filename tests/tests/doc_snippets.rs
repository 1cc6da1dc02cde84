//! Docs are code: every YAML block in the README, `docs/` and `envoy/README.md`
//! is an Envoy bootstrap that `envoy --mode validate` accepts (with the
//! Wasm path pointed at the real filter), so a snippet an operator copies
//! cannot drift from what Envoy 1.40 takes.

use std::path::{Path, PathBuf};

use keygate_e2e::env;
use keygate_e2e::envoy::validate_config;

/// The fenced ```yaml blocks of a Markdown file, with the line each starts on.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match current.take() {
            None if line.trim_start().starts_with("```yaml") => {
                current = Some((n + 1, String::new()));
            }
            None => {}
            Some(block) if fence => blocks.push(block),
            Some((start, mut text)) => {
                text.push_str(line);
                text.push('\n');
                current = Some((start, text));
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```yaml block");
    blocks
}

fn documents() -> Vec<PathBuf> {
    let root = env::workspace_dir();
    let mut docs = vec![root.join("README.md"), root.join("envoy/README.md")];
    let mut in_docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    docs
}

#[test]
fn yaml_blocks_are_parsed_as_written() {
    let md = "text\n```yaml\na: 1\n```\n```json\n{}\n```\n  ```yaml\nb: 2\n  ```\n";
    assert_eq!(
        yaml_blocks(md),
        vec![(2, "a: 1\n".to_owned()), (8, "b: 2\n".to_owned())]
    );
}

#[test]
fn every_envoy_snippet_in_the_docs_validates() {
    let wasm = env::required_file(env::FILTER_WASM);
    let dir = tempdir();
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read a doc");
        for (line, block) in yaml_blocks(&text) {
            let where_ = format!("{}:{line}", relative(&doc));
            assert!(
                block.contains("static_resources:"),
                "{where_}: a YAML block in the docs must be a whole Envoy bootstrap, so the tests can validate it"
            );
            let rendered = block.replace("/path/to/keygate_filter.wasm", &wasm.to_string_lossy());
            let path = dir.join(format!("snippet-{checked}.yaml"));
            std::fs::write(&path, rendered).expect("write the snippet");
            let (valid, output) = validate_config(&path);
            if !valid {
                failures.push(format!("{where_}:\n{output}"));
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no Envoy snippet found in the docs");
    assert!(
        failures.is_empty(),
        "snippets Envoy refuses:\n{}",
        failures.join("\n")
    );
    println!("{checked} Envoy snippet(s) in the docs validated");
}

fn relative(path: &Path) -> String {
    path.strip_prefix(env::workspace_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A scratch directory under the target dir, fresh for this run.
fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keygate-doc-snippets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}
