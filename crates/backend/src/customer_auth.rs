//! Establishing *which customer* a data call is for: a customer JWT (verified
//! with the algorithm pinned to its key, `exp`/`nbf`/`iss`/`aud` checked
//! against our clock, critical header extensions refused) or a server-side
//! session cookie.

use std::collections::HashMap;
use std::sync::RwLock;

use aws_lc_rs::digest;
use contract::CustomerClaims;
use jsonwebtoken::Validation;

use crate::State;
use crate::crypto::Purpose;

/// Tokens longer than this are refused unparsed.
const MAX_JWT_LEN: usize = 4096;
/// Bound on remembered verifications; the cache is emptied when it is full.
const VERIFIED_CAPACITY: usize = 50_000;
/// Tolerated clock skew for `iat` and `nbf` in the future.
const IAT_SKEW_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CustomerAuthError {
    Invalid(&'static str),
    Expired,
}

/// A verified customer JWT is immutable, so its verdict can be remembered
/// until it expires: repeat calls skip the signature check (~60 µs for ES256).
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    by_digest: RwLock<HashMap<[u8; 32], (String, u64)>>,
}

impl VerifiedTokens {
    fn get(&self, key: &[u8; 32]) -> Option<(String, u64)> {
        self.by_digest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: [u8; 32], customer_id: String, exp: u64) {
        let mut map = self.by_digest.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VERIFIED_CAPACITY {
            map.clear();
        }
        map.insert(key, (customer_id, exp));
    }

    pub(crate) fn clear(&self) {
        self.by_digest.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The claims a customer JWT carries, and `nbf` when it has one.
#[derive(serde::Deserialize)]
struct Verified {
    #[serde(flatten)]
    claims: CustomerClaims,
    nbf: Option<u64>,
}

fn token_key(token: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    key
}

impl State {
    /// The customer id in a valid customer JWT.
    pub(crate) fn verify_customer_jwt(&self, token: &str) -> Result<String, CustomerAuthError> {
        self.verify_customer_jwt_until(token)
            .map(|(customer_id, _)| customer_id)
    }

    /// The customer id in a valid customer JWT, and its `exp`.
    pub(crate) fn verify_customer_jwt_until(&self, token: &str) -> Result<(String, u64), CustomerAuthError> {
        let now = self.now();
        let cache_key = token_key(token);
        if let Some((customer_id, exp)) = self.verified.get(&cache_key) {
            return if exp > now {
                Ok((customer_id, exp))
            } else {
                Err(CustomerAuthError::Expired)
            };
        }
        if token.len() > MAX_JWT_LEN {
            return Err(CustomerAuthError::Invalid("the customer token is too long"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| CustomerAuthError::Invalid("the customer token is not a well-formed JWT"))?;
        // RFC 7515 §4.1.11: extensions listed as critical must be understood,
        // and this verifier understands none.
        if header.crit.is_some() {
            return Err(CustomerAuthError::Invalid(
                "the customer token names critical header extensions",
            ));
        }
        let kid = header
            .kid
            .ok_or(CustomerAuthError::Invalid("the customer token names no signing key"))?;
        let keyring = self.keyring();
        let (alg, key) = keyring.verifier(&kid).ok_or(CustomerAuthError::Invalid(
            "the customer token is signed by an unknown key",
        ))?;
        if header.alg != *alg {
            return Err(CustomerAuthError::Invalid(
                "the customer token uses the wrong algorithm",
            ));
        }
        let mut validation = Validation::new(*alg);
        // Expiry is checked below against the injected clock, after the
        // signature, so a forged token is never reported as merely expired.
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let Verified { claims, nbf } = jsonwebtoken::decode::<Verified>(token, key, &validation)
            .map_err(|_| CustomerAuthError::Invalid("the customer token failed verification"))?
            .claims;
        if claims.iat > now + IAT_SKEW_SECS {
            return Err(CustomerAuthError::Invalid(
                "the customer token was issued in the future",
            ));
        }
        // Checked here against the injected clock, like `exp`; a token not
        // yet valid is not remembered, so it is judged again once it is.
        if nbf.is_some_and(|nbf| nbf > now + IAT_SKEW_SECS) {
            return Err(CustomerAuthError::Invalid("the customer token is not valid yet"));
        }
        self.verified.put(cache_key, claims.sub.clone(), claims.exp);
        if claims.exp <= now {
            return Err(CustomerAuthError::Expired);
        }
        Ok((claims.sub, claims.exp))
    }

    /// The customer id of a live session cookie. A store failure is an
    /// error of ours, never reported as the customer's expired login.
    pub(crate) async fn verify_session(
        &self,
        session: &str,
    ) -> Result<Result<String, CustomerAuthError>, crate::BackendError> {
        if session.len() > 256 {
            return Ok(Err(CustomerAuthError::Invalid("the session cookie is not valid")));
        }
        let digest = self.secrets.digest(Purpose::Session, session.as_bytes());
        Ok(match self.store.session(&digest).await? {
            Some((customer_id, expires_at)) if expires_at > self.now() as i64 => Ok(customer_id),
            Some(_) => Err(CustomerAuthError::Expired),
            None => Err(CustomerAuthError::Invalid("the session is unknown or was logged out")),
        })
    }
}
