//! Prometheus metrics of the backend.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    pub outcome: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub access_tokens_issued: Counter,
    pub customer_logins: Family<Outcome, Counter>,
    pub profile_requests: Family<Outcome, Counter>,
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
        let customer_logins = Family::<Outcome, Counter>::default();
        registry.register("customer_logins", "Customer logins by outcome", customer_logins.clone());
        let profile_requests = Family::<Outcome, Counter>::default();
        registry.register(
            "profile_requests",
            "/getprofile requests by outcome",
            profile_requests.clone(),
        );
        Self {
            registry,
            access_tokens_issued,
            customer_logins,
            profile_requests,
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
