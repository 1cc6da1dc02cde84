//! The oracle's own model of what the control plane holds (users, MCP
//! servers, access rules, keys), kept from the API's answers, and the edge
//! decision it implies for one request.
//!
//! Written from the documented rules (docs/filter.md, *Decisions*;
//! docs/control-plane.md, access rules and keys), not from the filter's or
//! the control plane's code: a shared bug would otherwise agree with itself.

use std::collections::{BTreeMap, BTreeSet};

/// A set of MCP server names, or every server (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    All,
    Named(BTreeSet<String>),
}

impl Servers {
    /// Reads an API `mcpServerIds` list (`["*"]` or names).
    pub fn from_list(names: &[String]) -> Self {
        if names.iter().any(|n| n == "*") {
            Servers::All
        } else {
            Servers::Named(names.iter().cloned().collect())
        }
    }

    /// The API spelling of this set.
    pub fn to_list(&self) -> Vec<String> {
        match self {
            Servers::All => vec!["*".to_owned()],
            Servers::Named(names) => names.iter().cloned().collect(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            Servers::All => true,
            Servers::Named(names) => names.contains(name),
        }
    }

    fn forget(&mut self, name: &str) {
        if let Servers::Named(names) = self {
            names.remove(name);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub servers: Servers,
    /// User ids; `everyone` stands for the `*` subject.
    pub subjects: BTreeSet<i64>,
    pub everyone: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub user_id: i64,
    /// The whole `ok1-…` key as issued; `None` for a key whose creation
    /// answer was lost (a crash mid-write): it exists but is never sent.
    pub token: Option<String>,
    pub scope: Servers,
    /// Unix seconds.
    pub expires_at: Option<f64>,
    pub disabled: bool,
    /// Deleted (revoked), or its owner was deleted.
    pub revoked: bool,
}

/// What a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// No `Authorization`, or a credential that is not an ok1 key.
    None,
    /// Starts with `ok1-` but is not a key in a form the edge accepts.
    Malformed,
    /// A well-formed key: the ids it claims and whether its secret is the
    /// one issued for `key_id`.
    WellFormed {
        user_id: i64,
        key_id: i64,
        secret_matches: bool,
    },
}

/// The whole model.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub users: BTreeMap<i64, User>,
    pub servers: BTreeSet<String>,
    pub rules: BTreeMap<i64, Rule>,
    pub keys: BTreeMap<i64, Key>,
}

/// Edge answers the oracle predicts.
pub const ALLOWED_ROUTED: u16 = 200;
/// An allowed request for a name Envoy has no route for: Envoy's own 404
/// (the soak's bootstrap answers unrouted `/mcp-connect/` names itself).
pub const ALLOWED_UNROUTED: u16 = 404;
pub const UNAUTHENTICATED: u16 = 401;
pub const FORBIDDEN: u16 = 403;
pub const STALE: u16 = 503;

impl Model {
    /// Servers `user_id` reaches through access rules, among the registered.
    pub fn access(&self, user_id: i64) -> BTreeSet<String> {
        let mut reach = BTreeSet::new();
        for rule in self.rules.values() {
            if !(rule.everyone || rule.subjects.contains(&user_id)) {
                continue;
            }
            match &rule.servers {
                Servers::All => reach.extend(self.servers.iter().cloned()),
                Servers::Named(names) => {
                    reach.extend(names.iter().filter(|n| self.servers.contains(*n)).cloned())
                }
            }
        }
        reach
    }

    /// A key's effective servers: its scope ∩ its owner's access.
    pub fn effective(&self, key: &Key) -> BTreeSet<String> {
        self.access(key.user_id)
            .into_iter()
            .filter(|s| key.scope.contains(s))
            .collect()
    }

    /// The edge's decision for `credential` on `/mcp-connect/<server>/mcp`
    /// at unix time `now`, with a fresh table; `routed`: Envoy has a route
    /// for `server`.
    pub fn decide(&self, credential: &Credential, server: &str, routed: bool, now: f64) -> u16 {
        let (user_id, key_id, secret_matches) = match credential {
            Credential::None | Credential::Malformed => return UNAUTHENTICATED,
            Credential::WellFormed {
                user_id,
                key_id,
                secret_matches,
            } => (*user_id, *key_id, *secret_matches),
        };
        let Some(key) = self.keys.get(&key_id) else {
            return UNAUTHENTICATED;
        };
        let owner_active = self.users.get(&key.user_id).is_some_and(|u| !u.suspended);
        if key.revoked || key.disabled || !owner_active || !secret_matches {
            return UNAUTHENTICATED;
        }
        if user_id != key.user_id || key.expires_at.is_some_and(|at| now >= at) {
            return UNAUTHENTICATED;
        }
        if !self.servers.contains(server) || !self.effective(key).contains(server) {
            return FORBIDDEN;
        }
        if routed {
            ALLOWED_ROUTED
        } else {
            ALLOWED_UNROUTED
        }
    }

    /// A server was deleted: it leaves every key scope and every rule.
    pub fn delete_server(&mut self, name: &str) {
        self.servers.remove(name);
        for key in self.keys.values_mut() {
            key.scope.forget(name);
        }
        for rule in self.rules.values_mut() {
            rule.servers.forget(name);
        }
    }

    /// A user was deleted: their keys are revoked, rules forget them.
    pub fn delete_user(&mut self, user_id: i64) {
        self.users.remove(&user_id);
        for key in self.keys.values_mut().filter(|k| k.user_id == user_id) {
            key.revoked = true;
        }
        for rule in self.rules.values_mut() {
            rule.subjects.remove(&user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn model() -> Model {
        let mut m = Model::default();
        m.users.insert(1, User { suspended: false });
        m.servers = names(&["a", "b", "c"]);
        m.rules.insert(
            1,
            Rule {
                servers: Servers::Named(names(&["a", "b"])),
                subjects: [1].into(),
                everyone: false,
            },
        );
        m.keys.insert(
            10,
            Key {
                user_id: 1,
                token: Some("t".into()),
                scope: Servers::Named(names(&["a", "c"])),
                expires_at: None,
                disabled: false,
                revoked: false,
            },
        );
        m
    }

    fn good() -> Credential {
        Credential::WellFormed {
            user_id: 1,
            key_id: 10,
            secret_matches: true,
        }
    }

    #[test]
    fn scope_meets_access() {
        let m = model();
        assert_eq!(m.decide(&good(), "a", true, 0.0), 200);
        assert_eq!(m.decide(&good(), "a", false, 0.0), 404);
        // In scope, not reachable; reachable, not in scope; not registered.
        assert_eq!(m.decide(&good(), "c", true, 0.0), 403);
        assert_eq!(m.decide(&good(), "b", true, 0.0), 403);
        assert_eq!(m.decide(&good(), "zz", true, 0.0), 403);
    }

    #[test]
    fn every_refusal_of_the_key_itself_is_401() {
        let mut m = model();
        let bad = [
            Credential::None,
            Credential::Malformed,
            Credential::WellFormed {
                user_id: 1,
                key_id: 10,
                secret_matches: false,
            },
            Credential::WellFormed {
                user_id: 2,
                key_id: 10,
                secret_matches: true,
            },
            Credential::WellFormed {
                user_id: 1,
                key_id: 99,
                secret_matches: true,
            },
        ];
        for credential in &bad {
            assert_eq!(m.decide(credential, "a", true, 0.0), 401, "{credential:?}");
        }
        m.keys.get_mut(&10).unwrap().expires_at = Some(100.0);
        assert_eq!(m.decide(&good(), "a", true, 99.5), 200);
        assert_eq!(m.decide(&good(), "a", true, 100.0), 401);
        m.keys.get_mut(&10).unwrap().expires_at = None;
        m.users.get_mut(&1).unwrap().suspended = true;
        assert_eq!(m.decide(&good(), "a", true, 0.0), 401);
        m.users.get_mut(&1).unwrap().suspended = false;
        m.keys.get_mut(&10).unwrap().disabled = true;
        assert_eq!(m.decide(&good(), "a", true, 0.0), 401);
    }

    #[test]
    fn a_deleted_server_leaves_scopes_and_does_not_come_back() {
        let mut m = model();
        m.delete_server("a");
        assert_eq!(m.decide(&good(), "a", true, 0.0), 403);
        m.servers.insert("a".into());
        assert_eq!(m.decide(&good(), "a", true, 0.0), 403);
    }

    #[test]
    fn star_scopes_and_rules_follow_the_registered_servers() {
        let mut m = model();
        m.keys.get_mut(&10).unwrap().scope = Servers::All;
        m.rules.get_mut(&1).unwrap().servers = Servers::All;
        assert_eq!(m.decide(&good(), "c", true, 0.0), 200);
        m.servers.insert("d".into());
        assert_eq!(m.decide(&good(), "d", true, 0.0), 200);
        m.delete_user(1);
        assert_eq!(m.decide(&good(), "d", true, 0.0), 401);
    }
}
