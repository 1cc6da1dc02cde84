//! The binary's contract: `keygate-control-plane serve` with env-configured
//! tokens, the default SQLite file created in the working directory, the
//! `listening on <addr>` log line, no secrets in logs, and a prompt graceful
//! exit on SIGTERM even with a long poll in flight.

use crate::common::{capture_until_listening, client, feed_version, flip_first_char};
use serde_json::{Value, json};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

const ADMIN: &str = "cli-admin-token-0123456789";
const DATA_PLANE: &str = "cli-data-plane-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_contract() {
    let dir = std::env::temp_dir().join(format!("keygate_cli_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate-control-plane"))
        .arg("serve")
        .current_dir(&dir)
        .env("KEYGATE_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_ADMIN_TOKEN", ADMIN)
        .env("KEYGATE_DATA_PLANE_TOKEN", DATA_PLANE)
        .env("RUST_LOG", "debug")
        .env_remove("KEYGATE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the control plane binary");

    // Collect all output; find the address from `listening on <addr>`.
    let (log, addr) = capture_until_listening(&mut child);
    let base = format!("http://{addr}");
    assert!(
        dir.join("keygate.db").exists(),
        "default SQLite file created in cwd"
    );

    let http = client();
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/api/mcp-servers"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "alpha"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r: Value = http
        .post(format!("{base}/api/api-keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "k", "mcpServerIds": ["*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = r["key"].as_str().unwrap().to_owned();
    let me = http
        .get(format!("{base}/api/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let forged = format!(
        "{}{}",
        &key[..key.len() - 43],
        flip_first_char(&key[key.len() - 43..])
    );
    let r = http
        .get(format!("{base}/api/me"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let version = feed_version(&http, &base, DATA_PLANE).await;

    // A long poll in flight must not hold up SIGTERM.
    let poll = {
        let http = http.clone();
        let url = format!("{base}/internal/v1/key-table?since={version}&wait=30");
        tokio::spawn(async move { http.get(url).bearer_auth(DATA_PLANE).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "no exit 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let r = poll.await.unwrap().expect("long poll answered before exit");
    assert_eq!(r.status(), 200);
    println!(
        "exit after SIGTERM with a long poll in flight: {:?}",
        sent.elapsed()
    );

    std::thread::sleep(Duration::from_millis(100));
    let log = log.lock().unwrap().clone();
    for secret in [ADMIN, DATA_PLANE, key.as_str(), &key[key.len() - 43..]] {
        assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
