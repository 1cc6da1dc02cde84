//! Keys the bench makes itself (for seeding large tables and for Envoy's
//! native filter), in the protocol crate's `ok1` format with its SHA-256
//! hashing: the bench never re-implements either.
//!
//! Secrets come from a seeded splitmix64 stream, not a CSPRNG: these are
//! throwaway benchmark keys, and a million of them must be made in a second.

use keygate_protocol::{ApiKeyToken, Secret, SecretHash};

pub struct BenchKey {
    pub id: i64,
    pub user_id: i64,
    pub token: String,
    pub hash: SecretHash,
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `count` keys of `user_id` with ids `first_id..first_id+count`.
pub fn generate(user_id: i64, first_id: i64, count: usize, seed: u64) -> Vec<BenchKey> {
    let mut rng = SplitMix64(seed);
    (0..count)
        .map(|i| {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            let secret = Secret::from_bytes(bytes);
            let hash = secret.hash();
            let id = first_id + i as i64;
            let token = ApiKeyToken {
                user_id,
                key_id: id,
                secret,
            }
            .encode();
            BenchKey {
                id,
                user_id,
                token,
                hash,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_verify() {
        let keys = generate(7, 100, 50, 1);
        assert_eq!(keys.len(), 50);
        for k in &keys {
            let t = ApiKeyToken::parse(k.token.as_bytes()).unwrap();
            assert_eq!((t.user_id, t.key_id), (7, k.id));
            assert!(k.hash.matches(&t.secret));
        }
        // Distinct secrets.
        assert_ne!(keys[0].hash, keys[1].hash);
    }
}
