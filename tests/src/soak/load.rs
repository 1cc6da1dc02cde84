//! The load driver: MCP `initialize` POSTs through Envoy with a mix of
//! valid, expired, disabled, deleted, suspended-owner, out-of-scope,
//! wrong-secret, wrong-user, unknown, malformed, conflicting and missing
//! keys, each judged by the oracle.
//!
//! The oracle writes its key strings itself (`ok1-<user>-<key>-<secret>`
//! as docs/security.md describes it), without the protocol crate, so a
//! mistake in the product's token code cannot hide behind the same mistake
//! here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use super::model::{Credential, Key};
use super::rng::Rng;
use crate::edge::Edge;
use crate::unix_now;

/// The mix: (kind, weight).
const MIX: &[(&str, u32)] = &[
    ("valid", 40),
    ("x-api-key", 5),
    ("expired", 7),
    ("disabled", 5),
    ("deleted", 8),
    ("suspended-owner", 3),
    ("wrong-secret", 6),
    ("wrong-user", 4),
    ("unknown-key", 5),
    ("malformed", 8),
    ("conflicting", 2),
    ("missing", 7),
];

/// The parts of an issued key.
struct Parts<'a> {
    user_id: i64,
    key_id: i64,
    secret: &'a str,
}

fn split(token: &str) -> Option<Parts<'_>> {
    let rest = token.strip_prefix("ok1-")?;
    let mut parts = rest.splitn(3, '-');
    let user_id = parts.next()?.parse().ok()?;
    let key_id = parts.next()?.parse().ok()?;
    let secret = parts.next()?;
    Some(Parts {
        user_id,
        key_id,
        secret,
    })
}

fn join(user_id: i64, key_id: i64, secret: &str) -> String {
    format!("ok1-{user_id}-{key_id}-{secret}")
}

/// The secret with its first character changed: still canonical base64url
/// of 32 bytes (the first character carries 6 full bits), but not the secret.
fn other_secret(secret: &str) -> String {
    let mut chars: Vec<char> = secret.chars().collect();
    if let Some(first) = chars.first_mut() {
        *first = if *first == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

/// One request: headers and what they present.
struct Request {
    kind: &'static str,
    headers: Vec<(&'static str, String)>,
    credential: Credential,
    server: String,
    routed: bool,
}

fn pick_key<'a>(
    keys: &'a [(i64, &'a Key)],
    rng: &mut Rng,
    filter: impl Fn(&Key) -> bool,
) -> Option<&'a (i64, &'a Key)> {
    let matching: Vec<&(i64, &Key)> = keys.iter().filter(|(_, k)| filter(k)).collect();
    if matching.is_empty() {
        None
    } else {
        Some(matching[rng.below(matching.len())])
    }
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// Builds the next request from the oracle's model.
fn build(shared: &Shared, rng: &mut Rng) -> Request {
    let oracle = shared.oracle.lock().unwrap_or_else(|e| e.into_inner());
    let model = &oracle.model;
    let now = unix_now();
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(total as usize) as u32;
    let mut kind = MIX[0].0;
    for (k, w) in MIX {
        if roll < *w {
            kind = k;
            break;
        }
        roll -= w;
    }
    let keys: Vec<(i64, &Key)> = model
        .keys
        .iter()
        .filter(|(_, k)| k.token.is_some())
        .map(|(id, k)| (*id, k))
        .collect();
    let active = |k: &Key| {
        !k.revoked
            && !k.disabled
            && k.expires_at.is_none_or(|at| at > now)
            && model.users.get(&k.user_id).is_some_and(|u| !u.suspended)
    };
    let chosen = match kind {
        "valid" | "x-api-key" | "wrong-secret" | "wrong-user" | "unknown-key" | "malformed"
        | "conflicting" => pick_key(&keys, rng, active),
        "expired" => pick_key(&keys, rng, |k| {
            !k.revoked && k.expires_at.is_some_and(|at| at <= now)
        }),
        "disabled" => pick_key(&keys, rng, |k| !k.revoked && k.disabled),
        "deleted" => pick_key(&keys, rng, |k| k.revoked),
        "suspended-owner" => pick_key(&keys, rng, |k| {
            !k.revoked && model.users.get(&k.user_id).is_some_and(|u| u.suspended)
        }),
        _ => None,
    };
    // A valid key mostly asks for a server it should reach, so allows are
    // common; otherwise any name (registered or not, routed or not).
    let all_names: Vec<&String> = shared.routed.iter().chain(&shared.unrouted).collect();
    let mut server = all_names[rng.below(all_names.len())].clone();
    if let Some((_, key)) = chosen
        && rng.below(100) < 65
    {
        let effective: Vec<String> = model.effective(key).into_iter().collect();
        if !effective.is_empty() {
            server = effective[rng.below(effective.len())].clone();
        }
    }
    let routed = shared.routed.contains(&server);
    let parts = chosen.and_then(|(_, k)| k.token.as_deref().and_then(split));
    let (kind, headers, credential) = match (kind, parts) {
        ("missing", _) | (_, None) => {
            if rng.below(2) == 0 {
                ("missing", Vec::new(), Credential::None)
            } else {
                // Another scheme is no key at all.
                let basic = ("authorization", "Basic c29hazpzb2Fr".to_owned());
                ("missing", vec![basic], Credential::None)
            }
        }
        ("malformed", Some(p)) => {
            let token = join(p.user_id, p.key_id, p.secret);
            let header = match rng.below(4) {
                0 => ("authorization", format!("Bearer  {token}")),
                1 => ("authorization", format!("Token {token}")),
                2 => ("authorization", token.clone()),
                _ => bearer(&token[..token.len() - 3]),
            };
            ("malformed", vec![header], Credential::Malformed)
        }
        ("conflicting", Some(p)) => {
            let token = join(p.user_id, p.key_id, p.secret);
            let other = join(p.user_id, p.key_id, &other_secret(p.secret));
            let headers = vec![bearer(&token), ("x-api-key", other)];
            ("conflicting", headers, Credential::Malformed)
        }
        ("wrong-secret", Some(p)) => {
            let token = join(p.user_id, p.key_id, &other_secret(p.secret));
            let credential = Credential::WellFormed {
                user_id: p.user_id,
                key_id: p.key_id,
                secret_matches: false,
            };
            ("wrong-secret", vec![bearer(&token)], credential)
        }
        ("wrong-user", Some(p)) => {
            let user_id = p.user_id + 1_000_000;
            let credential = Credential::WellFormed {
                user_id,
                key_id: p.key_id,
                secret_matches: true,
            };
            let token = join(user_id, p.key_id, p.secret);
            ("wrong-user", vec![bearer(&token)], credential)
        }
        ("unknown-key", Some(p)) => {
            let key_id = p.key_id + 1_000_000_000;
            let credential = Credential::WellFormed {
                user_id: p.user_id,
                key_id,
                secret_matches: true,
            };
            let token = join(p.user_id, key_id, p.secret);
            ("unknown-key", vec![bearer(&token)], credential)
        }
        (kind, Some(p)) => {
            let token = join(p.user_id, p.key_id, p.secret);
            let header = if kind == "x-api-key" {
                ("x-api-key", token)
            } else {
                bearer(&token)
            };
            let credential = Credential::WellFormed {
                user_id: p.user_id,
                key_id: p.key_id,
                secret_matches: true,
            };
            (kind, vec![header], credential)
        }
    };
    Request {
        kind,
        headers,
        credential,
        server,
        routed,
    }
}

/// One load worker: `interval` between request starts, until told to stop.
pub async fn worker(shared: Arc<Shared>, edge: Edge, seed: u64, interval: Duration) {
    let mut rng = Rng::new(seed);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::SeqCst) {
        ticker.tick().await;
        let request = build(&shared, &mut rng);
        let planned = {
            let oracle = shared.oracle.lock().unwrap_or_else(|e| e.into_inner());
            oracle.plan(
                request.kind,
                request.credential.clone(),
                &request.server,
                request.routed,
                unix_now(),
            )
        };
        let mut headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        headers.push(("content-type", "application/json"));
        headers.push(("accept", "application/json, text/event-stream"));
        let path = format!("/mcp-connect/{}/mcp", request.server);
        let body = crate::edge::initialize_request(1).to_string();
        let answer = edge.send("POST", &path, &headers, Some(body)).await;
        let recv = unix_now();
        let status = match &answer {
            Ok(response) => response.status,
            Err(_) => 0,
        };
        shared
            .oracle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .judge(&planned, status, recv);
        // Close the MCP session an allowed initialize opened, so the MCP
        // servers do not collect sessions over a long run.
        if let Ok(response) = answer
            && let Some(session) = response.header("mcp-session-id")
        {
            let mut close = headers.clone();
            close.push(("mcp-session-id", session));
            let _ = edge.send("DELETE", &path, &close, None).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_split_and_joined_back() {
        let token = "ok1-12-345-abc-def_ghi";
        let p = split(token).unwrap();
        assert_eq!((p.user_id, p.key_id, p.secret), (12, 345, "abc-def_ghi"));
        assert_eq!(join(p.user_id, p.key_id, p.secret), token);
        assert!(split("ok1-x-1-s").is_none());
        assert_ne!(other_secret("Abc"), "Abc");
        assert_ne!(other_secret("xbc"), "xbc");
    }
}
