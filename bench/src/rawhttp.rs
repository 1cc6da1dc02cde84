//! A bare HTTP/1.1 client for holding thousands of feed long polls from one
//! process: one plain tokio socket per subscriber, no pool, no buffer until
//! the answer starts to arrive, so the load generator stays cheap next to the
//! control plane it measures.
//!
//! Connections come from several loopback source addresses (127.0.0.2 and
//! up), each with its own ephemeral port range, so 10,000 of them (and
//! those of the previous point still in TIME_WAIT) never run out of ports.

use anyhow::{Context, Result, bail};
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Loopback source addresses the connections are spread over.
pub const SOURCE_ADDRESSES: usize = 32;

/// Opens connection number `i` to `127.0.0.1:port`. A `receive_buffer`
/// (bytes) keeps a client that reads only the head of a large answer from
/// letting the kernel buffer the rest.
pub async fn connect(i: usize, port: u16, receive_buffer: Option<u32>) -> Result<TcpStream> {
    let octet = u8::try_from(2 + i % SOURCE_ADDRESSES).unwrap_or(2);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, octet), 0)))?;
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.set_nodelay(true)?;
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("connecting from 127.0.0.{octet}"))
}

/// Sends `GET path` with a bearer token on a keep-alive connection.
pub async fn send_get(stream: &mut TcpStream, path: &str, token: &str) -> Result<()> {
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok(())
}

/// One answer: its status, body length, and the body's first and last bytes
/// (enough to check what it is and to find a snapshot page's `next`).
pub struct Answer {
    pub status: u16,
    pub body_len: usize,
    pub body_start: Vec<u8>,
    pub body_end: Vec<u8>,
}

const KEEP: usize = 512;

/// Reads the head of one answer; with `whole`, also its body (counted,
/// keeping only both ends), else returns once the head is in.
pub async fn read_answer(stream: &mut TcpStream, whole: bool) -> Result<Answer> {
    // No buffer while the poll is parked: wait for the first byte first.
    stream.readable().await?;
    let mut buf = vec![0u8; if whole { 64 * 1024 } else { 4096 }];
    let mut filled = 0;
    let head_end = loop {
        if let Some(p) = find(&buf[..filled], b"\r\n\r\n") {
            break p + 4;
        }
        if filled == buf.len() {
            bail!("answer head larger than {} bytes", buf.len());
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            bail!("connection closed before the answer's head");
        }
        filled += n;
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("answer head is not UTF-8")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status in the answer")?;
    let body_len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("answer without content-length")?;
    let mut answer = Answer {
        status,
        body_len,
        body_start: Vec::new(),
        body_end: Vec::new(),
    };
    let have = (filled - head_end).min(body_len);
    answer
        .body_start
        .extend_from_slice(&buf[head_end..head_end + have.min(KEEP)]);
    if !whole {
        return Ok(answer);
    }
    let mut tail = buf[head_end..head_end + have].to_vec();
    let mut got = have;
    while got < body_len {
        let want = (body_len - got).min(buf.len());
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            bail!("connection closed after {got} of {body_len} body bytes");
        }
        got += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * KEEP {
            tail.drain(..tail.len() - KEEP);
        }
    }
    let from = tail.len().saturating_sub(KEEP);
    answer.body_end = tail[from..].to_vec();
    if answer.body_start.len() < KEEP.min(body_len) {
        answer.body_start = tail[..tail.len().min(KEEP)].to_vec();
    }
    Ok(answer)
}

/// A snapshot page's `next` (the key id to continue after), found near the
/// end of its body: `next` is serialized after the upserts.
pub fn next_of(body_end: &[u8]) -> Option<i64> {
    let at = rfind(body_end, b"\"next\":")? + 7;
    let digits: String = body_end[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    digits.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Raises this process's soft open-file limit to its hard limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next_near_the_end() {
        assert_eq!(
            next_of(br#"...}],"removals":[],"next":1234,"registeredServers":["a"]}"#),
            Some(1234)
        );
        assert_eq!(
            next_of(br#"..."removals":[],"registeredServers":[]}"#),
            None
        );
    }
}
