//! The control plane on its own: `GET /api/me` with a key (throughput with
//! `wrk`, latency at the fixed rate), and key creation through the admin API.

use crate::controlplane::ControlPlane;
use crate::http::{self, Client};
use crate::settings::Plan;
use crate::{openloop, procstat, wrk};
use anyhow::Result;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ControlPlaneResult {
    pub me_rps: f64,
    pub me_cpu_us: f64,
    pub me_rate_rps: u32,
    pub me_p50_us: f64,
    pub me_p99_us: f64,
    pub key_creations_per_s: f64,
    pub creation_concurrency: usize,
}

pub async fn run(
    plan: &Plan,
    wrk_bin: &Path,
    client: &Client,
    cp: &Arc<ControlPlane>,
    user_id: i64,
    key: &str,
) -> Result<ControlPlaneResult> {
    let url = cp.url("/api/me");
    let headers = vec![http::bearer(key)];
    let c0 = procstat::cpu_seconds(cp.pid())?;
    let w = wrk::run(
        wrk_bin,
        &url,
        &headers,
        plan.wrk_connections,
        plan.control_plane_seconds,
    )
    .await?;
    let c1 = procstat::cpu_seconds(cp.pid())?;
    if w.non_2xx > 0 || w.requests == 0 {
        anyhow::bail!(
            "/api/me: wrk saw {} non-2xx answers of {} requests",
            w.non_2xx,
            w.requests
        );
    }
    // A fixed rate below what it sustained: half of it, at most the edge rate.
    let rate = plan.rate_rps.min((w.rps / 2.0) as u32).max(1);
    openloop::run(client, &url, &headers, rate, 1.0).await?;
    let o = openloop::run(
        client,
        &url,
        &headers,
        rate,
        f64::from(plan.control_plane_seconds),
    )
    .await?;
    if o.failed > 0 {
        anyhow::bail!(
            "/api/me: {} of {} fixed-rate requests failed",
            o.failed,
            o.sent
        );
    }

    let concurrency = 4;
    let created = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(u64::from(plan.control_plane_seconds));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let cp = Arc::clone(cp);
        let created = Arc::clone(&created);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                cp.api.create_key_for(user_id, &["alpha"], None).await?;
                created.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let key_creations_per_s =
        created.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok(ControlPlaneResult {
        me_rps: w.rps,
        me_cpu_us: (c1 - c0) * 1e6 / w.requests as f64,
        me_rate_rps: rate,
        me_p50_us: o.p50_us,
        me_p99_us: o.p99_us,
        key_creations_per_s,
        creation_concurrency: concurrency,
    })
}
