//! A company connection as configured (`[[connections]]` of the gateway's
//! TOML file), and the checks of it that the gateway and `check` share.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
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
    /// The company's limits on this connection.
    #[serde(default)]
    pub limits: CompanyLimits,
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    /// How the agent console shows this connection's conversations.
    #[serde(default)]
    pub console: ConnectionConsole,
    /// `[connections.tls]`: the CAs trusted and the client certificate
    /// shown, for token requests and action calls alike.
    pub tls: Option<crate::egress::ConnectionTls>,
    /// An egress proxy (`http://host:port`) for every call to this company.
    pub proxy: Option<String>,
    /// Hosts reached directly despite `proxy`.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

/// `[connections.console]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConsole {
    /// The read action whose answer heads a conversation (name, tier);
    /// default: `getprofile` when there is one.
    pub profile_action: Option<String>,
}

impl ConnectionConfig {
    pub fn action(&self, name: &str) -> Option<&ActionConfig> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// The action whose answer heads a conversation, if any.
    pub fn profile_action(&self) -> Option<&ActionConfig> {
        match &self.console.profile_action {
            Some(name) => self.action(name),
            None => self.action("getprofile"),
        }
    }
}

fn default_timeout_ms() -> u64 {
    2000
}

fn default_max_concurrency() -> usize {
    64
}

// One per connection, read once at load: the size of a variant is no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SystemAuthConfig {
    /// One token for the platform (RFC 6749 §4.4), sent with the customer's.
    Oauth2ClientCredentials(OauthClient),
    /// Per action, the customer's token exchanged (RFC 8693) for one that
    /// names the acting agent or bot in `act` and holds only the action's
    /// `scope`: the company sees one token, "agent X acting for customer Y".
    TokenExchange(OauthClient),
    StaticBearer {
        token: SecretSource,
    },
    None,
}

impl SystemAuthConfig {
    /// The OAuth client, for either grant.
    pub fn oauth(&self) -> Option<&OauthClient> {
        match self {
            Self::Oauth2ClientCredentials(client) | Self::TokenExchange(client) => Some(client),
            Self::StaticBearer { .. } | Self::None => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Oauth2ClientCredentials(_) => "oauth2_client_credentials",
            Self::TokenExchange(_) => "token_exchange",
            Self::StaticBearer { .. } => "static_bearer",
            Self::None => "none",
        }
    }
}

/// The platform as an OAuth client of the company's token endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OauthClient {
    /// The token endpoint; found from `issuer` when left out.
    pub token_url: Option<String>,
    /// The authorization server: its metadata (RFC 8414, or OpenID
    /// discovery) gives the token endpoint and the methods it takes.
    pub issuer: Option<String>,
    pub client_id: String,
    /// For `client_secret_basic` and `client_secret_post`.
    pub client_secret: Option<SecretSource>,
    #[serde(default)]
    pub auth_method: ClientAuthMethod,
    /// For `private_key_jwt`: a PEM private key, EC P-256 (signs ES256)
    /// or RSA (signs RS256).
    pub private_key: Option<SecretSource>,
    /// For `private_key_jwt`: the `kid` of the assertions' header, the
    /// key's id at the company.
    pub key_id: Option<String>,
    #[serde(default)]
    pub grant_type_in: GrantTypeIn,
    /// Client credentials: the scope asked for. Token exchange: the scope
    /// of an action that names none.
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    /// Token exchange: what the customer's token is, as the company's
    /// token endpoint names it.
    pub subject_token_type: Option<SubjectTokenType>,
    /// Lifetime assumed when the token response says none and the token
    /// is not a JWT with `exp`.
    #[serde(default = "default_token_lifetime")]
    pub default_expires_in_secs: u64,
    /// How the company says this token expired, besides `401
    /// invalid_token`: then it is renewed and the call sent once more.
    pub expired_when: Option<ExpiredWhen>,
}

/// RFC 8693 §3 token type identifiers a customer's token may be.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubjectTokenType {
    #[default]
    Jwt,
    AccessToken,
    IdToken,
}

impl SubjectTokenType {
    pub fn uri(self) -> &'static str {
        match self {
            Self::Jwt => "urn:ietf:params:oauth:token-type:jwt",
            Self::AccessToken => "urn:ietf:params:oauth:token-type:access_token",
            Self::IdToken => "urn:ietf:params:oauth:token-type:id_token",
        }
    }
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
    /// A JWT signed with the platform's private key (RFC 7523 §2.2).
    PrivateKeyJwt,
    /// RFC 8705 §2.1: the client certificate of `[connections.tls]` is the
    /// credential; `client_id` goes in the body, no secret anywhere.
    TlsClientAuth,
}

impl ClientAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
        }
    }
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
    /// How the company says the customer's login expired, besides its
    /// usual refusal: then the channel is asked for a fresh token.
    pub expired_when: Option<ExpiredWhen>,
}

/// `expired_when = { status = [401, 403], pointer = "/error/code", equals = ["TOKEN_EXPIRED"] }`:
/// a company's own way of saying a token expired.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpiredWhen {
    /// The statuses it comes with; empty: any, a `200` with an error body too.
    #[serde(default)]
    pub status: Vec<u16>,
    /// Where the word is in the JSON body.
    pub pointer: String,
    /// The words (or numbers, as written) that mean "expired".
    pub equals: Vec<String>,
}

impl ExpiredWhen {
    /// Whether an answer with `status` and `body` says so.
    pub fn matches(&self, status: u16, body: &[u8]) -> bool {
        if !self.status.is_empty() && !self.status.contains(&status) {
            return false;
        }
        let Some(value) = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|doc| doc.pointer(&self.pointer).cloned())
        else {
            return false;
        };
        let text = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        self.equals.contains(&text)
    }

    fn problems(&self, at: String, fail: &mut dyn FnMut(String, String)) {
        if !self.pointer.starts_with('/') {
            fail(format!("{at}.pointer"), "a JSON Pointer starts with '/'".into());
        }
        if self.equals.is_empty() {
            fail(format!("{at}.equals"), "at least one value".into());
        }
        if self.status.iter().any(|s| !(100..=599).contains(s)) {
            fail(format!("{at}.status"), "HTTP statuses are 100-599".into());
        }
    }
}

/// The customer's token as it travels to the company.
#[derive(Debug, Clone, PartialEq)]
pub enum PlacedToken {
    /// The value of the header named `customer_auth.name`.
    Header(String),
    /// The value of the `Cookie` header.
    Cookie(String),
    /// The JSON body.
    Body(serde_json::Value),
}

impl CustomerAuthConfig {
    /// Where and as what `token` goes, as configured.
    pub fn place(&self, token: &str) -> PlacedToken {
        match self.placement {
            CustomerAuthPlacement::Header => PlacedToken::Header(self.format.replace("{token}", token)),
            CustomerAuthPlacement::Cookie => PlacedToken::Cookie(format!("{}={token}", self.name)),
            CustomerAuthPlacement::Body => {
                let mut doc = serde_json::Value::Object(Default::default());
                crate::connector::set_pointer(&mut doc, &self.pointer, serde_json::Value::String(token.to_string()));
                PlacedToken::Body(doc)
            }
        }
    }
}

impl Default for CustomerAuthConfig {
    fn default() -> Self {
        Self {
            placement: CustomerAuthPlacement::Header,
            name: contract::headers::CUSTOMER_AUTH.into(),
            pointer: "/customer_auth".into(),
            format: "JWT {token}".into(),
            expired_when: None,
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

/// `[connections.limits]`: how fast the company allows calls. Absent, calls
/// are limited only by `max_concurrency` and the company's own answers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CompanyLimits {
    /// Calls per second, sustained (a token bucket).
    pub rate_per_second: Option<u32>,
    /// Calls at once above the rate; default: the rate.
    pub burst: Option<u32>,
}

/// The longest a company's `Retry-After` pauses a connection: a longer one
/// is read as this (an hour), so a mistaken header cannot stop it for days.
pub const MAX_PAUSE_SECS: u64 = 3600;

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
    /// `read` (the default) or `write`: a write is never retried or
    /// cached, and always carries the caller's `Idempotency-Key`.
    #[serde(default)]
    pub kind: ActionKind,
    /// For people: what the action does, shown by consoles and in the
    /// OpenAPI document.
    pub description: Option<String>,
    /// The typed fields a caller sends as `{"input": {…}}`.
    #[serde(default)]
    pub input: BTreeMap<String, crate::action::InputField>,
    /// Query parameter -> input field.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON Pointer in the request body -> input field.
    #[serde(default)]
    pub body: BTreeMap<String, String>,
    /// The agent roles that may run it; absent: every role.
    pub roles: Option<Vec<String>>,
    /// Who may run it: `agent`, `customer`, `bot`.
    #[serde(default = "default_callers")]
    pub callers: Vec<Caller>,
    /// JSON Pointer (`*` for each array element) -> mask, for every audience.
    #[serde(default)]
    pub redact: BTreeMap<String, Mask>,
    /// Per audience, masks that replace `redact` for it.
    #[serde(default)]
    pub redact_for: BTreeMap<crate::action::Audience, BTreeMap<String, Mask>>,
    /// The roles that may reveal a masked value, with a stated reason.
    #[serde(default = "default_reveal_roles")]
    pub reveal_roles: Vec<String>,
    /// This action's own limit for each call, for slow company operations;
    /// default: the connection's `timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// With token exchange: the scope the exchanged token is narrowed to;
    /// default: `system_auth.scope`.
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    #[default]
    Read,
    Write,
}

/// Who runs an action: an agent (person), a customer from their own
/// session, or a bot (an API principal with the role `bot`).
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Caller {
    Agent,
    Customer,
    Bot,
}

impl Caller {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Customer => "customer",
            Self::Bot => "bot",
        }
    }

    /// The audience that sees what this caller runs.
    pub fn audience(self) -> crate::action::Audience {
        match self {
            Self::Agent => crate::action::Audience::Agent,
            Self::Customer => crate::action::Audience::Customer,
            Self::Bot => crate::action::Audience::Bot,
        }
    }
}

/// How a value is masked.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mask {
    /// `••••` and the last four characters (all of it masked when shorter).
    Last4,
    /// `••••`.
    Hide,
}

fn default_callers() -> Vec<Caller> {
    vec![Caller::Agent]
}

fn default_reveal_roles() -> Vec<String> {
    vec!["supervisor".into(), "admin".into()]
}

/// Reused answers are a convenience for an agent re-opening a card, not a
/// copy of the company's data: a few minutes at most.
pub const MAX_CACHE_TTL_SECS: u64 = 300;

fn default_method() -> String {
    "POST".into()
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

/// A connection, channel or action name: 1-64 letters, digits, '-' or '_'.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn check_url(url: &str, path: String, fail: &mut dyn FnMut(String, String)) {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => fail(path, "must be an http or https URL with a host".into()),
        Err(e) => fail(path, format!("not a URL: {e}")),
    }
}

/// An action's path is fixed text under the base URL, with `{field}`
/// placeholders for input fields: nothing in it may climb out of the base
/// path or name another host (a field's value is percent-encoded into one
/// segment, and may be neither empty nor a dot segment).
pub fn check_action_path(template: &str) -> Result<(), String> {
    // Each placeholder stands for one encoded value: checked as if it were "x".
    let mut path = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or("a '{' without its '}': placeholders are {field}")?;
        let name = &rest[open + 1..open + close];
        if !valid_name(name) {
            return Err(format!(
                "{{{name}}}: a placeholder names an input field (letters, digits, '-', '_')"
            ));
        }
        path.push('x');
        rest = &rest[open + close + 1..];
    }
    path.push_str(rest);
    if path.contains('}') {
        return Err("a '}' without its '{': placeholders are {field}".into());
    }
    let path = path.as_str();
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

/// Every problem of `connections` (at `connections[i].…`), fatal ones first.
pub fn connection_problems(connections: &[ConnectionConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut fail = |path: String, message: String| {
        problems.push(Problem {
            path,
            message,
            fatal: true,
        })
    };
    check_connections(connections, &mut fail, &mut warnings);
    problems.extend(warnings);
    problems
}

/// Reports each connection's problems: fatal ones to `fail`, risky ones
/// (inline secrets) into `warnings`.
pub fn check_connections(
    connections: &[ConnectionConfig],
    fail: &mut dyn FnMut(String, String),
    warnings: &mut Vec<Problem>,
) {
    let mut names = HashSet::new();
    for (i, c) in connections.iter().enumerate() {
        let at = |k: &str| format!("connections[{i}].{k}");
        if !valid_name(&c.name) {
            fail(at("name"), "a name is 1-64 letters, digits, '-' or '_'".into());
        }
        if !names.insert(c.name.clone()) {
            fail(at("name"), format!("another connection is named {:?}", c.name));
        }
        check_url(&c.base_url, at("base_url"), fail);
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
        if c.limits.rate_per_second == Some(0) || c.limits.burst == Some(0) {
            fail(at("limits"), "rate_per_second and burst must be at least 1".into());
        }
        if c.limits.burst.is_some() && c.limits.rate_per_second.is_none() {
            fail(at("limits.burst"), "needs rate_per_second".into());
        }
        if let Some(u) = &c.customer_login_url {
            check_url(u, at("customer_login_url"), fail);
        }
        if let SystemAuthConfig::Oauth2ClientCredentials(OauthClient {
            subject_token_type: Some(_),
            ..
        }) = &c.system_auth
        {
            fail(
                at("system_auth.subject_token_type"),
                "only used with kind = \"token_exchange\"".into(),
            );
        }
        if !matches!(c.system_auth, SystemAuthConfig::TokenExchange(_)) {
            for (j, _) in c.actions.iter().enumerate().filter(|(_, a)| a.scope.is_some()) {
                fail(
                    format!("connections[{i}].actions[{j}].scope"),
                    "only used when system_auth has kind = \"token_exchange\"".into(),
                );
            }
        }
        match &c.system_auth {
            SystemAuthConfig::Oauth2ClientCredentials(client) | SystemAuthConfig::TokenExchange(client) => {
                let OauthClient {
                    token_url,
                    issuer,
                    client_id,
                    client_secret,
                    auth_method,
                    private_key,
                    key_id,
                    expired_when,
                    ..
                } = client;
                if let Some(e) = expired_when {
                    e.problems(at("system_auth.expired_when"), fail);
                }
                match (token_url, issuer) {
                    (None, None) => fail(
                        at("system_auth.token_url"),
                        "required, unless issuer is set to find it by discovery".into(),
                    ),
                    (url, issuer) => {
                        if let Some(u) = url {
                            check_url(u, at("system_auth.token_url"), fail);
                        }
                        if let Some(u) = issuer {
                            check_url(u, at("system_auth.issuer"), fail);
                        }
                    }
                }
                if client_id.is_empty() {
                    fail(at("system_auth.client_id"), "must not be empty".into());
                }
                let method = auth_method.as_str();
                match (auth_method, client_secret, private_key) {
                    (ClientAuthMethod::TlsClientAuth, None, None) => {
                        if c.tls.as_ref().is_none_or(|t| t.client_cert.is_none()) {
                            fail(
                                at("system_auth.auth_method"),
                                "tls_client_auth needs [connections.tls] client_cert and client_key".into(),
                            );
                        }
                        if token_url.as_deref().is_some_and(|u| !u.starts_with("https://")) {
                            fail(
                                at("system_auth.token_url"),
                                "tls_client_auth needs an https token_url (the certificate is the credential)".into(),
                            );
                        }
                    }
                    (ClientAuthMethod::TlsClientAuth, _, _) => fail(
                        at("system_auth.auth_method"),
                        "tls_client_auth sends no secret or key: leave client_secret and private_key out".into(),
                    ),
                    (ClientAuthMethod::PrivateKeyJwt, None, Some(key)) => {
                        check_secret(at("system_auth.private_key"), key, fail, warnings);
                        if let Ok(pem) = key.resolve()
                            && let Err(e) = crate::assertion::key_of(pem.expose_secret())
                        {
                            fail(at("system_auth.private_key"), e);
                        }
                    }
                    (ClientAuthMethod::PrivateKeyJwt, _, None) => fail(
                        at("system_auth.private_key"),
                        "required with auth_method = \"private_key_jwt\"".into(),
                    ),
                    (ClientAuthMethod::PrivateKeyJwt, Some(_), Some(_)) => fail(
                        at("system_auth.client_secret"),
                        "not used with auth_method = \"private_key_jwt\": leave it out".into(),
                    ),
                    (_, Some(secret), None) => check_secret(at("system_auth.client_secret"), secret, fail, warnings),
                    (_, None, _) => fail(
                        at("system_auth.client_secret"),
                        format!("required with auth_method = \"{method}\""),
                    ),
                    (_, Some(_), Some(_)) => fail(
                        at("system_auth.private_key"),
                        format!("only used with auth_method = \"private_key_jwt\", not {method:?}"),
                    ),
                }
                if key_id.is_some() && *auth_method != ClientAuthMethod::PrivateKeyJwt {
                    fail(
                        at("system_auth.key_id"),
                        "only used with auth_method = \"private_key_jwt\"".into(),
                    );
                }
            }
            SystemAuthConfig::StaticBearer { token } => check_secret(at("system_auth.token"), token, fail, warnings),
            SystemAuthConfig::None => {}
        }
        if let Some(key) = &c.api_key {
            if reqwest::header::HeaderName::from_bytes(key.header.as_bytes()).is_err() {
                fail(at("api_key.header"), "not a valid header name".into());
            }
            check_secret(at("api_key.value"), &key.value, fail, warnings);
        }
        if let Some(tls) = &c.tls
            && let Err(e) = crate::egress::client_tls(Some(tls))
        {
            fail(at("tls"), e);
        }
        if let Some(proxy) = &c.proxy
            && let Err(e) = crate::egress::parse_proxy(proxy)
        {
            fail(at("proxy"), e);
        }
        if !c.no_proxy.is_empty() && c.proxy.is_none() {
            fail(at("no_proxy"), "needs proxy".into());
        }
        let ca = &c.customer_auth;
        if let Some(e) = &ca.expired_when {
            e.problems(at("customer_auth.expired_when"), fail);
        }
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
                Some(u) => check_url(u, at("identity.jwks_url"), fail),
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
            crate::action::action_problems(a, &c.customer_auth, &mut |k, m| fail(at(&k), m));
            if a.callers.is_empty() {
                fail(at("callers"), "at least one of agent, customer, bot".into());
            }
            if a.timeout_ms.is_some_and(|t| t == 0 || t > 120_000) {
                fail(at("timeout_ms"), "must be between 1 and 120000".into());
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
}

/// A secret that cannot be read is fatal; an inline one is a warning.
pub fn check_secret(
    path: String,
    source: &SecretSource,
    fail: &mut dyn FnMut(String, String),
    warnings: &mut Vec<Problem>,
) {
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
}
