//! The churn driver: creates and deletes users, MCP servers, access rules
//! and keys, disables and enables keys, suspends and restores users, at
//! random through the admin API, and keeps the oracle's model in step with
//! the API's answers.
//!
//! Each driver owns a partition (its users, its server names, its rules), so
//! two drivers never race on one record and every answer can be applied to
//! the model in the order it came back. Server changes are seen by every
//! key (the registered list), so they touch everything.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::Shared;
use super::model::{Key, Rule, Servers, User};
use super::oracle::Touch;
use super::rng::Rng;
use crate::api::{Api, Method, id_of};
use crate::unix_now;

/// The change kinds and their weights.
const KINDS: &[(&str, u32)] = &[
    ("key-create", 14),
    ("key-delete", 8),
    ("key-disable", 6),
    ("key-enable", 6),
    ("user-create", 5),
    ("user-delete", 4),
    ("user-suspend", 4),
    ("user-unsuspend", 4),
    ("server-create", 5),
    ("server-delete", 5),
    ("rule-create", 6),
    ("rule-update", 4),
    ("rule-delete", 5),
];

/// One partition's driver.
pub struct Churn {
    pub api: Api,
    pub part: usize,
    /// Server names this partition creates and deletes.
    pub names: Vec<String>,
    pub rng: Rng,
    users: Vec<i64>,
    rules: Vec<i64>,
    counter: u64,
    /// The body of the last change answered 2xx (new records' ids).
    last_body: Value,
}

/// How a change call ended.
enum Outcome {
    /// 2xx: applied to the model.
    Done,
    /// 4xx: the API refused it; nothing changed.
    Refused,
    /// Transport error or 5xx: unknown whether it committed.
    Unknown,
    /// Nothing to act on: nothing sent.
    Skipped,
}

impl Churn {
    pub fn new(api: Api, part: usize, names: Vec<String>, seed: u64) -> Self {
        Self {
            api,
            part,
            names,
            rng: Rng::new(seed),
            users: Vec::new(),
            rules: Vec::new(),
            counter: 0,
            last_body: Value::Null,
        }
    }

    /// Runs until `shared.stop`; waits while `shared.pause` is set.
    pub async fn run(mut self, shared: Arc<Shared>) {
        while !shared.stop.load(Ordering::SeqCst) {
            if shared.pause.load(Ordering::SeqCst) {
                self.idle(&shared);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            self.busy(&shared, true);
            let kind = self.pick_kind();
            let unknown = matches!(self.change(&shared, kind).await, Outcome::Unknown);
            self.busy(&shared, false);
            if unknown {
                // Learn what the API holds now before changing anything else.
                super::state::resync(&shared, &self.api).await;
            }
            if let Some(pace) = shared.churn_pace {
                tokio::time::sleep(pace).await;
            }
        }
        self.idle(&shared);
    }

    fn busy(&self, shared: &Shared, busy: bool) {
        shared.churn_busy[self.part].store(busy, Ordering::SeqCst);
    }

    fn idle(&self, shared: &Shared) {
        self.busy(shared, false);
    }

    fn pick_kind(&mut self) -> &'static str {
        let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total as usize) as u32;
        for (kind, weight) in KINDS {
            if roll < *weight {
                return kind;
            }
            roll -= weight;
        }
        KINDS[0].0
    }

    fn unique(&mut self, label: &str) -> String {
        self.counter += 1;
        format!("soak-{label}-{}-{}", self.part, self.counter)
    }

    /// Sends one API call as a change touching `touches`, applies `apply`
    /// to the model on 2xx (returning more touches), and counts it.
    // One change: what it is, the call, what it touches, how the model follows.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        shared: &Shared,
        kind: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
        touches: Vec<Touch>,
        apply: impl FnOnce(&mut super::model::Model, &Value) -> Vec<Touch>,
    ) -> Outcome {
        let id = lock(shared).begin_change(unix_now(), touches);
        let answer = self.api.call(method, path, body.as_ref()).await;
        let mut oracle = lock(shared);
        match answer {
            Ok(answer) if answer.status.is_success() => {
                let more = apply(&mut oracle.model, &answer.body);
                oracle.end_change(id, unix_now(), &more);
                oracle.count_change(kind, true);
                self.last_body = answer.body;
                Outcome::Done
            }
            Ok(answer) if answer.status.is_client_error() => {
                oracle.end_change(id, unix_now(), &[]);
                oracle.count_change(kind, false);
                if oracle.counts.refusal_examples.len() < 20 {
                    oracle
                        .counts
                        .refusal_examples
                        .push(format!("{kind} {path} {}: {}", answer.status, answer.text));
                }
                Outcome::Refused
            }
            _ => {
                // Left in flight: the resync that follows ends it.
                oracle.counts.change_errors += 1;
                oracle.pending_unknown.push(id);
                Outcome::Unknown
            }
        }
    }

    async fn change(&mut self, shared: &Shared, kind: &'static str) -> Outcome {
        let now = unix_now();
        // Population floors and ceilings keep every kind possible.
        let (my_users, my_servers, my_keys) = {
            let oracle = lock(shared);
            let model = &oracle.model;
            self.users.retain(|u| model.users.contains_key(u));
            self.rules.retain(|r| model.rules.contains_key(r));
            let servers: Vec<String> = self
                .names
                .iter()
                .filter(|n| model.servers.contains(*n))
                .cloned()
                .collect();
            let keys: Vec<(i64, Key)> = model
                .keys
                .iter()
                .filter(|(_, k)| !k.revoked && self.users.contains(&k.user_id))
                .map(|(id, k)| (*id, k.clone()))
                .collect();
            (self.users.clone(), servers, keys)
        };
        let kind = match kind {
            "key-create" | "rule-create" | "rule-update" if my_users.is_empty() => "user-create",
            "user-delete" | "user-suspend" if my_users.len() < 4 => "user-create",
            "user-create" if my_users.len() > 30 => "user-delete",
            "server-delete" if my_servers.len() < 2 => "server-create",
            "server-create" if my_servers.len() == self.names.len() => "server-delete",
            "key-delete" | "key-disable" | "key-enable" if my_keys.len() < 10 => "key-create",
            "key-create" if my_keys.len() > 60 => "key-delete",
            "rule-delete" | "rule-update" if self.rules.len() < 3 => "rule-create",
            "rule-create" if self.rules.len() > 12 => "rule-delete",
            k => k,
        };
        match kind {
            "user-create" => {
                let name = self.unique("user");
                let body = json!({"username": name, "email": format!("{name}@example.test"), "role": "user"});
                let outcome = self
                    .send(
                        shared,
                        kind,
                        Method::POST,
                        "/api/users",
                        Some(body),
                        vec![],
                        |m, b| match id_of(b) {
                            Ok(id) => {
                                m.users.insert(id, User { suspended: false });
                                vec![Touch::User(id)]
                            }
                            Err(_) => vec![Touch::All],
                        },
                    )
                    .await;
                if matches!(outcome, Outcome::Done)
                    && let Ok(id) = id_of(&self.last_body)
                {
                    self.users.push(id);
                }
                outcome
            }
            "user-delete" => {
                let Some(&user) = self.rng.pick(&my_users) else {
                    return Outcome::Skipped;
                };
                let path = format!("/api/users/{user}");
                self.send(
                    shared,
                    kind,
                    Method::DELETE,
                    &path,
                    None,
                    vec![Touch::User(user)],
                    |m, _| {
                        m.delete_user(user);
                        vec![]
                    },
                )
                .await
            }
            "user-suspend" | "user-unsuspend" => {
                let Some(&user) = self.rng.pick(&my_users) else {
                    return Outcome::Skipped;
                };
                let suspend = kind == "user-suspend";
                let verb = if suspend { "suspend" } else { "unsuspend" };
                let path = format!("/api/users/{user}/{verb}");
                self.send(
                    shared,
                    kind,
                    Method::POST,
                    &path,
                    None,
                    vec![Touch::User(user)],
                    |m, _| {
                        if let Some(u) = m.users.get_mut(&user) {
                            u.suspended = suspend;
                        }
                        vec![]
                    },
                )
                .await
            }
            "server-create" => {
                let free: Vec<String> = self
                    .names
                    .iter()
                    .filter(|n| !my_servers.contains(n))
                    .cloned()
                    .collect();
                let Some(name) = self.rng.pick(&free).cloned() else {
                    return Outcome::Skipped;
                };
                let body = json!({"name": name, "displayName": format!("Soak {name}")});
                self.send(
                    shared,
                    kind,
                    Method::POST,
                    "/api/mcp-servers",
                    Some(body),
                    vec![Touch::Server(name.clone())],
                    |m, _| {
                        m.servers.insert(name.clone());
                        vec![]
                    },
                )
                .await
            }
            "server-delete" => {
                let Some(name) = self.rng.pick(&my_servers).cloned() else {
                    return Outcome::Skipped;
                };
                let path = format!("/api/mcp-servers/{name}");
                self.send(
                    shared,
                    kind,
                    Method::DELETE,
                    &path,
                    None,
                    vec![Touch::Server(name.clone())],
                    |m, _| {
                        m.delete_server(&name);
                        vec![]
                    },
                )
                .await
            }
            "rule-create" | "rule-update" => {
                let servers = self.some_servers(&my_servers, 10);
                let subjects = self.some_users(&my_users);
                if subjects.is_empty() || servers.to_list().is_empty() {
                    return Outcome::Skipped;
                }
                let mut touches: Vec<Touch> = subjects.iter().map(|u| Touch::User(*u)).collect();
                let subject_list: Vec<String> =
                    subjects.iter().map(|u| format!("user:{u}")).collect();
                let name = self.unique("rule");
                let body = json!({"name": name, "mcpServerIds": servers.to_list(), "subjects": subject_list});
                let rule = Rule {
                    servers,
                    subjects: subjects.clone(),
                    everyone: false,
                };
                if kind == "rule-create" {
                    let outcome = self
                        .send(
                            shared,
                            kind,
                            Method::POST,
                            "/api/access-rules",
                            Some(body),
                            touches,
                            |m, b| {
                                if let Ok(id) = id_of(b) {
                                    m.rules.insert(id, rule);
                                }
                                vec![]
                            },
                        )
                        .await;
                    if matches!(outcome, Outcome::Done)
                        && let Ok(id) = id_of(&self.last_body)
                    {
                        self.rules.push(id);
                    }
                    outcome
                } else {
                    let Some(&rule_id) = self.rng.pick(&self.rules.clone()) else {
                        return Outcome::Skipped;
                    };
                    if let Some(old) = lock(shared).model.rules.get(&rule_id) {
                        touches.extend(old.subjects.iter().map(|u| Touch::User(*u)));
                    }
                    let path = format!("/api/access-rules/{rule_id}");
                    self.send(
                        shared,
                        kind,
                        Method::PUT,
                        &path,
                        Some(body),
                        touches,
                        |m, _| {
                            m.rules.insert(rule_id, rule);
                            vec![]
                        },
                    )
                    .await
                }
            }
            "rule-delete" => {
                let Some(&rule_id) = self.rng.pick(&self.rules.clone()) else {
                    return Outcome::Skipped;
                };
                let touches: Vec<Touch> = lock(shared)
                    .model
                    .rules
                    .get(&rule_id)
                    .map(|r| r.subjects.iter().map(|u| Touch::User(*u)).collect())
                    .unwrap_or_default();
                let path = format!("/api/access-rules/{rule_id}");
                self.send(
                    shared,
                    kind,
                    Method::DELETE,
                    &path,
                    None,
                    touches,
                    |m, _| {
                        m.rules.remove(&rule_id);
                        vec![]
                    },
                )
                .await
            }
            "key-create" => {
                let Some(&user) = self.rng.pick(&my_users) else {
                    return Outcome::Skipped;
                };
                let reach: Vec<String> = {
                    let oracle = lock(shared);
                    oracle
                        .model
                        .access(user)
                        .into_iter()
                        .filter(|s| self.names.contains(s))
                        .collect()
                };
                let scope = if reach.is_empty() || self.rng.chance(25) {
                    Servers::All
                } else {
                    let mut names = BTreeSet::new();
                    for _ in 0..=self.rng.below(2) {
                        if let Some(s) = self.rng.pick(&reach) {
                            names.insert(s.clone());
                        }
                    }
                    Servers::Named(names)
                };
                // Short expiries, so keys expire while the soak watches.
                let expires_at = self
                    .rng
                    .chance(30)
                    .then(|| (now as i64) + 5 + self.rng.below(40) as i64);
                let mut body = json!({
                    "userId": user,
                    "name": self.unique("key"),
                    "mcpServerIds": scope.to_list(),
                });
                if let Some(at) = expires_at {
                    body["expiresAt"] = json!(crate::rfc3339(at));
                }
                self.send(
                    shared,
                    kind,
                    Method::POST,
                    "/api/admin-api-keys",
                    Some(body),
                    vec![Touch::User(user)],
                    |m, b| {
                        let Ok(id) = id_of(b) else {
                            return vec![Touch::All];
                        };
                        m.keys.insert(
                            id,
                            Key {
                                user_id: user,
                                token: b["key"].as_str().map(str::to_owned),
                                scope,
                                expires_at: expires_at.map(|at| at as f64),
                                disabled: false,
                                revoked: false,
                            },
                        );
                        vec![Touch::Key(id)]
                    },
                )
                .await
            }
            "key-delete" | "key-disable" | "key-enable" => {
                let Some((key_id, _)) = self.rng.pick(&my_keys).cloned() else {
                    return Outcome::Skipped;
                };
                let path = format!("/api/admin-api-keys/{key_id}");
                let touches = vec![Touch::Key(key_id)];
                if kind == "key-delete" {
                    self.send(
                        shared,
                        kind,
                        Method::DELETE,
                        &path,
                        None,
                        touches,
                        |m, _| {
                            if let Some(k) = m.keys.get_mut(&key_id) {
                                k.revoked = true;
                            }
                            vec![]
                        },
                    )
                    .await
                } else {
                    let enabled = kind == "key-enable";
                    let body = json!({ "enabled": enabled });
                    self.send(
                        shared,
                        kind,
                        Method::PATCH,
                        &path,
                        Some(body),
                        touches,
                        |m, _| {
                            if let Some(k) = m.keys.get_mut(&key_id) {
                                k.disabled = !enabled;
                            }
                            vec![]
                        },
                    )
                    .await
                }
            }
            _ => Outcome::Skipped,
        }
    }

    fn some_servers(&mut self, registered: &[String], all_percent: usize) -> Servers {
        if self.rng.chance(all_percent) {
            return Servers::All;
        }
        let mut names = BTreeSet::new();
        for _ in 0..=self.rng.below(3) {
            if let Some(s) = self.rng.pick(registered) {
                names.insert(s.clone());
            }
        }
        Servers::Named(names)
    }

    fn some_users(&mut self, users: &[i64]) -> BTreeSet<i64> {
        let mut chosen = BTreeSet::new();
        for _ in 0..=self.rng.below(3) {
            if let Some(u) = self.rng.pick(users) {
                chosen.insert(*u);
            }
        }
        chosen
    }
}

pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, super::oracle::Oracle> {
    shared.oracle.lock().unwrap_or_else(|e| e.into_inner())
}
