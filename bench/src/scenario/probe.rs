//! Prices the single steps keygate's filter takes per request, with the
//! `cost-probe` example filter (`bench/noop-filter/examples/cost_probe.rs`)
//! doing one step at a time. Envoy is stripped and V8's JIT code has no
//! symbols, so `perf` cannot split the filter's time; this can.
//!
//! Runs only when asked (`--sections probe`) with `KEYGATE_PROBE_WASM` set.

use super::edge::MCP_PATH;
use crate::envoy::{AuthFilter, Envoy};
use crate::http::{self, Client};
use crate::settings::Plan;
use crate::{procstat, wrk};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

/// The probe configurations: label, operations.
const STEPS: [(&str, &str); 15] = [
    ("no-op filter (reference)", ""),
    (
        "read all request headers (1 call) + lowercase names",
        "headers",
    ),
    ("read `:path` alone (1 call)", "path"),
    (
        "read all request headers (1 raw call, parsed in place)",
        "rawheaders",
    ),
    ("read 2 shared-data values (meta + key entry)", "shared"),
    ("… and decode both (meta JSON, entry slot)", "shared,decode"),
    ("parse the ok1 key", "parse"),
    ("SHA-256 of the secret + constant-time compare", "sha256"),
    ("remove 1 request header, set 3", "edit"),
    (
        "read all headers, then remove 1 and set 3 (4 calls)",
        "headers,edit",
    ),
    (
        "read all headers, then write them back edited (1 call)",
        "setmap",
    ),
    ("increment 1 counter metric", "metric"),
    ("read the clock", "time"),
    ("set the access-log property (1 call)", "props"),
    (
        "all of the above",
        "headers,shared,decode,parse,sha256,edit,metric,time,props",
    ),
];

/// Operations timed in a loop inside the filter (`micro` mode): name, what.
const MICRO: [(&str, &str); 11] = [
    ("empty", "empty loop iteration (timer overhead)"),
    ("path", "read `:path` (1 host call)"),
    (
        "headers",
        "read all request headers (1 call) + lowercase names",
    ),
    ("shared", "read 2 shared-data values (meta + key entry)"),
    ("decode", "decode meta (JSON) + key entry (binary slot)"),
    ("parse", "parse the ok1 key"),
    ("sha256", "SHA-256 of the secret + constant-time compare"),
    ("edit", "set 3 request headers + remove 3 (6 host calls)"),
    ("metric", "increment 1 counter metric"),
    ("time", "read the clock"),
    ("props", "set the access-log property (1 host call)"),
];

#[derive(Debug, Clone)]
pub struct MicroRow {
    pub what: String,
    pub ns: f64,
}

/// Times single operations inside the V8 sandbox: minimum of 15 trials of
/// 2000 iterations, robust on a busy machine.
pub async fn micro(envoy_bin: &Path, dir: &Path, client: &Client) -> Result<Vec<MicroRow>> {
    let wasm = probe_wasm()?;
    let filter = AuthFilter::Probe {
        wasm,
        ops: "micro".to_owned(),
    };
    let mut envoy = Envoy::start(envoy_bin, dir, "probe-micro", &filter)?;
    envoy.wait_ready(client, Duration::from_secs(60)).await?;
    let mut rows = Vec::new();
    for (op, what) in MICRO {
        let mut best = f64::INFINITY;
        // Three requests: the first also warms V8's tiers up.
        for _ in 0..3 {
            let headers = vec![("x-probe-op".to_owned(), op.to_owned())];
            let r = http::send(
                client,
                hyper::Method::GET,
                &envoy.url(MCP_PATH),
                &headers,
                None,
                Duration::from_secs(30),
            )
            .await?;
            let ns: f64 = r
                .headers
                .get("x-probe-ns")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("probe `{op}` answered {} without a timing", r.status))?;
            best = best.min(ns);
        }
        rows.push(MicroRow {
            what: what.to_owned(),
            ns: best,
        });
    }
    envoy.stop().await;
    Ok(rows)
}

fn probe_wasm() -> Result<std::path::PathBuf> {
    std::env::var_os("KEYGATE_PROBE_WASM")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file())
        .with_context(|| {
            "KEYGATE_PROBE_WASM must name the cost-probe filter (cargo build --release -p keygate-noop-filter --example cost-probe --target wasm32-wasip1)"
                .to_owned()
        })
}

#[derive(Debug, Clone)]
pub struct ProbeRow {
    pub what: String,
    pub cpu_us: f64,
}

pub async fn run(
    plan: &Plan,
    envoy_bin: &Path,
    wrk_bin: &Path,
    dir: &Path,
    client: &Client,
    key: &str,
) -> Result<Vec<ProbeRow>> {
    let wasm = probe_wasm()?;
    let mut envoys = Vec::new();
    for (i, (_, ops)) in STEPS.iter().enumerate() {
        let filter = AuthFilter::Probe {
            wasm: wasm.clone(),
            ops: (*ops).to_owned(),
        };
        envoys.push(Envoy::start(
            envoy_bin,
            dir,
            &format!("probe-{i}"),
            &filter,
        )?);
    }
    for e in &mut envoys {
        e.wait_ready(client, Duration::from_secs(60)).await?;
    }
    let headers = vec![http::bearer(key)];
    let mut samples: Vec<Vec<f64>> = vec![vec![]; STEPS.len()];
    for _ in 0..plan.repeats.max(2) {
        for (i, e) in envoys.iter().enumerate() {
            let c0 = procstat::cpu_seconds(e.pid())?;
            let w = wrk::run(
                wrk_bin,
                &e.url(MCP_PATH),
                &headers,
                plan.wrk_connections,
                plan.wrk_seconds.min(5),
            )
            .await?;
            let c1 = procstat::cpu_seconds(e.pid())?;
            if w.non_2xx > 0 || w.requests == 0 {
                anyhow::bail!(
                    "probe `{}`: {} non-2xx of {} requests",
                    STEPS[i].0,
                    w.non_2xx,
                    w.requests
                );
            }
            samples[i].push((c1 - c0) * 1e6 / w.requests as f64);
        }
    }
    for e in envoys {
        e.stop().await;
    }
    Ok(STEPS
        .iter()
        .zip(samples)
        .map(|((what, _), s)| ProbeRow {
            what: (*what).to_owned(),
            cpu_us: super::median(&s),
        })
        .collect())
}
