//! Who the customer is: a verified JWT's claim (keys from the company's
//! JWKS, algorithms bounded per key, `exp`/`nbf`/`iss`/`aud` checked), or an opaque
//! identifier from the channel that must not look like PII.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clock::Clock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
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
    /// The JWKS last fetched: each key by `kid`, or why it cannot verify.
    keys: tokio::sync::RwLock<HashMap<String, Result<PublishedKey, String>>>,
    /// When the JWKS was last fetched, and how that went. Held while
    /// fetching, so one fetch runs at a time.
    last_fetch: tokio::sync::Mutex<Option<(Instant, Result<(), IdentityError>)>>,
    refetch_min: Duration,
}

/// A signature algorithm a customer token may name in its header. `none`
/// and the shared-secret `HS*` are not here: a key the company publishes
/// cannot be a secret, so an HMAC token "verified" with it would be forged
/// by anyone who read the JWKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    /// RFC 9864's fully specified name for EdDSA over Ed25519.
    Ed25519,
}

const RSA_ALGS: &[SigningAlg] = &[
    SigningAlg::RS256,
    SigningAlg::RS384,
    SigningAlg::RS512,
    SigningAlg::PS256,
    SigningAlg::PS384,
    SigningAlg::PS512,
];
const ED25519_ALGS: &[SigningAlg] = &[SigningAlg::EdDSA, SigningAlg::Ed25519];

impl SigningAlg {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            "Ed25519" => Self::Ed25519,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::Ed25519 => "Ed25519",
        }
    }

    /// The computation that checks it: `Ed25519` is EdDSA with the curve
    /// named in the algorithm instead of left to the key.
    fn verifier(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
            Self::EdDSA | Self::Ed25519 => Algorithm::EdDSA,
        }
    }
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A key from the company's JWKS and the algorithms it verifies: the one
/// its `alg` names, or, without `alg`, every one its key type allows.
/// Never what a token's header asks for beyond that (the alg-confusion
/// attack: an RSA public key used as an HMAC secret).
#[derive(Clone)]
pub struct PublishedKey {
    algs: KeyAlgs,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy)]
enum KeyAlgs {
    Pinned(SigningAlg),
    OfKeyType(&'static [SigningAlg]),
}

impl KeyAlgs {
    fn accepts(self, alg: SigningAlg) -> bool {
        match self {
            Self::Pinned(pinned) => pinned == alg,
            Self::OfKeyType(algs) => algs.contains(&alg),
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Pinned(alg) => alg.name().to_string(),
            Self::OfKeyType(algs) => algs.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
        }
    }
}

/// The signature algorithms a key type allows, by the JWK's `kty` and `crv`.
fn key_type_algs(jwk: &Jwk) -> Result<&'static [SigningAlg], &'static str> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(RSA_ALGS),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Ok(&[SigningAlg::ES256]),
            EllipticCurve::P384 => Ok(&[SigningAlg::ES384]),
            _ => Err("is on a curve no supported algorithm uses"),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Ok(ED25519_ALGS),
        AlgorithmParameters::OctetKeyPair(_) => Err("is on a curve no supported algorithm uses"),
        AlgorithmParameters::OctetKey(_) => Err("is a shared secret (kty oct), which never verifies a customer token"),
        _ => Err("is of a key type no supported algorithm uses"),
    }
}

/// One JWK of a set, read on its own so that a key this verifier cannot
/// use (an `alg` jsonwebtoken does not know, a P-521 key, an encryption
/// key) does not make the whole set unreadable.
fn published_key(value: &serde_json::Value) -> Result<PublishedKey, String> {
    let mut value = value.clone();
    let object = value.as_object_mut().ok_or("is not a JSON object")?;
    if object.get("use").and_then(serde_json::Value::as_str) == Some("enc") {
        return Err("is for encryption (use enc)".into());
    }
    // `alg` is judged here, not by jsonwebtoken, which does not know the
    // fully specified names (RFC 9864) such as Ed25519.
    let alg = match object.remove("alg") {
        None => None,
        Some(serde_json::Value::String(name)) => Some(name),
        Some(_) => return Err("has an alg that is not a string".into()),
    };
    let jwk: Jwk =
        serde_json::from_value(value).map_err(|_| "is not a public key jsonwebtoken can read".to_string())?;
    let allowed = key_type_algs(&jwk).map_err(str::to_string)?;
    let algs = match alg {
        None => KeyAlgs::OfKeyType(allowed),
        Some(name) => match SigningAlg::from_name(&name) {
            Some(alg) if allowed.contains(&alg) => KeyAlgs::Pinned(alg),
            _ => {
                return Err(format!(
                    "names alg {}, which its key type does not sign with here",
                    shown(&name)
                ));
            }
        },
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "is not a usable public key".to_string())?;
    Ok(PublishedKey { algs, key })
}

/// The company's keys by `kid`, read from a JWKS document: each key, or
/// why it cannot verify a customer token. Keys without `kid` are left out:
/// a token names its key.
pub fn published_keys(body: &[u8]) -> Result<HashMap<String, Result<PublishedKey, String>>, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    // Where it broke, not serde's message: that can quote the body, and
    // this text reaches the channel.
    let set: Set = serde_json::from_slice(body).map_err(|e| {
        format!(
            "not a JWK Set ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    Ok(set
        .keys
        .iter()
        .filter_map(|k| {
            let kid = k.get("kid")?.as_str()?.to_string();
            Some((kid, published_key(k)))
        })
        .collect())
}

/// A name from a token or a key, fit to repeat in a message: short and
/// plain, else not repeated.
fn shown(name: &str) -> String {
    if !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b)) {
        name.to_string()
    } else {
        "(not shown)".to_string()
    }
}

/// A compact JWS, its header read by hand: jsonwebtoken's own reading
/// (`decode_header`, and `decode`, which reads it again) fails on any `alg`
/// it does not know, so a token signed `"alg": "Ed25519"` would read as
/// "not a JWT" and could not be verified at all.
pub struct SignedToken<'a> {
    pub alg: SigningAlg,
    pub kid: Option<String>,
    /// The header's `typ` (RFC 9068 access tokens say `at+jwt`).
    pub typ: Option<String>,
    signing_input: &'a str,
    signature: &'a str,
    payload: &'a str,
}

impl<'a> SignedToken<'a> {
    /// Reads the header; refuses a token that is not a JWS, names an
    /// algorithm that is not a supported signature, or lists critical
    /// extensions.
    pub fn parse(token: &'a str) -> Result<Self, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT (a signed JWT has three dot-separated parts)".into());
        };
        let header: serde_json::Map<String, serde_json::Value> = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("not a JWT (its header is not base64url JSON)")?;
        let alg = match header.get("alg") {
            Some(serde_json::Value::String(alg)) => alg.as_str(),
            _ => return Err("its header has no alg".into()),
        };
        let alg = match SigningAlg::from_name(alg) {
            Some(alg) => alg,
            None if alg.eq_ignore_ascii_case("none") => return Err("it is unsigned (alg none)".into()),
            None if alg.starts_with("HS") => {
                return Err(format!("alg {} is a shared-secret MAC, never accepted", shown(alg)));
            }
            None => return Err(format!("unsupported algorithm {}", shown(alg))),
        };
        // RFC 7515 §4.1.11: extensions listed as critical must be understood,
        // and this verifier understands none.
        if header.contains_key("crit") {
            return Err("it names critical header extensions".into());
        }
        // Every registered header parameter must have its registered type
        // (`cty` a string, `x5c` strings, `jwk` a key…): read as jsonwebtoken
        // reads a header, with `alg` given as the computation it names (it
        // knows no `Ed25519`), so no ill-typed header passes here that a
        // verifier of the other kind would refuse.
        let mut typed = header.clone();
        typed.insert(
            "alg".into(),
            serde_json::to_value(alg.verifier()).map_err(|e| e.to_string())?,
        );
        if serde_json::from_value::<jsonwebtoken::Header>(serde_json::Value::Object(typed)).is_err() {
            return Err("a registered header parameter has the wrong type".into());
        }
        let kid = match header.get("kid") {
            None => None,
            Some(serde_json::Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err("its kid is not a string".into()),
        };
        let typ = match header.get("typ") {
            None => None,
            Some(serde_json::Value::String(typ)) => Some(typ.clone()),
            Some(_) => return Err("its typ is not a string".into()),
        };
        let signing_input = &token[..header_len(token, payload)];
        Ok(Self {
            alg,
            kid,
            typ,
            signing_input,
            signature,
            payload,
        })
    }

    /// Checks the signature with `key` and returns the claims, not yet
    /// judged.
    pub fn verify(&self, key: &PublishedKey) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        if !key.algs.accepts(self.alg) {
            return Err(format!(
                "wrong algorithm for its key: the token says {}, the key takes {}",
                self.alg,
                key.algs.describe()
            ));
        }
        let verified = jsonwebtoken::crypto::verify(
            self.signature,
            self.signing_input.as_bytes(),
            &key.key,
            self.alg.verifier(),
        );
        if !matches!(verified, Ok(true)) {
            return Err("the signature does not verify".into());
        }
        URL_SAFE_NO_PAD
            .decode(self.payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| "its claims are not a JSON object".to_string())
    }
}

/// The length of `header.payload` in `token`, the part the signature covers.
fn header_len(token: &str, payload: &str) -> usize {
    token.find('.').map_or(0, |dot| dot + 1 + payload.len())
}

/// Whether `aud` (a string, or a list of strings: RFC 7519 §4.1.3) names
/// `audience`.
pub fn audience_matches(aud: Option<&serde_json::Value>, audience: &str) -> bool {
    match aud {
        Some(serde_json::Value::String(aud)) => aud == audience,
        Some(serde_json::Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
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
        *self.keys.write().await = published_keys(&body).map_err(unavailable)?;
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
        let signed = SignedToken::parse(token).map_err(IdentityError::Invalid)?;
        let kid = signed.kid.clone().ok_or_else(|| invalid("no kid"))?;
        if !self.keys.read().await.contains_key(&kid) {
            self.refresh_keys(&kid, Instant::now()).await?;
        }
        let claims = match self.keys.read().await.get(&kid) {
            None => return Err(invalid("signed by an unknown key")),
            Some(Err(why)) => return Err(IdentityError::Invalid(format!("its key {} {why}", shown(&kid)))),
            Some(Ok(key)) => signed.verify(key).map_err(IdentityError::Invalid)?,
        };
        // iss and aud must be there, and be ours where we know ours.
        match (claims.get("iss"), &self.config.issuer) {
            (None, _) => return Err(invalid("no iss claim")),
            (Some(iss), Some(ours)) if iss.as_str() != Some(ours.as_str()) => return Err(invalid("wrong issuer")),
            _ => {}
        }
        match (claims.get("aud"), &self.config.audience) {
            (None, _) => return Err(invalid("no aud claim")),
            (aud, Some(ours)) if !audience_matches(aud, ours) => return Err(invalid("wrong audience")),
            _ => {}
        }
        let now = self.clock.unix_secs();
        // Read as jsonwebtoken reads them: a number (a fraction rounded).
        let exp = match claims.get("exp") {
            None => return Err(invalid("no exp claim")),
            Some(v) => numeric_date(Some(v)).ok_or_else(|| invalid("exp is not a NumericDate"))?,
        };
        let nbf = match claims.get("nbf") {
            None => None,
            Some(v) => Some(numeric_date(Some(v)).ok_or_else(|| invalid("nbf is not a NumericDate"))?),
        };
        if exp < now.saturating_sub(LEEWAY_SECS) {
            return Err(IdentityError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(invalid("not valid yet (nbf)"));
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
            typ: signed.typ,
            claims: serde_json::Value::Object(claims),
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
            matches!(&r, Err(IdentityError::Invalid(m)) if m == "not valid yet (nbf)"),
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
