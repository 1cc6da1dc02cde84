//! The soak (issue 14): real Envoy (2 workers) with the filter, the real
//! control plane (SQLite, or two replicas on the soak's own PostgreSQL) and
//! the demo MCP servers, under a load of mixed good and bad keys while churn
//! drivers change users, servers, rules and keys; an oracle of its own
//! ([`model`], [`oracle`]) judges every answer, and faults ([`faults`]) hit
//! the control plane, its database and the feed's connection in the middle.
//!
//! `cargo xtask soak [--minutes N] [--postgres]` runs it (binary `soak`);
//! `cargo xtask test` runs two minutes on SQLite. The report
//! ([`report`]) is what docs/reliability.md quotes.

pub mod churn;
pub mod faults;
pub mod load;
pub mod model;
pub mod oracle;
pub mod postgres;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod state;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::api::Api;
use crate::control_plane::{ControlPlane, ControlPlaneOptions, unique_token};
use crate::dirs::TestDir;
use crate::envoy::{CONTROL_PLANE_CLUSTER, Envoy, EnvoyConfig, WaitFor, test_filter_config};
use crate::mcp_server::{McpServer, Tool};
use crate::unix_now;
use oracle::{EdgeTiming, Oracle};
use proxy::Proxy;

/// How to run a soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub duration: Duration,
    /// Two control-plane replicas on the soak's own PostgreSQL.
    pub postgres: bool,
    /// Requests per second through Envoy (all load workers together).
    pub rate: u32,
    pub load_workers: usize,
    pub seed: u64,
}

/// Edge settings of the soak: short intervals, so an outage shows its
/// stale phase within seconds, and tiny snapshot pages, so every snapshot
/// is paged and a cut connection lands in the middle of one.
pub const TIMING: EdgeTiming = EdgeTiming {
    table_cache_millis: 10,
    feed_wait_seconds: 2,
    max_staleness_seconds: 8,
};
pub const SNAPSHOT_PAGE_SIZE: u32 = 10;
/// Versions the control plane's change log keeps: small, so an edge held
/// back by a fault falls behind it and has to fetch a (paged) snapshot.
/// (10 made the edge fetch snapshots even without a fault, and on a loaded
/// machine a change then took up to 4 s to reach the edge: see
/// docs/reliability.md.)
pub const FEED_LOG_RETENTION: u32 = 100;

/// Server names Envoy routes (to the two MCP servers, alternately); the
/// last is never registered.
pub const ROUTED: &[&str] = &["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];
/// Names with no route (the catch-all sends them to the control plane);
/// the last is never registered.
pub const UNROUTED: &[&str] = &["u0", "u1", "u2"];
/// Churn partitions and the names each one creates and deletes.
pub const PARTITIONS: &[&[&str]] = &[&["s0", "s1", "s2", "u0"], &["s3", "s4", "s5", "s6", "u1"]];

/// What the drivers and the oracle share.
#[derive(Debug)]
pub struct Shared {
    pub oracle: Mutex<Oracle>,
    pub routed: Vec<String>,
    pub unrouted: Vec<String>,
    pub stop: AtomicBool,
    /// Churn waits while set (around faults that need a quiet API).
    pub pause: AtomicBool,
    /// Per churn partition: a change is in flight.
    pub churn_busy: Vec<AtomicBool>,
    /// Sleep between a partition's changes (`None`: back to back).
    pub churn_pace: Option<Duration>,
}

impl Shared {
    /// Pauses churn and waits until no change is in flight.
    pub async fn pause_churn(&self) {
        self.pause.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.churn_busy.iter().any(|b| b.load(Ordering::SeqCst)) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn resume_churn(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }
}

/// Every process of the soak. Fields drop in order: Envoy first.
pub struct Rig {
    pub envoy: Envoy,
    pub proxy: Proxy,
    pub servers: Vec<McpServer>,
    pub control_planes: Vec<ControlPlane>,
    pub postgres: Option<postgres::OwnPostgres>,
    pub dir: TestDir,
}

impl Rig {
    pub async fn start(options: &SoakOptions) -> Result<Self> {
        let dir = TestDir::new(if options.postgres {
            "soak-postgres"
        } else {
            "soak-sqlite"
        });
        let postgres = if options.postgres {
            Some(postgres::OwnPostgres::start(dir.path())?)
        } else {
            None
        };
        let control_plane_options = ControlPlaneOptions {
            database_url: postgres.as_ref().map(|p| p.url().to_owned()),
            admin_token: Some(unique_token("soak-admin")),
            data_plane_token: Some(unique_token("soak-data-plane")),
            extra_args: vec![
                "--feed-log-retention".into(),
                FEED_LOG_RETENTION.to_string(),
                "--max-keys-per-user".into(),
                "1000".into(),
            ],
            extra_env: Vec::new(),
        };
        let replicas = if options.postgres { 2 } else { 1 };
        let mut control_planes = Vec::new();
        for _ in 0..replicas {
            control_planes
                .push(ControlPlane::start_with(dir.path(), control_plane_options.clone()).await);
        }
        let servers = vec![
            McpServer::start(dir.path(), "echo", Tool::Echo),
            McpServer::start(dir.path(), "time", Tool::Time),
        ];
        let ports: Vec<u16> = control_planes.iter().map(ControlPlane::port).collect();
        let proxy = Proxy::start(ports.clone())
            .await
            .context("starting the feed proxy")?;
        let upstreams = ROUTED
            .iter()
            .enumerate()
            .map(|(i, name)| ((*name).to_owned(), servers[i % servers.len()].port()))
            .collect();
        let first = &control_planes[0];
        let mut config = EnvoyConfig::new(first.port(), first.data_plane_token(), upstreams);
        let mut filter = test_filter_config(first.port(), first.data_plane_token());
        filter.feed_wait_seconds = TIMING.feed_wait_seconds;
        filter.max_staleness_seconds = TIMING.max_staleness_seconds;
        filter.usage_flush_seconds = 1;
        filter.table_cache_millis = Some(TIMING.table_cache_millis);
        filter.snapshot_page_size = Some(SNAPSHOT_PAGE_SIZE);
        config.set_filter(&filter);
        let wasm = crate::env::required_file(crate::env::FILTER_WASM);
        let bootstrap = through_proxy(config.render(&wasm), proxy.port, &ports)?;
        let text = serde_json::to_string_pretty(&bootstrap)?;
        let envoy = Envoy::start_with_text(
            dir.path(),
            &text,
            "json",
            config.listener_port,
            config.admin_port,
            WaitFor::FirstSync,
        )
        .await;
        Ok(Self {
            envoy,
            proxy,
            servers,
            control_planes,
            postgres,
            dir,
        })
    }

    pub fn admin(&self) -> Api {
        self.control_planes[0].admin()
    }

    pub fn data_plane(&self) -> Api {
        self.admin()
            .with_token(self.control_planes[0].data_plane_token())
    }

    /// Resident memory (kB) of Envoy and of each control plane.
    pub fn memory(&self) -> (Option<u64>, Vec<Option<u64>>) {
        let envoy = self.envoy.pid().and_then(rss_kb);
        let planes = self
            .control_planes
            .iter()
            .map(|c| c.pid().and_then(rss_kb))
            .collect();
        (envoy, planes)
    }
}

/// `VmRSS` of a process, in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The bootstrap with the filter's control-plane cluster pointed at the
/// proxy, the catch-all route (the console, `/api`) sent to the control
/// planes directly, so a cut feed connection never changes what a plain
/// request gets, and `/mcp-connect/<unrouted>/` answered 404 by Envoy.
fn through_proxy(mut bootstrap: Value, proxy_port: u16, planes: &[u16]) -> Result<Value> {
    let endpoint = |port: u16| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}});
    let direct = "soak_control_plane_direct";
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("the bootstrap has no clusters"))?;
    let mut direct_cluster = Value::Null;
    for cluster in clusters.iter_mut() {
        if cluster["name"] == CONTROL_PLANE_CLUSTER {
            direct_cluster = cluster.clone();
            cluster["load_assignment"]["endpoints"] =
                json!([{"lb_endpoints": [endpoint(proxy_port)]}]);
        }
    }
    let lb: Vec<Value> = planes.iter().map(|p| endpoint(*p)).collect();
    direct_cluster["name"] = json!(direct);
    direct_cluster["load_assignment"]["cluster_name"] = json!(direct);
    direct_cluster["load_assignment"]["endpoints"] = json!([{ "lb_endpoints": lb }]);
    clusters.push(direct_cluster);
    let routes = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("the bootstrap has no routes"))?;
    let catch_all = routes
        .last_mut()
        .ok_or_else(|| anyhow!("the bootstrap has no catch-all route"))?;
    catch_all["route"]["cluster"] = json!(direct);
    // A server name with no route of its own: 404 from Envoy itself, so the
    // answer to an allowed request never depends on the control plane.
    let unrouted =
        json!({"match": {"prefix": "/mcp-connect/"}, "direct_response": {"status": 404}});
    let at = routes.len() - 1;
    routes.insert(at, unrouted);
    Ok(bootstrap)
}

/// Runs a whole soak and returns its report.
pub async fn run(options: &SoakOptions) -> Result<report::Report> {
    crate::ensure_crypto_provider();
    let started = Instant::now();
    let mut rig = Rig::start(options).await?;
    let admin = rig.admin();
    for name in ROUTED[..ROUTED.len() - 1]
        .iter()
        .chain(&UNROUTED[..UNROUTED.len() - 1])
    {
        admin.create_server(name).await?;
    }
    let mut oracle = Oracle::new(TIMING);
    oracle.model.servers = ROUTED[..ROUTED.len() - 1]
        .iter()
        .chain(&UNROUTED[..UNROUTED.len() - 1])
        .map(|s| (*s).to_owned())
        .collect();
    let shared = std::sync::Arc::new(Shared {
        oracle: Mutex::new(oracle),
        routed: ROUTED.iter().map(|s| (*s).to_owned()).collect(),
        unrouted: UNROUTED.iter().map(|s| (*s).to_owned()).collect(),
        stop: AtomicBool::new(false),
        pause: AtomicBool::new(false),
        churn_busy: PARTITIONS.iter().map(|_| AtomicBool::new(false)).collect(),
        // Long runs pace the churn (about 10 changes a second per
        // partition), so most requests fall outside every change's window
        // and are judged strictly; two minutes go flat out, to make a few
        // hundred changes of each kind.
        // (PostgreSQL's writes are slow enough as they are).
        churn_pace: (options.duration > Duration::from_secs(300) && !options.postgres)
            .then(|| Duration::from_millis(100)),
    });
    let mut tasks = Vec::new();
    for (part, names) in PARTITIONS.iter().enumerate() {
        let churn = churn::Churn::new(
            admin.clone(),
            part,
            names.iter().map(|s| (*s).to_owned()).collect(),
            options.seed.wrapping_add(1000 + part as u64),
        );
        tasks.push(tokio::spawn(churn.run(shared.clone())));
    }
    // A population before the load starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let memory_start = rig.memory();
    let edge = crate::edge::Edge::new(rig.envoy.listener_port());
    let interval =
        Duration::from_secs_f64(options.load_workers as f64 / f64::from(options.rate.max(1)));
    for worker in 0..options.load_workers {
        tasks.push(tokio::spawn(load::worker(
            shared.clone(),
            edge.clone(),
            options.seed.wrapping_add(worker as u64),
            interval,
        )));
    }
    let load_started = unix_now();
    let deadline = started + options.duration;
    let fault_log = faults::run_schedule(&mut rig, &shared, options, deadline).await;
    let now = Instant::now();
    if now < deadline {
        tokio::time::sleep(deadline - now).await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    let memory_end = rig.memory();
    let oracle = shared.oracle.lock().unwrap_or_else(|e| e.into_inner());
    let report = report::Report {
        options: options.clone(),
        seconds: unix_now() - load_started,
        counts: oracle.counts.clone(),
        faults: fault_log,
        proxy_cut: rig.proxy.counts.cut.load(Ordering::Relaxed),
        proxy_cut_in_snapshot: rig.proxy.counts.cut_in_snapshot.load(Ordering::Relaxed),
        proxy_delayed: rig.proxy.counts.delayed_chunks.load(Ordering::Relaxed),
        memory_start,
        memory_end,
        keys_at_end: oracle.model.keys.values().filter(|k| !k.revoked).count(),
        dir: rig.dir.path().to_owned(),
    };
    drop(oracle);
    if !report.passed() {
        // Keep the logs of a failed run.
        keep_dir(rig);
    }
    Ok(report)
}

fn keep_dir(rig: Rig) {
    let Rig { dir, .. } = rig;
    std::mem::forget(dir);
}
