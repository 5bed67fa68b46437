//! Agents known to the company's own identity provider (`[console.oidc]`):
//! console sign-in at the provider (OpenID Connect authorization code flow
//! with PKCE, `state`, `nonce` and the RFC 9207 `iss` check; RP-initiated
//! logout), and its JWT access tokens on the agent API (RFC 9068); roles
//! from a claim through `role_map`. The provider's keys are verified as
//! customer tokens are (`company::identity`), from its JWKS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clock::Clock;
use company::assertion::AssertionSigner;
use company::config::SecretSource;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::{IdentityConfig, IdentityMode, Opacity};
use crate::discovery::ServerMetadata;
use crate::identity::{IdentityError, JwtVerifier};

/// `[console.oidc]`: the identity provider agents sign in at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its metadata is read from there).
    pub issuer: String,
    /// The console's client at the provider: its ID tokens are addressed
    /// to it, so it may not be `api_audience`.
    pub client_id: String,
    /// The claim (a string or an array of strings) whose values `role_map` maps.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// A value of `role_claim` (a group) to the deskbridge role it grants.
    pub role_map: BTreeMap<String, String>,
    /// The claim that names the agent in the audit log and the console.
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// The `aud` of the provider's access tokens for deskbridge's agent
    /// API. Set, the agent API accepts them as bearer tokens.
    pub api_audience: Option<String>,
    /// The provider's JWKS; default: its metadata's `jwks_uri`.
    pub jwks_url: Option<String>,
    /// The console's redirect URI as registered at the provider
    /// (`https://<gateway>/console/oidc/callback`). Set, agents sign in to
    /// the console at the provider.
    pub redirect_url: Option<String>,
    /// The console's client secret at the provider (`client_secret_basic`,
    /// or `client_secret_post` where the provider takes only that).
    pub client_secret: Option<SecretSource>,
    /// Instead of a secret: a PEM private key (EC P-256 or RSA) that signs
    /// `private_key_jwt` client assertions. Neither: a public client (PKCE).
    pub private_key: Option<SecretSource>,
    /// The `kid` of the assertions' header.
    pub key_id: Option<String>,
    /// The scopes the console asks for; `openid` is required.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The provider's name on the console's button ("Sign in with …");
    /// default: the issuer's host.
    pub display_name: Option<String>,
    /// Where the provider sends the browser back after signing out (to be
    /// registered there); default: the console, on `redirect_url`'s origin.
    pub post_logout_redirect_url: Option<String>,
    /// Whether agents may still sign in to the console with a local
    /// password; `false` once everyone signs in at the provider.
    #[serde(default = "default_passwords")]
    pub passwords: bool,
}

/// Where the provider sends the browser back: `redirect_url` ends with it
/// (behind a proxy, after the gateway's own path prefix).
pub const CALLBACK_PATH: &str = "/console/oidc/callback";

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

fn default_passwords() -> bool {
    true
}

fn default_role_claim() -> String {
    "groups".into()
}

fn default_name_claim() -> String {
    "sub".into()
}

impl OidcConfig {
    /// What is wrong with it, by key under `console.oidc`.
    pub(crate) fn problems(&self, agents: &crate::config::AgentsConfig) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(&self.issuer) {
            Ok(url) if url.scheme() == "https" || is_loopback(&url) => {}
            Ok(_) => problems.push(("issuer".into(), "must be https (http only on loopback)".into())),
            Err(e) => problems.push(("issuer".into(), format!("not a URL: {e}"))),
        }
        if let Some(url) = &self.jwks_url
            && reqwest::Url::parse(url).map_or(true, |u| u.scheme() != "https" && !is_loopback(&u))
        {
            problems.push(("jwks_url".into(), "must be an https URL (http only on loopback)".into()));
        }
        if self.client_id.is_empty() {
            problems.push(("client_id".into(), "must not be empty".into()));
        }
        if self.role_map.is_empty() {
            problems.push((
                "role_map".into(),
                "map at least one group to a role, or no one gets in".into(),
            ));
        }
        for (group, role) in &self.role_map {
            if !agents.has(role) {
                problems.push((
                    format!("role_map.{group}"),
                    format!("{role:?} is not a role: add it to [agents] roles"),
                ));
            }
        }
        for (key, url) in [
            ("redirect_url", &self.redirect_url),
            ("post_logout_redirect_url", &self.post_logout_redirect_url),
        ] {
            if let Some(url) = url
                && reqwest::Url::parse(url).map_or(true, |u| u.scheme() != "https" && !is_loopback(&u))
            {
                problems.push((key.into(), "must be an https URL (http only on loopback)".into()));
            }
        }
        if let Some(url) = self.redirect_url.as_deref().and_then(|u| reqwest::Url::parse(u).ok())
            && !url.path().ends_with(CALLBACK_PATH)
        {
            problems.push((
                "redirect_url".into(),
                format!("must end with {CALLBACK_PATH}, where the gateway takes the provider's answer"),
            ));
        }
        let signs_in = self.redirect_url.is_some();
        if !signs_in {
            for (key, set) in [
                ("client_secret", self.client_secret.is_some()),
                ("private_key", self.private_key.is_some()),
                ("passwords", !self.passwords),
            ] {
                if set {
                    problems.push((
                        key.into(),
                        "is for console sign-in at the provider: set redirect_url, the console's callback registered there (https://<gateway>/console/oidc/callback)".into(),
                    ));
                }
            }
        }
        if self.client_secret.is_some() && self.private_key.is_some() {
            problems.push((
                "private_key".into(),
                "set client_secret or private_key, not both".into(),
            ));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            problems.push(("scopes".into(), "must include \"openid\"".into()));
        }
        if let Some(bad) = self
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            problems.push(("scopes".into(), format!("{bad:?} is not one scope")));
        }
        if self
            .api_audience
            .as_ref()
            .is_some_and(|a| a.is_empty() || *a == self.client_id)
        {
            // An ID token is addressed to the client: with that audience,
            // one could stand in for an access token.
            problems.push((
                "api_audience".into(),
                "must be the agent API's own audience, not empty and not client_id".into(),
            ));
        }
        problems
    }
}

/// An OAuth error code as the provider sent it, if it is one (RFC 6749
/// §5.2 characters, at most 64); never its free text into a page or a log.
fn oauth_error_code(error: &str) -> String {
    let plain = !error.is_empty()
        && error.len() <= 64
        && error
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e));
    if plain {
        error.to_string()
    } else {
        "an unreadable error code".into()
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    url.scheme() == "http"
        && (host == "localhost" || host == "[::1]" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback()))
}

/// Why a provider's token does not let its holder in.
#[derive(Debug, thiserror::Error)]
pub enum AgentIdpError {
    #[error("the identity provider's token is not valid: {0}")]
    Invalid(String),
    #[error("the identity provider's access token has expired; get a new one from it")]
    Expired,
    #[error("the identity provider's keys could not be fetched: {0}")]
    Unavailable(String),
    #[error(
        "none of this agent's values of the claim {0:?} maps to a deskbridge role; an administrator adds the group to [console.oidc] role_map"
    )]
    NoRole(String),
    /// The browser's way back from the provider is not the sign-in it began.
    #[error("the sign-in did not complete: {0}")]
    SignIn(String),
    /// The provider said no (an `error` on the way back, or its token endpoint).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
}

/// An agent as the provider's token names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpAgent {
    pub name: String,
    pub role: String,
}

/// The provider, as far as the gateway has read it: its metadata and a
/// verifier of its tokens, fetched the first time they are needed (so a
/// provider that is down delays no start).
pub struct AgentIdp {
    config: OidcConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// The roles in the order of their rank: the highest one mapped wins.
    ranks: Vec<String>,
    metadata: tokio::sync::OnceCell<ServerMetadata>,
    /// The last failure to read the metadata: within `METADATA_RETRY` of it,
    /// it is the answer, so tokens sent while the provider is down do not
    /// each cost it a request.
    metadata_failed: std::sync::Mutex<Option<(tokio::time::Instant, String)>>,
    api_tokens: tokio::sync::OnceCell<JwtVerifier>,
    id_tokens: tokio::sync::OnceCell<JwtVerifier>,
    client_auth: ClientAuth,
}

/// How the console proves itself at the provider's token endpoint.
enum ClientAuth {
    Secret(SecretString),
    Key(AssertionSigner),
    /// A public client: PKCE alone binds the code to this sign-in.
    Public,
}

/// A console sign-in begun in a browser: sealed into a cookie of its own
/// (so any instance of the gateway can finish it) until the provider sends
/// the browser back.
#[derive(Serialize, Deserialize)]
pub struct PendingSignIn {
    state: String,
    nonce: String,
    verifier: String,
    expires_at: u64,
}

/// How long a browser may take at the provider.
pub const SIGN_IN_LIFETIME: Duration = Duration::from_secs(600);

impl PendingSignIn {
    /// New random `state`, `nonce` and PKCE verifier (32 bytes each).
    pub fn begin(now_secs: u64) -> Result<Self, crate::GatewayError> {
        let random = || crate::vault::random_id("");
        Ok(Self {
            state: random()?,
            nonce: random()?,
            verifier: random()?,
            expires_at: now_secs + SIGN_IN_LIFETIME.as_secs(),
        })
    }
}

/// What the provider's redirect back carries (its query).
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

impl Callback {
    /// From the callback's query string; of a parameter sent twice, the
    /// first counts (and no other parameter matters).
    pub fn from_query(query: &str) -> Self {
        let mut back = Self::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "code" => &mut back.code,
                "state" => &mut back.state,
                "iss" => &mut back.iss,
                "error" => &mut back.error,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        back
    }
}

/// A finished sign-in: the agent, and its ID token (for the provider's
/// logout, `id_token_hint`).
pub struct SignedIn {
    pub agent: IdpAgent,
    pub id_token: SecretString,
    /// Who the provider says it is (`sub`), and the provider's session
    /// (`sid`) when it names one: what its back-channel logout names.
    pub subject: String,
    pub sid: Option<String>,
}

/// Whose console sessions a verified back-channel logout token ends: the
/// provider's session `sid`, else every session of `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedOut {
    Session(String),
    Subject(String),
}

/// The `events` member that makes a JWT a logout token (OpenID Connect
/// Back-Channel Logout 1.0 §2.4).
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The provider's token response, as far as sign-in reads it.
#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// How long the provider's endpoints may take to answer.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the provider's metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failure to read the metadata stands before it is tried again.
const METADATA_RETRY: Duration = Duration::from_secs(5);

impl AgentIdp {
    pub fn new(
        config: OidcConfig,
        agents: &crate::config::AgentsConfig,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let client_auth = match (&config.client_secret, &config.private_key) {
            (Some(secret), _) => ClientAuth::Secret(
                secret
                    .resolve()
                    .map_err(|e| format!("console.oidc.client_secret: {e}"))?,
            ),
            (None, Some(pem)) => {
                let pem = pem.resolve().map_err(|e| format!("console.oidc.private_key: {e}"))?;
                ClientAuth::Key(
                    AssertionSigner::new(pem.expose_secret(), config.key_id.clone(), &config.client_id)
                        .map_err(|e| format!("console.oidc.private_key: {e}"))?,
                )
            }
            (None, None) => ClientAuth::Public,
        };
        // `[agents] roles` run from the least to the most; admin is above all.
        let mut ranks: Vec<String> = agents.roles.iter().rev().cloned().collect();
        ranks.insert(0, crate::agents::ADMIN_ROLE.to_string());
        ranks.push(crate::agents::BOT_ROLE.to_string());
        Ok(Self {
            config,
            http,
            clock,
            ranks,
            metadata: tokio::sync::OnceCell::new(),
            metadata_failed: std::sync::Mutex::new(None),
            api_tokens: tokio::sync::OnceCell::new(),
            id_tokens: tokio::sync::OnceCell::new(),
            client_auth,
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The provider's metadata (OpenID Connect Discovery), read once.
    pub async fn metadata(&self) -> Result<&ServerMetadata, AgentIdpError> {
        self.metadata
            .get_or_try_init(|| async {
                let recent = self
                    .metadata_failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < METADATA_RETRY)
                    .map(|(_, why)| why.clone());
                if let Some(why) = recent {
                    return Err(AgentIdpError::Unavailable(why));
                }
                let found = crate::discovery::discover(&self.http, &self.config.issuer, METADATA_TIMEOUT).await;
                found.map_err(|why| {
                    *self.metadata_failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((tokio::time::Instant::now(), why.clone()));
                    AgentIdpError::Unavailable(why)
                })
            })
            .await
    }

    /// A verifier of the provider's tokens addressed to `audience`.
    async fn verifier(&self, audience: &str) -> Result<JwtVerifier, AgentIdpError> {
        let jwks_url = match &self.config.jwks_url {
            Some(url) => url.clone(),
            None => self
                .metadata()
                .await?
                .jwks_uri
                .clone()
                .ok_or_else(|| AgentIdpError::Unavailable("the provider's metadata names no jwks_uri".into()))?,
        };
        let identity = IdentityConfig {
            mode: IdentityMode::Jwt,
            jwks_url: Some(jwks_url),
            issuer: Some(self.config.issuer.clone()),
            audience: Some(audience.to_string()),
            claim: self.config.name_claim.clone(),
            opacity: Opacity::default(),
        };
        Ok(JwtVerifier::new(identity, self.http.clone(), self.clock.clone()))
    }

    /// Whether the agent API takes the provider's access tokens.
    pub fn takes_api_tokens(&self) -> bool {
        self.config.api_audience.is_some()
    }

    /// The agent an access token of the provider names (RFC 9068: `typ`
    /// `at+jwt`, `iss`, `aud`, `exp`, the key's own algorithm), with the
    /// role its groups map to.
    pub async fn api_agent(&self, token: &str) -> Result<IdpAgent, AgentIdpError> {
        let audience = self
            .config
            .api_audience
            .as_deref()
            .ok_or_else(|| AgentIdpError::Invalid("the agent API takes no provider tokens".into()))?;
        let verifier = self.api_tokens.get_or_try_init(|| self.verifier(audience)).await?;
        let verified = verifier.verify_jwt(token).await.map_err(|e| match e {
            IdentityError::Invalid(why) => AgentIdpError::Invalid(why),
            IdentityError::Expired => AgentIdpError::Expired,
            IdentityError::KeysUnavailable(why) => AgentIdpError::Unavailable(why),
        })?;
        // RFC 9068 §4: an access token says so in its type. Providers that
        // predate it send `JWT`; their ID tokens are kept out by `aud`,
        // which for them is the client, never `api_audience`.
        let typ = verified.typ.as_deref().map(str::to_ascii_lowercase);
        if !matches!(typ.as_deref(), None | Some("at+jwt" | "application/at+jwt" | "jwt")) {
            return Err(AgentIdpError::Invalid("its typ is not at+jwt".into()));
        }
        self.agent_of(&verified.claims)
    }

    /// Whether agents sign in to the console at the provider.
    pub fn signs_in(&self) -> bool {
        self.config.redirect_url.is_some()
    }

    /// The provider's name for people: "Sign in with …".
    pub fn display_name(&self) -> String {
        self.config.display_name.clone().unwrap_or_else(|| {
            reqwest::Url::parse(&self.config.issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| self.config.issuer.clone())
        })
    }

    /// Where the browser goes to sign in: the provider's authorization
    /// endpoint, asked for a code (S256 PKCE) for this pending sign-in.
    pub async fn authorization_url(&self, pending: &PendingSignIn) -> Result<String, AgentIdpError> {
        let metadata = self.metadata().await?;
        let endpoint = metadata.authorization_endpoint.as_deref().ok_or_else(|| {
            AgentIdpError::Unavailable("the provider's metadata names no authorization_endpoint".into())
        })?;
        let mut url = reqwest::Url::parse(endpoint)
            .map_err(|e| AgentIdpError::Unavailable(format!("its authorization_endpoint is not a URL: {e}")))?;
        let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            pending.verifier.as_bytes(),
        ));
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", self.config.redirect_url.as_deref().unwrap_or_default())
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Finishes a sign-in from the provider's redirect back: the `state`
    /// this browser was given, the issuer (RFC 9207), the code exchanged
    /// with the PKCE verifier, the ID token verified (signature, `iss`,
    /// `aud`, `exp`, `nonce`, `azp`), and the agent's role from its claims,
    /// read from the userinfo endpoint where the ID token leaves them out.
    pub async fn sign_in(&self, back: &Callback, pending: &PendingSignIn) -> Result<SignedIn, AgentIdpError> {
        use subtle::ConstantTimeEq;
        if self.clock.unix_secs() > pending.expires_at {
            return Err(AgentIdpError::SignIn(format!(
                "it took longer than {} minutes; start again",
                SIGN_IN_LIFETIME.as_secs() / 60
            )));
        }
        let state = back.state.as_deref().unwrap_or_default();
        if !bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())) {
            return Err(AgentIdpError::SignIn(
                "the answer is not for the sign-in this browser began (state)".into(),
            ));
        }
        let metadata = self.metadata().await?;
        // RFC 9207: checked on errors too, so no other provider can speak
        // for this one.
        match &back.iss {
            Some(iss) if iss.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') => {
                return Err(AgentIdpError::SignIn(
                    "the answer names another issuer (RFC 9207 iss)".into(),
                ));
            }
            None if metadata.authorization_response_iss_parameter_supported => {
                return Err(AgentIdpError::SignIn(
                    "the answer does not name its issuer, which this provider always does (RFC 9207 iss)".into(),
                ));
            }
            _ => {}
        }
        if let Some(error) = &back.error {
            return Err(AgentIdpError::Refused(oauth_error_code(error)));
        }
        let code = back
            .code
            .as_deref()
            .ok_or_else(|| AgentIdpError::SignIn("the answer carries neither a code nor an error".into()))?;
        let tokens = self.redeem(code, &pending.verifier).await?;
        let id_token = tokens.id_token.ok_or_else(|| {
            AgentIdpError::Refused("its token endpoint issued no id_token (is openid among the scopes?)".into())
        })?;
        let verifier = self
            .id_tokens
            .get_or_try_init(|| self.verifier(&self.config.client_id))
            .await?;
        let verified = verifier.verify_jwt(&id_token).await.map_err(|e| match e {
            IdentityError::Invalid(why) => AgentIdpError::SignIn(format!("its ID token is not valid: {why}")),
            IdentityError::Expired => AgentIdpError::SignIn("its ID token has expired".into()),
            IdentityError::KeysUnavailable(why) => AgentIdpError::Unavailable(why),
        })?;
        if verified
            .typ
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().contains("at+jwt"))
        {
            return Err(AgentIdpError::SignIn(
                "it sent an access token where the ID token goes".into(),
            ));
        }
        let mut claims = verified.claims;
        let nonce = claims
            .get("nonce")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if !bool::from(nonce.as_bytes().ct_eq(pending.nonce.as_bytes())) {
            return Err(AgentIdpError::SignIn(
                "its ID token is not for this sign-in (nonce)".into(),
            ));
        }
        // OpenID Connect Core §3.1.3.7: with more than one audience, the
        // token must have been issued to this client.
        let several = claims
            .get("aud")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(serde_json::Value::as_str) {
            Some(azp) if azp != self.config.client_id => {
                return Err(AgentIdpError::SignIn(
                    "its ID token was issued to another client (azp)".into(),
                ));
            }
            None if several => {
                return Err(AgentIdpError::SignIn(
                    "its ID token has several audiences and no azp".into(),
                ));
            }
            _ => {}
        }
        let absent = |c: &serde_json::Value, name: &str| c.get(name).is_none_or(serde_json::Value::is_null);
        let missing = |c: &serde_json::Value| absent(c, &self.config.role_claim) || absent(c, &self.config.name_claim);
        if missing(&claims)
            && let (Some(endpoint), Some(access_token)) = (&metadata.userinfo_endpoint, &tokens.access_token)
        {
            self.add_userinfo(&mut claims, endpoint, access_token).await?;
        }
        let agent = self.agent_of(&claims)?;
        let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str).map(str::to_string);
        Ok(SignedIn {
            agent,
            id_token: SecretString::from(id_token),
            subject: text("sub").unwrap_or_default(),
            sid: text("sid"),
        })
    }

    /// A back-channel logout token the provider posted (OpenID Connect
    /// Back-Channel Logout 1.0 §2.6), verified as an ID token is (key,
    /// `iss`, `aud` = client_id, `exp`), and then as a logout token: its
    /// type, the logout event, a `jti`, no `nonce` (so no ID token passes
    /// for one), and a `sid` or `sub` to say whose sessions end.
    pub async fn logout_token(&self, token: &str) -> Result<LoggedOut, AgentIdpError> {
        let verifier = self
            .id_tokens
            .get_or_try_init(|| self.verifier(&self.config.client_id))
            .await?;
        let verified = verifier.verify_jwt(token).await.map_err(|e| match e {
            IdentityError::Invalid(why) => AgentIdpError::Invalid(why),
            IdentityError::Expired => AgentIdpError::Invalid("it has expired".into()),
            IdentityError::KeysUnavailable(why) => AgentIdpError::Unavailable(why),
        })?;
        let typ = verified.typ.as_deref().map(str::to_ascii_lowercase);
        if !matches!(
            typ.as_deref(),
            None | Some("logout+jwt" | "application/logout+jwt" | "jwt")
        ) {
            return Err(AgentIdpError::Invalid("its typ is not logout+jwt".into()));
        }
        let claims = &verified.claims;
        if claims
            .get("events")
            .and_then(serde_json::Value::as_object)
            .is_none_or(|events| {
                !events
                    .get(BACKCHANNEL_LOGOUT_EVENT)
                    .is_some_and(serde_json::Value::is_object)
            })
        {
            return Err(AgentIdpError::Invalid("it has no back-channel logout event".into()));
        }
        if claims.get("nonce").is_some() {
            return Err(AgentIdpError::Invalid("it has a nonce, as an ID token does".into()));
        }
        if claims.get("jti").and_then(serde_json::Value::as_str).is_none() {
            return Err(AgentIdpError::Invalid("it has no jti".into()));
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        match (text("sid"), text("sub")) {
            (Some(sid), _) => Ok(LoggedOut::Session(sid)),
            (None, Some(sub)) => Ok(LoggedOut::Subject(sub)),
            (None, None) => Err(AgentIdpError::Invalid("it names neither sid nor sub".into())),
        }
    }

    /// The code exchanged for tokens at the provider's token endpoint.
    async fn redeem(&self, code: &str, verifier: &str) -> Result<TokenResponse, AgentIdpError> {
        let metadata = self.metadata().await?;
        let endpoint = &metadata.token_endpoint;
        let redirect = self.config.redirect_url.as_deref().unwrap_or_default();
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.into()),
            ("redirect_uri", redirect.into()),
            ("code_verifier", verifier.into()),
        ];
        let mut request = self.http.post(endpoint).timeout(PROVIDER_TIMEOUT);
        match &self.client_auth {
            ClientAuth::Secret(secret) => {
                let methods = &metadata.token_endpoint_auth_methods_supported;
                if methods.iter().any(|m| m == "client_secret_basic")
                    || !methods.iter().any(|m| m == "client_secret_post")
                {
                    let basic =
                        company::system_token::basic_credentials(&self.config.client_id, secret.expose_secret());
                    let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {basic}"))
                        .map_err(|_| AgentIdpError::SignIn("the client id or secret cannot go in a header".into()))?;
                    value.set_sensitive(true);
                    request = request.header(reqwest::header::AUTHORIZATION, value);
                } else {
                    form.push(("client_id", self.config.client_id.clone()));
                    form.push(("client_secret", secret.expose_secret().to_string()));
                }
            }
            ClientAuth::Key(signer) => {
                let assertion = signer
                    .sign(self.clock.unix_secs(), endpoint)
                    .map_err(AgentIdpError::SignIn)?;
                form.push(("client_id", self.config.client_id.clone()));
                form.push(("client_assertion_type", company::assertion::JWT_BEARER.into()));
                form.push(("client_assertion", assertion));
            }
            ClientAuth::Public => form.push(("client_id", self.config.client_id.clone())),
        }
        let answer = request.form(&form).send().await.map_err(|e| {
            AgentIdpError::Unavailable(format!(
                "its token endpoint: {}",
                company::system_token::describe_transport(&e)
            ))
        })?;
        let status = answer.status();
        if status.is_server_error() {
            return Err(AgentIdpError::Unavailable(format!(
                "its token endpoint answered HTTP {}",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            let error = answer
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|b| b.get("error").and_then(serde_json::Value::as_str).map(oauth_error_code))
                .unwrap_or_else(|| "no error code".into());
            return Err(AgentIdpError::Refused(format!(
                "its token endpoint answered HTTP {}: {error}",
                status.as_u16()
            )));
        }
        answer
            .json()
            .await
            .map_err(|_| AgentIdpError::Refused("its token endpoint's answer is not a token response".into()))
    }

    /// The userinfo endpoint's claims (OpenID Connect Core §5.3), for the
    /// same `sub` only, added where the ID token has none.
    async fn add_userinfo(
        &self,
        claims: &mut serde_json::Value,
        endpoint: &str,
        access_token: &str,
    ) -> Result<(), AgentIdpError> {
        let answer = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .timeout(PROVIDER_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                AgentIdpError::Unavailable(format!(
                    "its userinfo endpoint: {}",
                    company::system_token::describe_transport(&e)
                ))
            })?;
        if !answer.status().is_success() {
            return Err(AgentIdpError::Unavailable(format!(
                "its userinfo endpoint answered HTTP {}",
                answer.status().as_u16()
            )));
        }
        let info: serde_json::Map<String, serde_json::Value> = answer
            .json()
            .await
            .map_err(|_| AgentIdpError::Refused("its userinfo is not a JSON object".into()))?;
        if info.get("sub") != claims.get("sub") {
            return Err(AgentIdpError::SignIn(
                "its userinfo names another subject than the ID token".into(),
            ));
        }
        if let Some(claims) = claims.as_object_mut() {
            for (name, value) in info {
                let slot = claims.entry(name).or_insert(serde_json::Value::Null);
                if slot.is_null() {
                    *slot = value;
                }
            }
        }
        Ok(())
    }

    /// Where the browser ends its session at the provider (RP-Initiated
    /// Logout 1.0), when the provider offers it: with the ID token as the
    /// hint, and the console as where to come back.
    pub async fn logout_url(&self, id_token: Option<&SecretString>) -> Option<String> {
        let endpoint = self.metadata().await.ok()?.end_session_endpoint.as_deref()?;
        let mut url = reqwest::Url::parse(endpoint).ok()?;
        let back = match &self.config.post_logout_redirect_url {
            Some(url) => url.clone(),
            None => reqwest::Url::parse(self.config.redirect_url.as_deref()?)
                .ok()?
                .join("/console/")
                .ok()?
                .into(),
        };
        {
            let mut query = url.query_pairs_mut();
            if let Some(hint) = id_token {
                query.append_pair("id_token_hint", hint.expose_secret());
            }
            query
                .append_pair("client_id", &self.config.client_id)
                .append_pair("post_logout_redirect_uri", &back);
        }
        Some(url.into())
    }

    /// The agent the claims of a verified token name, and its role.
    pub fn agent_of(&self, claims: &serde_json::Value) -> Result<IdpAgent, AgentIdpError> {
        let name = claims
            .get(&self.config.name_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|n| crate::agents::plain_agent_name(n))
            .ok_or_else(|| {
                AgentIdpError::Invalid(format!(
                    "its {:?} claim is not a plain name (1-64 letters, digits, '-', '_', '.' or '@')",
                    self.config.name_claim
                ))
            })?
            .to_string();
        let groups: Vec<&str> = match claims.get(&self.config.role_claim) {
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            Some(serde_json::Value::Array(many)) => many.iter().filter_map(serde_json::Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mapped: Vec<&String> = groups.iter().filter_map(|g| self.config.role_map.get(*g)).collect();
        let role = self
            .ranks
            .iter()
            .find(|r| mapped.contains(r))
            .ok_or_else(|| AgentIdpError::NoRole(self.config.role_claim.clone()))?
            .clone();
        Ok(IdpAgent { name, role })
    }
}
