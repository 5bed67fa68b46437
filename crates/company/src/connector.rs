//! One company backend: its system token, its API key, how the customer's
//! token is passed through, its actions, and the guards around every call
//! (timeout, concurrency cap, circuit breaker, purge-and-retry on a rejected
//! system token).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Uri};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracecontext::{TRACEPARENT, TraceId};

use clock::Clock;
use contract::{Refused, whose_refusal};

use crate::action::{self, FieldError, InputSchema};
use crate::config::{ActionConfig, ActionKind, ConnectionConfig, IdentityMode, PlacedToken, SystemAuthConfig};
use crate::identity::JwtVerifier;
use crate::metrics::{ActionLabels, ConnectionLabel, Metrics};
use crate::share::{LimitShare, SharedAdmission, TokenShare};
use crate::system_token::{Bearer, Exchange, TokenDeps, TokenError, TokenSource, challenge_error, describe_transport};
use crate::upstream::{Upstream, UpstreamError};

/// Why an action did not produce data. Each maps to one problem type.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionError {
    #[error("no such action on this connection")]
    UnknownAction,
    #[error("no such conversation")]
    UnknownConversation,
    #[error("the customer must authenticate again")]
    CustomerAuthRequired,
    /// `error`: the company's error code, when it gave a well-formed one.
    #[error("the company's API answered {status}")]
    Backend { status: u16, error: Option<String> },
    #[error(
        "the company's API answered {status} with more than {} bytes",
        crate::upstream::MAX_RESPONSE_BYTES
    )]
    TooLarge { status: u16 },
    #[error("the company's API answered {status} with a body that is not valid JSON")]
    NotJson { status: u16 },
    #[error("the company's API did not answer in time")]
    Timeout,
    #[error("the company's API could not be reached: {0}")]
    Unreachable(String),
    /// The company refused the connection's API key: an operator's fix,
    /// never the customer's.
    #[error(
        "the company's API refused connection {connection:?}'s API key ({status}); its connections.api_key needs fixing"
    )]
    ApiKeyRejected {
        status: u16,
        error: Option<String>,
        connection: String,
    },
    #[error(transparent)]
    TokenEndpoint(#[from] TokenError),
    #[error("the circuit breaker is open after repeated failures")]
    CircuitOpen,
    /// The company's rate for this connection is spent (`[connections.limits]`),
    /// or the company answered 429 with `Retry-After` a moment ago.
    #[error("the company's rate limit for this connection is reached; retry in {} s", .0.0)]
    CompanyRateLimited(crate::RetryAfter),
    /// The company answered 503 with `Retry-After` a moment ago.
    #[error("the company's API said it is unavailable; retry in {} s", .0.0)]
    BackendUnavailable(crate::RetryAfter),
    /// No valid system token: the cached one has expired and the token
    /// endpoint cannot be reached. A stale token is never sent.
    #[error("no valid system token: the token endpoint is unavailable; retry in {} s", .retry_after.0)]
    SystemTokenUnavailable {
        retry_after: crate::RetryAfter,
        cause: String,
    },
    #[error("too many requests from this agent; retry in {} s", .0.0)]
    RateLimited(crate::RetryAfter),
    /// The caller's input broke the action's rules; the company was not called.
    #[error("the input does not fit the action")]
    InvalidInput(Vec<FieldError>),
    /// The caller's role or kind may not run (or reveal) this action.
    #[error("{0}")]
    NotAllowed(&'static str),
    #[error("a write needs an Idempotency-Key header: 1-255 visible ASCII characters")]
    IdempotencyKeyRequired,
    #[error("this Idempotency-Key was used for this action with another input")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still running")]
    IdempotencyKeyInFlight,
    /// Our own failure (store, decryption): never blamed on the company.
    #[error("the gateway could not complete the request")]
    Internal(String),
    /// The store did not answer in time: for the context read (the
    /// company was not called) or for the audit record (its answer is
    /// withheld: no answered action goes unaudited).
    #[error("the gateway's store is unavailable")]
    StoreUnavailable(String),
}

impl ActionError {
    /// A short, stable word for metrics and the audit log.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownAction => "unknown_action",
            Self::UnknownConversation => "not_found",
            Self::CustomerAuthRequired => "customer_auth_required",
            Self::Backend { .. } | Self::TooLarge { .. } | Self::NotJson { .. } => "backend_error",
            Self::ApiKeyRejected { .. } => "api_key_rejected",
            Self::Timeout => "backend_timeout",
            Self::Unreachable(_) => "backend_unreachable",
            Self::TokenEndpoint(_) => "token_endpoint_error",
            Self::CircuitOpen => "circuit_open",
            Self::CompanyRateLimited(_) => "company_rate_limited",
            Self::BackendUnavailable(_) => "backend_unavailable",
            Self::SystemTokenUnavailable { .. } => "system_token_unavailable",
            Self::RateLimited(_) => "rate_limited",
            Self::Internal(_) => "internal",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::InvalidInput(_) => "invalid_action_input",
            Self::NotAllowed(_) => "forbidden",
            Self::IdempotencyKeyRequired => "idempotency_key_required",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyKeyInFlight => "idempotency_key_in_flight",
        }
    }
}

/// What an action returned.
#[derive(Debug, Clone)]
pub struct ActionResult {
    /// Valid JSON: the company's body as it came when the action maps no
    /// fields (checked, not re-encoded), else the mapped fields.
    pub data: Box<RawValue>,
    pub status: u16,
    pub latency_ms: u64,
    /// Reused from an earlier run (`cache_ttl_secs`), not a new call.
    pub cached: bool,
}

struct Breaker {
    consecutive_failures: u32,
    /// By the injected clock.
    open_until: Option<SystemTime>,
    /// How long it was last opened for: 1 s at first, doubled by each
    /// failed trial, up to `breaker.open_secs`.
    open_for: Duration,
    /// Half-open: once `open_until` has passed, one call at a time goes
    /// through as a trial; the others still fail fast until it succeeds.
    trial_in_flight: bool,
}

/// Held by a call the breaker admitted. A trial call that ends without a
/// verdict (cancelled, or stopped before reaching the company) hands the
/// trial to the next call instead of leaving the breaker half-open forever.
struct Admission<'a> {
    trial_of: Option<&'a Mutex<Breaker>>,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.trial_of {
            breaker.lock().unwrap_or_else(|p| p.into_inner()).trial_in_flight = false;
        }
    }
}

pub struct Connection {
    pub config: ConnectionConfig,
    /// For the probe; actions go through `upstream`.
    http: reqwest::Client,
    upstream: Upstream,
    pub tokens: TokenSource,
    /// The API key header, built once; its value is marked sensitive.
    api_key: Option<(HeaderName, HeaderValue)>,
    /// The customer token's header name (header placement; `None` if invalid).
    customer_header: Option<HeaderName>,
    /// Per action, in the order of `config.actions`: the parts of every call
    /// that never change, prepared once.
    targets: Vec<Target>,
    pub verifier: Option<JwtVerifier>,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
    /// `[connections.limits]`: a token bucket, when a rate is set.
    bucket: Option<governor::DefaultDirectRateLimiter>,
    /// Until when the company asked for no calls (`Retry-After` on a 429 or
    /// 503, by the injected clock), and which of the two it was.
    paused: Mutex<Option<(SystemTime, u16)>>,
    /// The bucket and pause every instance shares, with `[cluster]`.
    limit_share: Option<Arc<dyn LimitShare>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Metric handles, found once instead of per call (a lookup builds
    /// owned label strings).
    latency: OnceLock<Histogram>,
    breaker_gauge: OnceLock<Gauge>,
}

/// An action's method and path, parsed once, its input schema, and its
/// counter of successful calls.
struct Target {
    method: Method,
    /// The base URL's path (less a trailing `/`) followed by the action's
    /// path, in origin form; the call goes to the base URL's host only. The
    /// action path is validated at load (no '..', '//', '?'), so it cannot
    /// leave the base path. `None` when it has `{field}` placeholders or a
    /// query: then it is built per call.
    path: Option<Uri>,
    /// The same, as text with its placeholders.
    template: String,
    /// Each call's limit: the action's `timeout_ms`, or the connection's.
    timeout: Duration,
    input: InputSchema,
    ok_calls: OnceLock<Counter>,
}

/// What a caller asks of an action besides its name: the checked input
/// (`Connection::check_input`) and, for a write, its idempotency key.
#[derive(Debug, Clone, Default)]
pub struct ActionRequest {
    pub input: Map<String, Value>,
    pub idempotency_key: Option<String>,
    /// Who acts, as a token exchange names them (`agent:NAME`,
    /// `bot:NAME`); none when the customer runs the action.
    pub actor: Option<String>,
}

/// How long the breaker first stays open.
const FIRST_OPEN: Duration = Duration::from_secs(1);

/// One call's parts, as each attempt sends them.
#[derive(Clone, Copy)]
struct Call<'a> {
    target: &'a Target,
    spec: &'a ActionConfig,
    request: &'a ActionRequest,
    customer_token: Option<&'a SecretString>,
    trace: TraceId,
}

/// A response as the connector judges it.
struct Reply {
    status: u16,
    /// Whose credential a refusal is about.
    refused: Option<Refused>,
    /// A 429's or 503's `Retry-After`, as a wait.
    retry_after: Option<Duration>,
    body: Bytes,
}

impl Connection {
    /// `share` keeps the system token (one per connection); `clock` rules
    /// every expiry (tokens, the breaker's open time, customer JWTs).
    pub fn new(
        config: ConnectionConfig,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        share: Arc<dyn TokenShare>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let timeout = Duration::from_millis(config.timeout_ms);
        // The connection's own client when it has its own TLS or proxy.
        let http = crate::egress::http_client(&config, &http).map_err(|e| format!("{}: {e}", config.name))?;
        let tokens = TokenSource::new(
            &config.name,
            config.system_auth.clone(),
            TokenDeps {
                http: http.clone(),
                timeout,
                metrics: metrics.clone(),
                share,
                clock: clock.clone(),
            },
        )?;
        let api_key = match &config.api_key {
            Some(k) => Some((
                HeaderName::from_bytes(k.header.as_bytes()).map_err(|e| e.to_string())?,
                sensitive(k.value.resolve()?.expose_secret())
                    .map_err(|_| format!("{}: the API key is not a valid header value", config.name))?,
            )),
            None => None,
        };
        let customer_header = HeaderName::from_bytes(config.customer_auth.name.as_bytes()).ok();
        let base = Url::parse(&config.base_url).map_err(|e| format!("{}: base_url: {e}", config.name))?;
        let upstream = {
            let tls = crate::egress::client_tls(config.tls.as_ref()).map_err(|e| format!("{}: {e}", config.name))?;
            let proxy = crate::egress::proxy_for(&config, base.host_str().unwrap_or_default())
                .map_err(|e| format!("{}: {e}", config.name))?;
            Upstream::new(&base, config.max_concurrency, Arc::new(tls), proxy)
                .map_err(|e| format!("{}: {e}", config.name))?
        };
        let targets = config
            .actions
            .iter()
            .map(|a| {
                let template = format!("{}{}", base.path().trim_end_matches('/'), a.path);
                let fixed = !template.contains('{') && a.query.is_empty();
                Ok(Target {
                    method: Method::from_bytes(a.method.as_bytes()).unwrap_or(Method::POST),
                    path: match fixed {
                        true => Some(
                            template
                                .parse()
                                .map_err(|e| format!("{}: action {}: {e}", config.name, a.name))?,
                        ),
                        false => None,
                    },
                    template,
                    timeout: a.timeout_ms.map_or(timeout, Duration::from_millis),
                    input: InputSchema::new(a).map_err(|e| format!("{}: action {}: {e}", config.name, a.name))?,
                    ok_calls: OnceLock::new(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let verifier = (config.identity.mode == IdentityMode::Jwt)
            .then(|| JwtVerifier::new(config.identity.clone(), http.clone(), clock.clone()));
        let bucket = config.limits.rate_per_second.and_then(NonZeroU32::new).map(|rate| {
            let burst = config.limits.burst.and_then(NonZeroU32::new).unwrap_or(rate);
            governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Ok(Self {
            bucket,
            paused: Mutex::new(None),
            limit_share: None,
            permits: Semaphore::new(config.max_concurrency),
            breaker: Mutex::new(Breaker {
                consecutive_failures: 0,
                open_until: None,
                open_for: Duration::ZERO,
                trial_in_flight: false,
            }),
            clock,
            config,
            http,
            upstream,
            tokens,
            api_key,
            customer_header,
            targets,
            verifier,
            metrics,
            latency: OnceLock::new(),
            breaker_gauge: OnceLock::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Shares this connection's call budget and pauses through `share`
    /// (every instance of a cluster), instead of keeping them here alone.
    pub fn with_limit_share(mut self, share: Arc<dyn LimitShare>) -> Self {
        self.limit_share = Some(share);
        self
    }

    pub fn action(&self, name: &str) -> Option<&ActionConfig> {
        self.config.actions.iter().find(|a| a.name == name)
    }

    /// `action`'s input checked against its fields, defaults filled in.
    pub fn check_input(&self, action: &str, input: &Map<String, Value>) -> Result<Map<String, Value>, Vec<FieldError>> {
        match self.config.actions.iter().position(|a| a.name == action) {
            Some(i) => self.targets[i].input.check(input),
            None => Ok(Map::new()),
        }
    }

    /// `action`'s input as a JSON Schema.
    pub fn input_schema(&self, action: &str) -> Option<Value> {
        let i = self.config.actions.iter().position(|a| a.name == action)?;
        Some(self.targets[i].input.json_schema())
    }

    fn connection_label(&self) -> ConnectionLabel {
        ConnectionLabel {
            connection: self.config.name.clone(),
        }
    }

    /// Runs `action` for a customer whose current token is `customer_token`;
    /// the company is sent a `traceparent` in `trace`.
    pub async fn call(
        &self,
        action: &str,
        request: &ActionRequest,
        customer_token: Option<&SecretString>,
        trace: TraceId,
    ) -> Result<ActionResult, ActionError> {
        let started = Instant::now();
        let index = self.config.actions.iter().position(|a| a.name == action);
        let result = match index {
            Some(index) => self.call_inner(index, request, customer_token, trace).await,
            None => Err(ActionError::UnknownAction),
        };
        let count = |outcome: &str| self.outcome_counter(action, outcome);
        match (&result, index) {
            (Ok(_), Some(index)) => self.targets[index].ok_calls.get_or_init(|| count("ok")).inc(),
            (Ok(_), None) => count("ok").inc(),
            (Err(e), _) => count(e.outcome()).inc(),
        };
        self.latency
            .get_or_init(|| {
                self.metrics
                    .action_latency
                    .get_or_create(&self.connection_label())
                    .clone()
            })
            .observe(started.elapsed().as_secs_f64());
        result.map(|(data, status)| ActionResult {
            data,
            status,
            latency_ms: started.elapsed().as_millis() as u64,
            cached: false,
        })
    }

    /// The `deskbridge_gateway_actions_total` counter of `action` and `outcome`.
    pub fn outcome_counter(&self, action: &str, outcome: &str) -> Counter {
        self.metrics
            .actions
            .get_or_create(&ActionLabels {
                connection: self.config.name.clone(),
                action: action.to_string(),
                outcome: outcome.to_string(),
            })
            .clone()
    }

    async fn call_inner(
        &self,
        index: usize,
        request: &ActionRequest,
        customer_token: Option<&SecretString>,
        trace: TraceId,
    ) -> Result<(Box<RawValue>, u16), ActionError> {
        let (spec, target) = (&self.config.actions[index], &self.targets[index]);
        let exchanged = matches!(self.config.system_auth, SystemAuthConfig::TokenExchange(_));
        let call = Call {
            target,
            spec,
            request,
            // An exchanged token carries the customer: no second token goes.
            customer_token: customer_token.filter(|_| !exchanged),
            trace,
        };
        self.company_admits().await?;
        let _admission = self.breaker_admits()?;
        let _permit = self.permits.acquire().await.map_err(|_| ActionError::CircuitOpen)?;
        let credential = || async {
            match exchanged {
                true => self.exchanged_token(spec, request, customer_token).await.map(Some),
                false => self.system_token().await,
            }
        };
        let mut bearer = credential().await?;
        let mut reply = self.send(&call, bearer.as_deref()).await;
        if spec.method == "GET" && spec.kind == ActionKind::Read && matches!(reply, Err(ActionError::Unreachable(_))) {
            // Only a safe method is retried, once, after a jittered pause;
            // a POST may have reached the company, so it is never repeated.
            let pause = fastrand::u64(50..=150);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            reply = self.send(&call, bearer.as_deref()).await;
        }
        if let Ok(r) = &reply
            && r.refused == Some(Refused::SystemToken)
            && let Some(rejected) = &bearer
        {
            // Our token was revoked or rotated early: fetch anew, once. A
            // write is sent again too: the company refused it before doing
            // anything, and it carries the same idempotency key.
            self.tokens.purge(rejected).await;
            bearer = credential().await?;
            reply = self.send(&call, bearer.as_deref()).await;
        }
        if let Ok(r) = &reply
            && let Some(wait) = r.retry_after
            && matches!(r.status, 429 | 503)
        {
            // The company asked for a pause: every caller waits it out here,
            // without calling it, until then.
            self.record(r.status < 500);
            let wait = wait.min(Duration::from_secs(crate::config::MAX_PAUSE_SECS));
            *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.clock.now() + wait, r.status));
            if let Some(share) = &self.limit_share {
                share.pause(r.status, wait).await;
            }
            self.metrics.company_limited(&self.config.name, "paused");
            let retry_after = crate::RetryAfter::from_wait(wait);
            return Err(match r.status {
                429 => ActionError::CompanyRateLimited(retry_after),
                _ => ActionError::BackendUnavailable(retry_after),
            });
        }
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.record(false);
                return Err(e);
            }
        };
        match reply.refused {
            Some(Refused::CustomerToken) => {
                self.record(true);
                return Err(ActionError::CustomerAuthRequired);
            }
            Some(Refused::ApiKey) => {
                self.record(true);
                return Err(ActionError::ApiKeyRejected {
                    status: reply.status,
                    error: error_code(&reply.body),
                    connection: self.config.name.clone(),
                });
            }
            // A system token refused again after a fresh one: the company's
            // answer, as it is (an error, even when it came as a 200).
            Some(Refused::SystemToken) if (200..300).contains(&reply.status) => {
                self.record(true);
                return Err(ActionError::Backend {
                    status: reply.status,
                    error: error_code(&reply.body),
                });
            }
            Some(Refused::SystemToken) | None => {}
        }
        if !(200..300).contains(&reply.status) {
            // A 4xx is the company answering sensibly; a 5xx is it failing.
            self.record(reply.status < 500);
            return Err(ActionError::Backend {
                status: reply.status,
                error: error_code(&reply.body),
            });
        }
        let data = match &spec.response {
            // No mapping: the body goes out as it came, once checked to be JSON.
            None => String::from_utf8(reply.body.into())
                .ok()
                .and_then(|text| RawValue::from_string(text).ok()),
            Some(mapping) => std::str::from_utf8(&reply.body)
                .ok()
                .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
                .and_then(|body| map_response(body, mapping)),
        };
        let Some(data) = data else {
            self.record(false);
            return Err(ActionError::NotJson { status: reply.status });
        };
        self.record(true);
        Ok((data, reply.status))
    }

    async fn send(&self, call: &Call<'_>, bearer: Option<&Bearer>) -> Result<Reply, ActionError> {
        let Call {
            target,
            spec,
            request: asked,
            customer_token,
            trace,
        } = *call;
        let placement = &self.config.customer_auth;
        let mut body = None;
        let mut request = Request::new(Full::default());
        *request.method_mut() = target.method.clone();
        *request.uri_mut() = match &target.path {
            Some(fixed) => fixed.clone(),
            None => {
                let mut path = action::fill_path(&target.template, &asked.input);
                if let Some(query) = action::query_string(&spec.query, &asked.input) {
                    path = format!("{path}?{query}");
                }
                path.parse()
                    .map_err(|_| ActionError::Unreachable("the action's path could not be built".into()))?
            }
        };
        let headers = request.headers_mut();
        if let Some(key) = &asked.idempotency_key {
            headers.insert(
                HeaderName::from_static("idempotency-key"),
                HeaderValue::from_str(key)
                    .map_err(|_| ActionError::Unreachable("the idempotency key is not a header value".into()))?,
            );
        }
        headers.insert(HOST, self.upstream.authority().clone());
        headers.insert(TRACEPARENT, trace.traceparent());
        if let Some(bearer) = bearer {
            headers.insert(AUTHORIZATION, bearer.header().clone());
        }
        if let Some((name, value)) = &self.api_key {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(token) = customer_token {
            match placement.place(token.expose_secret()) {
                PlacedToken::Header(value) => {
                    let name = self
                        .customer_header
                        .clone()
                        .ok_or_else(|| ActionError::Unreachable("invalid customer header name".into()))?;
                    headers.insert(name, sensitive(&value)?);
                }
                PlacedToken::Cookie(value) => {
                    headers.insert(COOKIE, sensitive(&value)?);
                }
                PlacedToken::Body(doc) => body = Some(doc),
            }
        }
        if !spec.body.is_empty() {
            let doc = body.get_or_insert_with(|| Value::Object(Map::new()));
            action::fill_body(doc, &spec.body, &asked.input);
        }
        let body = body.map(|doc| Bytes::from(doc.to_string()));
        if body.is_some() || target.method != Method::GET {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            *request.body_mut() = Full::new(body.unwrap_or(Bytes::from_static(b"{}")));
        }
        let answer = tokio::time::timeout(target.timeout, self.upstream.send(request))
            .await
            .map_err(|_| ActionError::Timeout)?
            .map_err(|e| match e {
                UpstreamError::TooLarge { status } => ActionError::TooLarge { status },
                e => ActionError::Unreachable(e.to_string()),
            })?;
        let status = answer.head.status.as_u16();
        let challenge = answer
            .head
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Only a refusal carries an error code worth reading; a success body
        // is parsed once, by the caller.
        let code = if status >= 400 { error_code(&answer.body) } else { None };
        let scheme = challenge.split_whitespace().next();
        let mut refused = whose_refusal(status, code.as_deref(), scheme, challenge_error(challenge).as_deref());
        // The company's own words for "expired" win, whatever the status.
        if let Some(expired) = self.config.system_auth.oauth().and_then(|c| c.expired_when.as_ref())
            && expired.matches(status, &answer.body)
        {
            refused = Some(Refused::SystemToken);
        } else if let Some(expired) = &self.config.customer_auth.expired_when
            && expired.matches(status, &answer.body)
        {
            refused = Some(Refused::CustomerToken);
        }
        let retry_after = match status {
            429 | 503 => answer
                .head
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| retry_after(v, self.clock.now())),
            _ => None,
        };
        Ok(Reply {
            status,
            refused,
            retry_after,
            body: answer.body,
        })
    }

    /// The system token, or why there is none. A token endpoint that is
    /// down while the cached token still holds is no failure (it keeps
    /// being used); once it has expired, callers are told when to retry.
    async fn system_token(&self) -> Result<Option<Arc<Bearer>>, ActionError> {
        match self.tokens.get().await {
            Ok(bearer) => Ok(bearer),
            Err(TokenError::Unavailable(cause)) => Err(ActionError::SystemTokenUnavailable {
                retry_after: crate::RetryAfter::from_wait(self.tokens.retry_in().unwrap_or(Duration::from_secs(1))),
                cause,
            }),
            Err(refused) => Err(ActionError::TokenEndpoint(refused)),
        }
    }

    /// The customer's token exchanged for one naming the actor, with the
    /// action's scope. A subject the company refuses is a login to renew.
    async fn exchanged_token(
        &self,
        spec: &ActionConfig,
        request: &ActionRequest,
        customer_token: Option<&SecretString>,
    ) -> Result<Arc<Bearer>, ActionError> {
        let client = self.config.system_auth.oauth();
        let subject = customer_token.ok_or(ActionError::CustomerAuthRequired)?;
        let exchange = Exchange {
            subject,
            subject_type: client.and_then(|c| c.subject_token_type).unwrap_or_default().uri(),
            actor: request.actor.as_deref(),
            scope: spec.scope.as_deref(),
        };
        match self.tokens.exchange(exchange).await {
            Ok(bearer) => Ok(bearer),
            Err(TokenError::Refused { error, .. }) if error == "invalid_grant" => {
                Err(ActionError::CustomerAuthRequired)
            }
            Err(TokenError::Unavailable(cause)) => Err(ActionError::SystemTokenUnavailable {
                retry_after: crate::RetryAfter::from_wait(self.tokens.retry_in().unwrap_or(Duration::from_secs(1))),
                cause,
            }),
            Err(refused) => Err(ActionError::TokenEndpoint(refused)),
        }
    }

    /// Whether the company's limits let a call go now: no pause it asked
    /// for, and a token left in the connection's bucket: the one all
    /// instances share when there is a share that answers, else this one's.
    async fn company_admits(&self) -> Result<(), ActionError> {
        let now = self.clock.now();
        if let Some((until, status)) = *self.paused.lock().unwrap_or_else(|p| p.into_inner())
            && now < until
        {
            let wait = crate::RetryAfter::from_wait(until.duration_since(now).unwrap_or_default());
            self.metrics.company_limited(&self.config.name, "paused");
            return Err(match status {
                429 => ActionError::CompanyRateLimited(wait),
                _ => ActionError::BackendUnavailable(wait),
            });
        }
        let limits = self.config.limits;
        if let (Some(share), Some(rate)) = (&self.limit_share, limits.rate_per_second) {
            let refused = |reason: &str, wait: Duration| {
                self.metrics.company_limited(&self.config.name, reason);
                crate::RetryAfter::from_wait(wait)
            };
            match share.admit(rate, limits.burst.unwrap_or(rate)).await {
                Some(SharedAdmission::Admitted) => return Ok(()),
                Some(SharedAdmission::OverRate(wait)) => {
                    return Err(ActionError::CompanyRateLimited(refused("rate", wait)));
                }
                Some(SharedAdmission::Paused { wait, status }) => {
                    return Err(match status {
                        429 => ActionError::CompanyRateLimited(refused("paused", wait)),
                        _ => ActionError::BackendUnavailable(refused("paused", wait)),
                    });
                }
                // The share is away: this instance's own bucket decides.
                None => {}
            }
        }
        if let Some(bucket) = &self.bucket
            && let Err(not_until) = bucket.check()
        {
            self.metrics.company_limited(&self.config.name, "rate");
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return Err(ActionError::CompanyRateLimited(crate::RetryAfter::from_wait(wait)));
        }
        Ok(())
    }

    fn breaker_admits(&self) -> Result<Admission<'_>, ActionError> {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match breaker.open_until {
            None => Ok(Admission { trial_of: None }),
            Some(until) if self.clock.now() < until || breaker.trial_in_flight => Err(ActionError::CircuitOpen),
            Some(_) => {
                breaker.trial_in_flight = true;
                Ok(Admission {
                    trial_of: Some(&self.breaker),
                })
            }
        }
    }

    fn record(&self, success: bool) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let gauge = self.breaker_gauge.get_or_init(|| {
            self.metrics
                .breaker_open
                .get_or_create(&self.connection_label())
                .clone()
        });
        let now = self.clock.now();
        // A call admitted before the breaker opened has no say while it is
        // open: only the trial call after the open interval closes it again
        // (or opens it for longer).
        if breaker.open_until.is_some_and(|until| now < until) {
            return;
        }
        breaker.trial_in_flight = false;
        if success {
            breaker.consecutive_failures = 0;
            breaker.open_until = None;
            breaker.open_for = Duration::ZERO;
            gauge.set(0);
            return;
        }
        breaker.consecutive_failures += 1;
        if breaker.consecutive_failures >= self.config.breaker.failure_threshold {
            // Open for a second at first: a company that is back soon is
            // used again soon. Each failed trial doubles the wait.
            let longest = Duration::from_secs(self.config.breaker.open_secs);
            breaker.open_for = match breaker.open_until {
                None => FIRST_OPEN,
                Some(_) => breaker.open_for * 2,
            }
            .min(longest);
            breaker.open_until = Some(now + breaker.open_for);
            gauge.set(1);
            tracing::warn!(connection = %self.config.name, open_for_ms = breaker.open_for.as_millis() as u64, "circuit breaker open");
        }
    }

    /// Reaches the company: fetches a token and opens the base URL, timing each step.
    pub async fn probe(&self) -> Vec<Value> {
        let mut steps = Vec::new();
        let started = Instant::now();
        let token = self.tokens.fetch_now().await;
        let detail = match (&token, &self.config.system_auth) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(()), SystemAuthConfig::TokenExchange(_)) => {
                Some("not fetched: token exchange issues a token per action, for a customer's token".to_string())
            }
            (Ok(()), _) => None,
        };
        steps.push(serde_json::json!({
            "step": "system_token",
            "ok": token.is_ok(),
            "latency_ms": started.elapsed().as_millis() as u64,
            "detail": detail,
        }));
        let started = Instant::now();
        let reached = self
            .http
            .get(&self.config.base_url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .send()
            .await;
        steps.push(serde_json::json!({
            "step": "base_url",
            "ok": reached.is_ok(),
            "latency_ms": started.elapsed().as_millis() as u64,
            "detail": match &reached {
                Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
                Err(e) => Some(describe_transport(e)),
            },
        }));
        steps
    }
}

/// A `Retry-After` (RFC 9110 §10.2.3: seconds, or an HTTP date) as a wait from `now`.
pub fn retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

fn sensitive(value: &str) -> Result<HeaderValue, ActionError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| ActionError::Unreachable("a credential is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// The `error` code of a refusal, when it looks like one (a short word of
/// letters, digits and `_.:-`). Anything else is left out rather than
/// shown to agents: it is free text, and could repeat what was sent.
pub fn error_code(body: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<Value>(body).ok()?;
    let code = value.get("error")?.as_str()?;
    let word = |b: u8| b.is_ascii_alphanumeric() || b"_.:-".contains(&b);
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(word)).then(|| code.to_string())
}

/// The mapped answer: each output field set to the value at its JSON
/// Pointer, or `null`. Values are copied as the company wrote them, so a
/// number keeps every digit (a `Value` would round a long one to an f64).
pub fn map_response(body: &RawValue, fields: &BTreeMap<String, String>) -> Option<Box<RawValue>> {
    let mapped: BTreeMap<&str, Option<&RawValue>> = fields
        .iter()
        .map(|(field, pointer)| (field.as_str(), raw_pointer(body, pointer)))
        .collect();
    serde_json::value::to_raw_value(&mapped).ok()
}

/// The value at a JSON Pointer (RFC 6901) in raw JSON, unparsed.
pub fn raw_pointer<'a>(mut at: &'a RawValue, pointer: &str) -> Option<&'a RawValue> {
    if pointer.is_empty() {
        return Some(at);
    }
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match at.get().as_bytes().first()? {
            b'{' => serde_json::from_str::<HashMap<String, &RawValue>>(at.get())
                .ok()?
                .remove(&token)?,
            b'[' => {
                // An index is "0" or digits without a leading zero: no sign.
                if token.is_empty()
                    || !token.bytes().all(|b| b.is_ascii_digit())
                    || (token.len() > 1 && token.starts_with('0'))
                {
                    return None;
                }
                let index: usize = token.parse().ok()?;
                serde_json::from_str::<Vec<&RawValue>>(at.get())
                    .ok()?
                    .get(index)
                    .copied()?
            }
            _ => return None,
        };
    }
    Some(at)
}

/// Sets `value` at a JSON Pointer, creating objects on the way.
pub fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let mut at = doc;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let Value::Object(map) = at else { return };
        if i + 1 == parts.len() {
            map.insert(part.clone(), value);
            return;
        }
        at = map
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_mapping_picks_fields_by_pointer_as_written() {
        let body = r#" {"name": "A", "accounts": [{"id": 12345678901234567890123}, {"id": 2.50}],
                       "nested": {"tier": "gold", "a/b": {"~x": true}}, "list": [0]} "#;
        let body: &RawValue = serde_json::from_str(body).unwrap();
        let mapping: BTreeMap<String, String> = [
            ("name", "/name"),
            ("tier", "/nested/tier"),
            ("first", "/accounts/0/id"),
            ("second", "/accounts/1/id"),
            ("escaped", "/nested/a~1b/~0x"),
            ("whole_list", "/list"),
            ("gone", "/nope"),
            ("leading_zero", "/accounts/01"),
            ("past_the_end", "/accounts/2"),
            ("into_a_string", "/name/0"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mapped = map_response(body, &mapping).unwrap();
        // The whole answer, byte for byte: fields in order, values as the
        // company wrote them (numbers keep their digits), null where nothing is.
        assert_eq!(
            mapped.get(),
            concat!(
                r#"{"escaped":true,"first":12345678901234567890123,"gone":null,"into_a_string":null,"#,
                r#""leading_zero":null,"name":"A","past_the_end":null,"second":2.50,"tier":"gold","#,
                r#""whole_list":[0]}"#
            )
        );
    }

    /// RFC 6901 §4: an array index is digits only; `usize` parsing alone took "+1".
    #[test]
    fn array_indexes_are_digits_only() {
        let body: &RawValue = serde_json::from_str(r#"{"a": [10, 11]}"#).unwrap();
        assert_eq!(raw_pointer(body, "/a/1").map(RawValue::get), Some("11"));
        for p in ["/a/+1", "/a/ 1", "/a/1 ", "/a/-0", "/a/01"] {
            assert_eq!(raw_pointer(body, p).map(RawValue::get), None, "{p}");
        }
    }

    #[test]
    fn pointers_build_nested_bodies() {
        let mut doc = Value::Object(Default::default());
        set_pointer(&mut doc, "/auth/customer_token", Value::String("t".into()));
        assert_eq!(doc, serde_json::json!({"auth": {"customer_token": "t"}}));
    }
}
