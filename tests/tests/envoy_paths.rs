//! The `path_class` fuzz corpus through the real Envoy with the shipped
//! `envoy/envoy.yaml`: for every request target in
//! `fuzz/corpus/path_class/`, the route Envoy picks must be the route of the
//! server the filter checked the key for, and the independent model of
//! Envoy's path normalization the fuzz target trusts
//! (`keygate_fuzz_targets::envoy_path`) must predict what Envoy did.
//!
//! Both MCP upstreams are header echoes, so an answer from one shows the
//! `x-keygate-server` the filter set; the access log (with a case number
//! added to the shipped format) shows the route Envoy picked. Each target is
//! sent with a key for every server and without a key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keygate_e2e::dirs::TestDir;
use keygate_e2e::edge::{EdgeResponse, WORKERS_AGREE_AFTER};
use keygate_e2e::header_echo::{HeaderEcho, Seen};
use keygate_e2e::raw_http;
use keygate_e2e::shipped::ShippedEdge;
use keygate_e2e::stack::unique_name;
use keygate_fuzz_targets::envoy_path::{self, Normalized, Route};

/// The shipped access log line, with the case number of each request.
const LOG_END: &str = "%FILTER_STATE(wasm.keygate:PLAIN)%\\n";
const LOG_END_WITH_CASE: &str = "%FILTER_STATE(wasm.keygate:PLAIN)% case=%REQ(X-FUZZ-CASE)%\\n";

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/path_class");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("corpus file"))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "too small a path corpus in {}",
        dir.display()
    );
    files
}

/// Points the shipped `mcp_time` cluster at `port` (the second echo).
fn time_cluster_to(text: &str, port: u16) -> String {
    let cluster = text
        .find("cluster_name: mcp_time")
        .expect("mcp_time cluster");
    let at =
        cluster + text[cluster..].find("port_value: ").expect("its port") + "port_value: ".len();
    let end = at
        + text[at..]
            .find(|c: char| !c.is_ascii_digit())
            .expect("port end");
    format!("{}{port}{}", &text[..at], &text[end..])
}

/// The route name the shipped table gives a normalized `path` whose model
/// route is `route`: the two MCP servers, the API, the two closed prefixes,
/// and the console's catch-all `/` for everything else (an MCP server name
/// Envoy has no route for included).
fn shipped_route_name(route: &Route, path: &str) -> &'static str {
    match route {
        Route::McpServer(s) if s == "echo" => "mcp_echo",
        Route::McpServer(s) if s == "time" => "mcp_time",
        Route::Api => "api",
        Route::McpServer(_) | Route::None if path.starts_with("/internal") => "internal_closed",
        Route::McpServer(_) | Route::None if path.starts_with("/metrics") => "metrics_closed",
        Route::McpServer(_) | Route::None => "console",
    }
}

/// `case` → `route` from the access log lines that carry a case number.
fn logged_routes(shipped: &ShippedEdge) -> HashMap<String, String> {
    shipped
        .access_log_lines()
        .iter()
        .filter_map(|line| {
            let case = line.rsplit_once(" case=")?.1.trim().to_owned();
            let route = line.split_once(" route=")?.1.split(' ').next()?.to_owned();
            Some((case, route))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_every_corpus_path_where_the_filter_checked_the_key() {
    let echo_dir = TestDir::new("envoy-paths-echo");
    let time_echo = HeaderEcho::start(echo_dir.path(), "time");
    let time_port = time_echo.port();
    let shipped = ShippedEdge::start_edited("envoy-paths", move |text| {
        assert!(
            text.contains(LOG_END),
            "the shipped access log format changed"
        );
        time_cluster_to(&text, time_port).replace(LOG_END, LOG_END_WITH_CASE)
    })
    .await;
    let admin = shipped.control_plane.admin();
    let user = admin.create_user(&unique_name("paths")).await.unwrap();
    admin.grant_user(user, &["*"]).await.unwrap();
    let key = admin.create_key_for(user, &["*"], None).await.unwrap();
    let bearer = format!("Bearer {}", key.key);
    let port = shipped.envoy.listener_port();
    // Both routes open with the key before the corpus is sent.
    let start = Instant::now();
    for path in ["/mcp-connect/echo/ready", "/mcp-connect/time/ready"] {
        loop {
            let r = raw_http::request(port, "GET", path, &[("authorization", &bearer)], "")
                .await
                .unwrap();
            if r.status == 200 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{path} not open: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(WORKERS_AGREE_AFTER).await;

    let files = corpus();
    let mut sent: Vec<(String, String, Normalized, bool, EdgeResponse)> = Vec::new();
    for (i, (name, data)) in files.iter().enumerate() {
        let target = envoy_path::request_target(data);
        let model = envoy_path::normalize(&target);
        for with_key in [true, false] {
            let case = format!("{i}{}", if with_key { "k" } else { "n" });
            let mut headers = vec![("x-fuzz-case", case.as_str())];
            if with_key {
                headers.push(("authorization", bearer.as_str()));
            }
            let response = raw_http::request_bytes(port, "GET", &target, &headers, "")
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            sent.push((case, name.clone(), model.clone(), with_key, response));
        }
    }

    // Every request Envoy routed has its line once the log is flushed.
    let expected: Vec<&str> = sent
        .iter()
        .filter(|(_, _, model, _, _)| matches!(model, Normalized::Path(_)))
        .map(|(case, ..)| case.as_str())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let routes = loop {
        let routes = logged_routes(&shipped);
        if expected.iter().all(|c| routes.contains_key(*c)) || Instant::now() > deadline {
            break routes;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut failures = Vec::new();
    for (case, name, model, with_key, response) in &sent {
        let echoed = response.status == 200
            && serde_json::from_str::<serde_json::Value>(&response.body)
                .is_ok_and(|v| v.get("headers").is_some());
        let mut fail = |why: String| {
            failures.push(format!(
                "{name} ({case}): {why}; got {} {:?}",
                response.status, response.body
            ))
        };
        match model {
            Normalized::Refused => {
                if response.status != 400 || response.body.contains("bad request path") {
                    fail("the model says Envoy refuses it with 400 before any filter".into());
                }
            }
            Normalized::Path(path) => {
                let want = shipped_route_name(&envoy_path::route(path), path);
                match routes.get(case) {
                    Some(route) if route == want => {}
                    got => fail(format!("model routes {path:?} to {want}, Envoy to {got:?}")),
                }
                keygate_fuzz_targets::path_class::assert_agrees(path);
            }
        }
        if echoed {
            let seen = Seen::parse(&response.body);
            let server = seen.values("x-keygate-server");
            let route = routes.get(case).map(String::as_str).unwrap_or("-");
            if !with_key {
                fail(format!(
                    "an MCP upstream answered a request without a key (route {route})"
                ));
            } else if route.strip_prefix("mcp_") != server.first().copied() || server.len() != 1 {
                fail(format!(
                    "Envoy routed to {route}, the filter checked the key for {server:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests disagree:\n{}\n{}",
        failures.len(),
        sent.len(),
        failures.join("\n"),
        shipped.log_tails(40)
    );
    let routed = sent
        .iter()
        .filter(|(c, ..)| routes.get(c).is_some_and(|r| r.starts_with("mcp_")))
        .count();
    println!(
        "{} requests, {routed} routed to an MCP server, all agreeing",
        sent.len()
    );
    drop(time_echo);
}
