//! OIDC bearer JWTs: discovery, a cached JWKS (refetched on an unknown `kid`,
//! at most once per `jwks_refetch_interval`, one fetch at a time; a cached
//! `kid` never waits on a fetch), signature and claim verification (`aud` is
//! `--oidc-audience`; without one no bearer JWT is accepted). Which user a
//! token is, and its role, is decided by [`crate::identity`].

use crate::config::OidcConfig;
use crate::db::{Db, users};
use crate::error::ApiError;
use crate::identity::{self, Identity, groups_claim, verified_claim};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Asymmetric algorithms only: an HMAC "key" from a JWKS would be public.
const ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// How long a request with an unknown `kid` waits for a JWKS fetch already
/// in flight before it is refused (401). A healthy issuer answers well within
/// it, so a rotation's first requests still succeed; a hanging one (up to the
/// HTTP timeout) costs each further miss this much, not a fetch of its own.
const FETCH_WAIT: Duration = Duration::from_secs(1);

pub struct Oidc {
    cfg: OidcConfig,
    http: reqwest::Client,
    /// Known keys by `kid`; read on every request without waiting on a fetch.
    keys: RwLock<HashMap<String, KnownKey>>,
    /// Held while fetching, so concurrent misses cause one fetch; others
    /// wait for it at most [`FETCH_WAIT`].
    fetcher: Mutex<FetchState>,
}

/// A JWKS key and the one algorithm its JWK allows, when it names one.
#[derive(Clone)]
struct KnownKey {
    key: DecodingKey,
    alg: Option<KeyAlgorithm>,
}

impl KnownKey {
    /// Whether a token signed with `alg` may be checked against this key.
    /// The key type must fit the algorithm family too; jsonwebtoken refuses
    /// that mismatch itself (`InvalidAlgorithm`), so it is not repeated here.
    fn allows(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|a| a == KeyAlgorithm::from(alg))
    }
}

#[derive(Default)]
struct FetchState {
    jwks_uri: Option<String>,
    last_fetch: Option<Instant>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    groups: Option<serde_json::Value>,
}

impl Oidc {
    pub fn new(cfg: OidcConfig) -> Result<Self, String> {
        // reqwest is built without a bundled crypto provider; use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Self {
            cfg,
            http,
            keys: RwLock::new(HashMap::new()),
            fetcher: Mutex::new(FetchState::default()),
        })
    }

    async fn fetch(&self, cache: &mut FetchState) -> Result<(), String> {
        cache.last_fetch = Some(Instant::now());
        let jwks_uri = match &cache.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.cfg.issuer.trim_end_matches('/')
                );
                let d: Discovery = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("OIDC discovery failed: {e}"))?
                    .json()
                    .await
                    .map_err(|e| format!("OIDC discovery unreadable: {e}"))?;
                if d.issuer.trim_end_matches('/') != self.cfg.issuer.trim_end_matches('/') {
                    return Err("OIDC discovery names a different issuer".into());
                }
                cache.jwks_uri = Some(d.jwks_uri.clone());
                d.jwks_uri
            }
        };
        let set: JwkSet = self
            .http
            .get(&jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("JWKS fetch failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("JWKS unreadable: {e}"))?;
        let keys = set
            .keys
            .iter()
            // Encryption keys never verify signatures.
            .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                let alg = jwk.common.key_algorithm;
                Some((kid, KnownKey { key, alg }))
            })
            .collect();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    fn known_key(&self, kid: &str) -> Option<KnownKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }

    async fn key_for(&self, kid: &str) -> Option<KnownKey> {
        if let Some(k) = self.known_key(kid) {
            return Some(k);
        }
        let Ok(mut state) = tokio::time::timeout(FETCH_WAIT, self.fetcher.lock()).await else {
            tracing::debug!("a JWKS fetch is still in flight; refusing an unknown kid");
            return None;
        };
        // Another request may have fetched while we waited for the lock.
        if let Some(k) = self.known_key(kid) {
            return Some(k);
        }
        let may_fetch = state
            .last_fetch
            .is_none_or(|t| t.elapsed() >= self.cfg.jwks_refetch_interval);
        if may_fetch && let Err(e) = self.fetch(&mut state).await {
            tracing::warn!(error = %e, "cannot refresh OIDC keys");
        }
        self.known_key(kid)
    }

    fn verify_with(&self, token: &str, alg: Algorithm, key: &DecodingKey) -> Option<Claims> {
        let audience = self.cfg.audience.as_deref()?;
        let mut v = Validation::new(alg);
        v.set_issuer(&[self.cfg.issuer.as_str()]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, key, &v)
            .ok()
            .map(|d| d.claims)
    }

    /// Verifies a JWT and returns its user, creating it on first sight.
    pub async fn authenticate(&self, db: &Db, token: &str) -> Result<users::UserRow, ApiError> {
        if self.cfg.audience.is_none() {
            return Err(ApiError::InvalidToken);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::InvalidToken)?;
        if !ALLOWED.contains(&header.alg) {
            return Err(ApiError::InvalidToken);
        }
        let kid = header.kid.ok_or(ApiError::InvalidToken)?;
        let key = self.key_for(&kid).await.ok_or(ApiError::InvalidToken)?;
        // A JWK that names an algorithm binds its key to it: a PS256 or
        // RS512 token is not checked against a key published for RS256.
        if !key.allows(header.alg) {
            return Err(ApiError::InvalidToken);
        }
        let claims = self
            .verify_with(token, header.alg, &key.key)
            .ok_or(ApiError::InvalidToken)?;
        if claims.sub.is_empty() {
            return Err(ApiError::InvalidToken);
        }
        let identity = Identity {
            issuer: self.cfg.issuer.clone(),
            subject: claims.sub,
            preferred_username: claims.preferred_username,
            email: claims.email,
            email_verified: verified_claim(claims.email_verified.as_ref()),
            groups: groups_claim(claims.groups.as_ref()),
        };
        identity::find_or_create(db, &self.cfg, &identity).await
    }
}
