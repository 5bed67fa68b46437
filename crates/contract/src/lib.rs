//! Wire types of the customer-API contract (`shared/CONTRACT.md`).
//!
//! The backend serves these shapes, the gateway sends and reads them, and the
//! conformance checker judges them; keeping them in one crate means the three
//! cannot drift apart.

use serde::{Deserialize, Deserializer, Serialize};

/// Paths of the company endpoints the contract names.
pub mod paths {
    pub const CUSTOMER_AUTHENTICATE: &str = "/customer_authenticate";
    pub const CUSTOMER_LOGOUT: &str = "/customer_logout";
    pub const ACCESS_TOKEN: &str = "/access_token";
    pub const REVOKE: &str = "/revoke";
    pub const GET_PROFILE: &str = "/getprofile";
    /// `{account_id}` is one of the customer's accounts.
    pub const ACCOUNT_TRANSACTIONS: &str = "/accounts/{account_id}/transactions";
    /// `{card_id}` is one of the customer's cards.
    pub const CARD_BLOCK: &str = "/cards/{card_id}/block";
    pub const JWKS: &str = "/.well-known/jwks.json";
    pub const AUTHORIZATION_SERVER_METADATA: &str = "/.well-known/oauth-authorization-server";
}

/// RFC 8693 token exchange: the grant, and the token types this product uses.
pub mod token_exchange {
    pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
    /// The acting agent or bot, named by the platform: `agent:alice`,
    /// `bot:triage`. A token type of our own (RFC 8693 §3 allows any URI):
    /// the platform is the authenticated client the company already trusts
    /// with its customers' tokens, so a signature of that same client over
    /// the name would prove nothing more.
    pub const ACTOR: &str = "urn:deskbridge:token-type:actor";
}

/// Header names of the three credentials on a backend call.
pub mod headers {
    /// Carries the end customer's token, `JWT <jwt>`.
    pub const CUSTOMER_AUTH: &str = "customer-auth";
    /// Carries the API key that authorizes the caller for specific APIs.
    pub const API_KEY: &str = "api-key";
    /// The scheme prefix of a JWT in the `customer-auth` header.
    pub const CUSTOMER_AUTH_JWT_SCHEME: &str = "JWT";
}

/// `POST /customer_authenticate` in token mode. Every value is a string, as in
/// the vendor's example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerToken {
    /// Epoch milliseconds.
    pub issued_at: String,
    #[serde(rename = "JWT")]
    pub jwt: String,
    /// Seconds.
    pub expires_in: String,
}

/// `POST /customer_authenticate` in cookie mode: the session itself travels in
/// `Set-Cookie`, never in the body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerSession {
    pub issued_at: String,
    pub expires_in: String,
    /// Name of the cookie that carries the session.
    pub cookie: String,
}

/// Claims of a customer JWT. `sub` is the opaque customer identifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// `POST /access_token` success (RFC 6749 §5.1 plus the vendor's fields).
///
/// `expires_in` is a number per the RFC; the vendor's example sends a numeric
/// string, so deserialising accepts both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessTokenResponse {
    pub token_type: String,
    pub access_token: String,
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    pub expires_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8693 §2.2.1: what a token exchange issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,
}

fn number_or_numeric_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let seconds = match Option::<serde_json::Value>::deserialize(d)? {
        None => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    seconds
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("expires_in is not a whole, non-negative number of seconds"))
}

/// RFC 6749 §5.2 error codes of the token endpoint.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// RFC 8707 §2 / RFC 8693 §2.2.2: an audience or resource refused.
    InvalidTarget,
}

/// The error codes a token endpoint may answer that an OAuth registry
/// defines: RFC 6749 §5.2 and §4.1.2.1, RFC 6750 §3.1, RFC 8707 §2.
const REGISTERED_OAUTH_ERRORS: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "invalid_token",
    "insufficient_scope",
    "server_error",
    "temporarily_unavailable",
];

/// `code` when it is a registered OAuth error code, else `None`. A caller
/// repeats only these: an unregistered code is text the server chose, and a
/// server can echo anything there, the credentials it was sent included.
pub fn registered_oauth_error(code: &str) -> Option<&'static str> {
    REGISTERED_OAUTH_ERRORS.iter().copied().find(|c| *c == code)
}

/// Error codes of the customer-facing and data APIs. Each says *whose*
/// credential failed, so a caller can tell "refresh my system token" from
/// "ask the customer's channel for a fresh login".
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorCode {
    /// Login refused; the same answer for an unknown user and a wrong password.
    InvalidCredentials,
    /// Too many failed logins; see `Retry-After`.
    TooManyAttempts,
    /// The system access token is missing, unknown, revoked or expired.
    InvalidToken,
    /// The system access token lacks the scope this API needs.
    InsufficientScope,
    /// The API key is missing or unknown.
    InvalidApiKey,
    /// The API key is valid but not for this API.
    ApiNotAllowed,
    /// The customer's token or session is missing or invalid.
    InvalidCustomerToken,
    /// The customer's token or session has expired.
    CustomerTokenExpired,
    /// The customer identified by a valid token no longer exists.
    CustomerNotFound,
    /// No account of *this* customer has the id: another customer's
    /// account gets the same answer, so ids cannot be probed.
    AccountNotFound,
    /// No card of this customer has the id (another customer's included).
    CardNotFound,
    /// A write was sent without its `Idempotency-Key` header.
    IdempotencyKeyRequired,
    /// The `Idempotency-Key` was used before with another request.
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still being processed.
    IdempotencyKeyInUse,
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    /// The request's body did not arrive within the server's deadline.
    RequestTimeout,
    /// A browser page of another site sent a request that would sign a
    /// visitor in or out (login CSRF).
    CrossSiteRequest,
    /// Too many logins are waiting for a password check; see `Retry-After`.
    ServerBusy,
    NotFound,
    MethodNotAllowed,
    Internal,
}

impl ApiErrorCode {
    /// True for the failures that mean the *customer's* credential must be
    /// refreshed by the channel, not the platform's own.
    pub fn is_customer_auth_failure(self) -> bool {
        matches!(self, Self::InvalidCustomerToken | Self::CustomerTokenExpired)
    }
}

/// Whose credential a company's refusal of a data call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The customer's token: the channel must hand over a fresh one.
    CustomerToken,
    /// The platform's system access token: fetch anew and retry once.
    SystemToken,
    /// The platform's API key: an operator must fix the connection.
    ApiKey,
}

/// Decides whose credential a `401` or `403` is about, from the evidence in
/// this order: the company's `error` code (this contract's codes), then the
/// `WWW-Authenticate` challenge (its scheme and `error` parameter), then
/// the status alone (a `401` without a `Bearer` challenge is the
/// customer's). `None`: a refusal that blames no credential (a `403` for
/// some other reason, a Bearer challenge with another error).
pub fn whose_refusal(
    status: u16,
    error: Option<&str>,
    challenge_scheme: Option<&str>,
    challenge_error: Option<&str>,
) -> Option<Refused> {
    if status != 401 && status != 403 {
        return None;
    }
    let bearer = challenge_scheme.is_some_and(|s| s.eq_ignore_ascii_case("bearer"));
    match error {
        Some("invalid_customer_token" | "customer_token_expired" | "customer_auth_required") => {
            return Some(Refused::CustomerToken);
        }
        Some("invalid_api_key" | "api_not_allowed") => return Some(Refused::ApiKey),
        Some("invalid_token") if bearer => return Some(Refused::SystemToken),
        _ => {}
    }
    if challenge_scheme.is_some_and(|s| s.eq_ignore_ascii_case("apikey")) {
        return Some(Refused::ApiKey);
    }
    if bearer {
        return (challenge_error == Some("invalid_token")).then_some(Refused::SystemToken);
    }
    (status == 401).then_some(Refused::CustomerToken)
}

/// The JSON body of every error from the backend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody<C> {
    pub error: C,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// Body form of the customer's token on a data call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerAuthBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_auth: Option<String>,
}

/// `POST /getprofile` success.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub tier: String,
    /// ISO 8601 date.
    pub member_since: String,
    pub accounts: Vec<Account>,
    /// Absent from older backends' answers.
    #[serde(default)]
    pub cards: Vec<Card>,
}

/// A payment card of the customer, as `/getprofile` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Card {
    pub id: String,
    /// The account it draws on.
    pub account_id: String,
    pub brand: String,
    /// The last four digits of its number; the number itself never travels.
    pub last4: String,
    /// `active` or `blocked`.
    pub status: String,
}

/// One booking on an account (`POST /accounts/{account_id}/transactions`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Transaction {
    pub id: String,
    /// ISO 8601 in UTC, e.g. `2026-11-30T09:15:00Z`.
    pub booked_at: String,
    /// Negative for money going out.
    pub amount: Money,
    pub description: String,
    /// `booked` or `pending`.
    pub status: String,
    /// The other party's IBAN, for transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty_iban: Option<String>,
}

/// A page of an account's transactions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransactionPage {
    pub account_id: String,
    pub transactions: Vec<Transaction>,
    /// Pass it as `cursor` for the next (older) page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `POST /cards/{card_id}/block` success: the card as it is now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockedCard {
    pub id: String,
    pub last4: String,
    /// `blocked`.
    pub status: String,
    /// `lost`, `stolen` or `damaged`: the reason of the block that took effect.
    pub block_reason: String,
    /// ISO 8601 in UTC.
    pub blocked_at: String,
    /// Who blocked it for the customer, when the call came with an
    /// exchanged token naming an actor (`agent:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acted_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub balance: Money,
}

/// An amount as a decimal string (never a float) with its ISO 4217 currency.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Money {
    pub amount: String,
    pub currency: String,
}

/// RFC 8414 authorization server metadata (the fields the contract uses).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorizationServerMetadata {
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    /// Required by RFC 8414 §2. Empty: there is no authorization endpoint,
    /// so no response type is supported (client credentials needs none).
    pub response_types_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithms of `private_key_jwt` assertions (RFC 8414 §2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_blamed_by_code_then_challenge_then_status() {
        use Refused::*;
        // (status, error code, challenge scheme, challenge error, blamed)
        type Case = (
            u16,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Option<Refused>,
        );
        let cases: [Case; 12] = [
            // The company's error code decides first, whatever the challenge.
            (401, Some("invalid_api_key"), Some("ApiKey"), None, Some(ApiKey)),
            (401, Some("invalid_api_key"), None, None, Some(ApiKey)),
            (403, Some("api_not_allowed"), None, None, Some(ApiKey)),
            (
                401,
                Some("customer_token_expired"),
                Some("Bearer"),
                Some("invalid_token"),
                Some(CustomerToken),
            ),
            (401, Some("invalid_token"), Some("Bearer"), None, Some(SystemToken)),
            // `invalid_token` without a Bearer challenge names no credential of ours.
            (401, Some("invalid_token"), None, None, Some(CustomerToken)),
            // Then the challenge.
            (401, None, Some("apikey"), None, Some(ApiKey)),
            (401, None, Some("Bearer"), Some("invalid_token"), Some(SystemToken)),
            (401, Some("nope"), Some("Bearer"), Some("insufficient_scope"), None),
            // Then the status alone.
            (401, None, None, None, Some(CustomerToken)),
            (403, Some("forbidden"), None, None, None),
            (500, Some("invalid_api_key"), None, None, None),
        ];
        for (status, error, scheme, challenge_error, expected) in cases {
            assert_eq!(
                whose_refusal(status, error, scheme, challenge_error),
                expected,
                "{status} {error:?} {scheme:?} {challenge_error:?}"
            );
        }
    }

    #[test]
    fn expires_in_accepts_number_and_numeric_string() -> Result<(), serde_json::Error> {
        let rfc: AccessTokenResponse =
            serde_json::from_str(r#"{"token_type":"Bearer","access_token":"t","expires_in":28799}"#)?;
        let vendor: AccessTokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","access_token":"t","expires_in":"28799","scope":"client_credentials"}"#,
        )?;
        assert_eq!(rfc.expires_in, Some(28799));
        assert_eq!(vendor.expires_in, Some(28799));
        for bad in [r#""soon""#, "-5", "1.5", "true", "[]"] {
            let body = format!(r#"{{"token_type":"Bearer","access_token":"t","expires_in":{bad}}}"#);
            let error = serde_json::from_str::<AccessTokenResponse>(&body)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.starts_with("expires_in is not a whole"), "{bad}: {error:?}");
        }
        Ok(())
    }

    #[test]
    fn only_registered_oauth_errors_are_repeated() {
        assert_eq!(registered_oauth_error("invalid_client"), Some("invalid_client"));
        assert_eq!(
            registered_oauth_error("temporarily_unavailable"),
            Some("temporarily_unavailable")
        );
        // What a server could echo back: the Basic credential, or a log line.
        assert_eq!(registered_oauth_error("YzpFQ0hPLVNFQ1JFVC12YWx1ZS03Nzc"), None);
        assert_eq!(registered_oauth_error("bad\nINFO fake"), None);
        assert_eq!(registered_oauth_error("Invalid_Client"), None);
    }

    #[test]
    fn customer_token_uses_vendor_field_names() -> Result<(), serde_json::Error> {
        let body = serde_json::to_value(CustomerToken {
            issued_at: "1570733606449".into(),
            jwt: "a.b.c".into(),
            expires_in: "28799".into(),
        })?;
        assert_eq!(
            body,
            serde_json::json!({"issued_at":"1570733606449","JWT":"a.b.c","expires_in":"28799"})
        );
        Ok(())
    }

    #[test]
    fn customer_failures_are_told_apart_from_system_failures() {
        assert!(ApiErrorCode::CustomerTokenExpired.is_customer_auth_failure());
        assert!(ApiErrorCode::InvalidCustomerToken.is_customer_auth_failure());
        assert!(!ApiErrorCode::InvalidToken.is_customer_auth_failure());
        assert!(!ApiErrorCode::InvalidApiKey.is_customer_auth_failure());
    }

    #[test]
    fn a_profile_without_cards_still_reads() {
        let old = r#"{"customer_id":"cus_1","name":"A","email":"","phone":"","tier":"gold",
                      "member_since":"2019-04-12","accounts":[]}"#;
        let profile: Result<Profile, _> = serde_json::from_str(old);
        assert_eq!(profile.map(|p| p.cards.len()).ok(), Some(0));
    }
}
