//! RFC 8693 token exchange at `POST /access_token`: the platform trades a
//! customer's token for one that acts for that customer, names the acting
//! agent or bot (`act`), and holds only the scope it asked for. The data
//! APIs take such a token in place of the separate customer token.
//!
//! Any authenticated client may exchange: a client that holds a customer's
//! token can already call the APIs for that customer, so the exchanged
//! token gives it nothing more, only less (one scope, a shorter life).

use contract::OAuthErrorCode;
use contract::token_exchange::{ACCESS_TOKEN, ACTOR, JWT};

use super::Params;
use crate::State;
use crate::access_tokens::Delegation;
use crate::config::SessionMode;
use crate::customer_auth::CustomerAuthError;
use crate::error::HttpError;

/// The longest an exchanged token lives: it stands for one agent's work on
/// one conversation, not for a session.
pub(crate) const MAX_EXCHANGED_TTL_SECS: u64 = 300;
/// `agent:` or `bot:` and a name, as the platform sends it.
const MAX_ACTOR_LEN: usize = 160;

/// What the exchange grants: the delegation, and the latest instant (epoch
/// seconds) the exchanged token may live to, the subject token's `exp`.
pub(crate) fn delegation(state: &State, form: &Params) -> Result<(Delegation, u64), HttpError> {
    let invalid_request = |d: &str| HttpError::oauth(OAuthErrorCode::InvalidRequest, d);
    let subject = form
        .get("subject_token")
        .ok_or_else(|| invalid_request("subject_token is required"))?;
    match form.get("subject_token_type") {
        Some(JWT | ACCESS_TOKEN) => {}
        Some(_) => {
            return Err(invalid_request(
                "subject_token_type must be urn:ietf:params:oauth:token-type:jwt (or :access_token): the customer's JWT",
            ));
        }
        None => return Err(invalid_request("subject_token_type is required")),
    }
    if form.get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN) {
        return Err(invalid_request(
            "only an access token (urn:ietf:params:oauth:token-type:access_token) can be requested",
        ));
    }
    let actor = match (form.get("actor_token"), form.get("actor_token_type")) {
        (None, None) => None,
        (Some(actor), Some(ACTOR)) => Some(valid_actor(actor).ok_or_else(|| {
            invalid_request("actor_token must be agent:NAME or bot:NAME, printable, at most 160 characters")
        })?),
        (Some(_), Some(_)) => {
            return Err(invalid_request(
                "actor_token_type must be urn:deskbridge:token-type:actor",
            ));
        }
        _ => return Err(invalid_request("actor_token and actor_token_type go together")),
    };
    // A backend that knows its customers by session takes no JWT as a
    // subject either, unless it takes them on data calls.
    if state.config.session_mode == SessionMode::Cookie && !state.config.cookie_mode_accepts_jwts {
        return Err(invalid_grant(
            "this backend identifies customers by session; a JWT cannot be exchanged",
        ));
    }
    let (customer_id, exp) = state.verify_customer_jwt_until(subject).map_err(|e| match e {
        CustomerAuthError::Expired => invalid_grant("the subject token has expired"),
        CustomerAuthError::Invalid(_) => invalid_grant("the subject token is not a valid customer token"),
    })?;
    Ok((
        Delegation {
            customer_id,
            actor: actor.map(str::to_string),
        },
        exp,
    ))
}

fn invalid_grant(description: &str) -> HttpError {
    HttpError::oauth(OAuthErrorCode::InvalidGrant, description)
}

fn valid_actor(actor: &str) -> Option<&str> {
    let (kind, name) = actor.split_once(':')?;
    let printable = name.chars().all(|c| !c.is_control());
    (matches!(kind, "agent" | "bot") && !name.is_empty() && printable && actor.len() <= MAX_ACTOR_LEN).then_some(actor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_agents_or_bots_by_name() {
        assert_eq!(valid_actor("agent:alice"), Some("agent:alice"));
        assert_eq!(valid_actor("bot:triage bot"), Some("bot:triage bot"));
        for bad in [
            "alice",
            "agent:",
            "admin:root",
            "agent:a\nb",
            &format!("agent:{}", "a".repeat(200)),
        ] {
            assert_eq!(valid_actor(bad), None, "{bad:?}");
        }
    }
}
