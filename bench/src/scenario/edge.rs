//! The edge comparison: each configuration in its own Envoy (one worker),
//! all started up front and measured in interleaved rounds (1 2 3 4 5 1 2 3
//! 4 5 …) so drift in the machine's load spreads over all of them.
//!
//! Per round and configuration: a `wrk` saturation run (throughput, and
//! Envoy CPU per request = Envoy's utime+stime delta / requests answered),
//! then a fixed-rate open-loop run (p50/p99, and CPU per request at that rate).

use crate::envoy::{AuthFilter, Envoy};
use crate::http::{self, Client};
use crate::settings::{Config, Plan};
use crate::{openloop, procstat, wrk};
use anyhow::Result;
use std::path::Path;
use std::time::Duration;

/// The request every configuration answers: an MCP path with a valid key.
pub const MCP_PATH: &str = "/mcp-connect/alpha/mcp";

/// A well-formed key no table holds.
pub const UNKNOWN_KEY: &str = "ok1-1-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

pub struct EdgeTarget {
    pub config: Config,
    pub envoy: Envoy,
}

#[derive(Debug, Clone)]
pub struct EdgeResult {
    pub config: Config,
    pub cpu_us: Vec<f64>,
    pub rps: Vec<f64>,
    pub p50_us: Vec<f64>,
    pub p99_us: Vec<f64>,
    pub cpu_us_at_rate: Vec<f64>,
    pub rss_bytes: u64,
}

/// Starts one Envoy per configuration and waits until each answers the
/// valid key with 200 (for keygate: until its table has synced) and refuses
/// an unknown key where it authenticates at all.
pub async fn start_targets(
    envoy_bin: &Path,
    dir: &Path,
    filters: Vec<(Config, AuthFilter)>,
    client: &Client,
    key: &str,
) -> Result<Vec<EdgeTarget>> {
    let mut targets = Vec::new();
    for (config, filter) in filters {
        let envoy = Envoy::start(envoy_bin, dir, config.slug(), &filter)?;
        targets.push(EdgeTarget { config, envoy });
    }
    for t in &mut targets {
        t.envoy.wait_ready(client, Duration::from_secs(300)).await?;
        let url = t.envoy.url(MCP_PATH);
        let since = std::time::Instant::now();
        super::probe_until(client, &url, key, since, Duration::from_secs(120), |s| {
            s.is_success()
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: the valid key is never accepted: {e:#}",
                t.config.label()
            )
        })?;
        let unknown = super::probe(client, &url, UNKNOWN_KEY).await?;
        let authenticates = !matches!(
            t.config,
            Config::Floor | Config::NoopWasm | Config::ExtAuthzInstant
        );
        if authenticates && unknown.is_success() {
            anyhow::bail!(
                "{}: an unknown key was let through ({unknown}): the configuration is not checking keys",
                t.config.label()
            );
        }
    }
    Ok(targets)
}

pub async fn run(
    plan: &Plan,
    wrk_bin: &Path,
    client: &Client,
    targets: &[EdgeTarget],
    key: &str,
) -> Result<Vec<EdgeResult>> {
    let mut results: Vec<EdgeResult> = targets
        .iter()
        .map(|t| EdgeResult {
            config: t.config,
            cpu_us: vec![],
            rps: vec![],
            p50_us: vec![],
            p99_us: vec![],
            cpu_us_at_rate: vec![],
            rss_bytes: 0,
        })
        .collect();
    let headers = vec![http::bearer(key)];
    for round in 1..=plan.repeats {
        for (t, r) in targets.iter().zip(results.iter_mut()) {
            let pid = t.envoy.pid();
            let url = t.envoy.url(MCP_PATH);
            let c0 = procstat::cpu_seconds(pid)?;
            let w = wrk::run(
                wrk_bin,
                &url,
                &headers,
                plan.wrk_connections,
                plan.wrk_seconds,
            )
            .await?;
            let c1 = procstat::cpu_seconds(pid)?;
            if w.non_2xx > 0 || w.requests == 0 {
                anyhow::bail!(
                    "{}: wrk saw {} non-2xx answers of {} requests",
                    t.config.label(),
                    w.non_2xx,
                    w.requests
                );
            }
            if w.socket_errors > 0 {
                println!(
                    "  note: wrk reported {} socket errors for {} (connections closed at the end of the run)",
                    w.socket_errors,
                    t.config.label()
                );
            }
            let cpu_us = (c1 - c0) * 1e6 / w.requests as f64;
            // Let the Envoy settle before the latency run.
            tokio::time::sleep(Duration::from_millis(300)).await;
            openloop::run(client, &url, &headers, plan.rate_rps, 1.0).await?;
            let c2 = procstat::cpu_seconds(pid)?;
            let o = openloop::run(client, &url, &headers, plan.rate_rps, plan.rate_seconds).await?;
            let c3 = procstat::cpu_seconds(pid)?;
            if o.failed > 0 {
                anyhow::bail!(
                    "{}: {} of {} fixed-rate requests failed",
                    t.config.label(),
                    o.failed,
                    o.sent
                );
            }
            let cpu_us_rate = (c3 - c2) * 1e6 / o.sent as f64;
            println!(
                "  round {round} {:<34} {:>7.1} µs CPU/req  {:>8.0} req/s  | @{} req/s: p50 {:>6.0} µs  p99 {:>6.0} µs  max {:>6.0} µs  {:>6.1} µs CPU/req (pacer lag max {:.0} µs)",
                t.config.label(),
                cpu_us,
                w.rps,
                plan.rate_rps,
                o.p50_us,
                o.p99_us,
                o.max_us,
                cpu_us_rate,
                o.max_lag_us
            );
            r.cpu_us.push(cpu_us);
            r.rps.push(w.rps);
            r.p50_us.push(o.p50_us);
            r.p99_us.push(o.p99_us);
            r.cpu_us_at_rate.push(cpu_us_rate);
        }
    }
    for (t, r) in targets.iter().zip(results.iter_mut()) {
        r.rss_bytes = procstat::rss_bytes(t.envoy.pid())?;
    }
    Ok(results)
}

/// One line of the breakdown of keygate's cost.
#[derive(Debug, Clone)]
pub struct BreakdownRow {
    pub what: String,
    pub cpu_us: f64,
}

/// Splits keygate's cost per request by measuring the no-op and keygate
/// Envoys on two requests each: a non-MCP path without a key (the filter
/// only looks at the request and lets it pass) and the MCP path with a valid
/// key (the whole check). Rounds are interleaved like the main comparison.
pub async fn breakdown(
    plan: &Plan,
    wrk_bin: &Path,
    targets: &[EdgeTarget],
    key: &str,
) -> Result<Vec<BreakdownRow>> {
    let pick = |c: Config| targets.iter().find(|t| t.config == c);
    let (Some(noop), Some(keygate)) = (pick(Config::NoopWasm), pick(Config::Keygate)) else {
        return Ok(vec![]);
    };
    /// What is measured, on which Envoy, at which path, with which headers.
    type Case<'a> = (String, &'a EdgeTarget, &'static str, Vec<(String, String)>);
    let cases: Vec<Case> = vec![
        (
            "(2) no-op: `GET /healthz`, no key".to_owned(),
            noop,
            "/healthz",
            vec![],
        ),
        (
            "(4) keygate: `GET /healthz`, no key (passes untouched)".to_owned(),
            keygate,
            "/healthz",
            vec![],
        ),
        (
            "(2) no-op: MCP path, valid key".to_owned(),
            noop,
            MCP_PATH,
            vec![http::bearer(key)],
        ),
        (
            "(4) keygate: MCP path, valid key (full check)".to_owned(),
            keygate,
            MCP_PATH,
            vec![http::bearer(key)],
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![vec![]; cases.len()];
    for _ in 0..plan.repeats.max(2) {
        for (i, (what, t, path, headers)) in cases.iter().enumerate() {
            let pid = t.envoy.pid();
            let c0 = procstat::cpu_seconds(pid)?;
            let w = wrk::run(
                wrk_bin,
                &t.envoy.url(path),
                headers,
                plan.wrk_connections,
                plan.wrk_seconds.min(5),
            )
            .await?;
            let c1 = procstat::cpu_seconds(pid)?;
            if w.non_2xx > 0 || w.requests == 0 {
                anyhow::bail!(
                    "breakdown `{what}`: wrk saw {} non-2xx answers of {} requests",
                    w.non_2xx,
                    w.requests
                );
            }
            samples[i].push((c1 - c0) * 1e6 / w.requests as f64);
        }
    }
    Ok(cases
        .into_iter()
        .zip(samples)
        .map(|((what, ..), s)| BreakdownRow {
            what,
            cpu_us: super::median(&s),
        })
        .collect())
}
