//! The measured scenarios, one module each.

pub mod control_plane;
pub mod edge;
pub mod fleet;
pub mod instructions;
pub mod probe;
pub mod revocation;
pub mod tables;

use crate::http::{self, Client};
use anyhow::Result;
use hyper::{Method, StatusCode};
use std::time::{Duration, Instant};

/// The path probes and load use at the edge: an MCP server the bench's
/// keys are scoped to.
pub fn scenario_path() -> &'static str {
    edge::MCP_PATH
}

/// Median of the values (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One request at the edge with `key` as a bearer token; returns the status.
pub async fn probe(client: &Client, url: &str, key: &str) -> Result<StatusCode> {
    let r = http::send(
        client,
        Method::GET,
        url,
        &[http::bearer(key)],
        None,
        Duration::from_secs(5),
    )
    .await?;
    Ok(r.status)
}

/// Probes back to back until `done(status)`; returns the time from `since`
/// to the first answer that satisfied it.
pub async fn probe_until(
    client: &Client,
    url: &str,
    key: &str,
    since: Instant,
    timeout: Duration,
    done: impl Fn(StatusCode) -> bool,
) -> Result<Duration> {
    let mut last = None;
    while since.elapsed() < timeout {
        let status = probe(client, url, key).await?;
        if done(status) {
            return Ok(since.elapsed());
        }
        last = Some(status);
    }
    anyhow::bail!("{url}: condition not reached within {timeout:?} (last status {last:?})")
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }
}
