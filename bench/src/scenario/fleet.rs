//! The fleet: thousands of Envoys long-polling one control-plane replica.
//!
//! For each point (1k, 5k, 10k subscribers) a fresh release control plane
//! (SQLite, the fixture's one user, server, rule and key, default connection
//! cap and header timeout) gets that many `since=V&wait=60` polls parked from
//! this process ([`crate::rawhttp`]); then: its CPU over 20 s of idling, its
//! RSS before and after parking, and the time from one key delete to each
//! subscriber's answer. The snapshot storm seeds 100k keys and has 10,000
//! subscribers ask for the first snapshot page at once; 1,000 of them read
//! every page (the others only the head of the first, so the bench measures
//! the control plane and not loopback bandwidth), and the control plane's
//! own counters say how often it read and encoded a page.

use crate::controlplane::{ControlPlane, DATA_PLANE_TOKEN};
use crate::http::{self, Client};
use crate::procstat;
use crate::rawhttp::{self, Answer};
use crate::seed;
use crate::settings::{Parts, Plan};
use anyhow::{Context, Result, bail};
use keygate_protocol::FeedQuery;
use keygate_protocol::feed::{PageSize, WaitSeconds};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

/// Connections opened at once while parking (the listen backlog is 1024).
const CONNECTING: usize = 256;
/// How long a point idles with every poll parked.
const IDLE: Duration = Duration::from_secs(20);

pub struct FleetPoint {
    pub subscribers: usize,
    pub park_s: f64,
    /// Control-plane CPU over [`IDLE`], in % of one core.
    pub idle_cpu_pct: f64,
    /// Version reads during the idle window (the follower's re-checks).
    pub idle_version_reads: u64,
    pub rss_before: u64,
    pub rss_parked: u64,
    pub answered: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Deltas built and answers encoded for the change.
    pub change_builds: u64,
    pub change_encodes: u64,
    /// Control-plane CPU from the change to the last answer, seconds.
    pub change_cpu_s: f64,
}

pub struct Storm {
    pub keys: usize,
    pub subscribers: usize,
    pub readers: usize,
    pub pages: usize,
    pub page_bytes: usize,
    pub snapshot_builds: u64,
    pub encodes: u64,
    pub version_reads: u64,
    pub shared: u64,
    /// Control-plane CPU from the storm's start until the last reader had
    /// the whole table, seconds.
    pub cpu_s: f64,
    pub heads_all_s: f64,
    /// Time until the readers hold the whole table: median and last.
    pub whole_p50_s: f64,
    pub whole_last_s: f64,
    pub rss_peak: u64,
}

pub struct FleetResult {
    pub points: Vec<FleetPoint>,
    pub storm: Option<Storm>,
}

/// Runs every point, then the storm; a failing part is reported and skipped.
pub async fn run(
    plan: &Plan,
    parts: &Parts,
    dir: &Path,
    client: &Client,
    failures: &mut Vec<String>,
) -> Result<FleetResult> {
    let fds = rawhttp::raise_fd_limit();
    println!("fleet: open-file limit {fds}");
    let mut result = FleetResult {
        points: Vec::new(),
        storm: None,
    };
    for &n in &plan.fleet_sizes {
        match point(parts, dir, client, n).await {
            Ok(p) => {
                println!(
                    "  {n} parked in {:.1} s: idle CPU {:.2} % of a core ({} version reads in {} s), RSS {:.0} → {:.0} MiB ({:.1} KiB/subscriber); change → answered p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} of {n}; {} build, {} encode, {:.2} s CPU)",
                    p.park_s,
                    p.idle_cpu_pct,
                    p.idle_version_reads,
                    IDLE.as_secs(),
                    mib(p.rss_before),
                    mib(p.rss_parked),
                    kib_per(p.rss_parked, p.rss_before, n),
                    p.p50_ms,
                    p.p99_ms,
                    p.max_ms,
                    p.answered,
                    p.change_builds,
                    p.change_encodes,
                    p.change_cpu_s,
                );
                result.points.push(p);
            }
            Err(e) => {
                println!("  {n} subscribers failed: {e:#}");
                failures.push(format!("fleet, {n} subscribers: {e:#}"));
            }
        }
    }
    if let Some((subscribers, readers)) = plan.fleet_storm {
        match storm(parts, dir, client, 100_000, subscribers, readers).await {
            Ok(s) => {
                println!(
                    "  storm at {} keys: {} subscribers ask at once, {} read every page ({} pages, {:.1} MB each): {} page builds, {} encodes, {} version reads, {} shared; {:.1} s CPU; all heads in {:.1} s; whole table p50 {:.1} s, last {:.1} s; peak RSS {:.0} MiB",
                    s.keys,
                    s.subscribers,
                    s.readers,
                    s.pages,
                    s.page_bytes as f64 / 1e6,
                    s.snapshot_builds,
                    s.encodes,
                    s.version_reads,
                    s.shared,
                    s.cpu_s,
                    s.heads_all_s,
                    s.whole_p50_s,
                    s.whole_last_s,
                    mib(s.rss_peak),
                );
                result.storm = Some(s);
            }
            Err(e) => {
                println!("  storm failed: {e:#}");
                failures.push(format!("fleet storm: {e:#}"));
            }
        }
    }
    Ok(result)
}

pub fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

pub fn kib_per(after: u64, before: u64, n: usize) -> f64 {
    after.saturating_sub(before) as f64 / 1024.0 / n.max(1) as f64
}

/// One of the control plane's counters from `/metrics` (0 when absent).
async fn metric(client: &Client, cp: &ControlPlane, name: &str) -> Result<u64> {
    let r = http::get(client, &cp.url("/metrics")).await?;
    let text = String::from_utf8_lossy(&r.body);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0))
}

async fn feed_version(client: &Client, cp: &ControlPlane) -> Result<u64> {
    let r = http::send(
        client,
        hyper::Method::GET,
        &cp.url(&FeedQuery::Snapshot { page: None }.path()),
        &[http::bearer(DATA_PLANE_TOKEN)],
        None,
        Duration::from_secs(30),
    )
    .await?;
    let t: serde_json::Value = serde_json::from_slice(&r.body)?;
    t["version"].as_u64().context("no version in the snapshot")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Parks `n` long polls on a fresh control plane and measures it.
async fn point(parts: &Parts, dir: &Path, client: &Client, n: usize) -> Result<FleetPoint> {
    let seeded = seed::prepare(parts, dir, &format!("fleet-{n}"), 0).await?;
    let cp = seeded.cp.clone();
    let pid = cp.pid();
    // The change: deleting a key made for it.
    let doomed = cp
        .api
        .create_key_for(seeded.user_id, &["alpha"], None)
        .await?
        .id;
    let version = feed_version(client, &cp).await?;
    // What an edge with the default page size sends.
    let path = FeedQuery::Since {
        version,
        wait: WaitSeconds::MAX,
        page: Some(PageSize::MAX),
        paged_deltas: true,
    }
    .path();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = procstat::rss_bytes(pid)?;

    let parked_at = Instant::now();
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let mut polls = JoinSet::new();
    for i in 0..n {
        let permit = connecting.clone().acquire_owned().await?;
        let path = path.clone();
        let port = cp.port;
        polls.spawn(async move {
            let mut stream = rawhttp::connect(i, port, None).await?;
            rawhttp::send_get(&mut stream, &path, DATA_PLANE_TOKEN).await?;
            drop(permit);
            let answer = rawhttp::read_answer(&mut stream, false).await?;
            Ok::<_, anyhow::Error>((Instant::now(), answer))
        });
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while metric(client, &cp, "keygate_feed_clients").await? < n as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} polls parked after 40 s",
                metric(client, &cp, "keygate_feed_clients").await?
            );
        }
        if let Some(done) = polls.try_join_next() {
            bail!("a poll ended before the change: {:?}", done?.err());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let park_s = parked_at.elapsed().as_secs_f64();
    // Let the parking settle before idling.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads_before = metric(client, &cp, "keygate_feed_version_reads_total").await?;
    let cpu_before = procstat::cpu_seconds(pid)?;
    tokio::time::sleep(IDLE).await;
    let idle_cpu_pct = (procstat::cpu_seconds(pid)? - cpu_before) / IDLE.as_secs_f64() * 100.0;
    let idle_version_reads =
        metric(client, &cp, "keygate_feed_version_reads_total").await? - reads_before;
    let rss_parked = procstat::rss_bytes(pid)?;
    if parked_at.elapsed() > Duration::from_secs(55) {
        bail!("parking and idling took longer than the polls' 60 s wait");
    }

    let builds_before = metric(client, &cp, "keygate_feed_delta_builds_total").await?;
    let encodes_before = metric(client, &cp, "keygate_feed_encodes_total").await?;
    let cpu_before = procstat::cpu_seconds(pid)?;
    let changed_at = Instant::now();
    cp.api.delete_key(doomed).await?;
    let removal = format!("\"removals\":[{doomed}]");
    let mut latencies = Vec::with_capacity(n);
    let mut wrong = 0usize;
    let mut failed = 0usize;
    while let Some(done) = polls.join_next().await {
        match done? {
            Ok((
                at,
                Answer {
                    status: 200,
                    body_start,
                    ..
                },
            )) if String::from_utf8_lossy(&body_start).contains(&removal) => {
                latencies.push(at.duration_since(changed_at).as_secs_f64() * 1000.0)
            }
            Ok(_) => wrong += 1,
            Err(_) => failed += 1,
        }
    }
    let change_cpu_s = procstat::cpu_seconds(pid)? - cpu_before;
    let change_builds =
        metric(client, &cp, "keygate_feed_delta_builds_total").await? - builds_before;
    let change_encodes = metric(client, &cp, "keygate_feed_encodes_total").await? - encodes_before;
    if wrong + failed > 0 {
        println!("  {n}: {wrong} answers without the removal, {failed} polls failed");
    }
    latencies.sort_by(f64::total_cmp);
    drop(seeded);
    Ok(FleetPoint {
        subscribers: n,
        park_s,
        idle_cpu_pct,
        idle_version_reads,
        rss_before,
        rss_parked,
        answered: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        change_builds,
        change_encodes,
        change_cpu_s,
    })
}

/// `subscribers` ask for the first snapshot page of a `keys`-key table at
/// once; `readers` of them page through the whole table.
async fn storm(
    parts: &Parts,
    dir: &Path,
    client: &Client,
    keys: usize,
    subscribers: usize,
    readers: usize,
) -> Result<Storm> {
    let t = Instant::now();
    let seeded = seed::prepare(parts, dir, "fleet-storm", keys - 1).await?;
    println!(
        "  storm: seeded {keys} keys in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cp = seeded.cp.clone();
    let pid = cp.pid();
    let page = PageSize::MAX;
    let first = FeedQuery::Snapshot { page: Some(page) }.path();
    let names = [
        "keygate_feed_snapshot_builds_total",
        "keygate_feed_encodes_total",
        "keygate_feed_version_reads_total",
        "keygate_feed_shared_answers_total",
    ];
    let mut before = Vec::new();
    for name in names {
        before.push(metric(client, &cp, name).await?);
    }

    // Every connection is open before anyone asks (within the header-read
    // timeout), so the requests arrive together.
    let start = Arc::new(Barrier::new(subscribers + 1));
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let mut asks = JoinSet::new();
    for i in 0..subscribers {
        let permit = connecting.clone().acquire_owned().await?;
        let start = start.clone();
        let first = first.clone();
        let port = cp.port;
        let reader = i < readers;
        asks.spawn(async move {
            // Subscribers that read only the head keep a small window, so
            // the kernel does not buffer megabytes for them.
            let window = (!reader).then_some(4096);
            let stream = rawhttp::connect(i, port, window).await;
            drop(permit);
            start.wait().await;
            let mut stream = stream?;
            let began = Instant::now();
            rawhttp::send_get(&mut stream, &first, DATA_PLANE_TOKEN).await?;
            let mut answer = rawhttp::read_answer(&mut stream, reader).await?;
            let head_s = began.elapsed().as_secs_f64();
            if answer.status != 200 {
                bail!("first page answered {}", answer.status);
            }
            if !reader {
                return Ok((head_s, None, 1, answer.body_len));
            }
            let mut pages = 1;
            let page_bytes = answer.body_len;
            while let Some(after) = rawhttp::next_of(&answer.body_end) {
                let path = FeedQuery::Page { after, page }.path();
                rawhttp::send_get(&mut stream, &path, DATA_PLANE_TOKEN).await?;
                answer = rawhttp::read_answer(&mut stream, true).await?;
                if answer.status != 200 {
                    bail!("page after {after} answered {}", answer.status);
                }
                pages += 1;
            }
            Ok::<_, anyhow::Error>((
                head_s,
                Some(began.elapsed().as_secs_f64()),
                pages,
                page_bytes,
            ))
        });
    }
    start.wait().await;
    let cpu_before = procstat::cpu_seconds(pid)?;
    let began = Instant::now();
    let mut rss_peak = 0;
    let mut heads = Vec::new();
    let mut wholes = Vec::new();
    let mut pages = 0;
    let mut page_bytes = 0;
    let mut errors = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), asks.join_next()).await;
        rss_peak = rss_peak.max(procstat::rss_bytes(pid).unwrap_or(0));
        match next {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(done)) => match done? {
                Ok((head, whole, p, bytes)) => {
                    heads.push(head);
                    if let Some(w) = whole {
                        wholes.push(w);
                        pages = p;
                    }
                    page_bytes = page_bytes.max(bytes);
                }
                Err(e) => errors.push(format!("{e:#}")),
            },
        }
    }
    let cpu_s = procstat::cpu_seconds(pid)? - cpu_before;
    let total_s = began.elapsed().as_secs_f64();
    if !errors.is_empty() {
        println!(
            "  storm: {} subscribers failed, e.g. {}",
            errors.len(),
            errors[0]
        );
    }
    let mut after = Vec::new();
    for name in names {
        after.push(metric(client, &cp, name).await?);
    }
    heads.sort_by(f64::total_cmp);
    wholes.sort_by(f64::total_cmp);
    if wholes.len() < readers {
        bail!(
            "only {} of {readers} readers got the whole table ({} errors)",
            wholes.len(),
            errors.len()
        );
    }
    drop(seeded);
    Ok(Storm {
        keys,
        subscribers,
        readers,
        pages,
        page_bytes,
        snapshot_builds: after[0] - before[0],
        encodes: after[1] - before[1],
        version_reads: after[2] - before[2],
        shared: after[3] - before[3],
        cpu_s,
        heads_all_s: heads.last().copied().unwrap_or(total_s),
        whole_p50_s: percentile(&wholes, 0.5),
        whole_last_s: wholes.last().copied().unwrap_or(f64::NAN),
        rss_peak,
    })
}
