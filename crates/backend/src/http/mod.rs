//! The backend's HTTP surface. Every failure answers with a JSON body that
//! says what is wrong; nothing a client sends can make a handler panic.

pub(crate) mod accounts;
pub(crate) mod cards;
pub(crate) mod client_assertion;
mod credentials;
mod customer;
mod demo_site;
mod meta;
pub(crate) mod oauth;
pub(crate) mod profile;
mod token_exchange;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State as Extract};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use contract::{ApiErrorCode, headers as h, paths};

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
        .route(paths::ACCOUNT_TRANSACTIONS, post(accounts::transactions))
        .route(paths::CARD_BLOCK, post(cards::block))
        .route(paths::JWKS, get(meta::jwks))
        .route(paths::AUTHORIZATION_SERVER_METADATA, get(meta::metadata))
        .route("/healthz", get(meta::healthz))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi))
        .merge(site)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), screen_head))
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

/// Middleware: what the head alone shows is wrong is answered before any
/// of the body is read.
async fn screen_head(Extract(state): Extract<Arc<State>>, request: Request, next: middleware::Next) -> Response {
    match declared_length_fits(request.headers(), state.config.max_body_bytes)
        .and_then(|()| credentials_given_once(request.headers()))
    {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// A declared `Content-Length` above the limit is a 413 at once, not after
/// the body has trickled in. It also answers `Expect: 100-continue` without
/// a `100 Continue`: hyper sends that only when the body is first read.
fn declared_length_fits(headers: &HeaderMap, limit: usize) -> Result<(), HttpError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(payload_too_large());
    }
    Ok(())
}

fn payload_too_large() -> HttpError {
    HttpError::api(
        StatusCode::PAYLOAD_TOO_LARGE,
        ApiErrorCode::PayloadTooLarge,
        "the request body is too large",
    )
}

/// A credential header (or an idempotency key) sent twice is refused:
/// which one counts would depend on who reads it (this server, a proxy
/// before it, a log).
fn credentials_given_once(headers: &HeaderMap) -> Result<(), HttpError> {
    for name in [
        header::AUTHORIZATION.as_str(),
        h::API_KEY,
        h::CUSTOMER_AUTH,
        cards::IDEMPOTENCY_KEY,
    ] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(HttpError::bad_request(format!(
                "the {name} header is repeated; send it once"
            )));
        }
    }
    Ok(())
}

/// The request body, with a size or read failure turned into a JSON error.
pub(crate) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(BytesRejection::FailedToBufferBody(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(payload_too_large())
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

/// Refuses a browser's cross-site request that would sign a visitor in or
/// out (login CSRF). A browser names the page's origin in `Origin`, which
/// must be one of the site's; without it, `Sec-Fetch-Site` must say the
/// same origin (or a URL the user typed). A caller that sends neither is
/// not a browser (the gateway, `check`, curl) and cannot be forged by a page.
pub(crate) fn refuse_cross_site(state: &State, headers: &HeaderMap) -> Result<(), HttpError> {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let same_site = match (origins.next(), origins.next(), headers.get("sec-fetch-site")) {
        (Some(_), Some(_), _) => false,
        (Some(origin), None, _) => state
            .allowed_origins
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.as_bytes())),
        (None, _, Some(site)) => site == "same-origin" || site == "none",
        (None, _, None) => true,
    };
    if same_site {
        return Ok(());
    }
    Err(HttpError::api(
        StatusCode::FORBIDDEN,
        ApiErrorCode::CrossSiteRequest,
        "a page of another site may not sign in or out here; its origin is not one of site_origins",
    ))
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

/// A JSON body that must be an object: serde would also read a struct
/// from an array of its fields, which no caller means.
pub(crate) fn json_object(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(members)) => Some(members),
        _ => None,
    }
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
