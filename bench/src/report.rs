//! The results as tables: printed to the terminal and written as
//! `docs/benchmarks.md` with the machine, the versions and the command.
//!
//! Anything in the existing document after [`KEEP_MARKER`] (the written
//! analysis of a run) is carried over when the document is rewritten.

use crate::machine::Machine;
use crate::scenario::control_plane::ControlPlaneResult;
use crate::scenario::edge::{BreakdownRow, EdgeResult};
use crate::scenario::fleet::{FleetResult, kib_per};
use crate::scenario::instructions::{Case, InstructionRow};
use crate::scenario::median;
use crate::scenario::probe::{MicroRow, ProbeRow};
use crate::scenario::revocation::LatencyStats;
use crate::scenario::tables::TableRow;
use crate::settings::{Config, Plan};
use std::fmt::Write as _;

pub const KEEP_MARKER: &str =
    "<!-- Everything below this line is kept when the bench rewrites this file. -->";

pub struct Report {
    pub edge: Vec<EdgeResult>,
    pub breakdown: Vec<BreakdownRow>,
    pub probe: Vec<ProbeRow>,
    pub micro: Vec<MicroRow>,
    pub instructions: Vec<InstructionRow>,
    pub tables: Vec<TableRow>,
    pub key_revocation: Option<LatencyStats>,
    pub key_revocation_burst: Option<LatencyStats>,
    pub rule_revocation: Option<LatencyStats>,
    pub rule_grant: Option<LatencyStats>,
    pub control_plane: Option<ControlPlaneResult>,
    pub snapshot_1m: Option<(usize, f64)>,
    pub fleet: Option<FleetResult>,
    pub duration_s: f64,
    /// Sections that failed, with why: the run goes on without them.
    pub failures: Vec<String>,
    /// The nice value the bench ran at, when it could raise its priority.
    pub nice: Option<i32>,
    pub started_utc: String,
}

fn f(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "–".to_owned()
    } else {
        format!("{v:.decimals$}")
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| f(x, decimals))
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        header.iter().map(|_| " --- ").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out.push('\n');
}

impl Report {
    fn cpu_of(&self, c: Config) -> Option<f64> {
        self.edge
            .iter()
            .find(|r| r.config == c)
            .map(|r| median(&r.cpu_us))
    }

    /// The results tables (Markdown; also what the terminal shows).
    pub fn tables_markdown(&self, plan: &Plan) -> String {
        let mut out = String::new();
        if !self.edge.is_empty() {
            let _ = writeln!(
                out,
                "### Edge: one Envoy worker, {} keys in the table, medians of {} interleaved round(s)\n",
                plan.edge_keys, plan.repeats
            );
            let base =
                [Config::Floor, Config::NoopWasm, Config::ApiKeyAuth].map(|c| self.cpu_of(c));
            let rows: Vec<Vec<String>> = self
                .edge
                .iter()
                .map(|r| {
                    let cpu = median(&r.cpu_us);
                    let lo = r.cpu_us.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = r.cpu_us.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let spread = if r.cpu_us.len() > 1 {
                        format!(" ({}–{})", f(lo, 1), f(hi, 1))
                    } else {
                        String::new()
                    };
                    let ratio =
                        |b: Option<f64>| b.map_or("–".to_owned(), |b| format!("{:.2}×", cpu / b));
                    vec![
                        r.config.label().to_owned(),
                        format!("{}{spread}", f(cpu, 1)),
                        ratio(base[0]),
                        ratio(base[1]),
                        ratio(base[2]),
                        f(median(&r.rps), 0),
                        f(median(&r.p50_us), 0),
                        f(median(&r.p99_us), 0),
                        f(median(&r.cpu_us_at_rate), 1),
                        f(mib(r.rss_bytes), 1),
                    ]
                })
                .collect();
            let at = format!("@ {}/s", plan.rate_rps);
            table(
                &mut out,
                &[
                    "configuration",
                    "Envoy CPU µs/req (min–max)",
                    "× (1)",
                    "× (2)",
                    "× (3)",
                    &format!("req/s (wrk, {} conns)", plan.wrk_connections),
                    &format!("p50 µs {at}"),
                    &format!("p99 µs {at}"),
                    &format!("CPU µs/req {at}"),
                    "Envoy RSS MiB",
                ],
                &rows,
            );
        }
        if !self.breakdown.is_empty() {
            out.push_str(
                "### Where keygate's time goes (Envoy CPU µs/request, same Envoys, medians)\n\n",
            );
            let rows: Vec<Vec<String>> = self
                .breakdown
                .iter()
                .map(|b| vec![b.what.clone(), f(b.cpu_us, 1)])
                .collect();
            table(&mut out, &["request", "Envoy CPU µs/req"], &rows);
            if let [a, b, c, d] = &self.breakdown[..] {
                let _ = writeln!(
                    out,
                    "keygate's fixed cost over the no-op filter (a request it only looks at): {:+.1} µs; the key check itself (parse, SHA-256, shared-data lookup, decode, header rewrite) on top: {:+.1} µs; total over no-op on the MCP path: {:+.1} µs.\n",
                    b.cpu_us - a.cpu_us,
                    (d.cpu_us - b.cpu_us) - (c.cpu_us - a.cpu_us),
                    d.cpu_us - c.cpu_us
                );
            }
        }
        if !self.instructions.is_empty() {
            out.push_str(&self.instructions_markdown());
        }
        if !self.probe.is_empty() {
            out.push_str("### Price of single steps (cost-probe filter, one step per Envoy, Envoy CPU µs/request, medians)\n\n");
            let base = self.probe.first().map_or(f64::NAN, |r| r.cpu_us);
            let rows: Vec<Vec<String>> = self
                .probe
                .iter()
                .map(|r| {
                    vec![
                        r.what.clone(),
                        f(r.cpu_us, 1),
                        format!("{:+.1}", r.cpu_us - base),
                    ]
                })
                .collect();
            table(
                &mut out,
                &["step per request", "Envoy CPU µs/req", "over no-op"],
                &rows,
            );
        }
        if !self.micro.is_empty() {
            out.push_str("### Price of single steps inside V8 (cost-probe filter, timed in a loop inside the sandbox, fastest of 15 trials × 2000)\n\n");
            let rows: Vec<Vec<String>> = self
                .micro
                .iter()
                .map(|r| vec![r.what.clone(), f(r.ns / 1000.0, 2)])
                .collect();
            table(&mut out, &["operation", "µs each"], &rows);
        }
        if !self.tables.is_empty() {
            out.push_str("### Table size: keygate (synced from the control plane) and native api_key_auth (keys inline)\n\n");
            let base_kg = self.tables.first().and_then(|r| r.keygate_rss);
            let base_nat = self.tables.first().and_then(|r| r.native_rss);
            let added = |v: Option<u64>, b: Option<u64>| match (v, b) {
                (Some(v), Some(b)) => f(mib(v) - mib(b), 1),
                _ => "–".to_owned(),
            };
            let rows: Vec<Vec<String>> = self
                .tables
                .iter()
                .map(|r| {
                    vec![
                        r.keys.to_string(),
                        format!(
                            "{:.1} MB / {} ms",
                            r.snapshot_bytes as f64 / 1e6,
                            f(r.snapshot_ms, 0)
                        ),
                        r.keygate_note
                            .clone()
                            .unwrap_or_else(|| opt(r.keygate_sync_s, 2)),
                        added(r.keygate_rss, base_kg),
                        opt(r.keygate_cpu_us, 1),
                        opt(r.change_ms, 0),
                        opt(r.change_cpu_ms, 2),
                        r.native_note
                            .clone()
                            .unwrap_or_else(|| opt(r.native_ready_s, 2)),
                        added(r.native_rss, base_nat),
                        opt(r.native_cpu_us, 1),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    "keys",
                    "full snapshot (size / time)",
                    "keygate: first sync s",
                    "keygate: RSS added MiB",
                    "keygate: CPU µs/req",
                    "keygate: one change lands ms",
                    "keygate: Envoy CPU per change ms",
                    "api_key_auth: ready s",
                    "api_key_auth: RSS added MiB",
                    "api_key_auth: CPU µs/req",
                ],
                &rows,
            );
            out.push_str("RSS added is against the first row (the fixture: one key). First sync is from Envoy's start to the filter's `keygate_table_version` gauge reaching the control plane's version; api_key_auth's ready time is Envoy's start to `/ready`.\n\n");
        }
        if self.key_revocation.is_some() || self.rule_revocation.is_some() {
            out.push_str("### Revocation at the edge (keygate)\n\n");
            let mut rows = Vec::new();
            let mut add = |what: &str, s: &Option<LatencyStats>| {
                if let Some(s) = s {
                    rows.push(vec![
                        what.to_owned(),
                        s.samples.to_string(),
                        f(s.p50_ms, 1),
                        f(s.p99_ms, 1),
                        f(s.max_ms, 1),
                    ]);
                }
            };
            add(
                "key DELETE returned → first 401 (spaced 0–1 s at random)",
                &self.key_revocation,
            );
            add(
                "key DELETE returned → first 401 (back to back)",
                &self.key_revocation_burst,
            );
            add(
                "access rule DELETE returned → first 401/403 (spaced)",
                &self.rule_revocation,
            );
            add(
                "access rule POST returned → first 200 (spaced)",
                &self.rule_grant,
            );
            table(
                &mut out,
                &["change", "samples", "p50 ms", "p99 ms", "max ms"],
                &rows,
            );
        }
        if let Some(c) = &self.control_plane {
            out.push_str("### Control plane (SQLite)\n\n");
            let mut rows = vec![
                vec![
                    format!(
                        "`GET /api/me` with a key: req/s (wrk, {} conns)",
                        plan.wrk_connections
                    ),
                    f(c.me_rps, 0),
                ],
                vec![
                    "`GET /api/me`: control-plane CPU µs/req".to_owned(),
                    f(c.me_cpu_us, 1),
                ],
                vec![
                    format!("`GET /api/me`: p50 / p99 µs @ {}/s", c.me_rate_rps),
                    format!("{} / {}", f(c.me_p50_us, 0), f(c.me_p99_us, 0)),
                ],
                vec![
                    format!(
                        "key creations/s (admin API, {} concurrent)",
                        c.creation_concurrency
                    ),
                    f(c.key_creations_per_s, 0),
                ],
            ];
            if let Some((bytes, ms)) = self.snapshot_1m {
                rows.push(vec![
                    "full snapshot at 1M keys: size / time".to_owned(),
                    format!("{:.1} MB / {} ms", bytes as f64 / 1e6, f(ms, 0)),
                ]);
            }
            table(&mut out, &["measure", "value"], &rows);
        }
        if let Some(fleet) = &self.fleet {
            out.push_str(&fleet_markdown(fleet));
        }
        out
    }

    /// Instructions per request by configuration, the MCP request and
    /// `/healthz` side by side, each against the no-op filter.
    fn instructions_markdown(&self) -> String {
        let mut out = String::from(
            "### Instructions per request (whole Envoy process under callgrind, user space; 2,000 requests on one connection, an idle window subtracted)\n\n",
        );
        let count = |config: Config, case: Case| {
            self.instructions
                .iter()
                .find(|r| r.config == config && r.case == case)
                .map(|r| r.per_request)
        };
        let mut configs: Vec<Config> = Vec::new();
        for r in &self.instructions {
            if !configs.contains(&r.config) {
                configs.push(r.config);
            }
        }
        let rows: Vec<Vec<String>> = configs
            .iter()
            .map(|&c| {
                let mut row = vec![c.label().to_owned()];
                for case in Case::ALL {
                    let v = count(c, case);
                    let noop = count(Config::NoopWasm, case);
                    row.push(opt(v, 0));
                    row.push(match (v, noop) {
                        (Some(v), Some(n)) => format!("{:.2}× ({:+.0})", v / n, v - n),
                        _ => "–".to_owned(),
                    });
                }
                row
            })
            .collect();
        let headers: Vec<String> = Case::ALL
            .iter()
            .flat_map(|c| [c.label().to_owned(), "× (2), over (2)".to_owned()])
            .collect();
        let mut header: Vec<&str> = vec!["configuration"];
        header.extend(headers.iter().map(String::as_str));
        table(&mut out, &header, &rows);
        out
    }

    /// Each benchmark target with its verdict.
    pub fn targets_markdown(&self, plan: &Plan) -> String {
        let mut out = String::new();
        let verdict = |ok: bool| if ok { "**met**" } else { "**missed**" };
        let kg = self.cpu_of(Config::Keygate);
        let note = if plan.edge_keys == 100_000 {
            String::new()
        } else {
            format!(" (measured at {} keys, not 100k)", plan.edge_keys)
        };
        if let (Some(k), Some(n)) = (kg, self.cpu_of(Config::NoopWasm)) {
            let _ = writeln!(
                out,
                "- keygate CPU/request ≤ 1.35× no-op Wasm{note}: {:.2}× → {}",
                k / n,
                verdict(k <= 1.35 * n)
            );
        }
        if let [a, b, ..] = &self.breakdown[..] {
            let _ = writeln!(
                out,
                "- a request keygate only looks at (`/healthz`) within +5 µs of the no-op filter: {:+.1} µs → {}",
                b.cpu_us - a.cpu_us,
                verdict(b.cpu_us - a.cpu_us <= 5.0)
            );
        }
        let counted = |config: Config| {
            self.instructions
                .iter()
                .find(|r| r.config == config && r.case == Case::McpWithKey)
                .map(|r| r.per_request)
        };
        if let (Some(k), Some(n)) = (counted(Config::Keygate), counted(Config::NoopWasm)) {
            let _ = writeln!(
                out,
                "- keygate instructions/request against the no-op Wasm filter (reported, the target above is on CPU): {:.2}× ({:+.0})",
                k / n,
                k - n
            );
        }
        if let (Some(k), Some(a)) = (kg, self.cpu_of(Config::ExtAuthzInstant)) {
            let _ = writeln!(
                out,
                "- keygate CPU/request < ½ ext_authz (instant server){note}: {:.2}× → {}",
                k / a,
                verdict(k < 0.5 * a)
            );
        }
        if let (Some(k), Some(n)) = (kg, self.cpu_of(Config::ApiKeyAuth)) {
            let _ = writeln!(
                out,
                "- keygate vs native api_key_auth (reported, no target): {:.2}× ({:+.1} µs/request)",
                k / n,
                k - n
            );
        }
        if let Some(r) = &self.key_revocation {
            let _ = writeln!(
                out,
                "- key revocation p99 < 1 s: {:.0} ms over {} deletes → {}",
                r.p99_ms,
                r.samples,
                verdict(r.p99_ms < 1000.0)
            );
        }
        if let Some(r) = &self.rule_revocation {
            let _ = writeln!(
                out,
                "- access-rule revocation p99 < 1 s: {:.0} ms over {} changes → {}",
                r.p99_ms,
                r.samples,
                verdict(r.p99_ms < 1000.0)
            );
        }
        if let Some(row) = self.tables.iter().find(|r| r.keys >= 1_000_000) {
            let base = self.tables.first().and_then(|r| r.keygate_rss);
            if let Some(note) = &row.keygate_note {
                let _ = writeln!(out, "- 1M keys synced < 20 s: {note} → **missed**");
                let _ = writeln!(
                    out,
                    "- 1M keys < 400 MB added to Envoy: not measurable without a sync → **missed**"
                );
            } else if let (Some(s), Some(rss), Some(b)) =
                (row.keygate_sync_s, row.keygate_rss, base)
            {
                let added = mib(rss) - mib(b);
                let mb = (rss.saturating_sub(b)) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "- 1M keys synced < 20 s: {s:.1} s → {}",
                    verdict(s < 20.0)
                );
                let _ = writeln!(
                    out,
                    "- 1M keys < 400 MB added to Envoy: {mb:.0} MB ({added:.0} MiB) → {}",
                    verdict(mb < 400.0)
                );
            }
        } else if self.tables.iter().any(|r| r.keys > 1) {
            out.push_str(
                "- 1M-key targets: not measured in this run (quick mode stops below 1M keys).\n",
            );
        }
        if let Some(p) = self
            .fleet
            .as_ref()
            .and_then(|f| f.points.iter().find(|p| p.subscribers >= 10_000))
        {
            let _ = writeln!(
                out,
                "- 10,000 parked subscribers: idle CPU < 3 % of a core: {:.2} % → {}",
                p.idle_cpu_pct,
                verdict(p.idle_cpu_pct < 3.0)
            );
            let mb = p.rss_parked as f64 / 1e6;
            let _ = writeln!(
                out,
                "- 10,000 parked subscribers: RSS < 150 MB: {mb:.0} MB → {}",
                verdict(mb < 150.0)
            );
            let _ = writeln!(
                out,
                "- one change → all 10,000 answered, p99 < 500 ms: {:.0} ms ({} of 10000 answered) → {}",
                p.p99_ms,
                p.answered,
                verdict(p.p99_ms < 500.0 && p.answered == p.subscribers)
            );
        }
        out
    }

    /// The whole document.
    pub fn document(&self, plan: &Plan, m: &Machine, kept: &str) -> String {
        let mut out = String::new();
        out.push_str("# Benchmarks\n\n");
        out.push_str("What keygate costs at the Envoy edge, side by side with a no-op Wasm filter, Envoy's native `api_key_auth` and an `ext_authz` call per request; how fast revocations land; how far the key table scales. Written by `cargo xtask bench` (the `keygate-bench` crate in `bench/`); do not edit above the marker line by hand.\n\n");
        let mode = if plan.quick {
            "**quick** (a subset: short runs, one round, no 1M-key table)"
        } else {
            "**full**"
        };
        let _ = writeln!(out, "## Run\n\n- mode: {mode}");
        let _ = writeln!(
            out,
            "- command: `{}` with `KEYGATE_ENVOY_BIN`, `KEYGATE_NOOP_WASM`, `KEYGATE_FILTER_WASM` (release), `KEYGATE_CONTROL_PLANE_BIN` (release){} set; `cargo xtask bench{}` runs the same through `cargo run --release -p keygate-bench`",
            plan.command,
            if plan.has(crate::settings::Section::Probe) {
                " and `KEYGATE_PROBE_WASM`"
            } else {
                ""
            },
            if plan.quick { " --quick" } else { "" }
        );
        let _ = writeln!(
            out,
            "- started {} UTC, took {:.0} s",
            self.started_utc, self.duration_s
        );
        let _ = writeln!(
            out,
            "- priority: {}",
            self.nice
                .map_or("normal (could not raise it)".to_owned(), |n| format!(
                    "nice {n} for the bench and everything it starts (Envoy, wrk, control plane)"
                ))
        );
        let _ = writeln!(
            out,
            "- machine: {} CPUs ({}), {} RAM, Linux {}; shared with other work while it ran, which moves req/s and latency more than CPU/request",
            m.cpus, m.cpu_model, m.memory, m.kernel
        );
        let _ = writeln!(
            out,
            "- versions: Envoy `{}`; `{}`; load generator `{}`\n",
            m.envoy_version, m.rustc_version, m.wrk_version
        );
        out.push_str("## Results\n\n");
        out.push_str(&self.tables_markdown(plan));
        if !self.failures.is_empty() {
            out.push_str("### Failed parts of this run\n\n");
            for f in &self.failures {
                let _ = writeln!(out, "- {f}");
            }
            out.push('\n');
        }
        out.push_str("## Targets\n\n");
        out.push_str(&self.targets_markdown(plan));
        out.push('\n');
        out.push_str(METHOD);
        out.push('\n');
        out.push_str(KEEP_MARKER);
        out.push('\n');
        out.push_str(kept);
        out
    }
}

/// How the numbers are made; part of every generated document.
const METHOD: &str = "## Method

- **Envoy**: 1.40, `--concurrency 1` (one worker), one Envoy per configuration, all started before the first measurement and measured in interleaved rounds (1 2 3 4 5 1 2 3 4 5 …) so slow drifts in the machine's load spread over every configuration.
- **Same route everywhere**: the listener's only route is a `direct_response` (`200 ok`). Envoy does all its HTTP work (codec, connection manager, filter chain, router) but has no upstream to call, and no upstream process competes for the two cores, so the difference between rows is the auth filter alone. A real upstream adds the same cost to every row, so the ratios here are the harshest ones keygate can get.
- **Request**: `GET /mcp-connect/alpha/mcp` with `Authorization: Bearer ok1-…` (a valid key scoped to `alpha`). Before measuring, each authenticating configuration must refuse an unknown key, and every answer during the runs must be 2xx, or the bench stops.
- **Configurations**: (1) no auth filter; (2) a no-op Proxy-Wasm filter (`bench/noop-filter`, same `proxy-wasm` 0.2.5 SDK, V8); (3) `envoy.filters.http.api_key_auth` with every key of the table inline (it takes the value after `Bearer `); (4) keygate's filter, its table long-polled from the real control plane, and (4b) the same with its per-worker table cache off (`tableCacheMillis: 0`: meta and the key's slot read from shared data on every request); (5a) `ext_authz` HTTP to the control plane, each request checked by `GET /api/me` (`path_override: /api/me`, `Authorization` forwarded via `allowed_headers`), the control plane verifying the key against SQLite; (5b) the same `ext_authz` against an in-process hyper server of the bench answering `200` at once, which isolates the cost of making the call from any verification.
- **CPU per request**: Envoy's `utime + stime` from `/proc/<pid>/stat` across a `wrk` run (`-t1`, keep-alive, 8 connections), divided by the requests `wrk` completed. This is the process's own accounting, so it holds when the machine is busy with other work; it includes Envoy's main thread (stats, the keygate fetcher). Envoy's CPU per request at saturation is slightly lower than at a moderate rate (events batch), so the CPU at the fixed rate is reported too.
- **req/s**: `wrk`'s closed-loop throughput with one Envoy worker, so at most one core; `wrk` itself takes most of the other.
- **Latency**: `wrk2` is not packaged by Debian and h2load's `--rps` paces per connection and reports no percentiles, so the bench has its own open-loop pacer (`bench/src/openloop.rs`, tokio + hyper): requests start on a fixed schedule whether or not earlier ones finished, each on a pooled keep-alive connection, after a one-second warm-up; latency is from handing the request to its connection to the end of the response. p50/p99 are at a fixed rate below every configuration's saturation point.
- **Memory**: Envoy's `VmRSS` from `/proc/<pid>/status` after the runs.
- **Table sizes**: a fresh control plane per size; the fixture (user, server, rule, one key) through the admin API, the other keys added in bulk (see `bench/src/seed.rs` for how, and what it couples to). Time to first sync is from spawning Envoy to the filter's `keygate_table_version` gauge at `/stats/prometheus` reaching the control plane's version (read from a full snapshot fetched just before). keygate's Envoys run with the runtime key `http.async_response_buffer_limit` raised from Envoy's default 32 MiB to 256 MiB as headroom only: the filter fetches full snapshots in pages (`snapshotPageSize`, 50,000 keys, ~7 MB a page), well under the default, so the shipped `envoy.yaml` needs no such setting. Cost of one change: a new key through the admin API after a random 0–1 s pause, timed until it works at the edge (median of 5, 3 in quick mode), and the Envoy CPU (thread run times from `/proc/<pid>/task/*/schedstat`) of a 1 s window without traffic holding one change minus a 1 s window without traffic or change (medians of 5 each, 3 in quick mode; small values are within the noise of Envoy's own timers).
- **Revocation**: for each of N keys, already accepted at the edge: `DELETE /api/admin-api-keys/{id}`; from the moment the DELETE returns, the key is sent to the edge back to back on a keep-alive connection until the first 401. Spaced: a random pause of 0–1 s before each delete, so deletes land at random points of the filter's poll cycle, like independent revocations; back to back: each delete right after the previous one was seen at the edge (a burst of changes). Access rules: one user whose only access is one rule; the rule is deleted and the key probed until 401/403, then granted again (that latency is reported too), spaced like the first case. The target is checked on the spaced series; the back-to-back series shows what a burst costs.
- **Instructions per request** (full runs when `valgrind` is on PATH, or `--sections instructions`): Envoys (1), (2) and (4), one at a time, each under `valgrind --tool=callgrind --smc-check=all-non-file` (V8 writes the code it runs); per request kind, 400 warm-up requests, counters zeroed (`callgrind_control -z`), 2,000 requests one after another on one keep-alive connection, counters dumped (`callgrind_control -d`), and an idle window of the same length counted the same way and subtracted. User-space instructions of the whole Envoy process; the kernel's share, the same for every row, is not counted. A count does not move with the machine's load, so it settles what CPU time on a shared machine cannot; it is not time (a cache miss costs more than an add), so the targets stay on CPU.
- **Single steps** (full runs with `KEYGATE_PROBE_WASM`, or `--sections probe`): the `cost-probe` example filter (`bench/noop-filter/examples/cost_probe.rs`) performs one of keygate's per-request steps and nothing else, one Envoy per step, measured like the edge comparison; and, in `micro` mode, times each step in a loop inside the sandbox (fastest of 15 trials of 2000), which is robust to a busy machine. Envoy is stripped and V8's JIT code has no symbols, so `perf` cannot split a Wasm filter's time; this can.
- **Control plane**: `wrk` on `GET /api/me` with a key directly against the control plane, the open-loop pacer at half that throughput (at most the edge rate) for p50/p99, and keys created through `POST /api/admin-api-keys` by 4 concurrent clients.
";

/// The fleet section: parked long polls per point, and the snapshot storm.
pub fn fleet_markdown(fleet: &FleetResult) -> String {
    let mut out = String::new();
    if !fleet.points.is_empty() {
        out.push_str("### Fleet: long polls parked on one control plane (SQLite, release, default limits)\n\n");
        let rows: Vec<Vec<String>> = fleet
            .points
            .iter()
            .map(|p| {
                vec![
                    p.subscribers.to_string(),
                    f(p.park_s, 1),
                    f(p.idle_cpu_pct, 2),
                    p.idle_version_reads.to_string(),
                    f(mib(p.rss_before), 0),
                    f(mib(p.rss_parked), 0),
                    f(kib_per(p.rss_parked, p.rss_before, p.subscribers), 1),
                    format!("{}/{}", p.answered, p.subscribers),
                    format!(
                        "{} / {} / {}",
                        f(p.p50_ms, 0),
                        f(p.p99_ms, 0),
                        f(p.max_ms, 0)
                    ),
                    format!("{} / {}", p.change_builds, p.change_encodes),
                    f(p.change_cpu_s, 2),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "subscribers",
                "parked in s",
                "idle CPU % of a core (20 s)",
                "version reads while idle",
                "RSS before MiB",
                "RSS parked MiB",
                "KiB per subscriber",
                "answered",
                "key delete → answered p50 / p99 / max ms",
                "delta builds / encodes",
                "CPU s for the change",
            ],
            &rows,
        );
    }
    if let Some(s) = &fleet.storm {
        let _ = writeln!(
            out,
            "### Snapshot storm: {} subscribers ask for the first page of {} keys at once, {} of them read every page\n",
            s.subscribers, s.keys, s.readers
        );
        table(
            &mut out,
            &["measure", "value"],
            &[
                vec![
                    "pages (size)".into(),
                    format!("{} ({:.1} MB each)", s.pages, s.page_bytes as f64 / 1e6),
                ],
                vec![
                    "snapshot pages built from the database".into(),
                    s.snapshot_builds.to_string(),
                ],
                vec!["answers encoded".into(), s.encodes.to_string()],
                vec!["version reads".into(), s.version_reads.to_string()],
                vec!["answers served shared".into(), s.shared.to_string()],
                vec!["control-plane CPU s (whole storm)".into(), f(s.cpu_s, 1)],
                vec![
                    "every subscriber has its first page's head (s)".into(),
                    f(s.heads_all_s, 2),
                ],
                vec![
                    format!("{} readers hold the whole table: p50 / last (s)", s.readers),
                    format!("{} / {}", f(s.whole_p50_s, 1), f(s.whole_last_s, 1)),
                ],
                vec!["control-plane peak RSS MiB".into(), f(mib(s.rss_peak), 0)],
            ],
        );
    }
    out
}
