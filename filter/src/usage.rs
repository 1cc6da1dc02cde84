//! Last-use batching: each worker remembers `{keyId → latest unix s}` in
//! memory and posts it to `/internal/v1/usage` at most every
//! `usageFlushSeconds`. Never a callout per request.

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

#[derive(Debug, Default)]
pub struct UsageBatch {
    pending: HashMap<i64, i64>,
    in_flight: Option<Vec<UsageItem>>,
    last_flush_ms: u64,
}

impl UsageBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `key_id` was used at `now_unix`.
    pub fn record(&mut self, key_id: i64, now_unix: i64) {
        if let Some(t) = self.pending.get_mut(&key_id) {
            *t = (*t).max(now_unix);
        } else if self.pending.len() < MAX_PENDING_KEYS {
            self.pending.insert(key_id, now_unix);
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
            .map(|(key_id, last_used_at)| UsageItem {
                key_id,
                last_used_at,
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
    /// batch for the next flush.
    pub fn on_result(&mut self, ok: bool) {
        if let Some(items) = self.in_flight.take()
            && !ok
        {
            for i in items {
                self.record(i.key_id, i.last_used_at);
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
            u.record(1, t);
        }
        u.record(2, 50);
        let req = u.next_request(&c, 10_000).unwrap();
        assert_eq!(
            req.headers[1],
            (":path".into(), "/internal/v1/usage".into())
        );
        assert_eq!(items(&req), vec![(1, 105), (2, 50)]);
        u.on_result(true);
        u.record(3, 200);
        assert!(u.next_request(&c, 14_999).is_none(), "too soon");
        let req = u.next_request(&c, 15_000).unwrap();
        assert_eq!(items(&req), vec![(3, 200)]);
    }

    #[test]
    fn failed_flush_is_retried_with_the_later_times() {
        let c = cfg();
        let mut u = UsageBatch::new();
        u.record(1, 100);
        u.next_request(&c, 5_000).unwrap();
        u.record(1, 90);
        // Nothing else goes out while a post is in flight.
        assert!(u.next_request(&c, 50_000).is_none());
        u.on_result(false);
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
        u.record(1, 1);
        assert!(u.next_request(&c, 10_000).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let mut u = UsageBatch::new();
        for k in 0..(MAX_PENDING_KEYS as i64 + 10) {
            u.record(k, 1);
        }
        assert_eq!(u.pending_len(), MAX_PENDING_KEYS);
    }
}
