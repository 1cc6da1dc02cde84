//! What a process costs, from the kernel's own accounting in `/proc`.
//!
//! CPU time comes from `utime + stime` in `/proc/<pid>/stat` (whole process,
//! including threads that already exited), so it counts only the work Envoy
//! did, however busy the rest of the machine is. For short windows, where the
//! 10 ms tick of `stat` is too coarse, [`cpu_ns_precise`] sums the nanosecond
//! run times of the live threads from `/proc/<pid>/task/*/schedstat`.

use anyhow::{Context, Result};

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User + system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; fields after it start past the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected format of {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields
        .get(11)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("no utime in {path}"))?;
    let stime: u64 = fields
        .get(12)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("no stime in {path}"))?;
    Ok((utime + stime) as f64 / ticks_per_second())
}

/// Nanoseconds on CPU summed over the process's live threads.
pub fn cpu_ns_precise(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = entry?.path().join("schedstat");
        // A thread may exit between listing and reading: skip it.
        if let Ok(s) = std::fs::read_to_string(&path) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Resident set size in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        // Burn a little CPU so the counters move.
        let before = cpu_ns_precise(pid).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_ns_precise(pid).unwrap() > before);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(rss_bytes(pid).unwrap() > 1024 * 1024);
    }
}
