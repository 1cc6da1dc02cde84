//! Key secrets and their stored form.
//!
//! A secret is 32 random bytes; only `SHA-256(secret bytes)` is ever stored or
//! shipped to the edge. Verification is constant time, and [`verify`] does the
//! same hash work whether or not a stored hash was found, so timing does not
//! reveal whether a key id exists.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Number of random bytes in a secret.
pub const SECRET_LEN: usize = 32;

/// A key's secret bytes. Its `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Wraps bytes the caller drew from a CSPRNG.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0).into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256 of a secret: what the database stores and the key table carries.
/// Shipped as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time comparison with the hash of `secret`.
    pub fn matches(&self, secret: &Secret) -> bool {
        self.0.ct_eq(&secret.hash().0).into()
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not a secret, but there is no reason to spread it into logs either.
        f.write_str("SecretHash(..)")
    }
}

/// Checks a presented secret against a stored hash that may be missing.
///
/// On a miss it still hashes and compares against a fixed dummy, so a lookup
/// miss costs the same as a hit with a wrong secret.
pub fn verify(stored: Option<&SecretHash>, presented: &Secret) -> bool {
    const DUMMY: SecretHash = SecretHash([0u8; 32]);
    let found = stored.is_some();
    let matched = stored.unwrap_or(&DUMMY).matches(presented);
    found & matched
}

/// Which of a key's secrets a presented one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    Current,
    /// The secret a rotation replaced (the caller checks its deadline).
    Previous,
    Neither,
}

/// Checks a presented secret against a key's current hash and, after a
/// rotation with overlap, its previous one; either may be missing.
///
/// The secret is hashed once and compared with both (a fixed dummy standing
/// in for a missing one), so the work is the same for an unknown key, a key
/// with one secret and a key with two.
pub fn verify_either(
    current: Option<&SecretHash>,
    previous: Option<&SecretHash>,
    presented: &Secret,
) -> SecretMatch {
    const DUMMY: SecretHash = SecretHash([0u8; 32]);
    let hash = presented.hash();
    let current_ok: bool = current.unwrap_or(&DUMMY).0.ct_eq(&hash.0).into();
    let previous_ok: bool = previous.unwrap_or(&DUMMY).0.ct_eq(&hash.0).into();
    if current.is_some() & current_ok {
        SecretMatch::Current
    } else if previous.is_some() & previous_ok {
        SecretMatch::Previous
    } else {
        SecretMatch::Neither
    }
}

impl serde::Serialize for SecretHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SecretHash::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("secretHash must be 64 hex characters"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_of_the_raw_bytes() {
        // SHA-256 of 32 zero bytes.
        let h = Secret::from_bytes([0; 32]).hash();
        assert_eq!(
            h.to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn verify_accepts_only_the_matching_secret() {
        let s = Secret::from_bytes([7; 32]);
        let other = Secret::from_bytes([8; 32]);
        let h = s.hash();
        assert!(verify(Some(&h), &s));
        assert!(!verify(Some(&h), &other));
        assert!(!verify(None, &s));
        // A secret whose hash happens to equal the dummy is still refused on a miss.
        assert!(!verify(None, &Secret::from_bytes([0; 32])));
    }

    #[test]
    fn verify_either_tells_current_from_previous() {
        let current = Secret::from_bytes([1; 32]);
        let previous = Secret::from_bytes([2; 32]);
        let other = Secret::from_bytes([3; 32]);
        let (c, p) = (current.hash(), previous.hash());
        assert_eq!(
            verify_either(Some(&c), Some(&p), &current),
            SecretMatch::Current
        );
        assert_eq!(
            verify_either(Some(&c), Some(&p), &previous),
            SecretMatch::Previous
        );
        assert_eq!(
            verify_either(Some(&c), Some(&p), &other),
            SecretMatch::Neither
        );
        assert_eq!(
            verify_either(Some(&c), None, &previous),
            SecretMatch::Neither
        );
        assert_eq!(verify_either(None, None, &current), SecretMatch::Neither);
        // The dummy that stands in for a missing hash never matches.
        let zero = Secret::from_bytes([0; 32]);
        assert_eq!(verify_either(None, None, &zero), SecretMatch::Neither);
        assert_eq!(verify_either(Some(&c), None, &zero), SecretMatch::Neither);
    }

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let h = Secret::from_bytes([1; 32]).hash();
        assert_eq!(SecretHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(SecretHash::from_hex("abc"), None);
        assert_eq!(SecretHash::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn debug_never_shows_secret_bytes() {
        let s = Secret::from_bytes([0xAB; 32]);
        assert!(!format!("{s:?}").to_lowercase().contains("ab"));
    }
}
