//! The platform's own credential at one company: an OAuth 2.0
//! client-credentials token (or a static bearer), cached, refreshed ahead of
//! expiry, fetched by one caller at a time however many wait on it, and
//! backed off when the token endpoint fails, so it is never hammered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use clock::Clock;
use contract::AccessTokenResponse;
use reqwest::header::{HeaderValue, WWW_AUTHENTICATE};
use secrecy::{ExposeSecret, SecretString};

use crate::assertion::AssertionSigner;
use crate::config::{ClientAuthMethod, GrantTypeIn, OauthClient, SecretSource, SystemAuthConfig};
use crate::metrics::Metrics;
use crate::share::{SharedToken, TokenShare};

/// A token in hand, with when to renew it and when it stops working (by
/// the injected clock).
#[derive(Debug)]
pub struct SystemToken {
    pub bearer: Arc<Bearer>,
    pub expires_at: SystemTime,
    refresh_at: SystemTime,
    /// Names the token in its share (see [`SharedToken::id`]).
    id: u64,
    /// As the share keeps it.
    access_token: SecretString,
}

impl SystemToken {
    /// A token another instance (or an earlier fetch) stored.
    fn from_shared(shared: &SharedToken) -> Result<Self, String> {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        Ok(Self {
            bearer: Arc::new(Bearer::new(&SecretString::from(shared.access_token.clone()))?),
            expires_at: at(shared.expires_at_ms),
            refresh_at: at(shared.refresh_at_ms),
            id: shared.id,
            access_token: SecretString::from(shared.access_token.clone()),
        })
    }

    fn shared(&self) -> SharedToken {
        SharedToken {
            id: self.id,
            access_token: self.access_token.expose_secret().to_string(),
            expires_at_ms: unix_millis(self.expires_at),
            refresh_at_ms: unix_millis(self.refresh_at),
        }
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A bearer token as sent: its `Authorization` value, built once per token
/// rather than per call, and marked sensitive, so debug output never shows it.
pub struct Bearer {
    header: HeaderValue,
}

impl Bearer {
    fn new(token: &SecretString) -> Result<Self, String> {
        if token.expose_secret().trim().is_empty() {
            return Err("the bearer token is empty".to_string());
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| "the bearer token is not a valid header value".to_string())?;
        header.set_sensitive(true);
        Ok(Self { header })
    }

    /// `Bearer <token>`, sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer([REDACTED])")
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The endpoint answered with an OAuth error (bad credentials, scope…).
    #[error("the token endpoint refused the request ({status}: {error})")]
    Refused { status: u16, error: String },
    /// The endpoint could not be reached or answered nonsense.
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
}

struct State {
    /// The token this process last saw (the share's, or its own fetch).
    current: Option<Arc<SystemToken>>,
    /// Token exchange: the tokens issued per customer token, actor and scope.
    exchanged: HashMap<ExchangeKey, Arc<SystemToken>>,
    /// After a failed fetch: no new attempt before this instant.
    retry_after: Option<(SystemTime, TokenError)>,
    backoff: Duration,
}

/// What one exchanged token was issued for. It holds the customer's token
/// itself, so a hit is an exact match (a digest collision could hand one
/// customer's token to another); it lives in memory only, like the token.
#[derive(PartialEq, Eq, Hash)]
struct ExchangeKey {
    subject: String,
    actor: Option<String>,
    scope: Option<String>,
}

/// The most exchanged tokens kept per connection; past it, expired ones go
/// first, then any.
const MAX_EXCHANGED: usize = 10_000;

/// One RFC 8693 exchange: the customer's token for one naming the actor.
#[derive(Clone, Copy)]
pub struct Exchange<'a> {
    pub subject: &'a SecretString,
    pub subject_type: &'a str,
    /// `agent:NAME` or `bot:NAME`; none when the customer acts.
    pub actor: Option<&'a str>,
    pub scope: Option<&'a str>,
}

/// The grant a token request asks for.
#[derive(Clone, Copy)]
pub enum Grant<'a> {
    ClientCredentials,
    TokenExchange(Exchange<'a>),
    /// Any other `grant_type` (what `check` probes a refusal with).
    Other(&'a str),
}

impl Grant<'_> {
    fn grant_type(&self) -> &str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::TokenExchange(_) => contract::token_exchange::GRANT_TYPE,
            Self::Other(grant) => grant,
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct TokenSource {
    connection: String,
    config: SystemAuthConfig,
    /// The client secret (OAuth with a shared secret).
    secret: Option<SecretString>,
    /// Signs client assertions (OAuth with `private_key_jwt`).
    signer: Option<AssertionSigner>,
    /// The token endpoint: `token_url`, or found from `issuer` once.
    endpoint: tokio::sync::OnceCell<String>,
    /// The token (static bearer).
    fixed: Option<Arc<Bearer>>,
    http: reqwest::Client,
    timeout: Duration,
    state: Mutex<State>,
    /// The token as shared, and the lease held by the one caller that
    /// fetches; the others wait on it.
    share: Arc<dyn TokenShare>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

/// The parts of a [`TokenSource`] that are not its configuration.
pub struct TokenDeps {
    pub http: reqwest::Client,
    /// The token endpoint's timeout.
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub share: Arc<dyn TokenShare>,
    pub clock: Arc<dyn Clock>,
}

impl TokenSource {
    pub fn new(connection: &str, config: SystemAuthConfig, deps: TokenDeps) -> Result<Self, String> {
        let TokenDeps {
            http,
            timeout,
            metrics,
            share,
            clock,
        } = deps;
        let mut signer = None;
        let (secret, fixed) = match &config {
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
                    let pem = key.resolve()?;
                    signer = Some(AssertionSigner::new(pem.expose_secret(), key_id.clone(), client_id)?);
                }
                (client_secret.as_ref().map(SecretSource::resolve).transpose()?, None)
            }
            SystemAuthConfig::StaticBearer { token } => (None, Some(Arc::new(Bearer::new(&token.resolve()?)?))),
            SystemAuthConfig::None => (None, None),
        };
        Ok(Self {
            connection: connection.to_string(),
            config,
            secret,
            signer,
            endpoint: tokio::sync::OnceCell::new(),
            fixed,
            http,
            timeout,
            state: Mutex::new(State {
                current: None,
                exchanged: HashMap::new(),
                retry_after: None,
                backoff: MIN_BACKOFF,
            }),
            share,
            clock,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bearer token to send, or `None` when the connection uses none.
    pub async fn get(&self) -> Result<Option<Arc<Bearer>>, TokenError> {
        match &self.config {
            SystemAuthConfig::None => Ok(None),
            SystemAuthConfig::StaticBearer { .. } => Ok(self.fixed.clone()),
            SystemAuthConfig::Oauth2ClientCredentials { .. } => Ok(Some(self.oauth_token().await?.bearer.clone())),
            SystemAuthConfig::TokenExchange(_) => Err(TokenError::Unavailable(
                "token exchange needs the customer's token: see TokenSource::exchange".into(),
            )),
        }
    }

    /// Token exchange: a token for `exchange`, cached per customer token,
    /// actor and scope until shortly before it expires. Failures of the
    /// endpoint itself back off as fetches do; a refused subject does not
    /// (it is one customer's, not everyone's).
    pub async fn exchange(&self, exchange: Exchange<'_>) -> Result<Arc<Bearer>, TokenError> {
        let key = ExchangeKey {
            subject: exchange.subject.expose_secret().to_string(),
            actor: exchange.actor.map(str::to_string),
            scope: exchange.scope.map(str::to_string),
        };
        let now = self.clock.now();
        {
            let state = self.lock();
            if let Some(token) = state.exchanged.get(&key)
                && now < token.expires_at
            {
                self.metrics.token_cache_hits.inc();
                return Ok(token.bearer.clone());
            }
            if let Some((until, error)) = &state.retry_after
                && now < *until
            {
                return Err(error.clone());
            }
        }
        let token = match Box::pin(self.request_token(Grant::TokenExchange(exchange))).await {
            Ok(token) => Arc::new(token),
            Err(error) => {
                self.metrics.token_fetch(&self.connection, "error");
                if matches!(error, TokenError::Unavailable(_)) {
                    let mut state = self.lock();
                    let wait = state.backoff;
                    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                    state.retry_after = Some((self.clock.now() + wait, error.clone()));
                }
                tracing::warn!(connection = %self.connection, error = %error, "token exchange failed");
                return Err(error);
            }
        };
        self.metrics.token_fetch(&self.connection, "ok");
        let mut state = self.lock();
        state.retry_after = None;
        state.backoff = MIN_BACKOFF;
        if state.exchanged.len() >= MAX_EXCHANGED {
            state.exchanged.retain(|_, t| now < t.expires_at);
            if state.exchanged.len() >= MAX_EXCHANGED
                && let Some(any) = state.exchanged.keys().next().map(|k| ExchangeKey {
                    subject: k.subject.clone(),
                    actor: k.actor.clone(),
                    scope: k.scope.clone(),
                })
            {
                state.exchanged.remove(&any);
            }
        }
        state.exchanged.insert(key, token.clone());
        Ok(token.bearer.clone())
    }

    /// How long until the token endpoint is tried again, after a failure.
    pub fn retry_in(&self) -> Option<Duration> {
        let (until, _) = self.lock().retry_after.clone()?;
        until.duration_since(self.clock.now()).ok()
    }

    /// How long a fetch may hold the lease: it ends within the timeout.
    fn lease_ttl(&self) -> Duration {
        self.timeout + Duration::from_secs(1)
    }

    /// Fetches are boxed (`Box::pin(self.fetch())`): a reqwest call's state
    /// is kilobytes, and inline it would be carried by every action's future,
    /// though nearly every call takes the cached token.
    async fn oauth_token(&self) -> Result<Arc<SystemToken>, TokenError> {
        let current = self.lock().current.clone();
        if let Some(token) = &current {
            let now = self.clock.now();
            if now < token.refresh_at {
                self.metrics.token_cache_hits.inc();
                return Ok(token.clone());
            }
            if now < token.expires_at {
                // Refresh ahead: one caller renews while the rest keep using
                // the still-valid token; a failed renewal is not fatal yet.
                let backing_off = self.lock().retry_after.as_ref().is_some_and(|(until, _)| now < *until);
                if backing_off {
                    return Ok(token.clone());
                }
                let Some(lease) = self.share.try_lease(self.lease_ttl()).await else {
                    return Ok(token.clone());
                };
                // Another instance may have renewed it already.
                let renewed = match self.adopt_shared(token).await {
                    Some(fresh) if self.clock.now() < fresh.refresh_at => Ok(fresh),
                    _ => match Box::pin(self.fetch()).await {
                        Ok(fresh) => Ok(fresh),
                        Err(e) => {
                            tracing::warn!(connection = %self.connection, error = %e, "token refresh failed; using the current token");
                            Ok(token.clone())
                        }
                    },
                };
                self.share.release(lease).await;
                return renewed;
            }
        }
        let lease = self.share.lease(self.lease_ttl()).await;
        let result = self.after_wait(current.as_ref()).await;
        self.share.release(lease).await;
        result
    }

    /// With the lease in hand: whoever held it before may have fetched a
    /// token meanwhile; else a fetch, unless the endpoint is backed off.
    async fn after_wait(&self, seen: Option<&Arc<SystemToken>>) -> Result<Arc<SystemToken>, TokenError> {
        let shared = match seen {
            Some(seen) => self.adopt_shared(seen).await,
            None => self.share.read().await.and_then(|s| self.adopt(&s)),
        };
        let state_now = {
            let state = self.lock();
            (shared.or_else(|| state.current.clone()), state.retry_after.clone())
        };
        let now = self.clock.now();
        if let (Some(token), _) = &state_now
            && now < token.expires_at
            && !seen.is_some_and(|c| Arc::ptr_eq(c, token) || c.id == token.id)
        {
            return Ok(token.clone());
        }
        if let (_, Some((until, error))) = state_now
            && now < until
        {
            return Err(error);
        }
        Box::pin(self.fetch()).await
    }

    /// The share's token when it is another than `seen`, made current here.
    async fn adopt_shared(&self, seen: &SystemToken) -> Option<Arc<SystemToken>> {
        let shared = self.share.read().await?;
        (shared.id != seen.id).then(|| self.adopt(&shared)).flatten()
    }

    fn adopt(&self, shared: &SharedToken) -> Option<Arc<SystemToken>> {
        let mut state = self.lock();
        if let Some(current) = &state.current
            && current.id == shared.id
        {
            return Some(current.clone());
        }
        let token = Arc::new(SystemToken::from_shared(shared).ok()?);
        state.current = Some(token.clone());
        Some(token)
    }

    /// Fetches a new token now, bypassing the cache (which it then refreshes):
    /// what a probe needs, since a cached token hides a rotated secret or a
    /// token endpoint that is down.
    pub async fn fetch_now(&self) -> Result<(), TokenError> {
        match &self.config {
            SystemAuthConfig::Oauth2ClientCredentials { .. } => {
                let lease = self.share.lease(self.lease_ttl()).await;
                // The backoff still holds: probes must not hammer a failing endpoint.
                let backoff = self.lock().retry_after.clone();
                let result = match backoff {
                    Some((until, error)) if self.clock.now() < until => Err(error),
                    _ => self.fetch().await.map(|_| ()),
                };
                self.share.release(lease).await;
                result
            }
            // An exchange needs a customer's token, which a probe has not.
            SystemAuthConfig::TokenExchange(_) | SystemAuthConfig::StaticBearer { .. } | SystemAuthConfig::None => {
                Ok(())
            }
        }
    }

    /// Forgets `rejected` if it is still the cached token, here and in the
    /// share, so the next call fetches a new one (after the company answered
    /// 401 invalid_token).
    pub async fn purge(&self, rejected: &Arc<Bearer>) {
        let purged = {
            let mut state = self.lock();
            // The same token is the same allocation: no secret is compared.
            state.exchanged.retain(|_, t| !Arc::ptr_eq(&t.bearer, rejected));
            match &state.current {
                Some(t) if Arc::ptr_eq(&t.bearer, rejected) => {
                    let id = t.id;
                    state.current = None;
                    Some(id)
                }
                _ => None,
            }
        };
        if let Some(id) = purged {
            self.share.purge(id).await;
        }
    }

    async fn fetch(&self) -> Result<Arc<SystemToken>, TokenError> {
        let started = std::time::Instant::now();
        let result = self.request_token(Grant::ClientCredentials).await;
        let token = {
            let mut state = self.lock();
            match result {
                Ok(token) => {
                    self.metrics.token_fetch(&self.connection, "ok");
                    let token = Arc::new(token);
                    state.current = Some(token.clone());
                    state.retry_after = None;
                    state.backoff = MIN_BACKOFF;
                    tracing::debug!(connection = %self.connection, ms = started.elapsed().as_millis() as u64, "system token fetched");
                    token
                }
                Err(error) => {
                    self.metrics.token_fetch(&self.connection, "error");
                    let wait = state.backoff;
                    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                    state.retry_after = Some((self.clock.now() + wait, error.clone()));
                    tracing::warn!(connection = %self.connection, error = %error, retry_in_ms = wait.as_millis() as u64, "system token fetch failed");
                    return Err(error);
                }
            }
        };
        self.share.store(token.shared()).await;
        Ok(token)
    }

    /// `token_url`, or the token endpoint the issuer's metadata names
    /// (fetched once; a failure is retried with the next token request).
    pub async fn token_endpoint(&self) -> Result<&str, TokenError> {
        let Some(OauthClient { token_url, issuer, .. }) = self.config.oauth() else {
            return Err(TokenError::Unavailable("not an OAuth connection".into()));
        };
        let found = self
            .endpoint
            .get_or_try_init(|| async {
                match (token_url, issuer) {
                    (Some(url), _) => Ok(url.clone()),
                    (None, Some(issuer)) => crate::discovery::discover(&self.http, issuer, self.timeout)
                        .await
                        .map(|m| m.token_endpoint)
                        .map_err(|e| TokenError::Unavailable(format!("discovery: {e}"))),
                    (None, None) => Err(TokenError::Unavailable("no token_url and no issuer".into())),
                }
            })
            .await?;
        Ok(found)
    }

    async fn request_token(&self, grant: Grant<'_>) -> Result<SystemToken, TokenError> {
        let Some(
            client @ OauthClient {
                auth_method,
                default_expires_in_secs,
                ..
            },
        ) = self.config.oauth()
        else {
            return Err(TokenError::Unavailable("not an OAuth connection".into()));
        };
        let endpoint = self.token_endpoint().await?;
        // A new assertion per request: each has its own jti.
        let assertion = match &self.signer {
            Some(signer) => Some(SecretString::from(
                signer
                    .sign(self.clock.unix_secs(), endpoint)
                    .map_err(TokenError::Unavailable)?,
            )),
            None => None,
        };
        let credential = assertion
            .as_ref()
            .or(self.secret.as_ref())
            .map(|s| s.expose_secret())
            .unwrap_or_default();
        let request = token_request(
            &self.http,
            client,
            endpoint,
            *auth_method,
            credential,
            grant,
            self.timeout,
        )
        .map_err(|e| TokenError::Unavailable(e.to_string()))?;
        let response = request
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(describe_transport(&e)))?;
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(challenge_error);
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unavailable(describe_transport(&e)))?;
        if status != 200 {
            // Only a registered code is repeated (in problems, the probe and
            // logs): anything else is the server's own text, which could echo
            // the client credentials back.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .or(challenge);
            let error = match code {
                None => "no error code".to_string(),
                Some(code) => contract::registered_oauth_error(&code)
                    .unwrap_or("an unregistered error code")
                    .to_string(),
            };
            return if status >= 500 {
                Err(TokenError::Unavailable(format!("HTTP {status}")))
            } else {
                Err(TokenError::Refused { status, error })
            };
        }
        let parsed: AccessTokenResponse = serde_json::from_slice(&body)
            .map_err(|e| TokenError::Unavailable(format!("the token response is not valid: {e}")))?;
        if !parsed.token_type.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Unavailable(format!(
                "token_type {:?} is not Bearer",
                parsed.token_type
            )));
        }
        let lifetime = parsed
            .expires_in
            .or_else(|| jwt_lifetime(&parsed.access_token, self.clock.unix_secs()))
            .unwrap_or(*default_expires_in_secs)
            .max(1);
        let access_token = SecretString::from(parsed.access_token);
        let bearer = Bearer::new(&access_token).map_err(TokenError::Unavailable)?;
        Ok(token_with_lifetime(
            bearer,
            access_token,
            Duration::from_secs(lifetime),
            self.clock.now(),
        ))
    }
}

/// Why a token request could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenRequestError {
    #[error("token_url: {0}")]
    TokenUrl(String),
    #[error("the client id or secret cannot go in a header")]
    Header,
}

/// The token request to `token_url` as the gateway sends it (and `check`
/// probes it): the grant type in the body or the query, as configured, with
/// scope, audience and resource, and the client authenticated by `method`
/// with `secret`: the client secret, or for `private_key_jwt` a signed
/// client assertion. A token exchange adds the customer's token as the
/// subject, the actor, and the action's scope.
pub fn token_request(
    http: &reqwest::Client,
    client: &OauthClient,
    token_url: &str,
    method: ClientAuthMethod,
    secret: &str,
    grant: Grant<'_>,
    timeout: Duration,
) -> Result<reqwest::RequestBuilder, TokenRequestError> {
    let OauthClient {
        client_id,
        grant_type_in,
        scope,
        audience,
        resource,
        ..
    } = client;
    let mut url = reqwest::Url::parse(token_url).map_err(|e| TokenRequestError::TokenUrl(e.to_string()))?;
    let mut form: Vec<(&str, &str)> = Vec::new();
    match grant_type_in {
        GrantTypeIn::Query => {
            url.query_pairs_mut().append_pair("grant_type", grant.grant_type());
        }
        GrantTypeIn::Body => form.push(("grant_type", grant.grant_type())),
    }
    let scope = match grant {
        Grant::TokenExchange(exchange) => {
            form.push(("subject_token", exchange.subject.expose_secret()));
            form.push(("subject_token_type", exchange.subject_type));
            form.push(("requested_token_type", contract::token_exchange::ACCESS_TOKEN));
            if let Some(actor) = exchange.actor {
                form.push(("actor_token", actor));
                form.push(("actor_token_type", contract::token_exchange::ACTOR));
            }
            exchange.scope.or(scope.as_deref())
        }
        Grant::ClientCredentials | Grant::Other(_) => scope.as_deref(),
    };
    for (name, value) in [
        ("scope", scope),
        ("audience", audience.as_deref()),
        ("resource", resource.as_deref()),
    ] {
        if let Some(v) = value {
            form.push((name, v));
        }
    }
    let mut request = http.post(url).timeout(timeout);
    match method {
        ClientAuthMethod::ClientSecretBasic => {
            let mut value = HeaderValue::from_str(&format!("Basic {}", basic_credentials(client_id, secret)))
                .map_err(|_| TokenRequestError::Header)?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        ClientAuthMethod::ClientSecretPost => {
            form.push(("client_id", client_id));
            form.push(("client_secret", secret));
        }
        ClientAuthMethod::PrivateKeyJwt => {
            form.push(("client_id", client_id));
            form.push(("client_assertion_type", crate::assertion::JWT_BEARER));
            form.push(("client_assertion", secret));
        }
        // The TLS client certificate authenticates; the body names the client.
        ClientAuthMethod::TlsClientAuth => form.push(("client_id", client_id)),
    }
    Ok(request.form(&form))
}

/// The longest lifetime a token is taken to have: a longer one (up to
/// `expires_in: 18446744073709551615`) is renewed daily all the same, and
/// would overflow the clock.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Renew at about 80% of the lifetime, less up to 10% of jitter, so many
/// gateways do not all renew at the same instant. The token is taken to end
/// a little before the server says (servers count whole seconds, and the
/// response spent time in flight), so it is never sent stale.
fn token_with_lifetime(bearer: Bearer, access_token: SecretString, lifetime: Duration, now: SystemTime) -> SystemToken {
    let lifetime = lifetime.min(MAX_LIFETIME);
    let margin = (lifetime / 10).min(Duration::from_secs(5));
    let jitter = lifetime.mul_f64(0.1 * fastrand::f64());
    SystemToken {
        bearer: Arc::new(bearer),
        expires_at: now + lifetime - margin,
        refresh_at: now + lifetime.mul_f64(0.8) - jitter,
        id: fastrand::u64(..),
        access_token,
    }
}

/// Seconds until `exp` when the token is a JWT (unverified: used only to
/// know when to renew, never to trust anything).
pub fn jwt_lifetime(token: &str, now_secs: u64) -> Option<u64> {
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    exp.checked_sub(now_secs)
}

/// The credentials of `client_secret_basic`, as they follow `Basic `:
/// RFC 6749 §2.3.1 form-urlencodes each part, then base64 encodes the pair.
pub fn basic_credentials(client_id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)))
}

/// The `error` parameter of a `WWW-Authenticate` challenge (RFC 6750 §3):
/// the parameters after the scheme, each a token or a quoted string (which
/// may hold commas, `=` and escaped quotes). Only a value made of RFC 6749's
/// error characters is an error code.
pub fn challenge_error(header: &str) -> Option<String> {
    let (_scheme, mut rest) = header.trim().split_once(' ')?;
    loop {
        let (name, after) = rest.trim_start_matches([' ', '\t', ',']).split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => value.push(chars.next()?.1),
                        (i, '"') => break i + 1,
                        (_, c) => value.push(c),
                    }
                };
                (value, &quoted[end..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        if name.trim().eq_ignore_ascii_case("error") {
            let nqschar = |b: u8| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E);
            return (!value.is_empty() && value.bytes().all(nqschar)).then_some(value);
        }
        rest = tail;
    }
}

/// A transport error in words, without the URL (it may carry a query).
pub fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read".into()
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token endpoint's `expires_in` of 2^64 - 1 panicked ("overflow when
    /// adding duration to instant") in the action that fetched the token.
    #[tokio::test]
    async fn an_absurd_lifetime_is_taken_as_a_day() {
        let bearer = Bearer::new(&SecretString::from("t")).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = token_with_lifetime(bearer, SecretString::from("t"), Duration::from_secs(u64::MAX), now);
        let left = token.expires_at.duration_since(now).unwrap();
        assert!(
            left > Duration::from_secs(23 * 3600) && left <= MAX_LIFETIME,
            "{left:?}"
        );
    }

    /// A quoted parameter before `error` may hold a comma and `error=`; a
    /// value outside RFC 6749's error characters is no error code.
    #[test]
    fn challenge_error_reads_quoted_strings_whole() {
        let cases = [
            (
                r#"Bearer realm="a, error=forged", error="invalid_token""#,
                Some("invalid_token"),
            ),
            (
                r#"Bearer error_description="say \"hi\", error=x", error=invalid_token"#,
                Some("invalid_token"),
            ),
            (r#"Bearer error=",""#, Some(",")),
            (r#"Bearer error="""#, None),
            ("Bearer error=\"caf\u{e9}\"", None),
            (r#"Bearer error="unterminated"#, None),
            ("Bearer", None),
        ];
        for (header, expected) in cases {
            assert_eq!(challenge_error(header).as_deref(), expected, "{header}");
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clock::ManualClock;

    use super::*;
    use crate::config::SecretSource;
    use crate::share::LocalShare;

    /// A token endpoint issuing `t1`, `t2`… valid for 100 s, counting requests.
    async fn token_endpoint() -> (String, Arc<AtomicUsize>) {
        let issued = Arc::new(AtomicUsize::new(0));
        let counted = issued.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    axum::Json(
                        serde_json::json!({"access_token": format!("t{n}"), "token_type": "Bearer", "expires_in": 100}),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, issued)
    }

    fn source(url: &str, share: Arc<dyn TokenShare>, clock: Arc<ManualClock>) -> TokenSource {
        let config = SystemAuthConfig::Oauth2ClientCredentials(OauthClient {
            token_url: Some(url.to_string()),
            issuer: None,
            client_id: "deskbridge".into(),
            client_secret: Some(SecretSource::Inline("secret".into())),
            private_key: None,
            key_id: None,
            auth_method: ClientAuthMethod::ClientSecretBasic,
            grant_type_in: GrantTypeIn::Body,
            scope: None,
            audience: None,
            resource: None,
            subject_token_type: None,
            default_expires_in_secs: 300,
            expired_when: None,
        });
        let deps = TokenDeps {
            http: reqwest::Client::new(),
            timeout: Duration::from_secs(5),
            metrics: Arc::new(Metrics::default()),
            share,
            clock,
        };
        TokenSource::new("acme", config, deps).unwrap()
    }

    async fn bearer(tokens: &TokenSource) -> Arc<Bearer> {
        tokens.get().await.unwrap().unwrap()
    }

    /// Renewal ahead of expiry, expiry itself and a purge follow the
    /// injected clock: no test sleeps for a token to age.
    #[tokio::test]
    async fn renewal_and_expiry_follow_the_clock() {
        let (url, issued) = token_endpoint().await;
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(2_000_000_000)));
        let tokens = source(&url, Arc::new(LocalShare::default()), clock.clone());
        let first = bearer(&tokens).await;
        clock.advance(Duration::from_secs(69));
        assert!(Arc::ptr_eq(&bearer(&tokens).await, &first), "before 70 % of its life");
        assert_eq!(issued.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(11));
        let renewed = bearer(&tokens).await;
        assert!(!Arc::ptr_eq(&renewed, &first), "renewed from 80 % on");
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        // Past the renewed token's end (less its 5 s margin): fetched anew.
        clock.advance(Duration::from_secs(96));
        let third = bearer(&tokens).await;
        assert_eq!(issued.load(Ordering::SeqCst), 3);
        tokens.purge(&third).await;
        bearer(&tokens).await;
        assert_eq!(issued.load(Ordering::SeqCst), 4, "a purged token is fetched again");
    }

    /// Two sources on one share (two instances, in effect) fetch one token
    /// between them, and a purge by one makes the other fetch no second one.
    #[tokio::test]
    async fn sources_on_one_share_fetch_one_token() {
        let (url, issued) = token_endpoint().await;
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(2_000_000_000)));
        let share: Arc<dyn TokenShare> = Arc::new(LocalShare::default());
        let (a, b) = (
            source(&url, share.clone(), clock.clone()),
            source(&url, share.clone(), clock.clone()),
        );
        let from_a = bearer(&a).await;
        let from_b = bearer(&b).await;
        assert_eq!(from_a.header(), from_b.header());
        assert_eq!(issued.load(Ordering::SeqCst), 1);
        a.purge(&from_a).await;
        bearer(&a).await;
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        // B's token was refused too; the share already holds A's new one.
        b.purge(&from_b).await;
        assert_eq!(bearer(&b).await.header(), bearer(&a).await.header());
        assert_eq!(issued.load(Ordering::SeqCst), 2);
    }
}
