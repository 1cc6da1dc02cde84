//! MCP server names: `[a-z0-9][a-z0-9-]{0,62}`.
//!
//! The name is the `<server-name>` path segment at the edge, so the control
//! plane accepts only names the filter can match byte for byte, and the filter
//! refuses any segment that is not a valid name rather than guessing.

use std::fmt;

pub const MAX_SERVER_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerNameError;

impl fmt::Display for ServerNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "server name must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
        )
    }
}

impl std::error::Error for ServerNameError {}

/// True when `s` is a valid server name. Allocation-free, for the filter's hot path.
pub fn is_valid_server_name(s: &[u8]) -> bool {
    match s.split_first() {
        None => false,
        Some((first, rest)) => {
            s.len() <= MAX_SERVER_NAME_LEN
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
    }
}

impl ServerName {
    pub fn parse(s: &str) -> Result<Self, ServerNameError> {
        if is_valid_server_name(s.as_bytes()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ServerNameError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ServerName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["a", "0", "alpha", "my-server-2", &"a".repeat(63)] {
            assert!(ServerName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "Alpha",
            "a_b",
            "a.b",
            "a/b",
            "a%2fb",
            "..",
            " a",
            "a ",
            &"a".repeat(64),
            "é",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn matches_the_documented_regex(s in "\\PC{0,70}") {
            let by_regex = {
                let b = s.as_bytes();
                !b.is_empty() && b.len() <= 63
                    && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                    && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            };
            prop_assert_eq!(is_valid_server_name(s.as_bytes()), by_regex);
        }

        #[test]
        fn generated_valid_names_parse(s in "[a-z0-9][a-z0-9-]{0,62}") {
            prop_assert!(ServerName::parse(&s).is_ok());
        }
    }
}
