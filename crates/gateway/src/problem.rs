//! The kinds of problem the gateway answers with: one enum, whose slugs
//! are the wire's `type` (`urn:deskbridge:problem:<slug>`), the `outcome`
//! of metrics and audit records, and (with a sentence for people) what
//! `GET /v1/problem-types` tells the console, so no client copies them.

use company::connector::ActionError;
use serde::Serialize;
use utoipa::ToSchema;

/// A kind of problem; see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    InvalidRequest,
    Unauthorized,
    AgentTokenExpired,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    CsrfTokenInvalid,
    OriginNotAllowed,
    InvalidAppKey,
    InvalidCredentials,
    TooManyAttempts,
    TooManyStreams,
    RateLimited,
    UnknownConnection,
    UnknownSession,
    UnknownAction,
    InvalidActionInput,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    IdempotencyKeyInFlight,
    IdentifierNotOpaque,
    IdentityMismatch,
    InvalidExternalRef,
    ExternalRefTaken,
    CustomerTokenExpired,
    InvalidCustomerToken,
    IdentityProviderUnavailable,
    CustomerAuthRequired,
    BackendError,
    BackendUnreachable,
    ApiKeyRejected,
    BackendTimeout,
    TokenEndpointError,
    CircuitOpen,
    CompanyRateLimited,
    BackendUnavailable,
    SystemTokenUnavailable,
    StoreUnavailable,
    NotReady,
    Internal,
}

impl ProblemType {
    pub const ALL: &[Self] = &[
        Self::InvalidRequest,
        Self::Unauthorized,
        Self::AgentTokenExpired,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::RequestTimeout,
        Self::CsrfTokenInvalid,
        Self::OriginNotAllowed,
        Self::InvalidAppKey,
        Self::InvalidCredentials,
        Self::TooManyAttempts,
        Self::TooManyStreams,
        Self::RateLimited,
        Self::UnknownConnection,
        Self::UnknownSession,
        Self::UnknownAction,
        Self::InvalidActionInput,
        Self::IdempotencyKeyRequired,
        Self::IdempotencyKeyReused,
        Self::IdempotencyKeyInFlight,
        Self::IdentifierNotOpaque,
        Self::IdentityMismatch,
        Self::InvalidExternalRef,
        Self::ExternalRefTaken,
        Self::CustomerTokenExpired,
        Self::InvalidCustomerToken,
        Self::IdentityProviderUnavailable,
        Self::CustomerAuthRequired,
        Self::BackendError,
        Self::BackendUnreachable,
        Self::ApiKeyRejected,
        Self::BackendTimeout,
        Self::TokenEndpointError,
        Self::CircuitOpen,
        Self::CompanyRateLimited,
        Self::BackendUnavailable,
        Self::SystemTokenUnavailable,
        Self::StoreUnavailable,
        Self::NotReady,
        Self::Internal,
    ];

    /// The slug: the end of the problem's `type`, and the outcome in
    /// metrics and the audit log.
    pub fn slug(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::AgentTokenExpired => "agent_token_expired",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RequestTimeout => "request_timeout",
            Self::CsrfTokenInvalid => "csrf_token_invalid",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::InvalidAppKey => "invalid_app_key",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TooManyAttempts => "too_many_attempts",
            Self::TooManyStreams => "too_many_streams",
            Self::RateLimited => "rate_limited",
            Self::UnknownConnection => "unknown_connection",
            Self::UnknownSession => "unknown_session",
            Self::UnknownAction => "unknown_action",
            Self::InvalidActionInput => "invalid_action_input",
            Self::IdempotencyKeyRequired => "idempotency_key_required",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            Self::IdentifierNotOpaque => "identifier_not_opaque",
            Self::IdentityMismatch => "identity_mismatch",
            Self::InvalidExternalRef => "invalid_external_ref",
            Self::ExternalRefTaken => "external_ref_taken",
            Self::CustomerTokenExpired => "customer_token_expired",
            Self::InvalidCustomerToken => "invalid_customer_token",
            Self::IdentityProviderUnavailable => "identity_provider_unavailable",
            Self::CustomerAuthRequired => "customer_auth_required",
            Self::BackendError => "backend_error",
            Self::BackendUnreachable => "backend_unreachable",
            Self::ApiKeyRejected => "api_key_rejected",
            Self::BackendTimeout => "backend_timeout",
            Self::TokenEndpointError => "token_endpoint_error",
            Self::CircuitOpen => "circuit_open",
            Self::CompanyRateLimited => "company_rate_limited",
            Self::BackendUnavailable => "backend_unavailable",
            Self::SystemTokenUnavailable => "system_token_unavailable",
            Self::StoreUnavailable => "store_unavailable",
            Self::NotReady => "not_ready",
            Self::Internal => "internal",
        }
    }

    /// The problem's `type`: `urn:deskbridge:problem:<slug>`.
    pub fn urn(self) -> String {
        format!("urn:deskbridge:problem:{}", self.slug())
    }

    /// What it means, in a sentence an agent can act on.
    pub fn hint(self) -> &'static str {
        match self {
            Self::InvalidRequest => "The request was not understood: the detail says what to fix.",
            Self::Unauthorized => "Not signed in, or the credential is not valid.",
            Self::AgentTokenExpired => {
                "This agent token has expired. An administrator issues a new one (deskbridge agent token rotate)."
            }
            Self::Forbidden => "Your role does not allow this.",
            Self::NotFound => "This no longer exists.",
            Self::MethodNotAllowed => "This endpoint does not accept that method.",
            Self::PayloadTooLarge => "The request is too large.",
            Self::UnsupportedMediaType => "The request must be JSON.",
            Self::RequestTimeout => "The request took too long to arrive.",
            Self::CsrfTokenInvalid => "The page is out of date. Reload it and try again.",
            Self::OriginNotAllowed => "This web page is not allowed to use this channel.",
            Self::InvalidAppKey => "The channel's app key is not valid.",
            Self::InvalidCredentials => "The name or password is not right.",
            Self::TooManyAttempts => "Too many failed sign-ins. Wait a little and try again.",
            Self::TooManyStreams => "Too many live connections are open. Close some and try again.",
            Self::RateLimited => "Too many requests in a short time. Wait a few seconds and try again.",
            Self::UnknownConnection => "This connection is no longer configured.",
            Self::UnknownSession => "This session no longer exists.",
            Self::UnknownAction => "This company's connection has no such action configured.",
            Self::InvalidActionInput => {
                "Some fields of the form are not filled in correctly: each is marked with what to fix."
            }
            Self::IdempotencyKeyRequired => "A change needs a confirmation key; confirm it again from the form.",
            Self::IdempotencyKeyReused => {
                "This confirmation was already used for other values. Confirm the change again to send it as a new one."
            }
            Self::IdempotencyKeyInFlight => "This change is still being sent. Wait a moment before trying again.",
            Self::IdentifierNotOpaque => {
                "The customer identifier must be opaque: it must not reveal who the customer is."
            }
            Self::IdentityMismatch => "The customer token belongs to another customer.",
            Self::InvalidExternalRef => "The desk's reference must be 1 to 128 letters, digits or - _ . : / # @ + =.",
            Self::ExternalRefTaken => {
                "The desk's reference already names another customer's conversation; an agent can move it to this one."
            }
            Self::CustomerTokenExpired => "The customer's login has expired.",
            Self::InvalidCustomerToken => "The customer token is not valid.",
            Self::IdentityProviderUnavailable => {
                "The company's login keys could not be fetched. Try again in a moment."
            }
            Self::CustomerAuthRequired => "The customer needs to sign in again.",
            Self::BackendError => "The company's API answered with an error, or an answer that could not be read.",
            Self::BackendUnreachable => "The company's API could not be reached. Try again in a moment.",
            Self::ApiKeyRejected => {
                "The company refused deskbridge's API key for this connection. This is not the customer's fault: an administrator must fix the connection's API key."
            }
            Self::BackendTimeout => "The company's API did not answer in time. Try again in a moment.",
            Self::TokenEndpointError => {
                "deskbridge could not get its access token from the company's login service, so it could not ask for this customer's data."
            }
            Self::CircuitOpen => {
                "The company's API has been failing, so deskbridge is pausing calls to it for a short while. It tries again by itself within seconds."
            }
            Self::CompanyRateLimited => {
                "The company's API allows only so many requests at a time, and that limit is reached. Try again in a few seconds."
            }
            Self::BackendUnavailable => {
                "The company's API said it is unavailable for a while. deskbridge waits as long as it asked before calling it again."
            }
            Self::SystemTokenUnavailable => {
                "deskbridge's access token to the company has expired and its login service cannot be reached, so no request can be sent. It retries by itself."
            }
            Self::StoreUnavailable => "The gateway's database is unavailable. Try again in a moment.",
            Self::NotReady => "The gateway is not ready to serve.",
            Self::Internal => {
                "Something went wrong inside deskbridge. Try again; if it keeps happening, an administrator can find the cause in the gateway's log."
            }
        }
    }
}

impl ProblemType {
    /// The kind of an action's failure.
    pub fn of(e: &ActionError) -> Self {
        match e {
            ActionError::UnknownAction => Self::UnknownAction,
            ActionError::UnknownConversation => Self::NotFound,
            ActionError::CustomerAuthRequired => Self::CustomerAuthRequired,
            ActionError::Backend { .. } | ActionError::TooLarge { .. } | ActionError::NotJson { .. } => {
                Self::BackendError
            }
            ActionError::Unreachable(_) => Self::BackendUnreachable,
            ActionError::ApiKeyRejected { .. } => Self::ApiKeyRejected,
            ActionError::Timeout => Self::BackendTimeout,
            ActionError::TokenEndpoint(_) => Self::TokenEndpointError,
            ActionError::CircuitOpen => Self::CircuitOpen,
            ActionError::CompanyRateLimited(_) => Self::CompanyRateLimited,
            ActionError::BackendUnavailable(_) => Self::BackendUnavailable,
            ActionError::SystemTokenUnavailable { .. } => Self::SystemTokenUnavailable,
            ActionError::RateLimited(_) => Self::RateLimited,
            ActionError::Internal(_) => Self::Internal,
            ActionError::StoreUnavailable(_) => Self::StoreUnavailable,
            ActionError::InvalidInput(_) => Self::InvalidActionInput,
            ActionError::NotAllowed(_) => Self::Forbidden,
            ActionError::IdempotencyKeyRequired => Self::IdempotencyKeyRequired,
            ActionError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            ActionError::IdempotencyKeyInFlight => Self::IdempotencyKeyInFlight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_and_as_serialized() {
        let mut seen = std::collections::HashSet::new();
        for kind in ProblemType::ALL {
            assert!(seen.insert(kind.slug()), "{} twice", kind.slug());
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::json!(kind.slug())));
            assert!(!kind.hint().is_empty());
        }
    }

    /// The company crate labels its own metrics by outcome; the labels must
    /// be the slugs of the answers agents get.
    #[test]
    fn company_outcomes_are_problem_slugs() {
        use company::system_token::TokenError;
        for e in [
            ActionError::UnknownAction,
            ActionError::UnknownConversation,
            ActionError::CustomerAuthRequired,
            ActionError::Timeout,
            ActionError::Unreachable("x".into()),
            ActionError::TokenEndpoint(TokenError::Unavailable("x".into())),
            ActionError::CircuitOpen,
            ActionError::CompanyRateLimited(company::RetryAfter(1)),
            ActionError::BackendUnavailable(company::RetryAfter(1)),
            ActionError::SystemTokenUnavailable {
                retry_after: company::RetryAfter(1),
                cause: "x".into(),
            },
            ActionError::Internal("x".into()),
            ActionError::StoreUnavailable("x".into()),
            ActionError::InvalidInput(Vec::new()),
            ActionError::NotAllowed("x"),
            ActionError::IdempotencyKeyRequired,
            ActionError::IdempotencyKeyReused,
            ActionError::IdempotencyKeyInFlight,
        ] {
            assert_eq!(ProblemType::of(&e).slug(), e.outcome(), "{e:?}");
        }
    }
}
