//! Queries on browser sessions and pending OIDC logins. Both are keyed by
//! the hex SHA-256 of a secret the browser holds (the session cookie, the
//! login `state`); the secrets themselves are never stored.

use super::Conn;
use super::users::UserRow;

/// How a session was opened; stored as `oidc` or `admin-token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Signed in through the OpenID provider.
    Oidc,
    /// Signed in by pasting the static admin token (the built-in admin).
    AdminToken,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Oidc => "oidc",
            SessionKind::AdminToken => "admin-token",
        }
    }
    fn from_db(s: &str) -> Option<Self> {
        match s {
            "oidc" => Some(SessionKind::Oidc),
            "admin-token" => Some(SessionKind::AdminToken),
            _ => None,
        }
    }
}

/// A session with its user, read in one query on every cookie request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub credential: String,
    pub admin_token_fingerprint: Option<String>,
    pub session_created_at: i64,
    pub last_seen_at: i64,
    #[sqlx(flatten)]
    pub user: UserRow,
}

impl SessionRow {
    /// `None` for a credential this version does not know: no session.
    pub fn kind(&self) -> Option<SessionKind> {
        SessionKind::from_db(&self.credential)
    }
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: i64,
    pub kind: SessionKind,
    pub admin_token_fingerprint: Option<&'a str>,
    pub now: i64,
}

pub async fn insert(conn: &mut Conn, s: NewSession<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, credential, admin_token_fingerprint, created_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(s.id)
    .bind(s.user_id)
    .bind(s.kind.as_str())
    .bind(s.admin_token_fingerprint)
    .bind(s.now)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.credential, s.admin_token_fingerprint, s.created_at AS session_created_at, \
         s.last_seen_at, u.id, u.username, u.email, u.role, u.role_source, u.oidc_issuer, \
         u.oidc_subject, u.created_at, u.suspended_at \
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Moves `last_seen_at` forward (never back: replicas race harmlessly).
pub async fn touch(conn: &mut Conn, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn delete(conn: &mut Conn, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Removes sessions past either lifetime (they would be refused anyway).
pub async fn prune(
    conn: &mut Conn,
    created_before: i64,
    seen_before: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE created_at <= $1 OR last_seen_at <= $2")
        .bind(created_before)
        .bind(seen_before)
        .execute(conn)
        .await
        .map(|_| ())
}

/// What the callback needs to finish a login.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingLogin {
    pub nonce: String,
    pub pkce_verifier: String,
    pub next_path: String,
    pub created_at: i64,
}

pub async fn insert_pending(
    conn: &mut Conn,
    id: &str,
    login: &PendingLogin,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pending_logins (id, nonce, pkce_verifier, next_path, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(&login.nonce)
    .bind(&login.pkce_verifier)
    .bind(&login.next_path)
    .bind(login.created_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Reads and deletes a pending login in one statement, so of two callbacks
/// with the same `state` (on any replicas) at most one gets it.
pub async fn take_pending(conn: &mut Conn, id: &str) -> Result<Option<PendingLogin>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM pending_logins WHERE id = $1 \
         RETURNING nonce, pkce_verifier, next_path, created_at",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn count_pending(conn: &mut Conn) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM pending_logins")
        .fetch_one(conn)
        .await
}

/// Deletes the `n` oldest unfinished logins (room for new ones at the cap).
pub async fn evict_oldest_pending(conn: &mut Conn, n: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM pending_logins WHERE id IN \
         (SELECT id FROM pending_logins ORDER BY created_at, id LIMIT $1)",
    )
    .bind(n)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn prune_pending(conn: &mut Conn, created_before: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM pending_logins WHERE created_at <= $1")
        .bind(created_before)
        .execute(conn)
        .await
        .map(|_| ())
}
