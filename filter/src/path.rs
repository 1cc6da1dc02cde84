//! Reading the request path the way the route saw it, strictly.
//!
//! The server segment decides which key scope applies, so any spelling that
//! another component (Envoy's normalizer, an upstream framework) could read as
//! a *different* route is refused instead of being interpreted: percent
//! escapes, backslashes, `;` parameters, dot segments, empty segments, control
//! and non-ASCII bytes, and segments that are not valid server names. A second,
//! deliberately loose reading catches disguised protected paths (`/%6dcp-connect/…`,
//! `//mcp-connect/…`, `/MCP-CONNECT/…`) that the strict reading would otherwise
//! wave through as "some other path".

use keygate_protocol::server_name::is_valid_server_name;
use std::borrow::Cow;

/// What a request path is, for the decision table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathClass<'a> {
    /// Under a protected prefix, with a valid server segment.
    Protected { server: &'a str },
    /// Exactly the `/api/me` path.
    Me,
    /// Any other path.
    Other,
    /// Something that is or may be routed as a protected path but is spelled
    /// in a way the filter refuses to interpret.
    Bad,
}

/// The path without its query string and fragment.
pub fn strip_query(path: &str) -> &str {
    let end = path
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// Longest path written to a log line.
const MAX_LOGGED_PATH: usize = 200;

/// Longest path segment written to a log line as is: a key's secret alone
/// is 43 characters.
const MAX_LOGGED_SEGMENT: usize = 40;

/// The path as it may appear in a log line: no query or fragment, and any
/// segment that could carry a key (a client may paste its key into the URL)
/// replaced: one mentioning `ok1`, one with a percent escape, or one long
/// enough to hold a secret. Cut to a bounded length.
pub fn for_log(path: &str) -> String {
    let redacted: Vec<&str> = strip_query(path)
        .split('/')
        .map(|seg| {
            if seg.len() > MAX_LOGGED_SEGMENT
                || seg.contains('%')
                || seg.to_ascii_lowercase().contains("ok1")
            {
                "<redacted>"
            } else {
                seg
            }
        })
        .collect();
    redacted.join("/").chars().take(MAX_LOGGED_PATH).collect()
}

/// Characters a protected path may contain, byte by byte: RFC 3986 unreserved
/// characters, `/`, and the sub-delimiters no common server treats as
/// structure. `%`, `\`, `;` and everything outside printable ASCII are absent.
fn is_plain_path_byte(b: u8) -> bool {
    PLAIN_PATH_BYTES.get(usize::from(b)) == Some(&true)
}

/// [`is_plain_path_byte`] as a table: every request checks every byte of
/// its path. Built at compile time, where an index out of range fails the
/// build rather than a request.
#[allow(clippy::indexing_slicing)]
const PLAIN_PATH_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0u8;
    loop {
        table[b as usize] = b.is_ascii_alphanumeric();
        if b == u8::MAX {
            break;
        }
        b += 1;
    }
    let extra = b"/-._~!$&'()*+,=:@";
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
};

/// Strict check of a protected path (query already removed).
fn is_strict_path(path: &str) -> bool {
    if !path.bytes().all(is_plain_path_byte) {
        return false;
    }
    let Some(rest) = path.as_bytes().strip_prefix(b"/") else {
        return false;
    };
    let mut segments = rest.split(|b| *b == b'/').peekable();
    let mut first = true;
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            // A trailing slash leaves one empty last segment; any other empty
            // segment is a `//`, which a slash-merging proxy reads differently.
            let trailing_slash = last && !first;
            if !trailing_slash {
                return false;
            }
        } else if seg.iter().all(|b| *b == b'.') {
            // `.`, `..` and any all-dots segment some server might resolve.
            return false;
        }
        first = false;
    }
    true
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
fn percent_decode_loose(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The most generous reading any component might apply: repeated percent
/// decoding, `\` as `/`, lowercase, `;params` dropped, empty and dot segments
/// resolved. Used only to *detect* protected paths, never to route.
pub(crate) fn loose_normalize(path: &str) -> String {
    let mut s = path.to_owned();
    for _ in 0..3 {
        let decoded = percent_decode_loose(&s);
        if decoded == s {
            break;
        }
        s = decoded;
    }
    let s = s.replace('\\', "/").to_ascii_lowercase();
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    let trailing = if s.ends_with('/') { "/" } else { "" };
    format!("/{}{}", out.join("/"), trailing)
}

/// Classifies `:path` (query and fragment included or not) against the
/// configured protected prefixes and `/api/me` path.
pub fn classify<'a>(path: &'a str, prefixes: &[String], me_path: &str) -> PathClass<'a> {
    let path = strip_query(path);
    for prefix in prefixes {
        if let Some(rest) = path.strip_prefix(prefix.as_str()) {
            if !is_strict_path(path) {
                return PathClass::Bad;
            }
            let server_end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
            let server = rest.get(..server_end).unwrap_or("");
            return if is_valid_server_name(server.as_bytes()) {
                PathClass::Protected { server }
            } else {
                PathClass::Bad
            };
        }
    }
    // Not literally protected: make sure it is not a disguised protected path.
    // A strict lowercase path is its own loose normal form (nothing to
    // decode, fold or resolve), so most requests skip building one.
    let loose = if is_strict_path(path) && !path.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(loose_normalize(path))
    };
    for prefix in prefixes {
        let bare = prefix.trim_end_matches('/');
        if loose.starts_with(prefix.as_str()) || loose == bare {
            return PathClass::Bad;
        }
    }
    if path == me_path {
        PathClass::Me
    } else {
        PathClass::Other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn cls(path: &str) -> PathClass<'_> {
        classify(path, &["/mcp-connect/".to_owned()], "/api/me")
    }

    #[test]
    fn plain_protected_paths() {
        for (p, server) in [
            ("/mcp-connect/alpha/mcp", "alpha"),
            ("/mcp-connect/alpha", "alpha"),
            ("/mcp-connect/alpha/", "alpha"),
            ("/mcp-connect/alpha/mcp/", "alpha"),
            ("/mcp-connect/my-server-2/mcp", "my-server-2"),
            ("/mcp-connect/alpha/mcp?x=1", "alpha"),
            ("/mcp-connect/alpha/mcp?next=/mcp-connect/beta/mcp", "alpha"),
            ("/mcp-connect/alpha/mcp#/mcp-connect/beta", "alpha"),
            ("/mcp-connect/alpha/mcp?%2e%2e/%2fbeta", "alpha"),
            ("/mcp-connect/alpha/sse/messages.json", "alpha"),
        ] {
            assert_eq!(cls(p), PathClass::Protected { server }, "{p}");
        }
    }

    #[test]
    fn spelling_attacks_are_refused() {
        for p in [
            "/mcp-connect/alpha/../beta/mcp",
            "/mcp-connect/alpha/./mcp",
            "/mcp-connect/alpha/..",
            "/mcp-connect/alpha/.../mcp",
            "/mcp-connect/../mcp-connect/beta/mcp",
            "/mcp-connect/beta%2f..%2falpha/mcp",
            "/mcp-connect/alpha%2Fx",
            "/mcp-connect/alpha%2fmcp",
            "/mcp-connect/%61lpha/mcp",
            "/mcp-connect/alpha/%2e%2e/beta/mcp",
            "/mcp-connect/alpha/%2E%2E/beta/mcp",
            "/mcp-connect/alpha%5c..%5cbeta/mcp",
            "/mcp-connect/alpha\\..\\beta/mcp",
            "/mcp-connect/alpha\\mcp",
            "/mcp-connect//beta/mcp",
            "/mcp-connect/alpha//mcp",
            "/mcp-connect/",
            "/mcp-connect/ALPHA/mcp",
            "/mcp-connect/Alpha/mcp",
            "/mcp-connect/alpha;x/mcp",
            "/mcp-connect/alpha/..;/beta/mcp",
            "/mcp-connect/alpha/mcp;jsessionid=1",
            "/mcp-connect/-alpha/mcp",
            "/mcp-connect/al pha/mcp",
            "/mcp-connect/alpha\t/mcp",
            "/mcp-connect/alph\u{e4}/mcp",
            "/mcp-connect/alpha\u{0}/mcp",
            "/mcp-connect/.alpha/mcp",
            "/mcp-connect/alpha.beta/mcp",
            "/mcp-connect/a_b/mcp",
            // Disguised protected prefixes that a lenient component could route.
            "/mcp-connect",
            "/MCP-CONNECT/alpha/mcp",
            "/Mcp-Connect/alpha/mcp",
            "//mcp-connect/alpha/mcp",
            "/./mcp-connect/alpha/mcp",
            "/x/../mcp-connect/alpha/mcp",
            "/%6dcp-connect/alpha/mcp",
            "/mcp-connect%2falpha/mcp",
            "/mcp-connect%2Falpha/mcp",
            "/%2fmcp-connect/alpha/mcp",
            "/%252e%252e/mcp-connect/alpha",
            "\\mcp-connect\\alpha\\mcp",
            "/mcp-connect;x/alpha/mcp",
            "/api/..;/mcp-connect/beta/mcp",
        ] {
            assert_eq!(cls(p), PathClass::Bad, "{p:?}");
        }
    }

    #[test]
    fn other_and_me_paths() {
        assert_eq!(cls("/api/me"), PathClass::Me);
        assert_eq!(cls("/api/me?x=1"), PathClass::Me);
        for p in [
            "/",
            "/api/me/",
            "/api/mee",
            "/API/ME",
            "/api/api-keys",
            "/mcp-connectx/alpha",
            "/other?next=/mcp-connect/alpha/mcp",
            "/healthz",
            "*",
            "",
        ] {
            assert_eq!(cls(p), PathClass::Other, "{p:?}");
        }
    }

    #[test]
    fn logged_paths_never_carry_keys() {
        let key = "ok1-12-345-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        for p in [
            format!("/mcp-connect/alpha/{key}"),
            format!("/mcp-connect/{key}/mcp"),
            format!("/x/Bearer%20{key}"),
            format!("/mcp-connect/alpha/mcp?key={key}"),
            format!("/a#{key}"),
            format!("/{}", key.to_uppercase()),
            format!("/x/%6Fk1{}", &key[3..]),
            format!("/x/{}", &key[11..]),
        ] {
            let logged = for_log(&p);
            assert!(!logged.contains("AAAAAAAA"), "{logged}");
        }
        assert_eq!(
            for_log("/mcp-connect/alpha/mcp?x=1"),
            "/mcp-connect/alpha/mcp"
        );
        let long = format!("/{}", "abcdefghi/".repeat(500));
        assert_eq!(for_log(&long).len(), 200);
        assert_eq!(for_log("/\u{e9}t\u{e9}"), "/\u{e9}t\u{e9}");
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of every tricky path, byte by byte on char boundaries.
        let samples = [
            "/mcp-connect/alpha%2",
            "/mcp-connect/%",
            "%",
            "%%2",
            "/a/%zz/..",
            "\u{1F600}/%f0",
        ];
        for s in samples {
            for (i, _) in s.char_indices() {
                let _ = cls(&s[..i]);
            }
            let _ = cls(s);
        }
    }

    proptest::proptest! {
        /// The shortcut `classify` takes: a strict lowercase path is its own
        /// loose normal form.
        #[test]
        fn strict_lowercase_paths_are_their_own_loose_form(
            segments in proptest::collection::vec("[a-z0-9._~!$&'()*+,=:@-]{1,8}", 1..6),
            trailing in proptest::bool::ANY,
        ) {
            let path = format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" });
            if is_strict_path(&path) {
                proptest::prop_assert_eq!(loose_normalize(&path), path);
            }
        }
    }

    #[test]
    fn strict_path_rules_hold_without_allocating_segments() {
        for p in ["/a", "/a/", "/a/b", "/a/b/", "/a.b/c..d/"] {
            assert!(is_strict_path(p), "{p}");
        }
        for p in [
            "", "a", "/", "//", "/a//b", "//a", "/a/.", "/./a", "/a/../b", "/...", "/a/%2e",
            "/a;b", "/a\\b",
        ] {
            assert!(!is_strict_path(p), "{p}");
        }
    }
}
