//! The rules and the HTTP calls they judge. Each call is made once and
//! remembered, so rules that look at the same answer agree on it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clock::{Clock, SystemClock};
use company::action;
use company::assertion::AssertionSigner;
use company::config::{
    ActionKind, ClientAuthMethod, ConnectionConfig, CustomerAuthPlacement, IdentityMode, OauthClient, PlacedToken,
    SystemAuthConfig,
};
use company::system_token::{Exchange, Grant};
use contract::{AccessTokenResponse, Refused};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, SET_COOKIE,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::inputs::Plan;
use crate::{CheckError, Status, TestUser};

/// Login and token calls may hash a password; give them time.
const AUTH_TIMEOUT: Duration = Duration::from_secs(15);
/// Past this, a customer token's lifetime is a warning.
const LONG_LIFETIME_SECS: u64 = 24 * 3600;
/// The grant type nobody supports.
const UNKNOWN_GRANT: &str = "urn:deskbridge:unknown";
/// The most failed logins `--provoke-limits` makes (of one made-up user).
const MAX_PROVOKING_LOGINS: u32 = 8;

/// The actor `check` names in a token exchange.
const CHECK_ACTOR: &str = "agent:deskbridge-check";

/// What a token request of the check asks for.
#[derive(Clone, Copy)]
enum Asked<'a> {
    /// The connection's own grant: client credentials, or for token
    /// exchange the first test customer's token (changed, when `forged`)
    /// with `scope`.
    Configured { scope: Option<&'a str>, forged: bool },
    /// A grant type nobody supports.
    UnknownGrant,
}

const CONFIGURED: Asked<'static> = Asked::Configured {
    scope: None,
    forged: false,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rule {
    LoginTestUsers,
    LoginCredential,
    LoginLifetime,
    LoginJwtVerifies,
    LoginWrongPassword,
    LoginNoEnumeration,
    IdentifierConsistent,
    IdentifierUnique,
    IdentifierOpaque,
    SystemTokenIssued,
    SystemWrongSecret,
    SystemUnknownGrant,
    SystemNoStore,
    SystemAuthMethods,
    SystemReplayedAssertion,
    SystemExchangeForgedSubject,
    SystemExchangeOutOfScope,
    SystemForeignCertificate,
    Action(usize, Probe),
    TransportPlainHttp,
    TransportRetryAfter,
}

impl Rule {
    /// The group `--only` selects this rule by.
    pub(crate) fn group(self) -> crate::Group {
        use crate::Group;
        match self {
            Self::LoginTestUsers
            | Self::LoginCredential
            | Self::LoginLifetime
            | Self::LoginJwtVerifies
            | Self::LoginWrongPassword
            | Self::LoginNoEnumeration => Group::Login,
            Self::IdentifierConsistent | Self::IdentifierUnique | Self::IdentifierOpaque => Group::Identifier,
            Self::SystemTokenIssued
            | Self::SystemWrongSecret
            | Self::SystemUnknownGrant
            | Self::SystemNoStore
            | Self::SystemAuthMethods
            | Self::SystemReplayedAssertion
            | Self::SystemExchangeForgedSubject
            | Self::SystemExchangeOutOfScope
            | Self::SystemForeignCertificate => Group::System,
            Self::Action(..) => Group::Action,
            Self::TransportPlainHttp | Self::TransportRetryAfter => Group::Transport,
        }
    }
}

/// What one action rule does to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Probe {
    Succeeds,
    MissingBearer,
    WrongBearer,
    MissingApiKey,
    WrongApiKey,
    MissingCustomerToken,
    TamperedCustomerToken,
    Distinguishable,
}

const PROBES: [Probe; 8] = [
    Probe::Succeeds,
    Probe::MissingBearer,
    Probe::WrongBearer,
    Probe::MissingApiKey,
    Probe::WrongApiKey,
    Probe::MissingCustomerToken,
    Probe::TamperedCustomerToken,
    Probe::Distinguishable,
];

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Self::Succeeds => "succeeds",
            Self::MissingBearer => "missing_bearer",
            Self::WrongBearer => "wrong_bearer",
            Self::MissingApiKey => "missing_api_key",
            Self::WrongApiKey => "wrong_api_key",
            Self::MissingCustomerToken => "missing_customer_token",
            Self::TamperedCustomerToken => "tampered_customer_token",
            Self::Distinguishable => "distinguishable",
        }
    }
}

/// Every rule for this connection, in the order they run.
pub(crate) fn plan(conn: &ConnectionConfig) -> Vec<Rule> {
    let mut plan = vec![
        Rule::LoginTestUsers,
        Rule::LoginCredential,
        Rule::LoginLifetime,
        Rule::LoginJwtVerifies,
        Rule::LoginWrongPassword,
        Rule::LoginNoEnumeration,
        Rule::IdentifierConsistent,
        Rule::IdentifierUnique,
        Rule::IdentifierOpaque,
        Rule::SystemTokenIssued,
        Rule::SystemWrongSecret,
        Rule::SystemUnknownGrant,
        Rule::SystemNoStore,
        Rule::SystemAuthMethods,
    ];
    // Only a connection that signs assertions has one to replay.
    if conn
        .system_auth
        .oauth()
        .is_some_and(|c| c.auth_method == ClientAuthMethod::PrivateKeyJwt)
    {
        plan.push(Rule::SystemReplayedAssertion);
    }
    if let SystemAuthConfig::TokenExchange(_) = conn.system_auth {
        plan.push(Rule::SystemExchangeForgedSubject);
        plan.push(Rule::SystemExchangeOutOfScope);
    }
    // Only a connection that shows a client certificate has one to forge.
    if conn.tls.as_ref().is_some_and(|t| t.client_cert.is_some()) {
        plan.push(Rule::SystemForeignCertificate);
    }
    for i in 0..conn.actions.len() {
        plan.extend(PROBES.iter().map(|p| Rule::Action(i, *p)));
    }
    plan.push(Rule::TransportPlainHttp);
    // Last: provoking a limit (with --provoke-limits) may hold this address
    // back for a while, and no rule after it should pay for that.
    plan.push(Rule::TransportRetryAfter);
    plan
}

pub(crate) struct Verdict {
    pub(crate) status: Status,
    pub(crate) evidence: String,
}

fn pass(evidence: impl Into<String>) -> Verdict {
    Verdict {
        status: Status::Pass,
        evidence: evidence.into(),
    }
}

fn warn(evidence: impl Into<String>) -> Verdict {
    Verdict {
        status: Status::Warn,
        evidence: evidence.into(),
    }
}

fn fail(evidence: impl Into<String>) -> Verdict {
    Verdict {
        status: Status::Fail,
        evidence: evidence.into(),
    }
}

fn skip(evidence: impl Into<String>) -> Verdict {
    Verdict {
        status: Status::Skip,
        evidence: evidence.into(),
    }
}

/// An HTTP answer, kept whole so several rules can look at it.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    /// Whose credential the gateway would blame for this refusal.
    fn blame(&self) -> Option<Refused> {
        let challenge = self.challenge();
        contract::whose_refusal(
            self.status,
            self.error_code().as_deref(),
            challenge.as_ref().map(|c| c.scheme.as_str()),
            challenge.as_ref().and_then(|c| c.error.as_deref()),
        )
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body's `error` code, if it is a short token; anything else
    /// (which could echo input back) is not repeated.
    fn error_code(&self) -> Option<String> {
        let value = self.json()?;
        let code = value.get("error")?.as_str()?;
        Some(printable_token(code).unwrap_or_else(|| "(an unprintable error code)".into()))
    }

    /// `WWW-Authenticate`: its scheme and its `error` parameter, nothing else.
    fn challenge(&self) -> Option<Challenge> {
        let header = self.header("www-authenticate")?;
        let scheme = header.split_whitespace().next().unwrap_or_default();
        Some(Challenge {
            scheme: printable_token(scheme).unwrap_or_else(|| "?".into()),
            error: company::system_token::challenge_error(header).and_then(|e| printable_token(&e)),
        })
    }

    /// `HTTP 401 invalid_token, WWW-Authenticate: Bearer error=invalid_token`.
    fn describe(&self) -> String {
        let mut out = format!("HTTP {}", self.status);
        if let Some(code) = self.error_code() {
            out.push(' ');
            out.push_str(&code);
        }
        if let Some(c) = self.challenge() {
            out.push_str(&format!(", WWW-Authenticate: {}", c.scheme));
            if let Some(e) = c.error {
                out.push_str(&format!(" error={e}"));
            }
        }
        out
    }
}

struct Challenge {
    scheme: String,
    error: Option<String>,
}

/// The token a token endpoint's answer issues, or what is wrong with it.
fn issued_token(reply: &Reply) -> Result<AccessTokenResponse, String> {
    if reply.status != 200 {
        return Err(reply.describe());
    }
    let parsed = serde_json::from_slice::<AccessTokenResponse>(&reply.body).map_err(|_| {
        "HTTP 200, but not a token response (token_type, access_token, expires_in as a number)".to_string()
    })?;
    if !parsed.token_type.eq_ignore_ascii_case("bearer") {
        let shown = printable_token(&parsed.token_type).unwrap_or_else(|| "?".into());
        return Err(format!("token_type {shown}, not Bearer"));
    }
    if parsed.access_token.is_empty() {
        return Err("an empty access_token".into());
    }
    Ok(parsed)
}

fn printable_token(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:/+".contains(&b)))
        .then(|| s.to_string())
}

/// The customer's credential as the login returned it.
#[derive(Clone)]
enum Credential {
    Jwt(String),
    Cookie {
        name: String,
        value: String,
        max_age: Option<u64>,
        has_expires: bool,
    },
}

impl Credential {
    /// What the gateway would pass on: the JWT, or the cookie's value.
    fn token(&self) -> &str {
        match self {
            Self::Jwt(t) => t,
            Self::Cookie { value, .. } => value,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Jwt(_) => "a JWT in the body".into(),
            Self::Cookie { name, .. } => format!("session cookie {name}"),
        }
    }
}

struct Login {
    credential: Option<Credential>,
    expires_in: Option<u64>,
}

/// The decoded, unverified parts of a JWT.
fn jwt_parts(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let decode = |p: &str| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let header = decode(parts.next()?)?;
    let claims = decode(parts.next()?)?;
    parts.next()?;
    Some((header, claims))
}

fn looks_like_jwt(s: &str) -> bool {
    s.split('.').count() == 3 && jwt_parts(s).is_some()
}

fn now_secs() -> u64 {
    SystemClock.unix_secs()
}

/// Not a secret, only distinct from every real value.
fn nonce() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemClock.now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", h.finish())
}

/// A header value as evidence: printable and short, else described.
fn shown_header(value: &HeaderValue) -> String {
    match value.to_str() {
        Ok(text) if text.len() <= 64 => format!("{text:?}"),
        Ok(text) => format!("{} characters", text.len()),
        Err(_) => "(not text)".into(),
    }
}

/// A client as the connection's, showing a self-signed certificate the
/// company never issued. The key and certificate live in files only while
/// the client is built (`client_tls` reads PEM files).
fn foreign_certificate_client(tls: &company::egress::ConnectionTls) -> Result<reqwest::Client, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(vec!["deskbridge-check-foreign".to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (cert_file, key_file) = (dir.path().join("foreign.pem"), dir.path().join("foreign.key"));
    std::fs::write(&cert_file, cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key_file, key.serialize_pem()).map_err(|e| e.to_string())?;
    let foreign = company::egress::ConnectionTls {
        ca_file: tls.ca_file.clone(),
        client_cert: Some(cert_file),
        client_key: Some(key_file),
    };
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_backend_preconfigured(company::egress::client_tls(Some(&foreign))?)
        .build()
        .map_err(|e| e.to_string())
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 3600 && s.is_multiple_of(3600) => format!("{} h", s / 3600),
        s if s >= 3600 => format!("{:.1} h", s as f64 / 3600.0),
        s if s >= 60 && s.is_multiple_of(60) => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn transport_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        // Only the kind of failure and its cause, not the URL.
        let e = e.without_url();
        let mut text = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            text.push_str(&format!(": {source}"));
        }
        text
    }
}

/// Now, in Unix seconds, for the client assertions `check` signs.
fn unix_now() -> u64 {
    SystemClock.unix_secs()
}

fn method_name(m: ClientAuthMethod) -> &'static str {
    m.as_str()
}

/// One character changed in the middle of the JWT's signature (or of the
/// session value): still well-formed, no longer genuine.
fn tamper(credential: &Credential) -> String {
    let flip = |s: &str| -> String {
        let middle = s.chars().count() / 2;
        s.chars()
            .enumerate()
            .map(|(i, c)| match (i == middle, c) {
                (true, 'A') => 'B',
                (true, _) => 'A',
                (false, c) => c,
            })
            .collect()
    };
    match credential {
        Credential::Jwt(token) => match token.rsplit_once('.') {
            Some((signed, signature)) if !signature.is_empty() => format!("{signed}.{}", flip(signature)),
            _ => flip(token),
        },
        Credential::Cookie { value, .. } => flip(value),
    }
}

/// Why an action call was not answered.
#[derive(Clone)]
enum CallError {
    /// A credential it needs is missing; an earlier rule says why.
    Missing(String),
    /// The call itself failed (transport, a value that cannot be sent).
    Failed(String),
}

impl From<String> for CallError {
    fn from(e: String) -> Self {
        Self::Failed(e)
    }
}

impl CallError {
    fn text(&self) -> &str {
        match self {
            Self::Missing(e) | Self::Failed(e) => e,
        }
    }
}

pub(crate) struct Context {
    http: reqwest::Client,
    conn: ConnectionConfig,
    /// `None` only when no rule that logs in runs (`--only system,transport`).
    login_url: Option<String>,
    users: Vec<TestUser>,
    client_secret: Option<SecretString>,
    /// Signs client assertions, for `private_key_jwt`.
    signer: Option<AssertionSigner>,
    /// The token endpoint: `token_url`, or found from `issuer` once.
    endpoint: Option<Result<String, String>>,
    static_token: Option<SecretString>,
    api_key: Option<(HeaderName, SecretString)>,
    logins: Option<Vec<Result<Login, String>>>,
    second_login: Option<Result<Login, String>>,
    wrong_password: Option<Result<Reply, String>>,
    unknown_user: Option<Result<Reply, String>>,
    jwks: Option<Result<JwkSet, String>>,
    tokens: HashMap<ClientAuthMethod, Result<Reply, String>>,
    /// Token exchange: the token per scope asked for.
    exchanged: HashMap<Option<String>, Result<String, String>>,
    replies: HashMap<(usize, Probe), Result<Reply, CallError>>,
    /// Per action: the input it is called with, or why it is not called.
    plans: Vec<Plan>,
    /// Credentials obtained while checking, redacted from the evidence.
    obtained: Vec<SecretString>,
    /// Every 429 and 503 answer seen, with its `Retry-After`.
    limited: std::sync::Mutex<Vec<(u16, Option<HeaderValue>)>>,
    /// `--provoke-limits`: make a 429 when none came by itself.
    provoke_limits: bool,
}

impl Context {
    pub(crate) fn new(
        conn: ConnectionConfig,
        login_url: Option<String>,
        users: Vec<TestUser>,
        plans: Vec<Plan>,
        provoke_limits: bool,
    ) -> Result<Self, CheckError> {
        let resolve = |s: &company::config::SecretSource, at: &str| {
            s.resolve()
                .map_err(|e| CheckError::Config(format!("{}.{at}: {e}", conn.name)))
        };
        let mut signer = None;
        let (client_secret, static_token) = match &conn.system_auth {
            SystemAuthConfig::Oauth2ClientCredentials(OauthClient {
                client_secret,
                private_key,
                key_id,
                client_id,
                ..
            })
            | SystemAuthConfig::TokenExchange(OauthClient {
                client_secret,
                private_key,
                key_id,
                client_id,
                ..
            }) => {
                if let Some(key) = private_key {
                    let pem = resolve(key, "system_auth.private_key")?;
                    signer = Some(
                        AssertionSigner::new(pem.expose_secret(), key_id.clone(), client_id)
                            .map_err(|e| CheckError::Config(format!("{}.system_auth.private_key: {e}", conn.name)))?,
                    );
                }
                let secret = client_secret.as_ref().map(|s| resolve(s, "system_auth.client_secret"));
                (secret.transpose()?, None)
            }
            SystemAuthConfig::StaticBearer { token } => (None, Some(resolve(token, "system_auth.token")?)),
            SystemAuthConfig::None => (None, None),
        };
        let api_key = match &conn.api_key {
            Some(k) => Some((
                HeaderName::from_bytes(k.header.as_bytes())
                    .map_err(|_| CheckError::Config(format!("{}.api_key.header: not a header name", conn.name)))?,
                resolve(&k.value, "api_key.value")?,
            )),
            None => None,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deskbridge-check/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CheckError::Http(e.to_string()))?;
        // With [connections.tls] or a proxy, the company is reached as the gateway reaches it.
        let http = company::egress::http_client(&conn, &http)
            .map_err(|e| CheckError::Config(format!("{}: {e}", conn.name)))?;
        Ok(Self {
            http,
            conn,
            login_url,
            users,
            client_secret,
            signer,
            endpoint: None,
            static_token,
            api_key,
            logins: None,
            second_login: None,
            wrong_password: None,
            unknown_user: None,
            jwks: None,
            tokens: HashMap::new(),
            exchanged: HashMap::new(),
            replies: HashMap::new(),
            plans,
            obtained: Vec::new(),
            limited: std::sync::Mutex::default(),
            provoke_limits,
        })
    }

    /// Every secret known to the check: configured and obtained.
    pub(crate) fn secrets(&self) -> Vec<SecretString> {
        let mut all: Vec<SecretString> = self.users.iter().map(|u| u.password.clone()).collect();
        all.extend(self.client_secret.iter().cloned());
        // A token endpoint may echo the Basic credential back, encoded as
        // sent; matched without its padding, which an echo may drop.
        if let (Some(OauthClient { client_id, .. }), Some(secret)) =
            (self.conn.system_auth.oauth(), &self.client_secret)
        {
            let encoded = company::system_token::basic_credentials(client_id, secret.expose_secret());
            all.push(SecretString::from(encoded.trim_end_matches('=')));
        }
        all.extend(self.static_token.iter().cloned());
        all.extend(self.api_key.iter().map(|(_, v)| v.clone()));
        all.extend(self.obtained.iter().cloned());
        all
    }

    fn action_name(&self, i: usize) -> &str {
        self.conn.actions.get(i).map_or("?", |a| a.name.as_str())
    }

    pub(crate) fn id(&self, rule: Rule) -> String {
        match rule {
            Rule::LoginTestUsers => "login.test_users".into(),
            Rule::LoginCredential => "login.credential".into(),
            Rule::LoginLifetime => "login.lifetime".into(),
            Rule::LoginJwtVerifies => "login.jwt_verifies".into(),
            Rule::LoginWrongPassword => "login.wrong_password_refused".into(),
            Rule::LoginNoEnumeration => "login.no_user_enumeration".into(),
            Rule::IdentifierConsistent => "identifier.consistent".into(),
            Rule::IdentifierUnique => "identifier.unique".into(),
            Rule::IdentifierOpaque => "identifier.opaque".into(),
            Rule::SystemTokenIssued => "system.token_issued".into(),
            Rule::SystemWrongSecret => "system.wrong_secret_refused".into(),
            Rule::SystemUnknownGrant => "system.unknown_grant_refused".into(),
            Rule::SystemNoStore => "system.no_store".into(),
            Rule::SystemAuthMethods => "system.auth_methods".into(),
            Rule::SystemReplayedAssertion => "system.replayed_assertion_refused".into(),
            Rule::SystemExchangeForgedSubject => "system.exchange_forged_subject_refused".into(),
            Rule::SystemExchangeOutOfScope => "system.exchanged_token_out_of_scope_refused".into(),
            Rule::Action(i, probe) => format!("action.{}.{}", self.action_name(i), probe.name()),
            Rule::TransportPlainHttp => "transport.plain_http".into(),
            Rule::TransportRetryAfter => "transport.retry_after_well_formed".into(),
            Rule::SystemForeignCertificate => "system.foreign_certificate_refused".into(),
        }
    }

    pub(crate) fn fix(&self, rule: Rule) -> String {
        let claim = &self.conn.identity.claim;
        match rule {
            Rule::LoginTestUsers => "Check the test accounts and that customer_login_url is the company's POST /customer_authenticate (form fields username, password; 200 on success).".into(),
            Rule::LoginCredential => "Answer a login with {\"JWT\": \"<signed JWT>\", \"expires_in\": \"…\"} (token mode) or a Set-Cookie session (cookie mode).".into(),
            Rule::LoginLifetime => "Give every customer token a short, stated lifetime: exp in the JWT and expires_in in the body (or Max-Age on the cookie), e.g. 8 hours.".into(),
            Rule::LoginJwtVerifies => "Sign customer JWTs with a key published (with kid and alg) at identity.jwks_url, with iss = identity.issuer and aud = identity.audience.".into(),
            Rule::LoginWrongPassword => "Refuse a wrong password with 401 {\"error\":\"invalid_credentials\"}.".into(),
            Rule::LoginNoEnumeration => "Answer an unknown user exactly like a wrong password: same status, same error code, same timing.".into(),
            Rule::IdentifierConsistent => format!("Derive `{claim}` from a stable account key (e.g. a keyed hash of the user id), never per login."),
            Rule::IdentifierUnique => format!("Give every customer their own `{claim}` (e.g. a keyed hash of the user id)."),
            Rule::IdentifierOpaque => format!("Make `{claim}` opaque: e.g. cus_ + base64url(HMAC(server secret, user id)); never a username, email, phone or account number."),
            Rule::SystemTokenIssued => "Serve OAuth 2.0 client credentials at token_url for this client and auth_method, answering token_type Bearer and a numeric expires_in.".into(),
            Rule::SystemWrongSecret => "Refuse a wrong client secret with 401 {\"error\":\"invalid_client\"} (RFC 6749 §5.2).".into(),
            Rule::SystemUnknownGrant => "Answer a grant_type other than client_credentials with 400 {\"error\":\"unsupported_grant_type\"}.".into(),
            Rule::SystemNoStore => "Send Cache-Control: no-store on token responses (RFC 6749 §5.1).".into(),
            Rule::SystemAuthMethods => "Accept both client_secret_basic and client_secret_post, or set system_auth.auth_method to the one that works.".into(),
            Rule::SystemExchangeForgedSubject => "Verify the subject_token of a token exchange as a customer token and refuse a forged one with 400 {\"error\":\"invalid_grant\"} (RFC 8693 §2.2.2).".into(),
            Rule::SystemExchangeOutOfScope => "Issue an exchanged token with only the scope asked for, and refuse it with 403 insufficient_scope on an API that needs another scope.".into(),
            Rule::SystemReplayedAssertion => "Remember each client assertion's jti until its exp and refuse it when it comes again (RFC 7523 §3, item 7): a copied assertion must not get a second token.".into(),
            Rule::Action(i, probe) => {
                let (method, path) = self
                    .conn
                    .actions
                    .get(i)
                    .map_or(("POST", "?"), |a| (a.method.as_str(), a.path.as_str()));
                match probe {
                    Probe::Succeeds => format!("Make {method} {path} answer 2xx with a JSON body when the bearer token, API key and customer token are valid."),
                    Probe::MissingBearer => "Refuse a call without Authorization: Bearer with 401 and WWW-Authenticate: Bearer.".into(),
                    Probe::WrongBearer => "Verify the bearer token on every call; refuse an unknown one with 401 and WWW-Authenticate: Bearer error=\"invalid_token\".".into(),
                    Probe::MissingApiKey => "Require the API key on every call; refuse a call without it with 403 (or 401).".into(),
                    Probe::WrongApiKey => "Check the API key against the issued keys; refuse an unknown key with 403 (or 401).".into(),
                    Probe::MissingCustomerToken => "Require the customer's token on every call; refuse a call without it with 401 and a customer-specific error code.".into(),
                    Probe::TamperedCustomerToken => "Verify the customer token's signature (or look the session up) on every call; refuse a forged one with 401.".into(),
                    Probe::Distinguishable => "Give customer-token failures their own error code (e.g. invalid_customer_token) and keep WWW-Authenticate: Bearer error=\"invalid_token\" for the system token.".into(),
                }
            }
            Rule::TransportPlainHttp => "Use https:// for every company URL that is not on loopback.".into(),
            Rule::TransportRetryAfter => "Send Retry-After with every 429 (and with a 503 that knows when it ends), as delta-seconds (\"30\") or an IMF-fixdate (RFC 9110 §10.2.3): the gateway pauses calls for exactly that long.".into(),
            Rule::SystemForeignCertificate => "Accept only client certificates issued by your CA (or registered by thumbprint for the client), and refuse any other at the TLS handshake or with 401.".into(),
        }
    }

    pub(crate) async fn judge(&mut self, rule: Rule) -> Verdict {
        match rule {
            Rule::LoginTestUsers => self.login_test_users().await,
            Rule::LoginCredential => self.login_credential().await,
            Rule::LoginLifetime => self.login_lifetime().await,
            Rule::LoginJwtVerifies => self.login_jwt_verifies().await,
            Rule::LoginWrongPassword => self.login_wrong_password().await,
            Rule::LoginNoEnumeration => self.login_no_enumeration().await,
            Rule::IdentifierConsistent => self.identifier_consistent().await,
            Rule::IdentifierUnique => self.identifier_unique().await,
            Rule::IdentifierOpaque => self.identifier_opaque().await,
            Rule::SystemTokenIssued => self.system_token_issued().await,
            Rule::SystemWrongSecret => self.system_wrong_secret().await,
            Rule::SystemUnknownGrant => self.system_unknown_grant().await,
            Rule::SystemNoStore => self.system_no_store().await,
            Rule::SystemAuthMethods => self.system_auth_methods().await,
            Rule::SystemReplayedAssertion => self.system_replayed_assertion().await,
            Rule::SystemExchangeForgedSubject => self.system_exchange_forged_subject().await,
            Rule::SystemExchangeOutOfScope => self.system_exchange_out_of_scope().await,
            Rule::Action(i, _) if let Some(Err(why)) = self.plans.get(i) => skip(why.clone()),
            Rule::Action(i, Probe::Succeeds) => self.action_succeeds(i).await,
            Rule::Action(i, Probe::Distinguishable) => self.action_distinguishable(i).await,
            Rule::Action(i, probe) => self.action_refuses(i, probe).await,
            Rule::TransportPlainHttp => self.transport_plain_http(),
            Rule::TransportRetryAfter => self.transport_retry_after().await,
            Rule::SystemForeignCertificate => self.system_foreign_certificate().await,
        }
    }

    // ---- HTTP ----

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, String> {
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if matches!(status, 429 | 503) {
            let retry_after = headers.get(RETRY_AFTER).cloned();
            self.limited
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((status, retry_after));
        }
        let body = response.bytes().await.map_err(transport_error)?;
        Ok(Reply {
            status,
            headers,
            body: body.to_vec(),
        })
    }

    async fn post_login(&self, username: &str, password: &str) -> Result<Reply, String> {
        let Some(login_url) = &self.login_url else {
            return Err("no customer_login_url".into());
        };
        let request = self
            .http
            .post(login_url)
            .timeout(AUTH_TIMEOUT)
            .form(&[("username", username), ("password", password)]);
        self.send(request).await
    }

    async fn login(&mut self, i: usize) -> Result<Login, String> {
        let Some(user) = self.users.get(i) else {
            return Err("no such test user".into());
        };
        let reply = self.post_login(&user.name, user.password.expose_secret()).await?;
        if reply.status != 200 {
            return Err(reply.describe());
        }
        let body = reply.json();
        let jwt = body.as_ref().and_then(|b| {
            ["JWT", "jwt", "id_token", "token"]
                .iter()
                .find_map(|k| b.get(*k).and_then(Value::as_str).filter(|t| looks_like_jwt(t)))
                .map(str::to_string)
        });
        let expires_in = body.as_ref().and_then(|b| match b.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        });
        let credential = match jwt {
            Some(token) => Some(Credential::Jwt(token)),
            None => self.session_cookie(&reply),
        };
        if let Some(c) = &credential {
            self.obtained.push(SecretString::from(c.token().to_string()));
        }
        Ok(Login { credential, expires_in })
    }

    /// The session cookie: the one the connection names when it passes the
    /// customer's token as a cookie, else the first one set.
    fn session_cookie(&self, reply: &Reply) -> Option<Credential> {
        let wanted = (self.conn.customer_auth.placement == CustomerAuthPlacement::Cookie)
            .then_some(self.conn.customer_auth.name.as_str());
        reply
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|line| {
                let mut attributes = line.split(';');
                let (name, value) = attributes.next()?.trim().split_once('=')?;
                if value.is_empty() || wanted.is_some_and(|w| w != name) {
                    return None;
                }
                let mut max_age = None;
                let mut has_expires = false;
                for attribute in attributes {
                    let (key, v) = attribute.trim().split_once('=').unwrap_or((attribute.trim(), ""));
                    if key.eq_ignore_ascii_case("max-age") {
                        max_age = v.trim().parse().ok();
                    } else if key.eq_ignore_ascii_case("expires") {
                        has_expires = true;
                    }
                }
                Some(Credential::Cookie {
                    name: name.to_string(),
                    value: value.to_string(),
                    max_age,
                    has_expires,
                })
            })
            .next()
    }

    async fn ensure_logins(&mut self) {
        if self.logins.is_none() {
            let mut logins = Vec::new();
            for i in 0..self.users.len() {
                logins.push(self.login(i).await);
            }
            self.logins = Some(logins);
        }
    }

    /// The test users that logged in, with their logins.
    fn ok_logins(&self) -> Vec<(&TestUser, &Login)> {
        self.users
            .iter()
            .zip(self.logins.iter().flatten())
            .filter_map(|(u, l)| l.as_ref().ok().map(|l| (u, l)))
            .collect()
    }

    /// Why there is no customer token to judge.
    fn no_token(&self) -> String {
        if self.ok_logins().is_empty() {
            "no test user logged in; see login.test_users".into()
        } else {
            "no customer token came back; see login.credential".into()
        }
    }

    fn customer_credential(&self) -> Option<Credential> {
        self.ok_logins().into_iter().find_map(|(_, l)| l.credential.clone())
    }

    async fn ensure_refusals(&mut self) {
        self.ensure_logins().await;
        if self.wrong_password.is_none() {
            let name = self.users.first().map(|u| u.name.clone()).unwrap_or_default();
            let wrong = format!("deskbridge-check-wrong-{}", nonce());
            self.wrong_password = Some(self.post_login(&name, &wrong).await);
        }
        if self.unknown_user.is_none() {
            let name = format!("deskbridge-check-no-such-user-{}", nonce());
            let wrong = format!("deskbridge-check-wrong-{}", nonce());
            self.unknown_user = Some(self.post_login(&name, &wrong).await);
        }
    }

    async fn jwks(&mut self) -> Result<JwkSet, String> {
        if self.jwks.is_none() {
            let fetched = match &self.conn.identity.jwks_url {
                None => Err("identity.jwks_url is not set".to_string()),
                Some(url) => match self.send(self.http.get(url).timeout(AUTH_TIMEOUT)).await {
                    Err(e) => Err(format!("JWKS: {e}")),
                    Ok(r) if r.status != 200 => Err(format!("JWKS: HTTP {}", r.status)),
                    Ok(r) => serde_json::from_slice::<JwkSet>(&r.body)
                        .map_err(|_| "identity.jwks_url does not serve a JWKS ({\"keys\": [...]})".to_string()),
                },
            };
            self.jwks = Some(fetched);
        }
        self.jwks.clone().unwrap_or_else(|| Err("no JWKS".into()))
    }

    fn verify_jwt(&self, token: &str, jwks: &JwkSet) -> Result<(Algorithm, String), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // Readable, but with an `alg` no verifier accepts (`none`, say)?
            match jwt_parts(token).and_then(|(h, _)| h.get("alg").and_then(Value::as_str).map(str::to_string)) {
                Some(alg) => format!(
                    "the JWT's alg {} is not a signature algorithm (use ES256, RS256 or EdDSA)",
                    printable_token(&alg).unwrap_or_else(|| "(unprintable)".into())
                ),
                None => "the JWT header cannot be read".to_string(),
            }
        })?;
        let kid = header.kid.ok_or("the JWT header has no kid")?;
        let shown = printable_token(&kid).unwrap_or_else(|| "(unprintable)".into());
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| format!("kid {shown} is not in the JWKS"))?;
        let alg =
            company::identity::algorithm_of(jwk).ok_or_else(|| format!("the JWK {shown} has no usable algorithm"))?;
        if header.alg != alg {
            return Err(format!("the JWT says {:?} but key {shown} is {alg:?}", header.alg));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| format!("the JWK {shown} is not a usable public key"))?;
        let identity = &self.conn.identity;
        let mut validation = Validation::new(alg);
        validation.leeway = 30;
        let mut required = Vec::new();
        match &identity.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &identity.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        // exp is judged by login.lifetime, not here.
        validation.set_required_spec_claims(&required);
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Value>(token, &key, &validation) {
            Ok(_) => Ok((alg, shown)),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidSignature => format!("the signature does not verify with key {shown}"),
                ErrorKind::InvalidIssuer => "iss is not identity.issuer".into(),
                ErrorKind::InvalidAudience => "aud is not identity.audience".into(),
                ErrorKind::ExpiredSignature => "the JWT has already expired".into(),
                ErrorKind::ImmatureSignature => "the JWT is not valid yet (nbf)".into(),
                ErrorKind::MissingRequiredClaim(c) => format!("the JWT has no {c} claim"),
                _ => format!("the JWT does not verify: {e}"),
            }),
        }
    }

    // ---- login.* ----

    async fn login_test_users(&mut self) -> Verdict {
        self.ensure_logins().await;
        let n = self.users.len();
        let failed: Vec<String> = self
            .users
            .iter()
            .zip(self.logins.iter().flatten())
            .filter_map(|(u, l)| l.as_ref().err().map(|e| format!("{}: {e}", u.name)))
            .collect();
        if failed.is_empty() {
            pass(format!("{n} of {n} test users logged in (HTTP 200)"))
        } else {
            fail(format!("{} of {n} logins failed: {}", failed.len(), failed.join("; ")))
        }
    }

    async fn login_credential(&mut self) -> Verdict {
        self.ensure_logins().await;
        let logins = self.ok_logins();
        if logins.is_empty() {
            return skip("no test user logged in; see login.test_users");
        }
        let missing: Vec<&str> = logins
            .iter()
            .filter(|(_, l)| l.credential.is_none())
            .map(|(u, _)| u.name.as_str())
            .collect();
        if !missing.is_empty() {
            return fail(format!(
                "HTTP 200 but neither a JWT (body field JWT) nor a session cookie (Set-Cookie) for {}",
                missing.join(", ")
            ));
        }
        let kinds: HashSet<String> = logins
            .iter()
            .filter_map(|(_, l)| l.credential.as_ref().map(Credential::describe))
            .collect();
        let mut kinds: Vec<String> = kinds.into_iter().collect();
        kinds.sort();
        pass(format!("{} for {} test user(s)", kinds.join(" or "), logins.len()))
    }

    async fn login_lifetime(&mut self) -> Verdict {
        self.ensure_logins().await;
        let logins = self.ok_logins();
        let Some((user, login)) = logins.iter().find(|(_, l)| l.credential.is_some()) else {
            return skip(self.no_token());
        };
        let mut sources = Vec::new();
        let mut lifetime = None;
        match &login.credential {
            Some(Credential::Jwt(token)) => {
                let claims = jwt_parts(token).map(|(_, c)| c).unwrap_or(Value::Null);
                match claims.get("exp").and_then(Value::as_u64) {
                    Some(exp) => {
                        let from = claims.get("iat").and_then(Value::as_u64).unwrap_or_else(now_secs);
                        let secs = exp.saturating_sub(from);
                        sources.push(format!("JWT exp {} after iat", human(secs)));
                        lifetime = Some(secs);
                        if exp + 30 < now_secs() {
                            return fail(format!("{}: the JWT's exp has already passed", user.name));
                        }
                    }
                    None => {
                        let also = login
                            .expires_in
                            .map(|s| format!(" (expires_in {s} s in the body)"))
                            .unwrap_or_default();
                        return fail(format!(
                            "{}: the JWT has no exp claim{also}; a JWT without exp never expires and the gateway refuses it",
                            user.name
                        ));
                    }
                }
            }
            Some(Credential::Cookie {
                max_age, has_expires, ..
            }) => {
                if let Some(secs) = max_age {
                    sources.push(format!("cookie Max-Age {}", human(*secs)));
                    lifetime = Some(*secs);
                } else if *has_expires {
                    sources.push("cookie Expires (no Max-Age)".into());
                }
            }
            None => {}
        }
        if let Some(secs) = login.expires_in {
            sources.push(format!("expires_in {}", human(secs)));
            lifetime = lifetime.or(Some(secs));
        }
        let evidence = format!("{}: {}", user.name, sources.join(", "));
        match lifetime {
            None if sources.is_empty() => fail(format!(
                "{}: no expires_in, no JWT exp and no cookie Max-Age: the token's lifetime is unknown",
                user.name
            )),
            None => warn(format!("{evidence}; send expires_in or Max-Age")),
            Some(0) => fail(format!("{evidence}: a zero lifetime")),
            Some(secs) if secs > LONG_LIFETIME_SECS => warn(format!("{evidence}: longer than 24 h")),
            Some(_) => pass(evidence),
        }
    }

    async fn login_jwt_verifies(&mut self) -> Verdict {
        self.ensure_logins().await;
        let jwts: Vec<(String, String)> = self
            .ok_logins()
            .iter()
            .filter_map(|(u, l)| match &l.credential {
                Some(Credential::Jwt(t)) => Some((u.name.clone(), t.clone())),
                _ => None,
            })
            .collect();
        let jwt_mode = self.conn.identity.mode == IdentityMode::Jwt;
        if jwts.is_empty() {
            return match self.customer_credential() {
                Some(Credential::Cookie { .. }) if jwt_mode => {
                    fail("the login returns a session cookie, but identity.mode = \"jwt\" needs a JWT to verify")
                }
                Some(Credential::Cookie { .. }) => {
                    skip("the login returns a session cookie: there is no JWT to verify")
                }
                _ => skip(self.no_token()),
            };
        }
        if self.conn.identity.jwks_url.is_none() {
            return skip("identity.jwks_url is not set: the gateway does not verify customer JWTs");
        }
        let jwks = match self.jwks().await {
            Ok(set) => set,
            Err(e) => return fail(e),
        };
        let mut keys = HashSet::new();
        for (name, token) in &jwts {
            match self.verify_jwt(token, &jwks) {
                Ok((alg, kid)) => {
                    keys.insert(format!("{alg:?} key {kid}"));
                }
                Err(e) => return fail(format!("{name}: {e}")),
            }
        }
        let mut keys: Vec<String> = keys.into_iter().collect();
        keys.sort();
        let claims = match (&self.conn.identity.issuer, &self.conn.identity.audience) {
            (Some(_), Some(_)) => "iss and aud match",
            (Some(_), None) => "iss matches (no audience configured)",
            (None, Some(_)) => "aud matches (no issuer configured)",
            (None, None) => "no issuer or audience configured",
        };
        pass(format!(
            "{} JWT(s) verified with {} from the JWKS; {claims}",
            jwts.len(),
            keys.join(", ")
        ))
    }

    async fn login_wrong_password(&mut self) -> Verdict {
        self.ensure_refusals().await;
        let name = self.users.first().map(|u| u.name.clone()).unwrap_or_default();
        match &self.wrong_password {
            Some(Ok(r)) if matches!(r.status, 400 | 401) => pass(format!("{name}, wrong password: {}", r.describe())),
            Some(Ok(r)) if r.is_success() => fail(format!("{name}: a wrong password was accepted ({})", r.describe())),
            Some(Ok(r)) if r.status == 429 => warn(format!(
                "{name}, wrong password: {}: throttled by earlier attempts; run again later",
                r.describe()
            )),
            Some(Ok(r)) => fail(format!("{name}, wrong password: {}; expected 401", r.describe())),
            Some(Err(e)) => fail(format!("wrong password: {e}")),
            None => fail("wrong password: not tried"),
        }
    }

    async fn login_no_enumeration(&mut self) -> Verdict {
        self.ensure_refusals().await;
        let (Some(Ok(wrong)), Some(unknown)) = (&self.wrong_password, &self.unknown_user) else {
            return skip("the wrong-password login did not get an answer; see login.wrong_password_refused");
        };
        let unknown = match unknown {
            Ok(r) => r,
            Err(e) => return fail(format!("unknown user: {e}")),
        };
        if unknown.is_success() {
            return fail(format!("an unknown user logged in: {}", unknown.describe()));
        }
        if wrong.status == 429 || unknown.status == 429 {
            return warn("throttled (HTTP 429) by earlier attempts; run again later");
        }
        if wrong.status == unknown.status && wrong.error_code() == unknown.error_code() {
            pass(format!(
                "wrong password and unknown user both get {}",
                unknown.describe()
            ))
        } else {
            fail(format!(
                "wrong password: {}; unknown user: {}",
                wrong.describe(),
                unknown.describe()
            ))
        }
    }

    // ---- identifier.* ----

    /// The customer identifier of a login: the configured claim of its JWT;
    /// else the verdict of a rule that needs it: a failure when the JWT
    /// lacks the claim, a skip when there is no JWT to judge.
    fn identifier(&self, login: &Login) -> Result<String, Verdict> {
        let claim = &self.conn.identity.claim;
        match &login.credential {
            Some(Credential::Jwt(token)) => jwt_parts(token)
                .and_then(|(_, claims)| claims.get(claim).and_then(Value::as_str).map(str::to_string))
                .filter(|id| !id.is_empty())
                .ok_or_else(|| fail(format!("the JWT has no string claim `{claim}` (identity.claim)"))),
            Some(Credential::Cookie { .. }) => Err(skip(
                "the login returns a session cookie: the identifier comes from the channel, not from the login",
            )),
            None => Err(skip("no customer token came back; see login.credential")),
        }
    }

    /// Identifiers of every test user that logged in, or the verdict that
    /// stops the rule.
    fn identifiers(&self) -> Result<Vec<(String, String)>, Verdict> {
        let logins = self.ok_logins();
        if logins.is_empty() {
            return Err(skip("no test user logged in; see login.test_users"));
        }
        let mut out = Vec::new();
        for (user, login) in logins {
            match self.identifier(login) {
                Ok(id) => out.push((user.name.clone(), id)),
                Err(v) if v.status == Status::Fail => return Err(fail(format!("{}: {}", user.name, v.evidence))),
                Err(v) => return Err(v),
            }
        }
        Ok(out)
    }

    async fn identifier_consistent(&mut self) -> Verdict {
        self.ensure_logins().await;
        let claim = self.conn.identity.claim.clone();
        let first = match self.identifiers() {
            Ok(ids) => ids.into_iter().next(),
            Err(v) => return v,
        };
        let Some((name, id)) = first else {
            return skip("no test user logged in; see login.test_users");
        };
        if self.second_login.is_none() {
            let index = self.users.iter().position(|u| u.name == name).unwrap_or(0);
            self.second_login = Some(self.login(index).await);
        }
        let again = match &self.second_login {
            Some(Ok(login)) => self.identifier(login),
            Some(Err(e)) => return fail(format!("second login of {name}: {e}")),
            None => return fail("no second login"),
        };
        match again {
            Ok(second) if second == id => pass(format!("two logins of {name}: the same `{claim}`")),
            Ok(_) => fail(format!("two logins of {name} gave different `{claim}` values")),
            Err(v) if v.status == Status::Fail => fail(format!("second login of {name}: {}", v.evidence)),
            Err(v) => v,
        }
    }

    async fn identifier_unique(&mut self) -> Verdict {
        self.ensure_logins().await;
        let claim = &self.conn.identity.claim;
        let ids = match self.identifiers() {
            Ok(ids) => ids,
            Err(v) => return v,
        };
        if self.users.len() < 2 {
            return skip("only one test user: give two or more to check that identifiers differ");
        }
        if ids.len() < 2 {
            return skip("fewer than two test users logged in; see login.test_users");
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (name, id) in &ids {
            if let Some(other) = seen.insert(id.as_str(), name.as_str()) {
                return fail(format!("{other} and {name} have the same `{claim}`"));
            }
        }
        pass(format!(
            "{} test users, {} distinct `{claim}` values",
            ids.len(),
            ids.len()
        ))
    }

    async fn identifier_opaque(&mut self) -> Verdict {
        self.ensure_logins().await;
        let claim = &self.conn.identity.claim;
        let ids = match self.identifiers() {
            Ok(ids) => ids,
            Err(v) => return v,
        };
        let mut problems = Vec::new();
        for (name, id) in &ids {
            let (lower_id, lower_name) = (id.to_lowercase(), name.to_lowercase());
            if lower_id == lower_name {
                problems.push(format!("{name}: `{claim}` is the username"));
            } else if lower_name.chars().count() >= 3 && lower_id.contains(&lower_name) {
                problems.push(format!("{name}: `{claim}` contains the username"));
            } else if let Some(why) = company::identity::opacity_problem(id) {
                problems.push(format!("{name}: `{claim}` {why}"));
            }
        }
        if !problems.is_empty() {
            return fail(problems.join("; "));
        }
        let shortest = ids.iter().map(|(_, id)| id.chars().count()).min().unwrap_or(0);
        pass(format!(
            "`{claim}` of {} test user(s): {shortest}+ characters, not the username, no email, phone, card or national-id pattern, enough entropy",
            ids.len()
        ))
    }

    // ---- system.* ----

    fn oauth(&self) -> Result<(), Verdict> {
        match &self.conn.system_auth {
            SystemAuthConfig::Oauth2ClientCredentials(_) | SystemAuthConfig::TokenExchange(_) => Ok(()),
            SystemAuthConfig::StaticBearer { .. } => Err(skip(
                "system_auth kind = \"static_bearer\": there is no token endpoint to check",
            )),
            SystemAuthConfig::None => Err(skip("system_auth kind = \"none\": there is no token endpoint to check")),
        }
    }

    fn configured_method(&self) -> ClientAuthMethod {
        self.conn
            .system_auth
            .oauth()
            .map_or(ClientAuthMethod::ClientSecretBasic, |c| c.auth_method)
    }

    fn exchanges(&self) -> bool {
        matches!(self.conn.system_auth, SystemAuthConfig::TokenExchange(_))
    }

    /// A token request as the gateway makes it, with the given method,
    /// secret and grant. With `private_key_jwt`, `secret` is the client
    /// assertion; empty signs a new one, as the gateway would.
    async fn token_request(
        &mut self,
        method: ClientAuthMethod,
        secret: &str,
        asked: Asked<'_>,
    ) -> Result<Reply, String> {
        let subject = match asked {
            Asked::Configured { forged, .. } if self.exchanges() => {
                self.ensure_logins().await;
                let credential = self.customer_credential().ok_or_else(|| self.no_token())?;
                Some(SecretString::from(match forged {
                    true => tamper(&credential),
                    false => credential.token().to_string(),
                }))
            }
            _ => None,
        };
        let subject_type = self
            .conn
            .system_auth
            .oauth()
            .and_then(|c| c.subject_token_type)
            .unwrap_or_default()
            .uri();
        let grant = match (asked, &subject) {
            (Asked::UnknownGrant, _) => Grant::Other(UNKNOWN_GRANT),
            (Asked::Configured { scope, .. }, Some(subject)) => Grant::TokenExchange(Exchange {
                subject,
                subject_type,
                actor: Some(CHECK_ACTOR),
                scope,
            }),
            (Asked::Configured { .. }, None) => Grant::ClientCredentials,
        };
        let endpoint = self.endpoint().await?;
        let assertion;
        let secret = match (&self.signer, method) {
            (Some(signer), ClientAuthMethod::PrivateKeyJwt) if secret.is_empty() => {
                assertion = signer.sign(unix_now(), &endpoint)?;
                // A credential while it lives: kept out of the evidence, should
                // the token endpoint echo it.
                self.obtained.push(SecretString::from(assertion.clone()));
                assertion.as_str()
            }
            _ => secret,
        };
        let Some(client) = self.conn.system_auth.oauth() else {
            return Err("not an OAuth connection".into());
        };
        let request =
            company::system_token::token_request(&self.http, client, &endpoint, method, secret, grant, AUTH_TIMEOUT)
                .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    /// `token_url`, or the token endpoint the issuer's metadata names.
    async fn endpoint(&mut self) -> Result<String, String> {
        if self.endpoint.is_none() {
            let found = match self.conn.system_auth.oauth() {
                Some(OauthClient {
                    token_url: Some(url), ..
                }) => Ok(url.clone()),
                Some(OauthClient {
                    issuer: Some(issuer), ..
                }) => company::discovery::discover(&self.http, issuer, AUTH_TIMEOUT)
                    .await
                    .map(|m| m.token_endpoint)
                    .map_err(|e| format!("discovery: {e}")),
                _ => Err("no token_url and no issuer".into()),
            };
            self.endpoint = Some(found);
        }
        self.endpoint.clone().unwrap_or_else(|| Err("no token endpoint".into()))
    }

    /// The token request with the right secret, once per method.
    async fn token(&mut self, method: ClientAuthMethod) -> Result<Reply, String> {
        if !self.tokens.contains_key(&method) {
            let secret = self.client_secret.clone().unwrap_or_else(|| SecretString::from(""));
            let result = self.token_request(method, secret.expose_secret(), CONFIGURED).await;
            if let Ok(reply) = &result
                && let Some(token) = reply
                    .json()
                    .and_then(|b| b.get("access_token").and_then(Value::as_str).map(str::to_string))
            {
                self.obtained.push(SecretString::from(token));
            }
            self.tokens.insert(method, result);
        }
        self.tokens
            .get(&method)
            .cloned()
            .unwrap_or_else(|| Err("not fetched".into()))
    }

    /// The system access token from the configured method, or why there is none.
    async fn access_token(&mut self) -> Result<String, String> {
        let method = self.configured_method();
        let reply = self.token(method).await?;
        issued_token(&reply).map(|t| t.access_token)
    }

    async fn system_token_issued(&mut self) -> Verdict {
        if let Err(v) = self.oauth() {
            return v;
        }
        let method = self.configured_method();
        let reply = match self.token(method).await {
            Ok(r) => r,
            Err(e) => return fail(format!("{}: {e}", method_name(method))),
        };
        let parsed = match issued_token(&reply) {
            Ok(parsed) => parsed,
            Err(why) => return fail(format!("{}: {why}", method_name(method))),
        };
        match parsed.expires_in {
            Some(secs) => pass(format!(
                "{}: HTTP 200, token_type Bearer, expires_in {}",
                method_name(method),
                human(secs)
            )),
            None => warn(format!(
                "{}: HTTP 200, token_type Bearer, but no expires_in: the gateway has to assume default_expires_in_secs",
                method_name(method)
            )),
        }
    }

    async fn system_wrong_secret(&mut self) -> Verdict {
        if let Err(v) = self.oauth() {
            return v;
        }
        let method = self.configured_method();
        if method == ClientAuthMethod::TlsClientAuth {
            return skip("tls_client_auth sends no secret: the certificate is the credential");
        }
        // For private_key_jwt, a wrong secret is an assertion whose
        // signature is not the key's: one character of it changed.
        let endpoint = match self.endpoint().await {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let wrong = match (&self.signer, method) {
            (Some(signer), ClientAuthMethod::PrivateKeyJwt) => match signer.sign(unix_now(), &endpoint) {
                Ok(assertion) => tamper(&Credential::Jwt(assertion)),
                Err(e) => return fail(e),
            },
            _ => format!("deskbridge-check-wrong-secret-{}", nonce()),
        };
        let reply = match self.token_request(method, &wrong, CONFIGURED).await {
            Ok(r) => r,
            Err(e) => return fail(format!("{}: {e}", method_name(method))),
        };
        let code = reply.error_code();
        let evidence = format!("{}, wrong secret: {}", method_name(method), reply.describe());
        match (reply.status, code.as_deref()) {
            (401, Some("invalid_client")) => pass(evidence),
            (400, Some("invalid_client")) if method == ClientAuthMethod::ClientSecretPost => warn(format!(
                "{evidence}: RFC 6749 allows 400 for client_secret_post, but 401 is expected"
            )),
            (s, _) if (200..300).contains(&s) => fail(format!("{evidence}: a wrong secret got a token")),
            _ => fail(format!("{evidence}; expected 401 invalid_client")),
        }
    }

    async fn system_unknown_grant(&mut self) -> Verdict {
        if let Err(v) = self.oauth() {
            return v;
        }
        let method = self.configured_method();
        let secret = self.client_secret.clone().unwrap_or_else(|| SecretString::from(""));
        let reply = match self
            .token_request(method, secret.expose_secret(), Asked::UnknownGrant)
            .await
        {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if let Some(token) = reply
            .json()
            .and_then(|b| b.get("access_token").and_then(Value::as_str).map(str::to_string))
        {
            self.obtained.push(SecretString::from(token));
        }
        let evidence = format!("grant_type={UNKNOWN_GRANT}: {}", reply.describe());
        match (reply.status, reply.error_code().as_deref()) {
            (400, Some("unsupported_grant_type")) => pass(evidence),
            (s, _) if (200..300).contains(&s) => fail(format!("{evidence}: an unknown grant got a token")),
            (400, _) => warn(format!("{evidence}; expected unsupported_grant_type")),
            _ => fail(format!("{evidence}; expected 400 unsupported_grant_type")),
        }
    }

    async fn system_no_store(&mut self) -> Verdict {
        if let Err(v) = self.oauth() {
            return v;
        }
        let method = self.configured_method();
        match self.token(method).await {
            Ok(r) if r.status == 200 => match r.header("cache-control") {
                Some(v) if v.to_ascii_lowercase().contains("no-store") => {
                    pass("token response: Cache-Control: no-store")
                }
                Some(v) => fail(format!(
                    "token response: Cache-Control: {}",
                    v.chars().take(80).collect::<String>()
                )),
                None => fail("token response: no Cache-Control header"),
            },
            _ => skip("no token was issued; see system.token_issued"),
        }
    }

    async fn system_auth_methods(&mut self) -> Verdict {
        if let Err(v) = self.oauth() {
            return v;
        }
        let configured = self.configured_method();
        if configured == ClientAuthMethod::TlsClientAuth {
            return skip("tls_client_auth: the secret methods do not apply (see system.token_issued)");
        }
        if configured == ClientAuthMethod::PrivateKeyJwt {
            return skip(
                "auth_method = \"private_key_jwt\": the connection holds no shared secret to try other methods with",
            );
        }
        let mut works = HashMap::new();
        let mut parts = Vec::new();
        for (method, short) in [
            (ClientAuthMethod::ClientSecretBasic, "basic"),
            (ClientAuthMethod::ClientSecretPost, "post"),
        ] {
            let issued = self.token(method).await.and_then(|r| issued_token(&r).map(|_| ()));
            works.insert(method, issued.is_ok());
            parts.push(match issued {
                Ok(()) => format!("{short}: ok"),
                Err(why) => format!("{short}: {why}"),
            });
        }
        let evidence = parts.join(", ");
        let other_works = works.iter().filter(|(m, _)| **m != configured).all(|(_, ok)| *ok);
        match (works.get(&configured).copied().unwrap_or(false), other_works) {
            (true, true) => pass(evidence),
            (true, false) => warn(format!("{evidence}; the configured {} works", method_name(configured))),
            (false, _) => fail(format!(
                "{evidence}; the configured {} does not work",
                method_name(configured)
            )),
        }
    }

    async fn system_replayed_assertion(&mut self) -> Verdict {
        if let Err(v) = self.oauth() {
            return v;
        }
        if self.signer.is_none() || self.configured_method() != ClientAuthMethod::PrivateKeyJwt {
            return skip("auth_method is not \"private_key_jwt\": no client assertion to replay");
        }
        let endpoint = match self.endpoint().await {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let signed = self.signer.as_ref().map(|signer| signer.sign(unix_now(), &endpoint));
        let assertion = match signed.unwrap_or_else(|| Err("no signer".into())) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        self.obtained.push(SecretString::from(assertion.clone()));
        let method = ClientAuthMethod::PrivateKeyJwt;
        let mut replies = Vec::new();
        for _ in 0..2 {
            match self.token_request(method, &assertion, CONFIGURED).await {
                Ok(reply) => {
                    if let Some(token) = reply
                        .json()
                        .and_then(|b| b.get("access_token").and_then(Value::as_str).map(str::to_string))
                    {
                        self.obtained.push(SecretString::from(token));
                    }
                    replies.push(reply);
                }
                Err(e) => return fail(e),
            }
        }
        let evidence = format!(
            "first: {}; the same assertion again: {}",
            replies[0].describe(),
            replies[1].describe()
        );
        match (replies[0].status, replies[1].status, replies[1].error_code().as_deref()) {
            (200, 400 | 401, Some("invalid_client" | "invalid_grant")) => pass(evidence),
            (200, s, _) if (200..300).contains(&s) => {
                fail(format!("{evidence}: a replayed assertion got a second token"))
            }
            (200, _, _) => warn(format!("{evidence}; expected 401 invalid_client")),
            _ => skip(format!(
                "{evidence}: the first assertion got no token; see system.token_issued"
            )),
        }
    }

    /// Token exchange: the first test customer's token exchanged for one
    /// with `scope` (none: the connection's), once per scope.
    async fn exchanged_token(&mut self, scope: Option<String>) -> Result<String, String> {
        if !self.exchanged.contains_key(&scope) {
            let method = self.configured_method();
            let secret = self.client_secret.clone().unwrap_or_else(|| SecretString::from(""));
            let asked = Asked::Configured {
                scope: scope.as_deref(),
                forged: false,
            };
            let result = self
                .token_request(method, secret.expose_secret(), asked)
                .await
                .and_then(|reply| issued_token(&reply).map(|t| t.access_token));
            if let Ok(token) = &result {
                self.obtained.push(SecretString::from(token.clone()));
            }
            self.exchanged.insert(scope.clone(), result);
        }
        self.exchanged
            .get(&scope)
            .cloned()
            .unwrap_or_else(|| Err("not exchanged".into()))
    }

    async fn system_exchange_forged_subject(&mut self) -> Verdict {
        let method = self.configured_method();
        let secret = self.client_secret.clone().unwrap_or_else(|| SecretString::from(""));
        let asked = Asked::Configured {
            scope: None,
            forged: true,
        };
        let reply = match self.token_request(method, secret.expose_secret(), asked).await {
            Ok(r) => r,
            Err(e) => return skip(e),
        };
        if let Ok(token) = issued_token(&reply) {
            self.obtained.push(SecretString::from(token.access_token));
        }
        let evidence = format!(
            "a customer token with a changed signature as subject_token: {}",
            reply.describe()
        );
        match (reply.status, reply.error_code().as_deref()) {
            (400, Some("invalid_grant")) => pass(evidence),
            (s, _) if (200..300).contains(&s) => fail(format!("{evidence}: a forged customer token was exchanged")),
            (400 | 401 | 403, _) => warn(format!("{evidence}; expected 400 invalid_grant")),
            _ => fail(format!("{evidence}; expected 400 invalid_grant")),
        }
    }

    /// An exchanged token asked for one action's scope, sent to an action
    /// that needs another.
    async fn system_exchange_out_of_scope(&mut self) -> Verdict {
        let fallback = self.conn.system_auth.oauth().and_then(|c| c.scope.clone());
        let scoped: Vec<(usize, String)> = self
            .conn
            .actions
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(self.plans.get(*i), Some(Ok(_)) | None))
            .filter_map(|(i, a)| a.scope.clone().or(fallback.clone()).map(|s| (i, s)))
            .collect();
        let pair = scoped.iter().find_map(|(_, scope_a)| {
            scoped
                .iter()
                .find(|(_, scope_b)| {
                    !scope_a
                        .split_whitespace()
                        .any(|s| scope_b.split_whitespace().any(|t| t == s))
                })
                .map(|(b, _)| (scope_a.clone(), *b))
        });
        let Some((scope, other)) = pair else {
            return skip("no two actions have scopes that do not overlap: set `scope` on the actions");
        };
        let name = self.action_name(other).to_string();
        match self.call(other, Probe::Succeeds).await {
            Ok(r) if r.is_success() => {}
            _ => {
                return skip(format!(
                    "the call with its own exchanged token did not succeed; see action.{name}.succeeds"
                ));
            }
        }
        let token = match self.exchanged_token(Some(scope.clone())).await {
            Ok(t) => t,
            Err(e) => return fail(format!("scope {scope}: {e}")),
        };
        let shown = printable_token(&scope.replace(' ', "+")).unwrap_or_else(|| "?".into());
        let reply = match self.call_with(other, Probe::Succeeds, Some(token)).await {
            Ok(r) => r,
            Err(e) => return fail(e.text().to_string()),
        };
        let evidence = format!(
            "a token exchanged for scope {shown}, sent to {name}: {}",
            reply.describe()
        );
        match reply.status {
            403 => pass(evidence),
            401 => warn(format!("{evidence}; RFC 6750 §3.1 says 403 insufficient_scope")),
            s if (200..300).contains(&s) => fail(format!("{evidence}: accepted outside its scope")),
            _ => fail(format!("{evidence}; expected 403 insufficient_scope")),
        }
    }

    /// A call the client certificate guards, with a certificate the company
    /// never issued: the token request with `tls_client_auth`, else the
    /// first action. The same call with the configured certificate must
    /// succeed first, so a refusal is the certificate's.
    async fn system_foreign_certificate(&mut self) -> Verdict {
        let Some(tls) = self.conn.tls.clone() else {
            return skip("no [connections.tls] client certificate");
        };
        let foreign = match foreign_certificate_client(&tls) {
            Ok(c) => c,
            Err(e) => return fail(format!("cannot build a client with a foreign certificate: {e}")),
        };
        let method = self.configured_method();
        let (what, genuine, forged) = if method == ClientAuthMethod::TlsClientAuth {
            let genuine = self.token(method).await.map(|r| r.is_success());
            let saved = std::mem::replace(&mut self.http, foreign);
            let forged = self.token_request(method, "", CONFIGURED).await;
            self.http = saved;
            ("the token request", genuine, forged)
        } else {
            if self.conn.actions.is_empty() {
                return skip("no action to call");
            }
            let genuine = self.call(0, Probe::Succeeds).await.map(|r| r.is_success());
            let bearer = match self.bearer(0).await {
                Ok(b) => b,
                Err(e) => return skip(e),
            };
            let saved = std::mem::replace(&mut self.http, foreign);
            let forged = self.call_with(0, Probe::Succeeds, bearer).await;
            self.http = saved;
            let name = self.action_name(0).to_string();
            (
                if name == "?" { "an action" } else { "the first action" },
                genuine.map_err(|e| e.text().to_string()),
                forged.map_err(|e| e.text().to_string()),
            )
        };
        if !matches!(genuine, Ok(true)) {
            return skip(format!(
                "{what} does not succeed with the configured certificate either; see system.token_issued and the action rules"
            ));
        }
        match forged {
            Err(e) => pass(format!(
                "{what} with a self-signed certificate: refused at the TLS handshake ({e})"
            )),
            Ok(r) if r.is_success() => fail(format!(
                "{what} with a self-signed certificate: {}: accepted",
                r.describe()
            )),
            Ok(r) if (400..500).contains(&r.status) => {
                pass(format!("{what} with a self-signed certificate: {}", r.describe()))
            }
            Ok(r) => fail(format!(
                "{what} with a self-signed certificate: {}; expected a refusal",
                r.describe()
            )),
        }
    }

    // ---- action.* ----

    /// The bearer token of a call of action `i`, if the connection uses one.
    async fn bearer(&mut self, i: usize) -> Result<Option<String>, String> {
        match &self.conn.system_auth {
            SystemAuthConfig::Oauth2ClientCredentials(_) => self
                .access_token()
                .await
                .map(Some)
                .map_err(|e| format!("no system token ({e}); see system.token_issued")),
            SystemAuthConfig::TokenExchange(_) => {
                let scope = self.conn.actions.get(i).and_then(|a| a.scope.clone());
                self.exchanged_token(scope)
                    .await
                    .map(Some)
                    .map_err(|e| format!("no exchanged token ({e}); see system.token_issued"))
            }
            SystemAuthConfig::StaticBearer { .. } => {
                Ok(self.static_token.as_ref().map(|t| t.expose_secret().to_string()))
            }
            SystemAuthConfig::None => Ok(None),
        }
    }

    async fn call(&mut self, i: usize, probe: Probe) -> Result<Reply, CallError> {
        if let Some(reply) = self.replies.get(&(i, probe)) {
            return reply.clone();
        }
        let result = self.call_uncached(i, probe).await;
        self.replies.insert((i, probe), result.clone());
        result
    }

    async fn call_uncached(&mut self, i: usize, probe: Probe) -> Result<Reply, CallError> {
        let bearer = match probe {
            Probe::MissingBearer => None,
            Probe::WrongBearer => Some(format!("deskbridge-check-invalid-{}", nonce())),
            _ => self.bearer(i).await.map_err(CallError::Missing)?,
        };
        self.call_with(i, probe, bearer).await
    }

    /// Action `i` called with `bearer` and, as `probe` says, the API key
    /// and the customer's token.
    async fn call_with(&mut self, i: usize, probe: Probe, bearer: Option<String>) -> Result<Reply, CallError> {
        let spec = self
            .conn
            .actions
            .get(i)
            .cloned()
            .ok_or_else(|| CallError::Failed("no such action".into()))?;
        let api_key = match (probe, &self.api_key) {
            (Probe::MissingApiKey, _) | (_, None) => None,
            (Probe::WrongApiKey, Some((name, _))) => {
                Some((name.clone(), format!("deskbridge-check-invalid-{}", nonce())))
            }
            (_, Some((name, value))) => Some((name.clone(), value.expose_secret().to_string())),
        };
        self.ensure_logins().await;
        let credential = self
            .customer_credential()
            .ok_or_else(|| CallError::Missing(self.no_token()))?;
        let customer = match probe {
            // An exchanged token names the customer: none goes beside it.
            _ if self.exchanges() => None,
            Probe::MissingCustomerToken => None,
            Probe::TamperedCustomerToken => Some(tamper(&credential)),
            _ => Some(credential.token().to_string()),
        };
        let input = match self.plans.get(i) {
            Some(Ok(input)) => input.clone(),
            Some(Err(why)) => return Err(CallError::Missing(why.clone())),
            None => Map::new(),
        };
        // Placed as the gateway places them: path, query string, body.
        let mut url = format!(
            "{}{}",
            self.conn.base_url.trim_end_matches('/'),
            action::fill_path(&spec.path, &input)
        );
        if let Some(query) = action::query_string(&spec.query, &input) {
            url.push('?');
            url.push_str(&query);
        }
        let method = reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut request = self
            .http
            .request(method, url)
            .timeout(Duration::from_millis(self.conn.timeout_ms));
        let sensitive = |v: &str| -> Result<reqwest::header::HeaderValue, String> {
            let mut value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| "a credential cannot go in a header".to_string())?;
            value.set_sensitive(true);
            Ok(value)
        };
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
        }
        if let Some((name, value)) = api_key {
            request = request.header(name, sensitive(&value)?);
        }
        if spec.kind == ActionKind::Write {
            // A fresh key per call: each probe is its own request.
            request = request.header("idempotency-key", format!("deskbridge-check-{}", nonce()));
        }
        let placement = &self.conn.customer_auth;
        let mut body = None;
        if let Some(token) = customer {
            match placement.place(&token) {
                PlacedToken::Header(value) => {
                    let name = HeaderName::from_bytes(placement.name.as_bytes())
                        .map_err(|_| "customer_auth.name is not a header name".to_string())?;
                    request = request.header(name, sensitive(&value)?);
                }
                PlacedToken::Cookie(value) => request = request.header(COOKIE, sensitive(&value)?),
                PlacedToken::Body(doc) => body = Some(doc),
            }
        }
        let mut doc = body.unwrap_or_else(|| Value::Object(Map::new()));
        action::fill_body(&mut doc, &spec.body, &input);
        if spec.method != "GET" || doc.as_object().is_some_and(|d| !d.is_empty()) {
            request = request.header(CONTENT_TYPE, "application/json").body(doc.to_string());
        }
        Ok(self.send(request).await?)
    }

    async fn action_succeeds(&mut self, i: usize) -> Verdict {
        match self.call(i, Probe::Succeeds).await {
            Err(CallError::Missing(e)) => skip(e),
            Err(CallError::Failed(e)) => fail(e),
            Ok(r) if r.is_success() => match r.json() {
                Some(_) => pass(format!("all three credentials: HTTP {}, a JSON body", r.status)),
                None => fail(format!(
                    "all three credentials: HTTP {}, but the body is not JSON",
                    r.status
                )),
            },
            Ok(r) => fail(format!("all three credentials: {}", r.describe())),
        }
    }

    async fn action_refuses(&mut self, i: usize, probe: Probe) -> Verdict {
        let (what, expected): (&str, &[u16]) = match probe {
            Probe::MissingBearer => ("no Authorization header", &[401]),
            Probe::WrongBearer => ("an unknown bearer token", &[401]),
            Probe::MissingApiKey => ("no API key", &[401, 403]),
            Probe::WrongApiKey => ("an unknown API key", &[401, 403]),
            Probe::MissingCustomerToken => ("no customer token", &[401]),
            Probe::TamperedCustomerToken => ("a customer token with a changed signature", &[401]),
            Probe::Succeeds | Probe::Distinguishable => return skip("not a refusal rule"),
        };
        if matches!(probe, Probe::MissingBearer | Probe::WrongBearer) && self.conn.system_auth == SystemAuthConfig::None
        {
            return skip("system_auth kind = \"none\": the connection sends no bearer token");
        }
        if matches!(probe, Probe::MissingApiKey | Probe::WrongApiKey) && self.api_key.is_none() {
            return skip("no [connections.api_key] configured");
        }
        if matches!(probe, Probe::MissingCustomerToken | Probe::TamperedCustomerToken) && self.exchanges() {
            return skip(
                "token exchange: the exchanged token names the customer and no customer token is sent; \
                 see system.exchange_forged_subject_refused",
            );
        }
        let name = self.action_name(i).to_string();
        match self.call(i, Probe::Succeeds).await {
            Ok(r) if r.is_success() => {}
            _ => {
                return skip(format!(
                    "the call with all three credentials did not succeed; see action.{name}.succeeds"
                ));
            }
        }
        let reply = match self.call(i, probe).await {
            Ok(r) => r,
            Err(e) => return fail(format!("{what}: {}", e.text())),
        };
        let evidence = format!("{what}: {}", reply.describe());
        if expected.contains(&reply.status) {
            pass(evidence)
        } else if reply.is_success() {
            fail(format!("{evidence}: accepted"))
        } else {
            let want = expected.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ");
            fail(format!("{evidence}; expected {want}"))
        }
    }

    async fn action_distinguishable(&mut self, i: usize) -> Verdict {
        let name = self.action_name(i).to_string();
        if self.conn.system_auth == SystemAuthConfig::None {
            return skip("system_auth kind = \"none\": there is no system-token refusal to compare");
        }
        if self.exchanges() {
            return skip("token exchange: the company is sent one token, so there are no two refusals to tell apart");
        }
        match self.call(i, Probe::Succeeds).await {
            Ok(r) if r.is_success() => {}
            _ => {
                return skip(format!(
                    "the call with all three credentials did not succeed; see action.{name}.succeeds"
                ));
            }
        }
        let system = self.call(i, Probe::WrongBearer).await;
        let customer = self.call(i, Probe::TamperedCustomerToken).await;
        let (Ok(system), Ok(customer)) = (system, customer) else {
            return skip("a refusal got no answer; see the wrong_bearer and tampered_customer_token rules");
        };
        if system.is_success() || customer.is_success() {
            return skip(format!(
                "needs both refusals; see action.{name}.wrong_bearer and action.{name}.tampered_customer_token"
            ));
        }
        let mut evidence = format!(
            "system token refused: {}; customer token refused: {}",
            system.describe(),
            customer.describe()
        );
        // The gateway's own reading of each refusal (`contract::whose_refusal`):
        // where it blames the wrong credential, the two disagree.
        if system.blame() != Some(Refused::SystemToken) || customer.blame() != Some(Refused::CustomerToken) {
            return fail(format!("{evidence}: the platform cannot tell whose credential failed"));
        }
        if self.api_key.is_some()
            && let Ok(api_key) = self.call(i, Probe::WrongApiKey).await
            && !api_key.is_success()
        {
            evidence.push_str(&format!("; API key refused: {}", api_key.describe()));
            match api_key.blame() {
                Some(Refused::ApiKey) => {}
                Some(Refused::CustomerToken) => {
                    return warn(format!(
                        "{evidence}: a wrong API key reads as the customer's failure, so the platform would ask \
                         the customer to log in again for its own mistake"
                    ));
                }
                _ => {
                    return warn(format!(
                        "{evidence}: a wrong API key cannot be told from other refusals"
                    ));
                }
            }
        }
        pass(evidence)
    }

    // ---- transport.* ----

    /// Every 429 and 503 the company answered during the check, and with
    /// `--provoke-limits` failed logins of a made-up user until one comes.
    async fn transport_retry_after(&mut self) -> Verdict {
        let seen = |this: &Self| this.limited.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut provoked = None;
        if seen(self).is_empty() && self.provoke_limits {
            let user = format!("deskbridge-check-nobody-{}", nonce());
            let password = format!("wrong-{}", nonce());
            let mut tries = 0;
            while tries < MAX_PROVOKING_LOGINS && seen(self).is_empty() {
                tries += 1;
                if let Err(e) = self.post_login(&user, &password).await {
                    return skip(format!("the login endpoint: {e}"));
                }
            }
            provoked = Some(tries);
        }
        let limited = seen(self);
        if limited.is_empty() {
            return match provoked {
                Some(tries) => warn(format!(
                    "{tries} failed logins of one made-up user were not limited (no 429): logins are not throttled"
                )),
                None => skip(
                    "no 429 or 503 came during the check; --provoke-limits makes one with failed logins of a made-up user",
                ),
            };
        }
        let now = SystemClock.now();
        let mut bad = Vec::new();
        let mut missing_429 = 0;
        for (status, value) in &limited {
            match value {
                None if *status == 429 => missing_429 += 1,
                None => {}
                Some(v) if company::connector::retry_after(v, now).is_none() => {
                    bad.push(format!("HTTP {status} Retry-After: {}", shown_header(v)));
                }
                Some(_) => {}
            }
        }
        let how = match provoked {
            Some(tries) => format!(" (after {tries} failed logins of a made-up user)"),
            None => String::new(),
        };
        let evidence = format!("{} answer(s) 429 or 503{how}", limited.len());
        if !bad.is_empty() {
            return fail(format!(
                "{evidence}; not delta-seconds or an HTTP date: {}",
                bad.join(", ")
            ));
        }
        if missing_429 > 0 {
            return warn(format!("{evidence}; {missing_429} 429(s) without Retry-After"));
        }
        pass(format!("{evidence}, each Retry-After delta-seconds or an HTTP date"))
    }

    fn transport_plain_http(&self) -> Verdict {
        let mut urls = vec![
            ("base_url", Some(self.conn.base_url.as_str())),
            ("customer_login_url", self.login_url.as_deref()),
            ("identity.jwks_url", self.conn.identity.jwks_url.as_deref()),
        ];
        if let Some(OauthClient { token_url, issuer, .. }) = self.conn.system_auth.oauth() {
            urls.push(("system_auth.token_url", token_url.as_deref()));
            urls.push(("system_auth.issuer", issuer.as_deref()));
        }
        let mut plain = Vec::new();
        let mut checked = 0;
        for (key, url) in urls {
            let Some(Ok(url)) = url.map(reqwest::Url::parse) else {
                continue;
            };
            checked += 1;
            let host = url.host_str().unwrap_or("").to_ascii_lowercase();
            let loopback = match host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
            {
                Ok(ip) => ip.is_loopback(),
                Err(_) => host == "localhost" || host.ends_with(".localhost"),
            };
            if url.scheme() == "http" && !loopback {
                plain.push(format!("{key} ({})", url.host_str().unwrap_or("?")));
            }
        }
        if plain.is_empty() {
            pass(format!("{checked} URL(s): https, or http on loopback only"))
        } else {
            warn(format!("plain http to a non-loopback host: {}", plain.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, challenge: Option<&str>, body: &str) -> Reply {
        let mut headers = HeaderMap::new();
        if let Some(c) = challenge {
            headers.insert("www-authenticate", c.parse().unwrap());
        }
        Reply {
            status,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn replies_are_described_by_status_code_and_challenge_only() {
        let r = reply(
            401,
            Some(r#"Bearer realm="x", error="invalid_token", error_description="secret, echoed""#),
            r#"{"error":"invalid_token","error_description":"the token abc123 is unknown"}"#,
        );
        assert_eq!(
            r.describe(),
            "HTTP 401 invalid_token, WWW-Authenticate: Bearer error=invalid_token"
        );
        assert_eq!(r.blame(), Some(Refused::SystemToken));
        let echoed = reply(400, None, r#"{"error":"password hunter2 is wrong"}"#);
        assert_eq!(echoed.describe(), "HTTP 400 (an unprintable error code)");
        assert_eq!(reply(200, None, "not json").describe(), "HTTP 200");
        let customer = reply(
            401,
            Some(r#"JWT realm="customer", error="invalid_customer_token""#),
            "{}",
        );
        assert_eq!(customer.blame(), Some(Refused::CustomerToken));
        let api_key = reply(401, Some(r#"ApiKey realm="acme""#), r#"{"error":"nope"}"#);
        assert_eq!(api_key.blame(), Some(Refused::ApiKey));
    }

    #[test]
    fn tampering_changes_one_signature_character() {
        let jwt = Credential::Jwt("aGVhZGVy.Y2xhaW1z.c2lnbmF0dXJlQUFB".into());
        let forged = tamper(&jwt);
        assert_ne!(forged, jwt.token());
        assert!(forged.starts_with("aGVhZGVy.Y2xhaW1z."));
        let differing = forged.chars().zip(jwt.token().chars()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1);
        let cookie = Credential::Cookie {
            name: "s".into(),
            value: "AAAA".into(),
            max_age: None,
            has_expires: false,
        };
        assert_eq!(tamper(&cookie), "AABA");
    }

    #[test]
    fn lifetimes_read_as_people_say_them() {
        assert_eq!(human(28800), "8 h");
        assert_eq!(human(100_000), "27.8 h");
        assert_eq!(human(300), "5 min");
        assert_eq!(human(59), "59 s");
    }
}
