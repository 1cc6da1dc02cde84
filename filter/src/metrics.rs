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

/// Whether Envoy adds to a metric or sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// Every metric the filter reports, so the adapter can define them all up
/// front and the logic can name one without knowing the host's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Decisions(Reason),
    TableVersion,
    TableKeys,
    TableAgeSeconds,
    FeedFailures,
    FeedUpdates,
    UsageFlushFailures,
}

impl Metric {
    /// The metrics that are not decision counters, in [`Metric::index`] order.
    const OTHERS: [Metric; 6] = [
        Metric::TableVersion,
        Metric::TableKeys,
        Metric::TableAgeSeconds,
        Metric::FeedFailures,
        Metric::FeedUpdates,
        Metric::UsageFlushFailures,
    ];

    /// How many metrics there are: one past the largest [`Metric::index`].
    pub const COUNT: usize = Reason::ALL.len() + Self::OTHERS.len();

    /// Every metric, in [`Metric::index`] order.
    pub fn all() -> impl Iterator<Item = Metric> {
        Reason::ALL
            .into_iter()
            .map(Metric::Decisions)
            .chain(Self::OTHERS)
    }

    /// A dense position (`0..COUNT`), for the adapter's table of host ids.
    pub fn index(self) -> usize {
        let others = Reason::ALL.len();
        match self {
            Metric::Decisions(r) => r.index(),
            Metric::TableVersion => others,
            Metric::TableKeys => others + 1,
            Metric::TableAgeSeconds => others + 2,
            Metric::FeedFailures => others + 3,
            Metric::FeedUpdates => others + 4,
            Metric::UsageFlushFailures => others + 5,
        }
    }

    pub fn name(self) -> String {
        match self {
            Metric::Decisions(r) => decision_counter(r),
            Metric::TableVersion => TABLE_VERSION.to_owned(),
            Metric::TableKeys => TABLE_KEYS.to_owned(),
            Metric::TableAgeSeconds => TABLE_AGE_SECONDS.to_owned(),
            Metric::FeedFailures => FEED_FAILURES.to_owned(),
            Metric::FeedUpdates => FEED_UPDATES.to_owned(),
            Metric::UsageFlushFailures => USAGE_FLUSH_FAILURES.to_owned(),
        }
    }

    pub fn kind(self) -> MetricKind {
        match self {
            Metric::TableVersion | Metric::TableKeys | Metric::TableAgeSeconds => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }
}

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
    fn metric_indexes_are_dense_and_in_order() {
        let all: Vec<Metric> = Metric::all().collect();
        assert_eq!(all.len(), Metric::COUNT);
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.index(), i, "{m:?}");
        }
        assert_eq!(Metric::TableKeys.kind(), MetricKind::Gauge);
        assert_eq!(Metric::FeedFailures.kind(), MetricKind::Counter);
        assert_eq!(
            Metric::Decisions(Reason::Allowed).kind(),
            MetricKind::Counter
        );
    }

    #[test]
    fn names_are_unique_and_prometheus_safe() {
        let names: Vec<String> = Metric::all().map(Metric::name).collect();
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
