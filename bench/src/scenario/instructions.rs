//! Instructions per request, counted rather than timed: each Envoy runs
//! under valgrind's callgrind, which counts the user-space instructions the
//! whole process executes. The count does not depend on what else the
//! machine is doing, so it settles differences that CPU time on a shared
//! machine cannot (the same no-op filter measured 24 to 54 µs/request in
//! one session there).
//!
//! Per configuration and request: warm up, zero the counters
//! (`callgrind_control -z`), send the requests one after another on one
//! keep-alive connection, dump (`callgrind_control -d`), then count an idle
//! window of the same length the same way and subtract it (Envoy's timers,
//! keygate's tick and parked poll). `--smc-check=all-non-file` because V8
//! writes the code it runs.

use crate::envoy::{AuthFilter, Envoy};
use crate::http::{self, Client};
use crate::settings::Config;
use anyhow::{Context, Result};
use hyper::Method;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Requests before the counters are zeroed (10,000 gave the same count).
const WARM_UP: usize = 400;
/// Requests counted.
const COUNTED: usize = 2_000;

/// A request counted on every Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// `GET /mcp-connect/alpha/mcp` with a valid key.
    McpWithKey,
    /// `GET /healthz` without a key: keygate looks at it and lets it pass.
    Healthz,
}

impl Case {
    pub const ALL: [Case; 2] = [Case::McpWithKey, Case::Healthz];

    pub fn label(self) -> &'static str {
        match self {
            Case::McpWithKey => "MCP path, valid key",
            Case::Healthz => "`GET /healthz`, no key",
        }
    }
}

#[derive(Debug, Clone)]
pub struct InstructionRow {
    pub config: Config,
    pub case: Case,
    /// User-space instructions of the whole Envoy process per request.
    pub per_request: f64,
}

/// True when valgrind and `callgrind_control` can be run.
pub fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Counts every case on one Envoy per configuration, one Envoy at a time.
pub async fn run(
    envoy_bin: &Path,
    dir: &Path,
    filters: Vec<(Config, AuthFilter)>,
    client: &Client,
    key: &str,
) -> Result<Vec<InstructionRow>> {
    // valgrind counts the program it starts: a wrapper script that execs
    // Envoy would be counted instead of Envoy.
    let mut head = [0u8; 4];
    std::fs::File::open(envoy_bin)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .with_context(|| format!("reading {}", envoy_bin.display()))?;
    anyhow::ensure!(
        &head == b"\x7fELF",
        "{} is not an executable binary (a wrapper script?): counting needs Envoy itself",
        envoy_bin.display()
    );
    let mut rows = Vec::new();
    for (config, filter) in filters {
        let out_dir = dir.join(format!("callgrind-{}", config.slug()));
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let launcher = vec![
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            "--smc-check=all-non-file".to_owned(),
            format!("--callgrind-out-file={}/out", out_dir.display()),
        ];
        let name = format!("{}-callgrind", config.slug());
        let mut envoy = Envoy::start_under(&launcher, envoy_bin, dir, &name, &filter)?;
        let counted = async {
            envoy.wait_ready(client, Duration::from_secs(600)).await?;
            // keygate answers once its table has synced; under callgrind its
            // one worker spends minutes writing a large table, and requests
            // wait behind it meanwhile.
            wait_until_accepted(client, &envoy.url(super::edge::MCP_PATH), key).await?;
            let mut dumps = Dumps::new(envoy.pid(), out_dir.clone());
            let mut counts = Vec::new();
            for case in Case::ALL {
                let (path, headers) = match case {
                    Case::McpWithKey => (super::edge::MCP_PATH, vec![http::bearer(key)]),
                    Case::Healthz => ("/healthz", vec![]),
                };
                let url = envoy.url(path);
                send(client, &url, &headers, WARM_UP).await?;
                dumps.zero()?;
                let started = Instant::now();
                send(client, &url, &headers, COUNTED).await?;
                let busy = dumps.dump().await?;
                let window = started.elapsed();
                dumps.zero()?;
                tokio::time::sleep(window).await;
                let idle = dumps.dump().await?;
                let per_request = (busy as f64 - idle as f64) / COUNTED as f64;
                println!(
                    "  {:<34} {:<24} {:>9.0} instructions/request ({busy} busy, {idle} idle over {:.1} s)",
                    config.label(),
                    case.label(),
                    per_request,
                    window.as_secs_f64()
                );
                counts.push(InstructionRow {
                    config,
                    case,
                    per_request,
                });
            }
            anyhow::Ok(counts)
        }
        .await;
        envoy.stop().await;
        rows.extend(counted.with_context(|| format!("{} under callgrind", config.label()))?);
    }
    Ok(rows)
}

/// Probes with `key` until the answer is 2xx, patient with slow answers.
async fn wait_until_accepted(client: &Client, url: &str, key: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1_200);
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match http::send(
            client,
            Method::GET,
            url,
            &[http::bearer(key)],
            None,
            Duration::from_secs(60),
        )
        .await
        {
            Ok(r) if r.status.is_success() => return Ok(()),
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("{url}: the valid key was not accepted within 20 minutes ({last})")
}

/// Sends `n` requests one after another (one pooled keep-alive connection);
/// every answer must be 2xx.
async fn send(client: &Client, url: &str, headers: &[(String, String)], n: usize) -> Result<()> {
    for _ in 0..n {
        let r = http::send(
            client,
            Method::GET,
            url,
            headers,
            None,
            Duration::from_secs(30),
        )
        .await?;
        anyhow::ensure!(r.status.is_success(), "{url} answered {}", r.status);
    }
    Ok(())
}

/// The callgrind dumps of one Envoy.
struct Dumps {
    pid: u32,
    dir: PathBuf,
    seen: usize,
}

impl Dumps {
    fn new(pid: u32, dir: PathBuf) -> Self {
        Self { pid, dir, seen: 0 }
    }

    fn control(&self, flag: &str) -> Result<()> {
        let out = Command::new("callgrind_control")
            .arg(flag)
            .arg(self.pid.to_string())
            .output()
            .context("running callgrind_control")?;
        anyhow::ensure!(
            out.status.success(),
            "callgrind_control {flag} {}: {}",
            self.pid,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn zero(&mut self) -> Result<()> {
        self.control("-z")
    }

    /// Dumps the counters since the last zero and returns their total.
    async fn dump(&mut self) -> Result<u64> {
        self.control("-d")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let files = dump_files(&self.dir)?;
            if files.len() > self.seen
                && let Some(newest) = files.last()
                && let Some(total) = totals(newest)
            {
                self.seen = files.len();
                return Ok(total);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no callgrind dump appeared in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The dump files in `dir`, oldest first (callgrind numbers them `out.N`).
fn dump_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let n = p.extension()?.to_str()?.parse().ok()?;
            Some((n, p))
        })
        .collect();
    numbered.sort();
    Ok(numbered.into_iter().map(|(_, p)| p).collect())
}

/// The `totals:` (or `summary:`) line of a complete dump.
fn totals(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_totals(&text)
}

fn parse_totals(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_totals;

    #[test]
    fn totals_of_a_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\npid: 7\nevents: Ir\nsummary: 1234\nfn=(1) main\n1 5\ntotals: 1234\n";
        assert_eq!(parse_totals(dump), Some(1234));
        assert_eq!(parse_totals("version: 1\nevents: Ir\n"), None);
    }
}
