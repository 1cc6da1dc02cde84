//! Finding the ok1 key a request presents.
//!
//! `authorization` is read with the protocol's one bearer rule
//! ([`keygate_protocol::bearer::credential`]: scheme case-insensitive, one
//! space, one token); any other configured header carries the bare key.
//! A credential that is not an ok1 key (a JWT, a session) is "no key": people's
//! own logins pass untouched. Anything that looks like an ok1 key but is not a
//! well-formed one is malformed, and two different keys are a conflict.

use keygate_protocol::{ApiKeyToken, bearer};

/// The key a request presents, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    None,
    Key(ApiKeyToken),
    /// Something meant as an ok1 key that is not a well-formed one. Why it is
    /// malformed is not kept: the client and the metrics see one reason.
    Malformed,
    /// Several headers (or repeated headers) carry different keys.
    Conflict,
}

impl Presented {
    /// True when the request carries something meant as an ok1 key.
    pub fn is_some(&self) -> bool {
        !matches!(self, Presented::None)
    }
}

/// What one header value holds.
enum Candidate<'a> {
    NotAKey,
    Key(&'a [u8]),
    Malformed,
}

/// Trims ASCII whitespace at the start.
fn trim_start(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    v.get(start..).unwrap_or_default()
}

fn read_authorization(value: &[u8]) -> Candidate<'_> {
    match bearer::credential(value) {
        Some(token) if ApiKeyToken::looks_like_token(token) => Candidate::Key(token),
        _ => not_exactly_a_key(value),
    }
}

/// For a value that is not exactly a key in the header's form: a credential
/// that *starts* like an ok1 key (bare, after some scheme, after extra
/// whitespace) was meant as one and is refused rather than ignored. Other
/// credentials (a JWT that happens to contain `ok1-` inside) are not keys.
fn not_exactly_a_key(value: &[u8]) -> Candidate<'_> {
    let trimmed = trim_start(value);
    let after_scheme = trimmed
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .and_then(|i| trimmed.get(i..))
        .map(trim_start)
        .unwrap_or_default();
    if ApiKeyToken::looks_like_token(trimmed) || ApiKeyToken::looks_like_token(after_scheme) {
        Candidate::Malformed
    } else {
        Candidate::NotAKey
    }
}

fn read_bare(value: &[u8]) -> Candidate<'_> {
    if ApiKeyToken::looks_like_token(value) {
        Candidate::Key(value)
    } else {
        not_exactly_a_key(value)
    }
}

/// Looks through `headers` (lowercase names, as Envoy gives them) for the key.
pub fn find_key<'a, N, I>(headers: I, key_headers: &[String]) -> Presented
where
    N: AsRef<[u8]>,
    I: IntoIterator<Item = (N, &'a [u8])>,
{
    let mut found: Option<&[u8]> = None;
    let mut malformed = false;
    for (name, value) in headers {
        let name = name.as_ref();
        if !key_headers
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
        {
            continue;
        }
        let candidate = if name.eq_ignore_ascii_case(b"authorization") {
            read_authorization(value)
        } else {
            read_bare(value)
        };
        match candidate {
            Candidate::NotAKey => {}
            Candidate::Malformed => malformed = true,
            Candidate::Key(k) => match found {
                Some(prev) if prev != k => return Presented::Conflict,
                _ => found = Some(k),
            },
        }
    }
    if malformed {
        return Presented::Malformed;
    }
    match found {
        None => Presented::None,
        Some(k) => match ApiKeyToken::parse(k) {
            Ok(t) => Presented::Key(t),
            Err(_) => Presented::Malformed,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use keygate_protocol::Secret;

    fn key() -> String {
        ApiKeyToken {
            user_id: 7,
            key_id: 42,
            secret: Secret::from_bytes([5; 32]),
        }
        .encode()
    }

    fn find(headers: &[(&str, &str)], key_headers: &[&str]) -> Presented {
        let kh: Vec<String> = key_headers.iter().map(|s| s.to_string()).collect();
        find_key(headers.iter().map(|(n, v)| (*n, v.as_bytes())), &kh)
    }

    #[test]
    fn bearer_any_case() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let v = format!("{scheme} {}", key());
            match find(&[("authorization", &v)], &["authorization"]) {
                Presented::Key(t) => assert_eq!((t.user_id, t.key_id), (7, 42)),
                other => unreachable!("{scheme}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_credentials_are_no_key() {
        for v in [
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
            "Basic dXNlcjpwYXNz",
            "",
            "Bearer",
            "Bearer ",
            // A JWT may contain `ok1-` by chance (base64url has `-`).
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvok1-x.sig",
            "Basic ok1",
        ] {
            assert_eq!(
                find(&[("authorization", v)], &["authorization"]),
                Presented::None,
                "{v}"
            );
        }
        assert_eq!(
            find(&[("cookie", &key())], &["authorization"]),
            Presented::None
        );
        let both = ["authorization", "x-api-key"];
        assert_eq!(
            find(&[("x-api-key", "legacy-ok1-key")], &both),
            Presented::None
        );
        // x-api-key is only read when configured.
        assert_eq!(
            find(&[("x-api-key", &key())], &["authorization"]),
            Presented::None
        );
    }

    #[test]
    fn malformed_spellings() {
        let k = key();
        for v in [
            format!("Bearer  {k}"),
            format!("Bearer {k} "),
            format!("Bearer {k} extra"),
            format!("Token {k}"),
            k.clone(),
            format!("Bearer {k}x"),
            format!("Bearer {}", &k[..k.len() - 1]),
            "Bearer ok1-1-2-short".to_owned(),
            format!("Bearer\t{k}"),
            format!("  {k}"),
            format!("Basic {k}"),
        ] {
            assert!(
                matches!(
                    find(&[("authorization", &v)], &["authorization"]),
                    Presented::Malformed
                ),
                "{v:?}"
            );
        }
    }

    #[test]
    fn bare_header_with_a_scheme_is_malformed_not_absent() {
        // Meant as a key, so refused (and 403 off-route), never passed on.
        let k = key();
        let both = ["authorization", "x-api-key"];
        for v in [
            format!("Bearer {k}"),
            format!("Token {k}"),
            format!("\t{k}"),
        ] {
            assert!(
                matches!(find(&[("x-api-key", &v)], &both), Presented::Malformed),
                "{v:?}"
            );
        }
        assert_eq!(
            find(&[("x-api-key", "Bearer eyJ.x.y")], &both),
            Presented::None
        );
    }

    #[test]
    fn x_api_key_and_conflicts() {
        let k = key();
        let both = ["authorization", "x-api-key"];
        assert!(matches!(
            find(&[("x-api-key", &k)], &both),
            Presented::Key(_)
        ));
        let bearer = format!("Bearer {k}");
        assert!(matches!(
            find(&[("authorization", &bearer), ("x-api-key", &k)], &both),
            Presented::Key(_)
        ));
        let other = ApiKeyToken {
            user_id: 7,
            key_id: 43,
            secret: Secret::from_bytes([5; 32]),
        }
        .encode();
        assert_eq!(
            find(&[("authorization", &bearer), ("x-api-key", &other)], &both),
            Presented::Conflict
        );
        let bearer2 = format!("Bearer {other}");
        assert_eq!(
            find(
                &[("authorization", &bearer), ("authorization", &bearer2)],
                &["authorization"]
            ),
            Presented::Conflict
        );
        assert!(matches!(
            find(&[("x-api-key", &format!(" {k}"))], &both),
            Presented::Malformed
        ));
        // A second, different (even if broken) key is a conflict.
        assert_eq!(
            find(
                &[("authorization", &bearer), ("x-api-key", "ok1-garbage")],
                &both
            ),
            Presented::Conflict
        );
        assert!(matches!(
            find(&[("authorization", "Bearer ok1-garbage")], &both),
            Presented::Malformed
        ));
        // An authorization value the bearer rule refuses holds no key to
        // compare: malformed, whatever the other header carries.
        assert_eq!(
            find(
                &[
                    ("authorization", &format!("{bearer} ")),
                    ("x-api-key", &other)
                ],
                &both
            ),
            Presented::Malformed
        );
    }
}
