//! Faults in the middle of the soak, the oracle judging throughout:
//!
//! - `control-plane-kill`: every control plane SIGKILLed for longer than
//!   `maxStalenessSeconds`, then restarted; the API's whole state before and
//!   after must be the same (usage may only move forward);
//! - `replica-kill` (PostgreSQL): one of two replicas SIGKILLed, restarted;
//! - `postgres-restart` (PostgreSQL): the database stopped and started under
//!   the control planes;
//! - `feed-cut` / `feed-slow`: the proxy between Envoy and the control plane
//!   cuts answers midway (snapshot pages included) or delays them;
//! - `kill-mid-write`: the control plane SIGKILLed while key creations are
//!   in flight; after the restart the SQLite file passes `PRAGMA
//!   integrity_check` and every key whose creation answered 201 is there.
//!
//! After each, the edge must catch up: its table version reaches the
//! control plane's within a minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::json;

use super::churn::lock;
use super::model::{Key, Servers};
use super::oracle::Touch;
use super::proxy::Mode;
use super::rng::Rng;
use super::{Rig, Shared, SoakOptions, TIMING, state};
use crate::api::{Api, Method, id_of};
use crate::unix_now;

/// What one fault did and found.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub name: &'static str,
    /// Seconds after the soak started.
    pub at: f64,
    pub seconds: f64,
    /// Seconds from the fault's end until the edge's table version reached
    /// the control plane's.
    pub catch_up: Option<f64>,
    pub details: String,
    /// Anything lost, corrupt or stuck: each fails the run.
    pub problems: Vec<String>,
}

fn schedule(postgres: bool) -> Vec<(&'static str, f64)> {
    let mut list = vec![("control-plane-kill", 30.0)];
    if postgres {
        list.push(("replica-kill", 15.0));
        list.push(("postgres-restart", 20.0));
    }
    list.push(("feed-cut", 20.0));
    list.push(("feed-slow", 20.0));
    for _ in 0..3 {
        list.push(("kill-mid-write", 12.0));
    }
    list
}

/// Runs faults one after another, round after round, while there is time
/// for the next one before `deadline`.
pub async fn run_schedule(
    rig: &mut Rig,
    shared: &Arc<Shared>,
    options: &SoakOptions,
    deadline: Instant,
) -> Vec<FaultRecord> {
    let soak_start = unix_now();
    let gap = (options.duration.as_secs_f64() / 40.0).clamp(4.0, 30.0);
    let mut records = Vec::new();
    let mut rng = Rng::new(options.seed ^ 0xFA17);
    tokio::time::sleep(Duration::from_secs_f64(gap.max(8.0))).await;
    'rounds: loop {
        for (name, estimate) in schedule(options.postgres) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.as_secs_f64() < estimate + gap {
                break 'rounds;
            }
            let at = unix_now() - soak_start;
            let started = Instant::now();
            let mut record = FaultRecord {
                name,
                at,
                seconds: 0.0,
                catch_up: None,
                details: String::new(),
                problems: Vec::new(),
            };
            let result = match name {
                "control-plane-kill" => control_plane_kill(rig, shared, &mut record).await,
                "replica-kill" => replica_kill(rig, shared).await,
                "postgres-restart" => postgres_restart(rig, shared, &mut record).await,
                "feed-cut" => feed(rig, shared, Mode::Cut).await,
                "feed-slow" => feed(rig, shared, Mode::Slow).await,
                _ => kill_mid_write(rig, shared, &mut record, &mut rng).await,
            };
            shared.resume_churn();
            if let Err(e) = result {
                record.problems.push(format!("{e:#}"));
            }
            record.seconds = started.elapsed().as_secs_f64();
            match catch_up(rig).await {
                Ok(seconds) => record.catch_up = Some(seconds),
                Err(e) => record.problems.push(format!("{e:#}")),
            }
            println!(
                "soak: {name} at {at:.0}s took {:.1}s, edge caught up in {:?} s{}{}",
                record.seconds,
                record.catch_up.map(|s| (s * 10.0).round() / 10.0),
                if record.details.is_empty() { "" } else { "; " },
                record.details
            );
            for problem in &record.problems {
                println!("soak:   PROBLEM: {problem}");
            }
            records.push(record);
            tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        }
    }
    records
}

fn begin(shared: &Shared, name: &str, control_plane_down: bool) -> usize {
    lock(shared).begin_fault(name, unix_now(), control_plane_down)
}

fn end(shared: &Shared, index: usize) {
    lock(shared).end_fault(index, unix_now());
}

/// Reads the state once the API answers again (a pool may need a moment
/// to replace connections a restarted database cut).
async fn fetch_when_up(api: &Api) -> Result<state::ApiState> {
    let started = Instant::now();
    loop {
        match state::fetch(api).await {
            Ok(s) => return Ok(s),
            Err(e) if started.elapsed() > Duration::from_secs(60) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn control_plane_kill(
    rig: &mut Rig,
    shared: &Shared,
    record: &mut FaultRecord,
) -> Result<()> {
    shared.pause_churn().await;
    // Let the edge's usage reports land first (usageFlushSeconds is 1).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = state::fetch(&rig.admin()).await?;
    let fault = begin(shared, "control-plane-kill", true);
    for plane in rig.control_planes.iter_mut() {
        plane.stop();
    }
    let outage = Duration::from_secs(TIMING.max_staleness_seconds + 4);
    tokio::time::sleep(outage).await;
    for plane in rig.control_planes.iter_mut() {
        plane.restart().await;
    }
    end(shared, fault);
    let after = fetch_when_up(&rig.admin()).await?;
    record.details = format!(
        "down {:.0} s; state compared: {} users, {} servers, {} rules, {} keys",
        outage.as_secs_f64(),
        after.users.len(),
        after.servers.len(),
        after.rules.len(),
        after.keys.len()
    );
    record
        .problems
        .extend(state::lost_or_changed(&before, &after));
    Ok(())
}

async fn replica_kill(rig: &mut Rig, shared: &Shared) -> Result<()> {
    let fault = begin(shared, "replica-kill", false);
    let replica = rig
        .control_planes
        .get_mut(1)
        .ok_or_else(|| anyhow!("no second replica"))?;
    replica.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    replica.restart().await;
    end(shared, fault);
    Ok(())
}

async fn postgres_restart(rig: &mut Rig, shared: &Shared, record: &mut FaultRecord) -> Result<()> {
    shared.pause_churn().await;
    let before = state::fetch(&rig.admin()).await?;
    let fault = begin(shared, "postgres-restart", false);
    let postgres = rig
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow!("no PostgreSQL of our own"))?;
    postgres.stop()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    postgres.restart_after_stop()?;
    let http = crate::http_client();
    for plane in &rig.control_planes {
        let url = format!("{}/readyz", plane.url());
        let started = Instant::now();
        while !http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if started.elapsed() > Duration::from_secs(60) {
                end(shared, fault);
                return Err(anyhow!(
                    "{url} not ready a minute after PostgreSQL restarted"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    end(shared, fault);
    let after = fetch_when_up(&rig.admin()).await?;
    record.details = format!("state compared: {} keys", after.keys.len());
    record
        .problems
        .extend(state::lost_or_changed(&before, &after));
    Ok(())
}

async fn feed(rig: &mut Rig, shared: &Shared, mode: Mode) -> Result<()> {
    let name = if mode == Mode::Cut {
        "feed-cut"
    } else {
        "feed-slow"
    };
    let fault = begin(shared, name, false);
    rig.proxy.set_mode(mode);
    tokio::time::sleep(Duration::from_secs(8)).await;
    rig.proxy.set_mode(Mode::Pass);
    end(shared, fault);
    Ok(())
}

/// Key creations in flight from several tasks, then SIGKILL.
async fn kill_mid_write(
    rig: &mut Rig,
    shared: &Arc<Shared>,
    record: &mut FaultRecord,
    rng: &mut Rng,
) -> Result<()> {
    shared.pause_churn().await;
    let users: Vec<i64> = lock(shared).model.users.keys().copied().collect();
    if users.is_empty() {
        return Err(anyhow!("no users to create keys for"));
    }
    let sqlite = rig.postgres.is_none();
    let fault = begin(shared, "kill-mid-write", sqlite);
    let admin = rig.admin();
    let writing = Arc::new(AtomicBool::new(true));
    let created = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (shared, admin, writing, created) = (
            shared.clone(),
            admin.clone(),
            writing.clone(),
            created.clone(),
        );
        let users = users.clone();
        let mut rng = Rng::new(rng.next_u64() ^ w);
        writers.push(tokio::spawn(async move {
            while writing.load(Ordering::SeqCst) {
                let Some(&user) = rng.pick(&users) else { break };
                create_key(&shared, &admin, user, &created).await;
            }
        }));
    }
    // Kill once a few creations have committed, while more are in flight.
    let waiting = Instant::now();
    while created.lock().unwrap_or_else(|e| e.into_inner()).len() < 3
        && waiting.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.below(300) as u64)).await;
    // The replica that takes the writes.
    rig.control_planes[0].stop();
    writing.store(false, Ordering::SeqCst);
    for writer in writers {
        let _ = writer.await;
    }
    rig.control_planes[0].restart().await;
    end(shared, fault);
    let created: Vec<i64> = created.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut details = format!("{} creations answered 201 before the kill", created.len());
    if sqlite {
        let verdict = integrity_check(&rig.dir.path().join("keygate.db"))?;
        details.push_str(&format!("; integrity_check: {verdict}"));
        if verdict != "ok" {
            record
                .problems
                .push(format!("PRAGMA integrity_check answered {verdict}"));
        }
    }
    for id in &created {
        let answer = admin
            .call(Method::GET, &format!("/api/admin-api-keys/{id}"), None)
            .await?;
        if answer.status != 200 {
            record.problems.push(format!(
                "key {id} answered 201 before the kill, now {}",
                answer.status
            ));
        }
    }
    record.details = details;
    // Creations whose answer the kill swallowed may or may not exist.
    state::resync(shared, &admin).await;
    Ok(())
}

async fn create_key(shared: &Shared, admin: &Api, user: i64, created: &std::sync::Mutex<Vec<i64>>) {
    let change = lock(shared).begin_change(unix_now(), vec![Touch::User(user)]);
    let body =
        json!({"userId": user, "name": crate::api::unique_name("burst"), "mcpServerIds": ["*"]});
    let answer = admin
        .call(Method::POST, "/api/admin-api-keys", Some(&body))
        .await;
    let mut oracle = lock(shared);
    match answer {
        Ok(a) if a.status == 201 => {
            if let Ok(id) = id_of(&a.body) {
                oracle.model.keys.insert(
                    id,
                    Key {
                        user_id: user,
                        token: a.body["key"].as_str().map(str::to_owned),
                        scope: Servers::All,
                        expires_at: None,
                        disabled: false,
                        revoked: false,
                    },
                );
                created.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                oracle.end_change(change, unix_now(), &[Touch::Key(id)]);
            }
            oracle.count_change("key-create-mid-write", true);
        }
        Ok(a) if a.status.is_client_error() => {
            oracle.end_change(change, unix_now(), &[]);
            oracle.count_change("key-create-mid-write", false);
        }
        _ => oracle.pending_unknown.push(change),
    }
}

/// `PRAGMA integrity_check` on the SQLite file, by Python's sqlite3 (a
/// reader of its own, not the control plane's driver).
fn integrity_check(path: &std::path::Path) -> Result<String> {
    let python = crate::env::required_file(crate::env::PYTHON);
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(c.execute('PRAGMA integrity_check').fetchone()[0])",
        )
        .arg(path)
        .output()
        .context("running python for PRAGMA integrity_check")?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        return Err(anyhow!(
            "integrity check could not run: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(text)
}

/// Seconds until the edge's table version reaches the control plane's
/// current one.
async fn catch_up(rig: &Rig) -> Result<f64> {
    let started = Instant::now();
    let feed = rig.data_plane();
    let answer = feed
        .call(Method::GET, "/internal/v1/key-table?limit=1", None)
        .await?;
    let target = answer.body["version"]
        .as_i64()
        .ok_or_else(|| anyhow!("feed answered no version: {}", answer.text))?;
    loop {
        let stats = rig.envoy.prometheus_stats().await;
        let version = stats
            .lines()
            .filter(|l| l.starts_with("keygate_table_version"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0f64, f64::max);
        if version >= target as f64 {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(anyhow!(
                "the edge did not catch up within 60 s: table version {version}, control plane {target}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
