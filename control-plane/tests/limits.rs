//! Resource limits and input hygiene from the security review (issue 9):
//! metric-label cardinality, header-read timeout and connection cap (against
//! the real binary), keys per user, and control/bidi characters in stored text.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The real `keygate-control-plane serve` on a fresh SQLite file, killed on drop.
struct Binary {
    child: Child,
    base: String,
    addr: String,
    log: Arc<Mutex<String>>,
    dir: std::path::PathBuf,
}

impl Binary {
    fn start(name: &str, env: &[(&str, &str)]) -> Self {
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
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            let addr_tx = addr_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                        let _ = addr_tx.send(addr);
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no `listening on` line; log:\n{}", log.lock().unwrap()));
        Binary {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
            dir,
        }
    }

    fn log(&self) -> String {
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
