//! A Proxy-Wasm filter that performs, on every request, exactly the
//! operations named in its plugin configuration (comma-separated), and
//! nothing else. The bench runs it with one operation at a time to price
//! each step keygate's filter takes per request, since the Envoy binary is
//! stripped and V8's JIT code is invisible to `perf`.
//!
//! Operations: `headers` (read all request headers in one call, lowercase
//! the names), `path` (read `:path` alone), `rawheaders` (read all headers
//! through the raw ABI call and walk them in place, no allocation per
//! header: separates the host's cost from the SDK's parsing), `shared` (read
//! two shared-data values like the filter's meta and key entry), `decode`
//! (decode two such values as the filter does: meta is JSON, the entry a
//! binary slot), `sha256`
//! (hash a secret and compare in constant time), `parse` (parse an ok1 key),
//! `edit` (remove one request header, set three), `setmap` (the same edits
//! as one call that replaces the whole header map: read all headers, write
//! them back without `authorization` and with the three identity headers),
//! `metric` (increment a counter), `time` (read the clock), `props` (set
//! the access-log property keygate sets on allow).
//!
//! With the configuration `micro`, the filter instead times one operation
//! in a loop, named by the request's `x-probe-op` header: 15 trials of 2000
//! iterations each, and answers `200` with the fastest trial's nanoseconds
//! per iteration in `x-probe-ns`. The minimum of several trials is robust
//! on a busy machine, where whole-request CPU numbers are not.

use keygate_protocol::{ApiKeyToken, KeyEntry, Secret};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};
use serde::Deserialize;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot { ops: Rc::new(Ops::default()) }) });
}}

const META: &str = "probe/meta";
const ENTRY: &str = "probe/k/1";
const TOKEN: &str = "ok1-1-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[derive(Default)]
struct Ops {
    headers: bool,
    raw_headers: bool,
    path: bool,
    shared: bool,
    decode: bool,
    sha256: bool,
    parse: bool,
    edit: bool,
    setmap: bool,
    metric: Option<u32>,
    time: bool,
    props: bool,
    micro: bool,
    metric_id: u32,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Meta {
    g: u64,
    v: u64,
    s: u64,
    n: u64,
}

/// A key entry as keygate's table stores it (filter/src/slot.rs): tag 1,
/// generation, version, id, user id, SHA-256, expiry flag and time, the
/// previous-secret flag (0: no rotation overlap), then the scope (2 = named:
/// a u32 count, then length-prefixed names).
fn slot_bytes() -> Vec<u8> {
    let mut out = vec![1u8];
    for v in [1u64, 7, 1, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(Secret::from_bytes([0; 32]).hash().as_bytes());
    out.push(0);
    out.extend_from_slice(&0i64.to_le_bytes());
    out.push(0);
    out.push(2);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.push(5);
    out.extend_from_slice(b"alpha");
    out
}

/// The same work as the filter's `slot::decode` (which this probe cannot
/// link: the filter's crate exports its own Proxy-Wasm entry points): read
/// the fixed fields and build the entry, server names included.
fn decode_slot(bytes: &[u8]) -> Option<KeyEntry> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    fn u64_at(b: &mut &[u8]) -> Option<u64> {
        take(b, 8)?.try_into().ok().map(u64::from_le_bytes)
    }
    let mut b = bytes;
    let _tag = take(&mut b, 1)?;
    let (_generation, _version) = (u64_at(&mut b)?, u64_at(&mut b)?);
    let id = u64_at(&mut b)? as i64;
    let user_id = u64_at(&mut b)? as i64;
    let hash: [u8; 32] = take(&mut b, 32)?.try_into().ok()?;
    let has_expiry = take(&mut b, 1)?.first().copied()? == 1;
    let expiry = u64_at(&mut b)? as i64;
    let _previous = take(&mut b, 1)?;
    let _scope = take(&mut b, 1)?;
    let count = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?);
    let mut names = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = usize::from(take(&mut b, 1)?.first().copied()?);
        names.push(String::from_utf8(take(&mut b, len)?.to_vec()).ok()?);
    }
    Some(KeyEntry {
        id,
        user_id,
        secret_hash: keygate_protocol::SecretHash::from_bytes(hash),
        expires_at: has_expiry.then_some(expiry),
        servers: keygate_protocol::ServerScope::Named(names),
        previous_secret: None,
    })
}

struct ProbeRoot {
    ops: Rc<Ops>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let cfg = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut ops = Ops::default();
        for op in cfg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match op {
                "headers" => ops.headers = true,
                "path" => ops.path = true,
                "rawheaders" => ops.raw_headers = true,
                "shared" => ops.shared = true,
                "decode" => ops.decode = true,
                "sha256" => ops.sha256 = true,
                "parse" => ops.parse = true,
                "edit" => ops.edit = true,
                "setmap" => ops.setmap = true,
                "metric" => {
                    ops.metric =
                        hostcalls::define_metric(MetricType::Counter, "probe_requests").ok()
                }
                "time" => ops.time = true,
                "props" => ops.props = true,
                "micro" => ops.micro = true,
                _ => return false,
            }
        }
        ops.metric_id = hostcalls::define_metric(MetricType::Counter, "probe_micro").unwrap_or(0);
        // Values shaped like keygate's table: meta in JSON, an entry slot.
        let entry = slot_bytes();
        let _ = hostcalls::set_shared_data(
            META,
            Some(br#"{"g":1,"v":7,"s":1700000000000,"n":100000}"#),
            None,
        );
        let _ = hostcalls::set_shared_data(ENTRY, Some(&entry), None);
        self.ops = Rc::new(ops);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp {
            ops: Rc::clone(&self.ops),
        }))
    }
}

struct ProbeHttp {
    ops: Rc<Ops>,
}

impl Context for ProbeHttp {}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.ops.micro {
            let op = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-probe-op")
                .ok()
                .flatten()
                .unwrap_or_default();
            let ns = micro(&op, self.ops.metric_id)
                .map_or_else(|| "unknown op".to_owned(), |ns| format!("{ns:.1}"));
            let _ = hostcalls::send_http_response(200, vec![("x-probe-ns", ns.as_str())], None);
            return Action::Pause;
        }
        let ops = &self.ops;
        let mut sink = 0usize;
        if ops.headers
            && let Ok(h) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        {
            let lowered: Vec<(String, Vec<u8>)> = h
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect();
            sink += lowered.len();
        }
        if ops.raw_headers {
            sink += raw_header_names();
        }
        if ops.path {
            sink += hostcalls::get_map_value(MapType::HttpRequestHeaders, ":path")
                .ok()
                .flatten()
                .map_or(0, |p| p.len());
        }
        let mut values = (None, None);
        if ops.shared {
            values = (
                hostcalls::get_shared_data(META).ok().and_then(|(v, _)| v),
                hostcalls::get_shared_data(ENTRY).ok().and_then(|(v, _)| v),
            );
        }
        if ops.decode {
            let meta = values
                .0
                .unwrap_or_else(|| br#"{"g":1,"v":7,"s":1700000000000,"n":100000}"#.to_vec());
            let m: Option<Meta> = serde_json::from_slice(&meta).ok();
            sink += usize::from(m.is_some());
            if let Some(entry) = values.1 {
                sink += usize::from(decode_slot(&entry).is_some());
            }
        }
        if ops.parse {
            sink += usize::from(ApiKeyToken::parse(TOKEN.as_bytes()).is_ok());
        }
        if ops.sha256 {
            let stored = Secret::from_bytes([0; 32]).hash();
            sink += usize::from(keygate_protocol::secret::verify(
                Some(&stored),
                &Secret::from_bytes([1; 32]),
            ));
        }
        if ops.edit {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "authorization");
            set_identity_headers();
        }
        if ops.setmap {
            sink += set_map_edit();
        }
        if let Some(id) = ops.metric {
            let _ = hostcalls::increment_metric(id, 1);
        }
        if ops.time {
            sink += usize::from(hostcalls::get_current_time().is_ok());
        }
        if ops.props {
            set_properties();
        }
        std::hint::black_box(sink);
        Action::Continue
    }
}

/// keygate's allow edits as one host call: read every header, write the
/// map back without the key and with the identity headers.
fn set_map_edit() -> usize {
    let Ok(headers) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
        return 0;
    };
    let mut out: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(n, _)| n != "authorization")
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    out.push(("x-keygate-user-id", b"1"));
    out.push(("x-keygate-key-id", b"1"));
    out.push(("x-keygate-server", b"alpha"));
    let n = out.len();
    let _ = hostcalls::set_map_bytes(MapType::HttpRequestHeaders, out);
    n
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// Reads all request headers through the raw ABI call and walks the
/// serialized map in place (no per-header allocation), counting names.
fn raw_header_names() -> usize {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated in our memory (through
    // proxy_on_memory_allocate) and its size; we own it afterwards.
    let status = unsafe { proxy_get_header_map_pairs(0, &mut data, &mut size) };
    if status != 0 || data.is_null() {
        return 0;
    }
    // SAFETY: allocated by the SDK's allocator as a Vec<u8> of `size`.
    let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
    let count = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize);
    let mut at = 4 + count * 8;
    let mut names = 0;
    for i in 0..count {
        let len = |o: usize| {
            bytes
                .get(o..o + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, |b| u32::from_le_bytes(b) as usize)
        };
        let (k, v) = (len(4 + i * 8), len(8 + i * 8));
        if bytes
            .get(at..at + k)
            .is_some_and(|n| n.first() != Some(&b'x'))
        {
            names += 1;
        }
        at += k + 1 + v + 1;
    }
    names
}

/// Sets the three identity headers keygate sets on allow (one call each).
fn set_identity_headers() {
    for (name, value) in [
        ("x-keygate-user-id", "1"),
        ("x-keygate-key-id", "1"),
        ("x-keygate-server", "alpha"),
    ] {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }
}

/// Sets the access-log property keygate sets on allow (one call; Envoy
/// keeps it as filter state `wasm.keygate`).
fn set_properties() {
    let _ = hostcalls::set_property(
        vec!["keygate"],
        Some(b"user=1 key=1 server=alpha deny=-".as_slice()),
    );
}

fn now_ns() -> u128 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// Fastest of 15 trials of 2000 iterations of `op`, in ns per iteration.
fn micro(op: &str, metric_id: u32) -> Option<f64> {
    const ITER: u32 = 2000;
    let meta = br#"{"g":1,"v":7,"s":1700000000000,"n":100000}"#.to_vec();
    let entry = hostcalls::get_shared_data(ENTRY)
        .ok()
        .and_then(|(v, _)| v)
        .unwrap_or_default();
    let stored = Secret::from_bytes([0; 32]).hash();
    let step: Box<dyn Fn() -> usize> = match op {
        "empty" => Box::new(|| 1),
        "headers" => Box::new(|| {
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
                .map(|h| {
                    let lowered: Vec<(String, Vec<u8>)> = h
                        .into_iter()
                        .map(|(n, v)| (n.to_ascii_lowercase(), v))
                        .collect();
                    std::hint::black_box(lowered).len()
                })
                .unwrap_or(0)
        }),
        "path" => Box::new(|| {
            hostcalls::get_map_value(MapType::HttpRequestHeaders, ":path")
                .ok()
                .flatten()
                .map_or(0, |p| p.len())
        }),
        "shared" => Box::new(|| {
            hostcalls::get_shared_data(META)
                .ok()
                .and_then(|(v, _)| v)
                .map_or(0, |v| v.len())
                + hostcalls::get_shared_data(ENTRY)
                    .ok()
                    .and_then(|(v, _)| v)
                    .map_or(0, |v| v.len())
        }),
        "decode" => Box::new(move || {
            usize::from(serde_json::from_slice::<Meta>(&meta).is_ok())
                + usize::from(decode_slot(&entry).is_some())
        }),
        "parse" => Box::new(|| usize::from(ApiKeyToken::parse(TOKEN.as_bytes()).is_ok())),
        "sha256" => Box::new(move || {
            usize::from(keygate_protocol::secret::verify(
                Some(&stored),
                &Secret::from_bytes([1; 32]),
            ))
        }),
        "edit" => Box::new(|| {
            set_identity_headers();
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-keygate-user-id");
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-keygate-key-id");
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-keygate-server");
            6
        }),
        "metric" => {
            Box::new(move || usize::from(hostcalls::increment_metric(metric_id, 1).is_ok()))
        }
        "time" => Box::new(|| usize::from(hostcalls::get_current_time().is_ok())),
        "props" => Box::new(|| {
            set_properties();
            3
        }),
        _ => return None,
    };
    let mut best = f64::INFINITY;
    let mut sink = 0usize;
    for _ in 0..15 {
        let t0 = now_ns();
        for _ in 0..ITER {
            sink = sink.wrapping_add(std::hint::black_box(step()));
        }
        let per = (now_ns().saturating_sub(t0)) as f64 / f64::from(ITER);
        best = best.min(per);
    }
    std::hint::black_box(sink);
    Some(best)
}
