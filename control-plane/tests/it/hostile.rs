//! Hostile HTTP input against the real `keygate-control-plane` binary:
//! bodies over the limit, deep JSON, wrong content types, huge and negative
//! ids, unicode in names, stalled bodies, and memory under all of it. Each
//! request gets a 4xx with a JSON `{"error": …}` body (never a 500, never a
//! hang), and the process stays up and small. The limits are listed in
//! docs/reliability.md. (Slow headers, dripped bodies, slow readers and the
//! connection cap are in `limits`.)

use crate::common::*;
use crate::limits::Binary;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest JSON body a route reads (axum's default body limit).
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// An answer read off a raw socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` as it is (the writer runs beside the reader, so an answer
/// sent before the whole body was taken is still read) and reads until the
/// server closes or 20 s pass.
async fn exchange(addr: &str, request: Vec<u8>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        let _ = wr.flush().await;
        // Keep the write half open: closing it early may end the exchange.
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(wr);
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if complete(&got) {
                break;
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        read.is_ok(),
        "no answer within 20 s: {:?}",
        String::from_utf8_lossy(&got)
    );
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// True once `got` holds a head and a `Content-Length` body.
fn complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .is_some_and(|n| body.len() >= n)
}

fn request(
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn json_post(path: &str, body: &[u8]) -> Vec<u8> {
    request(
        "POST",
        path,
        ADMIN,
        &[("Content-Type", "application/json")],
        body,
    )
}

/// A 4xx in `allowed` with a JSON body holding a string `error`.
#[track_caller]
fn assert_json_error(what: &str, reply: &Reply, allowed: &[u16]) {
    assert!(
        allowed.contains(&reply.status),
        "{what}: status {} (wanted one of {allowed:?}): {} {}",
        reply.status,
        reply.head,
        reply.body
    );
    let ct = reply.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct:?}: {}",
        reply.body
    );
    let value: serde_json::Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {:?}", reply.body));
    assert!(
        value["error"].is_string(),
        "{what}: no error message: {value}"
    );
}

async fn healthy(bin: &Binary) {
    let reply = exchange(&bin.addr, request("GET", "/healthz", ADMIN, &[], b"")).await;
    assert_eq!(
        reply.status,
        200,
        "not healthy after the attack: {reply:?}\n{}",
        bin.log()
    );
    assert!(!bin.log().contains("panicked"), "{}", bin.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let bin = Binary::start("bodylimit", &[]);
    let big = vec![b' '; BODY_LIMIT + 1024];
    for path in [
        "/api/users",
        "/api/mcp-servers",
        "/api/admin-api-keys",
        "/api/access-rules",
    ] {
        let reply = exchange(&bin.addr, json_post(path, &big)).await;
        assert_json_error(
            &format!("{path} with Content-Length over the limit"),
            &reply,
            &[413],
        );
    }
    // Chunked, so the length is only known as it arrives.
    let mut chunked = format!(
        "POST /api/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..48 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = exchange(&bin.addr, chunked).await;
    assert_json_error("a chunked body over the limit", &reply, &[413]);
    let usage = request(
        "POST",
        "/internal/v1/usage",
        DATA_PLANE,
        &[("Content-Type", "application/json")],
        &big,
    );
    let reply = exchange(&bin.addr, usage).await;
    assert_json_error("a usage report over the limit", &reply, &[413]);
    healthy(&bin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_malformed_json_is_400() {
    let bin = Binary::start("deepjson", &[]);
    let deep_array = "[".repeat(100_000);
    let deep_object = r#"{"a":"#.repeat(50_000);
    let deep_field = format!(
        r#"{{"username":"deep","email":"d@x","role":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a deep array", deep_array.into_bytes()),
        ("a deep object", deep_object.into_bytes()),
        ("deep JSON in a field", deep_field.into_bytes()),
        ("an empty body", Vec::new()),
        ("null", b"null".to_vec()),
        ("an array", b"[]".to_vec()),
        (
            "trailing bytes",
            br#"{"username":"t","email":"t@x"} x"#.to_vec(),
        ),
        (
            "invalid UTF-8",
            b"{\"username\":\"\xff\xfe\",\"email\":\"u@x\"}".to_vec(),
        ),
        (
            "a lone surrogate",
            br#"{"username":"\ud800","email":"s@x"}"#.to_vec(),
        ),
        (
            "an escaped NUL",
            br#"{"username":"a\u0000b","email":"n@x"}"#.to_vec(),
        ),
        (
            "a byte-order mark",
            b"\xef\xbb\xbf{\"username\":\"bom\",\"email\":\"b@x\"}".to_vec(),
        ),
        (
            "a duplicate field",
            br#"{"username":"a","username":"b","email":"d@x"}"#.to_vec(),
        ),
        (
            "a number for a string",
            br#"{"username":1e400,"email":"d@x"}"#.to_vec(),
        ),
        (
            "an unknown role",
            br#"{"username":"r","email":"r@x","role":"root"}"#.to_vec(),
        ),
    ];
    for (what, body) in cases {
        let reply = exchange(&bin.addr, json_post("/api/users", &body)).await;
        assert_json_error(what, &reply, &[400, 422]);
    }
    healthy(&bin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_types_are_415() {
    let bin = Binary::start("contenttype", &[]);
    let body = br#"{"username":"ct","email":"ct@x"}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("json"),
        Some("application/json\u{1}"),
    ] {
        let headers: Vec<(&str, &str)> = ct.iter().map(|c| ("Content-Type", *c)).collect();
        let reply = exchange(
            &bin.addr,
            request("POST", "/api/users", ADMIN, &headers, body),
        )
        .await;
        // A content-type value with a control byte never reaches a route.
        if ct.is_some_and(|c| c.contains('\u{1}')) {
            assert_eq!(reply.status, 400, "{ct:?}: {reply:?}");
            continue;
        }
        assert_json_error(&format!("Content-Type {ct:?}"), &reply, &[415]);
    }
    healthy(&bin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_negative_and_odd_ids_are_404_or_400() {
    let bin = Binary::start("ids", &[]);
    let long = "9".repeat(5000);
    let ids = [
        "-1",
        "0",
        "00",
        "01",
        "+1",
        "1.0",
        "1e3",
        "0x10",
        "%20",
        "%201",
        "%FF",
        "%C3%A9",
        "%00",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551616",
        "99999999999999999999999999999",
        "%D9%A1",
        long.as_str(),
    ];
    for prefix in [
        "/api/users/",
        "/api/api-keys/",
        "/api/admin-api-keys/",
        "/api/access-rules/",
        "/api/mcp-servers/",
    ] {
        for id in ids {
            let path = format!("{prefix}{id}");
            for method in ["GET", "DELETE"] {
                let reply = exchange(&bin.addr, request(method, &path, ADMIN, &[], b"")).await;
                assert_json_error(&format!("{method} {prefix}{:.40}", id), &reply, &[400, 404]);
            }
            let update = if prefix == "/api/users/" {
                "PATCH"
            } else {
                "PUT"
            };
            if !prefix.contains("keys") {
                let reply = exchange(
                    &bin.addr,
                    request(
                        update,
                        &path,
                        ADMIN,
                        &[("Content-Type", "application/json")],
                        b"{}",
                    ),
                )
                .await;
                assert_json_error(
                    &format!("{update} {prefix}{:.40}", id),
                    &reply,
                    &[400, 404, 422],
                );
            }
        }
    }
    for user_id in [
        "-1",
        "0",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "1e300",
        "1.5",
        "\"2\"",
        "null",
        "true",
        "[]",
    ] {
        let body = format!(r#"{{"userId":{user_id},"name":"k","mcpServerIds":["*"]}}"#);
        let reply = exchange(&bin.addr, json_post("/api/admin-api-keys", body.as_bytes())).await;
        assert_json_error(&format!("userId {user_id}"), &reply, &[400, 404, 422]);
    }
    for subject in [
        "user:-1",
        "user:0",
        "user:9223372036854775807",
        "user:99999999999999999999",
        "user:1e3",
    ] {
        let body = format!(r#"{{"name":"r","mcpServerIds":["*"],"subjects":["{subject}"]}}"#);
        let reply = exchange(&bin.addr, json_post("/api/access-rules", body.as_bytes())).await;
        assert_json_error(&format!("subject {subject}"), &reply, &[400, 404, 422]);
    }
    for query in [
        "since=-1",
        "since=18446744073709551616",
        "wait=99999999999",
        "wait=-1",
        "limit=0",
        "limit=4294967296",
        "after=-9223372036854775809",
        "since=1&since=2",
        "since=%FF",
        "after=1",
    ] {
        let path = format!("/internal/v1/key-table?{query}");
        let reply = exchange(&bin.addr, request("GET", &path, DATA_PLANE, &[], b"")).await;
        assert_json_error(&format!("feed query {query}"), &reply, &[400]);
    }
    healthy(&bin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_names_are_kept_or_refused_never_mangled() {
    let bin = Binary::start("unicode", &[]);
    let http = client();
    let post = |path: &'static str, body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{}{path}", bin.base);
        async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let value: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
            (status, ct, value)
        }
    };
    // Kept exactly as sent.
    let kept = [
        "\u{e9}l\u{e8}ve",
        "\u{6771}\u{4eac}",
        "\u{1F600}smile",
        "e\u{301}\u{323}",
        "\u{5e2}\u{5d1}\u{5e8}\u{5d9}\u{5ea}",
        &"\u{e9}".repeat(100),
        &"\u{1F600}".repeat(100),
    ];
    for (i, name) in kept.iter().enumerate() {
        let username = format!("{name}{i}");
        let (status, _, value) = post(
            "/api/users",
            serde_json::json!({"username": username.chars().take(100).collect::<String>(), "email": format!("u{i}@x")}),
        )
        .await;
        assert_eq!(status, 201, "{username:?}: {value}");
        let sent: String = username.chars().take(100).collect();
        assert_eq!(
            value["username"],
            sent.as_str(),
            "the username changed on the way in"
        );
    }
    // Refused with a clear 400.
    let refused = [
        "",
        " ",
        "a b",
        "a\u{202e}b",
        "a\u{200b}b",
        "a\u{0}b",
        "a\u{7}b",
        "\u{feff}",
        &"\u{e9}".repeat(101),
        &format!("e{}", "\u{301}".repeat(40)),
    ];
    for name in refused {
        let (status, ct, value) = post(
            "/api/users",
            serde_json::json!({"username": name, "email": "r@x"}),
        )
        .await;
        assert_eq!(status, 400, "username {name:?}: {value}");
        assert!(
            ct.is_some_and(|c| c.starts_with("application/json")) && value["error"].is_string(),
            "{value}"
        );
    }
    for name in [
        "\u{e9}cho",
        "ECHO",
        "echo\u{0}",
        "e\u{301}",
        "\u{1F600}",
        &"e".repeat(64),
        "-echo",
    ] {
        let (status, _, value) = post("/api/mcp-servers", serde_json::json!({"name": name})).await;
        assert_eq!(status, 400, "server name {name:?}: {value}");
        assert!(value["error"].is_string(), "{value}");
    }
    for text in [
        "Caf\u{e9} \u{6771}\u{4eac} \u{1F600}",
        "\u{5e2}\u{5d1}\u{5e8}\u{5d9}\u{5ea} and ltr",
    ] {
        let name = format!("s{}", text.len());
        let (status, _, value) = post(
            "/api/mcp-servers",
            serde_json::json!({"name": name, "displayName": text, "description": text}),
        )
        .await;
        assert_eq!(status, 201, "{text:?}: {value}");
        assert_eq!(value["displayName"], text);
    }
    healthy(&bin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_408() {
    let bin = Binary::start("stalled", &[("KEYGATE_REQUEST_BODY_TIMEOUT_SECONDS", "2")]);
    let mut request = json_post("/api/users", &[b' '; 1000]);
    // Declares 1000 bytes, sends 10, then nothing.
    request.truncate(request.len() - 990);
    let started = std::time::Instant::now();
    let reply = exchange(&bin.addr, request).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_json_error("a stalled body", &reply, &[408]);
    healthy(&bin).await;
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_hostile_bodies() {
    let bin = Binary::start("memory", &[]);
    let pid = bin.child.id();
    // Warm up: allocator arenas and the pool exist before the baseline.
    for _ in 0..20 {
        healthy(&bin).await;
    }
    let before = rss_kib(pid);
    let big = vec![b' '; BODY_LIMIT + 1];
    let deep = "[".repeat(BODY_LIMIT - 16).into_bytes();
    let huge_header = "x".repeat(64 * 1024);
    for round in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let addr = bin.addr.clone();
            let req = match i % 4 {
                0 => json_post("/api/users", &big),
                1 => json_post("/api/users", &deep),
                2 => request("GET", "/healthz", ADMIN, &[("X-Big", &huge_header)], b""),
                _ => request(
                    "GET",
                    "/healthz",
                    ADMIN,
                    &[("Content-Type", "application/json")],
                    &big,
                ),
            };
            tasks.push(tokio::spawn(async move { (i, exchange(&addr, req).await) }));
        }
        for t in tasks {
            let (i, reply) = t.await.unwrap();
            assert!(reply.status < 500, "round {round} request {i}: {reply:?}");
        }
    }
    healthy(&bin).await;
    let after = rss_kib(pid);
    println!("control plane RSS: {before} KiB before, {after} KiB after 80 hostile requests");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
