//! A child process with its stdout and stderr in a log file: started, read
//! (log tail, "has it logged this yet"), stopped (SIGTERM, then SIGKILL) or
//! killed, and killed on drop, printing its log if a test is failing.
//!
//! Every child is spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG`: the kernel signals it when that thread dies, which
//! happens only when the whole process (test binary, bench or xtask) exits.
//! So children of shared fixtures (held in statics, never dropped), of tests
//! that abort and of a tool killed with SIGKILL cannot outlive their parent.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

fn spawner() -> std::io::Result<&'static Mutex<mpsc::Sender<SpawnRequest>>> {
    if let Some(spawner) = SPAWNER.get() {
        return Ok(spawner);
    }
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("child-spawner".into())
        .spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn());
            }
        })?;
    // A racing caller may have won; its spawner is used and ours ends.
    Ok(SPAWNER.get_or_init(|| Mutex::new(tx)))
}

/// How a child is tied to its parent and its log.
#[derive(Debug, Clone, Copy)]
pub struct SpawnOptions {
    /// Signal the kernel sends the child when its parent dies: SIGKILL for
    /// test fixtures, SIGTERM for services that should shut down cleanly.
    pub death_signal: libc::c_int,
    /// Start a new log instead of appending (appending keeps the log of a
    /// restarted process in one file).
    pub truncate_log: bool,
    /// Own process group, so a Ctrl-C at the terminal reaches only the
    /// parent, which then stops its children in order.
    pub own_process_group: bool,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        Self {
            death_signal: libc::SIGKILL,
            truncate_log: false,
            own_process_group: false,
        }
    }
}

fn spawn_tied_to_parent(mut command: Command, death_signal: libc::c_int) -> std::io::Result<Child> {
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent process exited"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()?
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
    /// needed); the child gets SIGKILL if this process dies.
    pub fn spawn(name: &str, command: Command, log_path: &Path) -> Result<Self> {
        Self::spawn_with(name, command, log_path, SpawnOptions::default())
    }

    /// Spawns `command` as `options` say.
    pub fn spawn_with(
        name: &str,
        mut command: Command,
        log_path: &Path,
        options: SpawnOptions,
    ) -> Result<Self> {
        let log = File::options()
            .create(true)
            .write(true)
            .append(!options.truncate_log)
            .truncate(options.truncate_log)
            .open(log_path)
            .with_context(|| format!("{name}: cannot open its log {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("{name}: cannot open its log {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        if options.own_process_group {
            command.process_group(0);
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let child = spawn_tied_to_parent(command, options.death_signal)
            .with_context(|| format!("could not start {name} (`{program}`)"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log_path: log_path.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id while the child has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the process ended, once it has (`None` while it runs or after
    /// [`kill`](Self::kill)).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
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
        if let Some(status) = self.exit_status() {
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

    /// Stops the process gracefully: SIGTERM, then SIGKILL if it has not
    /// exited after `grace`. Returns false when it had to be killed.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            self.child = None;
            return true;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the pid of our own child, which has not been
            // reaped yet (try_wait above returned None), so the pid is still ours.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
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

    /// True once the log contains `needle` (e.g. `listening on`).
    pub fn log_contains(&self, needle: &str) -> bool {
        read_lossy(&self.log_path).contains(needle)
    }

    /// Waits until the log contains `needle`, panicking after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_contains(needle) {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_output_and_stops_with_sigterm() {
        let dir = std::env::temp_dir().join(format!("keygate-ts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sh.log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 30"]);
        let mut process = ManagedProcess::spawn("sh", command, &log).unwrap();
        process.wait_for_log("started", Duration::from_secs(10));
        assert!(process.is_running());
        assert!(
            process.stop(Duration::from_secs(5)),
            "sleep ignores no SIGTERM"
        );
        assert!(!process.is_running());
        assert!(log_tail(&log, 5).contains("started"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_program_is_named_in_the_error() {
        let log =
            std::env::temp_dir().join(format!("keygate-ts-missing-{}.log", std::process::id()));
        let error =
            ManagedProcess::spawn("ghost", Command::new("/nonexistent/ghost"), &log).unwrap_err();
        assert!(
            format!("{error:#}").contains("could not start ghost"),
            "{error:#}"
        );
        let _ = std::fs::remove_file(&log);
    }
}
