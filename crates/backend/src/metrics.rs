//! Prometheus metrics of the backend.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    pub outcome: &'static str,
}

/// One data API call's outcome: `ok` or the `error` code it was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiOutcome {
    pub api: &'static str,
    pub outcome: String,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub access_tokens_issued: Counter,
    /// Tokens issued by a token exchange (RFC 8693).
    pub access_tokens_exchanged: Counter,
    pub customer_logins: Family<Outcome, Counter>,
    pub profile_requests: Family<Outcome, Counter>,
    /// The data APIs after `/getprofile` (transactions, card block).
    pub data_requests: Family<ApiOutcome, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("deskbridge");
        let access_tokens_issued = Counter::default();
        registry.register(
            "access_tokens_issued",
            "System access tokens issued by /access_token",
            access_tokens_issued.clone(),
        );
        let access_tokens_exchanged = Counter::default();
        registry.register(
            "access_tokens_exchanged",
            "Access tokens issued by a token exchange at /access_token, for a customer and an actor",
            access_tokens_exchanged.clone(),
        );
        let customer_logins = Family::<Outcome, Counter>::default();
        registry.register("customer_logins", "Customer logins by outcome", customer_logins.clone());
        let profile_requests = Family::<Outcome, Counter>::default();
        registry.register(
            "profile_requests",
            "/getprofile requests by outcome",
            profile_requests.clone(),
        );
        let data_requests = Family::<ApiOutcome, Counter>::default();
        registry.register(
            "data_requests",
            "Data API requests (other than /getprofile) by API and outcome",
            data_requests.clone(),
        );
        Self {
            registry,
            access_tokens_issued,
            access_tokens_exchanged,
            customer_logins,
            profile_requests,
            data_requests,
        }
    }

    /// Counts one answer of a data API.
    pub(crate) fn count_data_request<T>(&self, api: &'static str, result: &Result<T, crate::error::HttpError>) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code().to_string(),
        };
        self.data_requests.get_or_create(&ApiOutcome { api, outcome }).inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
