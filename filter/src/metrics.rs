//! Metric names, in one place so the adapter and the docs agree.
//!
//! Envoy puts Proxy-Wasm metrics in its `wasmcustom` stats namespace and
//! exports them at `/stats/prometheus` without the `envoy_` prefix and with
//! dots turned into underscores, so `keygate_decisions_deny_unknown_key`
//! shows up exactly as named here (`wasmcustom.keygate_…` at `/stats`).

use crate::decision::Reason;
use std::cell::Cell;

/// Counter of decisions with this reason (the outcome is part of the name).
pub fn decision_counter(reason: Reason) -> String {
    format!(
        "keygate_decisions_{}_{}",
        reason.outcome().as_str(),
        reason.as_str()
    )
}

/// Gauge: the control-plane table version the shared table is at.
pub const TABLE_VERSION: &str = "keygate_table_version";
/// Gauge: live keys in the shared table.
pub const TABLE_KEYS: &str = "keygate_table_keys";
/// Gauge: seconds since the last successful answer from the control plane.
pub const TABLE_AGE_SECONDS: &str = "keygate_table_age_seconds";
/// Counter: failed key-table polls (transport, timeout, status, body).
pub const FEED_FAILURES: &str = "keygate_feed_failures_total";
/// Counter: key-table answers applied.
pub const FEED_UPDATES: &str = "keygate_feed_updates_total";
/// Counter: usage reports that failed to post (they are retried).
pub const USAGE_FLUSH_FAILURES: &str = "keygate_usage_flush_failures_total";

/// Decisions counted in the VM's own memory and handed to Envoy's counters
/// on the tick (and when the VM stops): one host call per request saved, at
/// the price of counters that lag by at most one tick.
#[derive(Debug, Default)]
pub struct DecisionCounts {
    counts: [Cell<u64>; Reason::ALL.len()],
}

impl DecisionCounts {
    pub fn record(&self, reason: Reason) {
        if let Some(c) = self.counts.get(reason.index()) {
            c.set(c.get().saturating_add(1));
        }
    }

    /// The counts since the last drain, reasons with none left out.
    pub fn drain(&self) -> Vec<(Reason, u64)> {
        Reason::ALL
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (*r, c.take()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_counts_drain_what_was_recorded_once() {
        let counts = DecisionCounts::default();
        assert!(counts.drain().is_empty());
        counts.record(Reason::Allowed);
        counts.record(Reason::Allowed);
        counts.record(Reason::StaleTable);
        assert_eq!(
            counts.drain(),
            vec![(Reason::Allowed, 2), (Reason::StaleTable, 1)]
        );
        assert!(counts.drain().is_empty());
        counts.record(Reason::BadSecret);
        assert_eq!(counts.drain(), vec![(Reason::BadSecret, 1)]);
    }

    #[test]
    fn names_are_unique_and_prometheus_safe() {
        let mut names: Vec<String> = Reason::ALL.iter().map(|r| decision_counter(*r)).collect();
        names.extend(
            [
                TABLE_VERSION,
                TABLE_KEYS,
                TABLE_AGE_SECONDS,
                FEED_FAILURES,
                FEED_UPDATES,
                USAGE_FLUSH_FAILURES,
            ]
            .map(String::from),
        );
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for n in &names {
            assert!(n.starts_with("keygate_"), "{n}");
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
        assert_eq!(
            decision_counter(Reason::UnknownKey),
            "keygate_decisions_deny_unknown_key"
        );
    }
}
