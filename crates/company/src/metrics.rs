//! Metrics of company calls. They live with the calls and are registered
//! into the gateway's registry, under its `deskbridge_gateway` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub connection: String,
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionOutcome {
    pub connection: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabel {
    pub connection: String,
}

pub struct Metrics {
    pub actions: Family<ActionLabels, Counter>,
    pub action_latency: Family<ConnectionLabel, Histogram>,
    pub token_fetches: Family<ConnectionOutcome, Counter>,
    pub token_cache_hits: Counter,
    pub breaker_open: Family<ConnectionLabel, Gauge>,
    /// Calls not made because of the company's limits, by reason: `rate`
    /// (`[connections.limits]`) or `paused` (its `Retry-After`).
    pub company_limited: Family<ConnectionOutcome, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            actions: Family::default(),
            action_latency: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
            }),
            token_fetches: Family::default(),
            token_cache_hits: Counter::default(),
            breaker_open: Family::default(),
            company_limited: Family::default(),
        }
    }
}

impl Metrics {
    /// Adds these metrics to `registry` (the metrics are shared handles).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("actions", "Backend actions run, by outcome", self.actions.clone());
        registry.register(
            "action_latency_seconds",
            "Backend action latency",
            self.action_latency.clone(),
        );
        registry.register(
            "token_fetches",
            "System token fetches, by outcome",
            self.token_fetches.clone(),
        );
        registry.register(
            "token_cache_hits",
            "System tokens served from the cache",
            self.token_cache_hits.clone(),
        );
        registry.register(
            "breaker_open",
            "1 while a connection's circuit breaker is open",
            self.breaker_open.clone(),
        );
        registry.register(
            "company_limited",
            "Calls not made because of a company's limits: rate ([connections.limits]) or paused (its Retry-After)",
            self.company_limited.clone(),
        );
    }

    pub fn company_limited(&self, connection: &str, reason: &str) {
        self.company_limited
            .get_or_create(&ConnectionOutcome {
                connection: connection.into(),
                outcome: reason.into(),
            })
            .inc();
    }

    pub fn token_fetch(&self, connection: &str, outcome: &str) {
        self.token_fetches
            .get_or_create(&ConnectionOutcome {
                connection: connection.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}
