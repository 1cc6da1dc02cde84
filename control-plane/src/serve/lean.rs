//! A lean HTTP/1.1 path for the edge's key-table polls: what a parked long
//! poll costs must stay small, because a fleet holds one per Envoy (10,000
//! of them on one replica).
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for the whole
//! life of every HTTP/1 connection, over half of what a parked poll cost.
//! Here the head of a `GET /internal/v1/key-table` is read into a buffer
//! that is freed once parsed (`httparse` does the parsing), the request goes
//! through the same axum router as every other (authentication, metrics,
//! error bodies and all), and the answer is written straight from the
//! encoded bytes the feed hub already shares.
//!
//! Only that one request shape is served here: a `GET` of the key table
//! with no body. The first request that is anything else (another route, a
//! body, `Transfer-Encoding`, `Expect`, a head this parser does not take or
//! one over [`MAX_HEAD`]) hands the connection, with every byte read so far,
//! to hyper for the rest of its life ([`Rewind`]). So whatever shares the
//! edge's pooled upstream connections (the shipped Envoy routes `/api/` and
//! the console through the same cluster) meets hyper, as on any other
//! connection; this path never frames a request body. The header-read
//! timeout applies as in hyper (also while idle between requests), the write
//! timeout is on the stream, and at shutdown an idle connection closes at
//! once, a busy one after its answer.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{self, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tower::ServiceExt;

/// The path served here, and so the first bytes of a connection that is.
const KEY_TABLE: &str = keygate_protocol::feed::KEY_TABLE_PATH;
/// Largest request head read here; a longer one goes to hyper.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request read here; more go to hyper.
const MAX_HEADERS: usize = 32;
/// How much a read asks for at a time.
const READ_CHUNK: usize = 1024;
/// Largest body copied behind its head to leave in one write.
const ONE_WRITE: usize = 16 * 1024;
/// Longest timeout used as given: a far larger setting cannot overflow a
/// deadline.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// Whether a connection's first bytes are a key-table poll. Bytes that
/// have not arrived yet count as "no": such a connection is served by
/// hyper, which is always correct, just heavier.
pub fn is_feed_poll(first_bytes: &[u8]) -> bool {
    let mut prefix = b"GET ".to_vec();
    prefix.extend_from_slice(KEY_TABLE.as_bytes());
    first_bytes.starts_with(&prefix)
}

/// A parsed key-table poll and how many bytes of the buffer it took.
struct FeedPoll {
    request: Request<()>,
    len: usize,
    /// The client asked to close after this answer (or spoke HTTP/1.0).
    close: bool,
}

/// What the bytes read so far hold. Returned once per request, never kept.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A key-table poll, served here.
    Poll(FeedPoll),
    /// Anything else: hyper serves the connection from here on.
    Hyper,
    /// Not a whole head yet.
    Incomplete,
}

/// Reads the head at the start of `buf`.
fn parse_head(buf: &[u8]) -> Next {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Next::Incomplete,
        _ => return Next::Hyper,
    };
    let (Some("GET"), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Next::Hyper;
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if path != KEY_TABLE {
        return Next::Hyper;
    }
    let Ok(uri) = target.parse::<http::Uri>() else {
        return Next::Hyper;
    };
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let (mut saw_close, mut saw_keep_alive) = (false, false);
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Next::Hyper;
        };
        // Anything that frames a body, or asks for an interim answer, is
        // hyper's to handle.
        let framing = name == http::header::TRANSFER_ENCODING
            || name == http::header::EXPECT
            || (name == http::header::CONTENT_LENGTH && value.as_bytes() != b"0");
        if framing {
            return Next::Hyper;
        }
        if name == http::header::CONNECTION {
            // As in hyper: `close` anywhere closes; `keep-alive` only keeps
            // an HTTP/1.0 connection open, and only without a `close`.
            for token in value.to_str().unwrap_or_default().split(',') {
                if token.trim().eq_ignore_ascii_case("close") {
                    saw_close = true;
                } else if token.trim().eq_ignore_ascii_case("keep-alive") {
                    saw_keep_alive = true;
                }
            }
        }
        map.append(name, value);
    }
    let close = saw_close || (version == Version::HTTP_10 && !saw_keep_alive);
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Next::Poll(FeedPoll {
        request,
        len,
        close,
    })
}

/// Serves key-table polls on one connection until the client closes it, a
/// limit ends it, or the server stops; hands it to `hyper` at the first
/// request of any other kind (with the bytes read so far). A head handed over
/// unfinished gets hyper's header-read timeout afresh, so one request's head
/// may take up to twice the timeout, once per connection.
pub async fn serve_connection<S, H, F>(
    mut stream: Pin<Box<S>>,
    peer: SocketAddr,
    app: axum::Router,
    header_read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
    hyper: H,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: FnOnce(Rewind<Pin<Box<S>>>) -> F,
    F: Future<Output = Result<(), String>>,
{
    let header_read_timeout = header_read_timeout.min(LONGEST);
    // Bytes read but not yet used (a pipelined request). Empty, and holding
    // no memory, while a poll is parked.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let next = read_head(&mut stream, &mut buf, header_read_timeout, &mut stopping);
        let poll = match next.await.map_err(|e| e.to_string())? {
            Some(Next::Poll(poll)) => poll,
            Some(Next::Hyper) => return hyper(Rewind::new(buf, stream)).await,
            Some(Next::Incomplete) | None => return Ok(()),
        };
        buf.drain(..poll.len);
        // What a parked poll keeps: nothing, or only a pipelined remainder.
        buf.shrink_to_fit();
        let (parts, ()) = poll.request.into_parts();
        let mut request = Request::from_parts(parts, Body::empty());
        request.extensions_mut().insert(ConnectInfo(peer));
        let call = call_watching_close(&mut stream, &mut buf, app.clone(), request);
        let Some(answer) = call.await else {
            // The client went away while its poll was with the router.
            return Ok(());
        };
        let close = poll.close
            || *stopping.borrow()
            || answer
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        write_answer(&mut stream, answer, close)
            .await
            .map_err(|e| e.to_string())?;
        if close {
            return Ok(());
        }
    }
}

/// Reads until `buf` holds a whole request head, within `timeout` (which
/// also bounds an idle keep-alive connection, as in hyper). `None`: the
/// client closed, the timeout passed, or the server is stopping while no
/// request is under way (hyper's graceful shutdown closes idle connections
/// the same way).
async fn read_head<S: AsyncRead + ?Sized>(
    stream: &mut Pin<Box<S>>,
    buf: &mut Vec<u8>,
    timeout: Duration,
    stopping: &mut watch::Receiver<bool>,
) -> io::Result<Option<Next>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match parse_head(buf) {
            Next::Incomplete => {}
            next => return Ok(Some(next)),
        }
        let idle = buf.is_empty();
        if idle && *stopping.borrow_and_update() {
            return Ok(None);
        }
        buf.reserve(READ_CHUNK);
        let read = tokio::time::timeout_at(deadline, stream.read_buf(buf));
        tokio::select! {
            read = read => match read {
                Err(_) | Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            },
            // Re-checked at the top of the loop; a server gone is stopping.
            changed = stopping.changed(), if idle => if changed.is_err() {
                return Ok(None);
            },
        }
    }
}

/// Runs the request through the router while watching the socket: if the
/// client closes meanwhile (an edge gave up on a long poll), the request is
/// dropped at once rather than held until its wait runs out. Bytes the
/// client sends meanwhile (a pipelined request) are kept in `buf`, up to a
/// head's worth; the rest waits in the kernel.
async fn call_watching_close<S: AsyncRead + ?Sized>(
    stream: &mut Pin<Box<S>>,
    buf: &mut Vec<u8>,
    app: axum::Router,
    request: Request<Body>,
) -> Option<http::Response<Body>> {
    let call = app.oneshot(request);
    tokio::pin!(call);
    let mut probe = [0u8; 64];
    let mut reading = true;
    loop {
        tokio::select! {
            // `Router`'s error type is `Infallible`.
            answer = &mut call => return answer.ok(),
            read = stream.read(&mut probe), if reading => match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    buf.extend_from_slice(probe.get(..n).unwrap_or_default());
                    reading = buf.len() < MAX_HEAD;
                }
            },
        }
    }
}

/// Writes an answer: the status line, the router's headers with this
/// connection's own framing, and the body.
async fn write_answer<S: AsyncWrite + ?Sized>(
    stream: &mut Pin<Box<S>>,
    answer: http::Response<Body>,
    close: bool,
) -> io::Result<()> {
    let (parts, body) = answer.into_parts();
    // The feed's answers are one shared buffer; errors are small JSON.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(io::Error::other)?;
    let status = parts.status;
    // No body, and no length, where HTTP forbids one (RFC 9110 §8.6).
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::CONNECTION
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !bodiless {
        head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    // A small answer (every delta a parked poll gets) leaves in one write, so
    // in one segment; a snapshot page is not copied.
    if !bodiless && body.len() <= ONE_WRITE {
        head.extend_from_slice(&body);
        stream.write_all(&head).await?;
    } else {
        stream.write_all(&head).await?;
        if !bodiless {
            stream.write_all(&body).await?;
        }
    }
    stream.flush().await
}

/// A stream that first yields bytes already read from it: how a connection
/// moves to hyper in the middle, with its next request partly read.
pub struct Rewind<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.at..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(out.remaining());
            out.put_slice(rest.get(..n).unwrap_or_default());
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lean(raw: &str) -> Option<FeedPoll> {
        match parse_head(raw.as_bytes()) {
            Next::Poll(p) => Some(p),
            _ => None,
        }
    }

    fn to_hyper(raw: &str) -> bool {
        matches!(parse_head(raw.as_bytes()), Next::Hyper)
    }

    #[test]
    fn only_a_key_table_poll_is_sniffed_as_lean() {
        assert!(is_feed_poll(
            b"GET /internal/v1/key-table?since=4&wait=20 HTTP/1.1\r\n"
        ));
        assert!(!is_feed_poll(b"GET /internal/v1/key-tabl"));
        assert!(!is_feed_poll(b"POST /internal/v1/usage HTTP/1.1\r\n"));
        assert!(!is_feed_poll(b"GET /api/me HTTP/1.1\r\n"));
        assert!(!is_feed_poll(b""));
    }

    #[test]
    fn serves_what_the_edge_sends() {
        let raw = "GET /internal/v1/key-table?since=4&wait=20 HTTP/1.1\r\nhost: cp\r\n\
                   authorization: Bearer t\r\ncontent-length: 0\r\n\r\nGET /next";
        let p = lean(raw).unwrap();
        assert_eq!(p.request.uri().query(), Some("since=4&wait=20"));
        assert_eq!(p.request.headers()["authorization"], "Bearer t");
        assert!(!p.close);
        // The pipelined rest stays for the next request.
        assert_eq!(raw.get(p.len..), Some("GET /next"));
        assert!(
            lean("GET /internal/v1/key-table HTTP/1.0\r\n\r\n")
                .unwrap()
                .close
        );
        let keep = "GET /internal/v1/key-table HTTP/1.0\r\nconnection: keep-alive\r\n\r\n";
        assert!(!lean(keep).unwrap().close);
        // `close` wins wherever it is, as in hyper.
        for raw in [
            "GET /internal/v1/key-table HTTP/1.1\r\nconnection: close, keep-alive\r\n\r\n",
            "GET /internal/v1/key-table HTTP/1.1\r\nconnection: close\r\nconnection: keep-alive\r\n\r\n",
        ] {
            assert!(lean(raw).unwrap().close, "{raw:?}");
        }
        let p = lean("GET /internal/v1/key-table HTTP/1.1\r\nconnection: close\r\n\r\n").unwrap();
        assert!(p.close);
        assert!(matches!(
            parse_head(b"GET /internal/v1/key-table HTTP/1.1\r\nhost: cp\r\n"),
            Next::Incomplete
        ));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for raw in [
            "POST /internal/v1/usage HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
            "GET /api/me HTTP/1.1\r\n\r\n",
            "HEAD /internal/v1/key-table HTTP/1.1\r\n\r\n",
            "GET /internal/v1/key-tablex HTTP/1.1\r\n\r\n",
            "GET /internal/v1/key-table/ HTTP/1.1\r\n\r\n",
            "GET /internal/v1/key-table HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            "GET /internal/v1/key-table HTTP/1.1\r\ncontent-length: 00\r\n\r\n",
            "GET /internal/v1/key-table HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET /internal/v1/key-table HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            "GET http://cp/internal/v1/key-table HTTP/1.1\r\n\r\n",
            "GET /internal/v1/key-table HTTP/2.0\r\n\r\n",
            "G@T /internal/v1/key-table HTTP/1.1\r\n\r\n",
        ] {
            assert!(to_hyper(raw), "{raw:?}");
        }
        // Heads this parser does not hold go to hyper, which has its own limits.
        let long = format!(
            "GET /internal/v1/key-table HTTP/1.1\r\nx-a: {}",
            "a".repeat(MAX_HEAD)
        );
        assert!(to_hyper(&long));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(to_hyper(&format!(
            "GET /internal/v1/key-table HTTP/1.1\r\n{many}\r\n"
        )));
    }

    #[tokio::test]
    async fn rewind_yields_the_prefix_then_the_stream() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut r = Rewind::new(b"hello".to_vec(), server);
        let mut got = String::new();
        r.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello world");
    }
}
