//! The tenant's NetworkPolicy: who may reach its pods, and where they may go.
//!
//! Ingress: the public port from the ingress controller's and monitoring's
//! namespaces; the admin port from the tenant's own CronJobs and the
//! platform's namespaces. Egress: DNS, the tenant's own pods, the platform's
//! namespaces (PostgreSQL, Redis, Qdrant), ranges the operator allows (a
//! database outside the cluster), and the public internet — never private
//! ranges (other tenants' pods, cluster Services) or link-local metadata.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{ADMIN_PORT, CLIENT_LABEL, RUNTIME_PORT};

/// The operator's network settings (chart values `networkPolicy.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Namespaces of the ingress controller: the public port.
    pub ingress_namespaces: Vec<String>,
    /// Namespaces of Prometheus: the public port (/metrics).
    pub monitoring_namespaces: Vec<String>,
    /// Namespaces of the platform (operator, PostgreSQL, Redis, Qdrant):
    /// the admin port, and egress to every pod there.
    pub platform_namespaces: Vec<String>,
    /// Private ranges, closed to egress except through the rules above.
    pub private_cidrs: Vec<String>,
    /// Ranges opened to egress anyway (a managed database's subnet).
    pub egress_cidrs: Vec<String>,
    /// Special ranges the runtime's guarded fetcher (customers' media links,
    /// URL sources) may reach anyway; none by default.
    pub fetch_allow_cidrs: Vec<String>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            ingress_namespaces: vec!["ingress-nginx".into()],
            monitoring_namespaces: vec!["monitoring".into()],
            platform_namespaces: vec!["truffles-system".into()],
            private_cidrs: PRIVATE_CIDRS.iter().map(|c| (*c).to_owned()).collect(),
            egress_cidrs: Vec::new(),
            fetch_allow_cidrs: Vec::new(),
        }
    }
}

/// RFC 1918, carrier-grade NAT, and their IPv6 counterparts (unique local).
pub const PRIVATE_CIDRS: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];
/// Link-local (cloud metadata at 169.254.169.254) and loopback: never.
const ALWAYS_CLOSED: [&str; 3] = ["169.254.0.0/16", "127.0.0.0/8", "fe80::/10"];

fn namespaces(names: &[String]) -> impl Iterator<Item = NetworkPolicyPeer> + '_ {
    names.iter().map(|ns| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                ns.clone(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    })
}

fn tenant_pods(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(CLIENT_LABEL.into(), name.into())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    }
}

fn cidr(block: &str, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: block.into(),
            except: (!except.is_empty()).then_some(except),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The policy of tenant `name`, covering all of its pods (runtime and CronJobs).
pub fn network_policy(name: &str, metadata: ObjectMeta, net: &NetworkSettings) -> NetworkPolicy {
    let closed = |ipv4: bool| -> Vec<String> {
        net.private_cidrs
            .iter()
            .map(String::as_str)
            .chain(ALWAYS_CLOSED)
            .filter(|c| c.contains(':') != ipv4)
            .map(str::to_owned)
            .collect()
    };
    let public = NetworkPolicyIngressRule {
        from: Some(
            namespaces(&net.ingress_namespaces)
                .chain(namespaces(&net.monitoring_namespaces))
                .collect(),
        ),
        ports: Some(vec![port(RUNTIME_PORT, "TCP")]),
    };
    let admin = NetworkPolicyIngressRule {
        from: Some(
            std::iter::once(tenant_pods(name))
                .chain(namespaces(&net.platform_namespaces))
                .collect(),
        ),
        ports: Some(vec![port(ADMIN_PORT, "TCP")]),
    };
    let dns = NetworkPolicyEgressRule {
        to: None,
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    };
    let inside = NetworkPolicyEgressRule {
        to: Some(
            std::iter::once(tenant_pods(name))
                .chain(namespaces(&net.platform_namespaces))
                .chain(net.egress_cidrs.iter().map(|c| cidr(c, vec![])))
                .collect(),
        ),
        ports: None,
    };
    let internet = NetworkPolicyEgressRule {
        to: Some(vec![
            cidr("0.0.0.0/0", closed(true)),
            cidr("::/0", closed(false)),
        ]),
        ports: None,
    };
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(CLIENT_LABEL.into(), name.into())])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![public, admin]),
            egress: Some(vec![dns, inside, internet]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_tenants_and_metadata_are_closed_and_the_admin_port_is_internal() {
        let policy = network_policy("shop", ObjectMeta::default(), &NetworkSettings::default());
        let spec = policy.spec.expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        // The internet rule excludes private ranges and link-local metadata.
        let internet = &json["egress"][2]["to"][0]["ipBlock"];
        assert_eq!(internet["cidr"], "0.0.0.0/0");
        let except: Vec<&str> = internet["except"]
            .as_array()
            .expect("except")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for closed in [
            "10.0.0.0/8",
            "169.254.0.0/16",
            "127.0.0.0/8",
            "192.168.0.0/16",
        ] {
            assert!(except.contains(&closed), "{closed} closed: {except:?}");
        }
        assert!(
            json["egress"][2]["to"][1]["ipBlock"]["except"]
                .as_array()
                .is_some_and(|e| e.iter().any(|c| c == "fe80::/10"))
        );
        // The admin port: the tenant's own pods and the platform only.
        let admin = &json["ingress"][1];
        assert_eq!(admin["ports"][0]["port"], ADMIN_PORT);
        assert_eq!(
            admin["from"][0]["podSelector"]["matchLabels"][CLIENT_LABEL],
            "shop"
        );
        assert_eq!(admin["from"].as_array().map(Vec::len), Some(2));
        // The public port: the ingress controller and monitoring only.
        let public = &json["ingress"][0];
        assert_eq!(public["ports"][0]["port"], RUNTIME_PORT);
        assert_eq!(
            public["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ingress-nginx"
        );
    }
}
