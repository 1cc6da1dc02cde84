//! The feed's HTTP contract: the edge's two endpoints and the query of a
//! key-table poll, with the limits the control plane enforces.
//!
//! The filter builds a [`FeedQuery`] and sends [`FeedQuery::path`]; the
//! control plane reads the same value back with [`FeedQuery::parse`] and
//! answers a [`FeedQueryError`]'s message as its 400. Both halves share this
//! file, so a limit or a parameter name cannot drift between them.
//!
//! ```text
//! GET  /internal/v1/key-table                       full snapshot, whole
//! GET  /internal/v1/key-table?limit=N               its first page of N keys
//! GET  /internal/v1/key-table?after=K&limit=N       the page after key id K
//! GET  /internal/v1/key-table?since=V&wait=S[&limit=N[&paged=1]]
//!                                                   changes after V, long-polled;
//!                                                   with paged=1, at most N of them
//! GET  /internal/v1/key-table?since=V&after=K&limit=N
//!                                                   the changed keys after key id K
//! POST /internal/v1/usage                           a UsageReport
//! ```

use std::fmt;

/// Prefix of every endpoint the edge calls (the data-plane token's realm).
pub const INTERNAL_PREFIX: &str = "/internal/v1/";
/// `GET`: the key table (see [`FeedQuery`]), answered as a [`crate::KeyTable`].
pub const KEY_TABLE_PATH: &str = "/internal/v1/key-table";
/// `POST`: last-use times, a [`crate::UsageReport`]; answered 204.
pub const USAGE_PATH: &str = "/internal/v1/usage";

/// Longest long-poll wait (`wait=`) the control plane accepts, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Largest snapshot page (`limit=`) the control plane serves, in keys.
pub const MAX_PAGE_SIZE: u32 = 50_000;

/// How long a poll may wait for a change: 0 to [`MAX_WAIT_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WaitSeconds(u64);

impl WaitSeconds {
    /// Answer at once.
    pub const ZERO: WaitSeconds = WaitSeconds(0);
    pub const MAX: WaitSeconds = WaitSeconds(MAX_WAIT_SECONDS);

    pub fn new(seconds: u64) -> Result<Self, FeedQueryError> {
        if seconds <= MAX_WAIT_SECONDS {
            Ok(Self(seconds))
        } else {
            Err(FeedQueryError::WaitTooLong)
        }
    }

    /// `seconds`, cut to the limit. For callers whose configuration was
    /// already checked with [`WaitSeconds::new`] and that must not fail.
    pub fn saturating(seconds: u64) -> Self {
        Self(seconds.min(MAX_WAIT_SECONDS))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// Keys per snapshot page: 1 to [`MAX_PAGE_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageSize(u32);

impl PageSize {
    pub const MAX: PageSize = PageSize(MAX_PAGE_SIZE);

    pub fn new(keys: u32) -> Result<Self, FeedQueryError> {
        if (1..=MAX_PAGE_SIZE).contains(&keys) {
            Ok(Self(keys))
        } else {
            Err(FeedQueryError::PageSizeOutOfRange)
        }
    }

    /// `keys`, brought into range. For callers whose configuration was
    /// already checked with [`PageSize::new`] and that must not fail.
    pub fn saturating(keys: u32) -> Self {
        Self(keys.clamp(1, MAX_PAGE_SIZE))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// One poll of the key table. Its limits live in its field types, so every
/// value renders to a query the control plane accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedQuery {
    /// A full snapshot: whole, or its first `page` of keys.
    Snapshot { page: Option<PageSize> },
    /// The changes after `version`, waiting up to `wait` for one. When the
    /// change log no longer reaches `version` the answer is a full snapshot,
    /// paged by `page` if set. With `paged_deltas` (`paged=1`, only with
    /// `page`) the delta is paged too: at most `page` changed keys, with
    /// `next` set when more follow ([`FeedQuery::DeltaPage`]). Without it a
    /// delta comes whole, as older edges, which ignore `next`, expect.
    Since {
        version: u64,
        wait: WaitSeconds,
        page: Option<PageSize>,
        paged_deltas: bool,
    },
    /// The page of a paged snapshot after key id `after` (the `next` of the
    /// previous page; 0 starts from the first key). [`FeedQuery::parse`]
    /// refuses a negative id.
    Page { after: i64, page: PageSize },
    /// The page of a paged delta after key id `after` (the `next` of the
    /// previous page): the keys changed after `since` with a larger id.
    /// Answered at once; a full snapshot when the log no longer reaches
    /// `since`.
    DeltaPage {
        since: u64,
        after: i64,
        page: PageSize,
    },
}

/// Parameter names, as sent on the wire.
const SINCE: &str = "since";
const WAIT: &str = "wait";
const LIMIT: &str = "limit";
const AFTER: &str = "after";
const PAGED: &str = "paged";

impl FeedQuery {
    /// Path and query to request, e.g. `/internal/v1/key-table?since=4&wait=20`.
    pub fn path(&self) -> String {
        let query = self.to_string();
        if query.is_empty() {
            KEY_TABLE_PATH.to_owned()
        } else {
            format!("{KEY_TABLE_PATH}?{query}")
        }
    }

    /// Reads the query string of a key-table request (without the `?`; empty
    /// or absent for a whole snapshot). Strict: every parameter at most once,
    /// plain decimal values, no other parameters. `wait` is checked even
    /// where it does not apply (a snapshot is answered at once).
    pub fn parse(query: &str) -> Result<Self, FeedQueryError> {
        let mut since: Option<u64> = None;
        let mut wait: Option<u64> = None;
        let mut limit: Option<u64> = None;
        let mut after: Option<i64> = None;
        let mut paged: Option<u64> = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                SINCE => set(&mut since, SINCE, value)?,
                WAIT => set(&mut wait, WAIT, value)?,
                LIMIT => set(&mut limit, LIMIT, value)?,
                AFTER => set(&mut after, AFTER, value)?,
                PAGED => set(&mut paged, PAGED, value)?,
                _ => return Err(FeedQueryError::UnknownParameter),
            }
        }
        // Checked in this order so each request gets one stable message.
        let wait = WaitSeconds::new(wait.unwrap_or(0))?;
        let page = limit
            .map(|l| {
                u32::try_from(l).map_or(Err(FeedQueryError::PageSizeOutOfRange), PageSize::new)
            })
            .transpose()?;
        let paged_deltas = match paged {
            None | Some(0) => false,
            Some(1) => true,
            Some(_) => return Err(FeedQueryError::PagedNotAFlag),
        };
        if paged_deltas && (since.is_none() || page.is_none()) {
            return Err(FeedQueryError::PagedWithoutSinceAndLimit);
        }
        match (after, since) {
            (Some(after), since) => {
                let page = page.ok_or(FeedQueryError::AfterWithoutLimit)?;
                if after < 0 {
                    return Err(FeedQueryError::NegativeAfter);
                }
                Ok(match since {
                    // A continuation is paged by definition.
                    Some(since) => FeedQuery::DeltaPage { since, after, page },
                    None => FeedQuery::Page { after, page },
                })
            }
            (None, Some(version)) => Ok(FeedQuery::Since {
                version,
                wait,
                page,
                paged_deltas,
            }),
            (None, None) => Ok(FeedQuery::Snapshot { page }),
        }
    }
}

/// Stores one parameter's value, refusing a repeat or a non-number.
fn set<T: std::str::FromStr>(
    slot: &mut Option<T>,
    name: &'static str,
    value: &str,
) -> Result<(), FeedQueryError> {
    if slot.is_some() {
        return Err(FeedQueryError::Repeated(name));
    }
    // `FromStr` alone would also take a leading `+`.
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FeedQueryError::NotANumber(name));
    }
    *slot = Some(
        value
            .parse()
            .map_err(|_| FeedQueryError::NotANumber(name))?,
    );
    Ok(())
}

/// The query string, without the `?`; parameters in a fixed order.
impl fmt::Display for FeedQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedQuery::Snapshot { page: None } => Ok(()),
            FeedQuery::Snapshot { page: Some(p) } => write!(f, "{LIMIT}={}", p.get()),
            FeedQuery::Since {
                version,
                wait,
                page,
                paged_deltas,
            } => {
                write!(f, "{SINCE}={version}&{WAIT}={}", wait.get())?;
                match page {
                    Some(p) if *paged_deltas => write!(f, "&{LIMIT}={}&{PAGED}=1", p.get()),
                    Some(p) => write!(f, "&{LIMIT}={}", p.get()),
                    None => Ok(()),
                }
            }
            FeedQuery::Page { after, page } => write!(f, "{AFTER}={after}&{LIMIT}={}", page.get()),
            FeedQuery::DeltaPage { since, after, page } => {
                write!(f, "{SINCE}={since}&{AFTER}={after}&{LIMIT}={}", page.get())
            }
        }
    }
}

/// Why a key-table query was refused. Its message is the control plane's
/// 400 body; those about a parameter's form start with `invalid query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedQueryError {
    UnknownParameter,
    Repeated(&'static str),
    NotANumber(&'static str),
    WaitTooLong,
    PageSizeOutOfRange,
    AfterWithoutLimit,
    NegativeAfter,
    PagedNotAFlag,
    PagedWithoutSinceAndLimit,
}

impl fmt::Display for FeedQueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedQueryError::UnknownParameter => write!(
                f,
                "invalid query: unknown parameter (expected {SINCE}, {WAIT}, {LIMIT}, {AFTER} or {PAGED})"
            ),
            FeedQueryError::Repeated(name) => write!(f, "invalid query: {name} given twice"),
            FeedQueryError::NotANumber(name) => {
                write!(f, "invalid query: {name} must be a decimal number")
            }
            FeedQueryError::WaitTooLong => {
                write!(f, "{WAIT} must be 0 to {MAX_WAIT_SECONDS} seconds")
            }
            FeedQueryError::PageSizeOutOfRange => write!(f, "{LIMIT} must be 1 to {MAX_PAGE_SIZE}"),
            FeedQueryError::AfterWithoutLimit => write!(f, "{AFTER} needs {LIMIT}"),
            FeedQueryError::NegativeAfter => write!(f, "{AFTER} must be a key id (0 or more)"),
            FeedQueryError::PagedNotAFlag => write!(f, "{PAGED} must be 0 or 1"),
            FeedQueryError::PagedWithoutSinceAndLimit => {
                write!(f, "{PAGED} needs {SINCE} and {LIMIT}")
            }
        }
    }
}

impl std::error::Error for FeedQueryError {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn page(n: u32) -> Option<PageSize> {
        Some(PageSize::new(n).unwrap())
    }

    #[test]
    fn pinned_paths_and_limits() {
        // Deployed edges and control planes of other versions rely on these.
        assert_eq!(KEY_TABLE_PATH, "/internal/v1/key-table");
        assert_eq!(USAGE_PATH, "/internal/v1/usage");
        assert!(KEY_TABLE_PATH.starts_with(INTERNAL_PREFIX));
        assert!(USAGE_PATH.starts_with(INTERNAL_PREFIX));
        assert_eq!(MAX_WAIT_SECONDS, 60);
        assert_eq!(MAX_PAGE_SIZE, 50_000);
    }

    #[test]
    fn limits_are_inclusive() {
        assert_eq!(WaitSeconds::new(0).unwrap(), WaitSeconds::ZERO);
        assert_eq!(WaitSeconds::new(60).unwrap(), WaitSeconds::MAX);
        assert_eq!(WaitSeconds::new(61), Err(FeedQueryError::WaitTooLong));
        assert_eq!(WaitSeconds::saturating(u64::MAX), WaitSeconds::MAX);
        assert_eq!(PageSize::new(1).unwrap().get(), 1);
        assert_eq!(PageSize::new(50_000).unwrap(), PageSize::MAX);
        for bad in [0, 50_001, u32::MAX] {
            assert_eq!(PageSize::new(bad), Err(FeedQueryError::PageSizeOutOfRange));
        }
        assert_eq!(PageSize::saturating(0).get(), 1);
        assert_eq!(PageSize::saturating(u32::MAX), PageSize::MAX);
    }

    #[test]
    fn renders_what_the_filter_sends() {
        let wait = WaitSeconds::new(20).unwrap();
        for (q, path) in [
            (FeedQuery::Snapshot { page: None }, "/internal/v1/key-table"),
            (
                FeedQuery::Snapshot { page: page(50_000) },
                "/internal/v1/key-table?limit=50000",
            ),
            (
                FeedQuery::Since {
                    version: 4,
                    wait,
                    page: None,
                    paged_deltas: false,
                },
                "/internal/v1/key-table?since=4&wait=20",
            ),
            (
                FeedQuery::Since {
                    version: 4,
                    wait: WaitSeconds::ZERO,
                    page: page(2),
                    paged_deltas: false,
                },
                "/internal/v1/key-table?since=4&wait=0&limit=2",
            ),
            (
                FeedQuery::Since {
                    version: 4,
                    wait,
                    page: page(2),
                    paged_deltas: true,
                },
                "/internal/v1/key-table?since=4&wait=20&limit=2&paged=1",
            ),
            (
                FeedQuery::DeltaPage {
                    since: 4,
                    after: 9,
                    page: page(2).unwrap(),
                },
                "/internal/v1/key-table?since=4&after=9&limit=2",
            ),
            (
                FeedQuery::Page {
                    after: 7,
                    page: page(2).unwrap(),
                },
                "/internal/v1/key-table?after=7&limit=2",
            ),
        ] {
            assert_eq!(q.path(), path);
            let query = path.split_once('?').map_or("", |(_, q)| q);
            assert_eq!(FeedQuery::parse(query), Ok(q), "{path}");
        }
    }

    #[test]
    fn parse_fills_defaults() {
        assert_eq!(
            FeedQuery::parse("since=3"),
            Ok(FeedQuery::Since {
                version: 3,
                wait: WaitSeconds::ZERO,
                page: None,
                paged_deltas: false,
            })
        );
        // `paged=0` is the default; a continuation is paged anyway.
        assert_eq!(
            FeedQuery::parse("since=3&limit=5&paged=0"),
            FeedQuery::parse("since=3&limit=5")
        );
        assert_eq!(
            FeedQuery::parse("paged=1&after=2&since=3&limit=5"),
            Ok(FeedQuery::DeltaPage {
                since: 3,
                after: 2,
                page: page(5).unwrap()
            })
        );
        // Order does not matter; empty pairs are skipped.
        assert_eq!(
            FeedQuery::parse("limit=2&&after=0&"),
            Ok(FeedQuery::Page {
                after: 0,
                page: page(2).unwrap()
            })
        );
        // `wait` on a snapshot is checked, then has nothing to wait for.
        assert_eq!(
            FeedQuery::parse("wait=5"),
            Ok(FeedQuery::Snapshot { page: None })
        );
    }

    #[test]
    fn refusals_and_their_messages() {
        for (q, msg) in [
            ("since=0&wait=61", "wait must be 0 to 60 seconds"),
            ("limit=0", "limit must be 1 to 50000"),
            ("limit=50001", "limit must be 1 to 50000"),
            ("limit=99999999999", "limit must be 1 to 50000"),
            ("since=0&limit=0", "limit must be 1 to 50000"),
            ("after=3", "after needs limit"),
            ("after=3&since=1", "after needs limit"),
            ("after=-1&limit=2", "after must be a key id (0 or more)"),
            (
                "since=1&after=-1&limit=2",
                "after must be a key id (0 or more)",
            ),
            ("since=1&limit=2&paged=2", "paged must be 0 or 1"),
            ("since=1&paged=1", "paged needs since and limit"),
            ("limit=2&paged=1", "paged needs since and limit"),
            ("paged=x", "invalid query: paged must be a decimal number"),
            ("since=abc", "invalid query: since must be a decimal number"),
            ("since=-1", "invalid query: since must be a decimal number"),
            ("since=+1", "invalid query: since must be a decimal number"),
            ("since=", "invalid query: since must be a decimal number"),
            ("since", "invalid query: since must be a decimal number"),
            ("since=%31", "invalid query: since must be a decimal number"),
            ("wait=x", "invalid query: wait must be a decimal number"),
            ("limit=-1", "invalid query: limit must be a decimal number"),
            (
                "after=x&limit=2",
                "invalid query: after must be a decimal number",
            ),
            ("since=1&since=2", "invalid query: since given twice"),
            (
                "bogus=1",
                "invalid query: unknown parameter (expected since, wait, limit, after or paged)",
            ),
            (
                "Since=1",
                "invalid query: unknown parameter (expected since, wait, limit, after or paged)",
            ),
        ] {
            assert_eq!(
                FeedQuery::parse(q).map_err(|e| e.to_string()),
                Err(msg.to_owned()),
                "{q}"
            );
        }
    }

    fn any_page() -> impl Strategy<Value = PageSize> {
        (1..=MAX_PAGE_SIZE).prop_map(|n| PageSize::new(n).unwrap())
    }

    fn any_query() -> impl Strategy<Value = FeedQuery> {
        prop_oneof![
            proptest::option::of(any_page()).prop_map(|page| FeedQuery::Snapshot { page }),
            (
                any::<u64>(),
                0..=MAX_WAIT_SECONDS,
                proptest::option::of(any_page()),
                any::<bool>(),
            )
                .prop_map(|(version, w, page, paged)| FeedQuery::Since {
                    version,
                    wait: WaitSeconds::new(w).unwrap(),
                    page,
                    // Only meaningful (and only sent) with a page size.
                    paged_deltas: paged && page.is_some(),
                }),
            (0..=i64::MAX, any_page()).prop_map(|(after, page)| FeedQuery::Page { after, page }),
            (any::<u64>(), 0..=i64::MAX, any_page())
                .prop_map(|(since, after, page)| FeedQuery::DeltaPage { since, after, page }),
        ]
    }

    proptest! {
        /// Whatever the edge can send, the control plane reads back unchanged.
        #[test]
        fn every_query_round_trips(q in any_query()) {
            let path = q.path();
            let query = path.strip_prefix(KEY_TABLE_PATH).unwrap();
            let query = query.strip_prefix('?').unwrap_or(query);
            prop_assert_eq!(FeedQuery::parse(query), Ok(q));
        }

        /// Parsing never panics, and what it accepts renders back to itself
        /// up to parameter order and defaults.
        #[test]
        fn parse_is_total(s in "[a-z0-9=&+%-]{0,40}") {
            if let Ok(q) = FeedQuery::parse(&s) {
                let again = q.to_string();
                prop_assert_eq!(FeedQuery::parse(&again), Ok(q));
            }
        }
    }
}
