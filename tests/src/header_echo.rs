//! An upstream that shows exactly which request headers reached it:
//! `tests/python/header_echo.py`, a WSGI app on the standard library's
//! `wsgiref`, run with the venv's python ([`env::PYTHON`]). It answers every
//! request with the raw header lines it received and the `HTTP_*` entries of
//! its WSGI environ, where `-` and `_` both fold into `_` (as in CGI and
//! several frameworks), so a test sees what such an application would
//! believe the client sent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::env;
use crate::ports::free_port;
use crate::process::ManagedProcess;

#[derive(Debug)]
pub struct HeaderEcho {
    process: ManagedProcess,
    port: u16,
}

impl HeaderEcho {
    /// Starts the echo on a free port, logging into `dir`, and waits until
    /// it accepts connections.
    pub fn start(dir: &Path, name: &str) -> Self {
        let port = free_port();
        let mut command = Command::new(env::required_file(env::PYTHON));
        command
            .arg(env::crate_dir().join("python").join("header_echo.py"))
            .arg(port.to_string());
        let mut process = ManagedProcess::spawn(
            &format!("header-echo-{name}"),
            command,
            &dir.join(format!("header-echo-{name}.log")),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        process.wait_for_log("listening on", Duration::from_secs(30));
        Self { process, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

/// What the echo received, parsed from its answer.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request target as received (path and query).
    pub target: String,
    /// Header lines as received: names as sent by Envoy, in order.
    pub headers: Vec<(String, String)>,
    /// The WSGI environ's `HTTP_*` entries (folded names, joined values).
    pub environ: serde_json::Map<String, Value>,
}

impl Seen {
    /// Parses the echo's JSON answer; panics with the body if it is not one.
    pub fn parse(body: &str) -> Self {
        let value: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("not an answer of the header echo ({e}): {body:?}"));
        let headers = value["headers"]
            .as_array()
            .unwrap_or_else(|| panic!("echo answer without headers: {value}"))
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap_or_default().to_owned(),
                    pair[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        Self {
            target: value["target"].as_str().unwrap_or_default().to_owned(),
            headers,
            environ: value["environ"].as_object().cloned().unwrap_or_default(),
        }
    }

    /// Values of the header lines named exactly `name` (ASCII case ignored).
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The WSGI environ's value for header `name` (`x-a-b` -> `HTTP_X_A_B`).
    pub fn environ_value(&self, name: &str) -> Option<&str> {
        let key = format!("HTTP_{}", name.replace('-', "_").to_ascii_uppercase());
        self.environ.get(&key).and_then(Value::as_str)
    }

    /// Header names that read as `name` once `_` is taken for `-` and case
    /// is ignored, but are not spelled `name` (e.g. `x_keygate_user_id`).
    pub fn folded_spellings_of(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.replace('_', "-").eq_ignore_ascii_case(name) && n.contains('_'))
            .collect()
    }
}
