//! `keygate-control-plane serve`: parses flags (each with an environment
//! variable), sets up logging, runs the server until SIGTERM or Ctrl-C.

use clap::{Parser, Subcommand};
use keygate_control_plane::config::{Config, OidcClientConfig, OidcConfig, SessionConfig};
use std::net::SocketAddr;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "keygate-control-plane",
    version,
    about = "keygate control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and the key-table feed.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// `sqlite://file.db` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "KEYGATE_DATABASE_URL",
        default_value = "sqlite://keygate.db"
    )]
    database_url: String,
    /// Static bearer token acting as the built-in admin user `admin`.
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Bearer token the edge uses for /internal/v1/*.
    #[arg(long, env = "KEYGATE_DATA_PLANE_TOKEN", hide_env_values = true)]
    data_plane_token: Option<String>,
    /// OpenID provider (discovery at <issuer>/.well-known/openid-configuration);
    /// needs --oidc-audience (API bearer JWTs), --oidc-client-id (console
    /// sign-in), or both.
    #[arg(long, env = "KEYGATE_OIDC_ISSUER")]
    oidc_issuer: Option<String>,
    /// The `aud` API bearer JWTs must carry; unset: no bearer JWT is accepted.
    #[arg(long, env = "KEYGATE_OIDC_AUDIENCE", requires = "oidc_issuer")]
    oidc_audience: Option<String>,
    /// The console's client id at the provider (enables "Sign in with OpenID
    /// Connect"; ID tokens must name it as audience). Needs --public-url. The
    /// client secret is read from KEYGATE_OIDC_CLIENT_SECRET only (unset: a
    /// public client, PKCE only).
    #[arg(long, env = "KEYGATE_OIDC_CLIENT_ID", requires_all = ["oidc_issuer", "public_url"])]
    oidc_client_id: Option<String>,
    /// Scopes the console asks for besides `openid` (repeat or comma-separate;
    /// add `groups` for providers such as Dex that need it for the claim).
    #[arg(long, env = "KEYGATE_OIDC_SCOPE", value_delimiter = ',',
          default_values_t = OidcClientConfig::DEFAULT_SCOPES.map(String::from))]
    oidc_scope: Vec<String>,
    /// Where people reach the console, e.g. https://keygate.example.com: the
    /// OIDC redirect URI is <public-url>/auth/callback, writes must come from
    /// this origin, and cookies are Secure when it is https.
    #[arg(long, env = "KEYGATE_PUBLIC_URL")]
    public_url: Option<String>,
    /// A console session unused this many minutes ends.
    #[arg(long, env = "KEYGATE_SESSION_IDLE_MINUTES",
          default_value_t = SessionConfig::DEFAULT_IDLE.as_secs() / 60,
          value_parser = clap::value_parser!(u64).range(1..=525_600))]
    session_idle_minutes: u64,
    /// A console session ends this many hours after sign-in, however busy.
    #[arg(long, env = "KEYGATE_SESSION_MAX_HOURS",
          default_value_t = SessionConfig::DEFAULT_MAX.as_secs() / 3600,
          value_parser = clap::value_parser!(u64).range(1..=8_760))]
    session_max_hours: u64,
    /// Emails that get role admin (repeat or comma-separate).
    #[arg(long, env = "KEYGATE_OIDC_ADMIN_EMAIL", value_delimiter = ',')]
    oidc_admin_email: Vec<String>,
    /// Values of the `groups` claim that get role admin.
    #[arg(long, env = "KEYGATE_OIDC_ADMIN_GROUP", value_delimiter = ',')]
    oidc_admin_group: Vec<String>,
    /// Let --oidc-admin-email match emails without `email_verified: true`.
    #[arg(long, env = "KEYGATE_OIDC_TRUST_UNVERIFIED_EMAIL")]
    oidc_trust_unverified_email: bool,
    /// Feed versions the change log keeps; edges further behind get a full snapshot.
    #[arg(long, env = "KEYGATE_FEED_LOG_RETENTION", default_value_t = 100_000)]
    feed_log_retention: i64,
    /// Keys one user may hold, on both create routes (409 beyond it).
    #[arg(long, env = "KEYGATE_MAX_KEYS_PER_USER", default_value_t = Config::DEFAULT_MAX_KEYS_PER_USER,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_keys_per_user: u32,
    /// Close a connection whose request headers are not complete within this
    /// many seconds (also ends keep-alive connections idle that long).
    #[arg(long, env = "KEYGATE_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_seconds: u64,
    /// Open connections served at once; more wait in the listen backlog.
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS", default_value_t = Config::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Close a connection whose answer the client has not read any of for
    /// this many seconds (a write stuck with no progress).
    #[arg(long, env = "KEYGATE_WRITE_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    write_timeout_seconds: u64,
    /// A request with a body must be received and answered within this many
    /// seconds, or it gets 408 and the connection is closed.
    #[arg(long, env = "KEYGATE_REQUEST_BODY_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    request_body_timeout_seconds: u64,
    /// After SIGTERM, drop connections still open after this many seconds.
    #[arg(long, env = "KEYGATE_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    shutdown_timeout_seconds: u64,
    /// Proxies in front of the control plane that append the client's
    /// address to X-Forwarded-For (an Envoy with use_remote_address: 1).
    /// The audit log records the N-th address from the right; 0 records the
    /// socket peer and ignores the header, which a client can write.
    #[arg(long, env = "KEYGATE_TRUSTED_PROXY_HOPS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=16))]
    trusted_proxy_hops: u32,
    /// Audit events older than this many days are deleted (hourly, by every
    /// replica); 0 keeps them forever.
    #[arg(long, env = "KEYGATE_AUDIT_RETENTION_DAYS", default_value_t = Config::DEFAULT_AUDIT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    audit_retention_days: u32,
    /// Every this many seconds, turn off keys unused past the key policy's
    /// maxUnusedDays (safe on every replica at once).
    #[arg(long, env = "KEYGATE_KEY_POLICY_SWEEP_SECONDS",
          default_value_t = Config::DEFAULT_KEY_POLICY_SWEEP.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    key_policy_sweep_seconds: u64,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config, String> {
        let mut c = Config::new(self.database_url);
        c.listen = self.listen;
        c.admin_token = self.admin_token.filter(|t| !t.is_empty()).map(Into::into);
        c.data_plane_token = self
            .data_plane_token
            .filter(|t| !t.is_empty())
            .map(Into::into);
        c.feed_log_retention = self.feed_log_retention;
        c.max_keys_per_user = self.max_keys_per_user;
        c.header_read_timeout = std::time::Duration::from_secs(self.header_read_timeout_seconds);
        c.max_connections = self.max_connections;
        c.write_timeout = std::time::Duration::from_secs(self.write_timeout_seconds);
        c.request_body_timeout = std::time::Duration::from_secs(self.request_body_timeout_seconds);
        c.shutdown_timeout = std::time::Duration::from_secs(self.shutdown_timeout_seconds);
        c.trusted_proxy_hops = self.trusted_proxy_hops;
        c.audit_retention_days = self.audit_retention_days;
        c.key_policy_sweep = std::time::Duration::from_secs(self.key_policy_sweep_seconds);
        c.public_url = self.public_url.filter(|u| !u.is_empty());
        c.sessions = SessionConfig {
            idle: std::time::Duration::from_secs(self.session_idle_minutes * 60),
            max: std::time::Duration::from_secs(self.session_max_hours * 3600),
        };
        let client = self.oidc_client_id.map(|id| OidcClientConfig {
            id,
            // Environment only: a flag would show in `ps`.
            secret: std::env::var("KEYGATE_OIDC_CLIENT_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
                .map(Into::into),
            scopes: self.oidc_scope,
        });
        c.oidc = match self.oidc_issuer {
            Some(issuer) => {
                if self.oidc_audience.is_none() && client.is_none() {
                    return Err("--oidc-issuer needs --oidc-audience (API bearer tokens), \
                         --oidc-client-id (console sign-in), or both"
                        .into());
                }
                Some(OidcConfig {
                    issuer,
                    audience: self.oidc_audience,
                    client,
                    admin_emails: self.oidc_admin_email,
                    admin_groups: self.oidc_admin_group,
                    trust_unverified_email: self.oidc_trust_unverified_email,
                    jwks_refetch_interval: OidcConfig::DEFAULT_JWKS_REFETCH,
                })
            }
            None => None,
        };
        Ok(c)
    }
}

/// Installs the SIGTERM and Ctrl-C handlers now, and returns a future that
/// ends at the first of them. Installed before serving starts: a SIGTERM
/// right after `listening on` must shut down gracefully, not kill the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        {
            async fn recv(s: std::io::Result<tokio::signal::unix::Signal>) {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = recv(term) => {},
                _ = recv(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Plain text when piped, so `listening on <addr>` is easy to grep.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let Command::Serve(args) = Cli::parse().command;
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(?config, "starting");
    keygate_control_plane::serve::raise_fd_limit(config.max_connections);
    let stop = shutdown_signal();
    let server = match keygate_control_plane::start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    stop.await;
    tracing::info!("shutting down");
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            ExitCode::FAILURE
        }
    }
}
