//! The API key format: `ok1-<userId>-<keyId>-<secret>`.
//!
//! - `ok1` names the format version.
//! - `userId`, `keyId`: decimal database ids, 1 to `i64::MAX`, no sign, no
//!   leading zero.
//! - `secret`: 32 bytes as unpadded base64url (43 characters). The alphabet
//!   contains `-`, so the parser splits on the first three `-` only.
//!
//! [`ApiKeyToken::parse`] is a pure function over bytes: strict (anything else
//! is an error, never a guess), allocation-free and never panicking, so it can
//! run on the filter's hot path and under a fuzzer.

use crate::secret::{SECRET_LEN, Secret};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::fmt;

pub const TOKEN_PREFIX: &str = "ok1-";
/// Length of the base64url secret part.
pub const SECRET_B64_LEN: usize = 43;
/// Longest possible token: prefix, two 19-digit ids, two dashes, secret.
pub const MAX_TOKEN_LEN: usize = TOKEN_PREFIX.len() + 19 + 1 + 19 + 1 + SECRET_B64_LEN;

/// A parsed key. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyToken {
    pub user_id: i64,
    pub key_id: i64,
    pub secret: Secret,
}

/// Why a token was refused. Safe to log and count: it never carries key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    TooLong,
    BadPrefix,
    BadUserId,
    BadKeyId,
    BadSecret,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed API key")
    }
}

impl std::error::Error for TokenError {}

/// Parses a decimal id: ASCII digits only, no leading zero, 1..=i64::MAX.
fn parse_id(s: &[u8]) -> Option<i64> {
    if s.len() > 19 || s.first().is_none_or(|&first| first == b'0') {
        return None;
    }
    let mut n: i64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(n)
}

/// Splits at the first `-`, returning the part before it and the rest after it.
fn split_dash(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b'-')?;
    let (before, dash_and_rest) = s.split_at_checked(i)?;
    Some((before, dash_and_rest.get(1..)?))
}

impl ApiKeyToken {
    /// True when `s` starts like an ok1 key. The filter uses this to tell "a
    /// key was presented" (and must be valid) from "some other credential".
    pub fn looks_like_token(s: &[u8]) -> bool {
        s.starts_with(TOKEN_PREFIX.as_bytes())
    }

    pub fn parse(s: &[u8]) -> Result<Self, TokenError> {
        if s.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let rest = s
            .strip_prefix(TOKEN_PREFIX.as_bytes())
            .ok_or(TokenError::BadPrefix)?;
        let (user, rest) = split_dash(rest).ok_or(TokenError::BadUserId)?;
        let user_id = parse_id(user).ok_or(TokenError::BadUserId)?;
        let (key, secret_b64) = split_dash(rest).ok_or(TokenError::BadKeyId)?;
        let key_id = parse_id(key).ok_or(TokenError::BadKeyId)?;
        if secret_b64.len() != SECRET_B64_LEN {
            return Err(TokenError::BadSecret);
        }
        let mut bytes = [0u8; SECRET_LEN];
        // The engine rejects non-alphabet bytes, padding and non-canonical
        // trailing bits, so each secret has exactly one spelling.
        match URL_SAFE_NO_PAD.decode_slice(secret_b64, &mut bytes) {
            Ok(SECRET_LEN) => {}
            _ => return Err(TokenError::BadSecret),
        }
        Ok(Self {
            user_id,
            key_id,
            secret: Secret::from_bytes(bytes),
        })
    }

    /// The full key as shown to its owner, once.
    pub fn encode(&self) -> String {
        format!(
            "{TOKEN_PREFIX}{}-{}-{}",
            self.user_id,
            self.key_id,
            URL_SAFE_NO_PAD.encode(self.secret.as_bytes())
        )
    }
}

impl fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyToken")
            .field("user_id", &self.user_id)
            .field("key_id", &self.key_id)
            .field("secret", &self.secret)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token(user_id: i64, key_id: i64, b: [u8; 32]) -> ApiKeyToken {
        ApiKeyToken {
            user_id,
            key_id,
            secret: Secret::from_bytes(b),
        }
    }

    #[test]
    fn round_trip_with_dashes_in_secret() {
        // 0xFB bytes encode to '-' and '_' heavy base64url.
        let t = token(12, 345, [0xFB; 32]);
        let s = t.encode();
        assert!(s.starts_with("ok1-12-345-"));
        assert!(s[11..].contains('-') || s[11..].contains('_'));
        assert_eq!(s.len(), 11 + 43);
        assert_eq!(ApiKeyToken::parse(s.as_bytes()), Ok(t));
    }

    #[test]
    fn rejects_malformed() {
        let good = token(1, 2, [9; 32]).encode();
        let secret = &good["ok1-1-2-".len()..];
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::BadPrefix),
            ("ok2-1-2-".to_owned() + secret, TokenError::BadPrefix),
            ("OK1-1-2-".to_owned() + secret, TokenError::BadPrefix),
            (" ".to_owned() + &good, TokenError::BadPrefix),
            ("ok1--2-".to_owned() + secret, TokenError::BadUserId),
            ("ok1-01-2-".to_owned() + secret, TokenError::BadUserId),
            ("ok1-0-2-".to_owned() + secret, TokenError::BadUserId),
            ("ok1-+1-2-".to_owned() + secret, TokenError::BadUserId),
            (
                "ok1-9223372036854775808-2-".to_owned() + secret,
                TokenError::BadUserId,
            ),
            ("ok1-1".to_owned(), TokenError::BadUserId),
            ("ok1-1-".to_owned() + secret, TokenError::BadKeyId),
            ("ok1-1-x-".to_owned() + secret, TokenError::BadKeyId),
            ("ok1-1-2".to_owned(), TokenError::BadKeyId),
            ("ok1-1-2-".to_owned(), TokenError::BadSecret),
            (good.clone() + "A", TokenError::BadSecret),
            (good.clone() + " ", TokenError::BadSecret),
            (good.clone() + "=", TokenError::BadSecret),
            (good[..good.len() - 1].to_owned(), TokenError::BadSecret),
            (
                "ok1-1-2-".to_owned() + &secret[..42] + "!",
                TokenError::BadSecret,
            ),
            (
                "ok1-1-2-".to_owned() + &secret[..42] + " ",
                TokenError::BadSecret,
            ),
            ("x".repeat(MAX_TOKEN_LEN + 1), TokenError::TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(ApiKeyToken::parse(input.as_bytes()), Err(want), "{input:?}");
        }
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // 43 chars encode 258 bits; the last char carries 2 unused bits that
        // must be zero. 'B' sets one of them.
        let s = format!("ok1-1-2-{}B", "A".repeat(42));
        assert_eq!(ApiKeyToken::parse(s.as_bytes()), Err(TokenError::BadSecret));
        let s = format!("ok1-1-2-{}A", "A".repeat(42));
        assert!(ApiKeyToken::parse(s.as_bytes()).is_ok());
    }

    #[test]
    fn largest_ids_fit() {
        let t = token(i64::MAX, i64::MAX, [0; 32]);
        let s = t.encode();
        assert_eq!(s.len(), MAX_TOKEN_LEN);
        assert_eq!(ApiKeyToken::parse(s.as_bytes()), Ok(t));
    }

    #[test]
    fn debug_hides_secret() {
        let t = token(1, 2, [0xCD; 32]);
        let enc = t.encode();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&enc["ok1-1-2-".len()..]));
        assert!(dbg.contains("redacted"));
    }

    proptest! {
        #[test]
        fn encode_then_parse_is_identity(u in 1..=i64::MAX, k in 1..=i64::MAX, b in any::<[u8; 32]>()) {
            let t = token(u, k, b);
            prop_assert_eq!(ApiKeyToken::parse(t.encode().as_bytes()), Ok(t));
        }

        #[test]
        fn parse_never_panics_and_accepts_only_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(t) = ApiKeyToken::parse(&bytes) {
                // Whatever parses re-encodes to exactly the input: one spelling per key.
                let again = t.encode();
                prop_assert_eq!(again.as_bytes(), &bytes[..]);
            }
        }

        #[test]
        fn mutated_tokens_never_parse_to_a_different_key(
            b in any::<[u8; 32]>(), pos in 0usize..54, byte in any::<u8>()
        ) {
            let t = token(1, 2, b);
            let mut s = t.encode().into_bytes();
            let i = pos % s.len();
            if s[i] != byte {
                s[i] = byte;
                if let Ok(p) = ApiKeyToken::parse(&s) {
                    let again = p.encode();
                    prop_assert_ne!(p, t);
                    prop_assert_eq!(again.as_bytes(), &s[..]);
                }
            }
        }

        #[test]
        fn ids_with_leading_zeros_or_signs_are_refused(u in 1..=1_000_000i64, prefix in "[0+ -]") {
            let s = format!("ok1-{prefix}{u}-2-{}", "A".repeat(43));
            prop_assert!(ApiKeyToken::parse(s.as_bytes()).is_err());
        }
    }
}
