//! What the filter tells Envoy's own access log about a decision, as filter
//! state (Proxy-Wasm `set_property`): who made the request with which key,
//! and why a request was refused. Never a header, so no client or upstream
//! sees it, and denials (which have no identity headers) are covered too.
//!
//! Envoy stores a property `P` as the filter-state object `wasm.P`, so an
//! access-log format reads these as `%FILTER_STATE(wasm.keygate.key_id:PLAIN)%`
//! (`-` when the request did not set it). Values are plain ASCII: decimal
//! ids, a server name, a reason label.
//!
//! | property | set on | value |
//! | --- | --- | --- |
//! | `keygate.user_id` | allowed requests with a key | the key owner's user id |
//! | `keygate.key_id` | allowed requests, denials of a well-formed key | the key id |
//! | `keygate.server` | allowed MCP requests | the MCP server name |
//! | `keygate.reason` | denials | the deny reason, as in the metrics |
//!
//! A request sets two or three properties, each one host call: the access
//! log's whole cost at the edge.

use crate::decision::{Decision, IdText};

pub const USER_ID: &str = "keygate.user_id";
pub const KEY_ID: &str = "keygate.key_id";
pub const SERVER: &str = "keygate.server";
pub const REASON: &str = "keygate.reason";

/// The properties to set for `decision` (whose ids `ids` spells), in a
/// fixed order (none for a request that passes untouched). Borrowed, so a
/// request allocates nothing for its access log.
pub fn properties<'a>(
    decision: &'a Decision,
    ids: IdText<'a>,
) -> impl Iterator<Item = (&'static str, &'a str)> {
    let key = ids.key_id.map(|v| (KEY_ID, v));
    let [first, second, third] = match decision {
        Decision::Allow(a) => [
            ids.user_id.map(|v| (USER_ID, v)),
            key,
            a.server.as_deref().map(|s| (SERVER, s)),
        ],
        Decision::Deny(d) => [Some((REASON, d.reason.as_str())), key, None],
        Decision::Pass => [None, None, None],
    };
    [first, second, third].into_iter().flatten()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decision::{Allow, Reason, unavailable};

    fn properties(decision: &Decision) -> Vec<(&'static str, String)> {
        let (mut user, mut key) = (itoa::Buffer::new(), itoa::Buffer::new());
        super::properties(decision, decision.id_text(&mut user, &mut key))
            .map(|(n, v)| (n, v.to_owned()))
            .collect()
    }

    #[test]
    fn allowed_denied_and_passed() {
        let allow = Decision::Allow(Allow {
            user_id: 7,
            key_id: 42,
            server: Some("alpha".into()),
            strip_key: true,
            reason: Reason::Allowed,
            previous_secret: false,
        });
        assert_eq!(
            properties(&allow),
            vec![
                (USER_ID, "7".to_owned()),
                (KEY_ID, "42".to_owned()),
                (SERVER, "alpha".to_owned())
            ]
        );
        let me = Decision::Allow(Allow {
            server: None,
            reason: Reason::MeAllowed,
            ..match allow {
                Decision::Allow(a) => a,
                _ => unreachable!(),
            }
        });
        assert_eq!(properties(&me).len(), 2);
        let mut denied = unavailable();
        assert_eq!(
            properties(&Decision::Deny(denied.clone())),
            vec![(REASON, "no_table".to_owned())]
        );
        denied.key_id = Some(9);
        denied.reason = Reason::Expired;
        assert_eq!(
            properties(&Decision::Deny(denied)),
            vec![(REASON, "expired".to_owned()), (KEY_ID, "9".to_owned())]
        );
        assert!(properties(&Decision::Pass).is_empty());
        // Names as the docs and the shipped access log spell them.
        assert_eq!(
            [USER_ID, KEY_ID, SERVER, REASON],
            [
                "keygate.user_id",
                "keygate.key_id",
                "keygate.server",
                "keygate.reason"
            ]
        );
    }
}
