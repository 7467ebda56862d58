//! Validate step: rules the CRD schema cannot express.

use kube::ResourceExt;
use truffles_crds::TrufflesClient;
use truffles_crds::client::VectorBackend;

/// A spec the schema admits but the operator cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// Rules the CRD schema cannot express (they span unrelated fields).
pub fn validate(tc: &TrufflesClient) -> Result<(), InvalidSpec> {
    let spec = &tc.spec;
    if spec.knowledge.vector_store.backend == VectorBackend::Edge && spec.runtime.replicas > 1 {
        return Err(InvalidSpec(format!(
            "runtime.replicas is {} but the Edge vector store lives on one pod's volume: use replicas 1 or vectorStore.backend Qdrant",
            spec.runtime.replicas
        )));
    }
    if let Some(topic) = spec.handover.topics.iter().find(|t| {
        !truffles_crds::client::BUILT_IN_HANDOVER_TOPICS.contains(&t.name.as_str())
            && t.examples.is_empty()
    }) {
        return Err(InvalidSpec(format!(
            "handover.topics: {:?} is not a built-in topic ({}) and has no examples to match it by",
            topic.name,
            truffles_crds::client::BUILT_IN_HANDOVER_TOPICS.join(", ")
        )));
    }
    let rotations = super::custody::rotation_requests(tc.annotations());
    if let Some(message) = super::custody::unknown_rotation(&rotations) {
        return Err(InvalidSpec(message));
    }
    Ok(())
}

/// What a spec may choose where it crosses the tenant boundary, set by the
/// platform (operator settings): whoever may write a TrufflesClient must not
/// run another image, inject Ingress configuration, or send a key from a
/// referenced Secret to a server of theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boundary {
    /// Image repositories (prefixes) a spec may name; empty: only the
    /// repository of the operator's default image.
    pub images: Vec<String>,
    /// Ingress annotation keys (prefixes) a spec may set; snippet
    /// annotations (arbitrary controller configuration) never.
    pub ingress_annotations: Vec<String>,
    /// Hosts the URLs that receive a key (LLM, embeddings, Qdrant, the
    /// channels' APIs) may point at; empty: any host.
    pub api_hosts: Vec<String>,
}

/// Ingress annotations a spec may set when the platform lists none.
pub const DEFAULT_INGRESS_ANNOTATIONS: [&str; 5] = [
    "cert-manager.io/",
    "nginx.ingress.kubernetes.io/proxy-body-size",
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/limit-",
    "nginx.ingress.kubernetes.io/whitelist-source-range",
];

/// The repository of an image reference (`registry/name` without tag or digest).
fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    }
}

/// The spec's boundary-crossing fields against the platform's settings.
pub fn boundary(
    tc: &TrufflesClient,
    settings: &Boundary,
    default_image: &str,
) -> Result<(), InvalidSpec> {
    let spec = &tc.spec;
    if let Some(image) = &spec.runtime.image {
        let allowed: Vec<&str> = if settings.images.is_empty() {
            vec![repository(default_image)]
        } else {
            settings.images.iter().map(String::as_str).collect()
        };
        if !allowed
            .iter()
            .any(|a| repository(image) == *a || image.starts_with(&format!("{a}/")))
        {
            return Err(InvalidSpec(format!(
                "runtime.image {image:?} is not an image the platform allows (repositories: {})",
                allowed.join(", ")
            )));
        }
    }
    let allowed: Vec<&str> = if settings.ingress_annotations.is_empty() {
        DEFAULT_INGRESS_ANNOTATIONS.to_vec()
    } else {
        settings
            .ingress_annotations
            .iter()
            .map(String::as_str)
            .collect()
    };
    for key in spec.ingress.annotations.keys() {
        if key.contains("snippet") || !allowed.iter().any(|a| key.starts_with(a)) {
            return Err(InvalidSpec(format!(
                "ingress.annotations {key:?} is not an annotation the platform allows ({})",
                allowed.join(", ")
            )));
        }
    }
    if !settings.api_hosts.is_empty() {
        let channels = &spec.channels;
        let urls = [
            ("llm.baseUrl", spec.llm.base_url.as_deref()),
            (
                "llm.embeddingBaseUrl",
                spec.llm.embedding_base_url.as_deref(),
            ),
            (
                "knowledge.vectorStore.url",
                spec.knowledge.vector_store.url.as_deref(),
            ),
            (
                "channels.whatsapp.apiBaseUrl",
                channels.whatsapp.as_ref().map(|c| c.api_base_url.as_str()),
            ),
            (
                "channels.telegram.apiBaseUrl",
                channels.telegram.as_ref().map(|c| c.api_base_url.as_str()),
            ),
            (
                "channels.instagram.apiBaseUrl",
                channels.instagram.as_ref().map(|c| c.api_base_url.as_str()),
            ),
        ];
        for (field, url) in urls {
            let Some(url) = url else { continue };
            let host = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            if !settings.api_hosts.contains(&host) {
                return Err(InvalidSpec(format!(
                    "{field} points at {host:?}, which is not a host the platform sends keys to ({})",
                    settings.api_hosts.join(", ")
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tenant::test_client as client;

    const DEFAULT: &str = "ghcr.io/truffles-kz/truffles-bot:0.1.0";

    #[test]
    fn a_topic_of_the_tenants_own_needs_examples() {
        let handover = |topics: serde_json::Value| {
            client(
                serde_json::json!({"handover": {"adapter": {"type": "whatsappWeb"}, "topics": topics}}),
            )
        };
        assert!(validate(&handover(serde_json::json!([{"name": "payment"}]))).is_ok());
        assert!(validate(&handover(serde_json::json!([]))).is_ok());
        assert!(
            validate(&handover(serde_json::json!([
                {"name": "warranty", "examples": ["Гарантия закончилась, что делать?"]}
            ])))
            .is_ok()
        );
        let err = validate(&handover(serde_json::json!([{"name": "warranty"}])))
            .expect_err("no examples");
        assert!(err.0.contains("\"warranty\""), "{err}");
    }

    #[test]
    fn only_the_platforms_images_run() {
        let ok = client(
            serde_json::json!({"runtime": {"image": "ghcr.io/truffles-kz/truffles-bot:0.2.0"}}),
        );
        assert!(boundary(&ok, &Boundary::default(), DEFAULT).is_ok());
        for image in [
            "evil.io/miner:1",
            "ghcr.io/truffles-kz/truffles-bot-evil:1",
            "localhost:5000/x",
        ] {
            let tc = client(serde_json::json!({"runtime": {"image": image}}));
            let e = boundary(&tc, &Boundary::default(), DEFAULT).expect_err(image);
            assert!(e.0.contains("runtime.image"), "{e}");
        }
        assert_eq!(repository("registry:5000/a/b:1"), "registry:5000/a/b");
        assert_eq!(repository("a/b@sha256:00"), "a/b");
    }

    #[test]
    fn snippets_and_unlisted_annotations_are_refused() {
        let ok = client(serde_json::json!({"ingress": {"enabled": true, "host": "h",
            "annotations": {"cert-manager.io/cluster-issuer": "le"}}}));
        assert!(boundary(&ok, &Boundary::default(), DEFAULT).is_ok());
        for key in [
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "nginx.ingress.kubernetes.io/server-snippet",
            "nginx.ingress.kubernetes.io/auth-url",
        ] {
            let tc = client(serde_json::json!({"ingress": {"enabled": true, "host": "h",
                "annotations": {key: "x"}}}));
            assert!(
                boundary(&tc, &Boundary::default(), DEFAULT).is_err(),
                "{key}"
            );
        }
    }

    #[test]
    fn keys_go_only_to_the_platforms_api_hosts() {
        let settings = Boundary {
            api_hosts: vec!["api.openai.com".into()],
            ..Boundary::default()
        };
        let ok = client(serde_json::json!({"llm": {"baseUrl": "https://api.openai.com/v1"}}));
        assert!(boundary(&ok, &settings, DEFAULT).is_ok());
        let evil = client(serde_json::json!({"llm": {"baseUrl": "https://collector.example/v1"}}));
        let e = boundary(&evil, &settings, DEFAULT).expect_err("refused");
        assert!(
            e.0.contains("llm.baseUrl") && e.0.contains("collector.example"),
            "{e}"
        );
        assert!(
            boundary(&evil, &Boundary::default(), DEFAULT).is_ok(),
            "no list: any host"
        );
    }
}
