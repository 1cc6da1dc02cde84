//! Prometheus metrics: requests by route template and status, keys created
//! and deleted, long-poll feed clients currently waiting, and what the feed
//! costs the database: version reads, answers built and encoded, answers
//! shared, and the bytes its per-version cache holds. Labels never
//! carry ids, keys or tokens: routes are templates such as `/api/api-keys/{id}`,
//! and methods are the standard ones or `other`, so no client can grow the label set.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub keys_created: Counter,
    pub keys_deleted: Counter,
    pub feed_clients: Gauge,
    /// Reads of the feed version (the follower's, and fresh reads).
    pub feed_version_reads: Counter,
    /// Deltas built from the database (once per version and `since`).
    pub feed_delta_builds: Counter,
    /// Snapshot pages built from the database (once per version and page).
    pub feed_snapshot_builds: Counter,
    /// Feed answers encoded as JSON.
    pub feed_encodes: Counter,
    /// Feed answers served from one already built for another request.
    pub feed_shared_answers: Counter,
    /// Encoded bytes the current version's answer cache holds.
    pub feed_cache_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keygate");
        let requests = Family::<RequestLabels, Counter>::default();
        let keys_created = Counter::default();
        let keys_deleted = Counter::default();
        let feed_clients = Gauge::default();
        let feed_version_reads = Counter::default();
        let feed_delta_builds = Counter::default();
        let feed_snapshot_builds = Counter::default();
        let feed_encodes = Counter::default();
        let feed_shared_answers = Counter::default();
        let feed_cache_bytes = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        registry.register("api_keys_created", "API keys created", keys_created.clone());
        registry.register("api_keys_deleted", "API keys deleted", keys_deleted.clone());
        registry.register(
            "feed_clients",
            "Key-table long polls currently waiting",
            feed_clients.clone(),
        );
        registry.register(
            "feed_version_reads",
            "Reads of the key-table version from the database",
            feed_version_reads.clone(),
        );
        registry.register(
            "feed_delta_builds",
            "Key-table deltas built from the database",
            feed_delta_builds.clone(),
        );
        registry.register(
            "feed_snapshot_builds",
            "Key-table snapshot pages built from the database",
            feed_snapshot_builds.clone(),
        );
        registry.register(
            "feed_encodes",
            "Key-table answers encoded as JSON",
            feed_encodes.clone(),
        );
        registry.register(
            "feed_shared_answers",
            "Key-table answers served from one already built",
            feed_shared_answers.clone(),
        );
        registry.register(
            "feed_cache_bytes",
            "Encoded key-table answers held for the current version, in bytes",
            feed_cache_bytes.clone(),
        );
        Self {
            registry,
            requests,
            keys_created,
            keys_deleted,
            feed_clients,
            feed_version_reads,
            feed_delta_builds,
            feed_snapshot_builds,
            feed_encodes,
            feed_shared_answers,
            feed_cache_bytes,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts every request under its route template (`unmatched` for 404s, so
/// arbitrary paths cannot blow up label cardinality).
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method()).to_owned();
    let resp = next.run(req).await;
    // Method, route template and status only: never headers, paths or bodies.
    tracing::debug!(%method, %route, status = resp.status().as_u16(), "request");
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// The label for a method: the standard ones as sent, anything else `other`
/// (hyper accepts any token as a method; 300 invented ones once grew
/// `/metrics` to megabytes).
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Keeps `feed_clients` right even when a waiting request is cancelled.
pub struct FeedClientGuard(Gauge);

impl FeedClientGuard {
    pub fn new(g: &Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for FeedClientGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::TRACE), "TRACE");
        for m in ["get", "PROPFIND", "INVENTEDXXXXXXXX"] {
            assert_eq!(
                method_label(&Method::from_bytes(m.as_bytes()).unwrap()),
                "other"
            );
        }
    }
}
