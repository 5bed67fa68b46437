//! System access tokens (OAuth 2.0 client credentials).
//!
//! A token is `dbat_` + base64url(payload ‖ HMAC-SHA256(payload)): it verifies
//! with one MAC and no database read, survives restarts (the key derives from
//! the server secret), and is revocable by its `jti` (RFC 7009). A token
//! from a token exchange (RFC 8693) also names its customer and the actor.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::BackendError;
use crate::crypto::{DIGEST_LEN, Purpose, Secrets, random_bytes};

const PREFIX: &str = "dbat_";
/// Longer tokens are refused before any decoding work.
const MAX_TOKEN_LEN: usize = 1024;

/// What a valid access token grants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Grant {
    #[serde(rename = "c")]
    pub client_id: String,
    #[serde(rename = "s")]
    pub scope: String,
    /// Epoch milliseconds, so a revocation and a new token in the same
    /// second are told apart.
    #[serde(rename = "i")]
    pub issued_at_ms: u64,
    #[serde(rename = "e")]
    pub expires_at: u64,
    #[serde(rename = "j")]
    pub jti: String,
    /// Token exchange: the customer the token acts for, and who acts.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Delegation>,
}

/// RFC 8693 §4.1: the token's subject is the customer; `act` names who acts
/// for them (an agent or a bot of the platform), if anyone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Delegation {
    #[serde(rename = "u")]
    pub customer_id: String,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl Grant {
    pub(crate) fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    Malformed,
    Expired,
    Revoked,
}

impl TokenRejection {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "the access token is not valid",
            Self::Expired => "the access token has expired",
            Self::Revoked => "the access token has been revoked",
        }
    }
}

#[derive(Default)]
pub(crate) struct AccessTokens {
    /// Revoked token ids and when they would have expired anyway.
    revoked: RwLock<HashMap<String, u64>>,
    /// Per client: tokens issued before this instant (epoch ms) are revoked.
    not_before_ms: RwLock<HashMap<String, u64>>,
}

impl AccessTokens {
    pub(crate) fn with_revoked(revoked: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            revoked: RwLock::new(revoked.into_iter().collect()),
            not_before_ms: RwLock::default(),
        }
    }

    /// Replaces the per-client revocation instants (loaded from the store).
    pub(crate) fn set_client_revocations(&self, not_before_ms: HashMap<String, u64>) {
        *self.not_before_ms.write().unwrap_or_else(|p| p.into_inner()) = not_before_ms;
    }

    pub(crate) fn issue(
        &self,
        secrets: &Secrets,
        client_id: &str,
        scope: &str,
        now_ms: u64,
        ttl: u64,
        delegation: Option<Delegation>,
    ) -> Result<(String, Grant), BackendError> {
        // Rounded up, so a token lives at least `ttl` seconds, never less.
        let expires_at = (now_ms + ttl * 1000).div_ceil(1000);
        let grant = Grant {
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            issued_at_ms: now_ms,
            expires_at,
            jti: URL_SAFE_NO_PAD.encode(random_bytes::<16>()?),
            delegation,
        };
        let mut bytes = serde_json::to_vec(&grant).map_err(|e| BackendError::Internal(e.to_string()))?;
        let mac = secrets.digest(Purpose::AccessToken, &bytes);
        bytes.extend_from_slice(&mac);
        Ok((format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)), grant))
    }

    /// Checks the MAC first (constant time), then expiry and revocation.
    pub(crate) fn verify(&self, secrets: &Secrets, token: &str, now: u64) -> Result<Grant, TokenRejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenRejection::Malformed);
        }
        let body = token.strip_prefix(PREFIX).ok_or(TokenRejection::Malformed)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenRejection::Malformed)?;
        if bytes.len() <= DIGEST_LEN {
            return Err(TokenRejection::Malformed);
        }
        let (payload, mac) = bytes.split_at(bytes.len() - DIGEST_LEN);
        if !secrets.verify(Purpose::AccessToken, payload, mac) {
            return Err(TokenRejection::Malformed);
        }
        let grant: Grant = serde_json::from_slice(payload).map_err(|_| TokenRejection::Malformed)?;
        if grant.expires_at <= now {
            return Err(TokenRejection::Expired);
        }
        if self
            .revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&grant.jti)
        {
            return Err(TokenRejection::Revoked);
        }
        let client_cutoff = self
            .not_before_ms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&grant.client_id)
            .copied();
        if client_cutoff.is_some_and(|cutoff| grant.issued_at_ms < cutoff) {
            return Err(TokenRejection::Revoked);
        }
        Ok(grant)
    }

    pub(crate) fn revoke(&self, grant: &Grant, now: u64) {
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, expires_at| *expires_at > now);
        revoked.insert(grant.jti.clone(), grant.expires_at);
    }
}
