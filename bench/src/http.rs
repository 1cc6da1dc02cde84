//! A small HTTP/1.1 client over hyper for what the bench asks of Envoy and
//! the edge: probes and paced load (the control plane's API goes through
//! `keygate-test-support`).

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub type Client = HyperClient<HttpConnector, Full<Bytes>>;

/// A pooling keep-alive client with `TCP_NODELAY`, as load generators use.
pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .build(connector)
}

pub struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Builds a request with the given headers and optional body.
pub fn build(
    method: Method,
    url: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
) -> Result<Request<Full<Bytes>>> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    Ok(req.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
}

/// Sends one request and reads the whole body, within `timeout`.
pub async fn send(
    client: &Client,
    method: Method,
    url: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response> {
    let req = build(method.clone(), url, headers, body)?;
    let fut = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(Response {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("{method} {url}: no answer within {timeout:?}"))?
        .with_context(|| format!("{method} {url}"))
}

/// `GET` with a 10 s timeout and no headers.
pub async fn get(client: &Client, url: &str) -> Result<Response> {
    send(client, Method::GET, url, &[], None, Duration::from_secs(10)).await
}

/// `Authorization: Bearer <token>` as a header pair.
pub fn bearer(token: &str) -> (String, String) {
    ("authorization".to_owned(), format!("Bearer {token}"))
}
