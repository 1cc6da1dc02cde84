//! Console sign-in: `/auth/options`, `/auth/login` and `/auth/callback`
//! (OpenID Connect authorization code + PKCE), `/auth/token` (the admin
//! token pasted on the sign-in page) and `/auth/logout`. Each sign-in opens a
//! fresh session (never one the browser brought: no fixation); the answer
//! sets the `keygate_session` cookie. Codes, tokens and cookie values are
//! never logged.

use crate::AppState;
use crate::audit::{self, ClientAddr};
use crate::db::sessions::SessionKind;
use crate::db::users;
use crate::domain::now_unix;
use crate::error::{ApiError, ApiResult, MSG_CROSS_SITE};
use crate::login::{Failure, LOGIN_TTL_SECS};
use crate::session::{self, CookieValue};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct SignInOptions {
    /// Whether "Sign in with OpenID Connect" is offered (a client id is set).
    pub oidc: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSignIn {
    /// The control plane's admin token.
    pub token: String,
}

pub const MSG_INVALID_ADMIN_TOKEN: &str = "invalid admin token";

/// The sign-in page's choices.
#[utoipa::path(get, path = "/auth/options", responses((status = 200, body = SignInOptions)))]
pub async fn options(State(st): State<AppState>) -> Json<SignInOptions> {
    Json(SignInOptions {
        oidc: st.login.is_some(),
    })
}

/// A `next` the browser may be sent to after sign-in: a path on this
/// origin, or `/`. Only visible ASCII (browsers drop tabs and newlines from
/// URLs, which would turn `/\t/evil.example` into `//evil.example`), a
/// leading `/`, and neither `//` nor a backslash at its start or anywhere
/// (`/\evil.example` is `//evil.example` to a browser).
pub fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Ends the session the request's cookie names, if it has one (a new
/// sign-in replaces it rather than leaving it open beside the new one).
async fn end_current(st: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    for old in session::cookie_values(headers, st.sessions.cookies.session_name()) {
        st.sessions.end(&st.db, old).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    /// The provider's own error (`access_denied`, …).
    #[serde(default)]
    pub error: Option<String>,
}

pub const MSG_OIDC_NOT_CONFIGURED: &str = "OIDC sign-in is not configured";

/// Where a failed sign-in sends the browser: the sign-in page, with a code
/// it maps to a fixed message.
fn failed(st: &AppState, f: Failure) -> Response {
    see_other(
        &format!("/signin?error={}", f.code()),
        &[st.sessions.cookies.clear_login()],
    )
}

/// Start OIDC sign-in: 302 to the provider (authorization code, PKCE,
/// `state`, `nonce`). `next` is where to land afterwards (a local path).
#[utoipa::path(get, path = "/auth/login", params(("next" = Option<String>, Query)),
    responses((status = 302, description = "to the provider"),
        (status = 303, description = "provider unreachable: to /signin?error=provider"),
        (status = 404, description = "OIDC sign-in is not configured")))]
pub async fn login(
    State(st): State<AppState>,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Some(login) = &st.login else {
        return Err(ApiError::NotFound(MSG_OIDC_NOT_CONFIGURED));
    };
    let next = local_next(query.ok().and_then(|Query(q)| q.next).as_deref());
    match login.start(&st.db, &next).await {
        Ok((url, state)) => {
            let mut resp = no_store(StatusCode::FOUND);
            let location = HeaderValue::from_str(&url)
                .map_err(|_| ApiError::Internal("bad provider URL".into()))?;
            resp.headers_mut().insert(LOCATION, location);
            resp.headers_mut().append(
                SET_COOKIE,
                st.sessions.cookies.login(&state, LOGIN_TTL_SECS),
            );
            Ok(resp)
        }
        Err(f) => Ok(failed(&st, f)),
    }
}

/// The provider's redirect back. Success: a new session (Set-Cookie) and
/// 303 to `next`; failure: no session, 303 to `/signin?error=<code>` with
/// `<code>` one of `state`, `nonce`, `code`, `provider`, `account`.
#[utoipa::path(get, path = "/auth/callback",
    params(("code" = Option<String>, Query), ("state" = Option<String>, Query)),
    responses((status = 303, description = "signed in (to next) or refused (to /signin?error=…)"),
        (status = 404, description = "OIDC sign-in is not configured")))]
pub async fn callback(
    State(st): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Some(login) = &st.login else {
        return Err(ApiError::NotFound(MSG_OIDC_NOT_CONFIGURED));
    };
    let Ok(Query(q)) = query else {
        return Ok(failed(&st, Failure::State));
    };
    let Some(state) = q.state.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(failed(&st, Failure::State));
    };
    // The state must be the one this browser was given at /auth/login: a
    // callback URL made by someone else (to sign the victim in as them)
    // carries a state the victim's browser never had.
    let bound = matches!(
        session::cookie(&headers, st.sessions.cookies.login_name()),
        CookieValue::One(c) if bool::from(c.as_bytes().ct_eq(state.as_bytes()))
    );
    if !bound {
        return Ok(failed(&st, Failure::State));
    }
    let code = match (q.error.as_deref(), q.code.as_deref()) {
        (None, Some(code)) if !code.is_empty() => code,
        (provider_error, _) => {
            // Spend the state anyway: this login is over.
            let _ = login.finish_without_code(&st.db, state).await;
            let f = if provider_error.is_some() {
                tracing::info!("the provider answered the sign-in with an error");
                Failure::Provider
            } else {
                Failure::Code
            };
            return Ok(failed(&st, f));
        }
    };
    let (user, next) = match login.finish(&st.db, state, code).await {
        Ok(done) => done,
        Err(f) => return Ok(failed(&st, f)),
    };
    end_current(&st, &headers).await?;
    let value = st
        .sessions
        .open(&st.db, &user, SessionKind::Oidc, None, client)
        .await?;
    let next = local_next(Some(&next));
    Ok(see_other(
        &next,
        &[
            st.sessions.cookies.clear_login(),
            st.sessions.cookies.session(&value),
        ],
    ))
}

/// Sign in with the admin token (the built-in admin); sets the session cookie.
#[utoipa::path(post, path = "/auth/token", request_body = TokenSignIn,
    responses((status = 204, description = "signed in; Set-Cookie: keygate_session"),
        (status = 401, description = "invalid admin token"),
        (status = 403, description = "cross-site request refused")))]
pub async fn token(
    State(st): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Result<Json<TokenSignIn>, JsonRejection>,
) -> ApiResult<Response> {
    if !st.sessions.origin.allows(&headers) {
        return Err(ApiError::Forbidden(MSG_CROSS_SITE));
    }
    let Json(b) = body?;
    // Constant time (digests compared); an API key is never the admin
    // token, so it opens nothing here either.
    let admin = match &st.admin_token {
        Some(t) if t.matches(&b.token) => t,
        _ => {
            // Counted in keygate_http_requests_total (route, 401); logged
            // at info only, so refusals cannot flood the log.
            tracing::info!("admin-token sign-in refused");
            // Counted per address and minute, never appended per attempt.
            if let Err(e) = audit::store::count_refused_sign_in(&st.db, client, now_unix()).await {
                tracing::warn!(error = %e, "could not count a refused sign-in in the audit log");
            }
            return Err(ApiError::Unauthorized(MSG_INVALID_ADMIN_TOKEN));
        }
    };
    let user = users::ensure_builtin_admin(&st.db).await?;
    end_current(&st, &headers).await?;
    let value = st
        .sessions
        .open(&st.db, &user, SessionKind::AdminToken, Some(admin), client)
        .await?;
    let mut resp = no_store(StatusCode::NO_CONTENT);
    resp.headers_mut()
        .append(SET_COOKIE, st.sessions.cookies.session(&value));
    Ok(resp)
}

/// Sign out: ends this browser's session everywhere and clears the cookie.
#[utoipa::path(post, path = "/auth/logout",
    responses((status = 204, description = "signed out; the cookie is cleared"),
        (status = 403, description = "cross-site request refused")))]
pub async fn logout(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !st.sessions.origin.allows(&headers) {
        return Err(ApiError::Forbidden(MSG_CROSS_SITE));
    }
    // Every session cookie the browser sent ends, even a duplicated one.
    for value in session::cookie_values(&headers, st.sessions.cookies.session_name()) {
        st.sessions.end(&st.db, value).await?;
    }
    let mut resp = no_store(StatusCode::NO_CONTENT);
    resp.headers_mut()
        .append(SET_COOKIE, st.sessions.cookies.clear_session());
    Ok(resp)
}

/// An empty answer no cache may keep: every sign-in answer sets or clears
/// a cookie.
fn no_store(status: StatusCode) -> Response {
    let mut resp = status.into_response();
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A `303 See Other` to a local path, with extra `Set-Cookie` headers.
pub fn see_other(location: &str, cookies: &[HeaderValue]) -> Response {
    let mut resp = no_store(StatusCode::SEE_OTHER);
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    for c in cookies {
        resp.headers_mut().append(SET_COOKIE, c.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::local_next;

    #[test]
    fn next_is_local_only() {
        for ok in ["/", "/api-keys", "/admin/users?x=1&y=%2F%2Fz", "/a/b#c"] {
            assert_eq!(local_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "evil",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /x",
            "/\u{e9}",
            "",
        ] {
            assert_eq!(local_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_next(None), "/");
        assert_eq!(local_next(Some(&format!("/{}", "a".repeat(3000)))), "/");
    }
}
