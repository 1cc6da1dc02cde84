//! What the filter does to the request headers once a request is decided:
//! scrub client-sent identity headers (always), strip the key (on allow, if
//! configured) and set the identity for the upstream.

use crate::config::Config;
use crate::decision::Decision;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    Remove(String),
    Set(String, String),
}

/// The header edits for a request that goes on upstream.
pub fn edits<S: AsRef<str>>(
    cfg: &Config,
    header_names: impl IntoIterator<Item = S>,
    decision: &Decision,
) -> Vec<HeaderOp> {
    let mut ops: Vec<HeaderOp> = Vec::new();
    let remove = |name: &str, ops: &mut Vec<HeaderOp>| {
        let op = HeaderOp::Remove(name.to_ascii_lowercase());
        if !ops.contains(&op) {
            ops.push(op);
        }
    };
    // Key headers the request carries: only those need a host call to strip
    // (each edit is one, and costs Envoy more than the call itself:
    // docs/benchmarks.md, "Where an allowed request's cost goes").
    let mut carried_keys = Vec::new();
    for name in header_names {
        let name = name.as_ref();
        if cfg.is_reserved_header(name) {
            remove(name, &mut ops);
        }
        if let Some(h) = cfg
            .key_headers
            .iter()
            .find(|h| h.eq_ignore_ascii_case(name))
        {
            carried_keys.push(h);
        }
    }
    if let Decision::Allow(allow) = decision {
        if allow.strip_key {
            for h in carried_keys {
                remove(h, &mut ops);
            }
        }
        let ids = &cfg.identity_headers;
        ops.push(HeaderOp::Set(
            ids.user_id.clone(),
            allow.user_id.to_string(),
        ));
        ops.push(HeaderOp::Set(ids.key_id.clone(), allow.key_id.to_string()));
        if let Some(server) = &allow.server {
            ops.push(HeaderOp::Set(ids.server.clone(), server.clone()));
        }
    }
    ops
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
                HeaderOp::Remove("x-keygate-user-id".into()),
                HeaderOp::Remove("x-keygate-anything".into())
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
                HeaderOp::Remove("x_keygate_user_id".into()),
                HeaderOp::Remove("x_keygate-key_id".into()),
                HeaderOp::Remove("x-keygate_server".into()),
                HeaderOp::Set("x-keygate-user-id".into(), "10".into()),
                HeaderOp::Set("x-keygate-key-id".into(), "3".into()),
                HeaderOp::Set("x-keygate-server".into(), "alpha".into()),
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
                HeaderOp::Remove("x-keygate-server".into()),
                HeaderOp::Remove("authorization".into()),
                HeaderOp::Remove("x-api-key".into()),
                HeaderOp::Set("x-keygate-user-id".into(), "10".into()),
                HeaderOp::Set("x-keygate-key-id".into(), "3".into()),
                HeaderOp::Set("x-keygate-server".into(), "alpha".into()),
            ]
        );
    }

    #[test]
    fn only_key_headers_the_request_carries_are_stripped() {
        let ops = edits(&cfg(""), ["authorization"], &allow(Some("alpha"), true));
        assert!(ops.contains(&HeaderOp::Remove("authorization".into())));
        assert!(
            !ops.contains(&HeaderOp::Remove("x-api-key".into())),
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
                HeaderOp::Remove("x-user".into()),
                HeaderOp::Set("x-user".into(), "10".into()),
                HeaderOp::Set("x-keygate-key-id".into(), "3".into()),
            ]
        );
    }
}
