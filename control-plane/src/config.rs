//! Runtime configuration of the control plane, independent of how it was
//! supplied (CLI flags, environment, or a test building it directly).

use secrecy::SecretString;
use std::net::SocketAddr;

/// Everything the service needs to start. `Debug` shows no secret: tokens
/// are [`SecretString`]s and the database URL hides its password, so the
/// whole value can be logged at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    /// Static bearer acting as the built-in `admin` user; `None` disables it.
    pub admin_token: Option<SecretString>,
    /// Bearer the edge uses for `/internal/v1/*`; `None` disables the feed.
    pub data_plane_token: Option<SecretString>,
    pub oidc: Option<OidcConfig>,
    /// Where people reach the console (`https://keygate.example.com`): the
    /// OIDC redirect URI is `<public_url>/auth/callback`, the same-origin
    /// check compares `Origin` with it, and the session cookie is `Secure`
    /// when it is https. `None`: the origin is `http://` + the request's `Host`.
    pub public_url: Option<String>,
    /// Browser sessions' lifetimes.
    pub sessions: SessionConfig,
    /// How many feed versions the change log keeps; an edge further behind
    /// gets a full snapshot.
    pub feed_log_retention: i64,
    /// How often a waiting long poll re-checks the database even without a
    /// wake-up, so a lost notification never stalls an edge.
    pub feed_recheck: std::time::Duration,
    /// Keys one user may hold (not counting revoked ones, once revocation exists).
    pub max_keys_per_user: u32,
    /// A connection whose request headers are not complete this long after
    /// it opens, or after its previous response (idle keep-alive), is closed.
    pub header_read_timeout: std::time::Duration,
    /// Open connections served at once; beyond it, new ones wait unaccepted.
    pub max_connections: usize,
    /// A connection whose write stays pending this long with no byte taken
    /// by the peer (a client that does not read its answers) is closed.
    pub write_timeout: std::time::Duration,
    /// A request with a body must be received and answered within this, or
    /// it gets 408 and its connection is closed (a dripped body).
    pub request_body_timeout: std::time::Duration,
    /// After SIGTERM, connections still open this long are dropped.
    pub shutdown_timeout: std::time::Duration,
    /// Proxies in front of the control plane that append to
    /// `X-Forwarded-For`: the audit log records the address the outermost
    /// of them saw. 0 (default): the socket peer; the header is ignored.
    pub trusted_proxy_hops: u32,
    /// Audit events older than this many days are pruned; 0 keeps them all.
    pub audit_retention_days: u32,
    /// How often this replica sweeps for keys unused past the key policy's
    /// `maxUnusedDays` (every replica may; see `key_sweep`).
    pub key_policy_sweep: std::time::Duration,
    /// "Now" for the key lifetime policy: the system clock. Only code (tests)
    /// sets another; no flag or environment variable reaches it.
    pub clock: crate::clock::SharedClock,
}

#[derive(Clone, Debug)]
pub struct OidcConfig {
    pub issuer: String,
    /// The `aud` API bearer JWTs must carry; `None`: no bearer JWT is accepted
    /// (browser sign-in only).
    pub audience: Option<String>,
    /// The console's OIDC client (browser sign-in); `None`: only the admin
    /// token signs in.
    pub client: Option<OidcClientConfig>,
    pub admin_emails: Vec<String>,
    pub admin_groups: Vec<String>,
    /// Let `admin_emails` match an email the provider does not mark
    /// `email_verified` (for providers that omit the claim). Default false.
    pub trust_unverified_email: bool,
    /// Least time between JWKS fetches caused by an unknown `kid`, so forged
    /// tokens cannot make us hammer the issuer.
    pub jwks_refetch_interval: std::time::Duration,
}

/// The relying party the console signs people in as. ID tokens must name
/// `id` as their audience.
#[derive(Clone, Debug)]
pub struct OidcClientConfig {
    pub id: String,
    /// `None`: a public client (PKCE only).
    pub secret: Option<SecretString>,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
}

impl OidcClientConfig {
    pub const DEFAULT_SCOPES: [&str; 2] = ["email", "profile"];
}

/// How long a browser session lasts.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle: std::time::Duration,
    /// A session ends this long after sign-in, however busy.
    pub max: std::time::Duration,
}

impl SessionConfig {
    /// Two hours idle: a console left open over lunch asks again.
    pub const DEFAULT_IDLE: std::time::Duration = std::time::Duration::from_secs(2 * 3600);
    /// Twelve hours: at most a working day per sign-in.
    pub const DEFAULT_MAX: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle: Self::DEFAULT_IDLE,
            max: Self::DEFAULT_MAX,
        }
    }
}

impl OidcConfig {
    pub const DEFAULT_JWKS_REFETCH: std::time::Duration = std::time::Duration::from_secs(10);
}

impl Config {
    pub const DEFAULT_MAX_KEYS_PER_USER: u32 = 100;
    pub const DEFAULT_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    /// Room for 10,000 parked feed long polls per replica, twice over.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
    pub const DEFAULT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    pub const DEFAULT_REQUEST_BODY_TIMEOUT: std::time::Duration =
        std::time::Duration::from_secs(30);
    pub const DEFAULT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    /// A year of audit events.
    pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 365;
    pub const DEFAULT_KEY_POLICY_SWEEP: std::time::Duration = std::time::Duration::from_secs(60);

    /// A configuration with defaults for everything but the database.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            database_url: DatabaseUrl(database_url.into()),
            admin_token: None,
            data_plane_token: None,
            oidc: None,
            public_url: None,
            sessions: SessionConfig::default(),
            feed_log_retention: 100_000,
            feed_recheck: std::time::Duration::from_secs(1),
            max_keys_per_user: Self::DEFAULT_MAX_KEYS_PER_USER,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            write_timeout: Self::DEFAULT_WRITE_TIMEOUT,
            request_body_timeout: Self::DEFAULT_REQUEST_BODY_TIMEOUT,
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            trusted_proxy_hops: 0,
            audit_retention_days: Self::DEFAULT_AUDIT_RETENTION_DAYS,
            key_policy_sweep: Self::DEFAULT_KEY_POLICY_SWEEP,
            clock: crate::clock::system(),
        }
    }
}

/// A database URL, which may carry a password: shown (`Debug`, `Display`)
/// without it; [`DatabaseUrl::expose`] is for connecting only.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Drops a password from a database URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let mut c = Config::new("postgres://u:db-password@h/db");
        c.admin_token = Some("admin-token-value".into());
        c.data_plane_token = Some("data-plane-token-value".into());
        let shown = format!("{c:?}");
        for secret in ["db-password", "admin-token-value", "data-plane-token-value"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("postgres://u:***@h/db"), "{shown}");
        assert_eq!(c.database_url.expose(), "postgres://u:db-password@h/db");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
