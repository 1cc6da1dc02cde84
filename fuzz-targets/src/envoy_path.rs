//! An independent model of what Envoy 1.40 does to a request path before
//! any HTTP filter sees it, with the settings `envoy/envoy.yaml` ships
//! (`normalize_path: true`, `merge_slashes: true`,
//! `path_with_escaped_slashes_action: REJECT_REQUEST`), and of which route
//! the shipped route table picks.
//!
//! Written from Envoy's documented behaviour and its path canonicalizer (a
//! copy of Chromium's), not from the filter: the `path_class` target checks
//! the filter against it, and `tests/tests/envoy_paths.rs` checks it against
//! the real Envoy, so neither can drift unnoticed.
//!
//! In order, as Envoy's connection manager applies them:
//! 1. a request target holding a byte the HTTP/1 codec refuses (controls,
//!    white space, anything above 0x7f) is a 400; one not starting with `/`
//!    is not a path we model (the caller adds one);
//! 2. a fragment (`#`) is refused (400);
//! 3. `%2F`, `%5C` (any case) in the path, not the query, are refused (400);
//! 4. RFC 3986 canonicalization of the path (not the query): `\` becomes
//!    `/`; `%XX` of an unreserved character is decoded, other escapes kept
//!    as written; `.` and `..` segments (also spelled `%2e`) are resolved,
//!    never above the root, and so is a dot segment followed by `;`
//!    parameters (`..;x` is `..`: the parameters go with it); characters
//!    that must be escaped are (`%XX`, upper case); an escaped NUL refuses
//!    the request (400);
//! 5. runs of `/` in the path are merged into one.

/// What Envoy does with a request target before routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized {
    /// Refused with 400 before any filter runs.
    Refused,
    /// The `:path` the filters and the router see (query kept).
    Path(String),
}

/// The route the shipped table (generalised to any server name) picks for
/// a normalized `:path`, matching prefixes case-sensitively against the
/// whole `:path`, query included, as Envoy's `prefix` match does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/mcp-connect/<name>/…`: the route of MCP server `<name>`, if the
    /// operator configured one.
    McpServer(String),
    /// `/api/…`: the control plane.
    Api,
    /// No route: 404.
    None,
}

/// The request target sent for fuzz input `data`: the bytes as they are,
/// with a `/` in front when they do not start with one (Envoy serves only
/// origin-form paths to routes).
pub fn request_target(data: &[u8]) -> Vec<u8> {
    if data.first() == Some(&b'/') {
        data.to_vec()
    } else {
        let mut target = Vec::with_capacity(data.len() + 1);
        target.push(b'/');
        target.extend_from_slice(data);
        target
    }
}

/// A byte Envoy's HTTP/1 codec refuses in a request target (400): white
/// space and control characters end or break the request line, and Envoy
/// 1.40 refuses every byte above 0x7f too, in the path and the query alike.
fn refused_by_codec(b: u8) -> bool {
    b <= 0x20 || b >= 0x7f
}

pub fn normalize(target: &[u8]) -> Normalized {
    if target.iter().any(|&b| refused_by_codec(b)) || target.contains(&b'#') {
        return Normalized::Refused;
    }
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => target.split_at(q),
        None => (target, &[][..]),
    };
    if has_escaped_slash(path) {
        return Normalized::Refused;
    }
    let Some(mut canonical) = canonicalize(path) else {
        return Normalized::Refused;
    };
    let merged = merge_slashes(&canonical);
    canonical = merged;
    canonical.extend_from_slice(query);
    match String::from_utf8(canonical) {
        Ok(s) => Normalized::Path(s),
        // Canonicalization escapes every byte above 0x7f of the path; the
        // query is passed on as sent.
        Err(e) => Normalized::Path(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn has_escaped_slash(path: &[u8]) -> bool {
    path.windows(3)
        .any(|w| matches!(w, [b'%', b'2', b'f' | b'F'] | [b'%', b'5', b'c' | b'C']))
}

/// How the canonicalizer treats one byte of the path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Copied as is (and kept escaped when it arrives escaped).
    Keep,
    /// An unreserved character: copied, and decoded when it arrives escaped.
    Unreserved,
    /// Written as `%XX`.
    Escape,
    /// NUL: escaped, and the request refused.
    Invalid,
}

fn class(b: u8) -> Class {
    match b {
        0 => Class::Invalid,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => Class::Unreserved,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'/' | b':' | b';'
        | b'=' | b'@' | b'[' | b']' | b'.' => Class::Keep,
        _ => Class::Escape,
    }
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The byte a `%XX` at `at` stands for, if the two digits are hex.
fn escaped_at(s: &[u8], at: usize) -> Option<u8> {
    if s.get(at) != Some(&b'%') {
        return None;
    }
    let hi = hex_value(*s.get(at + 1)?)?;
    let lo = hex_value(*s.get(at + 2)?)?;
    Some(hi * 16 + lo)
}

/// Length of a dot at `at`: `.` is 1, `%2e`/`%2E` is 3, anything else 0.
fn dot_len(s: &[u8], at: usize) -> usize {
    match (s.get(at), s.get(at + 1), s.get(at + 2)) {
        (Some(b'.'), _, _) => 1,
        (Some(b'%'), Some(b'2'), Some(b'e' | b'E')) => 3,
        _ => 0,
    }
}

fn is_slash(b: Option<&u8>) -> bool {
    matches!(b, Some(b'/' | b'\\'))
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    out.extend(format!("%{b:02X}").bytes());
}

/// What the segment starting with a dot is.
enum DotSegment {
    /// Part of a name (`.x`, `..x`): the dot is copied.
    Name,
    /// `.`: dropped, with the slash after it (`consumed` bytes after the dot).
    Current { consumed: usize },
    /// `..`: drops the previous segment too.
    Parent { consumed: usize },
}

/// Bytes from `at` to the end of its segment, the slash after it included:
/// `Some` when the segment ends there or its `;` parameters start there.
fn segment_end(s: &[u8], at: usize) -> Option<usize> {
    match s.get(at) {
        None => Some(0),
        Some(b'/' | b'\\') => Some(1),
        Some(b';') => {
            let rest = s.get(at..).unwrap_or_default();
            let slash = rest.iter().position(|&b| b == b'/' || b == b'\\');
            Some(slash.map_or(rest.len(), |i| i + 1))
        }
        Some(_) => None,
    }
}

fn dot_segment(s: &[u8], after: usize) -> DotSegment {
    if let Some(consumed) = segment_end(s, after) {
        return DotSegment::Current { consumed };
    }
    let second = dot_len(s, after);
    if second > 0
        && let Some(rest) = segment_end(s, after + second)
    {
        return DotSegment::Parent {
            consumed: second + rest,
        };
    }
    DotSegment::Name
}

/// Removes the last segment of `out` (which ends in `/`), never the root.
fn drop_last_segment(out: &mut Vec<u8>) {
    let without_slash = out.len().saturating_sub(1);
    let keep = out
        .get(..without_slash)
        .and_then(|s| s.iter().rposition(|&b| b == b'/'))
        .map_or(1, |i| i + 1);
    out.truncate(keep.max(1));
}

/// After an escape was decoded right behind a `%` that started no valid
/// escape: if the output now holds a valid `%XX` there (`%%30%30` would
/// become `%00`), that `%` is written as `%25`, so decoding the output again
/// cannot give something else.
fn guard_nested_escape(s: &[u8], next: usize, percent_at: usize, out: &mut Vec<u8>) {
    let len = out.len();
    let Some(&last) = out.last() else { return };
    let append_next = percent_at + 2 == len;
    if append_next {
        match s.get(next) {
            Some(&b) if b < 0x80 => out.push(b),
            _ => return,
        }
    }
    if escaped_at(out, percent_at).is_some() {
        if !append_next && let Some(&first) = out.get(percent_at + 1) {
            out.push(first);
        }
        if let Some(digits) = out.get_mut(percent_at + 1..percent_at + 3) {
            digits.copy_from_slice(b"25");
        }
        out.push(last);
    } else if append_next {
        out.truncate(len);
    }
}

/// The canonical path, or `None` when it holds a NUL.
pub fn canonicalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len() + 1);
    if path.is_empty() {
        return Some(b"/".to_vec());
    }
    if !is_slash(path.first()) {
        out.push(b'/');
    }
    let mut ok = true;
    let mut bad_percent: Option<usize> = None;
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        let dot = dot_len(path, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match dot_segment(path, i + dot) {
                    DotSegment::Name => {
                        out.push(b'.');
                        i += dot;
                    }
                    DotSegment::Current { consumed } => i += dot + consumed,
                    DotSegment::Parent { consumed } => {
                        drop_last_segment(&mut out);
                        i += dot + consumed;
                    }
                }
            } else {
                out.push(b'.');
                i += dot;
            }
            continue;
        }
        if b == b'\\' {
            out.push(b'/');
        } else if b == b'%' {
            match escaped_at(path, i) {
                Some(value) => {
                    match class(value) {
                        Class::Unreserved => {
                            out.push(value);
                            if let Some(p) = bad_percent
                                && p + 3 >= out.len()
                            {
                                guard_nested_escape(path, i + 3, p, &mut out);
                            }
                        }
                        other => {
                            out.extend_from_slice(path.get(i..i + 3).unwrap_or_default());
                            if other == Class::Invalid {
                                ok = false;
                            }
                        }
                    }
                    i += 3;
                    continue;
                }
                None => {
                    bad_percent = Some(out.len());
                    out.push(b'%');
                }
            }
        } else {
            match class(b) {
                Class::Keep | Class::Unreserved => out.push(b),
                Class::Escape => push_escaped(&mut out, b),
                Class::Invalid => {
                    push_escaped(&mut out, b);
                    ok = false;
                }
            }
        }
        i += 1;
    }
    ok.then_some(out)
}

/// `merge_slashes`: every run of `/` becomes one, keeping a leading and a
/// trailing one. (A path of only slashes keeps both: `//` stays `//`.)
pub fn merge_slashes(path: &[u8]) -> Vec<u8> {
    if !path.windows(2).any(|w| w == b"//") {
        return path.to_vec();
    }
    let mut out = Vec::with_capacity(path.len());
    if path.first() == Some(&b'/') {
        out.push(b'/');
    }
    let segments: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .collect();
    out.extend_from_slice(&segments.join(&b'/'));
    if path.last() == Some(&b'/') {
        out.push(b'/');
    }
    out
}

/// The route for a normalized `:path`.
pub fn route(path: &str) -> Route {
    if let Some(rest) = path.strip_prefix("/mcp-connect/") {
        return match rest.find('/') {
            Some(end) => Route::McpServer(rest.get(..end).unwrap_or_default().to_owned()),
            None => Route::None,
        };
    }
    if path.starts_with("/api/") {
        Route::Api
    } else {
        Route::None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn n(p: &str) -> Normalized {
        normalize(p.as_bytes())
    }

    fn path(p: &str) -> String {
        match n(p) {
            Normalized::Path(s) => s,
            Normalized::Refused => panic!("{p} refused"),
        }
    }

    #[test]
    fn documented_examples() {
        assert_eq!(path("/a/./b/../c"), "/a/c");
        assert_eq!(path("/../../a"), "/a");
        assert_eq!(path("/a/%2e%2E/b"), "/b");
        assert_eq!(path("/%61%41%2d%7e"), "/aA-~");
        assert_eq!(path("/%25%3b%3F"), "/%25%3b%3F");
        assert_eq!(path("/a\\b"), "/a/b");
        assert_eq!(path("/a//b///c/"), "/a/b/c/");
        assert_eq!(path("//"), "//");
        assert_eq!(path("/a/..?x/../y"), "/?x/../y");
        assert_eq!(path("/a\"<>^`{|}"), "/a%22%3C%3E%5E%60%7B%7C%7D");
        assert_eq!(n("/\u{e9}"), Normalized::Refused);
        assert_eq!(n("/a?\u{e9}"), Normalized::Refused);
        assert_eq!(path("/%C3%A9"), "/%C3%A9");
        assert_eq!(path("/api/..;/..;/p"), "/p");
        assert_eq!(path("/a/.;x/b"), "/a/b");
        assert_eq!(path("/a/b/..;x"), "/a/");
        assert_eq!(path("/api/..;/..;.;/....;/m;/mc;.;/x"), "/....;/m;/mc;.;/x");
        assert_eq!(path("/a.b/..c/...d"), "/a.b/..c/...d");
        assert_eq!(path("/%%30%30"), "/%2500");
        assert_eq!(n("/a%2fb"), Normalized::Refused);
        assert_eq!(n("/a%5Cb"), Normalized::Refused);
        assert_eq!(n("/a%00"), Normalized::Refused);
        assert_eq!(n("/a#b"), Normalized::Refused);
        assert_eq!(n("/a b"), Normalized::Refused);
        assert_eq!(path("/a?%2f"), "/a?%2f");
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("/mcp-connect/echo/mcp"),
            Route::McpServer("echo".into())
        );
        assert_eq!(route("/mcp-connect/echo"), Route::None);
        assert_eq!(
            route("/mcp-connect/echo?x/"),
            Route::McpServer("echo?x".into())
        );
        assert_eq!(route("/api/me"), Route::Api);
        assert_eq!(route("/MCP-CONNECT/echo/"), Route::None);
    }
}
