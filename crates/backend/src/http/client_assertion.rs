//! `private_key_jwt` (RFC 7523 §2.2, §3): a client proves itself with a JWT
//! signed by its private key. The key is the one registered for it
//! (`client add --public-key`), the algorithm is pinned by that key (ES256
//! for EC P-256, RS256 for RSA), the assertion must be addressed to this
//! token endpoint, live at most five minutes, and is accepted once.

use contract::OAuthErrorCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::State;
use crate::error::HttpError;

/// `client_assertion_type` of a JWT assertion.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest an assertion may live (`exp - iat`): a long-lived one would
/// be a password by another name, and make the replay memory large.
const MAX_LIFETIME_SECS: u64 = 300;

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    jti: String,
    exp: u64,
    iat: Option<u64>,
}

/// The key a registered PEM public key verifies with, and its algorithm.
pub(crate) fn public_key(pem: &str) -> Result<(DecodingKey, Algorithm), String> {
    if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((key, Algorithm::RS256));
    }
    Err("not a PEM public key: an EC P-256 key (ES256) or an RSA key (RS256)".into())
}

fn refused(description: &str) -> HttpError {
    HttpError::oauth(OAuthErrorCode::InvalidClient, description)
}

/// The client an assertion authenticates: its id and scopes.
pub(crate) async fn authenticate(
    state: &State,
    assertion_type: &str,
    assertion: &str,
    client_id: Option<&str>,
) -> Result<(String, String), HttpError> {
    if assertion_type != JWT_BEARER {
        return Err(HttpError::oauth(
            OAuthErrorCode::InvalidRequest,
            format!("client_assertion_type must be {JWT_BEARER}"),
        ));
    }
    // Whose key to verify with: the claims say, before they are trusted.
    let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| refused("the client assertion is not a JWT with iss, sub, jti and exp"))?;
    if client_id.is_some_and(|id| id != unverified.sub) {
        return Err(refused("client_id differs from the assertion's subject"));
    }
    let client = state.store.client(&unverified.sub).await?;
    let Some((client, pem)) = client.and_then(|c| c.public_key.clone().map(|pem| (c, pem))) else {
        return Err(refused("client authentication failed"));
    };
    let (key, algorithm) = public_key(&pem).map_err(|_| refused("client authentication failed"))?;
    let mut validation = Validation::new(algorithm);
    // RFC 7523 §3: the token endpoint's URL; the issuer's is accepted too.
    let token_endpoint = format!("{}{}", state.public_url, contract::paths::ACCESS_TOKEN);
    validation.set_audience(&[token_endpoint.as_str(), state.issuer.as_str()]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 30;
    validation.validate_exp = false; // checked below, against the injected clock
    let verified = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
        .map_err(|_| refused("the client assertion's signature, algorithm or audience is not valid"))?
        .claims;
    if verified.iss != verified.sub {
        return Err(refused("the assertion's iss and sub must both be the client_id"));
    }
    let now = state.now();
    if verified.exp + 30 < now {
        return Err(refused("the client assertion has expired"));
    }
    let issued = verified.iat.unwrap_or(now).min(now);
    if verified.exp.saturating_sub(issued) > MAX_LIFETIME_SECS {
        return Err(refused("the client assertion lives longer than 5 minutes"));
    }
    if verified.jti.is_empty() || verified.jti.len() > 256 {
        return Err(refused("the client assertion needs a jti of 1-256 characters"));
    }
    let expires = i64::try_from(verified.exp + 30).unwrap_or(i64::MAX);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if !state
        .store
        .remember_assertion(&verified.sub, &verified.jti, expires, now)
        .await?
    {
        return Err(refused("this client assertion was used already"));
    }
    Ok((verified.sub, client.scopes))
}
