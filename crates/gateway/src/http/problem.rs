//! Problems as the API answers them (RFC 9457), from every error the
//! gateway knows.

use super::*;
use company::action::FieldError;

/// An RFC 9457 problem. `detail` never carries a token or secret.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    kind: ProblemType,
    detail: String,
    /// The company API's status and error code, on `backend_error`.
    backend: Option<(u16, Option<String>)>,
    /// Seconds to wait, sent as `Retry-After`.
    retry_after: Option<u64>,
    /// On `invalid_action_input`: each field that is wrong, and why.
    fields: Vec<FieldError>,
}

/// An RFC 9457 problem, as sent: `application/problem+json`.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemBody {
    /// `urn:deskbridge:problem:<slug>`, stable per failure.
    #[serde(rename = "type")]
    #[schema(example = "urn:deskbridge:problem:customer_auth_required")]
    kind: String,
    /// The slug in words.
    #[schema(example = "customer auth required")]
    title: String,
    /// The HTTP status.
    #[schema(example = 409)]
    status: u16,
    /// What went wrong, for people; never a token or secret.
    detail: String,
    /// On `backend_error`: the status the company's API answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_status: Option<u16>,
    /// On `backend_error`: the error code the company's API gave, when it
    /// gave a well-formed one (`[A-Za-z0-9_.:-]`, at most 64 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_error: Option<String>,
    /// On `invalid_action_input`: one entry per field that is wrong
    /// (`{field, reason}`); the company was not called.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    errors: Vec<FieldError>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            backend: None,
            retry_after: None,
            fields: Vec::new(),
        }
    }

    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(super) fn rate_limited(wait: RetryAfter, detail: &str) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, ProblemType::RateLimited, detail).retry_after(wait.0)
    }

    /// The store did not answer within `[store] timeout_ms`: worth a retry.
    pub(super) fn store_unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "the store is unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::StoreUnavailable,
            "the gateway's store is unavailable; retry shortly",
        )
        .retry_after(1)
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::Internal,
            "the gateway could not complete the request",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (backend_status, backend_error) = self.backend.unzip();
        let backend_error = backend_error.flatten();
        let body = ProblemBody {
            kind: self.kind.urn(),
            title: self.kind.slug().replace('_', " "),
            status: self.status.as_u16(),
            detail: self.detail,
            backend_status,
            backend_error,
            errors: self.fields,
        };
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // A refused flood gives its connection back, rather than keep it
        // idle until the keep-alive limit.
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // RFC 9110 §15.5.2: a 401 says how to authenticate; the agent API
        // takes a bearer token (RFC 6750 §3).
        if self.kind == ProblemType::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"deskbridge\""),
            );
        }
        response
    }
}

impl From<crate::GatewayError> for Problem {
    fn from(e: crate::GatewayError) -> Self {
        match e {
            crate::GatewayError::StoreUnavailable(cause) => Self::store_unavailable(cause),
            e => Self::internal(e),
        }
    }
}

impl From<IntakeError> for Problem {
    fn from(e: IntakeError) -> Self {
        use crate::identity::IdentityError as I;
        let (status, slug) = match &e {
            IntakeError::UnknownConnection(_) => (StatusCode::NOT_FOUND, ProblemType::UnknownConnection),
            IntakeError::NotOpaque(_) => (StatusCode::UNPROCESSABLE_ENTITY, ProblemType::IdentifierNotOpaque),
            IntakeError::IdentityMismatch(_) => (StatusCode::UNAUTHORIZED, ProblemType::IdentityMismatch),
            IntakeError::Identity(I::Expired) => (StatusCode::UNAUTHORIZED, ProblemType::CustomerTokenExpired),
            IntakeError::Identity(I::Invalid(_)) => (StatusCode::UNAUTHORIZED, ProblemType::InvalidCustomerToken),
            IntakeError::UnfitToken(_) => (StatusCode::BAD_REQUEST, ProblemType::InvalidCustomerToken),
            IntakeError::Identity(I::KeysUnavailable(_)) => {
                (StatusCode::BAD_GATEWAY, ProblemType::IdentityProviderUnavailable)
            }
            IntakeError::MissingToken | IntakeError::MissingCustomerId => {
                (StatusCode::BAD_REQUEST, ProblemType::InvalidRequest)
            }
            IntakeError::UnknownSession => (StatusCode::NOT_FOUND, ProblemType::UnknownSession),
            IntakeError::UnknownConversation => (StatusCode::NOT_FOUND, ProblemType::NotFound),
            IntakeError::InvalidExternalRef(_) => (StatusCode::BAD_REQUEST, ProblemType::InvalidExternalRef),
            IntakeError::ExternalRefTaken => (StatusCode::CONFLICT, ProblemType::ExternalRefTaken),
            IntakeError::Internal(crate::GatewayError::StoreUnavailable(cause)) => {
                return Self::store_unavailable(cause);
            }
            IntakeError::Internal(inner) => return Self::internal(inner),
        };
        Self::new(status, slug, e.to_string())
    }
}

pub(super) fn action_problem(e: &ActionError) -> Problem {
    let status = match e {
        ActionError::UnknownAction | ActionError::UnknownConversation => StatusCode::NOT_FOUND,
        ActionError::CustomerAuthRequired => StatusCode::CONFLICT,
        ActionError::Backend { .. }
        | ActionError::TooLarge { .. }
        | ActionError::NotJson { .. }
        | ActionError::Unreachable(_)
        | ActionError::ApiKeyRejected { .. }
        | ActionError::TokenEndpoint(crate::system_token::TokenError::Refused { .. }) => StatusCode::BAD_GATEWAY,
        ActionError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ActionError::TokenEndpoint(_) | ActionError::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
        ActionError::RateLimited(wait) => return Problem::rate_limited(*wait, &e.to_string()),
        ActionError::CompanyRateLimited(wait) => {
            return Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                ProblemType::CompanyRateLimited,
                e.to_string(),
            )
            .retry_after(wait.0);
        }
        ActionError::BackendUnavailable(wait) => {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemType::BackendUnavailable,
                e.to_string(),
            )
            .retry_after(wait.0);
        }
        ActionError::SystemTokenUnavailable { retry_after, cause } => {
            tracing::warn!(error = %cause, "no valid system token");
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemType::SystemTokenUnavailable,
                e.to_string(),
            )
            .retry_after(retry_after.0);
        }
        ActionError::Internal(cause) => return Problem::internal(cause),
        ActionError::StoreUnavailable(cause) => return Problem::store_unavailable(cause),
        ActionError::InvalidInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ActionError::NotAllowed(_) => StatusCode::FORBIDDEN,
        ActionError::IdempotencyKeyRequired => StatusCode::BAD_REQUEST,
        ActionError::IdempotencyKeyReused | ActionError::IdempotencyKeyInFlight => StatusCode::CONFLICT,
    };
    let mut problem = Problem::new(status, ProblemType::of(e), e.to_string());
    match e {
        ActionError::Backend { status, error } | ActionError::ApiKeyRejected { status, error, .. } => {
            problem.backend = Some((*status, error.clone()))
        }
        ActionError::TooLarge { status } | ActionError::NotJson { status } => problem.backend = Some((*status, None)),
        ActionError::InvalidInput(fields) => problem.fields = fields.clone(),
        _ => {}
    }
    problem
}
