//! The unused-key sweep of the key lifetime policy: every
//! `Config::key_policy_sweep` (60 s by default) each replica reads the
//! policy and turns off every key not used for `maxUnusedDays`, with the
//! reason `unused for N days (key policy)`. It is safe on every replica at
//! once: each key is turned off by one conditional `UPDATE` in its own feed
//! write transaction ([`db::unused_keys::disable_if_unused`]), so exactly one
//! replica wins each key and exactly one feed change is logged; the edge
//! then drops the key like any disabled key (401 within the feed's time).

use crate::audit::{self, Action, Actor, Target};
use crate::clock::Clock;
use crate::db::{self, Db};
use crate::domain::key_policy::KeyPolicy;
use std::time::Duration;

/// One sweep at `clock.now()`; returns how many keys this call turned off.
pub async fn sweep_once(db: &Db, clock: &dyn Clock) -> Result<u64, sqlx::Error> {
    let now = clock.now();
    let (cutoff, days) = {
        let mut conn = db.conn().await?;
        let policy = db::settings::key_policy(&mut conn).await?.policy;
        match (policy.unused_cutoff(now), policy.max_unused_days) {
            (Some(c), Some(d)) => (c, d),
            _ => return Ok(0),
        }
    };
    let ids = {
        let mut conn = db.conn().await?;
        db::unused_keys::candidates(&mut conn, cutoff, now).await?
    };
    let reason = KeyPolicy::unused_reason(days);
    let mut disabled = 0;
    for id in ids {
        // One short transaction per key: the feed lock is held for one
        // UPDATE, never for the whole sweep.
        let mut tx = db.begin_write().await?;
        if db::unused_keys::disable_if_unused(&mut tx, db, id, cutoff, now, &reason).await? {
            let details = serde_json::json!({ "reason": reason });
            let (actor, target) = (Actor::system(), Target::Key(id));
            audit::record(
                &mut tx,
                &actor,
                Action::KeyDisabledByPolicy,
                target,
                details,
            )
            .await?;
            tx.commit().await?;
            disabled += 1;
            tracing::info!(key_id = id, "API key disabled: {reason}");
        }
        // Otherwise the transaction rolls back on drop: nothing was written.
    }
    Ok(disabled)
}

/// Sweeps every `interval`, the first time one interval after start, until
/// the task is aborted. A failed sweep is logged and tried again next time.
pub async fn run(db: Db, clock: crate::clock::SharedClock, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = sweep_once(&db, clock.as_ref()).await {
            tracing::warn!(error = %e, "unused-key sweep failed; trying again next interval");
        }
    }
}
