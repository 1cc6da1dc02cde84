//! A small TCP proxy between Envoy and the control plane (Envoy's
//! control-plane cluster points at it) that can pass bytes through, delay
//! the answers, or cut connections in the middle of an answer: the feed's
//! long polls and snapshot pages then fail half-read, as on a broken network.
//!
//! It counts how many answers it cut and how many of those were snapshot
//! pages (`"full":true` in the bytes it had forwarded), so the report shows
//! that paged snapshots were really cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::rng::Rng;

/// What the proxy does to the control plane's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    /// Each chunk of an answer waits 50–400 ms and goes out in small pieces.
    Slow = 1,
    /// 70% of the connections are closed after a random number (up to
    /// 1500) of answer bytes: the headers and part of the body, usually.
    Cut = 2,
}

#[derive(Debug, Default)]
pub struct ProxyCounts {
    pub connections: AtomicU64,
    pub cut: AtomicU64,
    pub cut_in_snapshot: AtomicU64,
    pub delayed_chunks: AtomicU64,
}

#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    pub counts: Arc<ProxyCounts>,
}

impl Proxy {
    /// Listens on a free port and forwards each connection to one of
    /// `upstreams` (round robin).
    pub async fn start(upstreams: Vec<u16>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let counts = Arc::new(ProxyCounts::default());
        let next = Arc::new(AtomicUsize::new(0));
        let (m, c) = (mode.clone(), counts.clone());
        tokio::spawn(async move {
            let mut seed = 7u64;
            while let Ok((client, _)) = listener.accept().await {
                seed += 1;
                let index = next.fetch_add(1, Ordering::Relaxed) % upstreams.len().max(1);
                let Some(&upstream) = upstreams.get(index) else {
                    continue;
                };
                c.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(client, upstream, m.clone(), c.clone(), seed));
            }
        });
        Ok(Self { port, mode, counts })
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

fn mode(m: &AtomicU8) -> Mode {
    match m.load(Ordering::SeqCst) {
        1 => Mode::Slow,
        2 => Mode::Cut,
        _ => Mode::Pass,
    }
}

async fn relay(
    client: TcpStream,
    upstream: u16,
    m: Arc<AtomicU8>,
    counts: Arc<ProxyCounts>,
    seed: u64,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Requests go through untouched.
    let upward = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut rng = Rng::new(seed);
    // Decided per connection when it is first cut-eligible.
    let cut_after = if rng.chance(70) {
        Some(1 + rng.below(1500))
    } else {
        None
    };
    let mut forwarded = 0usize;
    let mut seen_full = false;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        if !seen_full && contains(chunk, b"\"full\":true") {
            seen_full = true;
        }
        match mode(&m) {
            Mode::Pass => {
                if client_write.write_all(chunk).await.is_err() {
                    break;
                }
            }
            Mode::Slow => {
                counts.delayed_chunks.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50 + rng.below(350) as u64)).await;
                let mut failed = false;
                for piece in chunk.chunks(512) {
                    if client_write.write_all(piece).await.is_err() {
                        failed = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if failed {
                    break;
                }
            }
            Mode::Cut => {
                if let Some(limit) = cut_after
                    && forwarded + n > limit
                {
                    let keep = limit.saturating_sub(forwarded);
                    let _ = client_write.write_all(&chunk[..keep]).await;
                    counts.cut.fetch_add(1, Ordering::Relaxed);
                    if seen_full {
                        counts.cut_in_snapshot.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                if client_write.write_all(chunk).await.is_err() {
                    break;
                }
            }
        }
        forwarded += n;
    }
    upward.abort();
    let _ = client_write.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
