//! Browser sessions: opening one at sign-in, resolving the cookie on every
//! request, ending it at sign-out. The cookies are [`cookie`]'s, the
//! same-origin rule (CSRF) is [`origin`]'s.
//!
//! The cookie holds 32 random bytes (base64url); the database holds only
//! their SHA-256, so a copy of the database opens no session. Sessions live
//! in the database, so every replica honours them and ending one (sign-out,
//! deleting the user) ends it everywhere. The user's role is read with the
//! session on every request, so a demotion takes effect at once. A session
//! opened with the admin token carries a fingerprint of that token and ends
//! when the configured token changes.

use crate::audit::{self, Action, Actor, ClientAddr, Target};
use crate::auth::StaticToken;
use crate::config::{Config, SessionConfig};
use crate::db::sessions::{self as store, NewSession, SessionKind, SessionRow};
use crate::db::{Db, users::UserRow};
use crate::domain::now_unix;
use crate::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub mod cookie;
pub mod origin;

pub use cookie::{
    CALLBACK_PATH, CookieValue, Cookies, LOGIN_COOKIE, SESSION_COOKIE, cookie, cookie_values,
};
pub use origin::{ConsoleOrigin, is_safe_method, public_url};

/// `last_seen_at` is written at most this often per session, not on every
/// request; the idle lifetime is enforced to this precision.
const TOUCH_EVERY_SECS: i64 = 60;

/// How sessions behave here: their lifetimes, how their cookies are set,
/// and the console's origin (all from the configuration).
#[derive(Debug, Clone)]
pub struct Sessions {
    idle_secs: i64,
    max_secs: i64,
    pub cookies: Cookies,
    pub origin: ConsoleOrigin,
}

/// A random secret as base64url, and the hex SHA-256 the database keys it by.
pub fn new_secret() -> Result<(String, String), ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("OS random source failed: {e}")))?;
    let value = URL_SAFE_NO_PAD.encode(bytes);
    let id = digest_hex(&value);
    Ok((value, id))
}

/// The hex SHA-256 of a browser-held secret: the database key of a session
/// (cookie value) or a pending login (`state`).
pub fn digest_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Sessions {
    pub fn from_config(c: &Config) -> Result<Self, String> {
        let SessionConfig { idle, max } = c.sessions;
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let (secure, origin) = match &c.public_url {
            Some(u) => {
                let url = public_url(u)?;
                (
                    url.scheme() == "https",
                    Some(url.origin().ascii_serialization()),
                )
            }
            None => (false, None),
        };
        Ok(Self {
            idle_secs: secs(idle).max(1),
            max_secs: secs(max).max(1),
            cookies: Cookies { secure },
            origin: ConsoleOrigin { configured: origin },
        })
    }

    /// Opens a session for `user` and returns the cookie value. With the
    /// admin token, the session is bound to it (`admin_token`). The sign-in
    /// is recorded in the audit log, from `client`, in the same transaction.
    pub async fn open(
        &self,
        db: &Db,
        user: &UserRow,
        kind: SessionKind,
        admin_token: Option<&StaticToken>,
        client: ClientAddr,
    ) -> Result<String, ApiError> {
        let (value, id) = new_secret()?;
        let fingerprint = match (kind, admin_token) {
            (SessionKind::AdminToken, Some(t)) => Some(t.fingerprint(&id)),
            (SessionKind::AdminToken, None) => {
                return Err(ApiError::Internal(
                    "admin-token session without an admin token".into(),
                ));
            }
            (SessionKind::Oidc, _) => None,
        };
        let now = now_unix();
        let mut tx = db.begin_plain_write().await?;
        store::prune(
            &mut tx,
            now.saturating_sub(self.max_secs),
            now.saturating_sub(self.idle_secs),
        )
        .await?;
        store::insert(
            &mut tx,
            NewSession {
                id: &id,
                user_id: user.id,
                kind,
                admin_token_fingerprint: fingerprint.as_deref(),
                now,
            },
        )
        .await?;
        let actor = Actor::signing_in(user.id, kind, client);
        audit::record(
            &mut tx,
            &actor,
            Action::SessionCreated,
            Target::Session,
            Value::Null,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            user_id = user.id,
            credential = kind.as_str(),
            "session opened"
        );
        Ok(value)
    }

    /// The live session a cookie value names, with its user as of now. A
    /// session past a lifetime, opened with an admin token that is no longer
    /// the configured one, or opened through OIDC sign-in that is no longer
    /// configured, is deleted and refused.
    pub async fn resolve(
        &self,
        db: &Db,
        value: &str,
        admin_token: Option<&StaticToken>,
        oidc_sign_in: bool,
    ) -> Result<(UserRow, SessionKind), ApiError> {
        let id = digest_hex(value);
        let mut conn = db.conn().await?;
        let row = store::get(&mut conn, &id)
            .await?
            .ok_or(ApiError::InvalidToken)?;
        let now = now_unix();
        match self.check(&row, &id, now, admin_token, oidc_sign_in) {
            Some(kind) => {
                if now - row.last_seen_at >= TOUCH_EVERY_SECS {
                    store::touch(&mut conn, &id, now).await?;
                }
                Ok((row.user, kind))
            }
            None => {
                store::delete(&mut conn, &id).await?;
                Err(ApiError::InvalidToken)
            }
        }
    }

    fn check(
        &self,
        row: &SessionRow,
        id: &str,
        now: i64,
        admin_token: Option<&StaticToken>,
        oidc_sign_in: bool,
    ) -> Option<SessionKind> {
        if now - row.session_created_at >= self.max_secs || now - row.last_seen_at >= self.idle_secs
        {
            return None;
        }
        match row.kind()? {
            SessionKind::AdminToken => {
                let stored = row.admin_token_fingerprint.as_deref()?;
                let current = admin_token?.fingerprint(id);
                let same: bool = stored.as_bytes().ct_eq(current.as_bytes()).into();
                (same && row.user.role_source() == crate::domain::RoleSource::Builtin)
                    .then_some(SessionKind::AdminToken)
            }
            SessionKind::Oidc => oidc_sign_in.then_some(SessionKind::Oidc),
        }
    }

    /// Ends the session a cookie value names, if any.
    pub async fn end(&self, db: &Db, value: &str) -> Result<(), ApiError> {
        let mut conn = db.conn().await?;
        store::delete(&mut conn, &digest_hex(value)).await?;
        Ok(())
    }
}
