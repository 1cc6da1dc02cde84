//! Facts about the machine and the versions under test, for the report.

use std::path::Path;

pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub envoy_version: String,
    pub rustc_version: String,
    pub wrk_version: String,
}

fn first_line_of(cmd: &Path, args: &[&str]) -> String {
    match std::process::Command::new(cmd).args(args).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("unknown")
                .to_owned()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

pub fn collect(envoy: Option<&Path>, wrk: Option<&Path>) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let envoy_version = envoy
        .map(|e| first_line_of(e, &["--version"]))
        .map(|l| {
            l.trim_start_matches(|c: char| c != ':')
                .trim_start_matches(':')
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "not used".to_owned());
    let rustc_version = first_line_of(Path::new("rustc"), &["--version"]);
    let wrk_version = wrk
        .map(|w| first_line_of(w, &["-v"]))
        .unwrap_or_else(|| "not used".to_owned());
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory,
        kernel,
        envoy_version,
        rustc_version,
        wrk_version,
    }
}
