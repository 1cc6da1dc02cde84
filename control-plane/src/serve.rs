//! Serving connections: hyper's HTTP/1 connection builder rather than
//! `axum::serve`, which has neither a header-read timeout nor a connection
//! cap. The port is reachable by anything on the Envoys' network, so
//! half-sent requests must not pin connections and their count must be
//! bounded; and the process must be allowed that many sockets.

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

/// Accepts and serves connections until `stop` fires, then lets in-flight
/// requests finish (long polls are released by `FeedNotifier::close` first).
///
/// At `max_connections` open connections the loop stops calling `accept`:
/// new connections wait in the kernel's listen backlog (or are refused by it
/// when full) until one closes, instead of being accepted and starved.
pub async fn serve(
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
