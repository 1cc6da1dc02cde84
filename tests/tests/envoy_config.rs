//! The Envoy configuration itself: the shipped `envoy/envoy.yaml` (rendered
//! with test ports, token and Wasm path) validates and enforces scope, and an
//! invalid filter configuration never lets a request through.

use std::time::{Duration, Instant};

use keygate_e2e::edge::{
    Edge, assert_initialized_by, assert_insufficient_scope, assert_missing_key,
};
use keygate_e2e::envoy::{
    Envoy, EnvoyConfig, ShippedConfigPorts, WaitFor, render_shipped_config, shipped_config_path,
    validate_config,
};
use keygate_e2e::mcp_server::Tool;
use keygate_e2e::ports::free_port;
use keygate_e2e::spelling::assert_spellings_never_widen_scope;
use keygate_e2e::stack::unique_name;
use keygate_e2e::{env, keys};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_envoy_config_validates_and_enforces_scope() {
    let started = Instant::now();
    let dir = keygate_e2e::dirs::TestDir::new("config-shipped");
    let control_plane = keygate_e2e::control_plane::ControlPlane::start(dir.path()).await;
    let echo = keygate_e2e::mcp_server::McpServer::start(dir.path(), "echo", Tool::Echo);
    let time = keygate_e2e::mcp_server::McpServer::start(dir.path(), "time", Tool::Time);
    let admin = control_plane.admin();
    admin.create_server("echo").await.unwrap();
    admin.create_server("time").await.unwrap();
    let ports = ShippedConfigPorts {
        listener_port: free_port(),
        control_plane_port: control_plane.port(),
        echo_port: echo.port(),
        time_port: time.port(),
        admin_port: free_port(),
        data_plane_token: control_plane.data_plane_token().to_owned(),
    };
    let wasm = env::required_file(env::FILTER_WASM);
    let text = render_shipped_config(&ports, &wasm);
    let rendered = dir.path().join("shipped-envoy.yaml");
    std::fs::write(&rendered, &text).expect("write rendered config");
    let (valid, output) = validate_config(&rendered);
    assert!(
        valid,
        "envoy --mode validate refused {}:\n{output}",
        shipped_config_path().display()
    );
    println!("shipped config validated after {:?}", started.elapsed());

    let envoy = Envoy::start_with_text(
        dir.path(),
        &text,
        "yaml",
        ports.listener_port,
        ports.admin_port,
        WaitFor::FirstSync,
    )
    .await;
    println!("shipped config: Envoy synced after {:?}", started.elapsed());
    let edge = Edge::new(envoy.listener_port());
    let user = admin.create_user(&unique_name("shipped")).await.unwrap();
    admin.grant_user(user, &["echo", "time"]).await.unwrap();
    let key = admin.create_key_for(user, &["echo"], None).await.unwrap();
    let start = Instant::now();
    loop {
        let response = edge.initialize("echo", Some(&key.key)).await;
        if response.status == 200 {
            assert_initialized_by(&response, "echo");
            tokio::time::sleep(keygate_e2e::edge::WORKERS_AGREE_AFTER).await;
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "key never usable: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_insufficient_scope(&edge.initialize("time", Some(&key.key)).await, &key.key);
    assert_missing_key(&edge.initialize("time", None).await);
    println!("shipped config: key checked after {:?}", started.elapsed());
    assert_spellings_never_widen_scope(&edge, &key.key, "echo", "time").await;
    println!(
        "shipped config: spellings checked after {:?}",
        started.elapsed()
    );
    let me = edge.get("/api/me", Some(&key.key)).await.expect("me");
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json()["id"], user);
    drop(envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_filter_configuration_never_fails_open() {
    let dir = keygate_e2e::dirs::TestDir::new("config-bad-filter");
    let alpha = keygate_e2e::mcp_server::McpServer::start(dir.path(), "alpha", Tool::Echo);
    let unknown = keys::unknown_key();
    for raw in [
        "not json".to_owned(),
        "{}".to_owned(),
        // Valid JSON, but the data-plane token is missing.
        r#"{"controlPlaneCluster":"keygate_control_plane"}"#.to_owned(),
        // A long-poll wait longer than the staleness limit.
        r#"{"controlPlaneCluster":"keygate_control_plane","dataPlaneToken":"SECRET-TOKEN-VALUE","feedWaitSeconds":30,"maxStalenessSeconds":10}"#.to_owned(),
    ] {
        let mut config = EnvoyConfig::new(free_port(), "unused", vec![("alpha".to_owned(), alpha.port())]);
        config.raw_filter_configuration = Some(raw.clone());
        let mut envoy = Envoy::spawn(dir.path(), &config);
        if !envoy.ready_or_exited(Duration::from_secs(60)).await {
            // Refused for the right reason, in one clear line, without the token.
            let log = envoy.log_tail(400);
            assert!(
                log.contains("invalid keygate filter configuration"),
                "{raw:?}: Envoy exited, but not over the filter configuration:\n{log}"
            );
            assert!(!log.contains("SECRET-TOKEN-VALUE"), "the data-plane token is in the log");
            println!("{raw:?}: Envoy refused to start");
            continue;
        }
        // Envoy runs: the MCP path must still be closed, key or not.
        let edge = Edge::new(envoy.listener_port());
        for key in [None, Some(unknown.as_str())] {
            let response = edge.initialize("alpha", key).await;
            assert!(
                response.status >= 400
                    && response.header("mcp-session-id").is_none()
                    && !response.body.contains("serverInfo"),
                "{raw:?}: a request reached the MCP server through a filter with a bad configuration: {response:?}"
            );
            println!("{raw:?}: Envoy runs, MCP path answers {}", response.status);
        }
        envoy.assert_running();
    }
}
