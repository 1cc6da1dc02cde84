//! `cargo xtask`: keygate's project automation.
//!
//! - `cargo xtask test`: everything the project can test, from a fresh clone.
//! - `cargo xtask demo`: the whole path (control plane, MCP servers, Envoy
//!   with the filter) on loopback, with a demo user and key.
//! - `cargo xtask bench [--quick]`: benchmarks against Envoy's own options (see docs/benchmarks.md).
//! - `cargo xtask screenshots`: the README's console pictures, taken by the browser test.
//! - `cargo xtask soak [--minutes N] [--postgres]`: load, churn and faults judged by an oracle (see docs/reliability.md).
//! - `cargo xtask fuzz [--seconds N] [TARGET]`: the cargo-fuzz targets (see docs/reliability.md).

mod api;
mod artifacts;
mod bench;
mod browser;
mod chromium;
mod demo;
mod fuzz;
mod postgres;
mod procs;
mod screenshots;
mod soak;
mod step;
mod test;
mod toolchain;
mod venv;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// keygate project automation.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "keygate project automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lint, build and run every test (unit, PostgreSQL, Envoy end to end).
    Test(test::TestArgs),
    /// Start the control plane, two MCP servers and Envoy with the filter,
    /// create a demo user and key, and print how to connect.
    Demo(demo::DemoArgs),
    /// Benchmarks: keygate against no filter, a no-op Wasm filter, api_key_auth and ext_authz.
    Bench(bench::BenchArgs),
    /// The README's console screenshots (docs/console-*.png), taken by the browser test.
    Screenshots,
    /// Fuzz every parser that meets untrusted bytes (cargo-fuzz, nightly).
    Fuzz(fuzz::FuzzArgs),
    /// Load, churn and faults through the real stack, judged by an oracle.
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Screenshots => screenshots::run(),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Soak(args) => soak::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!();
            // `{:#}` prints the whole chain: what was being done, then why it failed.
            eprintln!("xtask failed: {failure:#}");
            ExitCode::FAILURE
        }
    }
}
