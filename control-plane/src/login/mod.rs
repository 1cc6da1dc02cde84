//! Browser sign-in through the OpenID provider, as a relying party built on
//! the `openidconnect` crate: authorization code flow with PKCE (S256),
//! `state` and `nonce`. The ID token's audience must be the console's client
//! id (API bearer JWTs keep `--oidc-audience`, see [`crate::oidc`]); which
//! user it names, and that user's role, is [`crate::identity`]'s decision.
//!
//! Between the redirect and the callback, the login lives in the database
//! (`pending_logins`, keyed by the SHA-256 of `state`), so any replica can
//! finish it; the callback deletes the row as it reads it, so a replayed
//! callback (same `state`, same code) finds nothing. Provider metadata and
//! keys come from discovery on `--oidc-issuer`, cached for an hour and
//! fetched again when an ID token names a key not in the cache.

use crate::config::{Config, OidcClientConfig, OidcConfig};
use crate::db::sessions::{self as store, PendingLogin};
use crate::db::{Db, users::UserRow};
use crate::domain::now_unix;
use crate::identity::{self, Identity, groups_claim};
use crate::session::{digest_hex, public_url};
use client::{ALLOWED_ALGS, RpClient};
use http::Http;
use openidconnect::core::{CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

mod client;
pub mod http;

/// How long a login may take between the redirect and the callback.
pub const LOGIN_TTL_SECS: i64 = 600;
/// Logins started and not finished within [`LOGIN_TTL_SECS`] that the
/// database holds at most: `/auth/login` needs no credential, so without a
/// bound anyone could fill the table. At the bound the oldest unfinished
/// logins make room: refusing new ones instead would let anyone lock every
/// person out of OIDC sign-in with a few requests a second. A flood can
/// still push out a person's login in progress (they start again); an
/// Envoy rate limit on `/auth/login` bounds that (docs/security.md).
pub const MAX_PENDING_LOGINS: i64 = 10_000;
/// Provider metadata and keys older than this are fetched again.
const METADATA_MAX_AGE: Duration = Duration::from_secs(3600);
/// Least time between fetches caused by an ID token with an unknown key.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Why a sign-in failed, as the `error` code the sign-in page shows a fixed
/// message for (`/signin?error=<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Missing, unknown, expired, reused, or not this browser's `state`.
    State,
    /// The ID token's nonce is not the one this login sent.
    Nonce,
    /// The provider refused the code (reused, expired, or not for us).
    Code,
    /// The provider is unreachable, answered an error, or sent no valid ID token.
    Provider,
    /// The identity cannot be a keygate user (name or subject conflict).
    Account,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::State => "state",
            Failure::Nonce => "nonce",
            Failure::Code => "code",
            Failure::Provider => "provider",
            Failure::Account => "account",
        }
    }
}

struct Discovered {
    metadata: Arc<CoreProviderMetadata>,
    fetched: Instant,
}

/// The configured relying party.
pub struct Login {
    oidc: OidcConfig,
    client: OidcClientConfig,
    redirect: RedirectUrl,
    http: Http,
    discovered: Mutex<Option<Discovered>>,
}

impl Login {
    /// `Some` when a client id is configured; it needs `--public-url`.
    pub fn from_config(c: &Config) -> Result<Option<Self>, String> {
        let Some(oidc) = &c.oidc else {
            return Ok(None);
        };
        let Some(client) = &oidc.client else {
            return Ok(None);
        };
        let Some(public) = &c.public_url else {
            return Err("--oidc-client-id needs --public-url (the redirect URI is \
                 <public-url>/auth/callback)"
                .into());
        };
        let base = public_url(public)?;
        if base.path() != "/" {
            return Err(format!(
                "--public-url {public:?} must not have a path: the console is served at the root"
            ));
        }
        let redirect = RedirectUrl::new(format!(
            "{}{}",
            base.origin().ascii_serialization(),
            crate::session::CALLBACK_PATH
        ))
        .map_err(|e| format!("redirect URI: {e}"))?;
        IssuerUrl::new(oidc.issuer.clone()).map_err(|e| format!("--oidc-issuer: {e}"))?;
        Ok(Some(Self {
            oidc: oidc.clone(),
            client: client.clone(),
            redirect,
            http: Http::new()?,
            discovered: Mutex::new(None),
        }))
    }

    /// The redirect URI registered with the provider.
    pub fn redirect_uri(&self) -> &str {
        self.redirect.as_str()
    }

    /// Provider metadata: cached, fetched when missing or older than an
    /// hour, or (`refresh`) when older than [`REFETCH_INTERVAL`]. A failed
    /// fetch keeps the cached copy.
    async fn metadata(&self, refresh: bool) -> Option<Arc<CoreProviderMetadata>> {
        let mut cache = self.discovered.lock().await;
        let stale = match &*cache {
            None => true,
            Some(d) if refresh => d.fetched.elapsed() >= REFETCH_INTERVAL,
            Some(d) => d.fetched.elapsed() >= METADATA_MAX_AGE,
        };
        if stale {
            let issuer = IssuerUrl::new(self.oidc.issuer.clone()).ok()?;
            match CoreProviderMetadata::discover_async(issuer, &self.http).await {
                Ok(m) => {
                    *cache = Some(Discovered {
                        metadata: Arc::new(m),
                        fetched: Instant::now(),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "OIDC discovery failed");
                    if let Some(d) = cache.as_mut() {
                        // Do not retry on every request while the provider is down.
                        d.fetched = Instant::now();
                    }
                }
            }
        }
        cache.as_ref().map(|d| d.metadata.clone())
    }

    fn client(&self, metadata: &CoreProviderMetadata) -> RpClient {
        RpClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.client.id.clone()),
            self.client
                .secret
                .as_ref()
                .map(|s| ClientSecret::new(secrecy::ExposeSecret::expose_secret(s).to_owned())),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Starts a login: records it and returns the provider URL to send the
    /// browser to, and the `state` to bind to this browser.
    pub async fn start(&self, db: &Db, next: &str) -> Result<(String, String), Failure> {
        let metadata = self.metadata(false).await.ok_or(Failure::Provider)?;
        let client = self.client(&metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.client.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let now = now_unix();
        let login = PendingLogin {
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            next_path: next.to_owned(),
            created_at: now,
        };
        let stored = async {
            let mut conn = db.conn().await?;
            store::prune_pending(&mut conn, now - LOGIN_TTL_SECS).await?;
            let pending = store::count_pending(&mut conn).await?;
            let full = pending >= MAX_PENDING_LOGINS;
            if full {
                store::evict_oldest_pending(&mut conn, pending - MAX_PENDING_LOGINS + 1).await?;
            }
            store::insert_pending(&mut conn, &digest_hex(state.secret()), &login).await?;
            Ok::<_, sqlx::Error>(full)
        };
        match stored.await {
            Ok(false) => {}
            Ok(true) => {
                tracing::warn!(
                    limit = MAX_PENDING_LOGINS,
                    "unfinished logins at their limit: the oldest made room"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record a pending login");
                return Err(Failure::Provider);
            }
        }
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Ends a login the provider answered without a code (an error, or a
    /// person who declined): its record is spent like any other.
    pub async fn finish_without_code(&self, db: &Db, state: &str) -> Result<(), sqlx::Error> {
        let mut conn = db.conn().await?;
        store::take_pending(&mut conn, &digest_hex(state)).await?;
        Ok(())
    }

    /// Finishes a login: takes its record (once), redeems the code with the
    /// PKCE verifier, verifies the ID token (signature, issuer, audience =
    /// client id, expiry, nonce) and returns its user and where to go next.
    pub async fn finish(
        &self,
        db: &Db,
        state: &str,
        code: &str,
    ) -> Result<(UserRow, String), Failure> {
        let pending = {
            let mut conn = db.conn().await.map_err(|_| Failure::Provider)?;
            store::take_pending(&mut conn, &digest_hex(state))
                .await
                .map_err(|_| Failure::Provider)?
                .ok_or(Failure::State)?
        };
        if now_unix() - pending.created_at >= LOGIN_TTL_SECS {
            return Err(Failure::State);
        }
        let metadata = self.metadata(false).await.ok_or(Failure::Provider)?;
        let client = self.client(&metadata);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| Failure::Provider)?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    tracing::info!(error = %r.error(), "the provider refused the code");
                    Failure::Code
                }
                other => {
                    // The message names the failure kind only, never a body.
                    tracing::warn!(error = %other, "token request failed");
                    Failure::Provider
                }
            })?;
        let id_token = response
            .extra_fields()
            .id_token()
            .ok_or(Failure::Provider)?;
        let nonce = Nonce::new(pending.nonce.clone());
        let verify = |c: &RpClient| -> Result<Identity, ClaimsVerificationError> {
            let verifier = c.id_token_verifier().set_allowed_algs(ALLOWED_ALGS);
            let claims = id_token.claims(&verifier, &nonce)?;
            Ok(Identity {
                issuer: self.oidc.issuer.clone(),
                subject: claims.subject().as_str().to_owned(),
                preferred_username: claims.preferred_username().map(|u| u.as_str().to_owned()),
                email: claims.email().map(|e| e.as_str().to_owned()),
                email_verified: claims.email_verified().unwrap_or(false),
                groups: groups_claim(claims.additional_claims().groups.as_ref()),
            })
        };
        let identity = match verify(&client) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys since discovery.
                let fresh = self.metadata(true).await.ok_or(Failure::Provider)?;
                verify(&self.client(&fresh))
            }
            other => other,
        }
        .map_err(|e| match e {
            ClaimsVerificationError::InvalidNonce(_) => {
                tracing::warn!("ID token refused: nonce mismatch");
                Failure::Nonce
            }
            _ => {
                tracing::warn!(reason = verification_kind(&e), "ID token refused");
                Failure::Provider
            }
        })?;
        let user = identity::find_or_create(db, &self.oidc, &identity)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "OIDC sign-in: no keygate user for this identity");
                Failure::Account
            })?;
        Ok((user, pending.next_path))
    }
}

/// A verification error's kind, for the log (its message may quote claims).
fn verification_kind(e: &ClaimsVerificationError) -> &'static str {
    match e {
        ClaimsVerificationError::Expired(_) => "expired",
        ClaimsVerificationError::InvalidAudience(_) => "audience",
        ClaimsVerificationError::InvalidIssuer(_) => "issuer",
        ClaimsVerificationError::SignatureVerification(_) => "signature",
        ClaimsVerificationError::InvalidNonce(_) => "nonce",
        _ => "claims",
    }
}
