//! What the filter tells Envoy's own access log about a decision, as filter
//! state (Proxy-Wasm `set_property`): who made the request with which key,
//! for which server, and why a request was refused. Never a header, so no
//! client or upstream sees it, and denials (which have no identity headers)
//! are covered too.
//!
//! One property, `keygate`, holds the whole text the shipped access log
//! writes at the end of a line, `user=… key=… server=… deny=…` (`-` for what
//! a decision does not have). One property rather than one per field because
//! each is a host call of its own (≈ 4,000 instructions, a sixth of the
//! filter's cost over a no-op filter when there were three; see
//! docs/benchmarks.md). Envoy stores a property `P` as the filter-state
//! object `wasm.P`, so a log format reads it as
//! `%FILTER_STATE(wasm.keygate:PLAIN)%`, `-` when the filter let the request
//! pass without deciding anything. Values are plain ASCII without spaces:
//! decimal ids, a server name (`[a-z0-9-]`), a reason label.

use crate::decision::{Decision, IdText};

/// The property's name (filter state `wasm.keygate`).
pub const PROPERTY: &str = "keygate";

/// The longest text [`access_log_text`] writes: two 20-digit ids, a 63-byte
/// server name, the longest reason label and the field names.
const CAPACITY: usize = 160;

/// The access-log text for `decision` (whose ids `ids` spells), or `None` for
/// a request that passes untouched.
pub fn access_log_text(decision: &Decision, ids: IdText<'_>) -> Option<String> {
    let (server, reason) = match decision {
        Decision::Allow(a) => (a.server.as_deref(), None),
        Decision::Deny(d) => (None, Some(d.reason.as_str())),
        Decision::Pass => return None,
    };
    let mut text = String::with_capacity(CAPACITY);
    for (name, value) in [
        ("user=", ids.user_id),
        (" key=", ids.key_id),
        (" server=", server),
        (" deny=", reason),
    ] {
        text.push_str(name);
        text.push_str(value.unwrap_or("-"));
    }
    Some(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decision::{Allow, Reason, unavailable};

    fn text(decision: &Decision) -> Option<String> {
        let (mut user, mut key) = (itoa::Buffer::new(), itoa::Buffer::new());
        access_log_text(decision, decision.id_text(&mut user, &mut key))
    }

    fn allow(server: Option<&str>, reason: Reason) -> Decision {
        Decision::Allow(Allow {
            user_id: 7,
            key_id: 42,
            server: server.map(str::to_owned),
            strip_key: true,
            reason,
            previous_secret: false,
        })
    }

    #[test]
    fn allowed_denied_and_passed() {
        assert_eq!(
            text(&allow(Some("alpha"), Reason::Allowed)).unwrap(),
            "user=7 key=42 server=alpha deny=-"
        );
        assert_eq!(
            text(&allow(None, Reason::MeAllowed)).unwrap(),
            "user=7 key=42 server=- deny=-"
        );
        let mut denied = unavailable();
        assert_eq!(
            text(&Decision::Deny(denied.clone())).unwrap(),
            "user=- key=- server=- deny=no_table"
        );
        denied.key_id = Some(9);
        denied.reason = Reason::Expired;
        assert_eq!(
            text(&Decision::Deny(denied)).unwrap(),
            "user=- key=9 server=- deny=expired"
        );
        assert_eq!(text(&Decision::Pass), None);
        // The name as the docs and the shipped access log spell it.
        assert_eq!(PROPERTY, "keygate");
    }

    #[test]
    fn the_longest_text_fits_without_growing() {
        let name = "a".repeat(keygate_protocol::server_name::MAX_SERVER_NAME_LEN);
        let longest_reason = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .max_by_key(|r| r.len())
            .unwrap();
        let user = u64::MAX.to_string();
        let ids = IdText {
            user_id: Some(&user),
            key_id: Some(&user),
        };
        // An allowed request writes `deny=-`; a denial has no server, so
        // this bounds both.
        let written = access_log_text(&allow(Some(&name), Reason::Allowed), ids).unwrap();
        assert!(
            written.len() - 1 + longest_reason.len() <= CAPACITY,
            "{written}"
        );
    }
}
