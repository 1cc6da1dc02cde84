//! The soak's report: the tables docs/reliability.md quotes, and the verdict
//! (no wrong decision after the window, no fault that lost or broke
//! anything, and a run that actually ran).

use std::fmt::Write as _;
use std::path::PathBuf;

use super::SoakOptions;
use super::faults::FaultRecord;
use super::oracle::Counts;

#[derive(Debug, Clone)]
pub struct Report {
    pub options: SoakOptions,
    /// Seconds the load ran.
    pub seconds: f64,
    pub counts: Counts,
    pub faults: Vec<FaultRecord>,
    pub proxy_cut: u64,
    pub proxy_cut_in_snapshot: u64,
    pub proxy_delayed: u64,
    /// RSS in kB: Envoy, then each control plane.
    pub memory_start: (Option<u64>, Vec<Option<u64>>),
    pub memory_end: (Option<u64>, Vec<Option<u64>>),
    pub keys_at_end: usize,
    pub dir: PathBuf,
}

fn mb(kb: Option<u64>) -> String {
    kb.map(|kb| format!("{:.1} MB", kb as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

impl Report {
    /// Why the run fails, if it does.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.counts.wrong > 0 {
            failures.push(format!(
                "{} wrong decisions after the window",
                self.counts.wrong
            ));
        }
        if self.counts.requests < 100 {
            failures.push(format!(
                "only {} requests were judged",
                self.counts.requests
            ));
        }
        for fault in &self.faults {
            for problem in &fault.problems {
                failures.push(format!("{}: {problem}", fault.name));
            }
        }
        if self.faults.is_empty() {
            failures.push("no fault ran".into());
        }
        failures
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// Markdown tables.
    pub fn markdown(&self) -> String {
        let c = &self.counts;
        let backend = if self.options.postgres {
            "PostgreSQL (own server, 2 control-plane replicas)"
        } else {
            "SQLite (1 control plane)"
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Soak on {backend}: {:.1} min of load at {} req/s target, seed {}.\n",
            self.seconds / 60.0,
            self.options.rate,
            self.options.seed
        );
        let _ = writeln!(out, "| measure | value |\n| --- | --- |");
        let _ = writeln!(out, "| requests judged | {} |", c.requests);
        let _ = writeln!(out, "| agreed with the oracle | {} |", c.agreed);
        let _ = writeln!(
            out,
            "| judged strictly (no change, fault or expiry near) | {} |",
            c.strict
        );
        let _ = writeln!(
            out,
            "| **wrong decisions after the window** ({} ms) | **{}** |",
            super::TIMING.table_cache_millis + 1000,
            c.wrong
        );
        let _ = writeln!(
            out,
            "| disagreements within 50 ms / 250 ms / {} ms of a change | {} / {} / {} |",
            super::TIMING.table_cache_millis + 1000,
            c.within_50ms,
            c.within_250ms,
            c.within_window
        );
        let _ = writeln!(
            out,
            "| disagreements while a fault held the feed back (until {} s after it) | {} |",
            super::oracle::CATCH_UP,
            c.excused_by_fault
        );
        let _ = writeln!(
            out,
            "| disagreements within 1 s of an `expiresAt` | {} |",
            c.excused_by_expiry
        );
        let _ = writeln!(
            out,
            "| 5xx answers (503 required by staleness / allowed by it) | {} ({} / {}) |",
            c.server_errors, c.stale_required, c.stale_allowed
        );
        let statuses: Vec<String> = c
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(out, "| answers by status | {} |", statuses.join(", "));
        let kinds: Vec<String> = c.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "| requests by kind | {} |", kinds.join(", "));
        let (envoy_start, planes_start) = &self.memory_start;
        let (envoy_end, planes_end) = &self.memory_end;
        let _ = writeln!(
            out,
            "| Envoy RSS start → end | {} → {} |",
            mb(*envoy_start),
            mb(*envoy_end)
        );
        for (i, (a, b)) in planes_start.iter().zip(planes_end).enumerate() {
            let _ = writeln!(
                out,
                "| control plane {} RSS start → end (restarts reset it) | {} → {} |",
                i + 1,
                mb(*a),
                mb(*b)
            );
        }
        let _ = writeln!(out, "| live keys at the end | {} |", self.keys_at_end);
        let _ = writeln!(
            out,
            "| feed proxy: answers cut (in a snapshot page) / chunks delayed | {} ({}) / {} |",
            self.proxy_cut, self.proxy_cut_in_snapshot, self.proxy_delayed
        );
        let _ = writeln!(
            out,
            "| changes whose answer was lost (resynced) | {} ({} resyncs) |",
            c.change_errors, c.resyncs
        );
        let _ = writeln!(
            out,
            "\n| change | done | refused by the API |\n| --- | --- | --- |"
        );
        let mut total = (0, 0);
        for (kind, (done, refused)) in &c.changes {
            let _ = writeln!(out, "| {kind} | {done} | {refused} |");
            total.0 += done;
            total.1 += refused;
        }
        let _ = writeln!(out, "| all | {} | {} |", total.0, total.1);
        let _ = writeln!(
            out,
            "\n| fault | at (s) | took (s) | edge caught up (s) | found |\n| --- | --- | --- | --- | --- |"
        );
        for f in &self.faults {
            let found = if f.problems.is_empty() {
                format!("ok; {}", f.details)
            } else {
                format!("**{}**; {}", f.problems.join("; "), f.details)
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.1} | {} | {} |",
                f.name,
                f.at,
                f.seconds,
                f.catch_up
                    .map(|s| format!("{s:.1}"))
                    .unwrap_or_else(|| "no".into()),
                found.trim_end_matches("; ")
            );
        }
        if !c.wrong_examples.is_empty() {
            let _ = writeln!(
                out,
                "\nWrong decisions (first {}):\n",
                c.wrong_examples.len()
            );
            for e in &c.wrong_examples {
                let _ = writeln!(out, "- {e}");
            }
        }
        if !c.refusal_examples.is_empty() {
            let _ = writeln!(
                out,
                "\nRefused changes (first {}):\n",
                c.refusal_examples.len()
            );
            for e in &c.refusal_examples {
                let _ = writeln!(out, "- {e}");
            }
        }
        let failures = self.failures();
        if failures.is_empty() {
            let _ = writeln!(out, "\nVerdict: passed.");
        } else {
            let _ = writeln!(
                out,
                "\nVerdict: FAILED ({}); logs kept in {}",
                failures.join("; "),
                self.dir.display()
            );
        }
        out
    }
}
