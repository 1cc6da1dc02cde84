//! Child services of the demo (control plane, MCP servers, Envoy): started
//! with their output in log files (by `keygate-test-support`'s process
//! helper, which ties them to xtask's life), waited on until ready, watched
//! while running, and always stopped (SIGTERM, then SIGKILL) when xtask ends.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail};
use keygate_test_support::process::{ManagedProcess, SpawnOptions};

const POLL: Duration = Duration::from_millis(100);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of a service's log shown when it fails.
const LOG_LINES: usize = 20;

/// The running services, stopped in reverse start order on drop.
#[derive(Default)]
pub struct Services {
    running: Vec<ManagedProcess>,
}

impl Services {
    /// Starts `command` with stdout and stderr written to `log_path`.
    pub fn spawn(&mut self, name: &str, command: Command, log_path: &Path) -> Result<()> {
        let options = SpawnOptions {
            // A service killed with its parent still shuts down cleanly.
            death_signal: libc::SIGTERM,
            truncate_log: true,
            // A Ctrl-C at the terminal reaches xtask only, which then stops
            // the services in order.
            own_process_group: true,
        };
        let service = ManagedProcess::spawn_with(name, command, log_path, options)?;
        println!(
            "    started {name} (pid {}), log: {}",
            service.pid().unwrap_or_default(),
            log_path.display()
        );
        self.running.push(service);
        Ok(())
    }

    /// Waits until `ready()` holds for the service `name`, failing if the
    /// service exits first, `interrupted()` turns true, or time runs out.
    pub fn wait_ready(
        &mut self,
        name: &str,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
        mut ready: impl FnMut(&ManagedProcess) -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if interrupted() {
                bail!("interrupted (Ctrl-C)");
            }
            let service = self
                .running
                .iter_mut()
                .find(|service| service.name() == name)
                .ok_or_else(|| anyhow!("{name} was never started"))?;
            if let Some(status) = service.exit_status() {
                bail!(
                    "{name} exited during startup ({status}).\n{}",
                    service.log_tail(LOG_LINES)
                );
            }
            if ready(service) {
                println!(
                    "    {name} is ready ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "{name} was not ready after {}s.\n{}",
                    timeout.as_secs(),
                    service.log_tail(LOG_LINES)
                );
            }
            sleep(POLL);
        }
    }

    /// The first service found to have exited, with its status and log tail.
    pub fn exited(&mut self) -> Option<String> {
        self.running.iter_mut().find_map(|service| {
            let status = service.exit_status()?;
            Some(format!(
                "{} exited unexpectedly ({status}).\n{}",
                service.name(),
                service.log_tail(LOG_LINES)
            ))
        })
    }

    /// Stops every service, newest first: SIGTERM, then SIGKILL after a grace period.
    pub fn stop_all(&mut self) {
        while let Some(mut service) = self.running.pop() {
            if service.exit_status().is_some() {
                continue;
            }
            println!("    stopping {}", service.name());
            if !service.stop(STOP_GRACE) {
                println!("    {} ignored SIGTERM; killed it", service.name());
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// True when something accepts TCP connections at `addr`.
pub fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}
