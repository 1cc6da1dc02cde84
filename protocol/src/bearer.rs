//! The `Authorization: Bearer` rule both halves apply, and the
//! `WWW-Authenticate` challenges they answer with.
//!
//! One strict spelling: the scheme `Bearer` in any ASCII case, exactly one
//! space, then the credential, which is non-empty and holds no whitespace.
//! Anything else (two spaces, a tab, a trailing space, another scheme) is no
//! bearer credential at all. The filter reads API keys with it, the control
//! plane every token it takes, so a header one half accepts the other does too.

/// The scheme as sent (matched case-insensitively).
pub const SCHEME: &str = "Bearer";

/// `WWW-Authenticate` when no credential was presented (RFC 6750 §3).
pub const CHALLENGE: &str = "Bearer";
/// `WWW-Authenticate` when the credential does not authenticate.
pub const CHALLENGE_INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";
/// `WWW-Authenticate` when the credential is valid but not for this resource.
pub const CHALLENGE_INSUFFICIENT_SCOPE: &str = "Bearer error=\"insufficient_scope\"";

/// The credential of an `Authorization` value, if it is a bearer under the
/// rule above. Allocation-free and never panicking: the filter calls it on
/// every request.
pub fn credential(authorization: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = authorization.split_at_checked(SCHEME.len())?;
    let token = rest.strip_prefix(b" ")?;
    let well_formed = scheme.eq_ignore_ascii_case(SCHEME.as_bytes())
        && !token.is_empty()
        && !token.iter().any(u8::is_ascii_whitespace);
    well_formed.then_some(token)
}

/// The `Authorization` value that presents `credential` as a bearer.
pub fn authorization(credential: &str) -> String {
    format!("{SCHEME} {credential}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pinned_challenges() {
        assert_eq!(CHALLENGE, "Bearer");
        assert_eq!(CHALLENGE_INVALID_TOKEN, r#"Bearer error="invalid_token""#);
        assert_eq!(
            CHALLENGE_INSUFFICIENT_SCOPE,
            r#"Bearer error="insufficient_scope""#
        );
    }

    #[test]
    fn accepts_one_space_any_case() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR abc"] {
            assert_eq!(credential(v.as_bytes()), Some(&b"abc"[..]), "{v}");
        }
        assert_eq!(
            credential(b"Bearer eyJhbGciOi.x.y"),
            Some(&b"eyJhbGciOi.x.y"[..])
        );
        assert_eq!(authorization("abc"), "Bearer abc");
    }

    #[test]
    fn refuses_every_other_spelling() {
        for v in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer  abc",
            "Bearer abc ",
            "Bearer abc def",
            "Bearer\tabc",
            "Bearer abc\t",
            " Bearer abc",
            "Bearerabc",
            "Bearer: abc",
            "Basic abc",
            "Token abc",
            "Bearex abc",
        ] {
            assert_eq!(credential(v.as_bytes()), None, "{v:?}");
        }
        // Non-ASCII in the scheme position is no scheme.
        assert_eq!(credential("Béarer abc".as_bytes()), None);
    }

    proptest! {
        #[test]
        fn round_trips(token in "[!-~]{1,64}") {
            let header = authorization(&token);
            prop_assert_eq!(credential(header.as_bytes()), Some(token.as_bytes()));
        }

        #[test]
        fn never_panics_and_never_yields_whitespace(v in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(t) = credential(&v) {
                prop_assert!(!t.is_empty());
                prop_assert!(!t.iter().any(u8::is_ascii_whitespace));
                prop_assert_eq!(v.len(), t.len() + SCHEME.len() + 1);
            }
        }
    }
}
