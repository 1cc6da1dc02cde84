//! Target `plugin_config`: the filter's configuration parser on any bytes.
//!
//! What must hold: no panic; an accepted configuration meets every rule
//! `docs/filter.md` states (checked here again, independently); and neither
//! an error message nor an accepted configuration's `Debug` shows the
//! data-plane token (both reach Envoy's log).

use keygate_filter::config::Config;
use keygate_protocol::feed::{MAX_PAGE_SIZE, MAX_WAIT_SECONDS};

/// The `dataPlaneToken` string of the input, when it is JSON with one.
fn token_in(data: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    value.get("dataPlaneToken")?.as_str().map(str::to_owned)
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn occurrences(haystack: &str, needle: &str) -> usize {
    if needle.is_empty() {
        return 0;
    }
    haystack.matches(needle).count()
}

pub fn check(data: &[u8]) {
    let result = Config::from_json(data);
    // A token worth hiding: long enough not to occur by chance in a message,
    // and written once in the input (else it is also some other value).
    let input = String::from_utf8_lossy(data);
    let token = token_in(data).filter(|t| t.len() >= 6 && occurrences(&input, t) == 1);
    match result {
        Err(e) => {
            if let Some(t) = &token
                && e.to_string().contains(t.as_str())
            {
                // The message may hold the token's text by chance (a token
                // "nessSeconds" is in the list of known fields): it must
                // still be there with another token in its place.
                let other = if t.starts_with('x') { "y" } else { "x" }.repeat(t.chars().count());
                let (encoded, replacement) = (json_string(t), json_string(&other));
                let swapped = input.replacen(&encoded, &replacement, 1);
                let shown = Config::from_json(swapped.as_bytes())
                    .err()
                    .is_some_and(|e2| e2.to_string().contains(t.as_str()));
                assert!(shown, "an error shows the token");
            }
        }
        Ok(cfg) => {
            if let Some(t) = &token {
                assert!(
                    !format!("{cfg:?}").contains(t.as_str()),
                    "Debug shows the token"
                );
            }
            assert!(cfg.feed_wait_seconds <= MAX_WAIT_SECONDS);
            assert!(cfg.max_staleness_seconds > cfg.feed_wait_seconds);
            assert!((1..=MAX_PAGE_SIZE).contains(&cfg.snapshot_page_size));
            assert!(cfg.usage_flush_seconds >= 1);
            assert!(!cfg.protected_path_prefixes.is_empty());
            for p in &cfg.protected_path_prefixes {
                assert!(
                    p.starts_with('/') && p.ends_with('/') && p.len() >= 3,
                    "{p:?}"
                );
                assert!(!p.contains("//") && !p.bytes().any(|b| b.is_ascii_uppercase()));
                assert!(!p.split('/').any(|s| s == "." || s == ".."), "{p:?}");
            }
            assert!(cfg.me_path.starts_with('/'));
            assert!(!cfg.key_headers.is_empty());
            for h in &cfg.key_headers {
                assert!(!h.is_empty() && !h.starts_with(':'), "{h:?}");
                assert!(
                    !h.bytes().any(|b| b.is_ascii_uppercase() || b <= b' '),
                    "{h:?}"
                );
            }
            let ids = &cfg.identity_headers;
            let names = [&ids.user_id, &ids.key_id, &ids.server];
            for h in names {
                assert!(
                    !cfg.key_headers.contains(h),
                    "identity header {h:?} is a key header"
                );
                assert!(
                    cfg.is_reserved_header(h),
                    "identity header {h:?} not reserved"
                );
            }
            assert!(names[0] != names[1] && names[0] != names[2] && names[1] != names[2]);
            // The paths a request is matched against are the parsed ones.
            assert!(!cfg.control_plane_authority().is_empty());
        }
    }
}
