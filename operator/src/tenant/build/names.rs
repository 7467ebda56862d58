//! Names of a tenant's objects, its URLs, and its Ingress.

use super::meta::RUNTIME_PORT;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::ResourceExt;
use truffles_crds::TrufflesClient;

/// Names of a tenant's objects, derived from the TrufflesClient name.
pub struct Names<'a>(pub &'a str);

impl Names<'_> {
    pub fn runtime(&self) -> String {
        format!("{}-runtime", self.0)
    }
    pub fn bot(&self) -> String {
        format!("{}-bot", self.0)
    }
    pub fn webhook(&self) -> String {
        format!("{}-webhook", self.0)
    }
    pub fn knowledge_sync(&self) -> String {
        format!("{}-knowledge-sync", self.0)
    }
    pub fn backup(&self) -> String {
        format!("{}-backup", self.0)
    }
    pub fn data_volume(&self) -> String {
        format!("{}-data", self.0)
    }
    pub fn backup_volume(&self) -> String {
        format!("{}-backups", self.0)
    }
}

/// The path the tenant's webhooks arrive on (before the secret segment). The
/// secret is not part of the Ingress, which many people can read.
pub fn webhook_path_prefix(name: &str) -> String {
    format!("/t/{name}/")
}

/// The tenant's public HTTPS base, when its Ingress has a host.
pub fn public_url(tc: &TrufflesClient) -> Option<String> {
    match (&tc.spec.ingress.enabled, &tc.spec.ingress.host) {
        (true, Some(host)) => Some(format!("https://{host}")),
        _ => None,
    }
}

/// The URL ChatFlow must be configured with. Contains the webhook secret.
pub fn webhook_url(tc: &TrufflesClient, webhook_secret: &str) -> String {
    let name = tc.name_any();
    let path = format!("{}webhook/{webhook_secret}", webhook_path_prefix(&name));
    match public_url(tc) {
        Some(base) => format!("{base}{path}"),
        None => {
            let ns = tc.namespace().unwrap_or_else(|| "default".into());
            format!(
                "http://{}.{ns}.svc.cluster.local:{RUNTIME_PORT}{path}",
                Names(&name).bot()
            )
        }
    }
}

/// The callback URL to enter in Meta's app dashboard for Instagram, when the
/// tenant has that channel and a public address. No secret in it: Meta signs
/// every delivery with the app secret.
pub fn instagram_callback_url(tc: &TrufflesClient) -> Option<String> {
    tc.spec.channels.instagram.as_ref()?;
    let base = public_url(tc)?;
    Some(format!(
        "{base}{}instagram",
        webhook_path_prefix(&tc.name_any())
    ))
}

pub fn ingress(tc: &TrufflesClient, name: &str) -> Option<IngressSpec> {
    let spec = &tc.spec.ingress;
    let host = spec.host.clone().filter(|_| spec.enabled)?;
    Some(IngressSpec {
        ingress_class_name: spec.class_name.clone(),
        tls: spec.tls_secret_name.as_ref().map(|secret| {
            vec![IngressTLS {
                hosts: Some(vec![host.clone()]),
                secret_name: Some(secret.clone()),
            }]
        }),
        rules: Some(vec![IngressRule {
            host: Some(host),
            http: Some(HTTPIngressRuleValue {
                paths: vec![HTTPIngressPath {
                    path: Some(webhook_path_prefix(name)),
                    path_type: "Prefix".into(),
                    backend: IngressBackend {
                        service: Some(IngressServiceBackend {
                            name: Names(name).bot(),
                            port: Some(ServiceBackendPort {
                                name: Some("http".into()),
                                number: None,
                            }),
                        }),
                        ..IngressBackend::default()
                    },
                }],
            }),
        }]),
        ..IngressSpec::default()
    })
}
