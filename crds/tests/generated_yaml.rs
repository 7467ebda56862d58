//! The committed CRD YAML (what `kubectl apply` and the Helm chart install) must be
//! exactly what the Rust types generate, and the example tenants must parse.

use std::path::{Path, PathBuf};

use truffles_crds::{Subscription, TrufflesClient};

fn workspace_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn read(relative: &str) -> String {
    let path = workspace_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

const REGENERATE: &str = "regenerate with `make crds`";

#[test]
fn committed_crd_yaml_is_current() {
    let generated = truffles_crds::crds_yaml().expect("CRDs serialize");
    assert!(
        read(truffles_crds::CRDS_YAML_PATH) == generated,
        "{} is stale: {REGENERATE}",
        truffles_crds::CRDS_YAML_PATH
    );
}

#[test]
fn helm_chart_ships_the_same_crds() {
    let generated = truffles_crds::crds_yaml().expect("CRDs serialize");
    assert!(
        read("charts/truffles/crds/truffles.kz_crds.yaml") == generated,
        "the chart's CRDs are stale: {REGENERATE}"
    );
}

#[test]
fn example_tenants_parse_into_the_api_types() {
    let mut clients = 0;
    let mut subscriptions = 0;
    for name in [
        "examples/tenants/flower-shop.yaml",
        "examples/tenants/dental-clinic.yaml",
    ] {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&read(name)).expect("valid YAML");
        for doc in docs {
            match doc["kind"].as_str() {
                Some("TrufflesClient") => {
                    let tc: TrufflesClient =
                        serde_json::from_value(doc).expect("a valid TrufflesClient");
                    assert!(!tc.spec.company_name.is_empty());
                    clients += 1;
                }
                Some("Subscription") => {
                    let sub: Subscription =
                        serde_json::from_value(doc).expect("a valid Subscription");
                    assert_eq!(
                        sub.spec.client_ref.name,
                        sub.metadata.name.clone().unwrap_or_default()
                    );
                    subscriptions += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!((clients, subscriptions), (2, 2));
}

#[test]
fn schema_carries_the_validation_rules() {
    let yaml = truffles_crds::crds_yaml().expect("CRDs serialize");
    for rule in [
        "self.spec.deletion.policy != 'Purge'",
        "has(self.whatsapp) || has(self.telegram) || has(self.instagram)",
        "self.overlapTokens < self.maxTokens",
        "self.spec.clientRef.name == oldSelf.spec.clientRef.name",
    ] {
        assert!(yaml.contains(rule), "missing CEL rule {rule}");
    }
}
