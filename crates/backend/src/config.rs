//! The backend's configuration: one TOML file, every key optional.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use login::ThrottleConfig;
use serde::Deserialize;

use crate::BackendError;

/// How `/customer_authenticate` hands the customer their identifier.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    /// A signed JWT in the response body (stateless; the default).
    #[default]
    Token,
    /// A server-side session behind an HttpOnly cookie (revocable).
    Cookie,
}

/// Signature algorithm of customer JWTs. All are asymmetric, so a platform can
/// verify tokens from the published JWKS without sharing a secret.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum SigningAlg {
    #[default]
    ES256,
    RS256,
    EdDSA,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the database, the server secret and the signing keys live.
    pub data_dir: PathBuf,
    /// Base URL the backend is reached at, for metadata documents. Defaults
    /// to `http://<listen>` (`https://` with `[tls]`).
    pub public_url: Option<String>,
    /// `iss` of customer JWTs. Defaults to `public_url`.
    pub issuer: Option<String>,
    /// `aud` of customer JWTs: the platform they are meant for.
    pub audience: String,
    /// Lifetime of a customer JWT or session, in seconds.
    pub customer_token_ttl_secs: u64,
    /// Lifetime of a system access token, in seconds.
    pub access_token_ttl_secs: u64,
    pub session_mode: SessionMode,
    pub cookie_name: String,
    /// In cookie mode, also accept customer JWTs on data calls (off: a
    /// backend in cookie mode knows its customers by session only).
    pub cookie_mode_accepts_jwts: bool,
    /// Origins (`https://shop.example.com`) of the company's own pages that
    /// may post logins which set a cookie, and log out. The backend's own
    /// origin (`public_url`) is always one; browsers' cross-site posts from
    /// anywhere else are refused.
    pub site_origins: Vec<String>,
    /// Drop the `Secure` cookie attribute, for plain-HTTP local demos only.
    pub insecure_cookies: bool,
    pub signing_alg: SigningAlg,
    /// A PKCS#8 PEM private key to sign customer JWTs with, instead of the
    /// keys the backend generates and rotates in its data dir.
    pub signing_key_file: Option<PathBuf>,
    /// File holding the server secret (keyed hashes, access-token MACs).
    /// Defaults to `<data_dir>/server.secret`, created on first start.
    pub server_secret_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Password hashes computed at once; defaults to the number of CPUs.
    pub password_hash_concurrency: Option<usize>,
    /// Logins waiting for or in a password hash at once; beyond it a login
    /// is answered `503 server_busy` at once.
    pub password_hash_queue: usize,
    /// Of those places, how many one client address may hold.
    pub password_hash_queue_per_address: usize,
    pub throttle: ThrottleConfig,
    /// Read deadlines and the connection cap (`[http]`).
    pub http: serving::Limits,
    /// The demo company site at `/` (set by `deskbridge demo`): absent, the
    /// backend serves only the company's APIs.
    pub demo_site: Option<DemoSiteConfig>,
    /// `[tls]`: serve HTTPS, optionally asking for client certificates.
    pub tls: Option<serving::tls::TlsFiles>,
    /// `[[tls_clients]]`: OAuth clients authenticated by their certificate.
    pub tls_clients: Vec<crate::tls_clients::TlsClient>,
}

/// What the demo site's page needs to load the gateway's web SDK. The app
/// key of a web channel is public by nature: every visitor's browser gets it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSiteConfig {
    /// The gateway's base URL, where the SDK and the channel API live.
    pub gateway_url: String,
    pub app_key: String,
    #[serde(default = "web")]
    pub channel: String,
    pub connection: String,
}

fn web() -> String {
    "web".to_string()
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir: PathBuf::from("./deskbridge-data"),
            public_url: None,
            issuer: None,
            audience: "deskbridge".into(),
            customer_token_ttl_secs: 8 * 3600,
            access_token_ttl_secs: 3600,
            session_mode: SessionMode::Token,
            cookie_name: "deskbridge_session".into(),
            cookie_mode_accepts_jwts: false,
            site_origins: Vec::new(),
            insecure_cookies: false,
            signing_alg: SigningAlg::ES256,
            signing_key_file: None,
            server_secret_file: None,
            max_body_bytes: 16 * 1024,
            password_hash_concurrency: None,
            password_hash_queue: 32,
            password_hash_queue_per_address: 4,
            throttle: ThrottleConfig::default(),
            http: serving::Limits::default(),
            demo_site: None,
            tls: None,
            tls_clients: Vec::new(),
        }
    }
}

impl BackendConfig {
    /// Reads a TOML file; unknown keys are errors, so a typo is not silently ignored.
    pub fn from_file(path: &Path) -> Result<Self, BackendError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| BackendError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| match e {
            // Named once: "configuration: FILE: what is wrong".
            BackendError::Config(why) => BackendError::Config(format!("{}: {why}", path.display())),
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, BackendError> {
        let config: Self = toml::from_str(text).map_err(|e| BackendError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), BackendError> {
        let bad = |m: &str| Err(BackendError::Config(m.to_string()));
        if self.customer_token_ttl_secs == 0 || self.access_token_ttl_secs == 0 {
            return bad("token lifetimes must be at least one second");
        }
        if self.max_body_bytes < 256 {
            return bad("max_body_bytes must be at least 256");
        }
        if self.audience.is_empty() {
            return bad("audience must not be empty");
        }
        if self.password_hash_queue == 0 || self.password_hash_queue_per_address == 0 {
            return bad("password_hash_queue and password_hash_queue_per_address must be at least 1");
        }
        if self.password_hash_queue_per_address > self.password_hash_queue {
            return bad("password_hash_queue_per_address must not exceed password_hash_queue");
        }
        if let Some(origin) = self.site_origins.iter().find(|o| !is_origin(o)) {
            return bad(&format!(
                "site_origins: {origin:?} is not an origin such as https://shop.example.com (scheme, host, optional port; no path)"
            ));
        }
        if let Some((key, problem)) = self.throttle.problems().first() {
            return bad(&format!("throttle.{key} {problem}"));
        }
        if let Some((key, problem)) = self.http.problems().first() {
            return bad(&format!("http.{key} {problem}"));
        }
        if let Some(problem) = self.tls_clients.iter().find_map(|c| c.problem()) {
            return bad(&problem);
        }
        if !self.tls_clients.is_empty() && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
            return bad("tls_clients need [tls] with client_ca: the certificate is checked in the handshake");
        }
        if let Some(tls) = &self.tls
            && let Err(e) = serving::tls::check(tls)
        {
            return bad(&format!("tls: {e}"));
        }
        // Both name this server in tokens and discovery (RFC 8414 §2): a URL.
        for (key, value) in [("public_url", &self.public_url), ("issuer", &self.issuer)] {
            if let Some(url) = value
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return bad(&format!(
                    "{key} must be an http(s) URL, such as https://api.example.com"
                ));
            }
        }
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad("cookie_name must be letters, digits, '_' or '-'");
        }
        if let Some(site) = &self.demo_site
            // It goes into the page's Content-Security-Policy, so only plain URL characters.
            && !((site.gateway_url.starts_with("http://") || site.gateway_url.starts_with("https://"))
                && site.gateway_url.bytes().all(|b| b.is_ascii_alphanumeric() || b":/.-_[]".contains(&b)))
        {
            return bad("demo_site.gateway_url must be an http(s) origin such as http://127.0.0.1:8080");
        }
        Ok(())
    }

    /// True when a login answers with a cookie: a session in cookie mode,
    /// or the demo site's own session.
    pub fn login_sets_cookie(&self) -> bool {
        self.session_mode == SessionMode::Cookie || self.demo_site.is_some()
    }

    /// The origins whose pages may post state-changing requests: the
    /// backend's own and the configured `site_origins`.
    pub fn allowed_origins(&self) -> Vec<String> {
        let own = self.public_url();
        let own = match own.match_indices('/').nth(2) {
            Some((path_start, _)) => own[..path_start].to_string(),
            None => own,
        };
        std::iter::once(own).chain(self.site_origins.iter().cloned()).collect()
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| match self.tls {
                Some(_) => format!("https://{}", self.listen),
                None => format!("http://{}", self.listen),
            })
            .trim_end_matches('/')
            .to_string()
    }

    pub fn issuer(&self) -> String {
        self.issuer.clone().unwrap_or_else(|| self.public_url())
    }

    pub fn server_secret_path(&self) -> PathBuf {
        self.server_secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server.secret"))
    }
}

/// `scheme://host[:port]` as browsers send it in `Origin`: http(s), no
/// path, no trailing slash.
fn is_origin(origin: &str) -> bool {
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(BackendConfig::from_toml("listn = \"127.0.0.1:1\"").is_err());
        assert!(BackendConfig::from_toml("access_token_ttl_secs = 0").is_err());
        assert!(BackendConfig::from_toml("cookie_name = \"a b\"").is_err());
        assert!(BackendConfig::from_toml("[http]\nheader_read_timeout_secs = 0").is_err());
        assert!(BackendConfig::from_toml("[http]\nmax_connections = 0").is_err());
        assert!(BackendConfig::from_toml("[http]\nwrite_timeout_secs = 0").is_err());
        assert!(BackendConfig::from_toml("[http]\nmax_connections_per_address = 0").is_err());
        assert!(BackendConfig::from_toml("[http]\nbody_read_timeout = 5").is_err());
        assert!(BackendConfig::from_toml("[http]\nbody_read_timeout_secs = 5").is_ok());
        assert!(BackendConfig::from_toml("session_mode = \"cookie\"\nsigning_alg = \"EdDSA\"").is_ok());
        assert!(BackendConfig::from_toml("password_hash_queue = 0").is_err());
        assert!(BackendConfig::from_toml("password_hash_queue = 4\npassword_hash_queue_per_address = 5").is_err());
        assert!(BackendConfig::from_toml("site_origins = [\"https://shop.example.com/\"]").is_err());
        assert!(BackendConfig::from_toml("site_origins = [\"https://shop.example.com:8443\"]").is_ok());
    }

    #[test]
    fn issuer_defaults_to_public_url() -> Result<(), BackendError> {
        let c = BackendConfig::from_toml("listen = \"127.0.0.1:9000\"")?;
        assert_eq!(c.issuer(), "http://127.0.0.1:9000");
        let c = BackendConfig::from_toml("public_url = \"https://api.example.com/\"")?;
        assert_eq!(c.issuer(), "https://api.example.com");
        let c = BackendConfig::from_toml("public_url = \"https://example.com/api\"")?;
        assert_eq!(c.allowed_origins(), ["https://example.com"]);
        Ok(())
    }
}
