//! The decision table (docs/filter.md): what happens to one request, given its
//! method, path and headers, the time, and the key table. Pure: no host calls.

use crate::config::Config;
use crate::keys::{Presented, find_key};
use crate::path::{PathClass, classify};
use crate::request_headers::RequestHeaders;
use keygate_protocol::bearer::{CHALLENGE, CHALLENGE_INSUFFICIENT_SCOPE, CHALLENGE_INVALID_TOKEN};
use keygate_protocol::{ApiKeyToken, KeyEntry, SecretMatch, secret};
use std::rc::Rc;

/// The table as a request sees it: one freshness read and one entry read.
pub trait KeyLookup {
    /// Unix seconds of the last successful sync, or `None` before the first.
    fn last_sync_unix(&self) -> Option<i64>;
    /// The live entry for `key_id`, if the table has one; shared with the
    /// VM's cache, so a request copies nothing.
    fn entry(&self, key_id: i64) -> Option<Rc<KeyEntry>>;
    /// Whether `server` is registered at the control plane. True for every
    /// name while the table carries no set (an older control plane).
    fn server_registered(&self, server: &str) -> bool;
}

/// The parts of a request the decision reads.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Lowercase names, raw values.
    pub headers: &'a RequestHeaders,
}

/// Why a request was decided the way it was: a metric label, never shown to
/// the client (the client sees only a generic message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Allowed,
    MeAllowed,
    NoKeyPassed,
    MissingKey,
    Malformed,
    ConflictingKeys,
    UnknownKey,
    BadSecret,
    UserMismatch,
    Expired,
    OutOfScope,
    KeyOffRoute,
    BadPath,
    NoTable,
    StaleTable,
    /// A valid key on a server name the control plane has not registered.
    UnregisteredServer,
}

/// The three ways a request can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Pass,
    Deny,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::Allowed,
        Reason::MeAllowed,
        Reason::NoKeyPassed,
        Reason::MissingKey,
        Reason::Malformed,
        Reason::ConflictingKeys,
        Reason::UnknownKey,
        Reason::BadSecret,
        Reason::UserMismatch,
        Reason::Expired,
        Reason::OutOfScope,
        Reason::KeyOffRoute,
        Reason::BadPath,
        Reason::NoTable,
        Reason::StaleTable,
        Reason::UnregisteredServer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::MeAllowed => "me_allowed",
            Reason::NoKeyPassed => "no_key_passed",
            Reason::MissingKey => "missing_key",
            Reason::Malformed => "malformed",
            Reason::ConflictingKeys => "conflicting_keys",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSecret => "bad_secret",
            Reason::UserMismatch => "user_mismatch",
            Reason::Expired => "expired",
            Reason::OutOfScope => "out_of_scope",
            Reason::KeyOffRoute => "key_off_route",
            Reason::BadPath => "bad_path",
            Reason::NoTable => "no_table",
            Reason::StaleTable => "stale_table",
            Reason::UnregisteredServer => "unregistered_server",
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Reason::Allowed | Reason::MeAllowed => Outcome::Allow,
            Reason::NoKeyPassed => Outcome::Pass,
            _ => Outcome::Deny,
        }
    }

    /// Position in [`Reason::ALL`], which lists the variants in declaration
    /// order (a unit test holds the two together).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Pass => "pass",
            Outcome::Deny => "deny",
        }
    }
}

/// A request the filter lets through with an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub user_id: i64,
    pub key_id: i64,
    /// The MCP server, for protected paths; `None` for `/api/me`.
    pub server: Option<String>,
    /// Remove the key headers before the upstream.
    pub strip_key: bool,
    pub reason: Reason,
    /// The key's previous secret opened it (a rotation's overlap): the
    /// usage report says so, so people see whether the old secret is still
    /// in use before it stops.
    pub previous_secret: bool,
}

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub status: u32,
    pub www_authenticate: Option<&'static str>,
    pub retry_after_seconds: Option<u64>,
    /// Generic JSON body; names no key, user or reason detail.
    pub body: &'static str,
    pub reason: Reason,
    /// The key id a well-formed key claimed (whether or not the table knows
    /// it), for the operator's access log; never shown to the client.
    pub key_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    /// No ok1 key on a path that needs none: untouched (apart from the
    /// `x-keygate-*` scrub the adapter does on every request).
    Pass,
    Deny(Deny),
}

impl Decision {
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Allow(a) => a.reason,
            Decision::Pass => Reason::NoKeyPassed,
            Decision::Deny(d) => d.reason,
        }
    }

    /// The ids this decision names, as decimal text written into the two
    /// buffers: formatted once per request, then lent to the access-log
    /// properties and the identity headers alike.
    pub fn id_text<'b>(
        &self,
        user_id: &'b mut itoa::Buffer,
        key_id: &'b mut itoa::Buffer,
    ) -> IdText<'b> {
        let (user, key) = match self {
            Decision::Allow(a) => (Some(a.user_id), Some(a.key_id)),
            Decision::Deny(d) => (None, d.key_id),
            Decision::Pass => (None, None),
        };
        IdText {
            user_id: user.map(|id| user_id.format(id)),
            key_id: key.map(|id| key_id.format(id)),
        }
    }
}

/// A decision's user and key ids as text ([`Decision::id_text`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdText<'a> {
    pub user_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
}

fn deny(reason: Reason) -> Decision {
    Decision::Deny(denial(reason))
}

/// The 503 every request gets while keys cannot be checked: a stale or
/// missing table, and the adapter's own failures (no configuration, a header
/// map it cannot read or edit), so clients see one answer for "try later".
pub fn unavailable() -> Deny {
    denial(Reason::NoTable)
}

/// The local reply for a deny reason.
fn denial(reason: Reason) -> Deny {
    let (status, www, body) = match reason {
        Reason::MissingKey => (401, Some(CHALLENGE), r#"{"error":"API key required"}"#),
        Reason::Malformed
        | Reason::ConflictingKeys
        | Reason::UnknownKey
        | Reason::BadSecret
        | Reason::UserMismatch
        | Reason::Expired => (
            401,
            Some(CHALLENGE_INVALID_TOKEN),
            r#"{"error":"invalid API key"}"#,
        ),
        // An unregistered server gets the out-of-scope answer, so a key
        // cannot tell which names outside its scope are registered.
        Reason::OutOfScope | Reason::UnregisteredServer => (
            403,
            Some(CHALLENGE_INSUFFICIENT_SCOPE),
            r#"{"error":"API key not valid for this server"}"#,
        ),
        Reason::KeyOffRoute => (
            403,
            None,
            r#"{"error":"API keys are not accepted on this path"}"#,
        ),
        Reason::BadPath => (400, None, r#"{"error":"bad request path"}"#),
        Reason::NoTable | Reason::StaleTable => (
            503,
            None,
            r#"{"error":"key validation temporarily unavailable"}"#,
        ),
        // Not deny reasons; kept total so a wrong call is still a denial.
        Reason::Allowed | Reason::MeAllowed | Reason::NoKeyPassed => {
            (403, None, r#"{"error":"forbidden"}"#)
        }
    };
    let retry_after_seconds = matches!(reason, Reason::NoTable | Reason::StaleTable).then_some(5);
    Deny {
        status,
        www_authenticate: www,
        retry_after_seconds,
        body,
        reason,
        key_id: None,
    }
}

/// A denial of a request that presented a well-formed key.
fn deny_key(reason: Reason, key_id: i64) -> Decision {
    Decision::Deny(Deny {
        key_id: Some(key_id),
        ..denial(reason)
    })
}

/// Checks a well-formed key against the table. `Ok((entry, previous))` when
/// it is valid now, `previous` telling that the secret a rotation replaced
/// opened it; otherwise the reason it is not.
fn validate_key(
    token: &ApiKeyToken,
    now_unix: i64,
    max_staleness: u64,
    table: &dyn KeyLookup,
) -> Result<(Rc<KeyEntry>, bool), Reason> {
    let last_sync = table.last_sync_unix().ok_or(Reason::NoTable)?;
    let age = now_unix.saturating_sub(last_sync);
    if age > i64::try_from(max_staleness).unwrap_or(i64::MAX) {
        return Err(Reason::StaleTable);
    }
    let entry = table.entry(token.key_id);
    // One hash and two compares whether or not the key id exists and has a
    // previous secret, so timing tells neither; the user id is checked only
    // after the secret, so it is no oracle either.
    let matched = secret::verify_either(
        entry.as_ref().map(|e| &e.secret_hash),
        entry
            .as_ref()
            .and_then(|e| e.previous_secret.as_ref())
            .map(|p| &p.hash),
        &token.secret,
    );
    let entry = entry.ok_or(Reason::UnknownKey)?;
    let previous = match matched {
        SecretMatch::Current => false,
        // The secret a rotation replaced works until its deadline by this
        // edge's own clock: no word from the control plane is needed.
        SecretMatch::Previous
            if entry
                .previous_secret
                .as_ref()
                .is_some_and(|p| p.open_at(now_unix)) =>
        {
            true
        }
        SecretMatch::Previous | SecretMatch::Neither => return Err(Reason::BadSecret),
    };
    if entry.user_id != token.user_id || entry.id != token.key_id {
        return Err(Reason::UserMismatch);
    }
    if entry.expires_at.is_some_and(|exp| now_unix >= exp) {
        return Err(Reason::Expired);
    }
    Ok((entry, previous))
}

/// Decides one request.
pub fn decide(req: &Request<'_>, cfg: &Config, now_unix: i64, table: &dyn KeyLookup) -> Decision {
    let class = classify(req.path, &cfg.protected_path_prefixes, &cfg.me_path);
    if class == PathClass::Bad {
        return deny(Reason::BadPath);
    }
    let presented = find_key(req.headers.iter(), &cfg.key_headers);
    let token = match (&class, presented) {
        (PathClass::Other, p) if p.is_some() => return deny(Reason::KeyOffRoute),
        (PathClass::Me, p) if p.is_some() && req.method != "GET" => {
            return deny(Reason::KeyOffRoute);
        }
        (PathClass::Other | PathClass::Me, Presented::None) => return Decision::Pass,
        (PathClass::Protected { .. }, Presented::None) => return deny(Reason::MissingKey),
        (_, Presented::Malformed) => return deny(Reason::Malformed),
        (_, Presented::Conflict) => return deny(Reason::ConflictingKeys),
        (_, Presented::Key(t)) => t,
        // Bad was handled above; Other/Me with a key are handled by the guards.
        (_, Presented::None) => return Decision::Pass,
    };
    let (entry, previous_secret) =
        match validate_key(&token, now_unix, cfg.max_staleness_seconds, table) {
            Ok(found) => found,
            Err(reason) => return deny_key(reason, token.key_id),
        };
    match class {
        PathClass::Protected { server } => {
            if !entry.servers.contains(server) {
                return deny_key(Reason::OutOfScope, entry.id);
            }
            if !table.server_registered(server) {
                return deny_key(Reason::UnregisteredServer, entry.id);
            }
            Decision::Allow(Allow {
                user_id: entry.user_id,
                key_id: entry.id,
                server: Some(server.to_owned()),
                strip_key: cfg.strip_key,
                reason: Reason::Allowed,
                previous_secret,
            })
        }
        // The control plane authenticates the key again itself, so it keeps it.
        PathClass::Me => Decision::Allow(Allow {
            user_id: entry.user_id,
            key_id: entry.id,
            server: None,
            strip_key: false,
            reason: Reason::MeAllowed,
            previous_secret,
        }),
        PathClass::Other | PathClass::Bad => deny(Reason::KeyOffRoute),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use keygate_protocol::{Secret, ServerScope};
    use std::collections::HashMap;

    const NOW: i64 = 1_800_000_000;

    struct FakeTable {
        last_sync: Option<i64>,
        entries: HashMap<i64, KeyEntry>,
        /// `None`: the table carries no registered set (an older control plane).
        registered: Option<Vec<&'static str>>,
    }

    impl KeyLookup for FakeTable {
        fn last_sync_unix(&self) -> Option<i64> {
            self.last_sync
        }
        fn entry(&self, key_id: i64) -> Option<Rc<KeyEntry>> {
            self.entries.get(&key_id).cloned().map(Rc::new)
        }
        fn server_registered(&self, server: &str) -> bool {
            self.registered
                .as_ref()
                .is_none_or(|names| names.contains(&server))
        }
    }

    fn entry(id: i64, user: i64, fill: u8, servers: ServerScope, exp: Option<i64>) -> KeyEntry {
        KeyEntry {
            id,
            user_id: user,
            secret_hash: Secret::from_bytes([fill; 32]).hash(),
            expires_at: exp,
            servers,
            previous_secret: None,
        }
    }

    fn token(user: i64, key: i64, fill: u8) -> String {
        ApiKeyToken {
            user_id: user,
            key_id: key,
            secret: Secret::from_bytes([fill; 32]),
        }
        .encode()
    }

    fn table() -> FakeTable {
        let mut entries = HashMap::new();
        let named = |n: &[&str]| ServerScope::Named(n.iter().map(|s| s.to_string()).collect());
        entries.insert(1, entry(1, 10, 1, named(&["alpha"]), None));
        entries.insert(2, entry(2, 10, 2, ServerScope::All, None));
        entries.insert(3, entry(3, 10, 3, named(&["alpha"]), Some(NOW)));
        entries.insert(4, entry(4, 10, 4, named(&["alpha"]), Some(NOW + 1)));
        entries.insert(5, entry(5, 10, 5, named(&[]), None));
        FakeTable {
            last_sync: Some(NOW - 1),
            entries,
            registered: None,
        }
    }

    fn cfg() -> Config {
        Config::from_json(
            br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","keyHeaders":["authorization","x-api-key"]}"#,
        )
        .unwrap()
    }

    fn run(method: &str, path: &str, headers: &[(&str, &str)], t: &FakeTable) -> Decision {
        let headers = RequestHeaders::from_pairs(headers).unwrap();
        let req = Request {
            method,
            path,
            headers: &headers,
        };
        decide(&req, &cfg(), NOW, t)
    }

    fn bearer(tok: &str) -> String {
        format!("Bearer {tok}")
    }

    fn status(d: &Decision) -> (u32, Option<&'static str>, Reason) {
        match d {
            Decision::Allow(a) => (200, None, a.reason),
            Decision::Pass => (0, None, Reason::NoKeyPassed),
            Decision::Deny(d) => (d.status, d.www_authenticate, d.reason),
        }
    }

    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, String)>,
        (u32, Option<&'a str>, Reason),
    );

    #[test]
    fn decision_matrix() {
        let t = table();
        let mcp = "/mcp-connect/alpha/mcp";
        let cases: Vec<Case<'_>> = vec![
            (
                "POST",
                mcp,
                vec![("authorization", bearer(&token(10, 1, 1)))],
                (200, None, Reason::Allowed),
            ),
            (
                "POST",
                mcp,
                vec![("x-api-key", token(10, 1, 1))],
                (200, None, Reason::Allowed),
            ),
            (
                "GET",
                "/mcp-connect/beta/mcp",
                vec![("authorization", bearer(&token(10, 2, 2)))],
                (200, None, Reason::Allowed),
            ),
            (
                "POST",
                mcp,
                vec![("authorization", bearer(&token(10, 4, 4)))],
                (200, None, Reason::Allowed),
            ),
            (
                "POST",
                mcp,
                vec![],
                (401, Some(CHALLENGE), Reason::MissingKey),
            ),
            (
                "POST",
                mcp,
                vec![("authorization", "Bearer eyJhbGciOi.x.y".into())],
                (401, Some(CHALLENGE), Reason::MissingKey),
            ),
            (
                "POST",
                mcp,
                vec![("authorization", "Bearer ok1-10-1-xyz".into())],
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::Malformed),
            ),
            (
                "POST",
                mcp,
                vec![("authorization", bearer(&token(10, 99, 1)))],
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::UnknownKey),
            ),
            (
                "POST",
                mcp,
                vec![("authorization", bearer(&token(10, 1, 9)))],
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::BadSecret),
            ),
            (
                "POST",
                mcp,
                vec![("authorization", bearer(&token(11, 1, 1)))],
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::UserMismatch),
            ),
            (
                "POST",
                mcp,
                vec![("authorization", bearer(&token(10, 3, 3)))],
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::Expired),
            ),
            (
                "POST",
                "/mcp-connect/beta/mcp",
                vec![("authorization", bearer(&token(10, 1, 1)))],
                (403, Some(CHALLENGE_INSUFFICIENT_SCOPE), Reason::OutOfScope),
            ),
            (
                "POST",
                mcp,
                vec![("authorization", bearer(&token(10, 5, 5)))],
                (403, Some(CHALLENGE_INSUFFICIENT_SCOPE), Reason::OutOfScope),
            ),
            (
                "POST",
                mcp,
                vec![
                    ("authorization", bearer(&token(10, 1, 1))),
                    ("x-api-key", token(10, 2, 2)),
                ],
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::ConflictingKeys),
            ),
            (
                "GET",
                "/api/me",
                vec![("authorization", bearer(&token(10, 1, 1)))],
                (200, None, Reason::MeAllowed),
            ),
            (
                "GET",
                "/api/me",
                vec![("authorization", bearer(&token(10, 1, 9)))],
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::BadSecret),
            ),
            (
                "GET",
                "/api/me",
                vec![("authorization", "Bearer ok1-bad".into())],
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::Malformed),
            ),
            ("GET", "/api/me", vec![], (0, None, Reason::NoKeyPassed)),
            (
                "GET",
                "/api/me",
                vec![("authorization", "Bearer some.jwt.here".into())],
                (0, None, Reason::NoKeyPassed),
            ),
            (
                "DELETE",
                "/api/me",
                vec![("authorization", bearer(&token(10, 1, 1)))],
                (403, None, Reason::KeyOffRoute),
            ),
            (
                "GET",
                "/api/api-keys",
                vec![("authorization", bearer(&token(10, 1, 1)))],
                (403, None, Reason::KeyOffRoute),
            ),
            (
                "GET",
                "/api/api-keys",
                vec![("authorization", "Bearer ok1-junk".into())],
                (403, None, Reason::KeyOffRoute),
            ),
            (
                "GET",
                "/api/me/",
                vec![("authorization", bearer(&token(10, 1, 1)))],
                (403, None, Reason::KeyOffRoute),
            ),
            (
                "GET",
                "/api/api-keys",
                vec![],
                (0, None, Reason::NoKeyPassed),
            ),
            (
                "GET",
                "/",
                vec![("authorization", "Basic dXNlcjpwYXNz".into())],
                (0, None, Reason::NoKeyPassed),
            ),
            (
                "POST",
                "/mcp-connect/alpha/../beta/mcp",
                vec![("authorization", bearer(&token(10, 1, 1)))],
                (400, None, Reason::BadPath),
            ),
            (
                "POST",
                "/mcp-connect/beta%2f..%2falpha/mcp",
                vec![("authorization", bearer(&token(10, 1, 1)))],
                (400, None, Reason::BadPath),
            ),
            (
                "POST",
                "/MCP-CONNECT/alpha/mcp",
                vec![],
                (400, None, Reason::BadPath),
            ),
        ];
        for (method, path, headers, want) in cases {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let got = run(method, path, &h, &t);
            assert_eq!(status(&got), want, "{method} {path} {headers:?}");
            // Reason and outcome agree with the status class.
            assert_eq!(got.reason().outcome() == Outcome::Allow, want.0 == 200);
        }
    }

    #[test]
    fn allow_carries_identity_and_strip_policy() {
        let t = table();
        let d = run(
            "POST",
            "/mcp-connect/alpha/mcp",
            &[("authorization", &bearer(&token(10, 1, 1)))],
            &t,
        );
        assert_eq!(
            d,
            Decision::Allow(Allow {
                user_id: 10,
                key_id: 1,
                server: Some("alpha".into()),
                strip_key: true,
                reason: Reason::Allowed,
                previous_secret: false,
            })
        );
        let d = run(
            "GET",
            "/api/me",
            &[("authorization", &bearer(&token(10, 1, 1)))],
            &t,
        );
        match d {
            Decision::Allow(a) => {
                assert!(!a.strip_key, "the control plane needs the key on /api/me");
                assert_eq!(a.server, None);
            }
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn a_valid_key_without_servers_is_still_a_valid_key() {
        // Key 5's owner lost every server (or its servers were deleted).
        let t = table();
        let k = bearer(&token(10, 5, 5));
        for server in ["alpha", "beta"] {
            let d = run(
                "POST",
                &format!("/mcp-connect/{server}/mcp"),
                &[("authorization", &k)],
                &t,
            );
            assert_eq!(
                status(&d),
                (403, Some(CHALLENGE_INSUFFICIENT_SCOPE), Reason::OutOfScope)
            );
        }
        let d = run("GET", "/api/me", &[("authorization", &k)], &t);
        assert_eq!(status(&d), (200, None, Reason::MeAllowed));
    }

    #[test]
    fn unregistered_servers_are_closed_to_every_key() {
        let mut t = table();
        let star = bearer(&token(10, 2, 2));
        let alpha = bearer(&token(10, 1, 1));
        let on = |t: &FakeTable, server: &str, k: &str| {
            status(&run(
                "POST",
                &format!("/mcp-connect/{server}/mcp"),
                &[("authorization", k)],
                t,
            ))
        };
        // No set (an older control plane): a `*` key opens any routed name.
        assert_eq!(on(&t, "gamma", &star).2, Reason::Allowed);
        t.registered = Some(vec!["alpha", "beta"]);
        assert_eq!(on(&t, "beta", &star).2, Reason::Allowed);
        // Same answer as out of scope: a key learns nothing about which
        // names outside its scope exist.
        let out_of_scope = on(&t, "beta", &alpha);
        assert_eq!(out_of_scope.2, Reason::OutOfScope);
        let unregistered = on(&t, "gamma", &star);
        assert_eq!(
            unregistered,
            (403, out_of_scope.1, Reason::UnregisteredServer)
        );
        let (Decision::Deny(a), Decision::Deny(b)) =
            (deny(Reason::OutOfScope), deny(Reason::UnregisteredServer))
        else {
            unreachable!()
        };
        assert_eq!(a.body, b.body);
        // A server deleted from the set closes for every key, `*` included.
        t.registered = Some(vec!["beta"]);
        assert_eq!(on(&t, "alpha", &star).2, Reason::UnregisteredServer);
        assert_eq!(on(&t, "alpha", &alpha).2, Reason::UnregisteredServer);
        // `/api/me` names no server.
        let me = run("GET", "/api/me", &[("authorization", &alpha)], &t);
        assert_eq!(status(&me).2, Reason::MeAllowed);
        // Bad keys stay 401 whatever the name.
        let bad = bearer(&token(10, 1, 9));
        assert_eq!(on(&t, "gamma", &bad).0, 401);
    }

    /// Key 6 after a rotation: secret 61 now, secret 60 until `deadline`.
    fn rotated(t: &mut FakeTable, current: u8, previous: Option<(u8, i64)>) {
        let mut e = entry(6, 10, current, ServerScope::All, None);
        e.previous_secret = previous.map(|(fill, expires_at)| keygate_protocol::PreviousSecret {
            hash: Secret::from_bytes([fill; 32]).hash(),
            expires_at,
        });
        t.entries.insert(6, e);
    }

    fn on_alpha(t: &FakeTable, fill: u8) -> Decision {
        run(
            "POST",
            "/mcp-connect/alpha/mcp",
            &[("authorization", &bearer(&token(10, 6, fill)))],
            t,
        )
    }

    fn used_previous(d: &Decision) -> Option<bool> {
        match d {
            Decision::Allow(a) => Some(a.previous_secret),
            _ => None,
        }
    }

    #[test]
    fn the_old_secret_works_until_the_overlap_ends() {
        let mut t = table();
        // Rotated from 60 to 61 with the old secret open until NOW + 1.
        rotated(&mut t, 61, Some((60, NOW + 1)));
        assert_eq!(used_previous(&on_alpha(&t, 61)), Some(false));
        assert_eq!(used_previous(&on_alpha(&t, 60)), Some(true));
        let me = run(
            "GET",
            "/api/me",
            &[("authorization", &bearer(&token(10, 6, 60)))],
            &t,
        );
        assert_eq!(used_previous(&me), Some(true));
        // At the deadline (the edge's clock says NOW) and after: refused
        // like any wrong secret, while the new one still works.
        for deadline in [NOW, NOW - 1, NOW - 86_400] {
            rotated(&mut t, 61, Some((60, deadline)));
            let d = on_alpha(&t, 60);
            assert_eq!(
                status(&d),
                (401, Some(CHALLENGE_INVALID_TOKEN), Reason::BadSecret),
                "deadline {deadline}"
            );
            assert_eq!(used_previous(&on_alpha(&t, 61)), Some(false));
        }
        // Rotation without overlap: no previous secret at all.
        rotated(&mut t, 61, None);
        assert_eq!(status(&on_alpha(&t, 60)).2, Reason::BadSecret);
        // Any other secret is refused during the overlap too.
        rotated(&mut t, 61, Some((60, NOW + 100)));
        assert_eq!(status(&on_alpha(&t, 59)).2, Reason::BadSecret);
        // The old secret still cannot claim another user.
        let other_user = run(
            "POST",
            "/mcp-connect/alpha/mcp",
            &[("authorization", &bearer(&token(11, 6, 60)))],
            &t,
        );
        assert_eq!(status(&other_user).2, Reason::UserMismatch);
    }

    #[test]
    fn a_second_rotation_ends_the_oldest_secret_at_once() {
        let mut t = table();
        rotated(&mut t, 61, Some((60, NOW + 3600)));
        assert_eq!(used_previous(&on_alpha(&t, 60)), Some(true));
        // Rotated again during the overlap: 62 now, 61 the previous one.
        // 60 is gone although its deadline has not passed: at most two
        // secrets are ever valid.
        rotated(&mut t, 62, Some((61, NOW + 60)));
        assert_eq!(status(&on_alpha(&t, 60)).2, Reason::BadSecret);
        assert_eq!(used_previous(&on_alpha(&t, 61)), Some(true));
        assert_eq!(used_previous(&on_alpha(&t, 62)), Some(false));
    }

    #[test]
    fn the_old_secret_keeps_the_key_s_other_limits() {
        let mut t = table();
        let mut e = entry(
            6,
            10,
            61,
            ServerScope::Named(vec!["alpha".into()]),
            Some(NOW + 5),
        );
        e.previous_secret = Some(keygate_protocol::PreviousSecret {
            hash: Secret::from_bytes([60; 32]).hash(),
            expires_at: NOW + 3600,
        });
        t.entries.insert(6, e.clone());
        // Same scope as the new secret.
        let beta = run(
            "POST",
            "/mcp-connect/beta/mcp",
            &[("authorization", &bearer(&token(10, 6, 60)))],
            &t,
        );
        assert_eq!(status(&beta).2, Reason::OutOfScope);
        // The key's expiry ends both secrets, whatever the overlap says.
        e.expires_at = Some(NOW);
        t.entries.insert(6, e);
        assert_eq!(status(&on_alpha(&t, 60)).2, Reason::Expired);
        assert_eq!(status(&on_alpha(&t, 61)).2, Reason::Expired);
    }

    #[test]
    fn table_freshness_fails_closed() {
        let mut t = table();
        let h = [("authorization", bearer(&token(10, 1, 1)))];
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        // maxStaleness is 30 s: exactly 30 s old still serves, 31 s does not.
        t.last_sync = Some(NOW - 30);
        assert_eq!(
            status(&run("POST", "/mcp-connect/alpha/mcp", &h, &t)).2,
            Reason::Allowed
        );
        t.last_sync = Some(NOW - 31);
        let d = run("POST", "/mcp-connect/alpha/mcp", &h, &t);
        match &d {
            Decision::Deny(d) => {
                assert_eq!((d.status, d.reason), (503, Reason::StaleTable));
                assert!(d.retry_after_seconds.is_some());
            }
            other => unreachable!("{other:?}"),
        }
        t.last_sync = None;
        assert_eq!(
            status(&run("GET", "/api/me", &h, &t)),
            (503, None, Reason::NoTable)
        );
        // No key needs no table: still the 401 MCP clients act on.
        assert_eq!(
            status(&run("POST", "/mcp-connect/alpha/mcp", &[], &t)).0,
            401
        );
    }

    #[test]
    fn alpha_key_never_reaches_beta() {
        let t = table();
        let k = bearer(&token(10, 1, 1));
        for path in [
            "/mcp-connect/beta/mcp",
            "/mcp-connect/alpha/../beta/mcp",
            "/mcp-connect/alpha/%2e%2e/beta/mcp",
            "/mcp-connect/alpha%2f..%2fbeta/mcp",
            "/mcp-connect/alpha\\..\\beta/mcp",
            "/mcp-connect/alpha/..;/beta/mcp",
            "/mcp-connect//beta/mcp",
            "/mcp-connect/beta",
            "//mcp-connect/beta/mcp",
            "/mcp-connect/Beta/mcp",
            "/mcp-connect/alpha-/mcp",
            "/mcp-connect/alphabeta/mcp",
        ] {
            let d = run("POST", path, &[("authorization", &k)], &t);
            assert!(
                !matches!(d, Decision::Allow(_) | Decision::Pass),
                "{path}: {d:?}"
            );
        }
    }

    #[test]
    fn unavailable_is_the_ordinary_stale_table_denial() {
        let Decision::Deny(stale) = deny(Reason::StaleTable) else {
            unreachable!()
        };
        let u = unavailable();
        assert_eq!(
            (u.status, u.www_authenticate, u.retry_after_seconds, u.body),
            (
                stale.status,
                stale.www_authenticate,
                stale.retry_after_seconds,
                stale.body
            )
        );
        assert_eq!((u.status, u.retry_after_seconds), (503, Some(5)));
    }

    #[test]
    fn deny_bodies_are_generic_json() {
        for r in Reason::ALL {
            if let Decision::Deny(d) = deny(r) {
                let v: serde_json::Value = serde_json::from_str(d.body).unwrap();
                assert!(v["error"].is_string());
                assert!(!d.body.contains(r.as_str()) || r == Reason::BadPath);
            }
            assert_eq!(Reason::ALL[r.index()], r);
        }
    }

    mod properties {
        use super::*;
        use crate::path::loose_normalize;
        use proptest::prelude::*;

        /// Path pieces that confuse normalizers.
        fn piece() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "/",
                "mcp-connect",
                "MCP-CONNECT",
                "alpha",
                "beta",
                "Alpha",
                "..",
                ".",
                "%2f",
                "%2F",
                "%2e",
                "%2e%2e",
                "%5c",
                "\\",
                ";",
                ";x",
                "%",
                "%61",
                "%252f",
                "//",
                "?",
                "#",
                "mcp",
                "-",
                "%6dcp-connect",
                "api",
                "me",
                "x",
            ])
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 0..10).prop_map(|p| p.concat())
        }

        fn under(loose: &str, server: &str) -> bool {
            let exact = format!("/mcp-connect/{server}");
            loose == exact || loose.starts_with(&format!("{exact}/"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Whatever the spelling, an allowed request is for the server
            /// every lenient reading of the path also names, and a keyless
            /// request passes only where no lenient reading is protected.
            #[test]
            fn no_spelling_widens_scope(prefix in prop::sample::select(vec!["", "/", "/mcp-connect/", "/mcp-connect/alpha"]), p in path()) {
                let t = table();
                let full = format!("{prefix}{p}");
                let loose = loose_normalize(strip(&full));
                for key in [token(10, 1, 1), token(10, 2, 2)] {
                    let auth = bearer(&key);
                    match run("POST", &full, &[("authorization", &auth)], &t) {
                        Decision::Allow(a) => {
                            let server = a.server.clone().unwrap();
                            prop_assert!(under(&loose, &server), "{full:?} allowed for {server}, loose {loose:?}");
                            prop_assert!(!strip(&full).contains(['%', '\\', ';']), "{full:?}");
                            if key == token(10, 1, 1) {
                                prop_assert_eq!(server, "alpha");
                            }
                        }
                        Decision::Pass => prop_assert!(false, "a key never passes untouched: {full:?}"),
                        Decision::Deny(_) => {}
                    }
                }
                if run("POST", &full, &[], &t) == Decision::Pass {
                    prop_assert!(!loose.starts_with("/mcp-connect/") && loose != "/mcp-connect", "{full:?} passed, loose {loose:?}");
                }
            }
        }

        fn strip(p: &str) -> &str {
            crate::path::strip_query(p)
        }
    }
}
