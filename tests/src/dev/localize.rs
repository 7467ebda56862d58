//! A tenant's manifests made to run on one machine with no internet: every
//! SaaS endpoint the TrufflesClient names (ChatFlow, the managers' Telegram,
//! CRMs, a client's webhook, SMTP) is pointed at a local stand-in, knowledge
//! goes to Qdrant Edge with the local embedding model (a tenant on a Qdrant
//! server gets the tests' Qdrant server instead), and the LLM is used only
//! when a key is given (otherwise the bot is retrieval-only). Pure functions
//! over the manifests as written; the stand-ins are started by the caller.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::managers::Service;

/// Local choices, mostly from the environment of `make run`.
#[derive(Clone, Debug, Default)]
pub struct LocalOptions {
    /// The local embedding server (OpenAI-compatible, multilingual-e5-small).
    pub embeddings_url: String,
    /// With a key the bot uses the LLM; without one it answers from retrieval.
    pub openai_api_key: Option<String>,
    pub openai_base_url: Option<String>,
    /// A real ChatFlow instance instead of the local stand-in.
    pub chatflow: Option<RealChatflow>,
}

#[derive(Clone, Debug, Default)]
pub struct RealChatflow {
    pub token: String,
    pub instance_id: Option<String>,
    pub api_url: Option<String>,
}

impl LocalOptions {
    /// `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `CHATFLOW_TOKEN`,
    /// `CHATFLOW_INSTANCE_ID`, `CHATFLOW_API_URL` (empty counts as unset).
    pub fn from_env(embeddings_url: String) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            embeddings_url,
            openai_api_key: var("OPENAI_API_KEY"),
            openai_base_url: var("OPENAI_BASE_URL"),
            chatflow: var("CHATFLOW_TOKEN").map(|token| RealChatflow {
                token,
                instance_id: var("CHATFLOW_INSTANCE_ID"),
                api_url: var("CHATFLOW_API_URL"),
            }),
        }
    }
}

/// Which handover adapter of the spec a stand-in serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Adapter,
    Fallback,
}

impl Slot {
    fn field(self) -> &'static str {
        match self {
            Slot::Adapter => "adapter",
            Slot::Fallback => "fallback",
        }
    }
}

/// A stand-in one tenant needs, with the credentials it must check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    Chatflow {
        token: String,
        instance_id: String,
    },
    /// The customers' Telegram bot (`channels.telegram`).
    CustomerBot {
        token: String,
    },
    Telegram {
        slot: Slot,
        token: String,
        chat: i64,
    },
    Service {
        slot: Slot,
        service: Service,
        secret: String,
    },
    Smtp {
        slot: Slot,
    },
    /// `vectorStore.backend: Qdrant`: the test environment's Qdrant server.
    Qdrant,
}

/// Where the started stand-ins listen.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    pub chatflow: Option<String>,
    pub customer_bot: Option<String>,
    /// The Qdrant server's gRPC URL and API key.
    pub qdrant: Option<(String, String)>,
    /// Base URL (Telegram, CRMs, webhook) or `host:port` (SMTP) per slot.
    pub handover: Vec<(Slot, String)>,
}

/// The tenant's TrufflesClient document.
pub fn client(docs: &[Value]) -> Result<&Value> {
    let mut clients = docs.iter().filter(|d| d["kind"] == "TrufflesClient");
    let first = clients
        .next()
        .context("no TrufflesClient in the manifests")?;
    if clients.next().is_some() {
        bail!("one TrufflesClient per manifest file, please");
    }
    Ok(first)
}

fn client_mut(docs: &mut [Value]) -> Result<&mut Value> {
    docs.iter_mut()
        .find(|d| d["kind"] == "TrufflesClient")
        .context("no TrufflesClient in the manifests")
}

/// The value of `key` in the Secret `name` of the manifests (`stringData` or
/// base64 `data`).
pub fn secret_value(docs: &[Value], name: &str, key: &str) -> Option<String> {
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)?;
    if let Some(v) = secret["stringData"][key].as_str() {
        return Some(v.to_owned());
    }
    // The typed Secret decodes `data` from base64.
    let typed: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret.clone()).ok()?;
    String::from_utf8(typed.data?.remove(key)?.0).ok()
}

fn set_secret_value(docs: &mut [Value], name: &str, key: &str, value: &str) -> Result<()> {
    let secret = docs
        .iter_mut()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)
        .with_context(|| format!("Secret {name} is not in the manifests"))?;
    if let Some(data) = secret["data"].as_object_mut() {
        data.remove(key);
    }
    secret["stringData"][key] = json!(value);
    Ok(())
}

/// The stand-ins the tenant's manifests need.
pub fn needs(docs: &[Value], options: &LocalOptions) -> Result<Vec<Need>> {
    let spec = &client(docs)?["spec"];
    let mut out = Vec::new();
    let whatsapp = &spec["channels"]["whatsapp"];
    if whatsapp.is_object() && options.chatflow.is_none() {
        let r = &whatsapp["tokenSecretRef"];
        let (name, key) = (str_of(&r["name"])?, str_of(&r["key"])?);
        out.push(Need::Chatflow {
            token: secret_value(docs, name, key).with_context(|| {
                format!("the ChatFlow token {name}/{key} is not in the manifests")
            })?,
            instance_id: str_of(&whatsapp["instanceId"])?.to_owned(),
        });
    }
    let telegram = &spec["channels"]["telegram"];
    if telegram.is_object() {
        let r = &telegram["botTokenSecretRef"];
        let (name, key) = (str_of(&r["name"])?, str_of(&r["key"])?);
        out.push(Need::CustomerBot {
            token: secret_value(docs, name, key).with_context(|| {
                format!("the Telegram bot token {name}/{key} is not in the manifests")
            })?,
        });
    }
    let store = &spec["knowledge"]["vectorStore"];
    if store["backend"] == "Qdrant" {
        out.push(Need::Qdrant);
    }
    for slot in [Slot::Adapter, Slot::Fallback] {
        let adapter = &spec["handover"][slot.field()];
        if !adapter.is_object() {
            continue;
        }
        let secret = |key: &str| {
            adapter["secretRef"]["name"]
                .as_str()
                .and_then(|name| secret_value(docs, name, key))
                .unwrap_or_default()
        };
        let need = match adapter["type"].as_str().unwrap_or_default() {
            "telegram" => Need::Telegram {
                slot,
                token: secret("token"),
                chat: str_of(&adapter["telegram"]["chatId"])?
                    .parse()
                    .context("telegram.chatId is not a number")?,
            },
            "webhook" | "custom" => Need::Service {
                slot,
                service: Service::Webhook,
                secret: secret("signingKey"),
            },
            kind @ ("bitrix" | "amocrm" | "hubspot") => Need::Service {
                slot,
                service: match kind {
                    "bitrix" => Service::Bitrix,
                    "amocrm" => Service::Amocrm,
                    _ => Service::Hubspot,
                },
                secret: secret("token"),
            },
            "email" => Need::Smtp { slot },
            _ => continue,
        };
        out.push(need);
    }
    Ok(out)
}

fn str_of(v: &Value) -> Result<&str> {
    v.as_str()
        .with_context(|| format!("expected a string, found {v}"))
}

/// Rewrites the manifests for this machine (see the module comment).
pub fn localize(docs: &mut [Value], endpoints: &Endpoints, options: &LocalOptions) -> Result<()> {
    let (llm_secret, chatflow_secret, qdrant_secret) = {
        let spec = &client(docs)?["spec"];
        let name_key = |r: &Value| {
            Some((
                r["name"].as_str()?.to_owned(),
                r["key"].as_str()?.to_owned(),
            ))
        };
        (
            name_key(&spec["llm"]["apiKeySecretRef"]),
            name_key(&spec["channels"]["whatsapp"]["tokenSecretRef"]),
            name_key(&spec["knowledge"]["vectorStore"]["apiKeySecretRef"]),
        )
    };
    // Credentials the developer gave go into the tenant's own Secrets.
    match (&options.openai_api_key, &llm_secret) {
        (Some(key), Some((name, k))) => set_secret_value(docs, name, k, key)?,
        (Some(_), None) => {
            bail!("OPENAI_API_KEY is given but the tenant names no llm.apiKeySecretRef")
        }
        _ => {}
    }
    if let (Some(real), Some((name, key))) = (&options.chatflow, &chatflow_secret) {
        set_secret_value(docs, name, key, &real.token)?;
    }
    // The local Qdrant server's key, in the Secret the tenant names for it, or
    // in the manifests' first Secret when it names none.
    let qdrant_key_ref = match (&endpoints.qdrant, qdrant_secret) {
        (Some((_, api_key)), named) => {
            let (name, key) = match named {
                Some(named) => named,
                None => {
                    let first = docs
                        .iter()
                        .find(|d| d["kind"] == "Secret")
                        .and_then(|d| d["metadata"]["name"].as_str())
                        .context("a tenant on a Qdrant server needs a Secret in its manifests for the server's API key")?;
                    (first.to_owned(), "qdrant-api-key".to_owned())
                }
            };
            set_secret_value(docs, &name, &key, api_key)?;
            Some(json!({"name": name, "key": key}))
        }
        (None, _) => None,
    };

    let spec = &mut client_mut(docs)?["spec"];
    if spec["channels"]["whatsapp"].is_object() {
        let whatsapp = &mut spec["channels"]["whatsapp"];
        match (&options.chatflow, &endpoints.chatflow) {
            (Some(real), _) => {
                if let Some(id) = &real.instance_id {
                    whatsapp["instanceId"] = json!(id);
                }
                if let Some(url) = &real.api_url {
                    whatsapp["apiBaseUrl"] = json!(url);
                }
            }
            (None, Some(url)) => whatsapp["apiBaseUrl"] = json!(url),
            (None, None) => bail!("no ChatFlow stand-in was started"),
        }
    }
    if let Some(url) = &endpoints.customer_bot {
        spec["channels"]["telegram"]["apiBaseUrl"] = json!(url);
    }
    let llm = &mut spec["llm"];
    if options.openai_api_key.is_none() {
        // No key: no LLM (retrieval-only answers, handover when unsure).
        if let Some(o) = llm.as_object_mut() {
            o.remove("apiKeySecretRef");
            o.remove("baseUrl");
        }
    } else if let Some(url) = &options.openai_base_url {
        llm["baseUrl"] = json!(url);
    }
    llm["embeddingBaseUrl"] = json!(options.embeddings_url);
    llm["embeddingModel"] = json!("multilingual-e5-small");
    llm["embeddingDimensions"] = json!(384);
    // A tenant on a Qdrant server gets the local one; the others keep Edge.
    match (&endpoints.qdrant, qdrant_key_ref) {
        (Some((url, _)), Some(key_ref)) => {
            spec["knowledge"]["vectorStore"]["url"] = json!(url);
            spec["knowledge"]["vectorStore"]["apiKeySecretRef"] = key_ref;
        }
        _ => spec["knowledge"]["vectorStore"] = json!({"backend": "Edge"}),
    }
    // No public HTTPS address: the runtime reads Telegram by long polling.
    spec["ingress"] = json!({"enabled": false});
    // One process per tenant: the supervisor plays a one-node kubelet (and
    // Qdrant Edge opens its shard from one process).
    spec["runtime"]["replicas"] = json!(1);

    for (slot, url) in &endpoints.handover {
        let adapter = &mut spec["handover"][slot.field()];
        match adapter["type"].as_str().unwrap_or_default() {
            "telegram" => adapter["telegram"]["apiBaseUrl"] = json!(url),
            "webhook" | "custom" => adapter["webhook"]["url"] = json!(url),
            "bitrix" | "amocrm" | "hubspot" => adapter["crm"]["baseUrl"] = json!(url),
            "email" => {
                let (host, port) = url.rsplit_once(':').context("SMTP endpoint is host:port")?;
                let email = &mut adapter["email"];
                email["smtpHost"] = json!(host);
                email["smtpPort"] = json!(port.parse::<u16>()?);
                email["tls"] = json!("None");
            }
            other => bail!("no stand-in for handover type {other:?}"),
        }
    }
    Ok(())
}

/// Gives the tenant another name (its Subscription follows; the Secrets and
/// ConfigMaps it refers to keep theirs). Tenant names are PostgreSQL roles,
/// which are shared by every database of a server, so tests that provision
/// the same example side by side need names of their own.
pub fn rename(docs: &mut [Value], name: &str) -> Result<()> {
    let client = client_mut(docs)?;
    let old = str_of(&client["metadata"]["name"])?.to_owned();
    client["metadata"]["name"] = json!(name);
    let confirm = &mut client["spec"]["deletion"]["confirmPurge"];
    if confirm.as_str() == Some(&old) {
        *confirm = json!(name);
    }
    for sub in docs
        .iter_mut()
        .filter(|d| d["kind"] == "Subscription" && d["spec"]["clientRef"]["name"] == old.as_str())
    {
        sub["metadata"]["name"] = json!(name);
        sub["spec"]["clientRef"]["name"] = json!(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flower_shop() -> Vec<Value> {
        let path = crate::workspace_root().join("examples/tenants/flower-shop.yaml");
        crate::read_manifests(&path).expect("the example parses")
    }

    fn options() -> LocalOptions {
        LocalOptions {
            embeddings_url: "http://127.0.0.1:9/v1".into(),
            ..LocalOptions::default()
        }
    }

    #[test]
    fn the_flower_shop_needs_chatflow_and_telegram_stand_ins() {
        let needs = needs(&flower_shop(), &options()).expect("needs");
        assert_eq!(
            needs,
            [
                Need::Chatflow {
                    token: "replace-with-chatflow-token".into(),
                    instance_id: "inst-7701-flowers".into()
                },
                Need::Telegram {
                    slot: Slot::Adapter,
                    token: "replace-with-telegram-bot-token".into(),
                    chat: -1_002_233_445_566
                },
            ]
        );
    }

    #[test]
    fn without_a_key_the_bot_is_retrieval_only_and_local() {
        let mut docs = flower_shop();
        let endpoints = Endpoints {
            chatflow: Some("http://127.0.0.1:1".into()),
            handover: vec![(Slot::Adapter, "http://127.0.0.1:2".into())],
            ..Endpoints::default()
        };
        localize(&mut docs, &endpoints, &options()).expect("localizes");
        let spec = &client(&docs).expect("client")["spec"];
        assert_eq!(
            spec["channels"]["whatsapp"]["apiBaseUrl"],
            "http://127.0.0.1:1"
        );
        assert_eq!(
            spec["handover"]["adapter"]["telegram"]["apiBaseUrl"],
            "http://127.0.0.1:2"
        );
        assert!(spec["llm"]["apiKeySecretRef"].is_null());
        assert_eq!(spec["llm"]["embeddingBaseUrl"], "http://127.0.0.1:9/v1");
        assert_eq!(spec["ingress"]["enabled"], false);
        // The result is still a valid spec.
        serde_json::from_value::<truffles_crds::TrufflesClientSpec>(spec.clone())
            .expect("a valid spec");
    }

    #[test]
    fn given_credentials_go_into_the_tenants_secrets() {
        let mut docs = flower_shop();
        let options = LocalOptions {
            openai_api_key: Some("sk-local".into()),
            chatflow: Some(RealChatflow {
                token: "cf-real".into(),
                instance_id: Some("inst-real".into()),
                api_url: None,
            }),
            ..options()
        };
        assert!(
            !needs(&docs, &options)
                .expect("needs")
                .iter()
                .any(|n| matches!(n, Need::Chatflow { .. })),
            "a real ChatFlow needs no stand-in"
        );
        let endpoints = Endpoints {
            chatflow: None,
            handover: vec![],
            ..Endpoints::default()
        };
        localize(&mut docs, &endpoints, &options).expect("localizes");
        assert_eq!(
            secret_value(&docs, "flower-shop-credentials", "openai-api-key").as_deref(),
            Some("sk-local")
        );
        assert_eq!(
            secret_value(&docs, "flower-shop-credentials", "chatflow-token").as_deref(),
            Some("cf-real")
        );
        let spec = &client(&docs).expect("client")["spec"];
        assert_eq!(spec["channels"]["whatsapp"]["instanceId"], "inst-real");
        assert!(spec["llm"]["apiKeySecretRef"].is_object());
    }

    #[test]
    fn a_renamed_tenant_keeps_its_subscription_and_purge_confirmation() {
        let path = crate::workspace_root().join("examples/tenants/dental-clinic.yaml");
        let mut docs = crate::read_manifests(&path).expect("parses");
        rename(&mut docs, "smile-test").expect("renames");
        let tc = client(&docs).expect("client");
        assert_eq!(tc["metadata"]["name"], "smile-test");
        assert_eq!(tc["spec"]["deletion"]["confirmPurge"], "smile-test");
        let sub = docs
            .iter()
            .find(|d| d["kind"] == "Subscription")
            .expect("subscription");
        assert_eq!(sub["spec"]["clientRef"]["name"], "smile-test");
        // Referenced Secrets keep their names.
        assert_eq!(
            tc["spec"]["channels"]["whatsapp"]["tokenSecretRef"]["name"],
            "smile-dental-credentials"
        );
    }

    #[test]
    fn the_dental_clinic_gets_a_crm_and_an_smtp_stand_in() {
        let path = crate::workspace_root().join("examples/tenants/dental-clinic.yaml");
        let mut docs = crate::read_manifests(&path).expect("parses");
        let needs = needs(&docs, &options()).expect("needs");
        assert!(needs.contains(&Need::Service {
            slot: Slot::Adapter,
            service: Service::Bitrix,
            secret: "replace-with-bitrix-webhook-token".into()
        }));
        assert!(needs.contains(&Need::Smtp {
            slot: Slot::Fallback
        }));
        assert!(needs.contains(&Need::CustomerBot {
            token: "replace-with-customer-bot-token".into()
        }));
        assert!(needs.contains(&Need::Qdrant));
        let endpoints = Endpoints {
            chatflow: Some("http://127.0.0.1:1".into()),
            customer_bot: Some("http://127.0.0.1:4".into()),
            qdrant: Some(("http://127.0.0.1:5".into(), "k3y".into())),
            handover: vec![
                (Slot::Adapter, "http://127.0.0.1:3/rest/1/".into()),
                (Slot::Fallback, "127.0.0.1:2525".into()),
            ],
        };
        localize(&mut docs, &endpoints, &options()).expect("localizes");
        let spec = &client(&docs).expect("client")["spec"];
        assert_eq!(
            spec["channels"]["telegram"]["apiBaseUrl"],
            "http://127.0.0.1:4"
        );
        assert_eq!(spec["handover"]["fallback"]["email"]["smtpPort"], 2525);
        assert_eq!(spec["knowledge"]["vectorStore"]["backend"], "Qdrant");
        assert_eq!(
            spec["knowledge"]["vectorStore"]["url"],
            "http://127.0.0.1:5"
        );
        // The server's key goes into a Secret of the manifests, named by the spec.
        let key_ref = &spec["knowledge"]["vectorStore"]["apiKeySecretRef"];
        let (name, key) = (key_ref["name"].as_str(), key_ref["key"].as_str());
        assert_eq!(
            secret_value(&docs, name.expect("a name"), key.expect("a key")).as_deref(),
            Some("k3y")
        );
        serde_json::from_value::<truffles_crds::TrufflesClientSpec>(spec.clone())
            .expect("a valid spec");
    }
}
