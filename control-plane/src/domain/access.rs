//! Who reaches which MCP servers: the one definition of a user's access and
//! of a key's effective servers, as pure functions over loaded access rules.
//!
//! Key creation, feed deltas and full snapshots all decide through
//! [`access_of`] and [`effective`]; the database code only loads rules. If
//! two paths decided separately, a key's scope at the edge could depend on
//! whether it arrived in a snapshot or in a delta.

use super::Subjects;
use keygate_protocol::ServerScope;
use std::collections::BTreeSet;

/// One access rule as stored: which servers, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub servers: ServerScope,
    pub subjects: Subjects,
}

impl AccessRule {
    /// `subjects` in any order: they are sorted here for [`Self::applies_to`].
    pub fn new(servers: ServerScope, subjects: Subjects) -> Self {
        let subjects = match subjects {
            Subjects::Users(mut ids) => {
                ids.sort_unstable();
                ids.dedup();
                Subjects::Users(ids)
            }
            everyone => everyone,
        };
        Self { servers, subjects }
    }

    /// Whether this rule grants anything to `user_id`. A `group:` subject,
    /// when it comes, is one more arm here.
    pub fn applies_to(&self, user_id: i64) -> bool {
        match &self.subjects {
            Subjects::Everyone => true,
            Subjects::Users(ids) => ids.binary_search(&user_id).is_ok(),
        }
    }
}

/// The servers `user_id` can reach: the union of the servers of every rule
/// that applies to them; all servers (now and later) as soon as one such
/// rule grants all. No rule, no server.
pub fn access_of<'a>(rules: impl IntoIterator<Item = &'a AccessRule>, user_id: i64) -> ServerScope {
    let mut names = BTreeSet::new();
    for rule in rules.into_iter().filter(|r| r.applies_to(user_id)) {
        match &rule.servers {
            ServerScope::All => return ServerScope::All,
            ServerScope::Named(servers) => names.extend(servers.iter().cloned()),
        }
    }
    ServerScope::Named(names.into_iter().collect())
}

/// A key's effective servers: its scope ∩ its owner's access. A `*` key
/// follows its owner's access; a named key keeps only the servers its owner
/// can still reach. Names come out sorted and unique.
pub fn effective(scope: &ServerScope, access: &ServerScope) -> ServerScope {
    match (scope, access) {
        (ServerScope::All, ServerScope::All) => ServerScope::All,
        (ServerScope::All, ServerScope::Named(a)) => sorted(a.iter()),
        (ServerScope::Named(s), ServerScope::All) => sorted(s.iter()),
        (ServerScope::Named(s), ServerScope::Named(a)) => {
            let a: BTreeSet<&String> = a.iter().collect();
            sorted(s.iter().filter(|n| a.contains(n)))
        }
    }
}

fn sorted<'a>(names: impl Iterator<Item = &'a String>) -> ServerScope {
    let set: BTreeSet<&String> = names.collect();
    ServerScope::Named(set.into_iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(v: &[&str]) -> ServerScope {
        ServerScope::Named(v.iter().map(|s| s.to_string()).collect())
    }

    fn users(ids: &[i64]) -> Subjects {
        Subjects::Users(ids.to_vec())
    }

    #[test]
    fn no_rule_reaches_nothing() {
        assert_eq!(access_of(&[], 1), named(&[]));
    }

    #[test]
    fn all_servers_for_everyone() {
        let rules = [AccessRule::new(ServerScope::All, Subjects::Everyone)];
        assert_eq!(access_of(&rules, 1), ServerScope::All);
        assert_eq!(access_of(&rules, 99), ServerScope::All);
    }

    #[test]
    fn all_servers_for_listed_users() {
        let rules = [AccessRule::new(ServerScope::All, users(&[3, 1]))];
        assert_eq!(access_of(&rules, 1), ServerScope::All);
        assert_eq!(access_of(&rules, 3), ServerScope::All);
        assert_eq!(access_of(&rules, 2), named(&[]));
    }

    #[test]
    fn named_servers_for_everyone() {
        let rules = [AccessRule::new(named(&["b", "a"]), Subjects::Everyone)];
        assert_eq!(access_of(&rules, 7), named(&["a", "b"]));
    }

    #[test]
    fn named_servers_for_listed_users() {
        let rules = [AccessRule::new(named(&["a"]), users(&[5]))];
        assert_eq!(access_of(&rules, 5), named(&["a"]));
        assert_eq!(access_of(&rules, 6), named(&[]));
    }

    #[test]
    fn rules_add_up_and_all_wins() {
        let rules = [
            AccessRule::new(named(&["a", "b"]), users(&[1])),
            AccessRule::new(named(&["b", "c"]), Subjects::Everyone),
            AccessRule::new(named(&["d"]), users(&[2])),
        ];
        assert_eq!(access_of(&rules, 1), named(&["a", "b", "c"]));
        assert_eq!(access_of(&rules, 2), named(&["b", "c", "d"]));
        assert_eq!(access_of(&rules, 3), named(&["b", "c"]));
        let mut with_all = rules.to_vec();
        with_all.push(AccessRule::new(ServerScope::All, users(&[3])));
        assert_eq!(access_of(&with_all, 3), ServerScope::All);
        assert_eq!(access_of(&with_all, 1), named(&["a", "b", "c"]));
    }

    #[test]
    fn a_rule_with_no_servers_grants_nothing() {
        let rules = [AccessRule::new(named(&[]), Subjects::Everyone)];
        assert_eq!(access_of(&rules, 1), named(&[]));
    }

    #[test]
    fn effective_is_scope_intersect_access() {
        assert_eq!(
            effective(&ServerScope::All, &ServerScope::All),
            ServerScope::All
        );
        assert_eq!(effective(&ServerScope::All, &named(&["a"])), named(&["a"]));
        assert_eq!(effective(&named(&["a"]), &ServerScope::All), named(&["a"]));
        assert_eq!(
            effective(&named(&["b", "a", "b"]), &named(&["b", "c", "a"])),
            named(&["a", "b"])
        );
        assert!(effective(&named(&["a"]), &named(&[])).is_empty());
    }
}
