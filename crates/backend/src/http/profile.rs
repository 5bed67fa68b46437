//! `POST /getprofile`: a customer-data API behind all three credentials
//! ([`super::credentials`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contract::{ApiErrorCode, Profile};

use super::Body;
use super::credentials::{Failure, Need, authorize};
use crate::State;
use crate::error::HttpError;
use crate::metrics::Outcome;

/// The API name an API key must grant.
pub(crate) const API: &str = "getprofile";
/// The scope the system token must carry.
pub(crate) const SCOPE: &str = "profile:read";

pub(crate) async fn get_profile(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, HttpError> {
    let result = authorize_and_load(&state, &headers, &body).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err((code, _)) => code,
    };
    state.metrics.profile_requests.get_or_create(&Outcome { outcome }).inc();
    let profile = result.map_err(|(_, e)| e)?;
    // Personal data: no cache anywhere on the way may keep it.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(profile)).into_response())
}

async fn authorize_and_load(state: &State, headers: &HeaderMap, body: &[u8]) -> Result<Profile, Failure> {
    let caller = authorize(state, headers, body, Need { scope: SCOPE, api: API }).await?;
    match state.store.profile(&caller.customer_id).await {
        Ok(Some(profile)) => Ok(profile),
        Ok(None) => Err(customer_not_found()),
        Err(e) => Err(("internal", e.into())),
    }
}

/// A valid customer token naming a customer who is no longer there.
pub(crate) fn customer_not_found() -> Failure {
    (
        "customer_not_found",
        HttpError::api(
            StatusCode::NOT_FOUND,
            ApiErrorCode::CustomerNotFound,
            "no customer has this identifier",
        ),
    )
}
