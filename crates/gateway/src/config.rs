//! The gateway's configuration: one TOML file. `check` reports every problem
//! with the key path it is at, so an operator can fix them all in one go.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;
use secrecy::SecretString;
use serde::Deserialize;

/// Where a secret comes from: `{ env = "NAME" }`, `{ file = "path" }`, or an
/// inline string (accepted with a warning, for local demos only).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SecretSource {
    Env { env: String },
    File { file: PathBuf },
    Inline(String),
}

/// Names where a secret comes from, never an inline value, so a config can
/// be logged with `{:?}`.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env { env } => write!(f, "{{ env = {env:?} }}"),
            Self::File { file } => write!(f, "{{ file = {:?} }}", file.display()),
            Self::Inline(_) => f.write_str("[redacted]"),
        }
    }
}

impl SecretSource {
    pub fn resolve(&self) -> Result<SecretString, String> {
        let value = match self {
            Self::Env { env } => std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))?,
            Self::File { file } => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            Self::Inline(v) => v.clone(),
        };
        if value.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(SecretString::from(value))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub crypto: CryptoConfig,
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
}

/// The agent console at `/console`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Marks the session cookie `Secure`. Only a plain-HTTP demo on
    /// loopback turns this off.
    pub secure_cookies: bool,
    /// How long a console sign-in lasts, in seconds.
    pub session_ttl_secs: u64,
    /// Throttling of failed console sign-ins, per agent name and per address.
    pub throttle: login::ThrottleConfig,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            secure_cookies: true,
            session_ttl_secs: 8 * 3600,
            throttle: login::ThrottleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Read deadlines and the connection cap (`[server.http]`).
    pub http: serving::Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./deskbridge-data"),
            http: serving::Limits::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path` or `postgres://user@host:port/database`; defaults to
    /// `sqlite://<data_dir>/gateway.db`.
    pub url: Option<String>,
    /// The most connections to a Postgres store (SQLite keeps at most 4).
    pub max_connections: u32,
    /// How long a request waits for a connection, and the longest a Postgres
    /// statement runs, before the store counts as unavailable (`503`).
    pub timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoConfig {
    /// 32 bytes, base64url, encrypting customer tokens at rest; generated
    /// into the data dir when absent.
    pub token_key: Option<SecretSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    pub name: String,
    pub base_url: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Calls in flight to this company at once; more wait their turn.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// The company's `/customer_authenticate`, used by `deskbridge check`.
    pub customer_login_url: Option<String>,
    pub system_auth: SystemAuthConfig,
    pub api_key: Option<ApiKeyConfig>,
    #[serde(default)]
    pub customer_auth: CustomerAuthConfig,
    pub identity: IdentityConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
}

fn default_timeout_ms() -> u64 {
    2000
}

fn default_max_concurrency() -> usize {
    64
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SystemAuthConfig {
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: SecretSource,
        #[serde(default)]
        auth_method: ClientAuthMethod,
        #[serde(default)]
        grant_type_in: GrantTypeIn,
        scope: Option<String>,
        audience: Option<String>,
        resource: Option<String>,
        /// Lifetime assumed when the token response says none and the token
        /// is not a JWT with `exp`.
        #[serde(default = "default_token_lifetime")]
        default_expires_in_secs: u64,
    },
    StaticBearer {
        token: SecretSource,
    },
    None,
}

fn default_token_lifetime() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum GrantTypeIn {
    #[default]
    Body,
    Query,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    #[serde(default = "default_api_key_header")]
    pub header: String,
    pub value: SecretSource,
}

fn default_api_key_header() -> String {
    contract::headers::API_KEY.into()
}

/// Where the customer's token travels on a backend call.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CustomerAuthPlacement {
    #[default]
    Header,
    Cookie,
    Body,
}

impl CustomerAuthPlacement {
    /// Why `token` cannot travel this way, if it cannot: a cookie value
    /// takes RFC 6265 cookie-octets only (no `;`, `,`, space, quote or
    /// backslash, which would add cookies of the caller's choosing), a
    /// header value visible ASCII only (no CR, LF or NUL); a JSON body
    /// takes any text.
    pub fn refuses(self, token: &str) -> Option<&'static str> {
        let cookie_octet = |b: u8| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        match self {
            Self::Cookie if !token.bytes().all(cookie_octet) => {
                Some("cannot travel in a cookie: only visible ASCII without space, '\"', ',', ';' or '\\' may")
            }
            Self::Header if !token.bytes().all(|b| b.is_ascii_graphic()) => {
                Some("cannot travel in a header: only visible ASCII without space may")
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerAuthConfig {
    #[serde(rename = "in")]
    pub placement: CustomerAuthPlacement,
    /// Header or cookie name.
    pub name: String,
    /// JSON Pointer of the body field, for `in = "body"`.
    pub pointer: String,
    /// How the token is written; `{token}` is replaced by it.
    pub format: String,
}

impl Default for CustomerAuthConfig {
    fn default() -> Self {
        Self {
            placement: CustomerAuthPlacement::Header,
            name: contract::headers::CUSTOMER_AUTH.into(),
            pointer: "/customer_auth".into(),
            format: "JWT {token}".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// Verify the customer's JWT from the company's JWKS; the key is a claim.
    #[default]
    Jwt,
    /// Take the channel's `customer_id`, checked for opacity.
    Opaque,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Opacity {
    #[default]
    Reject,
    Warn,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub mode: IdentityMode,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default = "default_claim")]
    pub claim: String,
    #[serde(default)]
    pub opacity: Opacity,
}

fn default_claim() -> String {
    "sub".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures (5xx, timeouts, connection errors) that open it.
    pub failure_threshold: u32,
    /// How long it stays open before one trial call.
    pub open_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub name: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    /// Output field -> JSON Pointer into the company's response; absent
    /// means the whole body.
    pub response: Option<BTreeMap<String, String>>,
    /// Seconds a successful answer is reused for the same conversation
    /// while its customer token stays the same; 0 = every run calls.
    #[serde(default)]
    pub cache_ttl_secs: u64,
}

/// Reused answers are a convenience for an agent re-opening a card, not a
/// copy of the company's data: a few minutes at most.
pub const MAX_CACHE_TTL_SECS: u64 = 300;

fn default_method() -> String {
    "POST".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    pub app_key: SecretSource,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// One thing wrong (or risky) in a configuration, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
    pub fatal: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = if self.fatal { "error" } else { "warning" };
        write!(f, "{level}: {}: {}", self.path, self.message)
    }
}

impl GatewayConfig {
    /// Parses TOML; a syntax or type error comes back as one problem with
    /// the line it is on.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    format!(
                        "line {}",
                        text.as_bytes()[..s.start.min(text.len())]
                            .iter()
                            .filter(|&&b| b == b'\n')
                            .count()
                            + 1
                    )
                })
                .unwrap_or_else(|| "file".into());
            vec![Problem {
                path: at,
                message: e.message().to_string(),
                fatal: true,
            }]
        })
    }

    pub fn load(path: &Path) -> Result<Self, Vec<Problem>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Problem {
                path: path.display().to_string(),
                message: e.to_string(),
                fatal: true,
            }]
        })?;
        Self::parse(&text)
    }

    pub fn store_url(&self) -> String {
        self.store
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.server.data_dir.join("gateway.db").display()))
    }

    /// How to reach the store.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            url: self.store_url(),
            max_connections: self.store.max_connections,
            timeout: std::time::Duration::from_millis(self.store.timeout_ms),
        }
    }

    /// Every problem, fatal or not.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut fail = |path: String, message: String| {
            problems.push(Problem {
                path,
                message,
                fatal: true,
            })
        };
        let mut warnings = Vec::new();
        let mut secret = |path: String, source: &SecretSource, fail: &mut dyn FnMut(String, String)| {
            if let Err(e) = source.resolve() {
                fail(path.clone(), e);
            }
            if matches!(source, SecretSource::Inline(_)) {
                warnings.push(Problem {
                    path,
                    message: "an inline secret; use { env = \"NAME\" } or { file = \"path\" } outside demos".into(),
                    fatal: false,
                });
            }
        };
        if let Some(key) = &self.crypto.token_key {
            secret("crypto.token_key".into(), key, &mut fail);
            if let Ok(value) = key.resolve() {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(secrecy::ExposeSecret::expose_secret(&value).trim());
                if decoded.map_or(true, |k| k.len() != 32) {
                    fail(
                        "crypto.token_key".into(),
                        "must be 32 bytes, base64url without padding".into(),
                    );
                }
            }
        }
        if !(60..=7 * 24 * 3600).contains(&self.console.session_ttl_secs) {
            fail(
                "console.session_ttl_secs".into(),
                "must be between 60 and 604800 (a week)".into(),
            );
        }
        for (key, problem) in self.server.http.problems() {
            fail(format!("server.http.{key}"), problem.into());
        }
        for (key, problem) in self.console.throttle.problems() {
            fail(format!("console.throttle.{key}"), problem.into());
        }
        for (key, problem) in self.audit.problems() {
            fail(format!("audit.{key}"), problem.into());
        }
        for (key, problem) in self.limits.problems(self.server.http.max_connections) {
            fail(format!("limits.{key}"), problem);
        }
        if self.store.url.is_some()
            && let Err(problem) = self.store_options().validate()
        {
            fail("store.url".into(), problem);
        }
        if !(1..=1000).contains(&self.store.max_connections) {
            fail("store.max_connections".into(), "must be between 1 and 1000".into());
        }
        if !(100..=600_000).contains(&self.store.timeout_ms) {
            fail("store.timeout_ms".into(), "must be between 100 and 600000".into());
        }
        let mut names = HashSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            let at = |k: &str| format!("connections[{i}].{k}");
            if !valid_name(&c.name) {
                fail(at("name"), "a name is 1-64 letters, digits, '-' or '_'".into());
            }
            if !names.insert(c.name.clone()) {
                fail(at("name"), format!("another connection is named {:?}", c.name));
            }
            check_url(&c.base_url, at("base_url"), &mut fail);
            if c.timeout_ms == 0 || c.timeout_ms > 120_000 {
                fail(at("timeout_ms"), "must be between 1 and 120000".into());
            }
            if c.max_concurrency == 0 {
                fail(at("max_concurrency"), "must be at least 1".into());
            }
            if c.breaker.failure_threshold == 0 || c.breaker.open_secs == 0 {
                fail(
                    at("breaker"),
                    "failure_threshold and open_secs must be at least 1".into(),
                );
            }
            if let Some(u) = &c.customer_login_url {
                check_url(u, at("customer_login_url"), &mut fail);
            }
            match &c.system_auth {
                SystemAuthConfig::Oauth2ClientCredentials {
                    token_url,
                    client_id,
                    client_secret,
                    ..
                } => {
                    check_url(token_url, at("system_auth.token_url"), &mut fail);
                    if client_id.is_empty() {
                        fail(at("system_auth.client_id"), "must not be empty".into());
                    }
                    secret(at("system_auth.client_secret"), client_secret, &mut fail);
                }
                SystemAuthConfig::StaticBearer { token } => secret(at("system_auth.token"), token, &mut fail),
                SystemAuthConfig::None => {}
            }
            if let Some(key) = &c.api_key {
                if reqwest::header::HeaderName::from_bytes(key.header.as_bytes()).is_err() {
                    fail(at("api_key.header"), "not a valid header name".into());
                }
                secret(at("api_key.value"), &key.value, &mut fail);
            }
            let ca = &c.customer_auth;
            if !ca.format.contains("{token}") {
                fail(at("customer_auth.format"), "must contain {token}".into());
            }
            if ca.placement == CustomerAuthPlacement::Body && !ca.pointer.starts_with('/') {
                fail(at("customer_auth.pointer"), "a JSON Pointer starts with '/'".into());
            }
            if ca.placement != CustomerAuthPlacement::Body
                && reqwest::header::HeaderName::from_bytes(ca.name.as_bytes()).is_err()
            {
                fail(at("customer_auth.name"), "not a valid header or cookie name".into());
            }
            if c.identity.mode == IdentityMode::Jwt {
                match &c.identity.jwks_url {
                    Some(u) => check_url(u, at("identity.jwks_url"), &mut fail),
                    None => fail(at("identity.jwks_url"), "required when mode = \"jwt\"".into()),
                }
                // Empty would accept tokens whose claim is empty, too.
                if c.identity.issuer.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    fail(at("identity.issuer"), "required (not empty) when mode = \"jwt\"".into());
                }
                if c.identity.audience.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    fail(
                        at("identity.audience"),
                        "required (not empty) when mode = \"jwt\"".into(),
                    );
                }
                if c.identity.claim.trim().is_empty() {
                    fail(at("identity.claim"), "must be a non-empty claim name".into());
                }
            }
            let mut actions = HashSet::new();
            for (j, a) in c.actions.iter().enumerate() {
                let at = |k: &str| format!("connections[{i}].actions[{j}].{k}");
                if !valid_name(&a.name) {
                    fail(at("name"), "a name is 1-64 letters, digits, '-' or '_'".into());
                }
                if !actions.insert(a.name.clone()) {
                    fail(at("name"), format!("another action is named {:?}", a.name));
                }
                if !matches!(a.method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                    fail(at("method"), "one of GET, POST, PUT, PATCH, DELETE".into());
                }
                if let Err(e) = check_action_path(&a.path) {
                    fail(at("path"), e);
                }
                if a.cache_ttl_secs > MAX_CACHE_TTL_SECS {
                    fail(at("cache_ttl_secs"), format!("at most {MAX_CACHE_TTL_SECS}"));
                }
                for (field, pointer) in a.response.iter().flatten() {
                    if !(pointer.is_empty() || pointer.starts_with('/')) {
                        fail(
                            at(&format!("response.{field}")),
                            "a JSON Pointer starts with '/'".into(),
                        );
                    }
                }
            }
        }
        let mut channel_names = HashSet::new();
        for (i, ch) in self.channels.iter().enumerate() {
            let at = |k: &str| format!("channels[{i}].{k}");
            if !valid_name(&ch.name) {
                fail(at("name"), "a name is 1-64 letters, digits, '-' or '_'".into());
            }
            if !channel_names.insert(ch.name.clone()) {
                fail(at("name"), format!("another channel is named {:?}", ch.name));
            }
            secret(at("app_key"), &ch.app_key, &mut fail);
            for (j, origin) in ch.allowed_origins.iter().enumerate() {
                if Url::parse(origin).map_or(true, |u| u.origin().ascii_serialization() != *origin) {
                    fail(
                        format!("channels[{i}].allowed_origins[{j}]"),
                        "an origin is scheme://host[:port], no path".into(),
                    );
                }
            }
        }
        problems.extend(warnings);
        problems
    }
}

/// A connection, channel or action name: 1-64 letters, digits, '-' or '_'.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_url(url: &str, path: String, fail: &mut dyn FnMut(String, String)) {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => fail(path, "must be an http or https URL with a host".into()),
        Err(e) => fail(path, format!("not a URL: {e}")),
    }
}

/// An action's path is fixed text under the base URL: nothing in it may
/// climb out of the base path or name another host.
pub(crate) fn check_action_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if path.contains("//") || path.contains('\\') || path.contains('?') || path.contains('#') || path.contains('%') {
        return Err("must not contain '//', '\\', '?', '#' or '%'".into());
    }
    // RFC 3986 path characters, unencoded: what an HTTP request line can carry as is.
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(*c)))
    {
        return Err(format!(
            "must not contain {c:?}: letters, digits and -._~!$&'()*+,;=:@ only"
        ));
    }
    if path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("must not contain '.' or '..' segments".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
[[connections]]
name = "acme"
base_url = "http://127.0.0.1:8081"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "http://127.0.0.1:8081/access_token"
client_id = "deskbridge"
client_secret = "inline-for-the-test"
[connections.identity]
jwks_url = "http://127.0.0.1:8081/.well-known/jwks.json"
issuer = "http://127.0.0.1:8081"
audience = "deskbridge"
[[connections.actions]]
name = "getprofile"
path = "/getprofile"
[[channels]]
name = "web"
app_key = { env = "DESKBRIDGE_TEST_UNSET_VARIABLE" }
allowed_origins = ["https://www.example.com"]
"#;

    #[test]
    fn check_names_every_problem_by_key_path() {
        let config = GatewayConfig::parse(GOOD).unwrap_or_else(|p| panic!("{p:?}"));
        let problems = config.check();
        let paths: Vec<_> = problems.iter().map(|p| (p.path.as_str(), p.fatal)).collect();
        assert_eq!(
            paths,
            vec![
                ("channels[0].app_key", true),
                ("connections[0].system_auth.client_secret", false)
            ]
        );
        let bad = GOOD
            .replace("path = \"/getprofile\"", "path = \"/../admin\"\ncache_ttl_secs = 301")
            .replace("https://www.example.com", "https://www.example.com/page");
        let problems = GatewayConfig::parse(&bad).unwrap_or_else(|p| panic!("{p:?}")).check();
        assert!(problems.iter().any(|p| p.path == "connections[0].actions[0].path"));
        assert!(
            problems
                .iter()
                .any(|p| p.path == "connections[0].actions[0].cache_ttl_secs")
        );
        assert!(problems.iter().any(|p| p.path == "channels[0].allowed_origins[0]"));
    }

    #[test]
    fn syntax_and_unknown_keys_are_reported_with_a_line() {
        let problems = GatewayConfig::parse("[server]\nlisten = \"127.0.0.1:0\"\nlistn = 1\n")
            .err()
            .unwrap_or_default();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].path.starts_with("line 3"), "{problems:?}");
    }

    #[test]
    fn debug_output_never_shows_an_inline_secret() {
        let config = GatewayConfig::parse(GOOD).unwrap_or_else(|p| panic!("{p:?}"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("inline-for-the-test"), "{printed}");
        assert!(printed.contains("[redacted]") && printed.contains("DESKBRIDGE_TEST_UNSET_VARIABLE"));
    }

    #[test]
    fn action_paths_cannot_escape_the_base_url() {
        for bad in [
            "getprofile",
            "//evil.com/x",
            "/a/../b",
            "/a?x=1",
            "/a%2f..",
            "/./a",
            "/a b",
            "/a\nb",
            "/a\0b",
            "/é",
        ] {
            assert!(check_action_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/v1/getprofile",
            "/v1/customers:lookup",
            "/profile.json",
            "/a_b-c~d/@me",
        ] {
            assert!(check_action_path(good).is_ok(), "{good}");
            assert!(good.parse::<http::Uri>().is_ok(), "{good}");
        }
    }
}
