//! Target `usage_report`: last-use reports, both ways.
//!
//! - The control plane's parser (`POST /internal/v1/usage` decodes a
//!   [`UsageReport`]) on any bytes: no panic, and what parses serializes
//!   back to a report that parses the same.
//! - The filter's batch: the bytes as `(keyId, unix seconds)` records of
//!   16 bytes each (an odd time is a use with a rotated key's previous
//!   secret), recorded, flushed as the filter posts them, and parsed by the
//!   control plane's type: every key recorded is reported once, with its
//!   latest use, and with its latest previous-secret use exactly when it had
//!   one (so a key never used with an old secret is sent in the shape an
//!   older control plane reads).

use keygate_filter::config::Config;
use keygate_filter::usage::UsageBatch;
use keygate_protocol::UsageReport;
use std::collections::BTreeMap;

fn config() -> Config {
    match Config::from_json(
        br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","usageFlushSeconds":1}"#,
    ) {
        Ok(c) => c,
        Err(e) => panic!("the target's own configuration: {e}"),
    }
}

fn as_i64(bytes: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    for (b, v) in buf.iter_mut().zip(bytes) {
        *b = *v;
    }
    i64::from_le_bytes(buf)
}

fn check_parser(data: &[u8]) {
    if let Ok(report) = serde_json::from_slice::<UsageReport>(data) {
        let text = match serde_json::to_vec(&report) {
            Ok(t) => t,
            Err(e) => panic!("a parsed report does not serialize: {e}"),
        };
        let again = serde_json::from_slice::<UsageReport>(&text).ok();
        assert_eq!(
            again.as_ref(),
            Some(&report),
            "a report changes on a round trip"
        );
    }
}

fn check_batch(data: &[u8]) {
    let cfg = config();
    let mut batch = UsageBatch::new();
    let mut want: BTreeMap<i64, (i64, Option<i64>)> = BTreeMap::new();
    for record in data.chunks_exact(16) {
        let key_id = as_i64(record.get(..8).unwrap_or_default());
        let used_at = as_i64(record.get(8..).unwrap_or_default());
        let previous = used_at & 1 == 1;
        batch.record(key_id, used_at, previous);
        let latest = want.entry(key_id).or_insert((used_at, None));
        latest.0 = latest.0.max(used_at);
        if previous {
            latest.1 = latest.1.max(Some(used_at));
        }
    }
    let Some(request) = batch.next_request(&cfg, 10_000) else {
        assert!(want.is_empty(), "recorded uses and nothing to post");
        return;
    };
    let body = request.body.unwrap_or_default();
    let report = match serde_json::from_slice::<UsageReport>(&body) {
        Ok(r) => r,
        Err(e) => panic!("the control plane cannot read the filter's report: {e}"),
    };
    let got: BTreeMap<i64, (i64, Option<i64>)> = report
        .items
        .iter()
        .map(|i| (i.key_id, (i.last_used_at, i.previous_secret_used_at)))
        .collect();
    assert_eq!(got.len(), report.items.len(), "a key reported twice");
    assert_eq!(got, want, "the report is not the latest use of each key");
}

pub fn check(data: &[u8]) {
    check_parser(data);
    check_batch(data);
}
