//! The status a reconcile writes, computed from what it did (pure).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use truffles_crds::client::ClientPhase;
use truffles_crds::common::{SecretKeyRef, condition_type as ct};
use truffles_crds::{TrufflesClient, TrufflesClientStatus};

use super::error::Error;
use super::vectors::VectorStore;

/// What one reconcile achieved.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Everything is provisioned and applied.
    Provisioned {
        client_id: String,
        schema: String,
        webhook_secret: String,
        suspended: bool,
        /// Suspended by the Subscription's billing state, not by spec.state.
        billing_suspended: bool,
        vector_store: VectorStore,
        /// (available, reason, message) of the runtime Deployment.
        runtime: (bool, &'static str, String),
    },
    /// `spec.state: Deleted` was carried out.
    Retired { purged: bool },
    /// A step failed; the phase the resource had is kept.
    Failed {
        reason: &'static str,
        message: String,
        /// The condition of the step that failed, besides Ready.
        step: Option<&'static str>,
    },
}

impl Outcome {
    pub fn provisioned(
        client_id: String,
        schema: String,
        webhook_secret: String,
        suspended: bool,
        billing_suspended: bool,
        vector_store: VectorStore,
        deployment: &Deployment,
    ) -> Self {
        Outcome::Provisioned {
            client_id,
            schema,
            webhook_secret,
            suspended,
            billing_suspended,
            vector_store,
            runtime: runtime_availability(deployment, suspended),
        }
    }

    pub fn retired(purged: bool) -> Self {
        Outcome::Retired { purged }
    }

    pub fn failed(error: &Error) -> Self {
        let step = match error {
            Error::MissingSecret { .. } => Some(ct::SECRETS_READY),
            Error::Platform(_) => Some(ct::DATABASE_READY),
            Error::VectorStore(_) => Some(ct::KNOWLEDGE_READY),
            _ => None,
        };
        Outcome::Failed {
            reason: error.reason(),
            message: error.to_string(),
            step,
        }
    }

    /// The phase after this outcome, given the one before.
    pub fn phase(&self, previous: Option<ClientPhase>) -> ClientPhase {
        match self {
            Outcome::Provisioned {
                suspended: true, ..
            } => ClientPhase::Suspended,
            Outcome::Provisioned { .. } => ClientPhase::Active,
            Outcome::Retired { .. } => ClientPhase::Deleted,
            Outcome::Failed { .. } => previous.unwrap_or(ClientPhase::Onboarding),
        }
    }

    /// (reason, message) of the Event for entering `phase`.
    pub fn transition_event(&self, phase: ClientPhase) -> (&'static str, String) {
        match (self, phase) {
            (Outcome::Provisioned { webhook_secret, .. }, ClientPhase::Active) => (
                "Active",
                format!("the bot is live; the webhook URL is in Secret {webhook_secret}, key url"),
            ),
            (_, ClientPhase::Suspended) => ("Suspended", "the bot is off; data is kept".into()),
            (Outcome::Retired { purged: true }, _) => {
                ("Deleted", "runtime removed and data purged".into())
            }
            (Outcome::Retired { purged: false }, _) => {
                ("Deleted", "runtime removed; data retained".into())
            }
            _ => ("PhaseChanged", format!("phase {phase:?}")),
        }
    }
}

fn runtime_availability(deployment: &Deployment, suspended: bool) -> (bool, &'static str, String) {
    if suspended {
        return (false, "Suspended", "the runtime is scaled to zero".into());
    }
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    if available >= desired {
        (
            true,
            "MinimumReplicasAvailable",
            format!("{available}/{desired} replicas available"),
        )
    } else {
        (
            false,
            "ReplicasUnavailable",
            format!("{available}/{desired} replicas available"),
        )
    }
}

/// The full status for an outcome, keeping transition times of unchanged conditions.
pub fn build(tc: &TrufflesClient, outcome: &Outcome, now: Time) -> TrufflesClientStatus {
    let previous = tc.status.clone().unwrap_or_default();
    let generation = tc.metadata.generation;
    let phase = outcome.phase(previous.phase);
    let mut status = TrufflesClientStatus {
        phase: Some(phase),
        observed_generation: generation,
        conditions: previous.conditions.clone(),
        ..previous.clone()
    };
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        let condition = Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        };
        upsert_condition(&mut status.conditions, condition);
    };
    match outcome {
        Outcome::Provisioned {
            client_id,
            schema,
            webhook_secret,
            suspended,
            billing_suspended,
            vector_store,
            runtime,
        } => {
            set(
                ct::SECRETS_READY,
                true,
                "SecretsFound",
                "every Secret the spec references exists".into(),
            );
            set(
                ct::DATABASE_READY,
                true,
                "SchemaProvisioned",
                format!("schema {schema} is migrated; its role has access to it only"),
            );
            match vector_store {
                VectorStore::Embedded => set(
                    ct::KNOWLEDGE_READY,
                    true,
                    "EmbeddedStore",
                    "Qdrant Edge runs in the runtime on its volume: nothing to provision".into(),
                ),
                VectorStore::Collection { name, dimensions } => set(
                    ct::KNOWLEDGE_READY,
                    true,
                    "CollectionReady",
                    format!("Qdrant collection {name} exists ({dimensions}-dimensional, cosine)"),
                ),
            }
            let (registered, reason, message) =
                super::webhooks::condition(&super::webhooks::registrations(tc), webhook_secret);
            set(ct::WEBHOOK_REGISTERED, registered, reason, message);
            set(ct::RUNTIME_READY, runtime.0, runtime.1, runtime.2.clone());
            set(
                ct::SUSPENDED,
                *suspended,
                if *suspended {
                    "StateSuspended"
                } else {
                    "StateActive"
                },
                format!("spec.state is {:?}", tc.spec.state),
            );
            if *billing_suspended {
                set(
                    ct::READY,
                    false,
                    "BillingSuspended",
                    "the bot is off for billing and data is kept; record the payment in the Subscription's paidUntil to resume".into(),
                );
            } else if *suspended {
                set(
                    ct::READY,
                    false,
                    "Suspended",
                    "the bot is off and data is kept; set spec.state to Active to resume".into(),
                );
            } else {
                set(
                    ct::READY,
                    true,
                    "Provisioned",
                    "the tenant is provisioned and its runtime deployed".into(),
                );
            }
            status.billing_suspended = Some(*billing_suspended);
            status.client_id = Some(client_id.clone());
            status.schema = Some(schema.clone());
            status.collection = match vector_store {
                VectorStore::Collection { name, .. } => Some(name.clone()),
                VectorStore::Embedded => None,
            };
            status.webhook_url_secret_ref = Some(SecretKeyRef::new(webhook_secret.clone(), "url"));
            if previous.onboarded_at.is_none() {
                status.onboarded_at = Some(now.clone());
            }
            status.suspended_at = if *suspended {
                previous.suspended_at.or(Some(now.clone()))
            } else {
                None
            };
        }
        Outcome::Retired { purged } => {
            let message = if *purged {
                "spec.state is Deleted: the runtime was removed and all data purged"
            } else {
                "spec.state is Deleted: the runtime was removed; data is retained (deletion policy Retain)"
            };
            set(ct::READY, false, "Deleted", message.into());
            status.webhook_url_secret_ref = None;
            if *purged {
                status.schema = None;
                status.collection = None;
            }
        }
        Outcome::Failed {
            reason,
            message,
            step,
        } => {
            if let Some(step) = step {
                set(step, false, reason, message.clone());
            }
            set(ct::READY, false, reason, message.clone());
        }
    }
    status
}

/// Replaces the condition of the same type, keeping its transition time when its
/// status did not change.
fn upsert_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn tc() -> TrufflesClient {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "truffles.kz/v1alpha1", "kind": "TrufflesClient",
            "metadata": {"name": "shop", "namespace": "t", "generation": 3},
            "spec": {
                "companyName": "Shop",
                "channels": {"whatsapp": {"instanceId": "i", "tokenSecretRef": {"name": "s", "key": "k"}}},
                "handover": {"adapter": {"type": "whatsappWeb"}}
            }
        }))
        .expect("fixture")
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid time"))
    }

    fn provisioned(suspended: bool) -> Outcome {
        Outcome::Provisioned {
            client_id: "id-1".into(),
            schema: "tenant_shop".into(),
            webhook_secret: "shop-webhook".into(),
            suspended,
            billing_suspended: false,
            vector_store: VectorStore::Collection {
                name: "shop_knowledge".into(),
                dimensions: 1536,
            },
            runtime: (
                false,
                "ReplicasUnavailable",
                "0/1 replicas available".into(),
            ),
        }
    }

    fn condition<'a>(s: &'a TrufflesClientStatus, type_: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn provisioned_tenant_is_active_and_ready_with_observed_generation() {
        let status = build(&tc(), &provisioned(false), at(100));
        assert_eq!(status.phase, Some(ClientPhase::Active));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(condition(&status, ct::READY).status, "True");
        assert_eq!(condition(&status, ct::READY).observed_generation, Some(3));
        assert_eq!(
            status.webhook_url_secret_ref,
            Some(SecretKeyRef::new("shop-webhook", "url"))
        );
        assert_eq!(status.client_id.as_deref(), Some("id-1"));
        let knowledge = condition(&status, ct::KNOWLEDGE_READY);
        assert_eq!(
            (knowledge.status.as_str(), knowledge.reason.as_str()),
            ("True", "CollectionReady")
        );
        assert!(knowledge.message.contains("shop_knowledge"));
        assert_eq!(status.collection.as_deref(), Some("shop_knowledge"));
    }

    #[test]
    fn suspended_tenant_is_not_ready_and_says_how_to_resume() {
        let status = build(&tc(), &provisioned(true), at(100));
        assert_eq!(status.phase, Some(ClientPhase::Suspended));
        let ready = condition(&status, ct::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Suspended")
        );
        assert!(ready.message.contains("spec.state to Active"));
        assert!(status.suspended_at.is_some());
    }

    #[test]
    fn a_failure_keeps_the_phase_and_names_the_failed_step() {
        let mut active = tc();
        active.status = Some(build(&active, &provisioned(false), at(100)));
        let error = Error::MissingSecret {
            namespace: "t".into(),
            name: "s".into(),
            key: "k".into(),
        };
        let status = build(&active, &Outcome::failed(&error), at(200));
        assert_eq!(status.phase, Some(ClientPhase::Active));
        let secrets = condition(&status, ct::SECRETS_READY);
        assert_eq!(
            (secrets.status.as_str(), secrets.reason.as_str()),
            ("False", "SecretMissing")
        );
        assert_eq!(condition(&status, ct::READY).reason, "SecretMissing");
        // Unaffected conditions keep their transition time.
        assert_eq!(
            condition(&status, ct::DATABASE_READY).last_transition_time,
            at(100)
        );
        assert_eq!(condition(&status, ct::READY).last_transition_time, at(200));
    }

    #[test]
    fn a_new_tenant_that_fails_is_onboarding() {
        let error = Error::InvalidSpec("bad".into());
        let status = build(&tc(), &Outcome::failed(&error), at(1));
        assert_eq!(status.phase, Some(ClientPhase::Onboarding));
        assert_eq!(condition(&status, ct::READY).reason, "InvalidSpec");
    }
}
