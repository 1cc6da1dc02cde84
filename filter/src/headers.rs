//! What the filter does to the request headers once a request is decided:
//! scrub client-sent identity headers (always), strip the key (on allow, if
//! configured) and set the identity for the upstream.

use crate::config::Config;
use crate::decision::{Decision, IdText};
use std::borrow::Cow;

/// One edit of the request headers. Names are lowercase; everything is
/// borrowed from the configuration, the request or the decision, so a
/// request allocates nothing for its edits but the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp<'a> {
    /// Remove every value of the header.
    Remove(Cow<'a, str>),
    /// Add a value. Only ever an identity header: those are reserved, so
    /// any spelling of them the request carried is removed earlier in the
    /// same list, and adding is setting (without the host's search for an
    /// existing value that a replace makes).
    Add(&'a str, &'a str),
}

/// The header edits for a request that goes on; `ids` spells the decision's
/// ids ([`Decision::id_text`]), `header_names` are the request's (lowercase,
/// as [`crate::request_headers::RequestHeaders`] holds them).
pub fn edits<'a, 'n: 'a, N>(
    cfg: &'a Config,
    header_names: impl IntoIterator<Item = &'n N>,
    decision: &'a Decision,
    ids: IdText<'a>,
) -> Vec<HeaderOp<'a>>
where
    N: AsRef<[u8]> + ?Sized + 'n,
{
    let mut ops: Vec<HeaderOp<'a>> = Vec::with_capacity(6);
    let remove = |name: Cow<'a, str>, ops: &mut Vec<HeaderOp<'a>>| {
        let op = HeaderOp::Remove(name);
        if !ops.contains(&op) {
            ops.push(op);
        }
    };
    // Key headers the request carries: only those need a host call to strip
    // (each edit is one, and costs Envoy more than the call itself:
    // docs/benchmarks.md, "Where an allowed request's cost goes").
    let mut carried_keys: Vec<&'a str> = Vec::new();
    for name in header_names {
        let name = name.as_ref();
        if cfg.is_reserved_header(name) {
            // Names were checked as ASCII (and lowercased) when the map was
            // read, so this borrows.
            remove(String::from_utf8_lossy(name), &mut ops);
        }
        if let Some(h) = cfg
            .key_headers
            .iter()
            .find(|h| h.as_bytes().eq_ignore_ascii_case(name))
        {
            carried_keys.push(h);
        }
    }
    if let Decision::Allow(allow) = decision {
        if allow.strip_key {
            for h in carried_keys {
                remove(Cow::Borrowed(h), &mut ops);
            }
        }
        let names = &cfg.identity_headers;
        if let Some(user_id) = ids.user_id {
            ops.push(HeaderOp::Add(&names.user_id, user_id));
        }
        if let Some(key_id) = ids.key_id {
            ops.push(HeaderOp::Add(&names.key_id, key_id));
        }
        if let Some(server) = &allow.server {
            ops.push(HeaderOp::Add(&names.server, server));
        }
    }
    ops
}

/// A header edit as owned text, for tests that build their inputs inline.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit {
    Remove(String),
    Add(String, String),
}

#[cfg(test)]
impl From<&HeaderOp<'_>> for Edit {
    fn from(op: &HeaderOp<'_>) -> Self {
        match op {
            HeaderOp::Remove(name) => Edit::Remove(name.to_string()),
            HeaderOp::Add(name, value) => Edit::Add((*name).to_owned(), (*value).to_owned()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decision::{Allow, Reason};

    fn cfg(extra: &str) -> Config {
        let json = format!(
            r#"{{"controlPlaneCluster":"cp","dataPlaneToken":"t","keyHeaders":["authorization","x-api-key"]{extra}}}"#
        );
        Config::from_json(json.as_bytes()).unwrap()
    }

    /// The edits, names lowercased and ids spelled as the plugin has them
    /// (the request's map lowercases names as it reads them), as owned text.
    fn edits<'a>(
        cfg: &Config,
        names: impl IntoIterator<Item = &'a str>,
        decision: &Decision,
    ) -> Vec<Edit> {
        let names: Vec<String> = names.into_iter().map(str::to_ascii_lowercase).collect();
        let (mut user, mut key) = (itoa::Buffer::new(), itoa::Buffer::new());
        let ids = decision.id_text(&mut user, &mut key);
        super::edits(cfg, &names, decision, ids)
            .iter()
            .map(Edit::from)
            .collect()
    }

    fn allow(server: Option<&str>, strip: bool) -> Decision {
        Decision::Allow(Allow {
            user_id: 10,
            key_id: 3,
            server: server.map(String::from),
            strip_key: strip,
            reason: Reason::Allowed,
            previous_secret: false,
        })
    }

    #[test]
    fn pass_only_scrubs_spoofed_identity() {
        let ops = edits(
            &cfg(""),
            [
                "x-keygate-user-id",
                "X-Keygate-Anything",
                "authorization",
                "x-other",
            ],
            &Decision::Pass,
        );
        assert_eq!(
            ops,
            vec![
                Edit::Remove("x-keygate-user-id".into()),
                Edit::Remove("x-keygate-anything".into())
            ]
        );
    }

    #[test]
    fn underscore_spellings_of_identity_headers_are_removed() {
        let ops = edits(
            &cfg(""),
            [
                "x_keygate_user_id",
                "X_Keygate-Key_Id",
                "x-keygate_server",
                "x_other",
            ],
            &allow(Some("alpha"), false),
        );
        assert_eq!(
            ops,
            vec![
                Edit::Remove("x_keygate_user_id".into()),
                Edit::Remove("x_keygate-key_id".into()),
                Edit::Remove("x-keygate_server".into()),
                Edit::Add("x-keygate-user-id".into(), "10".into()),
                Edit::Add("x-keygate-key-id".into(), "3".into()),
                Edit::Add("x-keygate-server".into(), "alpha".into()),
            ]
        );
    }

    #[test]
    fn allow_strips_key_and_sets_identity() {
        let ops = edits(
            &cfg(""),
            [
                "authorization",
                "x-keygate-server",
                "X-API-Key",
                "x-api-key",
            ],
            &allow(Some("alpha"), true),
        );
        assert_eq!(
            ops,
            vec![
                Edit::Remove("x-keygate-server".into()),
                Edit::Remove("authorization".into()),
                Edit::Remove("x-api-key".into()),
                Edit::Add("x-keygate-user-id".into(), "10".into()),
                Edit::Add("x-keygate-key-id".into(), "3".into()),
                Edit::Add("x-keygate-server".into(), "alpha".into()),
            ]
        );
    }

    #[test]
    fn only_key_headers_the_request_carries_are_stripped() {
        let ops = edits(&cfg(""), ["authorization"], &allow(Some("alpha"), true));
        assert!(ops.contains(&Edit::Remove("authorization".into())));
        assert!(
            !ops.contains(&Edit::Remove("x-api-key".into())),
            "a host call for a header that is not there"
        );
    }

    #[test]
    fn me_keeps_key_and_custom_identity_names_are_scrubbed() {
        let c = cfg(r#","identityHeaders":{"userId":"x-user"}"#);
        let ops = edits(&c, ["x-user", "authorization"], &allow(None, false));
        assert_eq!(
            ops,
            vec![
                Edit::Remove("x-user".into()),
                Edit::Add("x-user".into(), "10".into()),
                Edit::Add("x-keygate-key-id".into(), "3".into()),
            ]
        );
    }
}
