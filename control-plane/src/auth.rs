//! Who is calling: the credential of a request resolved to a user.
//!
//! The `Authorization` header is read with the same strict rule as at the
//! edge (`Bearer`, one space, the token). Accepted bearers, tried in this order:
//! - an ok1 API key (only for `GET /api/me`; everything else answers 403),
//! - the static admin token (the built-in admin user, found by its
//!   `builtin` mark and never by name; always role admin),
//! - an OIDC JWT, when an issuer and audience are configured.
//!
//! A request with no `Authorization` header may instead carry the console's
//! session cookie ([`crate::session`]); such a request that changes state
//! must also pass the same-origin check, or it is refused with 403. An
//! `Authorization` header that does not authenticate never falls back to the
//! cookie, and an API key never opens a session.
//!
//! Tokens are compared in constant time (as SHA-256 digests, so lengths do
//! not leak either) and never logged.

use crate::AppState;
use crate::audit::ClientAddr;
use crate::db::sessions::SessionKind;
use crate::db::{keys, users};
use crate::domain::{Role, now_unix};
use crate::error::{
    ApiError, MSG_ADMIN_REQUIRED, MSG_CROSS_SITE, MSG_KEY_NOT_ALLOWED, MSG_SUSPENDED,
};
use crate::session::{self, CookieValue};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use keygate_protocol::{ApiKeyToken, SecretHash, SecretMatch, bearer, secret};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A static bearer token kept only as its digest.
#[derive(Clone)]
pub struct StaticToken([u8; 32]);

impl StaticToken {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&d).into()
    }

    /// What an admin-token session stores to prove which token opened it:
    /// a digest of this token salted with the session's id, so equal tokens
    /// give unrelated fingerprints and none is a plain hash of the token.
    pub fn fingerprint(&self, session_id: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"keygate admin-token session\0");
        h.update(session_id.as_bytes());
        h.update(b"\0");
        h.update(self.0);
        hex::encode(h.finalize())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey {
        key_id: i64,
    },
    AdminToken,
    Oidc,
    /// The console's session cookie, opened as `kind` says.
    Session(SessionKind),
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: users::UserRow,
    pub role: Role,
    pub credential: Credential,
    /// The client's address, for the audit log ([`crate::audit::client`]).
    pub client: Option<std::net::IpAddr>,
}

/// The bearer token of a request, read with the edge's one rule
/// ([`bearer::credential`]). A header in any other spelling is no credential.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::AuthRequired)?;
    let token = bearer::credential(value.as_bytes()).ok_or(ApiError::AuthRequired)?;
    std::str::from_utf8(token).map_err(|_| ApiError::InvalidToken)
}

async fn authenticate_key(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let parsed = ApiKeyToken::parse(token.as_bytes()).map_err(|_| ApiError::InvalidToken)?;
    let mut conn = state.db.conn().await?;
    let row = keys::auth_lookup(&mut conn, parsed.key_id).await?;
    // Same hash work whether or not the key exists, belongs to this user or
    // was rotated with overlap.
    let mine = row.as_ref().filter(|r| r.user_id == parsed.user_id);
    let stored = mine.and_then(|r| SecretHash::from_hex(&r.secret_hash));
    let previous = mine.and_then(|r| {
        // The secret a rotation replaced, until its deadline, as at the edge.
        let open = r.previous_secret_expires_at.is_some_and(|e| now_unix() < e);
        r.previous_secret_hash
            .as_deref()
            .filter(|_| open)
            .and_then(SecretHash::from_hex)
    });
    let ok = secret::verify_either(stored.as_ref(), previous.as_ref(), &parsed.secret)
        != SecretMatch::Neither;
    let row = match row {
        Some(r) if ok && !keys::is_expired(r.expires_at) => r,
        _ => return Err(ApiError::InvalidToken),
    };
    let user = users::get(&mut conn, row.user_id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    Ok(Caller {
        client: None,
        role: user.role(),
        user,
        credential: Credential::ApiKey {
            key_id: parsed.key_id,
        },
    })
}

/// The caller, refused when an admin has suspended them (their keys are
/// already out of the table, so a key gets the edge's 401; a person's
/// credential gets 403 saying why).
async fn authenticate(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    let mut caller = authenticate_credential(state, parts).await?;
    if caller.user.suspended_at.is_some() {
        return Err(ApiError::Forbidden(MSG_SUSPENDED));
    }
    caller.client = ClientAddr::of(parts, state.trusted_proxy_hops).0;
    Ok(caller)
}

/// The session cookie as a credential (no `Authorization` header). A write
/// must come from the console's own origin; the check runs before the
/// database is asked, so cross-site junk costs nothing.
async fn authenticate_session(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    let value = match session::cookie(&parts.headers, state.sessions.cookies.session_name()) {
        CookieValue::One(v) => v,
        CookieValue::Absent => return Err(ApiError::AuthRequired),
        CookieValue::Ambiguous => return Err(ApiError::InvalidToken),
    };
    if !session::is_safe_method(&parts.method) && !state.sessions.origin.allows(&parts.headers) {
        return Err(ApiError::Forbidden(MSG_CROSS_SITE));
    }
    let (user, kind) = state
        .sessions
        .resolve(
            &state.db,
            value,
            state.admin_token.as_ref(),
            state.login.is_some(),
        )
        .await?;
    let role = match kind {
        SessionKind::AdminToken => Role::Admin,
        // Read from the user row on every request: a demotion is immediate.
        SessionKind::Oidc => user.role(),
    };
    Ok(Caller {
        client: None,
        user,
        role,
        credential: Credential::Session(kind),
    })
}

async fn authenticate_credential(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    if !parts.headers.contains_key(AUTHORIZATION) {
        return authenticate_session(state, parts).await;
    }
    let token = bearer(parts)?;
    if ApiKeyToken::looks_like_token(token.as_bytes()) {
        return authenticate_key(state, token).await;
    }
    if let Some(admin) = &state.admin_token
        && admin.matches(token)
    {
        let user = users::ensure_builtin_admin(&state.db).await?;
        return Ok(Caller {
            client: None,
            user,
            role: Role::Admin,
            credential: Credential::AdminToken,
        });
    }
    if let Some(oidc) = &state.oidc {
        let user = oidc.authenticate(&state.db, token).await?;
        return Ok(Caller {
            client: None,
            role: user.role(),
            user,
            credential: Credential::Oidc,
        });
    }
    Err(ApiError::InvalidToken)
}

/// Any authenticated caller, API keys included (`GET /api/me`).
pub struct AnyCaller(pub Caller);

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(state, parts).await.map(AnyCaller)
    }
}

/// A person (admin token, OIDC, or a console session), not an API key.
pub struct Person(pub Caller);

impl FromRequestParts<AppState> for Person {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(state, parts).await?;
        if matches!(caller.credential, Credential::ApiKey { .. }) {
            return Err(ApiError::Forbidden(MSG_KEY_NOT_ALLOWED));
        }
        Ok(Person(caller))
    }
}

/// A person with role admin.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Person(caller) = Person::from_request_parts(parts, state).await?;
        if caller.role != Role::Admin {
            return Err(ApiError::Forbidden(MSG_ADMIN_REQUIRED));
        }
        Ok(Admin(caller))
    }
}

/// The edge, holding the data-plane token.
pub struct DataPlane;

impl FromRequestParts<AppState> for DataPlane {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        match &state.data_plane_token {
            Some(t) if t.matches(token) => Ok(DataPlane),
            _ => Err(ApiError::InvalidToken),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(authorization: &str) -> Parts {
        let req = Request::builder()
            .header(AUTHORIZATION, authorization)
            .body(())
            .unwrap();
        req.into_parts().0
    }

    /// The HTTP server trims a header's edges before we see it, so spellings
    /// with outer whitespace are pinned here rather than over the wire.
    #[test]
    fn bearer_is_the_edge_rule() {
        assert_eq!(bearer(&parts("Bearer abc")).ok(), Some("abc"));
        assert_eq!(bearer(&parts("bEARER abc")).ok(), Some("abc"));
        for v in [
            "Bearer  abc",
            "Bearer abc ",
            "Bearer\tabc",
            "Bearer abc def",
            "Bearer ",
            "Bearer",
            " Bearer abc",
            "Basic abc",
            "abc",
        ] {
            assert!(
                matches!(bearer(&parts(v)), Err(ApiError::AuthRequired)),
                "{v:?}"
            );
        }
    }
}
