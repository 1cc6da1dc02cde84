//! Target `api_json`: the control plane's JSON bodies, through its real
//! router (authentication, JSON extraction, validation, SQLite), in process.
//!
//! Input: the first byte picks the route ([`ROUTES`]) and the content type
//! ([`CONTENT_TYPES`]); the rest is the body. What must hold for every body:
//! an answer below 500; an error answer is a JSON object with a string
//! `error`; any other answer with a body is JSON.
//!
//! The database is one SQLite file per fuzzing process, set up once with a
//! server `echo`, a user (id 2) and an access rule (id 1) for the routes that
//! name them; bodies that create things leave them there, as they would on a
//! real control plane.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use keygate_control_plane::config::Config;
use keygate_control_plane::{build_state, routes, serve};
use std::sync::OnceLock;
use std::time::Duration;
use tower::ServiceExt as _;

const ADMIN: &str = "fuzz-admin-token-0123456789";
const DATA_PLANE: &str = "fuzz-data-plane-token-0123456789";

/// (method, path, token) of each route the fuzzer sends bodies to.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/api/mcp-servers", ADMIN),
    ("PUT", "/api/mcp-servers/echo", ADMIN),
    ("POST", "/api/users", ADMIN),
    ("PATCH", "/api/users/2", ADMIN),
    ("POST", "/api/access-rules", ADMIN),
    ("PUT", "/api/access-rules/1", ADMIN),
    ("POST", "/api/admin-api-keys", ADMIN),
    ("POST", "/api/api-keys", ADMIN),
    ("POST", "/internal/v1/usage", DATA_PLANE),
];

pub const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
];

struct App {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn request(
    method: &str,
    path: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Request<Body> {
    let built = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body));
    match built {
        Ok(r) => r,
        Err(e) => panic!("the target's own request: {e}"),
    }
}

/// Sends one request; the status and the whole body.
fn send(app: &App, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    app.runtime.block_on(async {
        let response = match app.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        match axum::body::to_bytes(response.into_body(), 16 << 20).await {
            Ok(bytes) => (status, bytes.to_vec()),
            Err(e) => panic!("the answer's body could not be read: {e}"),
        }
    })
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => panic!("tokio runtime: {e}"),
        };
        let file = std::env::temp_dir().join(format!("keygate-fuzz-api-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let mut config = Config::new(format!("sqlite://{}?mode=rwc", file.display()));
        config.admin_token = Some(ADMIN.into());
        config.data_plane_token = Some(DATA_PLANE.into());
        let state = match runtime.block_on(build_state(&config)) {
            Ok(s) => s,
            Err(e) => panic!("control plane state: {e}"),
        };
        let router = serve::with_body_deadline(routes::router(state), Duration::from_secs(5));
        let app = App { runtime, router };
        for (path, body) in [
            ("/api/mcp-servers", r#"{"name":"echo"}"#),
            (
                "/api/users",
                r#"{"username":"fuzz-user","email":"fuzz@example.com"}"#,
            ),
            (
                "/api/access-rules",
                r#"{"name":"fuzz-rule","mcpServerIds":["echo"],"subjects":["user:2"]}"#,
            ),
        ] {
            let (status, answer) = send(
                &app,
                request("POST", path, ADMIN, "application/json", body.into()),
            );
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{path}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        app
    })
}

pub fn check(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let pick = usize::from(pick);
    let Some(&(method, path, token)) = ROUTES.get(pick % ROUTES.len()) else {
        return;
    };
    let content_type = CONTENT_TYPES
        .get(pick / ROUTES.len() % CONTENT_TYPES.len())
        .copied()
        .unwrap_or("application/json");
    let app = app();
    let (status, answer) = send(
        app,
        request(method, path, token, content_type, body.to_vec()),
    );
    let shown = String::from_utf8_lossy(&answer);
    assert!(status.as_u16() < 500, "{method} {path}: {status} {shown}");
    if answer.is_empty() {
        assert!(
            status.is_success(),
            "{method} {path}: {status} without a body"
        );
        return;
    }
    let json: serde_json::Value = match serde_json::from_slice(&answer) {
        Ok(v) => v,
        Err(e) => panic!("{method} {path}: {status} answered non-JSON ({e}): {shown}"),
    };
    if !status.is_success() {
        assert!(
            json.get("error").is_some_and(serde_json::Value::is_string),
            "{method} {path}: {status} without an error message: {shown}"
        );
    }
}
