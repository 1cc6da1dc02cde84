//! keygate control plane: users, MCP servers, access rules and API keys, the
//! user and admin APIs, `/api/me`, and the key-table feed the edge filter pulls.
//!
//! [`start`] binds, migrates and serves (through [`serve`]); `main.rs` only
//! parses the CLI and waits for a signal, so tests run the real app
//! in-process.

pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod feed;
pub mod identity;
pub mod json_errors;
pub mod key_sweep;
pub mod login;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod session;

use crate::auth::StaticToken;
use crate::config::Config;
use crate::db::{Backend, Db};
use crate::feed::FeedNotifier;
use crate::metrics::Metrics;
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// The database's notifier ([`Db::feed`]): wakes the feed's follower.
    pub feed: FeedNotifier,
    /// This replica's follower of the feed version and its shared answers.
    pub feed_hub: Arc<feed::Hub>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Option<StaticToken>,
    pub data_plane_token: Option<StaticToken>,
    pub oidc: Option<Arc<oidc::Oidc>>,
    /// Browser sign-in through the OpenID provider, when a client id is set.
    pub login: Option<Arc<login::Login>>,
    /// Session lifetimes, cookies and the console's origin.
    pub sessions: Arc<session::Sessions>,
    /// Checked when a key is created, inside the write transaction.
    pub max_keys_per_user: u32,
    /// Proxies whose `X-Forwarded-For` entries are believed ([`audit::client`]).
    pub trusted_proxy_hops: u32,
    /// "Now" for the key lifetime policy (the system clock but in tests).
    pub clock: clock::SharedClock,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running server: its address, and how to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    listener_task: Option<JoinHandle<()>>,
    /// Prunes the audit log past its retention ([`audit::retention`]).
    retention_task: JoinHandle<()>,
    /// The unused-key sweep ([`key_sweep::run`]).
    sweep_task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Releases the long polls, stops accepting, lets in-flight requests
    /// finish, and returns; connections still open after
    /// `Config::shutdown_timeout` (a client not reading its answer) are dropped.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.state.feed.close();
        self.state.feed_hub.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.listener_task.take() {
            t.abort();
        }
        self.retention_task.abort();
        if let Some(t) = self.sweep_task.take() {
            t.abort();
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(t) = self.listener_task.take() {
            t.abort();
        }
        self.retention_task.abort();
        if let Some(t) = self.sweep_task.take() {
            t.abort();
        }
        if self.shutdown.is_some() {
            self.task.abort();
        }
    }
}

/// Connects and migrates the database and builds the shared state.
pub async fn build_state(config: &Config) -> Result<AppState, BoxError> {
    let db = Db::connect(config.database_url.expose(), config.feed_log_retention).await?;
    let oidc = match &config.oidc {
        Some(o) => Some(Arc::new(oidc::Oidc::new(o.clone())?)),
        None => None,
    };
    let sessions = Arc::new(session::Sessions::from_config(config)?);
    let login = login::Login::from_config(config)?.map(Arc::new);
    if let Some(o) = &config.oidc {
        let mut conn = db.conn().await?;
        let stamped = db::users::stamp_oidc_issuer(&mut conn, &o.issuer).await?;
        if stamped > 0 {
            tracing::info!(
                users = stamped,
                "recorded the OIDC issuer of {stamped} users from before issuers were stored"
            );
        }
    }
    let metrics = Arc::new(Metrics::default());
    let feed_hub = feed::Hub::start(
        db.clone(),
        metrics.clone(),
        config.feed_recheck,
        feed::hub::DEFAULT_CACHE_BYTES,
    )
    .await?;
    let state = AppState {
        feed: db.feed.clone(),
        feed_hub,
        db,
        metrics,
        admin_token: config
            .admin_token
            .as_ref()
            .map(|t| StaticToken::new(t.expose_secret())),
        data_plane_token: config
            .data_plane_token
            .as_ref()
            .map(|t| StaticToken::new(t.expose_secret())),
        oidc,
        login,
        sessions,
        max_keys_per_user: config.max_keys_per_user,
        trusted_proxy_hops: config.trusted_proxy_hops,
        clock: config.clock.clone(),
    };
    if state.admin_token.is_some() {
        db::users::ensure_builtin_admin(&state.db).await?;
    }
    Ok(state)
}

/// Starts serving on `config.listen` (port 0 picks a free port) and logs
/// `listening on <addr>` once ready.
pub async fn start(config: Config) -> Result<RunningServer, BoxError> {
    let state = build_state(&config).await?;
    let listener_task = (state.db.backend == Backend::Postgres).then(|| {
        tokio::spawn(feed::listen_postgres(
            config.database_url.expose().to_owned(),
            state.feed.clone(),
        ))
    });
    let retention_task = tokio::spawn(audit::retention::run(
        state.db.clone(),
        config.audit_retention_days,
    ));
    let sweep_task = Some(tokio::spawn(key_sweep::run(
        state.db.clone(),
        state.clock.clone(),
        config.key_policy_sweep,
    )));
    let app = routes::router(state.clone());
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let limits = serve::Limits {
        header_read_timeout: config.header_read_timeout,
        write_timeout: config.write_timeout,
        max_connections: config.max_connections,
        shutdown_timeout: config.shutdown_timeout,
        request_body_timeout: config.request_body_timeout,
    };
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = ?limits.header_read_timeout,
        write_timeout = ?limits.write_timeout,
        request_body_timeout = ?config.request_body_timeout,
        shutdown_timeout = ?limits.shutdown_timeout,
        trusted_proxy_hops = config.trusted_proxy_hops,
        audit_retention_days = config.audit_retention_days,
        "connection limit {}, header-read timeout {:?}, write timeout {:?}, \
         request-body timeout {:?}, shutdown deadline {:?}",
        limits.max_connections,
        limits.header_read_timeout,
        limits.write_timeout,
        config.request_body_timeout,
        limits.shutdown_timeout,
    );
    let task = tokio::spawn(serve::serve(listener, app, limits, rx));
    tracing::info!(%addr, "listening on {addr}");
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
        listener_task,
        retention_task,
        sweep_task,
    })
}
