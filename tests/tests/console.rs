//! The web console in a real browser: headless Chromium driven by Playwright
//! (`tests/python/console_browser.py`) against the shipped Envoy
//! configuration, the control plane, real MCP servers and a real OpenID
//! provider. Each test is one scenario; they share one stack and run one at
//! a time (two cores: one Chromium at a time). A failed scenario leaves a
//! screenshot in `target/e2e-console/<scenario>/failure.png`.

use keygate_e2e::console::ConsoleStack;
use keygate_e2e::edge::Edge;
use tokio::sync::{Mutex, OnceCell};

static STACK: OnceCell<ConsoleStack> = OnceCell::const_new();
/// One browser at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn stack() -> &'static ConsoleStack {
    STACK.get_or_init(|| ConsoleStack::start("console")).await
}

async fn run(scenario: &'static str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = stack().await;
    tokio::task::spawn_blocking(move || stack.run_scenario(scenario))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
}

/// A user signs in through the OpenID provider, creates a key for one
/// server with an expiry, copies it, calls a tool through Envoy with the
/// Python MCP SDK, sees Last Used change, deletes it (401 at the edge
/// after); the key is nowhere in the page once its dialog closed; the user
/// cannot open admin pages or call admin routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_user_key_lifecycle() {
    run("oidc_user_key_lifecycle").await;
}

/// The same life of a key for the admin, signed in with the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_lifecycle() {
    run("admin_key_lifecycle").await;
}

/// The admin sees the User column, filters by user, creates a key for a
/// user and deletes another user's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_other_users_keys() {
    run("admin_manages_other_users_keys").await;
}

/// Users, MCP Servers and Access Rules from the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages() {
    run("admin_pages").await;
}

/// A same-site page on another port posts with the cookie: 403; so does a
/// raw request with the cookie and a foreign Origin; signing out ends the
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_and_sign_out() {
    run("csrf_and_sign_out").await;
}

/// Dark mode, 390 px, visible focus, focus trap, Escape, a refused past
/// date, readable errors, an ended session back to the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_and_keyboard() {
    run("look_and_keyboard").await;
}

/// The edge serves the console at `/` with its security headers, and never
/// `/internal/…` or `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_serves_console_but_not_internal_or_metrics() {
    let stack = stack().await;
    let edge = Edge::new(stack.envoy.listener_port());
    for path in [
        "/internal/v1/key-table",
        "/internal/v1/usage",
        "/internal",
        "/metrics",
        "/api/../internal/v1/key-table",
    ] {
        let response = edge.get(path, None).await.expect("GET through the edge");
        assert_eq!(response.status, 404, "{path} through Envoy: {response:?}");
    }
    let page = edge.get("/api-keys", None).await.expect("GET /api-keys");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("/console/app.js"), "{page:?}");
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    // `/` redirects to the key list (the client follows it).
    let root = edge.get("/", None).await.expect("GET /");
    assert!(
        root.status == 200 && root.body.contains("/console/app.js"),
        "{root:?}"
    );
    let script = edge
        .get("/console/keys.js", None)
        .await
        .expect("GET keys.js");
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/javascript")),
        "{script:?}"
    );
}

/// The README's pictures (key list, create dialog, shown-once dialog) and,
/// for review, dark and 390 px variants: in
/// `target/e2e-console/screenshots/`, or in the folder `KEYGATE_SCREENSHOTS`
/// names (`cargo xtask screenshots` passes `docs/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots() {
    run("screenshots").await;
}
