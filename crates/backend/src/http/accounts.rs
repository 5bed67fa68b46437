//! `POST /accounts/{account_id}/transactions`: a page of one of the
//! customer's accounts' transactions, newest first, behind all three
//! credentials. An account that is not the customer's is `404`, exactly
//! like one that does not exist, so account ids cannot be probed.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use contract::{ApiErrorCode, Money, Transaction, TransactionPage};
use serde_json::Value;

use super::credentials::{Need, authorize};
use super::{Body, has_content_type, json_object};
use crate::State;
use crate::calendar::utc_timestamp;
use crate::error::HttpError;
use crate::store::{Position, TransactionRow};

/// The API name an API key must grant.
pub(crate) const API: &str = "gettransactions";
/// The scope the system token must carry.
pub(crate) const SCOPE: &str = "transactions:read";

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
/// Longer cursors are refused unread: this API never gives one out.
const MAX_CURSOR_LEN: usize = 200;

/// The `page` of the optional JSON body `{"page": {"size": n, "cursor": "…"}}`
/// (beside `customer_auth` when the customer's token travels there).
struct PageBody {
    size: Option<Value>,
    cursor: Option<Value>,
}

/// Which page: how many, and after which transaction.
struct PageRequest {
    limit: u32,
    after: Option<Position>,
}

pub(crate) async fn transactions(
    Extract(state): Extract<Arc<State>>,
    account_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, HttpError> {
    let result = page_of(&state, account_id, query.as_deref().unwrap_or(""), &headers, &body).await;
    state.metrics.count_data_request(API, &result);
    result
}

async fn page_of(
    state: &State,
    account_id: Result<Path<String>, PathRejection>,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, HttpError> {
    let caller = authorize(state, headers, body, Need { scope: SCOPE, api: API })
        .await
        .map_err(|(_, e)| e)?;
    let Path(account_id) = account_id.map_err(|_| HttpError::bad_request("the account id is not valid text"))?;
    let page = page_request(query, headers, body)?;
    if !state
        .store
        .customer_has_account(&caller.customer_id, &account_id)
        .await?
    {
        return Err(HttpError::api(
            StatusCode::NOT_FOUND,
            ApiErrorCode::AccountNotFound,
            "the customer has no account with this id",
        ));
    }
    // One more than asked for says whether there is a next page.
    let mut rows = state
        .store
        .transactions(&account_id, page.after.as_ref(), page.limit + 1)
        .await?;
    let next_cursor = if rows.len() > page.limit as usize {
        rows.truncate(page.limit as usize);
        rows.last().map(|last| {
            cursor(&Position {
                booked_at: last.booked_at,
                id: last.id.clone(),
            })
        })
    } else {
        None
    };
    let answer = TransactionPage {
        account_id,
        transactions: rows.into_iter().map(transaction).collect(),
        next_cursor,
    };
    // Personal data: no cache anywhere on the way may keep it.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}

fn transaction(row: TransactionRow) -> Transaction {
    Transaction {
        id: row.id,
        booked_at: utc_timestamp(row.booked_at),
        amount: Money {
            amount: row.amount,
            currency: row.currency,
        },
        description: row.description,
        status: row.status,
        counterparty_iban: row.counterparty_iban,
    }
}

/// `limit` and `cursor` from the query string, else from the body's `page`.
fn page_request(query: &str, headers: &HeaderMap, body: &[u8]) -> Result<PageRequest, HttpError> {
    let params = query_params(query)?;
    let from_body = page_body(headers, body)?;
    let limit = match (
        params.limit.as_deref(),
        from_body.as_ref().and_then(|p| p.size.as_ref()),
    ) {
        (Some(text), _) => text.parse::<u32>().ok(),
        (None, Some(Value::Number(n))) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_LIMIT),
    }
    .filter(|n| (1..=MAX_LIMIT).contains(n))
    .ok_or_else(|| HttpError::bad_request(format!("limit must be an integer from 1 to {MAX_LIMIT}")))?;
    let cursor_text = match (
        params.cursor.as_deref(),
        from_body.as_ref().and_then(|p| p.cursor.as_ref()),
    ) {
        (Some(text), _) => Some(text.to_string()),
        (None, Some(Value::String(text))) => Some(text.clone()),
        (None, Some(Value::Null) | None) => None,
        (None, Some(_)) => return Err(bad_cursor()),
    };
    let after = match cursor_text {
        Some(text) => Some(position(&text).ok_or_else(bad_cursor)?),
        None => None,
    };
    Ok(PageRequest { limit, after })
}

/// `limit` and `cursor` as the query string gives them. Unlike a form, an
/// empty value is a value (and a wrong one), not an absent parameter.
struct QueryParams {
    limit: Option<String>,
    cursor: Option<String>,
}

fn query_params(query: &str) -> Result<QueryParams, HttpError> {
    let mut params = QueryParams {
        limit: None,
        cursor: None,
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "limit" => &mut params.limit,
            "cursor" => &mut params.cursor,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(HttpError::bad_request(format!("the parameter {name:?} is repeated")));
        }
    }
    Ok(params)
}

/// The body's `page`, when a body is sent.
fn page_body(headers: &HeaderMap, body: &[u8]) -> Result<Option<PageBody>, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if !has_content_type(headers, "application/json") {
        return Err(HttpError::api(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiErrorCode::UnsupportedMediaType,
            "a request body must be application/json",
        ));
    }
    let wrong = || {
        HttpError::bad_request("the body is not the expected JSON object: {\"page\": {\"size\": n, \"cursor\": text}}")
    };
    let parsed = json_object(body).ok_or_else(wrong)?;
    let page = match parsed.get("page") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(page)) if page.keys().all(|k| k == "size" || k == "cursor") => page,
        Some(_) => return Err(wrong()),
    };
    Ok(Some(PageBody {
        size: page.get("size").cloned(),
        cursor: page.get("cursor").cloned(),
    }))
}

fn bad_cursor() -> HttpError {
    HttpError::bad_request("cursor is not one this API gave out: pass next_cursor from the previous page as it is")
}

/// A cursor is opaque to callers: base64url of `booked_at:id`.
fn cursor(position: &Position) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", position.booked_at, position.id))
}

fn position(cursor: &str) -> Option<Position> {
    if cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (booked_at, id) = text.split_once(':')?;
    Some(Position {
        booked_at: booked_at.parse().ok()?,
        id: id.to_string(),
    })
    .filter(|p| !p.id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_what_they_say_and_nothing_else() {
        let p = Position {
            booked_at: 1_796_117_700,
            id: "txn-1001-007".into(),
        };
        assert_eq!(position(&cursor(&p)), Some(p));
        for bad in [
            "",
            "x",
            "!!!",
            &URL_SAFE_NO_PAD.encode("12"),
            &URL_SAFE_NO_PAD.encode("a:b"),
            &"A".repeat(300),
        ] {
            assert_eq!(position(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_query_wins_over_the_body_and_limits_are_checked() {
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        let body = br#"{"page": {"size": 7}}"#;
        let limit = |q: &str, b: &[u8]| page_request(q, &json, b).ok().map(|p| p.limit);
        assert_eq!(limit("", b""), Some(DEFAULT_LIMIT));
        assert_eq!(limit("", body), Some(7));
        assert_eq!(limit("limit=3", body), Some(3));
        for bad in [
            "limit=0",
            "limit=101",
            "limit=x",
            "limit=1&limit=2",
            "limit=-1",
            "limit=",
            "cursor=",
        ] {
            assert!(limit(bad, b"").is_none(), "{bad}");
        }
        assert!(limit("", br#"{"page": {"size": "7"}}"#).is_none());
        assert!(limit("", br#"{"page": {"size": 7, "other": 1}}"#).is_none());
        assert!(limit("", br#"{"page": [7]}"#).is_none());
        assert!(limit("", br#"[{"size": 7}]"#).is_none());
        assert!(limit("cursor=nope", b"").is_none());
    }
}
