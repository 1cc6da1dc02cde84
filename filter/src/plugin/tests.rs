//! The plugin's host events against a fake host: what a client is answered,
//! what is counted and logged, what is sent to the control plane. Tests look
//! at outcomes (the reply, the counters, the log lines), not at the order of
//! host calls.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use crate::decision::Reason;
use crate::headers::Edit;
use crate::store::memory::MemoryStore;
use crate::sync::TICK_MS;
use keygate_protocol::{ApiKeyToken, KeyEntry, KeyTable, Secret, ServerScope};
use secrecy::ExposeSecret;
use std::cell::Cell;
use std::collections::HashMap;

const TOKEN: &str = "dp-s3cr3t";

/// A local reply as the client would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u32,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Envoy, as far as the plugin can tell.
#[derive(Default)]
struct FakeHost {
    now: Cell<u64>,
    /// Dispatched callouts by token.
    sent: RefCell<Vec<(u32, String, HttpRequest)>>,
    refuse_dispatch: Cell<bool>,
    replies: RefCell<Vec<Reply>>,
    edits: RefCell<Vec<Edit>>,
    refuse_edits: Cell<bool>,
    counters: RefCell<HashMap<Metric, u64>>,
    gauges: RefCell<HashMap<Metric, u64>>,
    logs: RefCell<Vec<(LogLevel, String)>>,
    debug: Cell<bool>,
    /// Properties set, in order.
    properties: RefCell<Vec<(String, String)>>,
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn dispatch(&self, cluster: &str, request: &HttpRequest) -> Result<u32, String> {
        if self.refuse_dispatch.get() {
            return Err("BadArgument".into());
        }
        let mut sent = self.sent.borrow_mut();
        let token = sent.len() as u32 + 1;
        sent.push((token, cluster.to_owned(), request.clone()));
        Ok(token)
    }
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &str) {
        self.replies.borrow_mut().push(Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_owned(),
        });
    }
    fn edit_request_headers(&self, ops: &[HeaderOp]) -> bool {
        if self.refuse_edits.get() {
            return false;
        }
        self.edits.borrow_mut().extend(ops.iter().map(Edit::from));
        true
    }
    fn add_to_counter(&self, metric: Metric, n: u64) {
        *self.counters.borrow_mut().entry(metric).or_default() += n;
    }
    fn set_gauge(&self, metric: Metric, value: u64) {
        self.gauges.borrow_mut().insert(metric, value);
    }
    fn log_enabled(&self, level: LogLevel) -> bool {
        level > LogLevel::Debug || self.debug.get()
    }
    fn log(&self, level: LogLevel, message: &str) {
        if self.log_enabled(level) {
            self.logs.borrow_mut().push((level, message.to_owned()));
        }
    }
    fn set_property(&self, name: &str, value: &str) {
        self.properties
            .borrow_mut()
            .push((name.to_owned(), value.to_owned()));
    }
}

impl FakeHost {
    fn counter(&self, metric: Metric) -> u64 {
        self.counters.borrow().get(&metric).copied().unwrap_or(0)
    }
    fn logged(&self, level: LogLevel, part: &str) -> bool {
        self.logs
            .borrow()
            .iter()
            .any(|(l, m)| *l == level && m.contains(part))
    }
    fn last_reply(&self) -> Reply {
        self.replies.borrow().last().cloned().expect("no reply")
    }
    /// The last callout sent, with its token.
    fn last_sent(&self) -> (u32, HttpRequest) {
        let sent = self.sent.borrow();
        let (token, _, req) = sent.last().expect("nothing sent");
        (*token, req.clone())
    }
    /// The properties set since the last call, as `name=value`.
    fn take_properties(&self) -> Vec<String> {
        self.properties
            .borrow_mut()
            .drain(..)
            .map(|(n, v)| format!("{n}={v}"))
            .collect()
    }
    fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }
    /// Nothing the host saw shows the data-plane token or a key's secret.
    fn assert_no_secrets(&self, secrets: &[&str]) {
        for (_, line) in self.logs.borrow().iter() {
            for s in secrets {
                assert!(!line.contains(s), "secret in log: {line}");
            }
        }
        for r in self.replies.borrow().iter() {
            for s in secrets {
                assert!(!format!("{r:?}").contains(s), "secret in reply: {r:?}");
            }
        }
    }
}

fn config(extra: &str) -> Vec<u8> {
    format!(r#"{{"controlPlaneCluster":"cp","dataPlaneToken":"{TOKEN}","usageFlushSeconds":1,"keyHeaders":["authorization","x-api-key"]{extra}}}"#)
        .into_bytes()
}

fn key_entry(id: i64) -> KeyEntry {
    KeyEntry {
        id,
        user_id: 7,
        secret_hash: Secret::from_bytes([id as u8; 32]).hash(),
        expires_at: None,
        servers: ServerScope::Named(vec!["alpha".into()]),
        previous_secret: None,
    }
}

fn key(id: i64) -> String {
    ApiKeyToken {
        user_id: 7,
        key_id: id,
        secret: Secret::from_bytes([id as u8; 32]),
    }
    .encode()
}

fn request(path: &str, headers: &[(&str, &str)]) -> RequestHeaders {
    let mut all = vec![(":method", "POST"), (":path", path)];
    all.extend_from_slice(headers);
    RequestHeaders::from_pairs(&all).unwrap()
}

/// A configured VM with a fake host and an empty store.
struct Vm {
    host: FakeHost,
    store: MemoryStore,
    root: Root,
}

impl Vm {
    fn new() -> Self {
        let host = FakeHost::default();
        host.now.set(1_000_000);
        let mut root = Root::new(1, 42);
        assert!(root.configure(&host, &config("")));
        Self {
            host,
            store: MemoryStore::default(),
            root,
        }
    }

    fn tick(&mut self) {
        self.host.advance(TICK_MS);
        self.root.on_tick(&self.host, &self.store);
    }

    /// Ticks until the VM holds the lease and has sent its first poll.
    fn first_poll(&mut self) -> (u32, HttpRequest) {
        self.tick();
        self.tick();
        self.host.last_sent()
    }

    fn answer(&mut self, token: u32, status: Option<u32>, table: Option<&KeyTable>) {
        let body = table.map(|t| serde_json::to_vec(t).unwrap());
        self.root
            .on_callout_response(&self.host, &self.store, token, status, || body);
    }

    fn send(&self, path: &str, headers: &[(&str, &str)]) -> Verdict {
        let shared = self.root.shared();
        on_request_headers(
            &self.host,
            &self.store,
            shared.as_deref(),
            Some(request(path, headers)),
        )
    }
}

fn snapshot(version: u64, ids: &[i64]) -> KeyTable {
    KeyTable {
        version,
        full: true,
        upserts: ids.iter().map(|i| key_entry(*i)).collect(),
        removals: vec![],
        next: None,
        registered_servers: None,
    }
}

#[test]
fn fail_closed_is_the_ordinary_503_denial() {
    let vm = Vm::new();
    // No table yet: the ordinary denial.
    assert_eq!(
        vm.send("/mcp-connect/alpha/mcp", &[("x-api-key", &key(1))]),
        Verdict::Stop
    );
    let ordinary = vm.host.last_reply();
    assert_eq!(ordinary.status, 503);
    assert_eq!(ordinary.header("cache-control"), Some("no-store"));
    assert_eq!(ordinary.header("retry-after"), Some("5"));
    assert_eq!(ordinary.header("content-type"), Some("application/json"));

    // No configuration, headers the host could not hand over, header edits
    // the host refused: the same reply.
    let no_config = on_request_headers(&vm.host, &vm.store, None, Some(request("/", &[])));
    assert_eq!(no_config, Verdict::Stop);
    assert_eq!(vm.host.last_reply(), ordinary);
    let shared = vm.root.shared();
    let no_headers = on_request_headers(&vm.host, &vm.store, shared.as_deref(), None);
    assert_eq!(no_headers, Verdict::Stop);
    assert_eq!(vm.host.last_reply(), ordinary);
    vm.host.refuse_edits.set(true);
    assert_eq!(vm.send("/other", &[]), Verdict::Stop);
    assert_eq!(vm.host.last_reply(), ordinary);
}

#[test]
fn denials_carry_their_challenge_and_are_counted_on_the_tick() {
    let mut vm = Vm::new();
    assert_eq!(vm.send("/mcp-connect/alpha/mcp", &[]), Verdict::Stop);
    let r = vm.host.last_reply();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.body, r#"{"error":"API key required"}"#);
    // Counted in VM memory, handed to the host on the tick.
    assert_eq!(vm.host.counter(Metric::Decisions(Reason::MissingKey)), 0);
    vm.tick();
    assert_eq!(vm.host.counter(Metric::Decisions(Reason::MissingKey)), 1);
}

#[test]
fn denials_are_logged_at_debug_only_without_the_key() {
    let vm = Vm::new();
    let k = key(1);
    vm.send("/mcp-connect/alpha/mcp?key=x", &[("x-api-key", &k)]);
    assert!(vm.host.logs.borrow().is_empty());
    vm.host.debug.set(true);
    vm.send("/mcp-connect/alpha/mcp?key=x", &[("x-api-key", &k)]);
    assert!(vm.host.logged(LogLevel::Debug, "-> 503 (no_table)"));
    vm.host.assert_no_secrets(&[&k, "key=x"]);
}

#[test]
fn an_allowed_request_gets_its_identity_and_its_use_is_posted() {
    let mut vm = Vm::new();
    let (token, poll) = vm.first_poll();
    assert!(
        poll.header(":path")
            .unwrap()
            .starts_with("/internal/v1/key-table")
    );
    vm.answer(token, Some(200), Some(&snapshot(3, &[1])));
    let k = key(1);
    let bearer = format!("Bearer {k}");
    let verdict = vm.send(
        "/mcp-connect/alpha/mcp",
        &[("authorization", &bearer), ("x-keygate-user-id", "1")],
    );
    assert_eq!(verdict, Verdict::Continue);
    // The access log learns who it was, through filter state.
    assert_eq!(
        vm.host.take_properties(),
        ["keygate=user=7 key=1 server=alpha deny=-"]
    );
    // A denial names its reason and the key it was about, never the secret.
    assert_eq!(
        vm.send("/mcp-connect/beta/mcp", &[("authorization", &bearer)]),
        Verdict::Stop
    );
    assert_eq!(
        vm.host.take_properties(),
        ["keygate=user=- key=1 server=- deny=out_of_scope"]
    );
    assert_eq!(vm.send("/mcp-connect/alpha/mcp", &[]), Verdict::Stop);
    assert_eq!(
        vm.host.take_properties(),
        ["keygate=user=- key=- server=- deny=missing_key"]
    );
    vm.host.edits.borrow_mut().clear();
    assert_eq!(
        vm.send(
            "/mcp-connect/alpha/mcp",
            &[("authorization", &bearer), ("x-keygate-user-id", "1")],
        ),
        Verdict::Continue
    );
    vm.host.take_properties();
    let edits = vm.host.edits.borrow().clone();
    assert!(edits.contains(&Edit::Remove("x-keygate-user-id".into())));
    assert!(edits.contains(&Edit::Remove("authorization".into())));
    assert!(edits.contains(&Edit::Add("x-keygate-user-id".into(), "7".into())));
    assert!(edits.contains(&Edit::Add("x-keygate-server".into(), "alpha".into())));
    // A request that needs no key passes with the scrub only.
    vm.host.edits.borrow_mut().clear();
    assert_eq!(
        vm.send("/other", &[("x-keygate-key-id", "9")]),
        Verdict::Continue
    );
    assert_eq!(
        *vm.host.edits.borrow(),
        vec![Edit::Remove("x-keygate-key-id".into())]
    );
    assert!(vm.host.take_properties().is_empty(), "a pass sets nothing");
    // On a later tick the use goes to the control plane, and the counts to
    // the host.
    vm.host.advance(1_000);
    vm.tick();
    let usage = vm
        .host
        .sent
        .borrow()
        .iter()
        .find(|(_, _, r)| r.header(":path") == Some("/internal/v1/usage"))
        .map(|(_, cluster, r)| (cluster.clone(), r.body.clone()))
        .expect("no usage post");
    assert_eq!(usage.0, "cp");
    assert!(
        String::from_utf8(usage.1.unwrap())
            .unwrap()
            .contains(r#""keyId":1"#)
    );
    assert_eq!(vm.host.counter(Metric::Decisions(Reason::Allowed)), 2);
    assert_eq!(vm.host.counter(Metric::Decisions(Reason::NoKeyPassed)), 1);
    vm.host.assert_no_secrets(&[&k, TOKEN]);
}

#[test]
fn an_applied_answer_updates_gauges_logs_and_polls_again_at_once() {
    let mut vm = Vm::new();
    let (token, _) = vm.first_poll();
    let sent = vm.host.sent.borrow().len();
    vm.answer(token, Some(200), Some(&snapshot(3, &[1, 2])));
    assert_eq!(vm.host.counter(Metric::FeedUpdates), 1);
    assert_eq!(vm.host.gauges.borrow()[&Metric::TableVersion], 3);
    assert_eq!(vm.host.gauges.borrow()[&Metric::TableKeys], 2);
    assert!(vm.host.logged(
        LogLevel::Info,
        "key table at version 3 (2 keys, 2 writes, snapshot)"
    ));
    // The long poll from the new version went out without waiting a tick.
    assert_eq!(vm.host.sent.borrow().len(), sent + 1);
    let (_, next) = vm.host.last_sent();
    assert!(
        next.header(":path").unwrap().contains("since=3"),
        "{next:?}"
    );
    // This VM's requests see what it wrote at once.
    assert_eq!(
        vm.send("/mcp-connect/alpha/mcp", &[("x-api-key", &key(2))]),
        Verdict::Continue
    );
    // A delta says so too.
    let (token, _) = vm.host.last_sent();
    let delta = KeyTable {
        full: false,
        removals: vec![2],
        ..snapshot(4, &[])
    };
    vm.answer(token, Some(200), Some(&delta));
    assert!(vm.host.logged(
        LogLevel::Info,
        "key table at version 4 (1 keys, 1 writes, delta)"
    ));
}

#[test]
fn a_failed_poll_is_counted_and_logged_without_the_token() {
    let mut vm = Vm::new();
    let (token, poll) = vm.first_poll();
    assert_eq!(
        poll.authorization.expose_secret(),
        format!("Bearer {TOKEN}")
    );
    vm.answer(token, None, None);
    assert_eq!(vm.host.counter(Metric::FeedFailures), 1);
    assert!(
        vm.host
            .logged(LogLevel::Warn, "key-table poll failed (status none)")
    );
    // A 5xx names its status.
    vm.host.advance(1_000);
    vm.tick();
    let (token, _) = vm.host.last_sent();
    vm.answer(token, Some(503), Some(&snapshot(1, &[])));
    assert_eq!(vm.host.counter(Metric::FeedFailures), 2);
    assert!(vm.host.logged(LogLevel::Warn, "(status 503)"));
    assert_eq!(vm.host.counter(Metric::FeedUpdates), 0);
    vm.host.assert_no_secrets(&[TOKEN]);
}

#[test]
fn a_refused_dispatch_is_counted_and_names_the_cluster() {
    let mut vm = Vm::new();
    vm.host.refuse_dispatch.set(true);
    vm.tick();
    vm.tick();
    assert_eq!(vm.host.counter(Metric::FeedFailures), 1);
    assert!(vm.host.logged(
        LogLevel::Warn,
        r#"cannot call cluster "cp" for the key table: BadArgument"#
    ));
    assert!(vm.host.logged(LogLevel::Info, "took the key-table lease"));
    vm.host.assert_no_secrets(&[TOKEN]);
}

#[test]
fn a_failed_usage_post_is_counted_and_retried() {
    let mut vm = Vm::new();
    let (token, _) = vm.first_poll();
    vm.answer(token, Some(200), Some(&snapshot(3, &[1])));
    vm.send("/mcp-connect/alpha/mcp", &[("x-api-key", &key(1))]);
    vm.host.advance(1_000);
    vm.tick();
    let (usage, req) = vm.host.last_sent();
    assert_eq!(req.header(":path"), Some("/internal/v1/usage"));
    vm.answer(usage, Some(500), None);
    assert_eq!(vm.host.counter(Metric::UsageFlushFailures), 1);
    vm.host.advance(1_000);
    vm.tick();
    let (_, again) = vm.host.last_sent();
    assert_eq!(again.header(":path"), Some("/internal/v1/usage"));
}

#[test]
fn a_rotated_key_s_old_secret_works_until_its_deadline_and_its_use_is_reported() {
    let mut vm = Vm::new();
    let (token, _) = vm.first_poll();
    let now_s = 1_000;
    let mut table = snapshot(3, &[1]);
    table.upserts[0].previous_secret = Some(keygate_protocol::PreviousSecret {
        hash: Secret::from_bytes([9; 32]).hash(),
        expires_at: now_s + 10,
    });
    vm.answer(token, Some(200), Some(&table));
    let old = ApiKeyToken {
        user_id: 7,
        key_id: 1,
        secret: Secret::from_bytes([9; 32]),
    }
    .encode();
    // Through shared data (the slot layout) and back: both secrets open it.
    assert_eq!(
        vm.send("/mcp-connect/alpha/mcp", &[("x-api-key", &old)]),
        Verdict::Continue
    );
    assert_eq!(
        vm.send("/mcp-connect/alpha/mcp", &[("x-api-key", &key(1))]),
        Verdict::Continue
    );
    vm.host.advance(1_000);
    vm.tick();
    let (usage, req) = vm.host.last_sent();
    assert_eq!(req.header(":path"), Some("/internal/v1/usage"));
    let body: serde_json::Value = serde_json::from_slice(req.body.as_ref().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"items": [{"keyId": 1, "lastUsedAt": now_s, "previousSecretUsedAt": now_s}]})
    );
    // A control plane that refuses the field gets the older shape next time.
    vm.answer(usage, Some(422), None);
    vm.host.advance(1_000);
    vm.tick();
    let (_, again) = vm.host.last_sent();
    let body: serde_json::Value = serde_json::from_slice(again.body.as_ref().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"items": [{"keyId": 1, "lastUsedAt": now_s}]})
    );
    // At the deadline, by the VM's clock alone, the old secret is refused.
    vm.host.now.set(u64::try_from(now_s + 10).unwrap() * 1000);
    vm.host.take_properties();
    assert_eq!(
        vm.send("/mcp-connect/alpha/mcp", &[("x-api-key", &old)]),
        Verdict::Stop
    );
    assert!(
        vm.host
            .take_properties()
            .contains(&"keygate=user=- key=1 server=- deny=bad_secret".to_owned())
    );
}

#[test]
fn a_bad_configuration_is_refused_with_a_critical_line_without_the_token() {
    let host = FakeHost::default();
    let mut root = Root::new(1, 42);
    assert!(!root.configure(&host, &config(r#","feedWaitSeconds":61"#)));
    assert!(root.shared().is_none());
    assert!(host.logged(LogLevel::Critical, "feedWaitSeconds"));
    host.assert_no_secrets(&[TOKEN]);
    // Unconfigured, ticks and answers do nothing; requests fail closed.
    let store = MemoryStore::default();
    root.on_tick(&host, &store);
    assert!(host.sent.borrow().is_empty());
    assert_eq!(
        on_request_headers(
            &host,
            &store,
            root.shared().as_deref(),
            Some(request("/", &[]))
        ),
        Verdict::Stop
    );
    assert_eq!(host.last_reply().status, 503);
}

#[test]
fn on_done_releases_the_lease_and_flushes_the_counts() {
    let mut vm = Vm::new();
    vm.first_poll();
    vm.send("/mcp-connect/alpha/mcp", &[]);
    vm.root.on_done(&vm.host, &vm.store);
    assert_eq!(vm.host.counter(Metric::Decisions(Reason::MissingKey)), 1);
    // Another VM takes the lease on its next tick, long before it expires.
    let mut other = Syncer::new(43);
    let cfg = Config::from_json(&config("")).unwrap();
    let tick = other.tick(&cfg, &vm.store, vm.host.now_ms() + 1);
    assert_eq!(tick.lease_changed, Some(true));
    assert!(tick.poll.is_some());
}
