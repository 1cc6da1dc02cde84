//! What to run and with which binaries: the command line, the plan for
//! `--quick` and full runs, and the `KEYGATE_*` variables naming the parts.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The configurations of the edge comparison, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    Floor,
    NoopWasm,
    ApiKeyAuth,
    Keygate,
    /// keygate with its per-VM table cache off (`tableCacheMillis: 0`).
    KeygateUncached,
    ExtAuthzControlPlane,
    ExtAuthzInstant,
}

impl Config {
    pub const ALL: [Config; 7] = [
        Config::Floor,
        Config::NoopWasm,
        Config::ApiKeyAuth,
        Config::Keygate,
        Config::KeygateUncached,
        Config::ExtAuthzControlPlane,
        Config::ExtAuthzInstant,
    ];

    /// Short name for `--configs` and file names.
    pub fn slug(self) -> &'static str {
        match self {
            Config::Floor => "floor",
            Config::NoopWasm => "noop",
            Config::ApiKeyAuth => "native",
            Config::Keygate => "keygate",
            Config::KeygateUncached => "keygate-uncached",
            Config::ExtAuthzControlPlane => "authz-cp",
            Config::ExtAuthzInstant => "authz-instant",
        }
    }

    /// Row label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Config::Floor => "(1) no auth filter",
            Config::NoopWasm => "(2) no-op Wasm filter",
            Config::ApiKeyAuth => "(3) native api_key_auth",
            Config::Keygate => "(4) keygate filter",
            Config::KeygateUncached => "(4b) keygate, table cache off",
            Config::ExtAuthzControlPlane => "(5a) ext_authz → control plane",
            Config::ExtAuthzInstant => "(5b) ext_authz → instant server",
        }
    }

    fn from_slug(s: &str) -> Option<Config> {
        Config::ALL.into_iter().find(|c| c.slug() == s)
    }
}

/// Sections of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Edge,
    Tables,
    Revocation,
    ControlPlane,
    /// Prices single filter steps; only on request (needs `KEYGATE_PROBE_WASM`).
    Probe,
    /// Thousands of long polls on one control plane, and a snapshot storm.
    Fleet,
    /// Instructions per request under callgrind (needs valgrind).
    Instructions,
}

impl Section {
    /// What a run does unless `--sections` says otherwise.
    const DEFAULT: [Section; 5] = [
        Section::Edge,
        Section::Tables,
        Section::Revocation,
        Section::ControlPlane,
        Section::Fleet,
    ];
    const ALL: [Section; 7] = [
        Section::Edge,
        Section::Tables,
        Section::Revocation,
        Section::ControlPlane,
        Section::Probe,
        Section::Fleet,
        Section::Instructions,
    ];

    fn slug(self) -> &'static str {
        match self {
            Section::Edge => "edge",
            Section::Tables => "tables",
            Section::Revocation => "revocation",
            Section::ControlPlane => "control-plane",
            Section::Probe => "probe",
            Section::Fleet => "fleet",
            Section::Instructions => "instructions",
        }
    }
}

pub struct Plan {
    pub quick: bool,
    pub sections: Vec<Section>,
    pub configs: Vec<Config>,
    /// Interleaved rounds over the configurations.
    pub repeats: usize,
    pub wrk_seconds: u32,
    pub wrk_connections: u32,
    pub rate_rps: u32,
    pub rate_seconds: f64,
    /// Keys in the table during the edge comparison.
    pub edge_keys: usize,
    pub table_sizes: Vec<usize>,
    /// Largest table given inline to `api_key_auth`.
    pub native_max_keys: usize,
    pub revocations: usize,
    pub rule_changes: usize,
    pub control_plane_seconds: u32,
    /// Long polls parked per fleet point.
    pub fleet_sizes: Vec<usize>,
    /// The snapshot storm: subscribers asking at once, and how many of them
    /// read the whole table (`None`: no storm).
    pub fleet_storm: Option<(usize, usize)>,
    pub out: PathBuf,
    pub write_doc: bool,
    /// The command line as typed, for the report.
    pub command: String,
}

impl Plan {
    pub fn has(&self, s: Section) -> bool {
        self.sections.contains(&s)
    }

    /// Whether any part of the run puts the edge configurations in Envoys.
    pub fn runs_edge_configs(&self) -> bool {
        self.has(Section::Edge) || self.has(Section::Instructions)
    }

    /// Whether any part of the run needs the control plane and keygate's filter.
    pub fn needs_keygate(&self) -> bool {
        self.has(Section::Tables)
            || self.has(Section::Revocation)
            || self.has(Section::ControlPlane)
            || self.configs.iter().any(|c| {
                matches!(
                    c,
                    Config::Keygate | Config::KeygateUncached | Config::ExtAuthzControlPlane
                )
            }) && self.runs_edge_configs()
    }
}

const USAGE: &str = "usage: keygate-bench [--quick] [--out FILE] [--no-doc]
       (a full run writes docs/benchmarks.md, a quick one target/bench/benchmarks-quick.md)
       [--sections edge,tables,revocation,control-plane,probe,fleet,instructions]
       (a run of chosen sections writes target/bench/benchmarks-sections.md)
       [--fleet-sizes 1000,5000,10000] [--fleet-storm SUBSCRIBERS,READERS | --fleet-storm none]
       [--configs floor,noop,native,keygate,keygate-uncached,authz-cp,authz-instant]
       [--repeats N] [--seconds S] [--rate RPS] [--edge-keys N] [--table-sizes 1000,100000,1000000]
Environment: KEYGATE_ENVOY_BIN, KEYGATE_NOOP_WASM, KEYGATE_FILTER_WASM, KEYGATE_CONTROL_PLANE_BIN; `wrk` on PATH.
Optional: KEYGATE_PROBE_WASM (the cost-probe example filter): a full run then also prices single filter steps;
valgrind on PATH: a full run then also counts instructions per request (section `instructions`).";

fn list<T>(v: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<Vec<T>> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse(s.trim()).with_context(|| format!("unknown {what} `{s}`\n{USAGE}")))
        .collect()
}

fn number<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T> {
    v.as_deref()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{flag} needs a number\n{USAGE}"))
}

pub fn parse_args(args: Vec<String>) -> Result<Plan> {
    let command = std::iter::once("keygate-bench".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let quick = args.iter().any(|a| a == "--quick");
    let mut plan = if quick {
        Plan {
            quick,
            sections: Section::DEFAULT.to_vec(),
            configs: Config::ALL.to_vec(),
            repeats: 1,
            wrk_seconds: 3,
            wrk_connections: 8,
            rate_rps: 1000,
            rate_seconds: 3.0,
            edge_keys: 1_000,
            table_sizes: vec![1_000, 100_000],
            native_max_keys: 100_000,
            revocations: 20,
            rule_changes: 10,
            control_plane_seconds: 3,
            fleet_sizes: vec![1_000],
            fleet_storm: Some((1_000, 100)),
            out: default_out(quick),
            write_doc: true,
            command,
        }
    } else {
        Plan {
            quick,
            sections: Section::DEFAULT.to_vec(),
            configs: Config::ALL.to_vec(),
            repeats: 5,
            wrk_seconds: 8,
            wrk_connections: 8,
            rate_rps: 1000,
            rate_seconds: 8.0,
            edge_keys: 100_000,
            table_sizes: vec![1_000, 100_000, 1_000_000],
            native_max_keys: 1_000_000,
            revocations: 60,
            rule_changes: 50,
            control_plane_seconds: 8,
            fleet_sizes: vec![1_000, 5_000, 10_000],
            fleet_storm: Some((10_000, 1_000)),
            out: default_out(quick),
            write_doc: true,
            command,
        }
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {}
            "--no-doc" => plan.write_doc = false,
            "--out" => {
                plan.out = PathBuf::from(
                    it.next()
                        .with_context(|| format!("--out needs a path\n{USAGE}"))?,
                )
            }
            "--sections" => {
                let v = it.next().unwrap_or_default();
                plan.sections = list(
                    &v,
                    |s| Section::ALL.into_iter().find(|x| x.slug() == s),
                    "section",
                )?;
            }
            "--configs" => {
                let v = it.next().unwrap_or_default();
                plan.configs = list(&v, Config::from_slug, "configuration")?;
            }
            "--repeats" => plan.repeats = number("--repeats", it.next())?,
            "--seconds" => {
                let s: u32 = number("--seconds", it.next())?;
                plan.wrk_seconds = s;
                plan.rate_seconds = f64::from(s);
                plan.control_plane_seconds = s;
            }
            "--rate" => plan.rate_rps = number("--rate", it.next())?,
            "--fleet-sizes" => {
                let v = it.next().unwrap_or_default();
                plan.fleet_sizes = list(&v, |s| s.parse().ok(), "fleet size")?;
            }
            "--fleet-storm" => {
                let v = it.next().unwrap_or_default();
                plan.fleet_storm = match v.split_once(',') {
                    _ if v == "none" => None,
                    Some((s, r)) => Some((
                        number("--fleet-storm", Some(s.to_owned()))?,
                        number("--fleet-storm", Some(r.to_owned()))?,
                    )),
                    None => {
                        anyhow::bail!("--fleet-storm needs SUBSCRIBERS,READERS or none\n{USAGE}")
                    }
                };
            }
            "--edge-keys" => plan.edge_keys = number("--edge-keys", it.next())?,
            "--table-sizes" => {
                let v = it.next().unwrap_or_default();
                plan.table_sizes = list(&v, |s| s.parse().ok(), "table size")?;
            }
            "-h" | "--help" => anyhow::bail!("{USAGE}"),
            other => anyhow::bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    // A full run prices single filter steps too when the probe filter is built.
    let sections_given = plan.command.contains("--sections");
    // Only the whole run rewrites the published figures; a run of chosen
    // sections would otherwise replace every other table with nothing.
    if sections_given && !quick && !plan.command.contains("--out") {
        plan.out = target_dir().join("bench").join("benchmarks-sections.md");
    }
    if !quick && !sections_given && std::env::var_os("KEYGATE_PROBE_WASM").is_some() {
        plan.sections.push(Section::Probe);
    }
    if !quick && !sections_given && crate::scenario::instructions::available() {
        plan.sections.push(Section::Instructions);
    }
    if plan.repeats == 0 || plan.wrk_seconds == 0 {
        anyhow::bail!("--repeats and --seconds must be at least 1");
    }
    Ok(plan)
}

/// Only a full run rewrites the published `docs/benchmarks.md`; a quick
/// run's rough figures go under the target directory, so trying it leaves the
/// checkout clean.
fn default_out(quick: bool) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if quick {
        target_dir().join("bench").join("benchmarks-quick.md")
    } else {
        repo.join("docs").join("benchmarks.md")
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        })
}

/// Paths to the binaries under test, from the environment.
pub struct Parts {
    pub envoy: PathBuf,
    pub noop_wasm: Option<PathBuf>,
    pub filter_wasm: Option<PathBuf>,
    pub control_plane: Option<PathBuf>,
    pub wrk: PathBuf,
}

fn required_file(var: &str, what: &str) -> Result<PathBuf> {
    let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
        anyhow::bail!("{var} is not set: it must name {what} (`cargo xtask bench` sets it)");
    };
    let p = PathBuf::from(v);
    if !p.is_file() {
        anyhow::bail!("{var}={} does not exist: it must name {what}", p.display());
    }
    Ok(p)
}

pub fn parts(plan: &Plan) -> Result<Parts> {
    // The fleet alone measures the control plane: no Envoy, no wrk.
    let fleet_only = plan.sections.iter().all(|s| *s == Section::Fleet);
    let envoy = if fleet_only {
        PathBuf::new()
    } else {
        required_file("KEYGATE_ENVOY_BIN", "the Envoy 1.40 binary")?
    };
    let noop_wasm = if plan.runs_edge_configs() && plan.configs.contains(&Config::NoopWasm) {
        Some(required_file(
            "KEYGATE_NOOP_WASM",
            "the no-op filter (keygate_noop_filter.wasm, release, wasm32-wasip1)",
        )?)
    } else {
        None
    };
    let control_plane_only = plan.has(Section::Fleet) && !plan.needs_keygate();
    let (filter_wasm, control_plane) = if control_plane_only {
        let bin = required_file(
            "KEYGATE_CONTROL_PLANE_BIN",
            "the keygate-control-plane binary (a release build)",
        )?;
        (None, Some(bin))
    } else if plan.needs_keygate() {
        (
            Some(required_file(
                "KEYGATE_FILTER_WASM",
                "keygate's filter (keygate_filter.wasm, release, wasm32-wasip1)",
            )?),
            Some(required_file(
                "KEYGATE_CONTROL_PLANE_BIN",
                "the keygate-control-plane binary (a release build)",
            )?),
        )
    } else {
        (None, None)
    };
    let wrk = if fleet_only {
        PathBuf::new()
    } else {
        crate::wrk::find()?
    };
    Ok(Parts {
        envoy,
        noop_wasm,
        filter_wasm,
        control_plane,
        wrk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_run_writes_the_published_figures() {
        let quick = parse_args(vec!["--quick".into()]).unwrap();
        assert!(
            quick.out.ends_with("bench/benchmarks-quick.md"),
            "{}",
            quick.out.display()
        );
        assert!(
            !quick
                .out
                .starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"))
        );
        let full = parse_args(Vec::new()).unwrap();
        assert!(
            full.out.ends_with("docs/benchmarks.md"),
            "{}",
            full.out.display()
        );
        assert!(full.has(Section::Fleet));
        let fleet = parse_args(vec!["--sections".into(), "fleet".into()]).unwrap();
        assert_eq!(fleet.sections, vec![Section::Fleet]);
        assert!(
            fleet.out.ends_with("bench/benchmarks-sections.md"),
            "{}",
            fleet.out.display()
        );
    }
}
