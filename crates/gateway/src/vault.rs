//! Encryption of customer tokens at rest: AES-256-GCM, a random nonce per
//! token, and the conversation id as associated data, so a ciphertext cannot
//! be moved to another conversation's row.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

use crate::GatewayError;

pub struct Vault {
    key: LessSafeKey,
    /// Keys the digests of action inputs kept in the audit log and the
    /// idempotency records: derived from the token key, so an input's
    /// digest can be compared but not guessed from a list of likely values
    /// by whoever reads the store.
    digest_key: hmac::Key,
}

impl Vault {
    /// From a configured key (base64url, 32 bytes) or the data dir's
    /// `token.key`, created on first start.
    pub fn open(configured: Option<SecretString>, data_dir: &Path) -> Result<Self, GatewayError> {
        let encoded = match configured {
            Some(k) => k.expose_secret().to_string(),
            None => {
                let path = data_dir.join("token.key");
                match std::fs::read_to_string(&path) {
                    Ok(text) => text.trim().to_string(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let key = random::<32>()?;
                        let text = URL_SAFE_NO_PAD.encode(key);
                        write_private(&path, text.as_bytes())?;
                        text
                    }
                    Err(e) => return Err(GatewayError::Io(format!("{}: {e}", path.display()))),
                }
            }
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| GatewayError::Config("the token key is not base64url".into()))?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| GatewayError::Config("the token key must be 32 bytes".into()))?;
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            b"deskbridge action input digest v1",
        );
        Ok(Self {
            key: LessSafeKey::new(key),
            digest_key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        })
    }

    pub fn seal(&self, plaintext: &str, context: &str) -> Result<Vec<u8>, GatewayError> {
        let nonce = random::<NONCE_LEN>()?;
        let mut buffer = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| GatewayError::Crypto("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(out)
    }

    /// The keyed digest (hex) of `action` run with `input`: the same for
    /// the same values, whatever order they were sent in.
    pub fn input_digest(&self, action: &str, input: &serde_json::Map<String, serde_json::Value>) -> String {
        // A `Map` keeps its keys sorted: its text is the same for equal inputs.
        let text = serde_json::Value::Object(input.clone()).to_string();
        let mut context = hmac::Context::with_key(&self.digest_key);
        context.update(action.as_bytes());
        context.update(&[0]);
        context.update(text.as_bytes());
        context.sign().as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn open_sealed(&self, sealed: &[u8], context: &str) -> Result<SecretString, GatewayError> {
        if sealed.len() < NONCE_LEN {
            return Err(GatewayError::Crypto("a sealed token is too short".into()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| GatewayError::Crypto("bad nonce".into()))?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| GatewayError::Crypto("a sealed token failed authentication".into()))?;
        String::from_utf8(plain.to_vec())
            .map(SecretString::from)
            .map_err(|_| GatewayError::Crypto("a sealed token is not text".into()))
    }
}

fn random<const N: usize>() -> Result<[u8; N], GatewayError> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| GatewayError::Crypto("the random generator failed".into()))?;
    Ok(out)
}

pub fn random_id(prefix: &str) -> Result<String, GatewayError> {
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random::<32>()?)))
}

/// Whether `id` has the shape [`random_id`] gives with `prefix`: 32 bytes
/// in base64url (43 characters) after it.
pub fn is_random_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), GatewayError> {
    use std::io::Write;
    let io = |e: std::io::Error| GatewayError::Io(format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tokens_open_only_in_their_own_conversation() -> Result<(), GatewayError> {
        let dir = std::env::temp_dir().join(format!("vault-{}", random_id("")?));
        std::fs::create_dir_all(&dir).map_err(|e| GatewayError::Io(e.to_string()))?;
        let vault = Vault::open(None, &dir)?;
        let sealed = vault.seal("the-token", "conv-1")?;
        assert!(!sealed.windows(9).any(|w| w == b"the-token"));
        assert_eq!(vault.open_sealed(&sealed, "conv-1")?.expose_secret(), "the-token");
        assert!(vault.open_sealed(&sealed, "conv-2").is_err());
        let again = Vault::open(None, &dir)?;
        assert_eq!(again.open_sealed(&sealed, "conv-1")?.expose_secret(), "the-token");
        // Input digests: equal for equal inputs in any order, keyed, and per action.
        let input = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let digest = vault.input_digest("block", &input(serde_json::json!({"a": 1, "b": "x"})));
        assert_eq!(digest.len(), 64);
        assert_eq!(
            digest,
            again.input_digest("block", &input(serde_json::json!({"b": "x", "a": 1})))
        );
        assert_ne!(
            digest,
            vault.input_digest("block", &input(serde_json::json!({"a": 2, "b": "x"})))
        );
        assert_ne!(
            digest,
            vault.input_digest("other", &input(serde_json::json!({"a": 1, "b": "x"})))
        );
        let other_dir = std::env::temp_dir().join(format!("vault-{}", random_id("")?));
        std::fs::create_dir_all(&other_dir).map_err(|e| GatewayError::Io(e.to_string()))?;
        let other_key = Vault::open(None, &other_dir)?;
        assert_ne!(
            digest,
            other_key.input_digest("block", &input(serde_json::json!({"a": 1, "b": "x"})))
        );
        let _ = std::fs::remove_dir_all(&other_dir);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
