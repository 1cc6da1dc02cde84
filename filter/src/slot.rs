//! The compact binary form of one key-table slot (`kg4/k/<keyId>`) in shared
//! data: what every request decodes, and most of what one key costs in
//! Envoy's memory.
//!
//! The JSON form was ~190 bytes and took microseconds to decode on every
//! request (hex hash, untagged `servers`); this fixed layout is ~90 bytes and
//! a few bounds-checked reads. Little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | tag: 1 = entry, 2 = tombstone |
//! | 8 | generation (u64) |
//! | 8 | table version written at (u64) |
//! | 8 | entry only: key id (i64) |
//! | 8 | user id (i64) |
//! | 32 | SHA-256 of the secret |
//! | 1 + 8 | expiry present (0/1), unix seconds (i64, 0 when absent) |
//! | 1 | previous secret present (0/1): a rotation with overlap |
//! | 32 + 8 | previous only: its SHA-256, its deadline (unix seconds, i64) |
//! | 1 | scope: 0 = every server, 1 = named |
//! | 4 | named only: number of names (u32) |
//! | 1 + n | per name: length, bytes |
//!
//! Names that are not valid server names are left out when encoding: the
//! path reader only ever yields a valid name, so they could never match.
//! Decoding never panics, and refuses unknown tags, invalid names and
//! trailing bytes (garbage reads as "no entry", which fails closed).

use crate::table::StoredEntry;
use keygate_protocol::server_name::is_valid_server_name;
use keygate_protocol::{KeyEntry, PreviousSecret, SecretHash, ServerScope};

const TAG_ENTRY: u8 = 1;
const TAG_TOMBSTONE: u8 = 2;
const SCOPE_ALL: u8 = 0;
const SCOPE_NAMED: u8 = 1;

pub fn encode(slot: &StoredEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.push(if slot.entry.is_some() {
        TAG_ENTRY
    } else {
        TAG_TOMBSTONE
    });
    out.extend_from_slice(&slot.generation.to_le_bytes());
    out.extend_from_slice(&slot.version.to_le_bytes());
    let Some(e) = &slot.entry else {
        return out;
    };
    out.extend_from_slice(&e.id.to_le_bytes());
    out.extend_from_slice(&e.user_id.to_le_bytes());
    out.extend_from_slice(e.secret_hash.as_bytes());
    out.push(u8::from(e.expires_at.is_some()));
    out.extend_from_slice(&e.expires_at.unwrap_or(0).to_le_bytes());
    match &e.previous_secret {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            out.extend_from_slice(p.hash.as_bytes());
            out.extend_from_slice(&p.expires_at.to_le_bytes());
        }
    }
    match &e.servers {
        ServerScope::All => out.push(SCOPE_ALL),
        ServerScope::Named(names) => {
            out.push(SCOPE_NAMED);
            let valid: Vec<&[u8]> = names
                .iter()
                .map(|n| n.as_bytes())
                .filter(|n| is_valid_server_name(n))
                .take(u32::MAX as usize)
                .collect();
            out.extend_from_slice(&u32::try_from(valid.len()).unwrap_or(u32::MAX).to_le_bytes());
            for name in valid {
                // A valid name is 1..=63 bytes.
                out.push(u8::try_from(name.len()).unwrap_or(0));
                out.extend_from_slice(name);
            }
        }
    }
    out
}

/// Reads fixed-size pieces off the front of a slice, never past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }
}

pub fn decode(bytes: &[u8]) -> Option<StoredEntry> {
    let mut c = Cursor(bytes);
    let tag = c.u8()?;
    let generation = c.u64()?;
    let version = c.u64()?;
    let entry = match tag {
        TAG_TOMBSTONE => None,
        TAG_ENTRY => Some(decode_entry(&mut c)?),
        _ => return None,
    };
    c.0.is_empty().then_some(StoredEntry {
        generation,
        version,
        entry,
    })
}

fn decode_entry(c: &mut Cursor<'_>) -> Option<KeyEntry> {
    let id = c.i64()?;
    let user_id = c.i64()?;
    let secret_hash = SecretHash::from_bytes(c.array()?);
    let has_expiry = c.u8()?;
    let expiry = c.i64()?;
    let expires_at = match has_expiry {
        0 => None,
        1 => Some(expiry),
        _ => return None,
    };
    let previous_secret = match c.u8()? {
        0 => None,
        1 => Some(PreviousSecret {
            hash: SecretHash::from_bytes(c.array()?),
            expires_at: c.i64()?,
        }),
        _ => return None,
    };
    let servers = match c.u8()? {
        SCOPE_ALL => ServerScope::All,
        SCOPE_NAMED => {
            let count = u32::from_le_bytes(c.array()?);
            // Never trust the count for an allocation: each name takes ≥ 2 bytes.
            let mut names = Vec::with_capacity((count as usize).min(c.0.len() / 2));
            for _ in 0..count {
                let len = c.u8()?;
                let name = c.take(usize::from(len))?;
                if !is_valid_server_name(name) {
                    return None;
                }
                names.push(String::from_utf8(name.to_vec()).ok()?);
            }
            ServerScope::Named(names)
        }
        _ => return None,
    };
    Some(KeyEntry {
        id,
        user_id,
        secret_hash,
        expires_at,
        servers,
        previous_secret,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use keygate_protocol::Secret;
    use proptest::prelude::*;

    fn slot(e: Option<KeyEntry>) -> StoredEntry {
        StoredEntry {
            generation: 3,
            version: 1_234_567,
            entry: e,
        }
    }

    fn entry(servers: ServerScope, expires_at: Option<i64>) -> KeyEntry {
        KeyEntry {
            id: 734_512,
            user_id: 48_211,
            secret_hash: Secret::from_bytes([7; 32]).hash(),
            expires_at,
            servers,
            previous_secret: None,
        }
    }

    fn rotated(mut e: KeyEntry) -> KeyEntry {
        e.previous_secret = Some(PreviousSecret {
            hash: Secret::from_bytes([8; 32]).hash(),
            expires_at: 1_800_000_000,
        });
        e
    }

    #[test]
    fn round_trips_and_is_compact() {
        let named = ServerScope::Named(vec!["alpha".into(), "github-tools".into()]);
        for s in [
            slot(None),
            slot(Some(entry(ServerScope::All, None))),
            slot(Some(entry(ServerScope::Named(vec![]), Some(-5)))),
            slot(Some(entry(named, Some(1_900_000_000)))),
        ] {
            let bytes = encode(&s);
            assert_eq!(decode(&bytes), Some(s.clone()), "{bytes:?}");
            // The JSON form of the same slot was about twice as large.
            assert!(bytes.len() <= 100, "{} bytes", bytes.len());
        }
        assert_eq!(encode(&slot(None)).len(), 17);
        assert_eq!(encode(&slot(Some(entry(ServerScope::All, None)))).len(), 76);
        // A rotation with overlap adds the old hash and its deadline, while
        // the overlap lasts.
        let r = slot(Some(rotated(entry(ServerScope::All, Some(9)))));
        let bytes = encode(&r);
        assert_eq!(bytes.len(), 76 + 40);
        assert_eq!(decode(&bytes), Some(r));
    }

    #[test]
    fn invalid_names_are_left_out() {
        let s = slot(Some(entry(
            ServerScope::Named(vec![
                "Alpha".into(),
                "beta".into(),
                "a/b".into(),
                String::new(),
            ]),
            None,
        )));
        let back = decode(&encode(&s)).unwrap();
        assert_eq!(
            back.entry.unwrap().servers,
            ServerScope::Named(vec!["beta".into()])
        );
    }

    #[test]
    fn garbage_is_refused() {
        let good = encode(&slot(Some(entry(
            ServerScope::Named(vec!["alpha".into()]),
            Some(9),
        ))));
        // Every truncation, and one extra byte.
        for n in 0..good.len() {
            assert_eq!(decode(&good[..n]), None, "truncated at {n}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        // Unknown tag, expiry flag, previous-secret flag, scope; an invalid name.
        for (at, byte) in [(0, 9u8), (65, 2), (74, 2), (75, 7), (81, b'A')] {
            let mut bad = good.clone();
            bad[at] = byte;
            assert_eq!(decode(&bad), None, "byte {at} = {byte}");
        }
        // A huge name count with nothing behind it.
        let mut bad = good[..76].to_vec();
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&bad), None);
        // A rotated entry cut anywhere in its previous secret.
        let rotated = encode(&slot(Some(rotated(entry(ServerScope::All, None)))));
        for n in 75..rotated.len() {
            assert_eq!(decode(&rotated[..n]), None, "truncated at {n}");
        }
        // The old JSON form is not mistaken for an entry.
        assert_eq!(decode(br#"{"g":1,"v":2,"e":null}"#), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn round_trip(
            g in any::<u64>(), v in any::<u64>(), id in any::<i64>(), user in any::<i64>(),
            hash in any::<[u8; 32]>(), exp in any::<Option<i64>>(),
            names in proptest::option::of(proptest::collection::vec("[a-z0-9][a-z0-9-]{0,62}", 0..5)),
            previous in proptest::option::of((any::<[u8; 32]>(), any::<i64>())),
        ) {
            let s = StoredEntry { generation: g, version: v, entry: Some(KeyEntry {
                id, user_id: user, secret_hash: SecretHash::from_bytes(hash), expires_at: exp,
                servers: names.map_or(ServerScope::All, ServerScope::Named),
                previous_secret: previous.map(|(h, at)| PreviousSecret {
                    hash: SecretHash::from_bytes(h), expires_at: at,
                }),
            }) };
            prop_assert_eq!(decode(&encode(&s)), Some(s));
        }
    }
}
