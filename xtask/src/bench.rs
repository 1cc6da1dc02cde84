//! `cargo xtask bench [--quick] [--only SECTIONS]`: builds what the benchmarks measure (release
//! binaries and both Wasm filters), makes sure Envoy and the load generator
//! are there, then runs the `keygate-bench` driver, which prints the table.
//! A full run rewrites the published `docs/benchmarks.md`; a quick run writes
//! its rough figures to `target/bench/benchmarks-quick.md` and leaves the
//! checkout alone.

use std::process::Command;

use clap::Args;

use crate::{
    step::step,
    toolchain::WASM_TARGET,
    venv,
    workspace::{Workspace, run_checked},
};
use anyhow::{Result, anyhow};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run the quick subset (under 3 minutes) for regressions; the report
    /// goes to target/bench/benchmarks-quick.md, not docs/.
    #[arg(long)]
    pub quick: bool,
    /// Run only these sections, comma-separated (edge, tables, revocation,
    /// control-plane, probe, fleet, instructions); the report then goes to
    /// target/bench/benchmarks-sections.md (…-quick.md with --quick), and
    /// docs/ is left alone. `--only fleet` measures the fleet alone.
    #[arg(long, value_name = "SECTIONS")]
    pub only: Option<String>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let workspace = Workspace::locate()?;
    let venv = venv::prepare(&workspace)?;
    // The fleet alone needs neither wrk nor Envoy.
    let fleet_only = args.only.as_deref() == Some("fleet");
    if !fleet_only {
        step("find the load generator (wrk)", ensure_wrk)?;
    }
    step(
        "build the keygate, no-op and cost-probe Wasm filters (release)",
        || {
            run_checked(
                workspace.cargo().args([
                    "build",
                    "--release",
                    "--target",
                    WASM_TARGET,
                    "-p",
                    "keygate-filter",
                    "-p",
                    "keygate-noop-filter",
                    "--lib",
                    "--example",
                    "cost-probe",
                ]),
                "building the Wasm filters",
            )
        },
    )?;
    step(
        "build the control plane and the bench driver (release)",
        || {
            run_checked(
                workspace.cargo().args([
                    "build",
                    "--release",
                    "-p",
                    "keygate-control-plane",
                    "-p",
                    "keygate-bench",
                ]),
                "building the control plane and the bench driver",
            )
        },
    )?;
    let wasm_dir = workspace.target_dir.join(WASM_TARGET).join("release");
    let release_dir = workspace.target_dir.join("release");
    let mut command = Command::new(release_dir.join("keygate-bench"));
    command
        .current_dir(&workspace.root)
        .env("KEYGATE_ENVOY_BIN", &venv.envoy)
        .env("KEYGATE_FILTER_WASM", wasm_dir.join("keygate_filter.wasm"))
        .env(
            "KEYGATE_NOOP_WASM",
            wasm_dir.join("keygate_noop_filter.wasm"),
        )
        .env(
            "KEYGATE_PROBE_WASM",
            wasm_dir.join("examples").join("cost_probe.wasm"),
        )
        .env(
            "KEYGATE_CONTROL_PLANE_BIN",
            release_dir.join("keygate-control-plane"),
        );
    if args.quick {
        command.arg("--quick");
    }
    if let Some(sections) = &args.only {
        command.args(["--sections", sections]);
    }
    let title = if args.quick {
        "run the benchmarks (quick subset)"
    } else {
        "run the benchmarks (full; this takes a while)"
    };
    step(title, || run_checked(&mut command, "the benchmark driver"))
}

/// wrk comes from Debian's packages; as root we install it, otherwise we say how.
fn ensure_wrk() -> Result<()> {
    if which("wrk") {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root && which("apt-get") {
        println!("    wrk is missing; installing it with apt-get");
        run_checked(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
        run_checked(
            Command::new("apt-get").args(["install", "-y", "-qq", "wrk"]),
            "apt-get install wrk",
        )?;
    }
    if which("wrk") {
        Ok(())
    } else {
        Err(anyhow!(
            "the benchmarks need the load generator `wrk`: install it (Debian/Ubuntu: `sudo apt-get install wrk`) and run again",
        ))
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
