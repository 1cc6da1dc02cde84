//! `cargo xtask bench`: placeholder until issue 5 assigns the benchmarks.
//! It fails on purpose so nobody mistakes it for a passing run.

use clap::Args;

use crate::failure::{Failure, Result};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run the quick subset (under 3 minutes) for regressions.
    #[arg(long)]
    pub quick: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let mode = if args.quick { "bench --quick" } else { "bench" };
    Err(Failure::new(format!(
        "`cargo xtask {mode}` is not implemented yet (issue 5)"
    )))
}
