//! `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): the platform
//! proves itself at the token endpoint with a short JWT signed by its own
//! private key, instead of a shared secret. Each assertion is new: its own
//! `jti`, lived a minute, addressed (`aud`) to the token endpoint alone.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// `client_assertion_type` of a JWT assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion lives: long enough to cross a slow network, short
/// enough that a copy is soon worthless (and the server's replay memory small).
pub const LIFETIME: Duration = Duration::from_secs(60);

/// A private key, ready to sign assertions for one client at one endpoint.
pub struct AssertionSigner {
    key: EncodingKey,
    algorithm: Algorithm,
    key_id: Option<String>,
    client_id: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

impl AssertionSigner {
    /// From a PEM private key (EC P-256, PKCS#8 or SEC1; or RSA, PKCS#8 or
    /// PKCS#1): ES256 for EC, RS256 for RSA.
    pub fn new(pem: &str, key_id: Option<String>, client_id: &str) -> Result<Self, String> {
        let (key, algorithm) = key_of(pem)?;
        Ok(Self {
            key,
            algorithm,
            key_id,
            client_id: client_id.to_string(),
        })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// A new assertion for the token endpoint `audience`, issued at
    /// `now_secs` (Unix seconds).
    pub fn sign(&self, now_secs: u64, audience: &str) -> Result<String, String> {
        let mut header = Header::new(self.algorithm);
        header.kid = self.key_id.clone();
        let mut jti = [0u8; 16];
        // Unique per assertion: the server refuses a jti it has seen.
        for chunk in jti.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
        let claims = Claims {
            iss: &self.client_id,
            sub: &self.client_id,
            aud: audience,
            jti: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
            iat: now_secs,
            exp: now_secs + LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("the client assertion could not be signed: {e}"))
    }
}

/// The signing key in `pem` and its algorithm; never the key in an error.
pub fn key_of(pem: &str) -> Result<(EncodingKey, Algorithm), String> {
    if let Ok(key) = EncodingKey::from_ec_pem(pem.as_bytes()) {
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = EncodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((key, Algorithm::RS256));
    }
    Err("not a PEM private key this can sign with: an EC P-256 key (ES256) or an RSA key (RS256)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    /// A new EC P-256 key: its PKCS#8 PEM, and a decoding key of its public half.
    fn ec_key() -> (String, DecodingKey) {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap_or_else(|e| unreachable!("{e}"));
        let der = pair.to_pkcs8v1().unwrap_or_else(|e| unreachable!("{e}"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let point = pair.public_key().as_ref();
        let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let key = DecodingKey::from_ec_components(&b64u(&point[1..33]), &b64u(&point[33..65]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        (pem, key)
    }

    #[test]
    fn assertions_are_signed_addressed_and_unique() {
        let (pem, key) = ec_key();
        let pem = pem.as_str();
        let signer = AssertionSigner::new(pem, Some("k1".into()), "deskbridge").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(signer.algorithm(), Algorithm::ES256);
        let aud = "https://bank.example/token";
        let (a, b) = (signer.sign(1_700_000_000, aud), signer.sign(1_700_000_000, aud));
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://bank.example/token"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(&a, &key, &validation)
            .map(|d| d.claims)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(claims["iss"], "deskbridge");
        assert_eq!(claims["sub"], "deskbridge");
        assert_eq!(claims["exp"].as_u64(), Some(1_700_000_060));
        let header = jsonwebtoken::decode_header(&a).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let jti = |t: &str| {
            jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(t)
                .map(|c| c["jti"].clone())
                .ok()
        };
        assert_ne!(jti(&a), jti(&b));
        assert!(key_of("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n").is_err());
    }
}
