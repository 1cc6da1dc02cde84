//! How the table scales: for each size, a fresh control plane holding that
//! many keys, then keygate's filter in a fresh Envoy (time from Envoy's
//! start to the filter's `keygate_table_version` gauge reaching the control
//! plane's version, memory, CPU per request, cost of one change) and Envoy's
//! native `api_key_auth` holding the same keys inline (time to ready, memory,
//! CPU per request).

use super::{edge::MCP_PATH, probe_until};
use crate::controlplane::DATA_PLANE_TOKEN;
use crate::envoy::{AuthFilter, Envoy};
use crate::http::{self, Client};
use crate::seed::Seeded;
use crate::settings::{Parts, Plan};
use crate::{procstat, wrk};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// The filter's gauge for the table version it holds (filter/src/metrics.rs).
pub const TABLE_VERSION_GAUGE: &str = "keygate_table_version";

/// How long a first sync may take before the size is reported as not syncing
/// (the target is 20 s at 1M keys).
const SYNC_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
pub struct TableRow {
    pub keys: usize,
    pub snapshot_bytes: usize,
    pub snapshot_ms: f64,
    pub keygate_sync_s: Option<f64>,
    /// Why keygate has no numbers for this size, when it has none.
    pub keygate_note: Option<String>,
    pub keygate_rss: Option<u64>,
    pub keygate_cpu_us: Option<f64>,
    /// Time from the admin API's answer to the new key working at the edge.
    pub change_ms: Option<f64>,
    /// Envoy CPU spent applying one change (ms), idle Envoy otherwise.
    pub change_cpu_ms: Option<f64>,
    pub native_ready_s: Option<f64>,
    pub native_rss: Option<u64>,
    pub native_cpu_us: Option<f64>,
    pub native_note: Option<String>,
}

/// Reads a gauge's value from Prometheus text (first sample of that name).
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        l.split_whitespace().last()?.parse().ok()
    })
}

/// Waits until the keygate Envoy's table gauge reaches `version`; returns
/// the time since the Envoy was spawned.
pub async fn wait_synced(
    envoy: &Envoy,
    client: &Client,
    version: u64,
    timeout: Duration,
) -> Result<Duration> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(text) = envoy.prometheus(client).await {
            last = gauge(&text, TABLE_VERSION_GAUGE);
            if last.is_some_and(|v| v >= version as f64) {
                return Ok(envoy.started.elapsed());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "keygate Envoy did not reach table version {version} within {timeout:?} (gauge {TABLE_VERSION_GAUGE} = {last:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn cpu_per_request(plan: &Plan, wrk_bin: &Path, envoy: &Envoy, key: &str) -> Result<f64> {
    let headers = vec![http::bearer(key)];
    let c0 = procstat::cpu_seconds(envoy.pid())?;
    let w = wrk::run(
        wrk_bin,
        &envoy.url(MCP_PATH),
        &headers,
        plan.wrk_connections,
        plan.wrk_seconds.min(5),
    )
    .await?;
    let c1 = procstat::cpu_seconds(envoy.pid())?;
    if w.non_2xx > 0 || w.requests == 0 {
        anyhow::bail!(
            "{}: wrk saw {} non-2xx answers of {} requests",
            envoy.name,
            w.non_2xx,
            w.requests
        );
    }
    Ok((c1 - c0) * 1e6 / w.requests as f64)
}

/// Measures one table size on a seeded control plane.
pub async fn measure(
    plan: &Plan,
    parts: &Parts,
    dir: &Path,
    client: &Client,
    seeded: &Seeded,
    with_native: bool,
) -> Result<TableRow> {
    let keys = seeded.extra.len() + 1;
    let mut row = TableRow {
        keys,
        ..Default::default()
    };
    let snap = seeded
        .cp
        .api
        .with_token(DATA_PLANE_TOKEN)
        .snapshot(Duration::from_secs(300))
        .await?;
    row.snapshot_bytes = snap.bytes;
    row.snapshot_ms = snap.elapsed.as_secs_f64() * 1e3;
    println!(
        "  {keys} keys: snapshot {} B in {:.0} ms (version {}, {} entries)",
        snap.bytes,
        row.snapshot_ms,
        snap.table.version,
        snap.table.upserts.len()
    );

    let filter_wasm = parts
        .filter_wasm
        .as_ref()
        .with_context(|| "KEYGATE_FILTER_WASM missing".to_owned())?;
    let filter = AuthFilter::Keygate {
        wasm: filter_wasm.clone(),
        control_plane_port: seeded.cp.port,
        data_plane_token: crate::controlplane::DATA_PLANE_TOKEN.to_owned(),
        table_cache_millis: None,
    };
    let name = format!("keygate-{keys}");
    let mut envoy = Envoy::start(&parts.envoy, dir, &name, &filter)?;
    if let Err(e) = measure_keygate(
        plan,
        parts,
        client,
        seeded,
        &mut envoy,
        snap.table.version,
        &mut row,
    )
    .await
    {
        let why = envoy.last_warning().unwrap_or_default();
        println!("    keygate: {e:#}; Envoy's last warning: {why}");
        // What the failed attempt holds is still worth knowing.
        row.keygate_rss = procstat::rss_bytes(envoy.pid()).ok();
        let why = why.trim_start_matches("wasm log keygate: ");
        row.keygate_note = Some(format!(
            "**no sync** within {} s (Envoy: {why})",
            SYNC_LIMIT.as_secs()
        ));
    }
    envoy.stop().await;

    if with_native {
        let mut credentials = vec![(seeded.key.clone(), seeded.user_id.to_string())];
        credentials.extend(
            seeded
                .extra
                .iter()
                .map(|k| (k.token.clone(), k.user_id.to_string())),
        );
        let filter = AuthFilter::ApiKeyAuth { credentials };
        let name = format!("native-{keys}");
        let mut envoy = Envoy::start(&parts.envoy, dir, &name, &filter)?;
        match envoy.wait_ready(client, Duration::from_secs(180)).await {
            Ok(ready) => {
                row.native_ready_s = Some(ready.as_secs_f64());
                row.native_cpu_us =
                    Some(cpu_per_request(plan, &parts.wrk, &envoy, &seeded.key).await?);
                row.native_rss = Some(procstat::rss_bytes(envoy.pid())?);
                println!(
                    "    api_key_auth: ready {:.2} s after start, RSS {:.0} MiB, {:.1} µs CPU/req",
                    ready.as_secs_f64(),
                    row.native_rss.unwrap_or(0) as f64 / 1048576.0,
                    row.native_cpu_us.unwrap_or(f64::NAN)
                );
            }
            Err(e) => {
                println!("    api_key_auth did not load {keys} keys: {e:#}");
                row.native_note = Some("did not load".to_owned());
            }
        }
        envoy.stop().await;
        // Config files of a million keys are large: do not leave them behind.
        let _ = std::fs::remove_file(dir.join(format!("envoy-{name}.json")));
    }
    Ok(row)
}

/// keygate's numbers for one size: first sync, CPU per request, memory, one change.
async fn measure_keygate(
    plan: &Plan,
    parts: &Parts,
    client: &Client,
    seeded: &Seeded,
    envoy: &mut Envoy,
    version: u64,
    row: &mut TableRow,
) -> Result<()> {
    envoy.wait_ready(client, Duration::from_secs(120)).await?;
    let sync = wait_synced(envoy, client, version, SYNC_LIMIT).await?;
    row.keygate_sync_s = Some(sync.as_secs_f64());
    probe_until(
        client,
        &envoy.url(MCP_PATH),
        &seeded.key,
        Instant::now(),
        Duration::from_secs(30),
        |s| s.is_success(),
    )
    .await?;
    row.keygate_cpu_us = Some(cpu_per_request(plan, &parts.wrk, envoy, &seeded.key).await?);
    row.keygate_rss = Some(procstat::rss_bytes(envoy.pid())?);
    let (change_ms, change_cpu_ms) =
        change_cost(envoy, client, seeded, if plan.quick { 3 } else { 5 }).await?;
    row.change_ms = Some(change_ms);
    row.change_cpu_ms = Some(change_cpu_ms);
    println!(
        "    keygate: synced {:.2} s after start, RSS {:.0} MiB, {:.1} µs CPU/req, one change lands in {:.0} ms costing {:.2} ms Envoy CPU",
        sync.as_secs_f64(),
        row.keygate_rss.unwrap_or(0) as f64 / 1048576.0,
        row.keygate_cpu_us.unwrap_or(f64::NAN),
        change_ms,
        change_cpu_ms
    );
    Ok(())
}

/// One change (a new key) applied to a synced table: how long until the edge
/// accepts it, and how much Envoy CPU the apply took.
///
/// The CPU is measured without traffic: Envoy's thread run times over a
/// window holding one change, minus the same window while idle. Propagation
/// is measured separately with probes.
async fn change_cost(
    envoy: &Envoy,
    client: &Client,
    seeded: &Seeded,
    samples: usize,
) -> Result<(f64, f64)> {
    let window = Duration::from_millis(1000);
    let pid = envoy.pid();
    let mut idle = Vec::new();
    let mut busy = Vec::new();
    for _ in 0..samples {
        let c0 = procstat::cpu_ns_precise(pid)?;
        tokio::time::sleep(window).await;
        idle.push((procstat::cpu_ns_precise(pid)? - c0) as f64);
        let c0 = procstat::cpu_ns_precise(pid)?;
        let started = Instant::now();
        seeded
            .cp
            .api
            .create_key_for(seeded.user_id, &["alpha"], None)
            .await?;
        tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
        busy.push((procstat::cpu_ns_precise(pid)? - c0) as f64);
    }
    let cpu_ms = (super::median(&busy) - super::median(&idle)).max(0.0) / 1e6;
    let mut lat = Vec::new();
    for _ in 0..samples {
        super::revocation::pause(super::revocation::Spacing::Random).await;
        let key = seeded
            .cp
            .api
            .create_key_for(seeded.user_id, &["alpha"], None)
            .await?
            .key;
        let since = Instant::now();
        let d = probe_until(
            client,
            &envoy.url(MCP_PATH),
            &key,
            since,
            Duration::from_secs(30),
            |s| s.is_success(),
        )
        .await?;
        lat.push(d.as_secs_f64() * 1e3);
    }
    Ok((super::median(&lat), cpu_ms))
}

#[cfg(test)]
mod tests {
    use super::gauge;

    #[test]
    fn reads_gauges() {
        let text = "# TYPE keygate_table_version gauge\nkeygate_table_version 42\nkeygate_table_version_other 7\n";
        assert_eq!(gauge(text, "keygate_table_version"), Some(42.0));
        assert_eq!(gauge("x{a=\"b\"} 3\n", "x"), Some(3.0));
        assert_eq!(
            gauge("keygate_table_versions 1\n", "keygate_table_version"),
            None
        );
    }
}
