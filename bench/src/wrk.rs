//! Runs `wrk` (closed loop, keep-alive, one thread) and reads its report:
//! the saturation throughput run of each configuration.

use anyhow::{Context, Result};
use std::path::Path;

/// Where to get wrk when it is missing.
pub const INSTALL_HINT: &str = "wrk is not installed: install it with `apt-get install -y wrk` \
     (Debian/Ubuntu package `wrk`), or put a wrk binary on PATH";

/// Finds `wrk` on `PATH`.
pub fn find() -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("wrk");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("{INSTALL_HINT}")
}

#[derive(Debug, Clone)]
pub struct WrkReport {
    pub requests: u64,
    pub rps: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

/// Runs `wrk -t1 -c<conns> -d<secs>s` with the given headers.
pub async fn run(
    wrk: &Path,
    url: &str,
    headers: &[(String, String)],
    conns: u32,
    secs: u32,
) -> Result<WrkReport> {
    let mut cmd = tokio::process::Command::new(wrk);
    cmd.arg("-t1")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"));
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(url).kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {}", wrk.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        anyhow::bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse(text: &str) -> Option<WrkReport> {
    let mut requests = None;
    let mut rps = None;
    let mut non_2xx = 0;
    let mut socket_errors = 0;
    for line in text.lines() {
        let t = line.trim();
        if let Some((n, rest)) = t.split_once(" requests in ") {
            // e.g. "125000 requests in 5.00s, 12.00MB read": check the duration parses too.
            rest.split(',').next().and_then(duration_us)?;
            requests = n.trim().parse().ok();
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().ok()?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    Some(WrkReport {
        requests: requests?,
        rps: rps?,
        non_2xx,
        socket_errors,
    })
}

/// Parses wrk's durations (`812.00us`, `1.23ms`, `2.00s`, `1.00m`) into µs.
fn duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    Some(num.trim().parse::<f64>().ok()? * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 5s test @ http://127.0.0.1:1/x
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   310.11us  120.50us   5.20ms   90.00%
    Req/Sec    25.12k     1.10k   27.00k    70.00%
  Latency Distribution
     50%  290.00us
     75%  330.00us
     90%  400.00us
     99%    1.10ms
  125000 requests in 5.00s, 12.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  24999.50
Transfer/sec:      2.40MB
";

    #[test]
    fn parses_report() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.requests, 125_000);
        assert!((r.rps - 24999.5).abs() < 1e-9);
        assert_eq!(r.non_2xx, 7);
        assert_eq!(r.socket_errors, 3);
    }

    #[test]
    fn rejects_truncated_report() {
        assert!(parse("Running 5s test\n").is_none());
    }
}
