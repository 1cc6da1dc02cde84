//! Serving connections: hyper's HTTP/1 connection builder rather than
//! `axum::serve`, which has neither a header-read timeout nor a connection
//! cap. The port is reachable by anything on the Envoys' network, so no
//! client may pin a connection: not by sending its headers slowly (the
//! header-read timeout), not by never reading its answers (the write
//! timeout), not by dripping a body (the request-body deadline), and not past
//! a shutdown (the shutdown deadline). Their count is bounded, and the
//! process is allowed that many sockets.
//!
//! A connection that opens with a key-table poll (an edge's feed) is served
//! by [`lean`] for as long as it carries only such polls, so that a parked
//! long poll costs a few KiB rather than hyper's two 8 KiB buffers: a fleet
//! parks one per Envoy. Its first other request moves it to hyper.

pub mod lean;

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

/// The error of a request whose body did not arrive in time.
pub const MSG_BODY_TIMEOUT: &str = "request body not received in time";

/// How long a connection may take, and how many there may be.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request headers must be complete this long after the connection opens
    /// or after the previous answer (an idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// A write pending this long with no byte taken by the peer closes the
    /// connection. There is deliberately no read timeout: a feed long poll
    /// sends and receives nothing for up to a minute.
    pub write_timeout: Duration,
    pub max_connections: usize,
    /// After `stop`, connections still open this long are dropped.
    pub shutdown_timeout: Duration,
    /// A request with a body must be answered this long after its headers
    /// ([`with_body_deadline`]; the lean path takes no bodies).
    pub request_body_timeout: Duration,
}

/// Accepts and serves connections until `stop` fires, then lets in-flight
/// requests finish for up to `shutdown_timeout` (long polls are released by
/// `FeedNotifier::close` first) and drops whatever is still open.
///
/// At `max_connections` open connections the loop stops calling `accept`:
/// new connections wait in the kernel's listen backlog (or are refused by it
/// when full) until one closes, instead of being accepted and starved.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    // Clamped: 0 would never serve, and Semaphore panics above MAX_PERMITS.
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let hyper_app = with_body_deadline(app.clone(), limits.request_body_timeout);
    // Tells lean connections to close after their current answer.
    let (stopping_tx, stopping) = watch::channel(false);
    // Owns every connection task, so the shutdown deadline can drop them.
    let mut conns = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer is what makes hyper enforce the timeout at all. hyper also
    // applies it to a keep-alive connection waiting for its next request.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        // Finished connections are reaped here, so the set stays as large as
        // the number of open connections (plus those closed since the last accept).
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            biased;
            _ = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (http, app, lean_app, watcher, stopping) = (
            http.clone(),
            hyper_app.clone(),
            app.clone(),
            graceful.watcher(),
            stopping.clone(),
        );
        conns.spawn(async move {
            let lean = starts_with_feed_poll(&stream).await;
            // A client that pipelines requests and never reads the answers would
            // otherwise leave a write pending forever, holding the slot.
            let mut stream = TimeoutStream::new(stream);
            stream.set_write_timeout(Some(limits.write_timeout));
            let stream = Box::pin(stream);
            let hyper = move |io: lean::Rewind<_>| {
                // Every request carries its socket peer: the audit log's client
                // address (`audit::client`).
                let app = app.map_request(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
                let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
                // Boxed, like the lean path, so the task holds only the
                // branch it runs: a parked poll's footprint is the point.
                Box::pin(async move { watcher.watch(conn).await.map_err(|e| e.to_string()) })
            };
            let result = if lean {
                Box::pin(lean::serve_connection(
                    stream,
                    peer,
                    lean_app,
                    limits.header_read_timeout,
                    stopping,
                    hyper,
                ))
                .await
            } else {
                hyper(lean::Rewind::new(Vec::new(), stream)).await
            };
            if let Err(e) = result {
                // Header and write timeouts and resets land here; nothing of
                // the request is logged.
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let drained = async {
        graceful.shutdown().await;
        // Lean connections close after their current answer.
        while conns.join_next().await.is_some() {}
    };
    if tokio::time::timeout(limits.shutdown_timeout, drained)
        .await
        .is_err()
    {
        while conns.try_join_next().is_some() {}
        let open = conns.len();
        tracing::warn!(
            open_connections = open,
            "shutdown deadline of {:?} passed: dropping {open} open connections",
            limits.shutdown_timeout
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// Bounds how long a request that carries a body may take, from its headers
/// to its answer, so a client cannot hold a connection by dripping the body
/// a byte at a time. A total deadline, not an idle one (tower-http's
/// `RequestBodyTimeoutLayer` restarts its timer on every frame, which a drip
/// defeats). Requests without a body, the feed's long polls among them, are
/// not limited. The answer is 408 with `Connection: close`: the rest of the
/// body is never read, so the connection cannot be reused.
pub fn with_body_deadline(app: axum::Router, limit: Duration) -> axum::Router {
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| async move {
            if req.body().is_end_stream() {
                return next.run(req).await;
            }
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(response) => response,
                Err(_) => body_timeout_response(),
            }
        },
    ))
}

fn body_timeout_response() -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        axum::Json(serde_json::json!({ "error": MSG_BODY_TIMEOUT })),
    )
        .into_response()
}

/// How long a new connection may take to send its first bytes before it is
/// handed to hyper unseen (hyper's own header-read timeout then runs). Short,
/// so the two do not add up: an edge writes its request as it connects.
const SNIFF_WAIT: Duration = Duration::from_secs(1);

/// Whether the connection's first bytes, once some arrived, are a
/// key-table poll. Peeking leaves them for whichever server reads the
/// connection.
async fn starts_with_feed_poll(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 32];
    matches!(
        tokio::time::timeout(SNIFF_WAIT, stream.peek(&mut first)).await,
        Ok(Ok(n)) if lean::is_feed_poll(first.get(..n).unwrap_or_default())
    )
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
