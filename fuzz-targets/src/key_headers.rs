//! Target `key_headers`: reading the key from request headers, the bearer
//! rule, and what the filter decides and edits with what it read.
//!
//! Input: header lines split on `\n`; each line's first byte picks a name
//! from [`NAMES`] (key headers, reserved identity headers in two spellings,
//! others), the rest is the raw value.
//!
//! The same bytes are also read as the host's serialized header map
//! (`RequestHeaders::from_serialized`): never a panic, every pair readable.
//!
//! What must hold, checked against a reading of the documented rule written
//! here rather than the filter's own:
//! - `bearer::credential` yields exactly the token after `Bearer ` (any case,
//!   one space), non-empty and without whitespace;
//! - a key is found only if every header that carries one carries that same
//!   exact spelling; two different ones are a conflict; no `ok1-` anywhere
//!   is no key;
//! - a request is allowed only with the one valid key of the table, on the
//!   server of its path, and then the key headers are stripped, client-sent
//!   identity headers removed, and no header is set to anything key-like.

use keygate_filter::config::Config;
use keygate_filter::decision::{Decision, KeyLookup, Request, decide};
use keygate_filter::headers::{HeaderOp, edits};
use keygate_filter::keys::{Presented, find_key};
use keygate_filter::request_headers::RequestHeaders;
use keygate_protocol::{ApiKeyToken, KeyEntry, Secret, ServerScope, bearer};
use std::rc::Rc;

/// Header names the fuzzer picks from (by the first byte of each line).
pub const NAMES: &[&str] = &[
    "authorization",
    "x-api-key",
    "Authorization",
    "X-Api-Key",
    "x-keygate-user-id",
    "x_keygate_server",
    "cookie",
    "proxy-authorization",
];

const KEY_HEADERS: &[&str] = &["authorization", "x-api-key"];
const NOW: i64 = 1_800_000_000;

/// The one key the fake table knows: `ok1-7-42-<32 bytes of 5>`.
pub fn valid_key() -> ApiKeyToken {
    ApiKeyToken {
        user_id: 7,
        key_id: 42,
        secret: Secret::from_bytes([5; 32]),
    }
}

struct OneKeyTable(KeyEntry);

impl KeyLookup for OneKeyTable {
    fn last_sync_unix(&self) -> Option<i64> {
        Some(NOW)
    }
    fn entry(&self, key_id: i64) -> Option<Rc<KeyEntry>> {
        (key_id == self.0.id).then(|| Rc::new(self.0.clone()))
    }
    /// Every name: this target is about where the key is read from.
    fn server_registered(&self, _server: &str) -> bool {
        true
    }
}

fn config() -> Config {
    match Config::from_json(
        br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","keyHeaders":["authorization","x-api-key"]}"#,
    ) {
        Ok(c) => c,
        Err(e) => panic!("the target's own configuration: {e}"),
    }
}

/// The key candidate a header value carries, by the documented rule.
fn candidate<'a>(name: &str, value: &'a [u8]) -> Option<&'a [u8]> {
    let token = if name.eq_ignore_ascii_case("authorization") {
        let scheme = value.get(..6)?;
        if !scheme.eq_ignore_ascii_case(b"Bearer") || value.get(6) != Some(&b' ') {
            return None;
        }
        let token = value.get(7..)?;
        if token.is_empty() || token.iter().any(u8::is_ascii_whitespace) {
            return None;
        }
        token
    } else {
        value
    };
    token.starts_with(b"ok1-").then_some(token)
}

fn check_bearer(value: &[u8]) {
    if let Some(token) = bearer::credential(value) {
        assert!(!token.is_empty(), "empty bearer credential");
        assert!(!token.iter().any(u8::is_ascii_whitespace));
        assert_eq!(value.len(), token.len() + 7);
        assert!(
            value
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"Bearer"))
        );
        assert_eq!(value.get(6), Some(&b' '));
        assert_eq!(value.get(7..), Some(token));
    }
}

pub fn check(data: &[u8]) {
    // The same bytes as a header map the host handed over: read in place,
    // refused when malformed, never a panic; what reads back is what is there.
    if let Some(map) = RequestHeaders::from_serialized(data.to_vec()) {
        assert_eq!(map.iter().count(), map.len(), "a pair lost while reading");
    }
    let headers: Vec<(String, Vec<u8>)> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let (&pick, value) = line.split_first()?;
            let name = NAMES.get(usize::from(pick) % NAMES.len())?;
            Some(((*name).to_owned(), value.to_vec()))
        })
        .collect();
    for (_, value) in &headers {
        check_bearer(value);
    }

    let key_headers: Vec<String> = KEY_HEADERS.iter().map(|s| (*s).to_owned()).collect();
    let presented = find_key(
        headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        &key_headers,
    );
    let carried: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| KEY_HEADERS.iter().any(|k| k.eq_ignore_ascii_case(n)))
        .filter_map(|(n, v)| candidate(n, v))
        .collect();
    let distinct = carried.windows(2).any(|w| w.first() != w.get(1))
        || carried
            .first()
            .is_some_and(|f| carried.iter().any(|c| c != f));
    if distinct {
        assert_eq!(presented, Presented::Conflict, "two keys, no conflict");
    }
    match &presented {
        Presented::Key(t) => {
            let spelled = t.encode();
            assert!(!carried.is_empty(), "a key found where none is carried");
            assert!(
                carried.iter().all(|c| *c == spelled.as_bytes()),
                "a key found that is not what every key header carries"
            );
        }
        Presented::Conflict => assert!(distinct, "a conflict without two different keys"),
        Presented::None | Presented::Malformed => {}
    }
    let mentions_key = headers.iter().any(|(n, v)| {
        KEY_HEADERS.iter().any(|k| k.eq_ignore_ascii_case(n)) && v.windows(4).any(|w| w == b"ok1-")
    });
    if !mentions_key {
        assert_eq!(presented, Presented::None, "a key found where no ok1- is");
    }

    check_decisions(&headers, &presented);
}

fn check_decisions(headers: &[(String, Vec<u8>)], presented: &Presented) {
    let cfg = config();
    let valid = valid_key();
    let table = OneKeyTable(KeyEntry {
        id: valid.key_id,
        user_id: valid.user_id,
        secret_hash: valid.secret.hash(),
        expires_at: None,
        servers: ServerScope::All,
        previous_secret: None,
    });
    // Read as the plugin reads Envoy's map (names lowercased in place).
    let Some(lowered) = RequestHeaders::from_pairs(headers) else {
        panic!("header names from NAMES are ASCII, so the map is well formed");
    };
    for path in ["/mcp-connect/alpha/mcp", "/api/me", "/other"] {
        let request = Request {
            method: "GET",
            path,
            headers: &lowered,
        };
        let decision = decide(&request, &cfg, NOW, &table);
        match &decision {
            Decision::Allow(allow) => {
                assert_eq!(
                    presented,
                    &Presented::Key(valid.clone()),
                    "allowed without the key"
                );
                assert_eq!((allow.user_id, allow.key_id), (7, 42));
                let want_server = (path == "/mcp-connect/alpha/mcp").then(|| "alpha".to_owned());
                assert_eq!(allow.server, want_server, "allowed for the wrong server");
                assert_ne!(path, "/other", "a key allowed off its routes");
            }
            Decision::Pass => {
                assert_ne!(
                    path, "/mcp-connect/alpha/mcp",
                    "a protected path passed unchecked"
                );
                assert!(
                    !presented.is_some(),
                    "a request with a key passed unchecked"
                );
            }
            Decision::Deny(deny) => {
                assert!(matches!(deny.status, 400 | 401 | 403 | 503), "{deny:?}");
                assert!(!deny.body.contains("ok1"));
            }
        }
        let (mut user_id, mut key_id) = (itoa::Buffer::new(), itoa::Buffer::new());
        let ids = decision.id_text(&mut user_id, &mut key_id);
        let ops = edits(&cfg, lowered.iter().map(|(n, _)| n), &decision, ids);
        for (name, _) in lowered.iter() {
            if cfg.is_reserved_header(name) {
                let name = String::from_utf8_lossy(name);
                assert!(
                    ops.contains(&HeaderOp::Remove(name.clone())),
                    "client-sent {name} kept"
                );
            }
        }
        if let Decision::Allow(allow) = &decision
            && allow.strip_key
        {
            // Every key header the request carries is stripped (none other
            // needs a host call).
            for (name, _) in lowered.iter() {
                let name = String::from_utf8_lossy(name);
                if KEY_HEADERS.contains(&&*name) {
                    assert!(ops.contains(&HeaderOp::Remove(name.clone())), "{name} kept");
                }
            }
        }
        for op in &ops {
            if let HeaderOp::Add(_, value) = op {
                assert!(!value.contains("ok1"), "a key-like value set upstream");
            }
        }
    }
}
