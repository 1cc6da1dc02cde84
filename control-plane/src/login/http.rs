//! The HTTP client the OpenID relying party ([`crate::login`]) talks to the
//! provider with: the project's reqwest (rustls with ring), no redirects
//! followed (the library's advice against SSRF), a timeout, and a cap on
//! answer sizes, so a misbehaving provider cannot make a replica hang or
//! buffer without bound.

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Discovery documents, key sets and token answers are a few KiB.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug)]
pub struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

pub struct Http(reqwest::Client);

impl Http {
    pub fn new() -> Result<Self, String> {
        // reqwest is built without a bundled crypto provider; use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(Self)
            .map_err(|e| format!("cannot build HTTP client: {e}"))
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        // Errors name the failure, not the URL's query or any body.
        let mut response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError(format!("request failed: {}", e.without_url())))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| HttpError(format!("reading the answer failed: {}", e.without_url())))?
        {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(HttpError("answer larger than 1 MiB".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let mut out = HttpResponse::new(bytes);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
