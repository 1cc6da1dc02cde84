//! What the API holds, read in full through its list routes: to compare the
//! state before a crash with the state after the restart (nothing committed
//! may be lost), and to bring the oracle's model back in step after a change
//! whose answer was lost.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;

use super::Shared;
use super::churn::lock;
use super::model::{Key, Rule, Servers, User};
use super::oracle::Touch;
use crate::api::{Api, Method};
use crate::unix_now;

/// Every record the admin API lists, by id (server: by name).
#[derive(Debug, Clone, Default)]
pub struct ApiState {
    pub users: BTreeMap<i64, Value>,
    pub servers: BTreeMap<String, Value>,
    pub rules: BTreeMap<i64, Value>,
    /// Keys, revoked ones included.
    pub keys: BTreeMap<i64, Value>,
}

fn items(body: &Value) -> Result<&Vec<Value>> {
    body["items"]
        .as_array()
        .ok_or_else(|| anyhow!("no `items` list in {body}"))
}

fn id(record: &Value) -> Result<i64> {
    crate::api::id_of(record)
}

async fn get(api: &Api, path: &str) -> Result<Value> {
    let answer = api.call(Method::GET, path, None).await?;
    ensure!(
        answer.status.is_success(),
        "GET {path} answered {}: {}",
        answer.status,
        answer.text
    );
    Ok(answer.body)
}

/// Reads everything.
pub async fn fetch(api: &Api) -> Result<ApiState> {
    let mut state = ApiState::default();
    for user in items(&get(api, "/api/users").await?)? {
        state.users.insert(id(user)?, user.clone());
    }
    for server in items(&get(api, "/api/mcp-servers").await?)? {
        let name = server["name"]
            .as_str()
            .ok_or_else(|| anyhow!("server without a name: {server}"))?;
        state.servers.insert(name.to_owned(), server.clone());
    }
    for rule in items(&get(api, "/api/access-rules").await?)? {
        state.rules.insert(id(rule)?, rule.clone());
    }
    let mut offset = 0;
    loop {
        let path = format!("/api/admin-api-keys?include=revoked&limit=1000&offset={offset}");
        let body = get(api, &path).await?;
        let page = items(&body)?;
        for key in page {
            state.keys.insert(id(key)?, key.clone());
        }
        if page.len() < 1000 {
            break;
        }
        offset += page.len();
    }
    Ok(state)
}

/// Differences between the state before a crash and after the restart:
/// every record the same, except that a key's `lastUsedAt` may only move
/// forward (usage reported meanwhile) and an active key may have expired.
pub fn lost_or_changed(before: &ApiState, after: &ApiState) -> Vec<String> {
    let mut problems = Vec::new();
    let mut same = |what: &str, a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>| {
        for (id, record) in a {
            match b.get(id) {
                None => problems.push(format!("{what} {id} lost: {record}")),
                Some(other) if other != record => {
                    problems.push(format!("{what} {id} changed: {record} -> {other}"))
                }
                Some(_) => {}
            }
        }
        for id in b.keys().filter(|id| !a.contains_key(*id)) {
            problems.push(format!("{what} {id} appeared"));
        }
    };
    let by_string = |m: &BTreeMap<i64, Value>| -> BTreeMap<String, Value> {
        m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    };
    same("user", &by_string(&before.users), &by_string(&after.users));
    same("server", &before.servers, &after.servers);
    same("rule", &by_string(&before.rules), &by_string(&after.rules));
    let without_use = |m: &BTreeMap<i64, Value>| -> BTreeMap<String, Value> {
        m.iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("lastUsedAt");
                    // `expired` is computed from the clock, not stored.
                    if o.get("status").is_some_and(|s| s == "expired") {
                        o.insert("status".into(), Value::from("active"));
                    }
                }
                (k.to_string(), v)
            })
            .collect()
    };
    same("key", &without_use(&before.keys), &without_use(&after.keys));
    for (id, key) in &before.keys {
        let was = key["lastUsedAt"].as_str().unwrap_or_default();
        let now = after
            .keys
            .get(id)
            .map(|k| k["lastUsedAt"].as_str().unwrap_or_default());
        // RFC 3339 UTC strings of one format compare in time order.
        if let Some(now) = now
            && now < was
        {
            problems.push(format!(
                "key {id}: lastUsedAt went back from {was} to {now}"
            ));
        }
    }
    problems
}

fn unix(text: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp() as f64)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Makes the model what `state` says (tokens are kept: lists never show them).
pub fn apply(model: &mut super::model::Model, state: &ApiState) -> Result<()> {
    model.users = state
        .users
        .iter()
        .map(|(id, u)| {
            let suspended = !u["suspendedAt"].is_null();
            (*id, User { suspended })
        })
        .collect();
    model.servers = state.servers.keys().cloned().collect();
    model.rules.clear();
    for (id, r) in &state.rules {
        let subjects = strings(&r["subjects"]);
        let everyone = subjects.iter().any(|s| s == "*");
        let ids: BTreeSet<i64> = subjects
            .iter()
            .filter_map(|s| s.strip_prefix("user:")?.parse().ok())
            .collect();
        let rule = Rule {
            servers: Servers::from_list(&strings(&r["mcpServerIds"])),
            subjects: ids,
            everyone,
        };
        model.rules.insert(*id, rule);
    }
    for (id, k) in &state.keys {
        let user_id = k["userId"]
            .as_i64()
            .with_context(|| format!("key without userId: {k}"))?;
        let status = k["status"].as_str().unwrap_or_default();
        let token = model.keys.get(id).and_then(|old| old.token.clone());
        let key = Key {
            user_id,
            token,
            scope: Servers::from_list(&strings(&k["mcpServerIds"])),
            expires_at: k["expiresAt"].as_str().and_then(unix),
            disabled: status == "disabled",
            revoked: status == "revoked",
        };
        model.keys.insert(*id, key);
    }
    for (id, key) in model.keys.iter_mut() {
        if !state.keys.contains_key(id) {
            key.revoked = true;
        }
    }
    Ok(())
}

/// Reads the API until it answers (up to a minute) and replaces the model
/// with it; ends every change whose answer was lost, as a change touching
/// everything that returns now.
pub async fn resync(shared: &Shared, api: &Api) {
    let started = std::time::Instant::now();
    loop {
        match fetch(api).await {
            Ok(state) => {
                let mut oracle = lock(shared);
                if let Err(e) = apply(&mut oracle.model, &state) {
                    eprintln!("soak: resync could not read the API's state: {e:#}");
                }
                let now = unix_now();
                let pending = std::mem::take(&mut oracle.pending_unknown);
                for id in pending {
                    oracle.end_change(id, now, &[Touch::All]);
                }
                oracle.counts.resyncs += 1;
                return;
            }
            Err(e) if started.elapsed() > Duration::from_secs(60) => {
                eprintln!("soak: the API did not answer for a minute: {e:#}");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
