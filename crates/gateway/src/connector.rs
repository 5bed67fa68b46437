//! One company backend: its system token, its API key, how the customer's
//! token is passed through, its actions, and the guards around every call
//! (timeout, concurrency cap, circuit breaker, purge-and-retry on a rejected
//! system token).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::{ActionConfig, ConnectionConfig, CustomerAuthPlacement, IdentityMode};
use crate::identity::JwtVerifier;
use crate::metrics::{ActionLabels, ConnectionLabel, Metrics};
use crate::system_token::{TokenError, TokenSource, describe_transport};

/// Why an action did not produce data. Each maps to one problem type.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionError {
    #[error("no action {0:?} on this connection")]
    UnknownAction(String),
    #[error("no such conversation")]
    UnknownConversation,
    #[error("the customer must authenticate again")]
    CustomerAuthRequired,
    #[error("the company's API answered {status}")]
    Backend { status: u16, detail: String },
    #[error("the company's API did not answer in time")]
    Timeout,
    #[error("the company's API could not be reached: {0}")]
    Unreachable(String),
    #[error(transparent)]
    TokenEndpoint(#[from] TokenError),
    #[error("the circuit breaker is open after repeated failures")]
    CircuitOpen,
    /// Our own failure (store, decryption): never blamed on the company.
    #[error("the gateway could not complete the request")]
    Internal(String),
}

impl ActionError {
    /// A short, stable word for metrics and the audit log.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownAction(_) => "unknown_action",
            Self::UnknownConversation => "not_found",
            Self::CustomerAuthRequired => "customer_auth_required",
            Self::Backend { .. } => "backend_error",
            Self::Timeout => "backend_timeout",
            Self::Unreachable(_) => "backend_unreachable",
            Self::TokenEndpoint(_) => "token_endpoint_error",
            Self::CircuitOpen => "circuit_open",
            Self::Internal(_) => "internal",
        }
    }
}

/// What an action returned.
#[derive(Debug, Clone)]
pub struct ActionResult {
    pub data: Value,
    pub status: u16,
    pub latency_ms: u64,
}

struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

pub struct Connection {
    pub config: ConnectionConfig,
    http: reqwest::Client,
    pub tokens: TokenSource,
    api_key: Option<(HeaderName, SecretString)>,
    pub verifier: Option<JwtVerifier>,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
    metrics: Arc<Metrics>,
}

/// A response as the connector judges it.
struct Reply {
    status: u16,
    bearer_rejected: bool,
    customer_rejected: bool,
    body: Vec<u8>,
}

impl Connection {
    pub fn new(config: ConnectionConfig, http: reqwest::Client, metrics: Arc<Metrics>) -> Result<Self, String> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let tokens = TokenSource::new(
            &config.name,
            config.system_auth.clone(),
            http.clone(),
            timeout,
            metrics.clone(),
        )?;
        let api_key = match &config.api_key {
            Some(k) => Some((
                HeaderName::from_bytes(k.header.as_bytes()).map_err(|e| e.to_string())?,
                k.value.resolve()?,
            )),
            None => None,
        };
        let verifier = (config.identity.mode == IdentityMode::Jwt)
            .then(|| JwtVerifier::new(config.identity.clone(), http.clone()));
        Ok(Self {
            permits: Semaphore::new(config.max_concurrency),
            breaker: Mutex::new(Breaker {
                consecutive_failures: 0,
                open_until: None,
            }),
            config,
            http,
            tokens,
            api_key,
            verifier,
            metrics,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn action(&self, name: &str) -> Option<&ActionConfig> {
        self.config.actions.iter().find(|a| a.name == name)
    }

    /// Runs `action` for a customer whose current token is `customer_token`.
    pub async fn call(&self, action: &str, customer_token: Option<&SecretString>) -> Result<ActionResult, ActionError> {
        let started = Instant::now();
        let result = self.call_inner(action, customer_token).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .actions
            .get_or_create(&ActionLabels {
                connection: self.config.name.clone(),
                action: action.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.metrics
            .action_latency
            .get_or_create(&ConnectionLabel {
                connection: self.config.name.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        result.map(|(data, status)| ActionResult {
            data,
            status,
            latency_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn call_inner(
        &self,
        action: &str,
        customer_token: Option<&SecretString>,
    ) -> Result<(Value, u16), ActionError> {
        let spec = self
            .action(action)
            .ok_or_else(|| ActionError::UnknownAction(action.to_string()))?;
        self.breaker_admits()?;
        let _permit = self.permits.acquire().await.map_err(|_| ActionError::CircuitOpen)?;
        let mut bearer = self.tokens.get().await?;
        let mut reply = self.send(spec, bearer.as_ref(), customer_token).await;
        if spec.method == "GET" && matches!(reply, Err(ActionError::Unreachable(_))) {
            // Only a safe method is retried, once, after a jittered pause;
            // a POST may have reached the company, so it is never repeated.
            let pause = 50 + u64::from(crate::vault::random::<1>().map_or(0, |b| b[0])) * 100 / 255;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            reply = self.send(spec, bearer.as_ref(), customer_token).await;
        }
        if let Ok(r) = &reply
            && r.bearer_rejected
            && let Some(rejected) = &bearer
        {
            // Our token was revoked or rotated early: fetch anew, once.
            self.tokens.purge(rejected);
            bearer = self.tokens.get().await?;
            reply = self.send(spec, bearer.as_ref(), customer_token).await;
        }
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.record(false);
                return Err(e);
            }
        };
        if reply.customer_rejected {
            self.record(true);
            return Err(ActionError::CustomerAuthRequired);
        }
        if !(200..300).contains(&reply.status) {
            // A 4xx is the company answering sensibly; a 5xx is it failing.
            self.record(reply.status < 500);
            return Err(ActionError::Backend {
                status: reply.status,
                detail: error_code(&reply.body).unwrap_or_default(),
            });
        }
        let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
            self.record(false);
            return Err(ActionError::Backend {
                status: reply.status,
                detail: "the response is not valid JSON".into(),
            });
        };
        self.record(true);
        Ok((map_response(&body, spec.response.as_ref()), reply.status))
    }

    async fn send(
        &self,
        spec: &ActionConfig,
        bearer: Option<&SecretString>,
        customer_token: Option<&SecretString>,
    ) -> Result<Reply, ActionError> {
        // The path is validated at load (no '..', '//', '?'); joined as text
        // under the base URL, it cannot leave it.
        let url = format!("{}{}", self.config.base_url.trim_end_matches('/'), spec.path);
        let method = reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut request = self
            .http
            .request(method, url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header("traceparent", traceparent());
        if let Some(token) = bearer {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                sensitive(&format!("Bearer {}", token.expose_secret()))?,
            );
        }
        if let Some((name, value)) = &self.api_key {
            request = request.header(name.clone(), sensitive(value.expose_secret())?);
        }
        let placement = &self.config.customer_auth;
        let mut body = None;
        if let Some(token) = customer_token {
            let token = token.expose_secret();
            match placement.placement {
                CustomerAuthPlacement::Header => {
                    let name = HeaderName::from_bytes(placement.name.as_bytes())
                        .map_err(|_| ActionError::Unreachable("invalid customer header name".into()))?;
                    request = request.header(name, sensitive(&placement.format.replace("{token}", token))?);
                }
                CustomerAuthPlacement::Cookie => {
                    request = request.header(
                        reqwest::header::COOKIE,
                        sensitive(&format!("{}={token}", placement.name))?,
                    );
                }
                CustomerAuthPlacement::Body => {
                    let mut doc = Value::Object(Default::default());
                    set_pointer(&mut doc, &placement.pointer, Value::String(token.to_string()));
                    body = Some(doc);
                }
            }
        }
        if let Some(doc) = body {
            request = request.json(&doc);
        } else if spec.method != "GET" {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body("{}");
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                ActionError::Timeout
            } else {
                ActionError::Unreachable(describe_transport(&e))
            }
        })?;
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                ActionError::Timeout
            } else {
                ActionError::Unreachable(describe_transport(&e))
            }
        })?;
        // Only a refusal carries an error code worth reading; a success body
        // is parsed once, by the caller.
        let code = if status >= 400 { error_code(&body) } else { None };
        let bearer_challenge = challenge.to_ascii_lowercase().starts_with("bearer");
        let customer_code = code.as_deref().is_some_and(|c| {
            matches!(
                c,
                "invalid_customer_token" | "customer_token_expired" | "customer_auth_required"
            )
        });
        Ok(Reply {
            status,
            bearer_rejected: status == 401 && bearer_challenge && challenge.contains("invalid_token") && !customer_code,
            // A 401 that is not about our bearer token is about the customer's.
            customer_rejected: status == 401 && (customer_code || !bearer_challenge),
            body: body.to_vec(),
        })
    }

    fn breaker_admits(&self) -> Result<(), ActionError> {
        let breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match breaker.open_until {
            Some(until) if Instant::now() < until => Err(ActionError::CircuitOpen),
            _ => Ok(()),
        }
    }

    fn record(&self, success: bool) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let gauge = self.metrics.breaker_open.get_or_create(&ConnectionLabel {
            connection: self.config.name.clone(),
        });
        if success {
            breaker.consecutive_failures = 0;
            breaker.open_until = None;
            gauge.set(0);
            return;
        }
        breaker.consecutive_failures += 1;
        if breaker.consecutive_failures >= self.config.breaker.failure_threshold {
            // Open (or re-open after a failed trial call).
            breaker.open_until = Some(Instant::now() + Duration::from_secs(self.config.breaker.open_secs));
            gauge.set(1);
            tracing::warn!(connection = %self.config.name, "circuit breaker open");
        }
    }

    /// Reaches the company: fetches a token and opens the base URL, timing each step.
    pub async fn probe(&self) -> Vec<Value> {
        let mut steps = Vec::new();
        let started = Instant::now();
        let token = self.tokens.fetch_now().await;
        steps.push(serde_json::json!({
            "step": "system_token",
            "ok": token.is_ok(),
            "latency_ms": started.elapsed().as_millis() as u64,
            "detail": token.as_ref().err().map(ToString::to_string),
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

fn sensitive(value: &str) -> Result<HeaderValue, ActionError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| ActionError::Unreachable("a credential is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("error")?
        .as_str()
        .map(|s| s.chars().take(64).collect())
}

/// A fresh W3C trace context, so the company can correlate our calls.
fn traceparent() -> String {
    let mut bytes = [0u8; 24];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{}-{}-01", &hex[..32], &hex[32..])
}

/// Output field -> JSON Pointer; no mapping means the whole body.
pub fn map_response(body: &Value, mapping: Option<&BTreeMap<String, String>>) -> Value {
    match mapping {
        None => body.clone(),
        Some(fields) => Value::Object(
            fields
                .iter()
                .map(|(field, pointer)| (field.clone(), body.pointer(pointer).cloned().unwrap_or(Value::Null)))
                .collect(),
        ),
    }
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
    fn response_mapping_picks_fields_by_pointer() {
        let body = serde_json::json!({"name": "A", "accounts": [{"id": 1}], "nested": {"tier": "gold"}});
        let mapping: BTreeMap<String, String> = [
            ("name", "/name"),
            ("tier", "/nested/tier"),
            ("first", "/accounts/0/id"),
            ("gone", "/nope"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(
            map_response(&body, Some(&mapping)),
            serde_json::json!({"name": "A", "tier": "gold", "first": 1, "gone": null})
        );
        assert_eq!(map_response(&body, None), body);
    }

    #[test]
    fn pointers_build_nested_bodies() {
        let mut doc = Value::Object(Default::default());
        set_pointer(&mut doc, "/auth/customer_token", Value::String("t".into()));
        assert_eq!(doc, serde_json::json!({"auth": {"customer_token": "t"}}));
    }
}
