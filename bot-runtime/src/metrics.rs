//! Prometheus metrics of the runtime (docs/architecture.md, "Product rules": messages, response time, errors,
//! handovers, RAG hits), labelled by tenant so one dashboard covers all.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub tenant: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub tenant: String,
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub tenant: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverLabels {
    pub tenant: String,
    pub trigger: String,
}

pub struct Metrics {
    tenant: String,
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    handovers: Family<HandoverLabels, Counter>,
    rag_queries: Family<TenantLabels, Counter>,
    rag_hits: Family<TenantLabels, Counter>,
    response_seconds: Family<TenantLabels, Histogram>,
    backlog_events: Family<TenantLabels, Gauge>,
    backlog_oldest: Family<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Metrics {
    pub fn new(tenant: &str) -> Self {
        let mut registry = Registry::with_prefix("truffles");
        let messages = Family::default();
        registry.register(
            "messages",
            "Messages by direction (in, out)",
            messages.clone(),
        );
        let webhooks = Family::default();
        registry.register(
            "webhook_requests",
            "Webhook requests by outcome",
            webhooks.clone(),
        );
        let errors = Family::default();
        registry.register(
            "errors",
            "Errors by level (critical, warning, info)",
            errors.clone(),
        );
        let handovers = Family::default();
        registry.register(
            "handovers",
            "Handovers to a human by trigger",
            handovers.clone(),
        );
        let rag_queries = Family::default();
        registry.register("rag_queries", "Knowledge base lookups", rag_queries.clone());
        let rag_hits = Family::default();
        registry.register(
            "rag_hits",
            "Knowledge base lookups that found facts",
            rag_hits.clone(),
        );
        let response_seconds = Family::<TenantLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0])
        });
        registry.register(
            "response_seconds",
            "From the webhook's arrival to the reply being decided",
            response_seconds.clone(),
        );
        let backlog_events = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "inbox_backlog_events",
            "Customer events stored and not yet answered",
            backlog_events.clone(),
        );
        let backlog_oldest =
            Family::<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "inbox_oldest_event_seconds",
            "How long the oldest unanswered customer event has waited",
            backlog_oldest.clone(),
        );
        // Exported from the start, so an idle runtime reports an empty backlog.
        let labels = TenantLabels {
            tenant: tenant.to_owned(),
        };
        backlog_events.get_or_create(&labels).set(0);
        backlog_oldest.get_or_create(&labels).set(0.0);
        Self {
            tenant: tenant.to_owned(),
            backlog_events,
            backlog_oldest,
            registry,
            messages,
            webhooks,
            errors,
            handovers,
            rag_queries,
            rag_hits,
            response_seconds,
        }
    }

    fn tenant(&self) -> TenantLabels {
        TenantLabels {
            tenant: self.tenant.clone(),
        }
    }

    pub fn message(&self, direction: &str) {
        self.messages
            .get_or_create(&MessageLabels {
                tenant: self.tenant.clone(),
                direction: direction.into(),
            })
            .inc();
    }

    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                tenant: self.tenant.clone(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn error(&self, level: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                tenant: self.tenant.clone(),
                level: level.into(),
            })
            .inc();
    }

    pub fn handover(&self, trigger: &str) {
        self.handovers
            .get_or_create(&HandoverLabels {
                tenant: self.tenant.clone(),
                trigger: trigger.into(),
            })
            .inc();
    }

    pub fn rag(&self, hit: bool) {
        self.rag_queries.get_or_create(&self.tenant()).inc();
        if hit {
            self.rag_hits.get_or_create(&self.tenant()).inc();
        }
    }

    pub fn response_time(&self, seconds: f64) {
        self.response_seconds
            .get_or_create(&self.tenant())
            .observe(seconds);
    }

    /// The inbox's depth, as the scheduler or the gateway last counted it.
    pub fn backlog(&self, events: i64, oldest_seconds: f64) {
        self.backlog_events
            .get_or_create(&self.tenant())
            .set(events);
        self.backlog_oldest
            .get_or_create(&self.tenant())
            .set(oldest_seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
