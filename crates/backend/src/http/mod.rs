//! The backend's HTTP surface. Every failure answers with a JSON body that
//! says what is wrong; nothing a client sends can make a handler panic.

mod customer;
mod demo_site;
mod meta;
pub(crate) mod oauth;
pub(crate) mod profile;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use contract::{ApiErrorCode, paths};

use crate::State;
use crate::error::HttpError;

pub(crate) fn router(state: Arc<State>) -> Router {
    let body_limit = state.config.max_body_bytes;
    let site = match &state.config.demo_site {
        Some(site) => demo_site::routes(site),
        None => Router::new(),
    };
    Router::new()
        .route(paths::CUSTOMER_AUTHENTICATE, post(customer::authenticate))
        .route(paths::CUSTOMER_LOGOUT, post(customer::logout))
        .route(paths::ACCESS_TOKEN, post(oauth::access_token))
        .route(paths::REVOKE, post(oauth::revoke))
        .route(paths::GET_PROFILE, post(profile::get_profile))
        .route(paths::JWKS, get(meta::jwks))
        .route(paths::AUTHORIZATION_SERVER_METADATA, get(meta::metadata))
        .route("/healthz", get(meta::healthz))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi))
        .merge(site)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(serving::log_request))
        .with_state(state)
}

async fn not_found() -> HttpError {
    HttpError::api(StatusCode::NOT_FOUND, ApiErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> HttpError {
    HttpError::api(
        StatusCode::METHOD_NOT_ALLOWED,
        ApiErrorCode::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
}

/// The request body, with a size or read failure turned into a JSON error.
pub(crate) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(BytesRejection::FailedToBufferBody(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(HttpError::api(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ApiErrorCode::PayloadTooLarge,
                    "the request body is too large",
                ))
            }
            Err(BytesRejection::FailedToBufferBody(e)) if serving::is_body_timeout(&e) => Err(HttpError::api(
                StatusCode::REQUEST_TIMEOUT,
                ApiErrorCode::RequestTimeout,
                "the request body did not arrive in time",
            )),
            Err(_) => Err(HttpError::bad_request("the request body could not be read")),
        }
    }
}

/// The peer address, for throttling. Proxies are not trusted: put the
/// backend behind one only with its own rate limits.
pub(crate) struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        Ok(Self(ip))
    }
}

/// Marks an answer that carries a credential as never to be cached
/// (RFC 6749 §5.1: `Cache-Control: no-store`, and `Pragma: no-cache` for
/// HTTP/1.0 caches).
pub(crate) fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
}

/// True when the request's media type (parameters aside) is `expected`.
pub(crate) fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// Parameters of a form body or query string. A repeated parameter is an
/// error (RFC 6749 §3.2); an empty value counts as absent.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(bytes) {
            if value.is_empty() {
                continue;
            }
            if map.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(format!("the parameter {name:?} is repeated"));
            }
        }
        Ok(Self(map))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

pub(crate) use login::cookie;

/// API keys already seen, with what they grant. Entries are re-read after a
/// short while so a key added or removed by the admin command takes effect
/// on a running server; unknown keys are never cached.
#[derive(Default)]
pub(crate) struct ApiKeyCache {
    entries: RwLock<HashMap<[u8; 32], (String, u64)>>,
}

const API_KEY_CACHE_SECS: u64 = 5;
const API_KEY_CACHE_CAPACITY: usize = 10_000;

impl ApiKeyCache {
    /// The APIs `key` grants, or `None` for an unknown key.
    pub(crate) async fn apis(&self, state: &State, key: &str) -> Result<Option<String>, HttpError> {
        let digest = state.secrets.digest(crate::crypto::Purpose::ApiKey, key.as_bytes());
        let now = state.now();
        let cached = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        if let Some((apis, fetched)) = cached
            && now < fetched + API_KEY_CACHE_SECS
        {
            return Ok(Some(apis));
        }
        let apis = state.store.api_key_apis(&digest).await?;
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        match &apis {
            Some(apis) => {
                if entries.len() >= API_KEY_CACHE_CAPACITY {
                    entries.clear();
                }
                entries.insert(digest, (apis.clone(), now));
            }
            None => {
                entries.remove(&digest);
            }
        }
        Ok(apis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_repeats_and_ignore_empty_values() {
        assert!(Params::parse(b"a=1&a=2").is_err());
        let p = Params::parse(b"a=1&b=&c=x%20y+z").unwrap_or_else(|_| Params(HashMap::new()));
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y z"));
    }

    #[test]
    fn content_type_ignores_parameters_and_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
                .parse()
                .unwrap_or_else(|_| header::HeaderValue::from_static("x")),
        );
        assert!(has_content_type(&h, FORM));
        assert!(!has_content_type(&h, "application/json"));
    }
}
