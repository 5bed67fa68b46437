//! Agents known to the company's own identity provider (`[console.oidc]`):
//! its JWT access tokens on the agent API (RFC 9068), their roles from a
//! claim through `role_map`. The provider's keys are verified as customer
//! tokens are (`company::identity`), from its JWKS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clock::Clock;
use serde::Deserialize;

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
}

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
    ) -> Self {
        // `[agents] roles` run from the least to the most; admin is above all.
        let mut ranks: Vec<String> = agents.roles.iter().rev().cloned().collect();
        ranks.insert(0, crate::agents::ADMIN_ROLE.to_string());
        ranks.push(crate::agents::BOT_ROLE.to_string());
        Self {
            config,
            http,
            clock,
            ranks,
            metadata: tokio::sync::OnceCell::new(),
            metadata_failed: std::sync::Mutex::new(None),
            api_tokens: tokio::sync::OnceCell::new(),
        }
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
