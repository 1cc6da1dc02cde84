//! Child processes of a test: spawned with their output in a log file,
//! killed on drop, and their log printed when the test fails.
//!
//! Every child is spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it when that thread dies,
//! which happens only when the test binary exits. So processes of shared
//! fixtures (held in statics, never dropped) and of tests that abort cannot
//! outlive the test run.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("e2e-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    })
}

fn spawn_tied_to_test_binary(mut command: Command) -> std::io::Result<Child> {
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("test binary exited"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// A running child process whose stdout and stderr go to `log_path`.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl ManagedProcess {
    /// Spawns `command` with its output appended to `log_path` (created if
    /// needed, kept across restarts of the same process).
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> Self {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("{name}: open log {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("clone log file handle");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = spawn_tied_to_test_binary(command)
            .unwrap_or_else(|e| panic!("{name}: cannot start process: {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log_path: log_path.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// False once the process has exited (or was killed).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "{} exited unexpectedly with {status}\n{}",
                self.name,
                log_tail(&self.log_path, 80)
            );
        }
    }

    /// Kills the process (SIGKILL: a crash, not a graceful stop) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `lines` lines of the log, with a header naming the process.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "----- {} ({}) -----\n{}",
            self.name,
            self.log_path.display(),
            log_tail(&self.log_path, lines)
        )
    }

    /// Waits until the log contains `needle`, panicking after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if read_lossy(&self.log_path).contains(needle) {
                return;
            }
            self.assert_running();
            assert!(
                std::time::Instant::now() < deadline,
                "{}: no log line containing {needle:?} within {timeout:?}\n{}",
                self.name,
                self.log_tail(80)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("{}", self.log_tail(60));
        }
        self.kill();
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        // Logs can grow large; the interesting part is at the end.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(4 * 1024 * 1024);
        let _ = file.seek(SeekFrom::Start(start));
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of a log file (empty if it does not exist).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = read_lossy(path);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
