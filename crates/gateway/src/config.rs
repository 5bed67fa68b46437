//! The gateway's configuration: one TOML file. `check` reports every problem
//! with the key path it is at, so an operator can fix them all in one go.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Deserialize;

// The company connection's part lives with the code that calls a company.
pub use company::config::*;

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
    pub agents: AgentsConfig,
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    /// What the instances of one gateway share; absent, one instance runs
    /// alone and shares nothing.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: the Redis that instances share tokens, events,
/// invalidations and sign-in failures through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host[:port][/db]`.
    pub redis_url: SecretSource,
    /// Starts every key, so several gateways (or tests) can share one Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Names this instance in signals, leases and the instances table;
    /// default: the host name and process id.
    pub instance_id: Option<String>,
}

fn default_key_prefix() -> String {
    "deskbridge:".into()
}

/// `[agents]`: the roles agents can have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// The roles an operator gives agents (`agent add --role`) and names
    /// in actions' `roles` and `reveal_roles`. `admin` (the admin API) and
    /// `bot` (API principals that may not sign in to the console) are
    /// always roles too.
    pub roles: Vec<String>,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            roles: vec!["agent".into(), "supervisor".into(), "admin".into()],
        }
    }
}

impl AgentsConfig {
    /// Whether `role` is one an agent can have.
    pub fn has(&self, role: &str) -> bool {
        role == crate::agents::ADMIN_ROLE || role == crate::agents::BOT_ROLE || self.roles.iter().any(|r| r == role)
    }
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
    /// The origins (`scheme://host[:port]`) of the desks whose pages may
    /// frame the customer card at `/card`; none: no page may.
    pub card_origins: Vec<String>,
    /// `[console.oidc]`: agents sign in at the company's identity provider.
    pub oidc: Option<crate::oidc::OidcConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            secure_cookies: true,
            session_ttl_secs: 8 * 3600,
            throttle: login::ThrottleConfig::default(),
            card_origins: Vec::new(),
            oidc: None,
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
    /// `[server.tls]`: serve HTTPS with this certificate and key (reloaded
    /// on `SIGHUP`); absent, plain HTTP behind a TLS-terminating proxy.
    pub tls: Option<serving::tls::TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./deskbridge-data"),
            http: serving::Limits::default(),
            tls: None,
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
pub struct ChannelConfig {
    pub name: String,
    pub app_key: SecretSource,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
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
        if let Some(key) = &self.crypto.token_key {
            check_secret("crypto.token_key".into(), key, &mut fail, &mut warnings);
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
        if let Some(cluster) = &self.cluster {
            check_secret("cluster.redis_url".into(), &cluster.redis_url, &mut fail, &mut warnings);
            if let Ok(url) = cluster.redis_url.resolve() {
                let url = secrecy::ExposeSecret::expose_secret(&url);
                if !url.starts_with("redis://") {
                    // Never the URL itself: it may hold a password.
                    fail("cluster.redis_url".into(), "must be a redis:// URL".into());
                } else if let Err(e) = cluster::Cluster::check_url(url) {
                    fail("cluster.redis_url".into(), e.to_string());
                }
            }
            if cluster.key_prefix.is_empty() || cluster.key_prefix.len() > 64 {
                fail("cluster.key_prefix".into(), "must be 1 to 64 characters".into());
            }
            if cluster.instance_id.as_ref().is_some_and(|id| !valid_name(id)) {
                fail(
                    "cluster.instance_id".into(),
                    "letters, digits, '-' and '_' only, up to 64".into(),
                );
            }
            if self.crypto.token_key.is_none() {
                // Each instance would generate a key of its own into its
                // data dir, and none could open what another sealed.
                fail(
                    "crypto.token_key".into(),
                    "is required with [cluster]: every instance seals and opens the same tokens, so all must share one key".into(),
                );
            }
        }
        if !(60..=7 * 24 * 3600).contains(&self.console.session_ttl_secs) {
            fail(
                "console.session_ttl_secs".into(),
                "must be between 60 and 604800 (a week)".into(),
            );
        }
        for (i, role) in self.agents.roles.iter().enumerate() {
            if !valid_name(role) {
                fail(
                    format!("agents.roles[{i}]"),
                    "a role is 1-64 letters, digits, '-' or '_'".into(),
                );
            }
        }
        for (i, c) in self.connections.iter().enumerate() {
            for (j, a) in c.actions.iter().enumerate() {
                let named = a.roles.iter().flatten().map(|r| ("roles", r));
                for (key, role) in named.chain(a.reveal_roles.iter().map(|r| ("reveal_roles", r))) {
                    if !self.agents.has(role) {
                        fail(
                            format!("connections[{i}].actions[{j}].{key}"),
                            format!("{role:?} is not a role: add it to [agents] roles"),
                        );
                    }
                }
            }
            if let Some(name) = &c.console.profile_action
                && c.action(name).is_none_or(|a| {
                    a.kind != ActionKind::Read || a.input.values().any(|f| f.required && f.default.is_none())
                })
            {
                fail(
                    format!("connections[{i}].console.profile_action"),
                    format!("{name:?} must name a read action of this connection that needs no input"),
                );
            }
        }
        for (key, problem) in self.server.http.problems() {
            fail(format!("server.http.{key}"), problem.into());
        }
        if let Some(tls) = &self.server.tls
            && let Err(e) = serving::tls::check(tls)
        {
            fail("server.tls".into(), e);
        }
        for (i, origin) in self.console.card_origins.iter().enumerate() {
            if !is_origin(origin) {
                fail(
                    format!("console.card_origins[{i}]"),
                    "an origin is scheme://host[:port], no path".into(),
                );
            }
        }
        for (key, problem) in self.console.throttle.problems() {
            fail(format!("console.throttle.{key}"), problem.into());
        }
        if let Some(oidc) = &self.console.oidc {
            for (key, problem) in oidc.problems(&self.agents) {
                fail(format!("console.oidc.{key}"), problem);
            }
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
        check_connections(&self.connections, &mut fail, &mut warnings);
        let mut channel_names = HashSet::new();
        for (i, ch) in self.channels.iter().enumerate() {
            let at = |k: &str| format!("channels[{i}].{k}");
            if !valid_name(&ch.name) {
                fail(at("name"), "a name is 1-64 letters, digits, '-' or '_'".into());
            }
            if !channel_names.insert(ch.name.clone()) {
                fail(at("name"), format!("another channel is named {:?}", ch.name));
            }
            check_secret(at("app_key"), &ch.app_key, &mut fail, &mut warnings);
            for (j, origin) in ch.allowed_origins.iter().enumerate() {
                if !is_origin(origin) {
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

/// Whether `text` is a web origin exactly as a browser sends it in `Origin`:
/// `scheme://host[:port]`, no path, no trailing `/`, the default port left out.
pub fn is_origin(text: &str) -> bool {
    Url::parse(text).is_ok_and(|u| u.origin().ascii_serialization() == text)
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
            .replace("https://www.example.com", "https://www.example.com/page")
            + "[console]\ncard_origins = [\"https://desk.example.com/sidebar\"]\n";
        let problems = GatewayConfig::parse(&bad).unwrap_or_else(|p| panic!("{p:?}")).check();
        assert!(problems.iter().any(|p| p.path == "connections[0].actions[0].path"));
        assert!(
            problems
                .iter()
                .any(|p| p.path == "connections[0].actions[0].cache_ttl_secs")
        );
        assert!(problems.iter().any(|p| p.path == "channels[0].allowed_origins[0]"));
        assert!(problems.iter().any(|p| p.path == "console.card_origins[0]"));
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
