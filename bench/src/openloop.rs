//! A fixed-rate, open-loop load generator for latency at a rate below
//! saturation.
//!
//! `wrk` is closed loop (a connection sends its next request only after the
//! previous answer), so its percentiles at saturation measure queueing, and
//! `wrk2` is not packaged by Debian. Here requests are started on a fixed
//! schedule whether or not earlier ones have finished, each on its own
//! pooled keep-alive connection, and the latency of each is timed from the
//! moment it is handed to its connection to the end of its response.

use crate::http::{self, Client};
use anyhow::Result;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RateReport {
    pub sent: usize,
    pub failed: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// How far the pacer fell behind its schedule at worst (client overload).
    pub max_lag_us: f64,
}

/// Sends `rps` requests per second for `seconds`. Run a short phase first
/// to open the connections: the first requests of a cold pool pay for
/// connection setup.
pub async fn run(
    client: &Client,
    url: &str,
    headers: &[(String, String)],
    rps: u32,
    seconds: f64,
) -> Result<RateReport> {
    if rps == 0 {
        anyhow::bail!("fixed rate must be above 0");
    }
    let total = (f64::from(rps) * seconds).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rps));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut max_lag = Duration::ZERO;
    for i in 0..total {
        let due = start + interval * i as u32;
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else {
            max_lag = max_lag.max(now - due);
        }
        let req = http::build(Method::GET, url, headers, None)?;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = match client.request(req).await {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    // Read the body so the timing covers the whole response.
                    let body: Option<Bytes> =
                        resp.into_body().collect().await.ok().map(|b| b.to_bytes());
                    ok && body.is_some()
                }
                Err(_) => false,
            };
            (sent.elapsed(), ok)
        }));
    }
    let mut lat_us = Vec::with_capacity(total);
    let mut failed = 0;
    for t in tasks {
        let (d, ok) = t.await?;
        if ok {
            lat_us.push(d.as_secs_f64() * 1e6);
        } else {
            failed += 1;
        }
    }
    lat_us.sort_by(f64::total_cmp);
    Ok(RateReport {
        sent: total,
        failed,
        p50_us: percentile(&lat_us, 0.50),
        p99_us: percentile(&lat_us, 0.99),
        max_us: lat_us.last().copied().unwrap_or(f64::NAN),
        max_lag_us: max_lag.as_secs_f64() * 1e6,
    })
}

/// Nearest-rank percentile of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
