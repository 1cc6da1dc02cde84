//! The one error type every handler returns, and how it maps to a response:
//! a status code and a JSON body `{"error": "<stable message>"}`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_protocol::{FeedQueryError, bearer};

/// Messages are stable: clients and tests may match on them.
pub const MSG_AUTH_REQUIRED: &str = "authentication required";
pub const MSG_INVALID_TOKEN: &str = "invalid or expired credentials";
pub const MSG_KEY_NOT_ALLOWED: &str = "API keys can only be used for MCP servers and /api/me";
pub const MSG_ADMIN_REQUIRED: &str = "admin role required";
/// A cookie-authenticated write that did not come from the console's origin.
pub const MSG_CROSS_SITE: &str = "cross-site request refused";
pub const MSG_SUSPENDED: &str = "user is suspended";

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// No credential at all (`WWW-Authenticate: Bearer`).
    AuthRequired,
    /// A credential that does not authenticate (`error="invalid_token"`).
    InvalidToken,
    /// A 401 with its own message (a refused sign-in), without a bearer challenge.
    Unauthorized(&'static str),
    Forbidden(&'static str),
    NotFound(&'static str),
    Conflict(&'static str),
    /// A 409 whose message carries a number, such as the configured key limit.
    LimitReached(String),
    Unavailable(&'static str),
    /// A body the JSON extractor refused before reading it as JSON, with
    /// its own status: 413 over the body limit, 415 without a JSON
    /// content type.
    BodyRefused(StatusCode, String),
    /// Details go to the log, never to the client.
    Internal(String),
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::AuthRequired | ApiError::InvalidToken | ApiError::Unauthorized(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::LimitReached(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyRefused(status, _) => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m) | ApiError::LimitReached(m) | ApiError::BodyRefused(_, m) => m,
            ApiError::AuthRequired => MSG_AUTH_REQUIRED,
            ApiError::InvalidToken => MSG_INVALID_TOKEN,
            ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Unavailable(m) => m,
            ApiError::Internal(_) => "internal error",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Internal(detail) => write!(f, "internal error: {detail}"),
            other => f.write_str(other.message()),
        }
    }
}

impl std::error::Error for ApiError {}

pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let mut resp = json_error(self.status(), self.message());
        let challenge = match self {
            ApiError::AuthRequired => Some(bearer::CHALLENGE),
            ApiError::InvalidToken => Some(bearer::CHALLENGE_INVALID_TOKEN),
            _ => None,
        };
        if let Some(c) = challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let message = format!("invalid JSON body: {}", r.body_text());
        match r.status() {
            s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => {
                ApiError::BodyRefused(s, message)
            }
            // Syntax and shape errors alike (axum says 422 for the latter).
            _ => ApiError::BadRequest(message),
        }
    }
}

impl From<FeedQueryError> for ApiError {
    fn from(e: FeedQueryError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query: {}", r.body_text()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
