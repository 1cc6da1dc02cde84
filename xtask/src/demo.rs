//! `cargo xtask demo`: the whole path on loopback. Starts the control plane
//! (SQLite), the `echo` and `time` MCP servers and Envoy with the keygate
//! filter; creates a demo user, grants both servers, creates a key scoped to
//! `echo`; proves a client call works through Envoy; prints how to connect.

use std::{
    io::Read,
    path::Path,
    process::Command,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::sleep,
    time::{Duration, Instant},
};

use clap::Args;
use keygate_test_support::api::Api;
use serde_json::{Value, json};

use crate::{
    api::{Http, initialize_request, mcp_echo_call},
    artifacts::{self, Artifacts},
    procs::{Services, port_open},
    step::step,
    venv::{self, Venv},
    workspace::Workspace,
};
use anyhow::{Context, Result, anyhow};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Set everything up, make one client call through Envoy, then stop
    /// (for CI and `cargo xtask test`).
    #[arg(long)]
    pub no_wait: bool,
}

/// Loopback ports of the demo; the same as in envoy/envoy.yaml.
const EDGE_PORT: u16 = 8080;
const CONTROL_PLANE_PORT: u16 = 8081;
const ECHO_PORT: u16 = 9001;
const TIME_PORT: u16 = 9002;
const ENVOY_ADMIN_PORT: u16 = 9901;

/// Strings of envoy/envoy.yaml that the demo replaces when rendering.
const TEMPLATE_TOKEN: &str = "change-me-data-plane-token";
const TEMPLATE_WASM: &str = "target/wasm32-wasip1/release/keygate_filter.wasm";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the filter may take to pull a newly created key.
const KEY_SYNC_TIMEOUT: Duration = Duration::from_secs(20);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn run(args: &DemoArgs) -> Result<()> {
    let workspace = Workspace::locate()?;
    let venv = venv::prepare(&workspace)?;
    let artifacts = artifacts::build(&workspace)?;
    run_prepared(&workspace, &venv, &artifacts, args.no_wait)
}

/// Runs the demo with tools and binaries already in place.
pub fn run_prepared(
    workspace: &Workspace,
    venv: &Venv,
    artifacts: &Artifacts,
    no_wait: bool,
) -> Result<()> {
    install_ctrlc_handler()?;
    let http = Http::new()?;
    let admin_token = match std::env::var("KEYGATE_ADMIN_TOKEN") {
        Ok(token) if !token.is_empty() => token,
        _ => random_token()?,
    };
    let data_plane_token = random_token()?;
    let demo_dir = workspace.demo_dir();

    step("check the demo ports are free", check_ports_free)?;
    step(
        "prepare target/demo (fresh SQLite database, rendered Envoy config)",
        || {
            prepare_demo_dir(
                workspace,
                &demo_dir,
                &artifacts.filter_wasm,
                &data_plane_token,
            )
        },
    )?;
    // Dropping `services` (on any error below) stops every started child.
    let mut services = Services::default();
    start_services(
        &mut services,
        workspace,
        venv,
        artifacts,
        &http,
        &admin_token,
        &data_plane_token,
    )?;

    let api = http.api(
        &format!("http://127.0.0.1:{CONTROL_PLANE_PORT}"),
        &admin_token,
    );
    let key = step(
        "create servers echo and time, user demo, an access rule, and a key for echo",
        || http.block_on(provision(&api)),
    )?;
    let echo_url = format!("http://127.0.0.1:{EDGE_PORT}/mcp-connect/echo/mcp");
    let time_url = format!("http://127.0.0.1:{EDGE_PORT}/mcp-connect/time/mcp");
    let me_url = format!("http://127.0.0.1:{EDGE_PORT}/api/me");
    step(
        "prove it: an MCP client call through Envoy with the key",
        || prove(&http, &echo_url, &time_url, &me_url, &key),
    )?;
    print_summary(&admin_token, &key, &echo_url, &me_url, &demo_dir);

    if no_wait {
        println!("==> --no-wait: stopping the demo");
        services.stop_all();
        Ok(())
    } else {
        supervise(&mut services)
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Starts the control plane, the two MCP servers and Envoy, each waited on
/// until ready.
fn start_services(
    services: &mut Services,
    workspace: &Workspace,
    venv: &Venv,
    artifacts: &Artifacts,
    http: &Http,
    admin_token: &str,
    data_plane_token: &str,
) -> Result<()> {
    let demo_dir = workspace.demo_dir();
    step("start the control plane (SQLite)", || {
        let mut command = Command::new(&artifacts.control_plane_bin);
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{CONTROL_PLANE_PORT}")])
            .args(["--database-url", "sqlite://keygate.db"])
            // Browsers reach the console through the demo's Envoy, which
            // appends the client's address to X-Forwarded-For: the audit
            // log records that address rather than Envoy's.
            .args(["--trusted-proxy-hops", "1"])
            // The console is served through Envoy: its origin is the edge's.
            .env(
                "KEYGATE_PUBLIC_URL",
                format!("http://127.0.0.1:{EDGE_PORT}"),
            )
            .current_dir(&demo_dir)
            // Tokens go through the environment, not argv, so `ps` does not show them.
            .env("KEYGATE_ADMIN_TOKEN", admin_token)
            .env("KEYGATE_DATA_PLANE_TOKEN", data_plane_token);
        let log = demo_dir.join("logs/control-plane.log");
        services.spawn("control plane", command, &log)?;
        let readyz = format!("http://127.0.0.1:{CONTROL_PLANE_PORT}/readyz");
        services.wait_ready("control plane", STARTUP_TIMEOUT, &interrupted, |service| {
            service.log_contains("listening on") && http.is_ok(&readyz)
        })
    })?;

    step(
        "start the MCP servers echo (:9001) and time (:9002)",
        || {
            for (name, port) in [("echo", ECHO_PORT), ("time", TIME_PORT)] {
                let mut command = Command::new(&artifacts.mcp_server_bin);
                command
                    .args(["--tool", name, "--name", name])
                    .args(["--listen", &format!("127.0.0.1:{port}")]);
                let log = demo_dir.join(format!("logs/mcp-{name}.log"));
                let service = format!("MCP server {name}");
                services.spawn(&service, command, &log)?;
                services.wait_ready(&service, STARTUP_TIMEOUT, &interrupted, |service| {
                    service.log_contains("listening on")
                })?;
            }
            Ok(())
        },
    )?;

    step("start Envoy with the keygate filter", || {
        let mut command = Command::new(&venv.envoy);
        command
            .arg("-c")
            .arg(demo_dir.join("envoy.yaml"))
            // No hot restart: no shared-memory base id to collide with
            // another Envoy on this machine.
            .args(["--concurrency", "2", "--disable-hot-restart"])
            .current_dir(&workspace.root);
        let log = demo_dir.join("logs/envoy.log");
        services.spawn("Envoy", command, &log)?;
        let ready = format!("http://127.0.0.1:{ENVOY_ADMIN_PORT}/ready");
        services.wait_ready("Envoy", STARTUP_TIMEOUT, &interrupted, |_| {
            http.is_ok(&ready)
        })
    })
}

/// Keeps the demo up until Ctrl-C, or until a service dies (then says which
/// and stops the rest).
fn supervise(services: &mut Services) -> Result<()> {
    println!("The demo is running. Press Ctrl-C to stop everything.");
    loop {
        if interrupted() {
            println!();
            println!("==> Ctrl-C: stopping the demo");
            services.stop_all();
            return Ok(());
        }
        if let Some(report) = services.exited() {
            services.stop_all();
            return Err(anyhow!("{report}\nstopped the other services"));
        }
        sleep(Duration::from_millis(200));
    }
}

/// Ctrl-C (and SIGTERM) only set a flag: the main loop stops the services.
fn install_ctrlc_handler() -> Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let _ = INSTALLED.set(());
    Ok(())
}

fn check_ports_free() -> Result<()> {
    for port in [
        EDGE_PORT,
        CONTROL_PLANE_PORT,
        ECHO_PORT,
        TIME_PORT,
        ENVOY_ADMIN_PORT,
    ] {
        if port_open(([127, 0, 0, 1], port).into()) {
            return Err(anyhow!(
                "port {port} on 127.0.0.1 is already in use (another demo or Envoy running?); stop it and retry"
            ));
        }
    }
    Ok(())
}

/// Fresh database and logs; Envoy config rendered with this run's data-plane
/// token and the absolute path of the Wasm filter.
fn prepare_demo_dir(
    workspace: &Workspace,
    demo_dir: &Path,
    filter_wasm: &Path,
    data_plane_token: &str,
) -> Result<()> {
    std::fs::create_dir_all(demo_dir.join("logs"))
        .with_context(|| format!("creating {}", demo_dir.display()))?;
    for file in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
        let path = demo_dir.join(file);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let template_path = workspace.root.join("envoy/envoy.yaml");
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    let rendered = render_envoy_config(&template, data_plane_token, filter_wasm)?;
    let rendered_path = demo_dir.join("envoy.yaml");
    std::fs::write(&rendered_path, rendered)
        .with_context(|| format!("writing {}", rendered_path.display()))
}

/// Replaces the template token and Wasm path of envoy/envoy.yaml.
pub fn render_envoy_config(template: &str, data_plane_token: &str, wasm: &Path) -> Result<String> {
    for needle in [TEMPLATE_TOKEN, TEMPLATE_WASM] {
        if !template.contains(needle) {
            return Err(anyhow!(
                "envoy/envoy.yaml no longer contains `{needle}`, which the demo replaces; update xtask/src/demo.rs"
            ));
        }
    }
    Ok(template
        .replace(TEMPLATE_TOKEN, data_plane_token)
        .replace(TEMPLATE_WASM, &wasm.to_string_lossy()))
}

/// Creates the demo's servers, user, access rule and key; returns the key.
async fn provision(api: &Api) -> Result<String> {
    for (name, display_name, description) in [
        ("echo", "Echo", "Echoes the given text back"),
        ("time", "Time", "Tells the current UTC time"),
    ] {
        api.create(
            "/api/mcp-servers",
            &json!({"name": name, "displayName": display_name, "description": description}),
        )
        .await?;
    }
    let user = api
        .create(
            "/api/users",
            &json!({"username": "demo", "email": "demo@example.com", "role": "user"}),
        )
        .await?;
    let user_id = user["id"].clone();
    let user_id_text = match &user_id {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.clone(),
        other => {
            return Err(anyhow!("POST /api/users returned no usable id: {other}"));
        }
    };
    api.create(
        "/api/access-rules",
        &json!({
            "name": "demo user: echo and time",
            "mcpServerIds": ["echo", "time"],
            "subjects": [format!("user:{user_id_text}")]
        }),
    )
    .await?;
    let created = api
        .create(
            "/api/admin-api-keys",
            &json!({
                "userId": user_id,
                "name": "demo key",
                "description": "created by cargo xtask demo",
                "mcpServerIds": ["echo"]
            }),
        )
        .await?;
    created["key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("POST /api/admin-api-keys returned no `key`"))
}

/// A real MCP exchange through Envoy with the key (retrying while the filter
/// pulls the new key), then `/api/me` with the key, then the key against the
/// `time` server, which is outside its scope and must be refused.
fn prove(http: &Http, echo_url: &str, time_url: &str, me_url: &str, key: &str) -> Result<()> {
    let started = Instant::now();
    let proof = loop {
        match mcp_echo_call(http, echo_url, key, "hello through keygate") {
            Ok(proof) => break proof,
            Err(error) if started.elapsed() > KEY_SYNC_TIMEOUT => {
                return Err(anyhow!(
                    "no successful MCP call through Envoy after {}s; last error: {error:#} (see target/demo/logs/)",
                    KEY_SYNC_TIMEOUT.as_secs()
                ));
            }
            Err(_) if interrupted() => return Err(anyhow!("interrupted (Ctrl-C)")),
            Err(_) => sleep(Duration::from_millis(250)),
        }
    };
    if proof.echoed != "hello through keygate" {
        return Err(anyhow!(
            "the echo tool answered {:?} instead of the text sent",
            proof.echoed
        ));
    }
    println!(
        "    initialize + tools/call echo via {echo_url}: OK (server {:?}, key accepted after {:.1}s)",
        proof.server_name,
        started.elapsed().as_secs_f64()
    );

    let me = http.get(me_url, Some(key))?;
    let username = me
        .json()
        .ok()
        .and_then(|body| body["username"].as_str().map(str::to_owned));
    if me.status != 200 || username.as_deref() != Some("demo") {
        return Err(anyhow!(
            "GET /api/me through Envoy with the key answered {}: {}",
            me.status,
            me.body
        ));
    }
    println!("    GET /api/me via Envoy with the key: 200, username \"demo\"");

    let initialize = initialize_request();
    let outside = http.post_json(
        time_url,
        Some(key),
        &[("accept", "application/json, text/event-stream")],
        &initialize,
    )?;
    if outside.status != 403 {
        return Err(anyhow!(
            "the echo-only key reached the time server with status {} (expected 403)",
            outside.status
        ));
    }
    println!("    the same key on /mcp-connect/time/mcp: 403 (outside its scope), as expected");

    let console_url = format!("http://127.0.0.1:{EDGE_PORT}/signin");
    let console = http.get(&console_url, None)?;
    if console.status != 200 || !console.body.contains("/console/signin.js") {
        return Err(anyhow!(
            "GET /signin through Envoy answered {} without the console's sign-in page",
            console.status
        ));
    }
    println!("    GET /signin via Envoy: 200, the web console's sign-in page");
    Ok(())
}

fn print_summary(admin_token: &str, key: &str, echo_url: &str, me_url: &str, demo_dir: &Path) {
    let vscode = vscode_snippet(echo_url, key);
    println!();
    println!("================================ keygate demo ================================");
    println!("Admin token (control plane started with it):");
    println!("  {admin_token}");
    println!("Web console (the admin signs in there with the admin token above):");
    println!("  http://127.0.0.1:{EDGE_PORT}/");
    println!("Demo user `demo`, key scoped to server `echo` (shown once):");
    println!("  {key}");
    println!("MCP connection URL:");
    println!("  {echo_url}");
    println!("Who am I, through Envoy with the key:");
    println!("  curl -H 'Authorization: Bearer {key}' {me_url}");
    println!("Admin API (direct), e.g. list keys:");
    println!(
        "  curl -H 'Authorization: Bearer {admin_token}' http://127.0.0.1:{CONTROL_PLANE_PORT}/api/admin-api-keys"
    );
    println!("VS Code, .vscode/mcp.json:");
    for line in vscode.lines() {
        println!("  {line}");
    }
    println!("Logs: {}", demo_dir.join("logs").display());
    println!("Envoy admin: http://127.0.0.1:{ENVOY_ADMIN_PORT}/stats/prometheus");
    println!("===============================================================================");
}

/// `.vscode/mcp.json` for the echo server, fields in the order VS Code's
/// documentation shows them (serde_json would sort them).
fn vscode_snippet(url: &str, key: &str) -> String {
    let quote = |text: &str| Value::String(text.to_owned()).to_string();
    format!(
        "{{\n  \"servers\": {{\n    \"echo\": {{\n      \"type\": \"http\",\n      \"url\": {},\n      \"headers\": {{ \"Authorization\": {} }}\n    }}\n  }}\n}}",
        quote(url),
        quote(&format!("Bearer {key}"))
    )
}

/// 32 bytes from the OS CSPRNG, hex-encoded.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .context("reading random bytes from /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_replaces_token_and_wasm_path() {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.yaml"))
                .unwrap();
        let rendered =
            render_envoy_config(&template, "tok123", Path::new("/abs/keygate_filter.wasm"))
                .unwrap();
        assert!(!rendered.contains(TEMPLATE_TOKEN));
        assert!(!rendered.contains(TEMPLATE_WASM));
        assert!(rendered.contains("\"dataPlaneToken\": \"tok123\""));
        assert!(rendered.contains("filename: /abs/keygate_filter.wasm"));
    }

    #[test]
    fn rendering_refuses_a_template_without_placeholders() {
        assert!(render_envoy_config("admin: {}", "t", Path::new("/x.wasm")).is_err());
    }

    #[test]
    fn vscode_snippet_is_valid_json_with_the_key() {
        let snippet = vscode_snippet("http://127.0.0.1:8080/mcp-connect/echo/mcp", "ok1-1-2-x");
        let parsed: Value = serde_json::from_str(&snippet).unwrap();
        let echo = &parsed["servers"]["echo"];
        assert_eq!(echo["type"], "http");
        assert_eq!(echo["url"], "http://127.0.0.1:8080/mcp-connect/echo/mcp");
        assert_eq!(echo["headers"]["Authorization"], "Bearer ok1-1-2-x");
    }

    #[test]
    fn random_tokens_are_64_hex_chars_and_differ() {
        let first = random_token().unwrap();
        let second = random_token().unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }
}
