//! Prometheus metrics of the gateway.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalReason {
    /// `unknown_action`, `not_found`, `circuit_open`, `rate_limited` or `stream_limit`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropReason {
    /// `queue_full`, `write_failed` or `closed` (after shutdown began).
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Company calls: actions, their latency, system tokens, breakers.
    pub company: Arc<company::Metrics>,
    pub audit_written: Counter,
    pub audit_dropped: Family<DropReason, Counter>,
    pub audit_rows: Gauge,
    pub refusals: Family<RefusalReason, Counter>,
    pub event_streams: Gauge,
    /// 1 while this instance reaches the Redis it shares with the others,
    /// 0 while it does not; no series without `[cluster]`.
    pub cluster_up: Family<InstanceLabel, Gauge>,
    /// Signals to the other instances that could not be sent.
    pub cluster_signals_lost: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    pub instance: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("deskbridge_gateway");
        let company = Arc::new(company::Metrics::default());
        company.register(&mut registry);
        let audit_written = Counter::default();
        registry.register(
            "audit_records_written",
            "Audit records written to the store",
            audit_written.clone(),
        );
        let audit_dropped = Family::<DropReason, Counter>::default();
        registry.register(
            "audit_records_dropped",
            "Audit records lost: the queue was full, or the store refused their batch",
            audit_dropped.clone(),
        );
        let audit_rows = Gauge::default();
        registry.register(
            "audit_rows",
            "Audit records kept in the store (counted at start and hourly, when old ones are pruned)",
            audit_rows.clone(),
        );
        let refusals = Family::<RefusalReason, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused before reaching a company and counted, not audited one by one: \
             unknown actions and conversations, open breakers, rate and stream limits",
            refusals.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "event_streams",
            "Event streams open (channel sessions and agents)",
            event_streams.clone(),
        );
        let cluster_up = Family::<InstanceLabel, Gauge>::default();
        registry.register(
            "cluster_up",
            "1 while the instance reaches the Redis it shares with the other instances, 0 while it does not",
            cluster_up.clone(),
        );
        let cluster_signals_lost = Counter::default();
        registry.register(
            "cluster_signals_lost",
            "Events and invalidations that could not be sent to the other instances (Redis unreachable)",
            cluster_signals_lost.clone(),
        );
        Self {
            registry,
            company,
            cluster_up,
            cluster_signals_lost,
            audit_written,
            audit_dropped,
            audit_rows,
            refusals,
            event_streams,
        }
    }
}

impl Metrics {
    pub fn audit_dropped(&self, reason: &'static str, count: usize) {
        self.audit_dropped
            .get_or_create(&DropReason { reason })
            .inc_by(count as u64);
    }

    pub fn refusal(&self, reason: &str) {
        self.refusals
            .get_or_create(&RefusalReason { reason: reason.into() })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The company's metrics are registered here under their old names.
    #[test]
    fn company_metrics_keep_their_names() {
        use company::metrics::{ActionLabels, ConnectionLabel};
        let metrics = Metrics::default();
        let company = &metrics.company;
        let acme = ConnectionLabel {
            connection: "acme".into(),
        };
        let action = ActionLabels {
            connection: "acme".into(),
            action: "getprofile".into(),
            outcome: "ok".into(),
        };
        company.actions.get_or_create(&action).inc();
        company.action_latency.get_or_create(&acme).observe(0.001);
        company.token_fetch("acme", "ok");
        company.token_cache_hits.inc();
        company.breaker_open.get_or_create(&acme).set(1);
        let text = metrics.render();
        for line in [
            "deskbridge_gateway_actions_total{connection=\"acme\",action=\"getprofile\",outcome=\"ok\"} 1",
            "deskbridge_gateway_action_latency_seconds_count{connection=\"acme\"} 1",
            "deskbridge_gateway_token_fetches_total{connection=\"acme\",outcome=\"ok\"} 1",
            "deskbridge_gateway_token_cache_hits_total 1",
            "deskbridge_gateway_breaker_open{connection=\"acme\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
