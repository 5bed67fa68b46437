//! Signing keys of customer JWTs: generated into the store, rotated, published
//! as a JWKS, and used to verify tokens with the algorithm pinned per key.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::BackendError;
use crate::config::SigningAlg;
use crate::store::StoredKey;

/// How many keys stay published after a rotation: the newest signs, the
/// older ones still verify the tokens they signed.
pub(crate) const KEYS_KEPT: i64 = 3;

impl SigningAlg {
    pub(crate) fn algorithm(self) -> Algorithm {
        match self {
            Self::ES256 => Algorithm::ES256,
            Self::RS256 => Algorithm::RS256,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }

    fn parse(name: &str) -> Result<Self, BackendError> {
        match name {
            "ES256" => Ok(Self::ES256),
            "RS256" => Ok(Self::RS256),
            "EdDSA" => Ok(Self::EdDSA),
            other => Err(BackendError::Crypto(format!("unsupported signing algorithm {other}"))),
        }
    }
}

/// A fresh private key of `alg`, as a PKCS#8 PEM document.
fn generate_pem(alg: SigningAlg) -> Result<String, BackendError> {
    let failed = |_| BackendError::Crypto(format!("could not generate a {} key", alg.name()));
    let der: Vec<u8> = match alg {
        SigningAlg::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(failed)?
            .to_pkcs8v1()
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        SigningAlg::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(failed)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
            der.as_ref().to_vec()
        }
        SigningAlg::EdDSA => Ed25519KeyPair::generate()
            .map_err(failed)?
            .to_pkcs8v1()
            .map_err(failed)?
            .as_ref()
            .to_vec(),
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

/// A generated key ready to be stored; its kid is its RFC 7638 thumbprint.
pub(crate) fn new_stored_key(alg: SigningAlg) -> Result<StoredKey, BackendError> {
    let private_pem = generate_pem(alg)?;
    let key = LoadedKey::from_pem(alg, &private_pem)?;
    Ok(StoredKey {
        kid: key.kid,
        alg: alg.name().to_string(),
        private_pem,
    })
}

struct LoadedKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl LoadedKey {
    fn from_pem(alg: SigningAlg, pem: &str) -> Result<Self, BackendError> {
        let bad = |e: jsonwebtoken::errors::Error| BackendError::Crypto(format!("signing key: {e}"));
        let encoding = match alg {
            SigningAlg::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            SigningAlg::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            SigningAlg::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .map_err(bad)?;
        let mut jwk = Jwk::from_encoding_key(&encoding, alg.algorithm()).map_err(bad)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(bad)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(bad)?;
        Ok(Self {
            kid,
            alg: alg.algorithm(),
            encoding,
            decoding,
            jwk,
        })
    }
}

/// The keys in force: one signs, all verify, all are published.
pub(crate) struct Keyring {
    signing_kid: String,
    signing_alg: Algorithm,
    signing: EncodingKey,
    verifying: HashMap<String, (Algorithm, DecodingKey)>,
    jwks: String,
}

impl Keyring {
    /// Builds the keyring from the stored keys (oldest first) and, when
    /// configured, an operator-supplied key that then signs.
    pub(crate) fn build(stored: &[StoredKey], file_key: Option<(SigningAlg, &str)>) -> Result<Self, BackendError> {
        let mut loaded = stored
            .iter()
            .map(|k| LoadedKey::from_pem(SigningAlg::parse(&k.alg)?, &k.private_pem))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((alg, pem)) = file_key {
            loaded.push(LoadedKey::from_pem(alg, pem)?);
        }
        let jwks = serde_json::to_string(&JwkSet {
            keys: loaded.iter().map(|k| k.jwk.clone()).collect(),
        })
        .map_err(|e| BackendError::Internal(e.to_string()))?;
        let verifying = loaded
            .iter()
            .map(|k| (k.kid.clone(), (k.alg, k.decoding.clone())))
            .collect();
        let newest = loaded
            .pop()
            .ok_or_else(|| BackendError::Crypto("no signing key".into()))?;
        Ok(Self {
            signing_kid: newest.kid,
            signing_alg: newest.alg,
            signing: newest.encoding,
            verifying,
            jwks,
        })
    }

    pub(crate) fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, BackendError> {
        let mut header = jsonwebtoken::Header::new(self.signing_alg);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing).map_err(|e| BackendError::Crypto(e.to_string()))
    }

    /// The verification key for `kid`, with the one algorithm it may be used with.
    pub(crate) fn verifier(&self, kid: &str) -> Option<&(Algorithm, DecodingKey)> {
        self.verifying.get(kid)
    }

    pub(crate) fn jwks(&self) -> &str {
        &self.jwks
    }

    #[cfg(test)]
    pub(crate) fn signing_alg(&self) -> Algorithm {
        self.signing_alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_and_publishes_a_verifiable_key() -> Result<(), BackendError> {
        for alg in [SigningAlg::ES256, SigningAlg::RS256, SigningAlg::EdDSA] {
            let stored = new_stored_key(alg)?;
            let ring = Keyring::build(std::slice::from_ref(&stored), None)?;
            let token = ring.sign(&serde_json::json!({"sub": "x", "exp": u64::MAX / 2}))?;
            let header = jsonwebtoken::decode_header(&token).map_err(|e| BackendError::Crypto(e.to_string()))?;
            assert_eq!(header.kid.as_deref(), Some(stored.kid.as_str()));
            let (alg_pinned, key) = ring.verifier(&stored.kid).ok_or(BackendError::Crypto("kid".into()))?;
            let mut validation = jsonwebtoken::Validation::new(*alg_pinned);
            validation.required_spec_claims.clear();
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, key, &validation)
                .map_err(|e| BackendError::Crypto(format!("{alg:?}: {e}")))?;
            assert!(ring.jwks().contains(&stored.kid));
        }
        Ok(())
    }

    #[test]
    fn newest_key_signs_and_old_keys_stay_published() -> Result<(), BackendError> {
        let old = new_stored_key(SigningAlg::ES256)?;
        let new = new_stored_key(SigningAlg::EdDSA)?;
        let ring = Keyring::build(&[old.clone_key(), new.clone_key()], None)?;
        assert_eq!(ring.signing_alg(), Algorithm::EdDSA);
        assert!(ring.verifier(&old.kid).is_some() && ring.verifier(&new.kid).is_some());
        Ok(())
    }

    impl StoredKey {
        fn clone_key(&self) -> StoredKey {
            StoredKey {
                kid: self.kid.clone(),
                alg: self.alg.clone(),
                private_pem: self.private_pem.clone(),
            }
        }
    }
}
