//! Who the customer is: a verified JWT's claim (keys from the company's
//! JWKS, algorithm pinned per key, `exp`/`iss`/`aud` checked), or an opaque
//! identifier from the channel that must not look like PII.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use crate::config::IdentityConfig;

/// A JWKS is refetched for an unknown `kid` at most this often, so garbage
/// tokens cannot make us hammer the company.
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(5);
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the customer token is not valid: {0}")]
    Invalid(String),
    #[error("the customer token has expired")]
    Expired,
    #[error("the company's signing keys could not be fetched: {0}")]
    KeysUnavailable(String),
}

/// A verified customer token: its identifier and expiry (Unix seconds).
#[derive(Debug, Clone)]
pub struct VerifiedCustomer {
    pub customer_key: String,
    pub expires_at: Option<u64>,
}

pub struct JwtVerifier {
    config: IdentityConfig,
    http: reqwest::Client,
    keys: tokio::sync::RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return alg.to_string().parse().ok();
    }
    // No `alg` in the JWK: the key type decides, never the token's header.
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Some(Algorithm::ES384),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        _ => None,
    }
}

impl JwtVerifier {
    pub fn new(config: IdentityConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            keys: tokio::sync::RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    async fn refresh_keys(&self) -> Result<(), IdentityError> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < JWKS_REFETCH_MIN) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let url = self.config.jwks_url.clone().unwrap_or_default();
        let unavailable = |m: String| IdentityError::KeysUnavailable(m);
        let response = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| unavailable(crate::system_token::describe_transport(&e)))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status().as_u16())));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| unavailable(format!("not a JWKS: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), algorithm_of(jwk)) else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (alg, key));
            }
        }
        *self.keys.write().await = keys;
        Ok(())
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedCustomer, IdentityError> {
        let invalid = |m: &str| IdentityError::Invalid(m.to_string());
        if token.len() > 8192 {
            return Err(invalid("too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        let kid = header.kid.ok_or_else(|| invalid("no kid"))?;
        if !self.keys.read().await.contains_key(&kid) {
            self.refresh_keys().await?;
        }
        let keys = self.keys.read().await;
        let (alg, key) = keys.get(&kid).ok_or_else(|| invalid("signed by an unknown key"))?;
        if header.alg != *alg {
            return Err(invalid("wrong algorithm for its key"));
        }
        let mut validation = Validation::new(*alg);
        validation.leeway = LEEWAY_SECS;
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
        }
        if let Some(aud) = &self.config.audience {
            validation.set_audience(&[aud]);
        }
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                return Err(IdentityError::Expired);
            }
            Err(_) => return Err(invalid("verification failed")),
        };
        let customer_key = claims
            .get(&self.config.claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("the identifier claim is missing"))?
            .to_string();
        Ok(VerifiedCustomer {
            customer_key,
            expires_at: claims.get("exp").and_then(|v| v.as_u64()),
        })
    }
}

/// Why an identifier is not opaque, if it is not: it must carry no PII and
/// be hard to guess.
pub fn opacity_problem(id: &str) -> Option<&'static str> {
    let digits: Vec<u32> = id.chars().filter_map(|c| c.to_digit(10)).collect();
    let only_number_chars = id.chars().all(|c| c.is_ascii_digit() || " -+().".contains(c));
    if id.contains('@') && id.contains('.') {
        return Some("looks like an email address");
    }
    if only_number_chars && (13..=19).contains(&digits.len()) && luhn_valid(&digits) {
        return Some("looks like a payment card number");
    }
    if only_number_chars && digits.len() == 9 {
        return Some("looks like a national identity number");
    }
    if only_number_chars && (7..=15).contains(&digits.len()) {
        return Some("looks like a phone or account number");
    }
    if id.chars().count() < 16 {
        return Some("is shorter than 16 characters");
    }
    if entropy_bits(id) < 64.0 {
        return Some("has too little entropy to be unguessable");
    }
    None
}

fn luhn_valid(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Shannon entropy of the string's own character distribution, times its
/// length: a rough upper bound on how guessable it is.
fn entropy_bits(s: &str) -> f64 {
    let mut counts: HashMap<char, usize> = HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let n = s.chars().count() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_char * n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pii_and_guessable_identifiers_are_not_opaque() {
        for id in [
            "jane.doe@example.com",
            "4111 1111 1111 1111",
            "078-05-1120",
            "+1 (415) 555-0134",
            "customer42",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababababab",
        ] {
            assert!(opacity_problem(id).is_some(), "{id} passed");
        }
        for id in [
            "cus_vW1LRKW_jXx0Aoui9k5uhn3jnQaL17UQW5TNFSBvygA",
            "7f3e9c1a-5b2d-4e8f-9a6c-1d0b3e7f2a95",
        ] {
            assert_eq!(opacity_problem(id), None, "{id}");
        }
    }
}
