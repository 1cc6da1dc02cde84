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

/// The row menu's Disable and Enable (the Status column follows, the edge
/// refuses and accepts the key), Rotate with an overlap (the new key is
/// shown once and works through Envoy, the old one too), Rotate without
/// one (the older keys are refused); the admin's list has the same actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_and_rotate() {
    run("disable_enable_and_rotate").await;
}

/// Users, MCP Servers and Access Rules from the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages() {
    run("admin_pages").await;
}

/// Audit Log: a user sees the events about their own key (made by the
/// admin) and nothing else; the admin sees everything, by action and user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log() {
    run("audit_log").await;
}

/// User Management > Key Policy sets the limits (a bad one gets the API's
/// message); the Create API Key dialog pre-fills the default expiry, names
/// the maximum and shows the API's refusal of a later date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_policy_page_and_create_dialog() {
    run("key_policy").await;
}

/// After a token sign-in, `next` never takes the browser off the site, however
/// it is spelled (tab, newline, `//`, backslash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_stays_on_this_site() {
    run("sign_in_stays_on_this_site").await;
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

/// Every client snippet the console shows (and the README prints) runs
/// through the shipped Envoy configuration with a real key: LangChain and
/// Agno in their own venvs, curl on `/api/me`, and VS Code's file read as VS
/// Code would (its URL and header then used by the MCP SDK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_snippets_run_through_the_edge() {
    let stack = stack().await;
    let admin = stack.control_plane.admin();
    let user = admin
        .create_user(&keygate_e2e::api::unique_name("snippets"))
        .await
        .unwrap();
    admin.grant_user(user, &["echo"]).await.unwrap();
    let key = admin
        .create_key_for(user, &["echo"], None)
        .await
        .unwrap()
        .key;
    wait_until_open(stack, &key).await;
    let origin = stack.url();
    let dir = stack.dir().to_owned();
    tokio::task::spawn_blocking(move || run_snippets(&origin, &key, &dir))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
}

async fn wait_until_open(stack: &ConsoleStack, key: &str) {
    let edge = Edge::new(stack.envoy.listener_port());
    let started = std::time::Instant::now();
    while edge.initialize("echo", Some(key)).await.status != 200 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "a new key did not open echo within 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(keygate_e2e::edge::WORKERS_AGREE_AFTER).await;
}

fn run_snippets(origin: &str, key: &str, dir: &std::path::Path) {
    use keygate_e2e::env;
    use std::process::Command;
    let run = |what: &str, command: &mut Command| -> String {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{what} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{what}: {}", stdout.trim());
        stdout
    };
    let snippets = keygate_e2e::snippets::all();
    let ids: Vec<&str> = snippets.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["vscode", "langchain", "agno", "curl"],
        "the snippets changed: extend this test"
    );
    for snippet in &snippets {
        let text = keygate_e2e::snippets::render(snippet, origin, "echo", None);
        assert!(
            !text.contains(key),
            "{}: the key is in the snippet",
            snippet.id
        );
        let file = dir.join(format!("snippet-{}", snippet.file));
        std::fs::write(&file, &text).expect("write snippet");
        match snippet.id.as_str() {
            "vscode" => {
                let config: serde_json::Value =
                    serde_json::from_str(&text).expect("the VS Code snippet is JSON");
                let server = &config["servers"]["echo"];
                assert_eq!(server["type"], "http");
                assert_eq!(
                    server["headers"]["Authorization"],
                    "Bearer ${input:keygate-key}"
                );
                let input = &config["inputs"][0];
                assert_eq!(input["id"], "keygate-key");
                assert_eq!(input["password"], true);
                let url = server["url"].as_str().expect("url");
                let out = run(
                    "VS Code's URL and header with the MCP SDK",
                    Command::new(env::required_file(env::PYTHON))
                        .arg(env::crate_dir().join("python/mcp_client.py"))
                        .arg(url)
                        .env("KEYGATE_TEST_KEY", key),
                );
                assert!(out.contains("hello from python"), "{out}");
            }
            "langchain" | "agno" => {
                let python = env::required_file(if snippet.id == "langchain" {
                    env::LANGCHAIN_PYTHON
                } else {
                    env::AGNO_PYTHON
                });
                let out = run(
                    &snippet.label,
                    Command::new(&python).arg(&file).env("KEYGATE_API_KEY", key),
                );
                assert!(out.contains("'echo'") && out.contains("'whoami'"), "{out}");
                // With the key filled in, as the console shows it on request.
                let filled = keygate_e2e::snippets::render(snippet, origin, "echo", Some(key));
                let filled_file = dir.join(format!("snippet-filled-{}", snippet.file));
                std::fs::write(&filled_file, filled).expect("write snippet");
                let out = run(
                    &format!("{} with the key filled in", snippet.label),
                    Command::new(&python)
                        .arg(&filled_file)
                        .env_remove("KEYGATE_API_KEY"),
                );
                assert!(out.contains("'echo'"), "{out}");
            }
            "curl" => {
                let out = run(
                    "curl",
                    Command::new("sh").arg(&file).env("KEYGATE_API_KEY", key),
                );
                let me: serde_json::Value = serde_json::from_str(&out).expect("/api/me JSON");
                assert!(
                    me["username"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("snippets")),
                    "{out}"
                );
            }
            other => panic!("no runner for snippet {other}"),
        }
    }
}

/// The README's client snippets are the console's templates, filled in for
/// the demo (`echo` behind `http://127.0.0.1:8080`, the key not filled in).
#[test]
fn readme_shows_the_console_snippets() {
    let readme_path = keygate_e2e::env::workspace_dir().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("read README.md");
    for snippet in keygate_e2e::snippets::all() {
        let text = keygate_e2e::snippets::render(&snippet, "http://127.0.0.1:8080", "echo", None);
        let fenced = format!("\n{text}```\n");
        assert!(
            readme.contains(&fenced),
            "README.md does not show the console's {} snippet as rendered for the demo:\n{text}",
            snippet.label
        );
    }
}
