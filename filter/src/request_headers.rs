//! The request's headers as Envoy hands them over: one buffer in Proxy-Wasm's
//! map serialization, read in place.
//!
//! Why not the SDK's `get_map_bytes`: it copies every name into a `String`
//! and every value into a `Vec` (two allocations per header, on every
//! request, including the ones the filter only looks at), and it panics on a
//! name that is not UTF-8. Here the host's one buffer is kept as it is:
//! checked once when it arrives, names lowercased in place, and walked again
//! (a few dozen bytes of lengths) whenever a header is looked up.
//!
//! The layout (Proxy-Wasm ABI): a little-endian `u32` pair count `n`, then
//! `n` pairs of `u32` lengths (name, value), then each name and value in that
//! order, each followed by a NUL byte.

use std::ops::Range;

/// A request's headers in the host's serialization, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaders {
    bytes: Vec<u8>,
    count: usize,
}

/// Bytes `at..at + 4` as a little-endian length.
fn read_len(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

/// Where pair `index`'s name and value sit, given where its data starts.
fn pair_at(bytes: &[u8], index: usize, data_at: usize) -> Option<(Range<usize>, Range<usize>)> {
    let lengths = index.checked_mul(8)?.checked_add(4)?;
    let name_len = read_len(bytes, lengths)?;
    let value_len = read_len(bytes, lengths.checked_add(4)?)?;
    let name_end = data_at.checked_add(name_len)?;
    let value_at = name_end.checked_add(1)?;
    let value_end = value_at.checked_add(value_len)?;
    Some((data_at..name_end, value_at..value_end))
}

/// Serializes `pairs` in the map layout above, as the filter hands maps to
/// the host (a local reply's headers); `None` when a length does not fit
/// in a `u32`.
pub fn encode_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Option<Vec<u8>> {
    let mut size = pairs.len().checked_mul(8)?.checked_add(4)?;
    for (name, value) in pairs {
        size = size
            .checked_add(name.as_ref().len())?
            .checked_add(value.as_ref().len())?
            .checked_add(2)?;
    }
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&u32::try_from(pairs.len()).ok()?.to_le_bytes());
    for (name, value) in pairs {
        bytes.extend_from_slice(&u32::try_from(name.as_ref().len()).ok()?.to_le_bytes());
        bytes.extend_from_slice(&u32::try_from(value.as_ref().len()).ok()?.to_le_bytes());
    }
    for (name, value) in pairs {
        bytes.extend_from_slice(name.as_ref());
        bytes.push(0);
        bytes.extend_from_slice(value.as_ref());
        bytes.push(0);
    }
    Some(bytes)
}

impl RequestHeaders {
    /// Takes the host's buffer. `None` when it is not a well-formed map (a
    /// length past the end, a missing NUL, a name that is not ASCII): the
    /// caller then fails closed, as for headers it could not read at all.
    /// An empty buffer is an empty map (Envoy sends none for no headers).
    pub fn from_serialized(mut bytes: Vec<u8>) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self { bytes, count: 0 });
        }
        let count = read_len(&bytes, 0)?;
        let mut data_at = count.checked_mul(8)?.checked_add(4)?;
        for index in 0..count {
            let (name, value) = pair_at(&bytes, index, data_at)?;
            if bytes.get(name.end) != Some(&0) || bytes.get(value.end) != Some(&0) {
                return None;
            }
            // Envoy's codecs only admit token characters in names, and its
            // maps hold them lowercase already; this guards the comparisons
            // made later, in place, in one pass.
            let name = bytes.get_mut(name)?;
            if !name.is_ascii() {
                return None;
            }
            name.make_ascii_lowercase();
            data_at = value.end.checked_add(1)?;
        }
        Some(Self { bytes, count })
    }

    /// Serializes `pairs` the way the host does: for tests and fuzz targets,
    /// which build requests without an Envoy.
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Option<Self> {
        Self::from_serialized(encode_pairs(pairs)?)
    }

    /// Every header in the host's order: lowercase name (ASCII, checked in
    /// [`Self::from_serialized`]), raw value. Names stay bytes: every request
    /// walks the map several times, and making a `str` of each name on each
    /// walk (a UTF-8 check) was a tenth of the filter's own time.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut data_at = self.count.saturating_mul(8).saturating_add(4);
        (0..self.count).map_while(move |index| {
            let (name, value) = pair_at(&self.bytes, index, data_at)?;
            data_at = value.end.saturating_add(1);
            Some((self.bytes.get(name)?, self.bytes.get(value)?))
        })
    }

    /// The first value of the header `name` (lowercase), e.g. `:path`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoded_pairs_are_the_host_layout() {
        let bytes = encode_pairs(&[("content-type", "application/json"), ("a", "")]).unwrap();
        let mut want = vec![2, 0, 0, 0, 12, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"content-type\0application/json\0a\0\0");
        assert_eq!(bytes, want);
        assert_eq!(encode_pairs::<&str, &str>(&[]).unwrap(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn reads_names_lowercased_and_values_raw() {
        let h = RequestHeaders::from_pairs(&[
            (":path", &b"/mcp-connect/a/mcp"[..]),
            ("Authorization", b"Bearer x"),
            ("x-bin", &[0xff, 0x00, 0x41][..]),
        ])
        .unwrap();
        let all: Vec<_> = h.iter().collect();
        assert_eq!(
            all,
            vec![
                (&b":path"[..], &b"/mcp-connect/a/mcp"[..]),
                (b"authorization", b"Bearer x"),
                (b"x-bin", &[0xff, 0x00, 0x41][..]),
            ]
        );
        assert_eq!(h.get("authorization"), Some(&b"Bearer x"[..]));
        assert_eq!(h.get("Authorization"), None, "lookups take lowercase names");
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn empty_buffer_and_zero_count_are_empty_maps() {
        assert!(
            RequestHeaders::from_serialized(Vec::new())
                .unwrap()
                .is_empty()
        );
        let h = RequestHeaders::from_pairs::<&str, &str>(&[]).unwrap();
        assert_eq!(h.iter().count(), 0);
    }

    #[test]
    fn malformed_buffers_are_refused() {
        let good = RequestHeaders::from_pairs(&[("a", "b")]).unwrap().bytes;
        // Truncated anywhere.
        for end in 1..good.len() {
            assert!(
                RequestHeaders::from_serialized(good[..end].to_vec()).is_none(),
                "{end}"
            );
        }
        // A missing NUL after the value.
        let mut no_nul = good.clone();
        *no_nul.last_mut().unwrap() = b'x';
        assert!(RequestHeaders::from_serialized(no_nul).is_none());
        // A count far past the buffer.
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(RequestHeaders::from_serialized(huge).is_none());
        // A name that is not ASCII (not UTF-8, or UTF-8 but not ASCII).
        assert!(RequestHeaders::from_pairs(&[(&[0xffu8][..], &b"v"[..])]).is_none());
        assert!(RequestHeaders::from_pairs(&[("x-é", "v")]).is_none());
    }

    proptest! {
        /// Whatever the host sends, reading it never panics, and what
        /// `from_pairs` writes reads back as the same pairs.
        #[test]
        fn round_trip_and_never_panic(
            pairs in proptest::collection::vec(("[a-zA-Z:_-]{0,12}", proptest::collection::vec(any::<u8>(), 0..16)), 0..8),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = RequestHeaders::from_serialized(junk);
            let h = RequestHeaders::from_pairs(&pairs).unwrap();
            let read: Vec<(String, Vec<u8>)> = h.iter().map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.to_vec())).collect();
            let want: Vec<(String, Vec<u8>)> = pairs.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect();
            prop_assert_eq!(read, want);
        }
    }
}
