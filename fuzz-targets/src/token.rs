//! Target `token`: the `ok1-<userId>-<keyId>-<secret>` parser on any bytes.
//!
//! What must hold: no panic; whatever parses re-encodes to exactly the input
//! (one spelling per key, so two spellings never name one key); ids are
//! positive; `Debug` never shows the secret; and a refusal of an over-long
//! input says so.

use keygate_protocol::token::{MAX_TOKEN_LEN, SECRET_B64_LEN};
use keygate_protocol::{ApiKeyToken, TokenError};

pub fn check(data: &[u8]) {
    let looks_like = ApiKeyToken::looks_like_token(data);
    match ApiKeyToken::parse(data) {
        Ok(token) => {
            assert!(looks_like, "parsed without the ok1- prefix");
            assert_eq!(
                token.encode().as_bytes(),
                data,
                "a key parsed from a spelling that is not its own"
            );
            assert!(token.user_id > 0 && token.key_id > 0, "non-positive id");
            let secret = data
                .len()
                .checked_sub(SECRET_B64_LEN)
                .and_then(|start| data.get(start..))
                .unwrap_or_default();
            let shown = format!("{token:?}");
            assert!(
                !shown.as_bytes().windows(secret.len()).any(|w| w == secret),
                "Debug shows the secret"
            );
        }
        Err(e) => {
            if data.len() > MAX_TOKEN_LEN {
                assert_eq!(e, TokenError::TooLong);
            }
            // The error never carries key bytes: one fixed message.
            assert_eq!(e.to_string(), "malformed API key");
        }
    }
}
