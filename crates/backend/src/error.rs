//! Errors: [`BackendError`] for everything outside a request, [`HttpError`]
//! for what a client is told. An `HttpError` never carries a secret; the
//! cause of a 500 goes to the log, not to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contract::{ApiErrorCode, OAuthErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("configuration: {0}")]
    Config(String),
    /// An administrative request that cannot be carried out as given (a
    /// short password, a malformed amount): the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("i/o: {0}")]
    Io(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("{0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Password(#[from] login::PasswordError),
}

/// An error response: status, a JSON body `{"error", "error_description"}`
/// and the headers the relevant RFC asks for.
#[derive(Debug)]
pub(crate) struct HttpError {
    status: StatusCode,
    code: String,
    description: String,
    www_authenticate: Option<String>,
    retry_after: Option<u64>,
}

fn code_name<T: serde::Serialize>(code: T) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "internal".into(),
    }
}

impl HttpError {
    pub(crate) fn api(status: StatusCode, code: ApiErrorCode, description: impl Into<String>) -> Self {
        Self {
            status,
            code: code_name(code),
            description: description.into(),
            www_authenticate: None,
            retry_after: None,
        }
    }

    /// An RFC 6749 §5.2 error; `invalid_client` is a 401, the rest 400.
    pub(crate) fn oauth(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        let status = if code == OAuthErrorCode::InvalidClient {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        Self {
            status,
            code: code_name(code),
            description: description.into(),
            www_authenticate: None,
            retry_after: None,
        }
    }

    pub(crate) fn www_authenticate(mut self, challenge: String) -> Self {
        self.www_authenticate = Some(challenge);
        self
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The `error` code the client is told.
    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    pub(crate) fn bad_request(description: impl Into<String>) -> Self {
        Self::api(StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest, description)
    }

    pub(crate) fn internal() -> Self {
        Self::api(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
            "the server could not complete the request",
        )
    }
}

impl From<BackendError> for HttpError {
    fn from(e: BackendError) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::internal()
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        // RFC 6749 §5.2: the description is ASCII without `"` and `\`; what
        // a caller sent and is quoted back is made to fit, not passed raw.
        let description: String = self
            .description
            .chars()
            .map(|c| match c {
                '"' => '\'',
                '\\' => '/',
                ' '..='~' => c,
                _ => '?',
            })
            .collect();
        let body = serde_json::json!({"error": self.code, "error_description": description});
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = self.www_authenticate.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
