//! `soak`: the soak of issue 14 (see `keygate_e2e::soak`), run by
//! `cargo xtask soak` and, for two minutes on SQLite, by `cargo xtask test`.
//! Prints the report (Markdown) and exits non-zero when a decision was
//! wrong after the window, a fault lost or broke something, or the run
//! could not run.
//!
//! Usage: soak [--minutes N] [--postgres] [--rate R] [--seed S] [--report FILE]

use std::process::ExitCode;
use std::time::Duration;

use keygate_e2e::soak::{SoakOptions, run};

fn usage() -> ExitCode {
    eprintln!("usage: soak [--minutes N] [--postgres] [--rate R] [--seed S] [--report FILE]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut options = SoakOptions {
        duration: Duration::from_secs(120),
        postgres: false,
        rate: 60,
        load_workers: 6,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
    };
    let mut report_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--postgres" => options.postgres = true,
            "--minutes" | "--rate" | "--seed" | "--report" => {
                let Some(value) = args.next() else {
                    return usage();
                };
                match arg.as_str() {
                    "--minutes" => match value.parse::<f64>() {
                        Ok(m) if m > 0.0 => options.duration = Duration::from_secs_f64(m * 60.0),
                        _ => return usage(),
                    },
                    "--rate" => match value.parse() {
                        Ok(r) => options.rate = r,
                        Err(_) => return usage(),
                    },
                    "--seed" => match value.parse() {
                        Ok(s) => options.seed = s,
                        Err(_) => return usage(),
                    },
                    _ => report_path = Some(value),
                }
            }
            _ => return usage(),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "soak: {:.1} min on {}, {} req/s, seed {}",
        options.duration.as_secs_f64() / 60.0,
        if options.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        options.rate,
        options.seed
    );
    match runtime.block_on(run(&options)) {
        Ok(report) => {
            let text = report.markdown();
            println!("{text}");
            if let Some(path) = report_path
                && let Err(e) = std::fs::write(&path, &text)
            {
                eprintln!("soak: cannot write {path}: {e}");
                return ExitCode::FAILURE;
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: could not run: {e:#}");
            ExitCode::FAILURE
        }
    }
}
