//! The server secret and what is derived from it: keyed digests of stored
//! secrets, opaque customer identifiers, random tokens.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::BackendError;

/// What a keyed digest is for; each purpose gets its own key, so a digest of
/// one kind can never stand in for another.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    ClientSecret,
    ApiKey,
    Session,
    /// The demo site's own session, kept apart from customer sessions so
    /// one can never be presented as the other.
    SiteSession,
    CustomerId,
    AccessToken,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::ClientSecret => b"deskbridge client-secret v1",
            Self::ApiKey => b"deskbridge api-key v1",
            Self::Session => b"deskbridge session v1",
            Self::SiteSession => b"deskbridge site-session v1",
            Self::CustomerId => b"deskbridge customer-id v1",
            Self::AccessToken => b"deskbridge access-token v1",
        }
    }
}

pub(crate) const DIGEST_LEN: usize = 32;
pub(crate) type Digest = [u8; DIGEST_LEN];

/// Keys derived from the server secret. The secret itself is not kept.
pub(crate) struct Secrets {
    client_secret: hmac::Key,
    api_key: hmac::Key,
    session: hmac::Key,
    site_session: hmac::Key,
    customer_id: hmac::Key,
    access_token: hmac::Key,
}

impl Secrets {
    /// Reads the server secret, creating it (mode 0600) on first start.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, BackendError> {
        let secret = match std::fs::read_to_string(path) {
            Ok(text) => URL_SAFE_NO_PAD
                .decode(text.trim())
                .map_err(|_| BackendError::Config(format!("{}: not a base64url secret", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = random_bytes::<32>()?.to_vec();
                write_private_file(path, URL_SAFE_NO_PAD.encode(&secret).as_bytes())?;
                secret
            }
            Err(e) => return Err(BackendError::Io(format!("{}: {e}", path.display()))),
        };
        if secret.len() < 32 {
            return Err(BackendError::Config(format!(
                "{}: the server secret must be at least 32 bytes",
                path.display()
            )));
        }
        if !looks_random(&secret) {
            return Err(BackendError::Config(format!(
                "{}: the server secret is not random (all zeros or a short repeated pattern); \
                 delete the file to have a random one made, or write 32 random bytes, base64url",
                path.display()
            )));
        }
        require_private(path)?;
        Ok(Self::from_secret(&secret))
    }

    fn from_secret(secret: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derive = |p: Purpose| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, p.label()).as_ref());
        Self {
            client_secret: derive(Purpose::ClientSecret),
            api_key: derive(Purpose::ApiKey),
            session: derive(Purpose::Session),
            site_session: derive(Purpose::SiteSession),
            customer_id: derive(Purpose::CustomerId),
            access_token: derive(Purpose::AccessToken),
        }
    }

    fn key(&self, purpose: Purpose) -> &hmac::Key {
        match purpose {
            Purpose::ClientSecret => &self.client_secret,
            Purpose::ApiKey => &self.api_key,
            Purpose::Session => &self.session,
            Purpose::SiteSession => &self.site_session,
            Purpose::CustomerId => &self.customer_id,
            Purpose::AccessToken => &self.access_token,
        }
    }

    /// HMAC-SHA256 of `value` under the key for `purpose`.
    pub(crate) fn digest(&self, purpose: Purpose, value: &[u8]) -> Digest {
        let tag = hmac::sign(self.key(purpose), value);
        let mut out = [0u8; DIGEST_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Constant-time check of a tag made by [`Secrets::digest`].
    pub(crate) fn verify(&self, purpose: Purpose, value: &[u8], tag: &[u8]) -> bool {
        hmac::verify(self.key(purpose), value, tag).is_ok()
    }

    /// The opaque, stable customer identifier of an internal user id: a keyed
    /// hash, so it carries no PII and only the holder of the server secret
    /// can link it to a user.
    pub(crate) fn customer_id(&self, user_id: i64) -> String {
        let digest = self.digest(Purpose::CustomerId, format!("user:{user_id}").as_bytes());
        format!("cus_{}", URL_SAFE_NO_PAD.encode(digest))
    }
}

/// Constant-time equality of two digests.
pub(crate) fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], BackendError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| BackendError::Crypto("the system random generator failed".into()))?;
    Ok(out)
}

/// A random 256-bit token, base64url, with a prefix that names its kind
/// (so a leaked one is recognisable by secret scanners).
pub(crate) fn random_token(prefix: &str) -> Result<String, BackendError> {
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)))
}

/// A secret of 32 random bytes has about 30 distinct byte values; one
/// with fewer than 16 is zeros, a repeated pattern, or typed text.
fn looks_random(secret: &[u8]) -> bool {
    let mut seen = [false; 256];
    secret.iter().for_each(|b| seen[usize::from(*b)] = true);
    seen.iter().filter(|s| **s).count() >= 16
}

/// Refuses a file or directory that other local users may use: the data
/// directory, the database and the secret files hold what signs customer
/// tokens and authenticates clients.
pub(crate) fn require_private(path: &Path) -> Result<(), BackendError> {
    match shared_access(path)? {
        Some(problem) => Err(BackendError::Config(problem)),
        None => Ok(()),
    }
}

/// What is wrong when other users have access to `path`.
pub(crate) fn shared_access(path: &Path) -> Result<Option<String>, BackendError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| BackendError::Io(format!("{}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            let private = if path.is_dir() { "700" } else { "600" };
            return Ok(Some(format!(
                "{}: other users have access to it (mode {:o}); make it private with chmod {private}",
                path.display(),
                mode & 0o777
            )));
        }
    }
    Ok(None)
}

/// Writes a file readable by its owner only.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), BackendError> {
    let io = |e: std::io::Error| BackendError::Io(format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_by_purpose_and_secret() {
        let a = Secrets::from_secret(&[7u8; 32]);
        let b = Secrets::from_secret(&[8u8; 32]);
        assert_ne!(a.digest(Purpose::ApiKey, b"x"), a.digest(Purpose::ClientSecret, b"x"));
        assert_ne!(a.digest(Purpose::ApiKey, b"x"), b.digest(Purpose::ApiKey, b"x"));
        let tag = a.digest(Purpose::Session, b"s");
        assert!(a.verify(Purpose::Session, b"s", &tag));
        assert!(!a.verify(Purpose::Session, b"t", &tag));
    }

    #[test]
    fn zero_and_patterned_secrets_are_refused() -> Result<(), BackendError> {
        let dir = tempfile::tempdir().map_err(|e| BackendError::Io(e.to_string()))?;
        let path = dir.path().join("server.secret");
        write_private_file(&path, URL_SAFE_NO_PAD.encode([0u8; 32]).as_bytes())?;
        assert!(Secrets::load_or_create(&path).is_err());
        std::fs::remove_file(&path).map_err(|e| BackendError::Io(e.to_string()))?;
        write_private_file(&path, URL_SAFE_NO_PAD.encode(b"abcd".repeat(8)).as_bytes())?;
        assert!(Secrets::load_or_create(&path).is_err());
        std::fs::remove_file(&path).map_err(|e| BackendError::Io(e.to_string()))?;
        assert!(Secrets::load_or_create(&path).is_ok(), "a new random secret is made");
        Ok(())
    }

    #[test]
    fn customer_ids_are_stable_distinct_and_opaque() {
        let s = Secrets::from_secret(&[1u8; 32]);
        assert_eq!(s.customer_id(1), s.customer_id(1));
        assert_ne!(s.customer_id(1), s.customer_id(2));
        assert!(!s.customer_id(1).contains("user"));
        assert_eq!(s.customer_id(1).len(), 4 + 43);
    }
}
