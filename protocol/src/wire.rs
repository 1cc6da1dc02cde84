//! JSON wire types between the control plane and the edge.
//!
//! `GET /internal/v1/key-table` (see [`crate::feed`])
//! answers a [`KeyTable`];
//! `POST /internal/v1/usage` takes a [`UsageReport`]. Both use camelCase and
//! unix seconds (UTC) for times, so the filter needs no date parser.

use crate::secret::SecretHash;
use serde::{Deserialize, Serialize};

/// A snapshot (`full: true`: replace everything) or a delta (`full: false`:
/// apply `upserts`, then `removals`, on top of the table at `since`).
///
/// Readers ignore fields they do not know, so the control plane can add one
/// without failing every older edge closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyTable {
    /// Monotonic across restarts and replicas. Poll again with `since=version`.
    pub version: u64,
    pub full: bool,
    #[serde(default)]
    pub upserts: Vec<KeyEntry>,
    /// Ids of keys that no longer exist or no longer open anything.
    #[serde(default)]
    pub removals: Vec<i64>,
    /// On a page of a full snapshot asked for with `limit`, or of a delta
    /// asked for with `limit` and `paged=1`: the key id to continue after
    /// (`after=next`). Absent on the last page and on every answer that was
    /// not asked for in pages, so older readers (which ignore it) still see
    /// a whole answer whenever they did not ask for pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
    /// Every MCP server registered at the control plane when it answered;
    /// the edge refuses every key on any other server name. A control plane
    /// that knows this field sends it on every answer (snapshot pages and
    /// deltas, empty ones included), so it is never a diff. Absent (an older
    /// control plane) means "not known": the edge then checks only each
    /// key's servers, as before. Older edges ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_servers: Option<Vec<String>>,
}

/// Everything the edge needs to decide a request made with one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEntry {
    pub id: i64,
    pub user_id: i64,
    pub secret_hash: SecretHash,
    /// Unix seconds; the key is refused at and after this instant.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// The key's effective servers: its scope intersected with its owner's access now.
    pub servers: ServerScope,
    /// After a rotation with overlap: the secret it replaced, accepted until
    /// its deadline. Absent otherwise, and from an older control plane; an
    /// older edge ignores it (and so refuses the old secret at once, which
    /// fails closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<PreviousSecret>,
}

/// The secret a rotation replaced, while it still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousSecret {
    pub hash: SecretHash,
    /// Unix seconds; the old secret is refused at and after this instant,
    /// by the edge's own clock, with no further word from the control plane.
    pub expires_at: i64,
}

impl PreviousSecret {
    /// Whether the old secret is still accepted at `now_unix`.
    pub fn open_at(&self, now_unix: i64) -> bool {
        now_unix < self.expires_at
    }
}

/// A set of MCP server names, or every server (`"*"` on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerScope {
    All,
    Named(Vec<String>),
}

impl ServerScope {
    pub fn contains(&self, server: &str) -> bool {
        match self {
            ServerScope::All => true,
            ServerScope::Named(names) => names.iter().any(|n| n == server),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, ServerScope::Named(n) if n.is_empty())
    }
}

impl Serialize for ServerScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerScope::All => s.serialize_str("*"),
            ServerScope::Named(names) => names.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ServerScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Star(String),
            Names(Vec<String>),
        }
        match Repr::deserialize(d)? {
            Repr::Star(s) if s == "*" => Ok(ServerScope::All),
            Repr::Star(_) => Err(serde::de::Error::custom(
                "servers must be \"*\" or a list of names",
            )),
            Repr::Names(n) => Ok(ServerScope::Named(n)),
        }
    }
}

/// Last-use times the edge observed, sent in batches.
///
/// Compatibility both ways: readers ignore fields they do not know (a
/// control plane before rotation refused them, so an edge only ever sends a
/// field such a control plane cannot know about when that control plane
/// could not have caused it: see [`UsageItem::previous_secret_used_at`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub items: Vec<UsageItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageItem {
    pub key_id: i64,
    /// Unix seconds: the latest use with either secret.
    pub last_used_at: i64,
    /// Unix seconds: the latest use with the secret a rotation replaced.
    /// Only a table entry with a [`KeyEntry::previous_secret`] can produce
    /// it, and only a control plane that knows rotation sends one, so a
    /// control plane that refuses unknown fields never receives it. Left
    /// out when absent, so such a report is byte for byte the older shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_used_at: Option<i64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn key_table_json_shape() {
        let t = KeyTable {
            version: 7,
            full: false,
            upserts: vec![
                KeyEntry {
                    id: 3,
                    user_id: 1,
                    secret_hash: Secret::from_bytes([0; 32]).hash(),
                    expires_at: Some(1_900_000_000),
                    servers: ServerScope::Named(vec!["alpha".into()]),
                    previous_secret: Some(PreviousSecret {
                        hash: Secret::from_bytes([0; 32]).hash(),
                        expires_at: 1_800_000_000,
                    }),
                },
                KeyEntry {
                    id: 4,
                    user_id: 1,
                    secret_hash: Secret::from_bytes([0; 32]).hash(),
                    expires_at: None,
                    servers: ServerScope::All,
                    previous_secret: None,
                },
            ],
            removals: vec![9],
            next: None,
            registered_servers: Some(vec!["alpha".into(), "beta".into()]),
        };
        let v = serde_json::to_value(&t).unwrap();
        // `next` is left out unless there is a next page.
        assert!(v.get("next").is_none());
        assert_eq!(v["registeredServers"], serde_json::json!(["alpha", "beta"]));
        assert_eq!(v["version"], 7);
        assert_eq!(v["upserts"][0]["userId"], 1);
        assert_eq!(v["upserts"][0]["servers"][0], "alpha");
        assert_eq!(v["upserts"][1]["servers"], "*");
        assert_eq!(
            v["upserts"][0]["secretHash"],
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(
            v["upserts"][0]["previousSecret"],
            serde_json::json!({
                "hash": "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925",
                "expiresAt": 1_800_000_000
            })
        );
        // No previous secret, no field: the entry is what an older control plane sent.
        assert!(v["upserts"][1].get("previousSecret").is_none());
        assert_eq!(v["removals"][0], 9);
        let back: KeyTable = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, t);
        // A field added by a newer control plane does not break an older edge.
        let mut newer = v;
        newer["upserts"][0]["labels"] = serde_json::json!({"team": "a"});
        newer["compression"] = serde_json::json!("none");
        assert_eq!(serde_json::from_value::<KeyTable>(newer).unwrap(), t);
    }

    #[test]
    fn snapshot_page_carries_next() {
        let page = KeyTable {
            version: 3,
            full: true,
            upserts: vec![],
            removals: vec![],
            next: Some(41),
            registered_servers: None,
        };
        let v = serde_json::to_value(&page).unwrap();
        assert_eq!(v["next"], 41);
        assert_eq!(serde_json::from_value::<KeyTable>(v).unwrap(), page);
        // Absent and null both read as "last page".
        let last: KeyTable =
            serde_json::from_str(r#"{"version":3,"full":true,"upserts":[],"next":null}"#).unwrap();
        assert_eq!(last.next, None);
        let old: KeyTable = serde_json::from_str(r#"{"version":3,"full":true}"#).unwrap();
        assert_eq!(old.next, None);
    }

    #[test]
    fn registered_servers_are_optional_both_ways() {
        // An older control plane sends none: "not known", not "none registered".
        let old: KeyTable = serde_json::from_str(r#"{"version":3,"full":false}"#).unwrap();
        assert_eq!(old.registered_servers, None);
        let none: KeyTable =
            serde_json::from_str(r#"{"version":3,"full":false,"registeredServers":[]}"#).unwrap();
        assert_eq!(none.registered_servers, Some(vec![]));
        // Not known is not sent, so an answer without it is byte for byte
        // what an older control plane sent.
        let v = serde_json::to_value(&old).unwrap();
        assert!(v.get("registeredServers").is_none());
    }

    #[test]
    fn scope_rejects_other_strings() {
        assert!(serde_json::from_str::<ServerScope>("\"all\"").is_err());
        assert_eq!(
            serde_json::from_str::<ServerScope>("\"*\"").unwrap(),
            ServerScope::All
        );
        assert!(ServerScope::All.contains("x"));
        assert!(!ServerScope::Named(vec!["a".into()]).contains("b"));
    }

    #[test]
    fn usage_report_shape() {
        let r: UsageReport =
            serde_json::from_str(r#"{"items":[{"keyId":5,"lastUsedAt":1700000000}]}"#).unwrap();
        assert_eq!(r.items[0].key_id, 5);
        assert_eq!(r.items[0].previous_secret_used_at, None);
        let r: UsageReport = serde_json::from_str(
            r#"{"items":[{"keyId":5,"lastUsedAt":1700000009,"previousSecretUsedAt":1700000007}]}"#,
        )
        .unwrap();
        assert_eq!(r.items[0].previous_secret_used_at, Some(1_700_000_007));
    }

    /// The report as the control plane before rotation read it: unknown
    /// fields refused. Kept here to prove an edge never sends it one.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct OldUsageReport {
        items: Vec<OldUsageItem>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct OldUsageItem {
        key_id: i64,
        last_used_at: i64,
    }

    #[test]
    fn a_new_edge_report_without_previous_use_is_the_old_shape() {
        // Uses with the current secret only (all an older control plane's
        // entries can produce): the old reader takes the report.
        let report = UsageReport {
            items: vec![UsageItem {
                key_id: 5,
                last_used_at: 1_700_000_000,
                previous_secret_used_at: None,
            }],
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(json, r#"{"items":[{"keyId":5,"lastUsedAt":1700000000}]}"#);
        assert!(serde_json::from_str::<OldUsageReport>(&json).is_ok());
        // With a previous-secret use, the old reader would refuse it: why
        // the edge only reports one for entries a newer control plane sent.
        let newer = UsageReport {
            items: vec![UsageItem {
                previous_secret_used_at: Some(1_700_000_000),
                ..report.items[0].clone()
            }],
        };
        let json = serde_json::to_string(&newer).unwrap();
        assert!(serde_json::from_str::<OldUsageReport>(&json).is_err());
    }

    #[test]
    fn a_new_control_plane_reads_old_and_future_reports() {
        // An older edge's report.
        let old: UsageReport =
            serde_json::from_str(r#"{"items":[{"keyId":5,"lastUsedAt":1700000000}]}"#).unwrap();
        assert_eq!(
            old.items,
            vec![UsageItem {
                key_id: 5,
                last_used_at: 1_700_000_000,
                previous_secret_used_at: None
            }]
        );
        // A field added by a future edge is ignored, on the report and on items.
        let future: UsageReport = serde_json::from_str(
            r#"{"items":[{"keyId":5,"lastUsedAt":1700000000,"region":"eu"}],"sentAt":1}"#,
        )
        .unwrap();
        assert_eq!(future, old);
    }

    #[test]
    fn previous_secret_closes_at_its_deadline() {
        let p = PreviousSecret {
            hash: Secret::from_bytes([1; 32]).hash(),
            expires_at: 100,
        };
        assert!(p.open_at(99));
        assert!(!p.open_at(100));
        assert!(!p.open_at(101));
        // The wire form reads back.
        let v = serde_json::json!({"id": 1, "userId": 2,
            "secretHash": Secret::from_bytes([2; 32]).hash(), "servers": "*",
            "previousSecret": p});
        let e: KeyEntry = serde_json::from_value(v).unwrap();
        assert_eq!(e.previous_secret, Some(p));
    }
}
