//! Prometheus metrics: requests by route template and status, keys created
//! and deleted, and long-poll feed clients currently waiting. Labels never
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
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keygate");
        let requests = Family::<RequestLabels, Counter>::default();
        let keys_created = Counter::default();
        let keys_deleted = Counter::default();
        let feed_clients = Gauge::default();
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
        Self {
            registry,
            requests,
            keys_created,
            keys_deleted,
            feed_clients,
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
