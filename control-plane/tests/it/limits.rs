//! Resource limits and input hygiene from the security review
//! (docs/security.md, "Security review findings"): metric-label cardinality,
//! header-read timeout, connection cap, slow readers, dripped bodies and the
//! shutdown deadline (against the real binary), keys per user, and
//! control/bidi characters in stored text.

use crate::common::*;
use reqwest::StatusCode;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The real `keygate-control-plane serve` on a fresh SQLite file, killed on
/// drop (also used by `hostile`).
pub(crate) struct Binary {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) addr: String,
    log: Arc<Mutex<String>>,
    dir: std::path::PathBuf,
}

impl Binary {
    pub(crate) fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("keygate_limits_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate-control-plane"));
        cmd.arg("serve")
            .current_dir(&dir)
            .env("KEYGATE_LISTEN", "127.0.0.1:0")
            .env("KEYGATE_ADMIN_TOKEN", ADMIN)
            .env("KEYGATE_DATA_PLANE_TOKEN", DATA_PLANE)
            .env_remove("KEYGATE_DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the control plane binary");
        let (log, addr) = capture_until_listening(&mut child);
        Binary {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
            dir,
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- 4(a): invented HTTP methods must not grow /metrics ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_count_as_other() {
    let bin = Binary::start("methods", &[]);
    let http = client();
    for i in 0..300 {
        // Long, distinct, valid tokens: each would be a new label value.
        let m = format!("INVENTED{i:03}{}", "X".repeat(200));
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = http
            .request(method, format!("{}/healthz", bin.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let metrics = http
        .get(format!("{}/metrics", bin.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("INVENTED"),
        "invented methods became labels ({} bytes of /metrics)",
        metrics.len()
    );
    assert!(
        metrics.len() < 16 * 1024,
        "/metrics is {} bytes after 300 invented methods",
        metrics.len()
    );
    let other: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("keygate_http_requests_total{") && l.contains(r#"method="other""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(other, 300, "{metrics}");
}

// ---- 4(b): header-read timeout and connection cap ----

/// Reads until the server closes the connection (EOF or reset), or `limit` passes.
/// Returns what was read, or None if the connection was still open at `limit`.
async fn read_until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let res = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    res.ok().map(|_| got)
}

/// A feed long poll with nothing to report waits its whole `wait` (less
/// half a second of slack) and then answers 200: no timeout cut it.
async fn assert_long_poll_waits(base: &str, wait_seconds: u64) {
    let http = client();
    let v = feed_version(&http, base, DATA_PLANE).await;
    let started = std::time::Instant::now();
    let r = http
        .get(format!(
            "{base}/internal/v1/key-table?since={v}&wait={wait_seconds}"
        ))
        .bearer_auth(DATA_PLANE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(wait_seconds * 1000 - 500),
        "the long poll returned early: {waited:?}"
    );
}

async fn healthz_ok(http: &reqwest::Client, base: &str) {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        http.get(format!("{base}/healthz")).send(),
    )
    .await
    .expect("a normal request is answered promptly")
    .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let bin = Binary::start("slow", &[("KEYGATE_HEADER_READ_TIMEOUT_SECONDS", "1")]);
    let http = client();
    let partial: [&[u8]; 3] = [
        b"GET /hea",                                          // half a request line
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",              // headers never end
        b"POST /api/api-keys HTTP/1.1\r\nHost: x\r\nAuthori", // half a header
    ];
    // The same on a connection served as an edge's feed (see `serve::lean`).
    let partial: Vec<&[u8]> = partial
        .into_iter()
        .chain([&b"GET /internal/v1/key-table?since=0 HTTP/1.1\r\nHost: x\r\n"[..]])
        .collect();
    let started = std::time::Instant::now();
    let mut slow = Vec::new();
    for p in partial {
        let mut s = tokio::net::TcpStream::connect(&bin.addr).await.unwrap();
        s.write_all(p).await.unwrap();
        slow.push(s);
    }
    // One that sends nothing at all.
    slow.push(tokio::net::TcpStream::connect(&bin.addr).await.unwrap());
    // Served while the slow ones hang.
    healthz_ok(&http, &bin.base).await;
    for (i, s) in slow.iter_mut().enumerate() {
        let closed = read_until_closed(s, Duration::from_secs(6)).await;
        assert!(
            closed.is_some(),
            "slow client {i} still open {:?} after connecting (header-read timeout 1 s)",
            started.elapsed()
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed before the timeout: {took:?}"
    );
    // And served after.
    healthz_ok(&http, &bin.base).await;
    println!("slow clients closed after {took:?}");
}

/// What Envoy's pooled connections see: the timeout also ends a keep-alive
/// connection idle that long after a response, while a long poll that runs
/// far past it is answered (the timeout only covers reading request headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_ends_idle_keep_alive_but_not_long_polls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bin = Binary::start("idle", &[("KEYGATE_HEADER_READ_TIMEOUT_SECONDS", "1")]);
    let mut s = tokio::net::TcpStream::connect(&bin.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = std::time::Instant::now();
    let rest = read_until_closed(&mut s, Duration::from_secs(6))
        .await
        .expect("an idle keep-alive connection is closed after the timeout");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");

    assert_long_poll_waits(&bin.base, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_holds_extra_connections_until_one_closes() {
    use tokio::io::AsyncWriteExt;
    let bin = Binary::start(
        "cap",
        &[
            ("KEYGATE_MAX_CONNECTIONS", "20"),
            ("KEYGATE_HEADER_READ_TIMEOUT_SECONDS", "60"),
        ],
    );
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(&bin.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The 21st: the kernel completes the handshake, but nobody reads it.
    let mut extra = tokio::net::TcpStream::connect(&bin.addr).await.unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = read_until_closed(&mut extra, Duration::from_millis(1500)).await;
    assert!(
        early.is_none(),
        "the 21st connection was served while 20 were open: {:?}",
        early.map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    // One closes: the waiting connection is accepted and answered.
    drop(idle.pop());
    let answer = read_until_closed(&mut extra, Duration::from_secs(5))
        .await
        .expect("the 21st connection is served once one closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        bin.log().contains("connection limit"),
        "the start-up log names the limits:\n{}",
        bin.log()
    );
}

// ---- 4(c): slow readers, dripped bodies, and shutdown during both ----

/// What the review's attacker did: a 2 KiB receive buffer, 2000 pipelined
/// `GET /openapi.json` written for up to 3 s, and then nothing read, so the
/// server's writes stay pending. `feed`: key-table polls instead, which a
/// lean connection serves.
async fn slow_reader(addr: &str, feed: bool) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let mut s = sock.connect(addr.parse().unwrap()).await.unwrap();
    let one = if feed {
        format!(
            "GET /internal/v1/key-table HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DATA_PLANE}\r\n\r\n"
        )
    } else {
        "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".to_owned()
    };
    let req = one.as_bytes().repeat(2000);
    // Stops when the server stops reading; how far it got does not matter.
    let _ = tokio::time::timeout(Duration::from_secs(3), s.write_all(&req)).await;
    s
}

/// `GET /healthz` on a fresh connection, `None` if not answered within `limit`.
async fn healthz_within(base: &str, limit: Duration) -> Option<StatusCode> {
    let http = client();
    match tokio::time::timeout(limit, http.get(format!("{base}/healthz")).send()).await {
        Ok(Ok(r)) => Some(r.status()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_cut_after_the_write_timeout() {
    let bin = Binary::start(
        "slowread",
        &[
            ("KEYGATE_MAX_CONNECTIONS", "4"),
            ("KEYGATE_HEADER_READ_TIMEOUT_SECONDS", "2"),
            ("KEYGATE_WRITE_TIMEOUT_SECONDS", "2"),
        ],
    );
    let mut attackers = Vec::new();
    for i in 0..4 {
        attackers.push(slow_reader(&bin.addr, i % 2 == 1).await);
    }
    let started = std::time::Instant::now();
    // Write timeout 2 s, plus 5 s of slack.
    let status = healthz_within(&bin.base, Duration::from_secs(7)).await;
    assert_eq!(
        status,
        Some(StatusCode::OK),
        "/healthz not answered {:?} after 4 slow readers filled a cap of 4 (write timeout 2 s)",
        started.elapsed()
    );
    // The slow readers were closed, not merely outnumbered.
    for (i, s) in attackers.iter_mut().enumerate() {
        assert!(
            read_until_closed(s, Duration::from_secs(10))
                .await
                .is_some(),
            "slow reader {i} still open"
        );
    }
    println!("served again {:?} after the attack", started.elapsed());
    // A long poll that sends nothing for twice the write timeout is not cut:
    // the deadline is on writes that make no progress, not on silence.
    assert_long_poll_waits(&bin.base, 4).await;
}

/// Reads one HTTP/1.1 answer with a `content-length` (or none, for a 204)
/// from `s`; returns the head and the body. `carry` holds bytes read past
/// the answer (pipelined answers arrive together) for the next call.
async fn read_answer(s: &mut tokio::net::TcpStream, carry: &mut Vec<u8>) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = carry.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&carry[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.parse().unwrap());
            while carry.len() < end + 4 + len {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed mid-answer: {head}");
                carry.extend_from_slice(&buf[..n]);
            }
            let body = carry[end + 4..end + 4 + len].to_vec();
            carry.drain(..end + 4 + len);
            return (head, body);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(carry)
        );
        carry.extend_from_slice(&buf[..n]);
    }
}

/// A connection that opens with a key-table poll (an edge's) is served by the
/// lean path while it carries only polls (keep-alive, pipelining, the
/// router's own refusals), and by hyper from its first other request on,
/// with nothing lost at the switch. hyper stamps every answer with `date`;
/// the lean path does not, which tells the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_connections_are_lean_until_another_request_moves_them_to_hyper() {
    use tokio::io::AsyncWriteExt;
    let bin = Binary::start("lean", &[]);
    let poll = format!(
        "GET /internal/v1/key-table HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DATA_PLANE}\r\n\r\n"
    );
    let report = r#"{"items":[]}"#;
    let usage = format!(
        "POST /internal/v1/usage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DATA_PLANE}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{report}",
        report.len()
    );
    let mut s = tokio::net::TcpStream::connect(&bin.addr).await.unwrap();
    let mut carry = Vec::new();
    // Two polls and a usage report in one write: the polls are answered
    // here, in order; the report moves the connection to hyper mid-buffer.
    s.write_all(format!("{poll}{poll}{usage}").as_bytes())
        .await
        .unwrap();
    for _ in 0..2 {
        let (head, body) = read_answer(&mut s, &mut carry).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(!head.contains("date:"), "not the lean path: {head}");
        let table: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(table["full"], true);
    }
    let (head, body) = read_answer(&mut s, &mut carry).await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(head.contains("date:"), "not hyper: {head}");
    assert!(body.is_empty());
    // Hyper keeps the connection, polls included.
    s.write_all(poll.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut s, &mut carry).await;
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.contains("date:"),
        "{head}"
    );

    // The router's refusals come through the lean path as they are.
    let mut s = tokio::net::TcpStream::connect(&bin.addr).await.unwrap();
    let mut carry = Vec::new();
    s.write_all(
        format!(
            "{poll}GET /internal/v1/key-table?wait=99 HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {DATA_PLANE}\r\n\r\n\
             GET /internal/v1/key-table HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (head, _) = read_answer(&mut s, &mut carry).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for (status, message) in [("400", "wait must be 0 to 60 seconds"), ("401", "")] {
        let (head, body) = read_answer(&mut s, &mut carry).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert!(!head.contains("date:"), "not the lean path: {head}");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{error}"
        );
    }

    // A body framed two ways after a poll: hyper gets it, bytes intact, and
    // treats it as on any connection (chunked wins; no token, so 401).
    let mut s = tokio::net::TcpStream::connect(&bin.addr).await.unwrap();
    let mut carry = Vec::new();
    s.write_all(
        format!(
            "{poll}POST /internal/v1/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (head, _) = read_answer(&mut s, &mut carry).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = read_answer(&mut s, &mut carry).await;
    assert!(
        head.starts_with("HTTP/1.1 401") && head.contains("date:"),
        "{head}"
    );
}

/// An edge that gives up on a parked long poll (closes its connection) frees
/// it at once, not when its wait runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_feed_connection_releases_its_long_poll() {
    use tokio::io::AsyncWriteExt;
    let bin = Binary::start("leanclose", &[]);
    let http = client();
    let v = feed_version(&http, &bin.base, DATA_PLANE).await;
    let parked = || async {
        let r = http
            .get(format!("{}/metrics", bin.base))
            .send()
            .await
            .unwrap();
        r.text()
            .await
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("keygate_feed_clients ")?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut s = tokio::net::TcpStream::connect(&bin.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /internal/v1/key-table?since={v}&wait=60 HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {DATA_PLANE}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while parked().await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the poll never parked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);
    let closed = std::time::Instant::now();
    while parked().await != 0 {
        assert!(
            closed.elapsed() < Duration::from_secs(2),
            "a closed connection's long poll is still parked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "long poll released {:?} after its connection closed",
        closed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_body_is_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bin = Binary::start(
        "slowbody",
        &[
            ("KEYGATE_MAX_CONNECTIONS", "4"),
            ("KEYGATE_REQUEST_BODY_TIMEOUT_SECONDS", "2"),
        ],
    );
    let s = tokio::net::TcpStream::connect(&bin.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST /api/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    // One byte every 300 ms: an idle-between-bytes timeout never fires.
    let drip = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if wr.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    drip.abort();
    let took = started.elapsed();
    assert!(
        closed.is_ok(),
        "a body dripped one byte per 300 ms still held its connection after {took:?} \
         (request-body timeout 2 s); got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(took >= Duration::from_millis(1800), "cut early: {took:?}");
    // A reset may beat the answer to us; when the answer arrives, it is the 408.
    let got = String::from_utf8_lossy(&got);
    if !got.is_empty() {
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(
            got.contains(r#"{"error":"request body not received in time"}"#),
            "{got}"
        );
    }
    assert_eq!(
        healthz_within(&bin.base, Duration::from_secs(5)).await,
        Some(StatusCode::OK)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_slow_reads_exits_within_the_deadline() {
    let mut bin = Binary::start(
        "slowterm",
        &[
            ("KEYGATE_MAX_CONNECTIONS", "4"),
            // Long enough that only the shutdown deadline can end the attack.
            ("KEYGATE_WRITE_TIMEOUT_SECONDS", "120"),
            ("KEYGATE_SHUTDOWN_TIMEOUT_SECONDS", "2"),
        ],
    );
    let mut attackers = Vec::new();
    for i in 0..4 {
        attackers.push(slow_reader(&bin.addr, i % 2 == 1).await);
    }
    // Graceful shutdown lets each connection finish the answer it is writing
    // and drops the pipelined rest: give the answers time to fill the socket
    // buffers, so every connection is stuck mid-write when SIGTERM arrives.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = bin.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let started = std::time::Instant::now();
    let mut exited = None;
    while started.elapsed() < Duration::from_secs(8) {
        if let Some(status) = bin.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let status = exited.unwrap_or_else(|| {
        panic!(
            "still running {took:?} after SIGTERM with 4 slow readers (shutdown deadline 2 s); log:\n{}",
            bin.log()
        )
    });
    assert!(status.success(), "{status:?}\n{}", bin.log());
    assert!(
        took >= Duration::from_millis(1800),
        "exited early: {took:?}"
    );
    assert!(
        bin.log().contains("shutdown deadline"),
        "the log says connections were dropped:\n{}",
        bin.log()
    );
    drop(attackers);
}

// ---- 5: keys per user ----

both_backends!(
    key_limit_per_user,
    key_limit_holds_under_concurrent_creates,
    key_limit_is_configurable
);

const LIMIT_MSG: &str = "key limit reached (100)";

async fn own_key(app: &TestApp, name: &str) -> Resp {
    app.post(
        "/api/api-keys",
        ADMIN,
        serde_json::json!({"name": name, "mcpServerIds": ["*"]}),
    )
    .await
}

async fn admin_key_for(app: &TestApp, user: i64, name: &str) -> Resp {
    app.post(
        "/api/admin-api-keys",
        ADMIN,
        serde_json::json!({"userId": user, "name": name, "mcpServerIds": ["*"]}),
    )
    .await
}

/// The default limit, 100, on both create routes; a deleted key frees a slot.
async fn key_limit_per_user(b: Backend) {
    let app = TestApp::start(b).await;
    let admin_id = app.get("/api/me", ADMIN).await.body["id"].as_i64().unwrap();
    let bob = app.user("bob").await;
    for i in 0..100 {
        let r = own_key(&app, &format!("own{i}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "own key {i}: {}", r.text);
        let r = admin_key_for(&app, bob, &format!("bob{i}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "bob's key {i}: {}", r.text);
    }
    assert_error(
        &own_key(&app, "one too many").await,
        StatusCode::CONFLICT,
        LIMIT_MSG,
    );
    assert_error(
        &admin_key_for(&app, admin_id, "one too many").await,
        StatusCode::CONFLICT,
        LIMIT_MSG,
    );
    assert_error(
        &admin_key_for(&app, bob, "one too many").await,
        StatusCode::CONFLICT,
        LIMIT_MSG,
    );
    // The limit is per user: a third user still gets keys.
    let carol = app.user("carol").await;
    let r = admin_key_for(&app, carol, "first").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let keys = app.get("/api/api-keys", ADMIN).await;
    assert_eq!(keys.body["items"].as_array().unwrap().len(), 100);
    let id = keys.body["items"][0]["id"].as_i64().unwrap();
    let r = app.delete(&format!("/api/api-keys/{id}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = own_key(&app, "after delete").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_error(
        &own_key(&app, "again too many").await,
        StatusCode::CONFLICT,
        LIMIT_MSG,
    );
}

/// `max_keys_per_user` (the `--max-keys-per-user` flag) sets the limit and its message.
async fn key_limit_is_configurable(b: Backend) {
    let app = TestApp::start_with(b, |c| c.max_keys_per_user = 3).await;
    for i in 0..3 {
        let r = own_key(&app, &format!("k{i}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    assert_error(
        &own_key(&app, "k3").await,
        StatusCode::CONFLICT,
        "key limit reached (3)",
    );
}

/// 30 creates at once with 10 slots left, through both routes: exactly 10 win.
async fn key_limit_holds_under_concurrent_creates(b: Backend) {
    let app = TestApp::start(b).await;
    let admin_id = app.get("/api/me", ADMIN).await.body["id"].as_i64().unwrap();
    for i in 0..90 {
        let r = own_key(&app, &format!("k{i}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "key {i}: {}", r.text);
    }
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..30 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let r = if i % 2 == 0 {
                own_key(&app, &format!("burst{i}")).await
            } else {
                admin_key_for(&app, admin_id, &format!("burst{i}")).await
            };
            (r.status, r.text)
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        let (status, text) = t.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                assert!(text.contains(LIMIT_MSG), "{text}");
                refused += 1
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    let keys = app.get("/api/api-keys", ADMIN).await;
    let n = keys.body["items"].as_array().unwrap().len();
    assert_eq!(
        n, 100,
        "keys after the burst ({created} created, {refused} refused)"
    );
    assert_eq!((created, refused), (10, 20));
}

// ---- 8 (second bullet): control and bidi characters in stored text ----

both_backends!(
    control_and_bidi_characters_are_refused,
    combining_mark_runs_are_refused,
    a_nul_in_a_server_name_path_is_not_found
);

/// NUL, other C0 (tab and newline included), DEL, C1, and every bidi-format character.
const BAD: &[char] = &[
    '\0',
    '\u{1}',
    '\t',
    '\n',
    '\r',
    '\u{1b}',
    '\u{7f}',
    '\u{80}',
    '\u{85}',
    '\u{9f}',
    '\u{61c}',
    '\u{200e}',
    '\u{200f}',
    '\u{202a}',
    '\u{202b}',
    '\u{202c}',
    '\u{202d}',
    '\u{202e}',
    '\u{2066}',
    '\u{2067}',
    '\u{2068}',
    '\u{2069}',
    // Line and paragraph separators, invisible and formatting characters,
    // tag characters, private use and noncharacters (an attacker's review;
    // the zero-width joiners stay allowed inside names: scripts need them).
    '\u{2028}',
    '\u{2029}',
    '\u{200b}',
    '\u{2060}',
    '\u{feff}',
    '\u{ad}',
    '\u{180e}',
    '\u{fff9}',
    '\u{e0041}',
    '\u{e000}',
    '\u{f0000}',
    '\u{fdd0}',
    '\u{ffff}',
];

fn refused(r: &Resp, field: &str) {
    assert_error(
        r,
        StatusCode::BAD_REQUEST,
        &format!("{field} must not contain control, formatting or invisible characters"),
    );
}

async fn control_and_bidi_characters_are_refused(b: Backend) {
    use serde_json::json;
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    let rule = app.rule(&["*"], &["*"]).await;
    let admin_id = app.get("/api/me", ADMIN).await.body["id"].as_i64().unwrap();
    for &c in BAD {
        let bad = format!("a{c}b");
        let r = app
            .post(
                "/api/api-keys",
                ADMIN,
                json!({"name": bad, "mcpServerIds": ["*"]}),
            )
            .await;
        refused(&r, "name");
        let r = app
            .post(
                "/api/api-keys",
                ADMIN,
                json!({"name": "k", "description": bad, "mcpServerIds": ["*"]}),
            )
            .await;
        refused(&r, "description");
        let r = app
            .post(
                "/api/admin-api-keys",
                ADMIN,
                json!({"userId": admin_id, "name": bad, "mcpServerIds": ["*"]}),
            )
            .await;
        refused(&r, "name");
        let r = app
            .post(
                "/api/admin-api-keys",
                ADMIN,
                json!({"userId": admin_id, "name": "k", "description": bad, "mcpServerIds": ["*"]}),
            )
            .await;
        refused(&r, "description");
        let r = app
            .post(
                "/api/access-rules",
                ADMIN,
                json!({"name": bad, "mcpServerIds": ["*"], "subjects": ["*"]}),
            )
            .await;
        refused(&r, "name");
        let r = app
            .put(
                &format!("/api/access-rules/{rule}"),
                ADMIN,
                json!({"name": bad, "mcpServerIds": ["*"], "subjects": ["*"]}),
            )
            .await;
        refused(&r, "name");
        let r = app
            .post(
                "/api/mcp-servers",
                ADMIN,
                json!({"name": "beta", "displayName": bad}),
            )
            .await;
        refused(&r, "displayName");
        let r = app
            .post(
                "/api/mcp-servers",
                ADMIN,
                json!({"name": "beta", "description": bad}),
            )
            .await;
        refused(&r, "description");
        let r = app
            .put("/api/mcp-servers/alpha", ADMIN, json!({"displayName": bad}))
            .await;
        refused(&r, "displayName");
        let r = app
            .put("/api/mcp-servers/alpha", ADMIN, json!({"description": bad}))
            .await;
        refused(&r, "description");
        let r = app
            .post("/api/users", ADMIN, json!({"username": bad}))
            .await;
        assert_error_contains(&r, StatusCode::BAD_REQUEST, "username");
        let r = app
            .post(
                "/api/users",
                ADMIN,
                json!({"username": format!("u{}", c as u32), "email": format!("a{c}@b.c")}),
            )
            .await;
        assert_error_contains(&r, StatusCode::BAD_REQUEST, "email");
    }
    // Nothing was stored.
    let keys = app.get("/api/api-keys", ADMIN).await;
    assert_eq!(
        keys.body["items"].as_array().unwrap().len(),
        0,
        "{}",
        keys.text
    );
    let servers = app.get("/api/mcp-servers", ADMIN).await;
    assert_eq!(
        servers.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        servers.text
    );
    assert_eq!(servers.body["items"][0]["displayName"], "alpha");
    // Ordinary non-ASCII text, spaces and emoji stay allowed.
    let fine = "Café 東京 — ok 🙂 עברית";
    let r = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": fine, "description": fine, "mcpServerIds": ["*"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["name"], fine);
    let r = app
        .put(
            "/api/mcp-servers/alpha",
            ADMIN,
            json!({"displayName": fine, "description": fine}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// Letters stacked with dozens of combining marks overflow any table they
/// are shown in.
async fn combining_mark_runs_are_refused(b: Backend) {
    use serde_json::json;
    let app = TestApp::start(b).await;
    let stacked = format!("a{}", "\u{301}".repeat(90));
    let r = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": stacked, "mcpServerIds": ["*"]}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "name has too many combining marks in a row",
    );
    // A few, as languages use them, are fine.
    let r = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": "Vi\u{1ec7}t ph\u{1edf} e\u{301}\u{323}", "mcpServerIds": ["*"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// A server name in the path is a server name or nothing: never a 500
/// (PostgreSQL refuses a NUL in text).
async fn a_nul_in_a_server_name_path_is_not_found(b: Backend) {
    use serde_json::json;
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    for path in ["/api/mcp-servers/a%00b", "/api/mcp-servers/al%00pha"] {
        let r = app.get(path, ADMIN).await;
        assert_error(&r, StatusCode::NOT_FOUND, "MCP server not found");
        let r = app.delete(path, ADMIN).await;
        assert_error(&r, StatusCode::NOT_FOUND, "MCP server not found");
        let r = app.put(path, ADMIN, json!({"displayName": "x"})).await;
        assert_error(&r, StatusCode::NOT_FOUND, "MCP server not found");
    }
}
