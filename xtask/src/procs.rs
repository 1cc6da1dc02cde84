//! Child services of the demo (control plane, MCP servers, Envoy): started
//! with their output in log files, waited on until ready, watched while
//! running, and always stopped (SIGTERM, then SIGKILL) when xtask ends.

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::failure::{Context, Failure, Result};

const POLL: Duration = Duration::from_millis(100);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One running child service.
struct Service {
    name: String,
    child: Child,
    log_path: PathBuf,
}

/// The running services, stopped in reverse start order on drop.
#[derive(Default)]
pub struct Services {
    running: Vec<Service>,
}

impl Services {
    /// Starts `command` with stdout and stderr appended to `log_path`.
    pub fn spawn(&mut self, name: &str, mut command: Command, log_path: &Path) -> Result<()> {
        let log = File::create(log_path).context(|| format!("creating {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context(|| format!("opening {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a Ctrl-C at the terminal reaches xtask
            // only, which then stops the services in order.
            .process_group(0);
        set_parent_death_signal(&mut command);
        let child = command.spawn().context(|| {
            format!(
                "could not start {name} (`{}`)",
                command.get_program().to_string_lossy()
            )
        })?;
        println!(
            "    started {name} (pid {}), log: {}",
            child.id(),
            log_path.display()
        );
        self.running.push(Service {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
        });
        Ok(())
    }

    /// Waits until `ready()` holds for the service `name`, failing if the
    /// service exits first, `interrupted()` turns true, or time runs out.
    pub fn wait_ready(
        &mut self,
        name: &str,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if interrupted() {
                return Err(Failure::new("interrupted (Ctrl-C)"));
            }
            let service = self
                .running
                .iter_mut()
                .find(|service| service.name == name)
                .ok_or_else(|| Failure::new(format!("{name} was never started")))?;
            if let Ok(Some(status)) = service.child.try_wait() {
                return Err(Failure::new(format!(
                    "{name} exited during startup ({status}).\n{}",
                    log_tail(&service.log_path)
                )));
            }
            if ready() {
                println!(
                    "    {name} is ready ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Failure::new(format!(
                    "{name} was not ready after {}s.\n{}",
                    timeout.as_secs(),
                    log_tail(&service.log_path)
                )));
            }
            sleep(POLL);
        }
    }

    /// The first service found to have exited, with its status and log tail.
    pub fn exited(&mut self) -> Option<String> {
        self.running.iter_mut().find_map(|service| {
            let status: ExitStatus = service.child.try_wait().ok().flatten()?;
            Some(format!(
                "{} exited unexpectedly ({status}).\n{}",
                service.name,
                log_tail(&service.log_path)
            ))
        })
    }

    /// Stops every service, newest first: SIGTERM, then SIGKILL after a grace period.
    pub fn stop_all(&mut self) {
        while let Some(mut service) = self.running.pop() {
            stop(&mut service);
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn stop(service: &mut Service) {
    if let Ok(Some(_)) = service.child.try_wait() {
        return;
    }
    println!("    stopping {}", service.name);
    if let Ok(pid) = i32::try_from(service.child.id()) {
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // reaped yet (try_wait above returned None), so the pid is still ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = service.child.try_wait() {
            return;
        }
        sleep(POLL);
    }
    println!("    {} ignored SIGTERM; killing it", service.name);
    let _ = service.child.kill();
    let _ = service.child.wait();
}

/// On Linux, ask the kernel to SIGTERM the child if xtask itself dies
/// (even by SIGKILL), so no service outlives the demo.
#[cfg(target_os = "linux")]
fn set_parent_death_signal(command: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent; it is the only call made between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_command: &mut Command) {}

/// The last lines of a log file, for failure messages.
pub fn log_tail(path: &Path) -> String {
    const LINES: usize = 20;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

/// True once the log file contains `needle` (e.g. `listening on`).
pub fn log_contains(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle))
}

/// True when something accepts TCP connections at `addr`.
pub fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}
