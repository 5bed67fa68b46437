//! Who the customer is: a verified JWT's claim (keys from the company's
//! JWKS, algorithm pinned per key, `exp`/`nbf`/`iss`/`aud` checked), or an opaque
//! identifier from the channel that must not look like PII.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clock::Clock;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use crate::config::IdentityConfig;

/// A JWKS is refetched for an unknown `kid` at most this often, so garbage
/// tokens cannot make us hammer the company; in between, the key set last
/// fetched is the answer, and an unknown `kid` is refused at once.
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(5);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// How far in the future `iat` may be: a company's clock may run ahead of
/// ours by a few minutes; a token issued later than that is forged or
/// mis-made.
const IAT_SKEW_SECS: u64 = 300;

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

/// A verified JWT: its header's `typ` and its claims.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    pub typ: Option<String>,
    pub claims: serde_json::Value,
}

pub struct JwtVerifier {
    config: IdentityConfig,
    http: reqwest::Client,
    /// `exp`, `nbf` and `iat` are judged by it (jsonwebtoken reads the
    /// system clock, so its own time checks are off).
    clock: Arc<dyn Clock>,
    keys: tokio::sync::RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    /// When the JWKS was last fetched, and how that went. Held while
    /// fetching, so one fetch runs at a time.
    last_fetch: tokio::sync::Mutex<Option<(Instant, Result<(), IdentityError>)>>,
    refetch_min: Duration,
}

/// The algorithm a JWK verifies: its `alg`, or else its key type. Never the
/// token's own header (that is the alg-confusion attack).
pub fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
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
    pub fn new(config: IdentityConfig, http: reqwest::Client, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            http,
            clock,
            keys: tokio::sync::RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            refetch_min: JWKS_REFETCH_MIN,
        }
    }

    /// Makes sure the keys are as fresh as the company's JWKS was after
    /// `asked`, the moment a token named `kid`, which was unknown then.
    ///
    /// At most one fetch per `refetch_min`, and one at a time: a fetch that
    /// began after `asked`, or less than `refetch_min` ago, is the answer as
    /// it is (a failed one included, so a JWKS that is down reads as down,
    /// not as a bad token). So a `kid` still unknown right after a fetch is
    /// refused at once instead of holding its request until the next one
    /// may go: made-up kids cost neither fetches nor waiting connections. A
    /// company that rotates its keys within `refetch_min` of a fetch sees
    /// its first new tokens refused for at most that long.
    async fn refresh_keys(&self, kid: &str, asked: Instant) -> Result<(), IdentityError> {
        let mut last = self.last_fetch.lock().await;
        if self.keys.read().await.contains_key(kid) {
            return Ok(());
        }
        if let Some((at, outcome)) = &*last
            && (*at >= asked || at.elapsed() < self.refetch_min)
        {
            return outcome.clone();
        }
        let started = Instant::now();
        let outcome = self.fetch_keys().await;
        *last = Some((started, outcome.clone()));
        outcome
    }

    async fn fetch_keys(&self) -> Result<(), IdentityError> {
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
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(crate::system_token::describe_transport(&e)))?;
        // Where it broke, not serde's message: that can quote the body, and
        // this text reaches the channel (reqwest's own would name the URL).
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| {
            unavailable(format!(
                "not a JWK Set ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
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
        let claims = self.verify_jwt(token).await?.claims;
        let customer_key = claims
            .get(&self.config.claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IdentityError::Invalid("the identifier claim is missing".into()))?
            .to_string();
        Ok(VerifiedCustomer {
            customer_key,
            expires_at: claims.get("exp").and_then(|v| v.as_u64()),
        })
    }

    /// Any JWT of this issuer and audience, verified as a customer token is
    /// (the gateway's agent sign-in by identity provider reads its other
    /// claims): its header's `typ` and its claims.
    pub async fn verify_jwt(&self, token: &str) -> Result<VerifiedJwt, IdentityError> {
        let invalid = |m: &str| IdentityError::Invalid(m.to_string());
        if token.len() > 8192 {
            return Err(invalid("too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        // RFC 7515 §4.1.11: extensions listed as critical must be understood,
        // and this verifier understands none.
        if header.crit.is_some() {
            return Err(invalid("it names critical header extensions"));
        }
        let kid = header.kid.ok_or_else(|| invalid("no kid"))?;
        if !self.keys.read().await.contains_key(&kid) {
            self.refresh_keys(&kid, Instant::now()).await?;
        }
        let keys = self.keys.read().await;
        let (alg, key) = keys.get(&kid).ok_or_else(|| invalid("signed by an unknown key"))?;
        if header.alg != *alg {
            return Err(invalid("wrong algorithm for its key"));
        }
        let mut validation = Validation::new(*alg);
        // Time is judged below, by our clock, with the same leeway.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
        }
        if let Some(aud) = &self.config.audience {
            validation.set_audience(&[aud]);
        }
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
            Ok(data) => data.claims,
            Err(_) => return Err(invalid("verification failed")),
        };
        let now = self.clock.unix_secs();
        // Read as jsonwebtoken reads them: a number (a fraction rounded).
        let exp = numeric_date(claims.get("exp")).ok_or_else(|| invalid("verification failed"))?;
        let nbf = match claims.get("nbf") {
            None => None,
            Some(v) => Some(numeric_date(Some(v)).ok_or_else(|| invalid("verification failed"))?),
        };
        if exp < now.saturating_sub(LEEWAY_SECS) {
            return Err(IdentityError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(invalid("verification failed"));
        }
        // A company's clock may run ahead of ours, but not by a day.
        if claims
            .get("iat")
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|iat| iat > now + IAT_SKEW_SECS)
        {
            return Err(invalid("issued in the future"));
        }
        Ok(VerifiedJwt {
            typ: header.typ,
            claims,
        })
    }
}

/// A JWT NumericDate as jsonwebtoken takes it: whole seconds, or a
/// non-negative fraction rounded.
fn numeric_date(value: Option<&serde_json::Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.round() as u64)
    })
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

/// A company's JWKS endpoint and signing keys, for tests here and in the
/// gateway (feature `testing`).
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::unwrap_used)]
pub mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use jsonwebtoken::EncodingKey;
    use jsonwebtoken::jwk::Jwk;
    use serde_json::json;

    use super::*;
    use crate::config::{IdentityMode, Opacity};

    /// A company's JWKS endpoint whose key set the test changes, counting fetches.
    pub struct Jwks {
        pub url: String,
        pub keys: Arc<Mutex<Vec<Jwk>>>,
        pub fetches: Arc<AtomicUsize>,
    }

    pub async fn jwks_server() -> Jwks {
        let keys = Arc::new(Mutex::new(Vec::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        let app = axum::Router::new()
            .route(
                "/jwks",
                axum::routing::get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let keys = served.lock().unwrap().clone();
                    async move { axum::Json(json!({ "keys": keys })) }
                }),
            )
            .route(
                // JSON, but not a key set: serde's own message would quote it.
                "/not-a-set",
                axum::routing::get(|| async { axum::Json(json!({ "keys": "session-7f3e" })) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Jwks { url, keys, fetches }
    }

    /// A signing key and its public JWK under `kid`.
    pub fn signing_key(kid: &str) -> (EncodingKey, Jwk) {
        let pkcs8 =
            aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .unwrap()
                .to_pkcs8v1()
                .unwrap();
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        (key, jwk)
    }

    /// A verifier of `https://acme.test`'s tokens for `deskbridge` (claim
    /// `sub`), refetching its keys at most every `refetch_min`, by `clock`.
    pub fn verifier_with_clock(jwks_url: &str, refetch_min: Duration, clock: Arc<dyn Clock>) -> JwtVerifier {
        let config = IdentityConfig {
            mode: IdentityMode::Jwt,
            jwks_url: Some(jwks_url.into()),
            issuer: Some("https://acme.test".into()),
            audience: Some("deskbridge".into()),
            claim: "sub".into(),
            opacity: Opacity::default(),
        };
        let mut v = JwtVerifier::new(config, reqwest::Client::new(), clock);
        v.refetch_min = refetch_min;
        v
    }

    pub fn verifier(jwks_url: &str, refetch_min: Duration) -> JwtVerifier {
        verifier_with_clock(jwks_url, refetch_min, Arc::new(clock::SystemClock))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::testing::{jwks_server, signing_key, verifier, verifier_with_clock};
    use super::*;

    fn token(key: &EncodingKey, kid: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn now_secs() -> u64 {
        clock::SystemClock.unix_secs()
    }

    fn claims() -> serde_json::Value {
        json!({"iss": "https://acme.test", "aud": "deskbridge", "sub": "cus_x", "exp": now_secs() + 600})
    }

    /// `exp`, `nbf` and `iat` are judged by the verifier's clock, with the
    /// leeway: a token valid now is expired once that clock has moved on.
    #[tokio::test]
    async fn token_times_are_judged_by_the_injected_clock() {
        let jwks = jwks_server().await;
        let (key, jwk) = signing_key("k");
        jwks.keys.lock().unwrap().push(jwk);
        let start = std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let clock = Arc::new(clock::ManualClock::new(start));
        let v = verifier_with_clock(&jwks.url, Duration::from_secs(5), clock.clone());
        let at = clock.unix_secs();
        let claims = json!({"iss": "https://acme.test", "aud": "deskbridge", "sub": "cus_x",
                            "exp": at + 600, "nbf": at + 60});
        let t = token(&key, "k", claims.clone());
        let r = v.verify(&t).await;
        assert!(
            matches!(&r, Err(IdentityError::Invalid(m)) if m == "verification failed"),
            "nbf: {r:?}"
        );
        clock.advance(Duration::from_secs(31));
        assert_eq!(v.verify(&t).await.unwrap().expires_at, Some(at + 600));
        let mut ahead = claims;
        ahead["iat"] = json!(clock.unix_secs() + IAT_SKEW_SECS + 1);
        let r = v.verify(&token(&key, "k", ahead)).await;
        assert!(
            matches!(&r, Err(IdentityError::Invalid(m)) if m.contains("future")),
            "{r:?}"
        );
        clock.advance(Duration::from_secs(600 - 31 + LEEWAY_SECS));
        assert!(v.verify(&t).await.is_ok(), "within the leeway");
        clock.advance(Duration::from_secs(1));
        assert_eq!(v.verify(&t).await.unwrap_err(), IdentityError::Expired);
    }

    /// Asserts that `token` is refused as signed by an unknown key, without
    /// being held for a fetch.
    async fn refused_at_once(v: &JwtVerifier, token: &str) {
        let started = Instant::now();
        let r = v.verify(token).await;
        assert!(
            matches!(&r, Err(IdentityError::Invalid(m)) if m.contains("unknown key")),
            "{r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "held {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_right_after_a_fetch_is_refused_at_once_and_a_rotation_is_seen_later() {
        let jwks = jwks_server().await;
        let (old, old_jwk) = signing_key("old");
        let (new, new_jwk) = signing_key("new");
        jwks.keys.lock().unwrap().push(old_jwk);
        let refetch_min = Duration::from_secs(2);
        let v = verifier(&jwks.url, refetch_min);
        assert_eq!(
            v.verify(&token(&old, "old", claims())).await.unwrap().customer_key,
            "cus_x"
        );
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

        // Made-up kids right after the fetch: refused at once, no fetch.
        let (forged, _) = signing_key("made-up");
        let made_up: Vec<String> = (0..200).map(|i| token(&forged, &format!("x{i}"), claims())).collect();
        let started = Instant::now();
        let results = futures_util::future::join_all(made_up.iter().map(|t| v.verify(t))).await;
        assert!(results.iter().all(|r| matches!(r, Err(IdentityError::Invalid(_)))));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "held {:?}",
            started.elapsed()
        );
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

        // The company rotates: within the pause its new kid is refused
        // too, and once the pause is over the next token fetches and verifies.
        jwks.keys.lock().unwrap().push(new_jwk);
        refused_at_once(&v, &token(&new, "new", claims())).await;
        tokio::time::sleep(refetch_min).await;
        assert_eq!(
            v.verify(&token(&new, "new", claims())).await.unwrap().customer_key,
            "cus_x"
        );
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);

        // Once the pause is over, many unknown kids at once share one fetch.
        tokio::time::sleep(refetch_min).await;
        let results = futures_util::future::join_all(made_up.iter().take(20).map(|t| v.verify(t))).await;
        assert!(results.iter().all(|r| matches!(r, Err(IdentityError::Invalid(_)))));
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 3);
        refused_at_once(&v, &made_up[0]).await;
    }

    #[tokio::test]
    async fn a_jwks_that_cannot_be_fetched_reads_as_unavailable_every_time() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", closed.local_addr().unwrap());
        drop(closed);
        let v = verifier(&url, Duration::from_secs(5));
        let (key, _) = signing_key("k");
        for _ in 0..2 {
            let r = v.verify(&token(&key, "k", claims())).await;
            assert!(
                matches!(&r, Err(IdentityError::KeysUnavailable(m)) if !m.contains("127.0.0.1")),
                "{r:?}"
            );
        }

        // Not a JWK Set: the reason, without the URL.
        let jwks = jwks_server().await;
        let garbage = verifier(&jwks.url.replace("/jwks", "/not-a-set"), Duration::from_secs(5));
        let r = garbage.verify(&token(&key, "k", claims())).await;
        assert!(
            matches!(&r, Err(IdentityError::KeysUnavailable(m))
                if m.starts_with("not a JWK Set") && !m.contains("127.0.0.1") && !m.contains("session-7f3e")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn not_yet_valid_future_issued_and_critical_tokens_are_refused() {
        let jwks = jwks_server().await;
        let (key, jwk) = signing_key("k");
        jwks.keys.lock().unwrap().push(jwk);
        let v = verifier(&jwks.url, Duration::from_secs(5));
        let mut early = claims();
        early["nbf"] = json!(early["exp"]);
        let r = v.verify(&token(&key, "k", early)).await;
        assert!(matches!(r, Err(IdentityError::Invalid(_))), "{r:?}");

        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k".into());
        header.crit = Some(vec!["exp-ext".into()]);
        let critical = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
        let r = v.verify(&critical).await;
        assert!(matches!(r, Err(IdentityError::Invalid(_))), "{r:?}");

        // Issued a day from now: refused; a minute ahead: fine.
        let mut future = claims();
        future["iat"] = json!(now_secs() + 86_400);
        let r = v.verify(&token(&key, "k", future)).await;
        assert!(
            matches!(&r, Err(IdentityError::Invalid(m)) if m.contains("future")),
            "{r:?}"
        );
        let mut skewed = claims();
        skewed["iat"] = json!(now_secs() + 60);
        assert!(v.verify(&token(&key, "k", skewed)).await.is_ok());
        assert!(v.verify(&token(&key, "k", claims())).await.is_ok());
    }

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
