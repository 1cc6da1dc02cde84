//! Variants of real keys for the deny tests, built with the protocol crate's
//! token type (the one place the `ok1-` format is defined).

use keygate_protocol::{ApiKeyToken, Secret};

/// Parses a key the control plane issued; panics if it is not an ok1 key.
pub fn parse(key: &str) -> ApiKeyToken {
    ApiKeyToken::parse(key.as_bytes())
        .unwrap_or_else(|e| panic!("control plane issued a key the protocol parser refuses: {e:?}"))
}

/// The secret part of a key as text: everything after the third `-`. The
/// secret's base64url alphabet has `-` in it, so the last `-` is not the
/// boundary.
pub fn secret_part(key: &str) -> &str {
    key.splitn(4, '-')
        .nth(3)
        .unwrap_or_else(|| panic!("not an ok1 key: {} characters", key.len()))
}

/// A well-formed key that no control plane ever issued.
pub fn unknown_key() -> String {
    ApiKeyToken {
        user_id: 1,
        key_id: 999_999_999,
        secret: Secret::from_bytes([7; 32]),
    }
    .encode()
}

/// `key` with another user id (same key id and secret).
pub fn with_user_id(key: &str, user_id: i64) -> String {
    ApiKeyToken {
        user_id,
        ..parse(key)
    }
    .encode()
}

/// `key` with one bit of its secret flipped (same ids).
pub fn with_wrong_secret(key: &str) -> String {
    let token = parse(key);
    let mut bytes = *token.secret.as_bytes();
    bytes[0] ^= 1;
    ApiKeyToken {
        secret: Secret::from_bytes(bytes),
        ..token
    }
    .encode()
}

/// `key` with another key id (same user id and secret).
pub fn with_key_id(key: &str, key_id: i64) -> String {
    ApiKeyToken {
        key_id,
        ..parse(key)
    }
    .encode()
}
