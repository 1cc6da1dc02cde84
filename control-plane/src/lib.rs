//! keygate control plane: users, MCP servers, access rules and API keys, the
//! user and admin APIs, `/api/me`, and the key-table feed the edge filter pulls.
//!
//! [`start`] binds, migrates and serves; `main.rs` only parses the CLI and
//! waits for a signal, so tests run the real app in-process.
//!
//! Serving is hyper's HTTP/1 connection builder rather than `axum::serve`,
//! which has neither a header-read timeout nor a connection cap: the port is
//! reachable by anything on the Envoys' network, so half-sent requests must
//! not pin connections and their count must be bounded (issue 9, finding 4b).

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod feed;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod routes;

use crate::auth::StaticToken;
use crate::config::Config;
use crate::db::{Backend, Db};
use crate::feed::FeedNotifier;
use crate::metrics::Metrics;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub feed: FeedNotifier,
    pub metrics: Arc<Metrics>,
    pub admin_token: Option<StaticToken>,
    pub data_plane_token: Option<StaticToken>,
    pub oidc: Option<Arc<oidc::Oidc>>,
    pub feed_recheck: Duration,
    /// Checked when a key is created, inside the write transaction.
    pub max_keys_per_user: u32,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running server: its address, and how to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    listener_task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (long polls included), and returns.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.state.feed.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.listener_task.take() {
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
        if self.shutdown.is_some() {
            self.task.abort();
        }
    }
}

/// Connects and migrates the database and builds the shared state.
pub async fn build_state(config: &Config) -> Result<AppState, BoxError> {
    let db = Db::connect(&config.database_url, config.feed_log_retention).await?;
    let oidc = match &config.oidc {
        Some(o) => Some(Arc::new(oidc::Oidc::new(o.clone())?)),
        None => None,
    };
    let state = AppState {
        db,
        feed: FeedNotifier::default(),
        metrics: Arc::new(Metrics::default()),
        admin_token: config.admin_token.as_deref().map(StaticToken::new),
        data_plane_token: config.data_plane_token.as_deref().map(StaticToken::new),
        oidc,
        feed_recheck: config.feed_recheck,
        max_keys_per_user: config.max_keys_per_user,
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
            config.database_url.clone(),
            state.feed.clone(),
        ))
    });
    let app = routes::router(state.clone());
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let (timeout, max) = (config.header_read_timeout, config.max_connections);
    let task = tokio::spawn(serve(listener, app, timeout, max, rx));
    tracing::info!(
        max_connections = max,
        header_read_timeout = ?timeout,
        "connection limit {max}, header-read timeout {timeout:?}"
    );
    tracing::info!(%addr, "listening on {addr}");
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
        listener_task,
    })
}

/// Accepts and serves connections until `stop` fires, then lets in-flight
/// requests finish (long polls are released by `FeedNotifier::close` first).
///
/// At `max_connections` open connections the loop stops calling `accept`:
/// new connections wait in the kernel's listen backlog (or are refused by it
/// when full) until one closes, instead of being accepted and starved.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    max_connections: usize,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    // Clamped: 0 would never serve, and Semaphore panics above MAX_PERMITS.
    let slots = Arc::new(Semaphore::new(
        max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer is what makes hyper enforce the timeout at all. hyper also
    // applies it to a keep-alive connection waiting for its next request.
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let slot = tokio::select! {
            biased;
            _ = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let stream = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Header timeouts and resets land here; nothing of the request is logged.
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Per-connection accept errors (the peer reset before we took it) are
/// skipped; others, such as running out of file descriptors, are logged and
/// retried after a pause rather than in a busy loop.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Descriptors the process needs besides client connections: database pool,
/// listener, PostgreSQL LISTEN connection, OIDC fetches, stdio, epoll.
const FD_RESERVE: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit so `max_connections`
/// sockets can actually be open, logs the result, and warns when the cap
/// is larger than the limit allows.
#[cfg(unix)]
pub fn raise_fd_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
        }
    };
    let soft = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                soft
            }
        }
    } else {
        soft
    };
    let needed = (max_connections as u64).saturating_add(FD_RESERVE);
    if needed > soft {
        tracing::warn!(
            open_file_limit = soft,
            max_connections,
            "open-file limit {soft} is below --max-connections {max_connections} plus {FD_RESERVE} \
             in reserve: raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower --max-connections"
        );
    } else {
        tracing::info!(open_file_limit = soft, "open-file limit {soft}");
    }
}

#[cfg(not(unix))]
pub fn raise_fd_limit(_max_connections: usize) {}
