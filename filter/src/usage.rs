//! Last-use batching: each worker remembers `{keyId → latest unix s}` in
//! memory and posts it to `/internal/v1/usage` at most every
//! `usageFlushSeconds`. Never a callout per request.
//!
//! A use with the secret a rotation replaced is also remembered as such
//! (`previousSecretUsedAt`). Only an entry from a control plane that knows
//! rotation can produce one, so a control plane that refuses unknown fields
//! never receives it; should one refuse a report anyway (rolled back while
//! the table still holds such entries), the report is sent again without
//! those fields, so last use is never lost.

use crate::config::Config;
use crate::feed::HttpRequest;
use keygate_protocol::feed::USAGE_PATH;
use keygate_protocol::{UsageItem, UsageReport};
use std::collections::HashMap;

/// Upper bound on distinct keys remembered between flushes, so a flood of
/// distinct valid keys cannot grow a worker's memory without limit. Past it,
/// further new keys wait for the next flush window.
pub const MAX_PENDING_KEYS: usize = 50_000;

const USAGE_TIMEOUT_MS: u64 = 5_000;

/// The latest uses of one key since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Uses {
    /// With either secret.
    last: i64,
    /// With the previous secret of a rotation, if at all.
    previous: Option<i64>,
}

#[derive(Debug, Default)]
pub struct UsageBatch {
    pending: HashMap<i64, Uses>,
    in_flight: Option<Vec<UsageItem>>,
    last_flush_ms: u64,
}

/// How a usage post ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostResult {
    Sent,
    /// No answer, or one that may succeed later (5xx, 401): retried as is.
    Failed,
    /// The control plane refused the report's shape (400 or 422): retried
    /// in the shape every control plane reads.
    Refused,
}

impl PostResult {
    /// Reads the status of the answer (`None`: no answer).
    pub fn of(status: Option<u32>) -> Self {
        match status {
            Some(200..=299) => PostResult::Sent,
            Some(400 | 422) => PostResult::Refused,
            _ => PostResult::Failed,
        }
    }
}

impl UsageBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `key_id` was used at `now_unix`; `previous_secret`: with
    /// the secret a rotation replaced.
    pub fn record(&mut self, key_id: i64, now_unix: i64, previous_secret: bool) {
        self.merge(key_id, now_unix, previous_secret.then_some(now_unix));
    }

    fn merge(&mut self, key_id: i64, last: i64, previous: Option<i64>) {
        if let Some(u) = self.pending.get_mut(&key_id) {
            u.last = u.last.max(last);
            u.previous = u.previous.max(previous);
        } else if self.pending.len() < MAX_PENDING_KEYS {
            self.pending.insert(key_id, Uses { last, previous });
        }
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The report to post now, if one is due. Marks it in flight.
    pub fn next_request(&mut self, cfg: &Config, now_ms: u64) -> Option<HttpRequest> {
        if self.in_flight.is_some() || self.pending.is_empty() {
            return None;
        }
        if now_ms.saturating_sub(self.last_flush_ms) < cfg.usage_flush_seconds.saturating_mul(1000)
        {
            return None;
        }
        let mut items: Vec<UsageItem> = self
            .pending
            .drain()
            .map(|(key_id, uses)| UsageItem {
                key_id,
                last_used_at: uses.last,
                previous_secret_used_at: uses.previous,
            })
            .collect();
        items.sort_by_key(|i| i.key_id);
        let report = UsageReport { items };
        let body = serde_json::to_vec(&report).ok()?;
        self.in_flight = Some(report.items);
        self.last_flush_ms = now_ms;
        Some(HttpRequest::to_control_plane(
            cfg,
            "POST",
            USAGE_PATH.to_owned(),
            ("content-type", "application/json"),
            Some(body),
            USAGE_TIMEOUT_MS,
        ))
    }

    /// The post in flight finished; on failure its items go back into the
    /// batch for the next flush (without the fields an older control plane
    /// refuses, when it refused them).
    pub fn on_result(&mut self, result: PostResult) {
        let Some(items) = self.in_flight.take() else {
            return;
        };
        match result {
            PostResult::Sent => {}
            PostResult::Failed => {
                for i in items {
                    self.merge(i.key_id, i.last_used_at, i.previous_secret_used_at);
                }
            }
            PostResult::Refused => {
                for i in items {
                    self.merge(i.key_id, i.last_used_at, None);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_json(
            br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","usageFlushSeconds":5}"#,
        )
        .unwrap()
    }

    fn items(req: &HttpRequest) -> Vec<(i64, i64)> {
        let r: UsageReport = serde_json::from_slice(req.body.as_ref().unwrap()).unwrap();
        r.items.iter().map(|i| (i.key_id, i.last_used_at)).collect()
    }

    #[test]
    fn batches_keep_latest_time_and_flush_at_most_every_interval() {
        let c = cfg();
        let mut u = UsageBatch::new();
        assert!(u.next_request(&c, 10_000).is_none(), "nothing to send");
        for t in [100, 105, 103] {
            u.record(1, t, false);
        }
        u.record(2, 50, false);
        let req = u.next_request(&c, 10_000).unwrap();
        assert_eq!(
            req.headers[1],
            (":path".into(), "/internal/v1/usage".into())
        );
        assert_eq!(items(&req), vec![(1, 105), (2, 50)]);
        u.on_result(PostResult::Sent);
        u.record(3, 200, false);
        assert!(u.next_request(&c, 14_999).is_none(), "too soon");
        let req = u.next_request(&c, 15_000).unwrap();
        assert_eq!(items(&req), vec![(3, 200)]);
    }

    #[test]
    fn failed_flush_is_retried_with_the_later_times() {
        let c = cfg();
        let mut u = UsageBatch::new();
        u.record(1, 100, false);
        u.next_request(&c, 5_000).unwrap();
        u.record(1, 90, false);
        // Nothing else goes out while a post is in flight.
        assert!(u.next_request(&c, 50_000).is_none());
        u.on_result(PostResult::Failed);
        let req = u.next_request(&c, 50_000).unwrap();
        assert_eq!(items(&req), vec![(1, 100)]);
    }

    #[test]
    fn huge_flush_interval_does_not_overflow() {
        let c = Config::from_json(
            br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","usageFlushSeconds":18446744073709551615}"#,
        )
        .unwrap();
        let mut u = UsageBatch::new();
        u.record(1, 1, false);
        assert!(u.next_request(&c, 10_000).is_none());
    }

    fn body(req: &HttpRequest) -> serde_json::Value {
        serde_json::from_slice(req.body.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn previous_secret_use_is_reported_only_when_seen() {
        let c = cfg();
        let mut u = UsageBatch::new();
        u.record(1, 100, false);
        u.record(2, 100, true);
        u.record(2, 105, false);
        u.record(3, 90, true);
        u.record(3, 80, true);
        let req = u.next_request(&c, 10_000).unwrap();
        assert_eq!(
            body(&req),
            serde_json::json!({"items": [
                // Keys used only with their current secret: the older shape.
                {"keyId": 1, "lastUsedAt": 100},
                {"keyId": 2, "lastUsedAt": 105, "previousSecretUsedAt": 100},
                {"keyId": 3, "lastUsedAt": 90, "previousSecretUsedAt": 90},
            ]})
        );
        // Lost posts keep the previous-secret use.
        u.on_result(PostResult::of(Some(503)));
        let again = u.next_request(&c, 20_000).unwrap();
        assert_eq!(body(&again), body(&req));
    }

    #[test]
    fn a_refused_shape_is_sent_again_in_the_older_one() {
        let c = cfg();
        let mut u = UsageBatch::new();
        u.record(2, 100, true);
        u.next_request(&c, 10_000).unwrap();
        // A control plane that refuses unknown fields answers 400 (or 422).
        assert_eq!(PostResult::of(Some(400)), PostResult::Refused);
        assert_eq!(PostResult::of(Some(422)), PostResult::Refused);
        u.on_result(PostResult::Refused);
        let again = u.next_request(&c, 20_000).unwrap();
        assert_eq!(
            body(&again),
            serde_json::json!({"items": [{"keyId": 2, "lastUsedAt": 100}]})
        );
        assert_eq!(PostResult::of(None), PostResult::Failed);
        assert_eq!(PostResult::of(Some(401)), PostResult::Failed);
        assert_eq!(PostResult::of(Some(204)), PostResult::Sent);
    }

    #[test]
    fn memory_is_bounded() {
        let mut u = UsageBatch::new();
        for k in 0..(MAX_PENDING_KEYS as i64 + 10) {
            u.record(k, 1, false);
        }
        assert_eq!(u.pending_len(), MAX_PENDING_KEYS);
    }
}
