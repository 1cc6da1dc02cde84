//! How fast a revocation lands at the edge: the time from the control
//! plane's `DELETE` returning to the first refusal of the key at Envoy,
//! probed back to back on a keep-alive connection (each probe takes well
//! under a millisecond, so the probing adds at most that to a sample).
//!
//! Changes are timed two ways. *Spaced*: a random pause of 0–1 s before each
//! change, so changes land at random moments relative to the filter's poll
//! cycle, as independent revocations do. *Back to back*: each change right
//! after the previous one reached the edge, the worst case for a poller that
//! waits for its next tick before polling again after an answer.

use super::{probe_until, scenario_path};
use crate::controlplane::ControlPlane;
use crate::envoy::Envoy;
use crate::http::Client;
use crate::openloop::percentile;
use anyhow::Result;
use hyper::StatusCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LatencyStats {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencyStats {
    pub fn of(mut samples_ms: Vec<f64>) -> LatencyStats {
        samples_ms.sort_by(f64::total_cmp);
        LatencyStats {
            samples: samples_ms.len(),
            p50_ms: percentile(&samples_ms, 0.5),
            p99_ms: percentile(&samples_ms, 0.99),
            max_ms: samples_ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

const LIMIT: Duration = Duration::from_secs(30);

/// How changes follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// A random pause of 0–1 s before each change.
    Random,
    /// Each change as soon as the previous one was seen at the edge.
    BackToBack,
}

pub async fn pause(spacing: Spacing) {
    if spacing == Spacing::Random {
        let ms = getrandom::u64().unwrap_or(0) % 1000;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Creates `n` keys, waits until the edge accepts each, then deletes them
/// one at a time and times each until the edge answers 401.
pub async fn key_deletes(
    cp: &ControlPlane,
    envoy: &Envoy,
    client: &Client,
    user_id: i64,
    n: usize,
    spacing: Spacing,
) -> Result<LatencyStats> {
    let url = envoy.url(scenario_path());
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        let created = cp.api.create_key_for(user_id, &["alpha"], None).await?;
        keys.push((created.id, created.key));
    }
    for (_, key) in &keys {
        probe_until(client, &url, key, Instant::now(), LIMIT, |s| s.is_success()).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for (id, key) in &keys {
        pause(spacing).await;
        cp.api.delete_key(*id).await?;
        let since = Instant::now();
        let d = probe_until(client, &url, key, since, LIMIT, |s| {
            s == StatusCode::UNAUTHORIZED
        })
        .await?;
        samples.push(d.as_secs_f64() * 1e3);
    }
    Ok(LatencyStats::of(samples))
}

/// With one key of a user whose only access is one rule: deletes the rule
/// and times until the edge refuses the key (401 or 403), then grants it
/// again and waits for the key to work before the next sample. Returns the
/// revoke and the grant latencies.
pub async fn rule_changes(
    cp: &ControlPlane,
    envoy: &Envoy,
    client: &Client,
    n: usize,
) -> Result<(LatencyStats, LatencyStats)> {
    let url = envoy.url(scenario_path());
    let user = cp.api.create_user("rule-change-bench").await?;
    let mut rule = cp.api.grant_user(user, &["alpha"]).await?;
    let key = cp.api.create_key_for(user, &["alpha"], None).await?.key;
    probe_until(client, &url, &key, Instant::now(), LIMIT, |s| {
        s.is_success()
    })
    .await?;
    let mut revoke = Vec::with_capacity(n);
    let mut grant = Vec::with_capacity(n);
    for _ in 0..n {
        pause(Spacing::Random).await;
        cp.api.delete_rule(rule).await?;
        let since = Instant::now();
        let d = probe_until(client, &url, &key, since, LIMIT, |s| {
            s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN
        })
        .await?;
        revoke.push(d.as_secs_f64() * 1e3);
        pause(Spacing::Random).await;
        rule = cp.api.grant_user(user, &["alpha"]).await?;
        let since = Instant::now();
        let d = probe_until(client, &url, &key, since, LIMIT, |s| s.is_success()).await?;
        grant.push(d.as_secs_f64() * 1e3);
    }
    Ok((LatencyStats::of(revoke), LatencyStats::of(grant)))
}
