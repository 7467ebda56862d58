//! Prometheus metrics of the operator: reconciles, failures by reason, duration.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The CamelCase reason also used in conditions and Events.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    /// `sent`, or `unchanged` (not sent: see `tenant::applied`).
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    applies: Family<ApplyLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("truffles_operator");
        let reconciles = Counter::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let applies = Family::<ApplyLabels, Counter>::default();
        // 5 ms .. ~40 s
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "reconciles",
            "TrufflesClient reconciles",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles by reason",
            failures.clone(),
        );
        registry.register(
            "applies",
            "Desired objects of tenants: applied, or unchanged and not sent",
            applies.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            duration.clone(),
        );
        Self {
            registry,
            reconciles,
            applies,
            failures,
            duration,
        }
    }
}

impl Metrics {
    pub fn observe(&self, took: Duration, failure: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .get_or_create(&FailureLabels {
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// One desired object: sent to the API server, or unchanged and not.
    pub fn applied(&self, sent: bool) {
        let outcome = if sent { "sent" } else { "unchanged" };
        self.applies.get_or_create(&ApplyLabels { outcome }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_reason() {
        let metrics = Metrics::default();
        metrics.observe(Duration::from_millis(20), None);
        metrics.observe(Duration::from_millis(30), Some("SecretMissing"));
        let text = metrics.render();
        assert!(
            text.contains("truffles_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"truffles_operator_reconcile_failures_total{reason="SecretMissing"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("truffles_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
