//! The client's address, as an audit event records it: the socket peer, or,
//! behind `--trusted-proxy-hops` N proxies, the address the outermost of
//! them saw.
//!
//! Each proxy appends the address of its own peer to `X-Forwarded-For`, so
//! with N trusted proxies in front, the N-th address from the right is the
//! one the outermost trusted proxy saw (the demo's Envoy, with
//! `use_remote_address`, appends its peer: N = 1). Everything left of it was
//! written by the client and proves nothing. With the default 0 the header
//! is not read at all: a client reaching the control plane directly could
//! write any address there, and the socket peer is the one address it cannot
//! choose. A header with fewer than N addresses, or one that is not an
//! address, did not come through the proxies as configured, and the socket
//! peer is recorded instead.

use crate::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// The client's address; `None` when there is no socket peer to read (a
/// router driven without the listener, in unit tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// Reads the peer the listener stored ([`crate::serve`]) and the
    /// `X-Forwarded-For` of `parts`, trusting `hops` proxies.
    pub fn of(parts: &Parts, hops: u32) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip());
        Self(resolve(peer, &parts.headers, hops))
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        Ok(Self::of(parts, state.trusted_proxy_hops))
    }
}

/// The address to record: the `hops`-th `X-Forwarded-For` address from the
/// right, or `peer` (with `hops` 0, too few addresses, or one unreadable).
pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, hops: u32) -> Option<IpAddr> {
    let Some(back) = usize::try_from(hops).ok().filter(|h| *h > 0) else {
        return peer.map(canonical);
    };
    // Several header lines are one list, in order (RFC 9110 5.3).
    let mut entries = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer.map(canonical);
        };
        entries.extend(text.split(',').map(str::trim));
    }
    let chosen = entries
        .len()
        .checked_sub(back)
        .and_then(|i| entries.get(i))
        .and_then(|e| parse_entry(e));
    chosen.or(peer).map(canonical)
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:5`, `[::1]:5`), as some proxies write it.
fn parse_entry(e: &str) -> Option<IpAddr> {
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// An IPv4 address seen through an IPv6 socket reads as IPv4.
fn canonical(a: IpAddr) -> IpAddr {
    a.to_canonical()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn zero_hops_ignores_the_header() {
        let peer = ip("10.0.0.9");
        assert_eq!(resolve(peer, &headers(&["6.6.6.6"]), 0), peer);
        assert_eq!(resolve(None, &headers(&["6.6.6.6"]), 0), None);
    }

    #[test]
    fn hops_count_from_the_right() {
        let peer = ip("10.0.0.9");
        let h = headers(&["6.6.6.6, 1.2.3.4", "192.168.1.1"]);
        assert_eq!(resolve(peer, &h, 1), ip("192.168.1.1"));
        assert_eq!(resolve(peer, &h, 2), ip("1.2.3.4"));
        assert_eq!(resolve(peer, &h, 3), ip("6.6.6.6"));
        // Fewer entries than trusted proxies: not through them; the peer.
        assert_eq!(resolve(peer, &h, 4), peer);
        assert_eq!(resolve(peer, &HeaderMap::new(), 1), peer);
    }

    #[test]
    fn odd_entries_fall_back_to_the_peer() {
        let peer = ip("10.0.0.9");
        assert_eq!(resolve(peer, &headers(&["unknown"]), 1), peer);
        assert_eq!(resolve(peer, &headers(&["1.2.3.4, "]), 1), peer);
        assert_eq!(resolve(peer, &headers(&["1.2.3.4:80"]), 1), ip("1.2.3.4"));
        assert_eq!(
            resolve(peer, &headers(&["[2001:db8::1]:80"]), 1),
            ip("2001:db8::1")
        );
        assert_eq!(
            resolve(peer, &headers(&["::ffff:1.2.3.4"]), 1),
            ip("1.2.3.4")
        );
    }
}
