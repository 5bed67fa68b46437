//! `POST /cards/{card_id}/block`: a write behind all three credentials
//! that honours `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header):
//! the same key (per API client and customer) with the same request within
//! 24 h answers the first answer again, marked `Idempotent-Replayed: true`,
//! without blocking again; with another request it is `422`.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contract::{ApiErrorCode, BlockedCard};

use super::credentials::{Caller, Need, authorize};
use super::{Body, has_content_type, json_object};
use crate::State;
use crate::calendar::utc_timestamp;
use crate::error::HttpError;
use crate::store::Claim;

/// The API name an API key must grant.
pub(crate) const API: &str = "blockcard";
/// The scope the system token must carry.
pub(crate) const SCOPE: &str = "cards:write";

pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";
/// Keys are the caller's text: bounded, so a row never grows with what was sent.
const MAX_KEY_LEN: usize = 255;
const REASONS: [&str; 3] = ["lost", "stolen", "damaged"];

pub(crate) async fn block(
    Extract(state): Extract<Arc<State>>,
    card_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, HttpError> {
    let result = block_once(&state, card_id, &headers, &body).await;
    state.metrics.count_data_request(API, &result);
    result
}

async fn block_once(
    state: &State,
    card_id: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, HttpError> {
    let caller = authorize(state, headers, body, Need { scope: SCOPE, api: API })
        .await
        .map_err(|(_, e)| e)?;
    let Path(card_id) = card_id.map_err(|_| HttpError::bad_request("the card id is not valid text"))?;
    let key = idempotency_key(headers)?;
    let reason = reason(headers, body)?;
    if state
        .store
        .customer_card(&caller.customer_id, &card_id)
        .await?
        .is_none()
    {
        return Err(card_not_found());
    }
    // What the key stands for: the same card and reason, or another request.
    let request = format!("{card_id}\n{reason}");
    let now = state.now() as i64;
    let store = &state.store;
    match store
        .claim_idempotency_key(&caller.client_id, &caller.customer_id, key, &request, now)
        .await?
    {
        Claim::Seen { request: first, .. } if first != request => Err(HttpError::api(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for another request; use a new key for a new request",
        )),
        Claim::Seen { answer: None, .. } => Err(HttpError::api(
            StatusCode::CONFLICT,
            ApiErrorCode::IdempotencyKeyInUse,
            "the first request with this Idempotency-Key is still being processed; retry shortly",
        )),
        Claim::Seen {
            answer: Some((status, text)),
            ..
        } => {
            let mut response = json_answer(status, text);
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
        Claim::New => match block_now(state, &caller, &card_id, reason, now).await {
            Ok(card) => {
                let text = serde_json::to_string(&card).map_err(|e| crate::BackendError::Internal(e.to_string()))?;
                store
                    .keep_idempotent_answer(&caller.client_id, &caller.customer_id, key, 200, &text)
                    .await?;
                Ok(json_answer(200, text))
            }
            Err(e) => {
                // Not done: the key is free for a retry of the same request.
                store
                    .release_idempotency_key(&caller.client_id, &caller.customer_id, key)
                    .await?;
                Err(e)
            }
        },
    }
}

async fn block_now(
    state: &State,
    caller: &Caller,
    card_id: &str,
    reason: &str,
    now: i64,
) -> Result<BlockedCard, HttpError> {
    state.store.block_card(card_id, reason, now).await?;
    let card = state
        .store
        .customer_card(&caller.customer_id, card_id)
        .await?
        .ok_or_else(card_not_found)?;
    Ok(BlockedCard {
        id: card.id,
        last4: card.last4,
        status: card.status,
        block_reason: card.block_reason.unwrap_or_default(),
        blocked_at: card.blocked_at.map(utc_timestamp).unwrap_or_default(),
        acted_by: caller.actor.clone(),
    })
}

fn json_answer(status: u16, text: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            // Personal data: no cache anywhere on the way may keep it.
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

fn card_not_found() -> HttpError {
    HttpError::api(
        StatusCode::NOT_FOUND,
        ApiErrorCode::CardNotFound,
        "the customer has no card with this id",
    )
}

/// The `Idempotency-Key` header: 1-255 visible ASCII characters (a
/// repeated one is refused before any handler, with the credentials).
fn idempotency_key(headers: &HeaderMap) -> Result<&str, HttpError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Err(HttpError::api(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::IdempotencyKeyRequired,
            "a write needs an Idempotency-Key header: a new unique value (a UUID, say) per request",
        ));
    };
    value
        .to_str()
        .ok()
        .map(|k| k.trim_matches('"'))
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| HttpError::bad_request("the Idempotency-Key is 1-255 visible ASCII characters"))
}

/// The required `reason`, one of [`REASONS`].
fn reason(headers: &HeaderMap, body: &[u8]) -> Result<&'static str, HttpError> {
    let wrong = || {
        HttpError::bad_request(format!(
            "the body must be {{\"reason\": …}} with one of: {}",
            REASONS.join(", ")
        ))
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(wrong());
    }
    if !has_content_type(headers, "application/json") {
        return Err(HttpError::api(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiErrorCode::UnsupportedMediaType,
            "a request body must be application/json",
        ));
    }
    // `{"reason": …}`, beside `customer_auth` when the customer's token travels in the body.
    let parsed = json_object(body).ok_or_else(wrong)?;
    let reason = parsed.get("reason").and_then(|r| r.as_str());
    REASONS
        .into_iter()
        .find(|known| Some(*known) == reason)
        .ok_or_else(wrong)
}
