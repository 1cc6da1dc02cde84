//! `cargo xtask fuzz [--seconds N] [--minimize] [TARGET]`: runs the
//! cargo-fuzz targets in `fuzz/` (libFuzzer, nightly toolchain) one after
//! another, each for `--seconds`, growing the committed corpora in
//! `fuzz/corpus/<target>/`, and prints one table row per target: time,
//! executions, crashes, corpus size (the table in docs/reliability.md).
//!
//! cargo-fuzz is installed at [`CARGO_FUZZ_VERSION`] when missing. The
//! targets are built without a sanitizer: they are safe Rust, so what the
//! fuzzer looks for is a panic (a failed assertion, an overflow: debug
//! assertions stay on), a timeout or running out of memory, and without
//! AddressSanitizer it tries several times more inputs in the same time.
//! Run it at low priority on a shared machine: `nice -n 19 cargo xtask fuzz`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::workspace::{Workspace, run_checked};

/// The cargo-fuzz release the project uses (`cargo install --locked`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Targets that run the control plane in process, built with the fuzz
/// crate's `control-plane` feature (its `required-features`).
const CONTROL_PLANE_TARGETS: &[&str] = &["api_json"];

/// libFuzzer's per-input time and memory limits: a slower input is a hang,
/// a bigger one a leak, and both are findings.
const INPUT_TIMEOUT_SECONDS: u64 = 10;
const RSS_LIMIT_MB: u64 = 2048;

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Afterwards, shrink each corpus to the inputs that add coverage
    /// (`cargo fuzz cmin`), so the committed corpora stay small.
    #[arg(long)]
    pub minimize: bool,
    /// One target (a file name in `fuzz/fuzz_targets/`); all when omitted.
    pub target: Option<String>,
}

/// What one target's run did.
#[derive(Debug)]
struct Outcome {
    target: String,
    seconds: f64,
    executions: u64,
    crashes: usize,
    corpus_files: usize,
    corpus_bytes: u64,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let workspace = Workspace::locate()?;
    let fuzz_dir = workspace.root.join("fuzz");
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t:?}; there are: {}", all.join(", ")),
        None => all,
    };
    let logs = fuzz_dir.join("target/logs");
    fs::create_dir_all(&logs).context("creating fuzz/target/logs")?;
    let mut outcomes = Vec::new();
    for target in &chosen {
        let outcome = fuzz_one(&workspace.root, &fuzz_dir, &logs, target, args.seconds)?;
        if args.minimize {
            minimize(&workspace.root, target)?;
        }
        let (corpus_files, corpus_bytes) = corpus_size(&fuzz_dir.join("corpus").join(target))?;
        let outcome = Outcome {
            corpus_files,
            corpus_bytes,
            ..outcome
        };
        println!("{}", row(&outcome));
        outcomes.push(outcome);
    }
    println!();
    println!("| target | time | executions | crashes | corpus |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for o in &outcomes {
        println!("{}", row(o));
    }
    let total_seconds: f64 = outcomes.iter().map(|o| o.seconds).sum();
    let total_runs: u64 = outcomes.iter().map(|o| o.executions).sum();
    let crashes: usize = outcomes.iter().map(|o| o.crashes).sum();
    println!(
        "| total | {:.0} min | {total_runs} | {crashes} | |",
        total_seconds / 60.0
    );
    if crashes > 0 {
        bail!("{crashes} crashing inputs: see fuzz/artifacts/ and the logs in fuzz/target/logs/");
    }
    Ok(())
}

fn row(o: &Outcome) -> String {
    format!(
        "| `{}` | {:.0} s | {} | {} | {} files, {} KiB |",
        o.target,
        o.seconds,
        o.executions,
        o.crashes,
        o.corpus_files,
        o.corpus_bytes.div_ceil(1024)
    )
}

/// `cargo +nightly …` through rustup's proxy, without the variables the
/// stable `cargo xtask` run set that would pin another toolchain.
fn nightly_cargo(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .current_dir(root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO")
        .env_remove("CARGO_TARGET_DIR");
    command
}

fn ensure_nightly() -> Result<()> {
    let status = Command::new("rustc")
        .args(["+nightly", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdout(Stdio::null())
        .status()
        .context("running rustup's rustc proxy")?;
    if !status.success() {
        bail!("cargo xtask fuzz needs the nightly toolchain (rustup toolchain install nightly)");
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if installed
        .as_deref()
        .is_some_and(|v| v.contains(CARGO_FUZZ_VERSION))
    {
        return Ok(());
    }
    println!("==> installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run_checked(
        Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--version",
            &format!("={CARGO_FUZZ_VERSION}"),
            "--locked",
        ]),
        "installing cargo-fuzz",
    )
}

/// The targets: one file each in `fuzz/fuzz_targets/`.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(fuzz_dir.join("fuzz_targets"))
        .context("reading fuzz/fuzz_targets")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Cargo arguments for `target`: the control-plane targets get their
/// feature and a target directory of their own, so their much larger build
/// neither holds the build lock the other targets wait on nor rebuilds the
/// shared crates with other features.
fn features(target: &str) -> Vec<&'static str> {
    if CONTROL_PLANE_TARGETS.contains(&target) {
        vec![
            "--features",
            "control-plane",
            "--target-dir",
            "fuzz/target/control-plane",
        ]
    } else {
        Vec::new()
    }
}

fn fuzz_one(
    root: &Path,
    fuzz_dir: &Path,
    logs: &Path,
    target: &str,
    seconds: u64,
) -> Result<Outcome> {
    println!("==> fuzzing {target} for {seconds} s");
    let build = nightly_cargo(root)
        .args(["fuzz", "build", "--sanitizer", "none", target])
        .args(features(target))
        .status()
        .context("running cargo fuzz build")?;
    if !build.success() {
        bail!("building fuzz target {target} failed ({build})");
    }
    let log_path = logs.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let crashes_before = count_files(&artifacts);
    let started = Instant::now();
    let status = nightly_cargo(root)
        .args(["fuzz", "run", "--sanitizer", "none", target])
        .args(features(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running cargo fuzz run")?;
    let elapsed = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let executions = final_stat(&text, "stat::number_of_executed_units:")
        .or_else(|| done_runs(&text))
        .unwrap_or(0);
    let crashes = count_files(&artifacts).saturating_sub(crashes_before);
    if !status.success() && crashes == 0 {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzzing {target} failed ({status}) without a crash file:\n{}",
            tail.join("\n")
        );
    }
    Ok(Outcome {
        target: target.to_owned(),
        seconds: elapsed,
        executions,
        crashes,
        corpus_files: 0,
        corpus_bytes: 0,
    })
}

fn minimize(root: &Path, target: &str) -> Result<()> {
    println!("==> minimizing the corpus of {target}");
    run_checked(
        nightly_cargo(root)
            .args(["fuzz", "cmin", "--sanitizer", "none", target])
            .args(features(target))
            .arg("--")
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            // Greedy set cover over branches (not hit counts): a few
            // hundred files per target for the same branch coverage, where
            // a plain merge keeps thousands.
            .arg("-set_cover_merge=1")
            .arg("-use_counters=0")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "cargo fuzz cmin",
    )
}

/// `stat::number_of_executed_units: N` from `-print_final_stats`.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// `Done N runs in S second(s)`, libFuzzer's last line.
fn done_runs(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Done "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).count())
        .unwrap_or(0)
}

fn corpus_size(dir: &PathBuf) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_counts() {
        let log = "#1024 pulse cov: 10\nDone 123456 runs in 60 second(s)\nstat::number_of_executed_units: 123457\nstat::peak_rss_mb: 40\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units:"),
            Some(123457)
        );
        assert_eq!(done_runs(log), Some(123456));
        assert_eq!(done_runs("nothing"), None);
    }
}
