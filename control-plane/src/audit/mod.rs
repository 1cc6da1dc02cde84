//! The audit log: an append-only record of every change, who made it, from
//! where, and to what.
//!
//! A change records its event with [`record`] inside the transaction that
//! makes the change, so the two commit or fail together. The vocabulary is
//! closed: [`Action`] names every kind of event (including those written by
//! key rotation and the lifetime policy), [`Target`] what it is about, and
//! [`Actor`] who did it (a person and the credential they used, the
//! system, or nobody known) with the client's address ([`client`]).
//! Details are a small JSON object of names and reasons, built by the
//! caller: never a key, a secret, or a hash of one.
//!
//! Refused admin-token sign-ins come from unauthenticated requests, so they
//! are counted, not appended ([`store::count_refused_sign_in`]). Reading
//! and pruning live in [`store`] and [`retention`].
//!
//! Recording a change is one call in its transaction, for example:
//!
//! ```ignore
//! // A person's request (the actor and address come with the caller):
//! audit::record(&mut tx, &Actor::of(&caller), Action::KeyRotated,
//!     Target::Key(id), json!({"overlapSeconds": overlap})).await?;
//! // The lifetime policy's sweep:
//! audit::record(&mut tx, &Actor::system(), Action::KeyDisabledByPolicy,
//!     Target::Key(id), json!({"reason": reason})).await?;
//! // A setting:
//! audit::record(&mut tx, &Actor::of(&admin), Action::KeyPolicyChanged,
//!     Target::Settings(audit::KEY_POLICY), json!({"maxLifetimeDays": 90})).await?;
//! ```

pub mod client;
pub mod retention;
pub mod store;

use crate::auth::{Caller, Credential};
use crate::db::Tx;
use crate::db::keys::KeyEdits;
use crate::db::sessions::SessionKind;
use crate::db::users::{self, UserRow};
use crate::domain::{ServerSelection, format_time, now_unix};
use serde_json::{Map, Value};
use std::net::IpAddr;

pub use client::ClientAddr;

/// Who made a change, as an event shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// A person, with the credential of the request.
    User {
        user_id: i64,
        credential: ActorCredential,
    },
    /// keygate itself (the lifetime policy's sweep).
    System,
    /// Nobody authenticated (a refused sign-in).
    Anonymous,
}

/// The credential an actor used, as events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorCredential {
    /// The console's session cookie (opened with OIDC or the admin token).
    Session,
    /// An OIDC JWT sent as `Authorization: Bearer`.
    OidcBearer,
    /// The static admin token, as a bearer or pasted at sign-in.
    AdminToken,
    /// The provider's sign-in (authorization code), which opens a session.
    OidcSignIn,
    /// An API key. Keys change nothing today (only `/api/me`), so no event
    /// carries it; named so every credential maps to something.
    ApiKey,
}

impl ActorCredential {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorCredential::Session => "session",
            ActorCredential::OidcBearer => "oidc-bearer",
            ActorCredential::AdminToken => "admin-token",
            ActorCredential::OidcSignIn => "oidc-sign-in",
            ActorCredential::ApiKey => "api-key",
        }
    }

    fn from_db(s: &str) -> Option<Self> {
        [
            ActorCredential::Session,
            ActorCredential::OidcBearer,
            ActorCredential::AdminToken,
            ActorCredential::OidcSignIn,
            ActorCredential::ApiKey,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl From<Credential> for ActorCredential {
    fn from(c: Credential) -> Self {
        match c {
            Credential::Session(_) => ActorCredential::Session,
            Credential::Oidc => ActorCredential::OidcBearer,
            Credential::AdminToken => ActorCredential::AdminToken,
            Credential::ApiKey { .. } => ActorCredential::ApiKey,
        }
    }
}

/// Who made a change and from which address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub who: Who,
    /// `None` when the address is unknown (no socket peer, as in a router
    /// driven without a listener).
    pub client: Option<IpAddr>,
}

impl Actor {
    /// The caller of an authenticated request (its address was resolved
    /// with the request, [`crate::auth`]).
    pub fn of(caller: &Caller) -> Self {
        Self {
            who: Who::User {
                user_id: caller.user.id,
                credential: caller.credential.into(),
            },
            client: caller.client,
        }
    }

    /// A person signing in: `user_id` is who they became.
    pub fn signing_in(user_id: i64, kind: SessionKind, client: ClientAddr) -> Self {
        let credential = match kind {
            SessionKind::Oidc => ActorCredential::OidcSignIn,
            SessionKind::AdminToken => ActorCredential::AdminToken,
        };
        Self {
            who: Who::User {
                user_id,
                credential,
            },
            client: client.0,
        }
    }

    /// keygate itself (policy): no person and no address.
    pub fn system() -> Self {
        Self {
            who: Who::System,
            client: None,
        }
    }

    /// An unauthenticated request.
    pub fn anonymous(client: ClientAddr) -> Self {
        Self {
            who: Who::Anonymous,
            client: client.0,
        }
    }

    /// `{"userId": N, "credential": "..."}`, `"system"`, or `null`.
    pub fn to_json(&self) -> Value {
        match self.who {
            Who::User {
                user_id,
                credential,
            } => serde_json::json!({"userId": user_id, "credential": credential.as_str()}),
            Who::System => Value::String("system".into()),
            Who::Anonymous => Value::Null,
        }
    }

    fn columns(&self) -> (&'static str, Option<i64>, Option<&'static str>) {
        match self.who {
            Who::User {
                user_id,
                credential,
            } => ("user", Some(user_id), Some(credential.as_str())),
            Who::System => ("system", None, None),
            Who::Anonymous => ("anonymous", None, None),
        }
    }

    fn from_columns(kind: &str, user_id: Option<i64>, credential: Option<&str>) -> Option<Who> {
        match (kind, user_id, credential.and_then(ActorCredential::from_db)) {
            ("user", Some(user_id), Some(credential)) => Some(Who::User {
                user_id,
                credential,
            }),
            ("system", _, _) => Some(Who::System),
            ("anonymous", _, _) => Some(Who::Anonymous),
            _ => None,
        }
    }
}

/// Defines [`Action`] with its wire names, once.
macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Every kind of event, by its wire name (`key.created`, …).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Action {
            $($(#[$doc])* $variant,)*
        }

        impl Action {
            /// Every action, in the order the docs list them.
            pub const ALL: &[Action] = &[$(Action::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }
        }
    };
}

actions! {
    /// A key was created (details: `name`, `mcpServerIds`, `expiresAt`).
    KeyCreated = "key.created",
    /// A key was turned off (`PATCH {"enabled": false}`).
    KeyDisabled = "key.disabled",
    /// A key was turned on again.
    KeyEnabled = "key.enabled",
    /// A key's name, description or expiry was edited (details: `changed`).
    KeyEdited = "key.edited",
    /// A key was revoked (deleted; details: `reason`, and `via` when a
    /// user's deletion or revoke-all revoked it).
    KeyRevoked = "key.revoked",
    /// A key's secret was rotated (written by rotation: details
    /// `overlapSeconds`).
    KeyRotated = "key.rotated",
    /// The lifetime policy turned an unused key off (actor `system`;
    /// details: `reason`).
    KeyDisabledByPolicy = "key.disabled_by_policy",
    /// An admin changed the key lifetime policy (target `settings`
    /// `key-policy`; details: the new policy).
    KeyPolicyChanged = "key_policy.changed",
    /// A user was created (details: `username`, `role`).
    UserCreated = "user.created",
    /// A user's role, role source or email changed (details: `changed`).
    UserChanged = "user.changed",
    /// A user was deleted (their keys' revocations are events of their own).
    UserDeleted = "user.deleted",
    UserSuspended = "user.suspended",
    UserUnsuspended = "user.unsuspended",
    /// Every key of a user was revoked at once (details: `count`,
    /// `reason`); each key also gets its own `key.revoked`.
    UserKeysRevoked = "user.keys_revoked",
    ServerCreated = "server.created",
    ServerChanged = "server.changed",
    ServerDeleted = "server.deleted",
    RuleCreated = "rule.created",
    RuleChanged = "rule.changed",
    RuleDeleted = "rule.deleted",
    /// A console session was opened (OIDC or admin-token sign-in).
    SessionCreated = "session.created",
    /// Admin-token sign-ins refused, counted per client address per minute
    /// in one event (`count`); actor `null`.
    SignInRefused = "session.admin_token_refused",
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }

    /// A key turned on (`true`) or off by a person.
    pub fn key_toggled(enabled: bool) -> Self {
        if enabled {
            Action::KeyEnabled
        } else {
            Action::KeyDisabled
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A key; [`record`] reads its owner (and name) in the transaction.
    Key(i64),
    User(i64),
    /// An MCP server, by name.
    Server(String),
    Rule(i64),
    /// A console session: sessions have no public id.
    Session,
    /// A setting, by name (`key-policy`).
    Settings(&'static str),
}

impl Target {
    pub fn type_name(&self) -> &'static str {
        match self {
            Target::Key(_) => "key",
            Target::User(_) => "user",
            Target::Server(_) => "server",
            Target::Rule(_) => "rule",
            Target::Session => "session",
            Target::Settings(_) => "settings",
        }
    }

    fn id_column(&self) -> Option<String> {
        match self {
            Target::Key(id) | Target::User(id) | Target::Rule(id) => Some(id.to_string()),
            Target::Server(name) => Some(name.clone()),
            Target::Settings(name) => Some((*name).to_owned()),
            Target::Session => None,
        }
    }
}

/// The key-policy setting, as a [`Target::Settings`] name.
pub const KEY_POLICY: &str = "key-policy";

/// Appends one event, in the transaction `tx` of the change it records.
/// For a key, the key's owner and name are read here (from the live key or,
/// once revoked, from its revocation record), so owners see events about
/// their keys and every key event names the key; user and rule events get
/// the username or rule name the same way. `details` must be a JSON
/// object (or null) of names and reasons: never a key or a secret.
pub async fn record(
    tx: &mut Tx,
    actor: &Actor,
    action: Action,
    target: Target,
    details: Value,
) -> Result<(), sqlx::Error> {
    let mut details = match details {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    };
    let owner = describe(tx, &target, &mut details).await?;
    let (kind, user_id, credential) = actor.columns();
    sqlx::query(
        "INSERT INTO audit_events (at, actor_kind, actor_user_id, actor_credential, client_addr, \
         action, target_type, target_id, target_owner_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(now_unix())
    .bind(kind)
    .bind(user_id)
    .bind(credential)
    .bind(actor.client.map(|a| a.to_string()))
    .bind(action.as_str())
    .bind(target.type_name())
    .bind(target.id_column())
    .bind(owner)
    .bind(Value::Object(details).to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds the target's name to `details` (a key's, a user's username, a
/// rule's), read in the transaction, and answers a key's owner. Read before
/// a deletion, so the event of a deleted user or rule names it too.
async fn describe(
    tx: &mut Tx,
    target: &Target,
    details: &mut Map<String, Value>,
) -> Result<Option<i64>, sqlx::Error> {
    let (field, name, owner) = match target {
        Target::Key(id) => {
            let found: Option<(i64, String)> = sqlx::query_as(
                "SELECT user_id, name FROM api_keys WHERE id = $1 \
                 UNION ALL SELECT user_id, name FROM revoked_keys WHERE id = $1",
            )
            .bind(*id)
            .fetch_optional(&mut **tx)
            .await?;
            (
                "name",
                found.as_ref().map(|f| f.1.clone()),
                found.map(|f| f.0),
            )
        }
        Target::User(id) => {
            let found: Option<String> =
                sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
                    .bind(*id)
                    .fetch_optional(&mut **tx)
                    .await?;
            ("username", found, None)
        }
        Target::Rule(id) => {
            let found: Option<String> =
                sqlx::query_scalar("SELECT name FROM access_rules WHERE id = $1")
                    .bind(*id)
                    .fetch_optional(&mut **tx)
                    .await?;
            ("name", found, None)
        }
        Target::Server(_) | Target::Session | Target::Settings(_) => return Ok(None),
    };
    if let Some(name) = name {
        details.entry(field).or_insert(Value::String(name));
    }
    Ok(owner)
}

/// Records `action` once for every live key of `user_id` (before a bulk
/// revocation deletes them), with `details`: so a key's own history and its
/// owner's view show it, whichever way it was revoked.
async fn record_user_keys(
    tx: &mut Tx,
    actor: &Actor,
    action: Action,
    user_id: i64,
    details: Value,
) -> Result<usize, sqlx::Error> {
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM api_keys WHERE user_id = $1 ORDER BY id")
            .bind(user_id)
            .fetch_all(&mut **tx)
            .await?;
    for id in &ids {
        record(tx, actor, action, Target::Key(*id), details.clone()).await?;
    }
    Ok(ids.len())
}

/// Records a user's deletion, before it happens in `tx`: a `key.revoked`
/// for each of their keys (`via: "user.deleted"`), then `user.deleted`
/// (naming the user, while the row is still there).
pub async fn record_user_deletion(
    tx: &mut Tx,
    actor: &Actor,
    user_id: i64,
) -> Result<(), sqlx::Error> {
    let keys = record_user_keys(
        tx,
        actor,
        Action::KeyRevoked,
        user_id,
        serde_json::json!({"reason": users::REASON_USER_DELETED, "via": Action::UserDeleted.as_str()}),
    )
    .await?;
    let details = serde_json::json!({ "revokedKeys": keys });
    record(
        tx,
        actor,
        Action::UserDeleted,
        Target::User(user_id),
        details,
    )
    .await
}

/// Records revoke-all, before it happens in `tx`: a `key.revoked` for each
/// key (`via: "user.keys_revoked"`), then one `user.keys_revoked` with the
/// count and the reason.
pub async fn record_bulk_revocation(
    tx: &mut Tx,
    actor: &Actor,
    user_id: i64,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    let via = Action::UserKeysRevoked.as_str();
    let details = serde_json::json!({ "reason": reason, "via": via });
    let count = record_user_keys(tx, actor, Action::KeyRevoked, user_id, details).await?;
    let details = serde_json::json!({ "count": count, "reason": reason });
    record(
        tx,
        actor,
        Action::UserKeysRevoked,
        Target::User(user_id),
        details,
    )
    .await
}

/// The details of a `user.changed` event (which fields changed, and the
/// role and its source as they now are), or `None` when nothing changed.
/// An email is personal data, not needed to audit: named, not copied.
pub fn user_change_details(before: &UserRow, after: &UserRow) -> Option<Value> {
    let mut changed = Vec::new();
    if before.role != after.role {
        changed.push("role");
    }
    if before.role_source != after.role_source {
        changed.push("roleSource");
    }
    if before.email != after.email {
        changed.push("email");
    }
    if changed.is_empty() {
        return None;
    }
    Some(serde_json::json!({
        "changed": changed,
        "role": after.role,
        "roleSource": after.role_source,
    }))
}

/// The details of a `key.created` event: the scope and the expiry.
pub fn key_created_details(scope: &ServerSelection, expires_at: Option<i64>) -> Value {
    serde_json::json!({
        "mcpServerIds": scope.to_ids(),
        "expiresAt": expires_at.map(format_time),
    })
}

/// The details of a `key.edited` event: which fields changed and the new
/// expiry ([`record`] adds the key's name as it now is; a description is
/// free text and stays out); `None` when nothing was edited.
pub fn key_edit_details(edits: &KeyEdits) -> Option<Value> {
    let mut changed = Vec::new();
    let mut details = Map::new();
    if edits.name.is_some() {
        changed.push("name");
    }
    if edits.description.is_some() {
        changed.push("description");
    }
    if let Some(expiry) = edits.expires_at {
        changed.push("expiresAt");
        details.insert(
            "expiresAt".into(),
            expiry.map(format_time).map_or(Value::Null, Value::String),
        );
    }
    if changed.is_empty() {
        return None;
    }
    details.insert("changed".into(), changed.into());
    Some(Value::Object(details))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert!(seen.insert(a.as_str()), "{} twice", a.as_str());
            assert_eq!(Action::parse(a.as_str()), Some(*a));
        }
        assert_eq!(Action::parse("key.nope"), None);
        assert_eq!(Action::KeyRotated.as_str(), "key.rotated");
        assert_eq!(
            Action::KeyDisabledByPolicy.as_str(),
            "key.disabled_by_policy"
        );
        assert_eq!(Action::KeyPolicyChanged.as_str(), "key_policy.changed");
    }

    /// The console's Audit Log page offers every action by its wire name.
    #[test]
    fn the_console_knows_every_action() {
        let page = include_str!("../../console/audit.js");
        for a in Action::ALL {
            assert!(
                page.contains(&format!("['{}', ", a.as_str())),
                "console/audit.js does not list {}",
                a.as_str()
            );
        }
    }

    #[test]
    fn actors_as_json() {
        let a = Actor {
            who: Who::User {
                user_id: 7,
                credential: ActorCredential::OidcBearer,
            },
            client: None,
        };
        assert_eq!(
            a.to_json(),
            serde_json::json!({"userId": 7, "credential": "oidc-bearer"})
        );
        assert_eq!(Actor::system().to_json(), serde_json::json!("system"));
        assert_eq!(Actor::anonymous(ClientAddr(None)).to_json(), Value::Null);
        let (k, u, c) = a.columns();
        assert_eq!(Actor::from_columns(k, u, c), Some(a.who));
    }
}
