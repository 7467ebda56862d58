//! `TrufflesClient`: one business on the platform and its whole configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyRef, SecretRef, pattern};

/// A business ("tenant") served by Truffles. The operator provisions its database
/// schema, vector collection, secrets, runtime Deployment, Ingress and CronJobs.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "truffles.kz",
    version = "v1alpha1",
    kind = "TrufflesClient",
    doc = "A business (tenant) on Truffles: its channels, LLM, knowledge, handover, backup and runtime.",
    plural = "trufflesclients",
    singular = "trufflesclient",
    shortname = "tc",
    category = "truffles",
    namespaced,
    status = "TrufflesClientStatus",
    printcolumn = r#"{"name":"Company","type":"string","jsonPath":".spec.companyName"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.state"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Client ID","type":"string","priority":1,"jsonPath":".status.clientId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$')")
        .message("metadata.name must be 1-40 lowercase letters, digits or '-', starting with a letter: it names the tenant's database schema and vector collection"),
    validation = Rule::new("self.spec.deletion.policy != 'Purge' || (has(self.spec.deletion.confirmPurge) && self.spec.deletion.confirmPurge == self.metadata.name)")
        .message("deletion.policy Purge destroys all of the client's data: set deletion.confirmPurge to the resource's name to confirm"),
)]
#[serde(rename_all = "camelCase")]
pub struct TrufflesClientSpec {
    /// The business's name as customers and managers see it.
    #[schemars(length(min = 1, max = 200))]
    pub company_name: String,

    /// Desired lifecycle state. Active: the bot answers. Suspended: the bot stops,
    /// data is kept. Deleted: the runtime is removed and data handled per `deletion`.
    #[serde(default)]
    pub state: TenantState,

    /// Languages the bot speaks; the first is the default for new customers.
    #[serde(default = "default_languages")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m == l))").message("languages must not repeat"))]
    pub languages: Vec<Language>,

    /// IANA time zone of the business (reports, working hours, billing dates).
    #[serde(default = "default_timezone")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: String,

    /// What happens to the client's data when it is deleted.
    #[serde(default)]
    pub deletion: DeletionSpec,

    /// Where customers write from.
    pub channels: ChannelsSpec,

    /// Language model and embeddings. Without an API key the bot answers from the
    /// knowledge base only and hands over when unsure.
    #[serde(default)]
    pub llm: LlmSpec,

    /// The business's documents the bot answers from.
    #[serde(default)]
    pub knowledge: KnowledgeSpec,

    /// Overrides of the global prompt templates, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub prompts: Vec<PromptOverride>,

    /// How a conversation reaches a human manager and comes back to the bot.
    pub handover: HandoverSpec,

    /// Daily encrypted export of conversations.
    #[serde(default)]
    pub backup: BackupSpec,

    /// The tenant's bot-runtime Deployment.
    #[serde(default)]
    pub runtime: RuntimeSpec,

    /// How the webhook endpoints are exposed.
    #[serde(default)]
    pub ingress: IngressSpec,
}

fn default_languages() -> Vec<Language> {
    vec![Language::Ru]
}

fn default_timezone() -> String {
    "Asia/Almaty".into()
}

/// Desired lifecycle state of a tenant.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TenantState {
    #[default]
    Active,
    Suspended,
    Deleted,
}

/// A language the bot answers in (ISO 639-1).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Russian.
    Ru,
    /// Kazakh.
    Kk,
    /// English.
    En,
}

/// Deletion is safe by default: data is retained unless purge is explicitly confirmed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionSpec {
    /// Retain: deleting the resource keeps the database schema, vector collection
    /// and backups. Purge: deleting it (or state Deleted) destroys them all.
    #[serde(default)]
    pub policy: DeletionPolicy,
    /// Must equal metadata.name when policy is Purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub confirm_purge: Option<String>,
}

/// What deletion does with the client's data.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Purge,
}

/// Customer-facing channels. At least one must be configured.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.whatsapp) || has(self.telegram) || has(self.instagram)").message("configure at least one channel: whatsapp, telegram or instagram"))]
pub struct ChannelsSpec {
    /// WhatsApp through the ChatFlow gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsAppChannel>,
    /// A Telegram bot customers write to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramChannel>,
    /// Instagram Direct through the Meta Graph API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instagram: Option<InstagramChannel>,
}

/// WhatsApp via ChatFlow (app.chatflow.kz).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhatsAppChannel {
    /// ChatFlow instance id of the business's WhatsApp number.
    #[schemars(length(min = 1, max = 128))]
    pub instance_id: String,
    /// The ChatFlow API token.
    pub token_secret_ref: SecretKeyRef,
    /// ChatFlow API base URL.
    #[serde(default = "default_chatflow_url")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub api_base_url: String,
    /// Optional HMAC-SHA256 key; when set, inbound webhooks must carry a valid signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_secret_ref: Option<SecretKeyRef>,
}

fn default_chatflow_url() -> String {
    "https://app.chatflow.kz".into()
}

/// A Telegram bot for customers (not the managers' group; see handover).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelegramChannel {
    /// The bot token from @BotFather.
    pub bot_token_secret_ref: SecretKeyRef,
    /// Telegram Bot API base URL.
    #[serde(default = "default_telegram_url")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub api_base_url: String,
}

fn default_telegram_url() -> String {
    "https://api.telegram.org".into()
}

/// Instagram Direct messages of a business account.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstagramChannel {
    /// The Instagram professional account (or Facebook page) id.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[0-9]+$"))]
    pub account_id: String,
    /// Page access token used by the Send API.
    pub access_token_secret_ref: SecretKeyRef,
    /// Meta app secret that signs deliveries (X-Hub-Signature-256).
    pub app_secret_ref: SecretKeyRef,
    /// Token echoed in the webhook verification handshake.
    pub verify_token_secret_ref: SecretKeyRef,
    /// Graph API version.
    #[serde(default = "default_graph_version")]
    #[schemars(regex(pattern = r"^v[0-9]+\.[0-9]+$"))]
    pub api_version: String,
    /// Graph API base URL.
    #[serde(default = "default_graph_url")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub api_base_url: String,
}

fn default_graph_version() -> String {
    "v21.0".into()
}

fn default_graph_url() -> String {
    "https://graph.facebook.com".into()
}

/// Language model and embeddings, through any OpenAI-compatible endpoint.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmSpec {
    /// API base URL; empty means OpenAI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub base_url: Option<String>,
    /// The API key. Absent: retrieval-only answers, handover when unsure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Primary chat model.
    #[serde(default = "default_model")]
    #[schemars(length(min = 1, max = 128))]
    pub model: String,
    /// Model tried when the primary fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub fallback_model: Option<String>,
    /// Sampling temperature, 0 to 2.
    #[serde(default = "default_temperature")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: f64,
    /// Per-request timeout.
    #[serde(default = "default_llm_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,
    /// Embedding model.
    #[serde(default = "default_embedding_model")]
    #[schemars(length(min = 1, max = 128))]
    pub embedding_model: String,
    /// Vector size the embedding model returns; the collection is created with it.
    #[serde(default = "default_embedding_dimensions")]
    #[schemars(range(min = 8, max = 8192))]
    pub embedding_dimensions: u32,
    /// Embeddings endpoint when it differs from `baseUrl` (e.g. a local model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub embedding_base_url: Option<String>,
}

impl Default for LlmSpec {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key_secret_ref: None,
            model: default_model(),
            fallback_model: None,
            temperature: default_temperature(),
            timeout_seconds: default_llm_timeout(),
            embedding_model: default_embedding_model(),
            embedding_dimensions: default_embedding_dimensions(),
            embedding_base_url: None,
        }
    }
}

fn default_model() -> String {
    "gpt-4.1-mini".into()
}
fn default_temperature() -> f64 {
    0.3
}
fn default_llm_timeout() -> u32 {
    30
}
fn default_embedding_model() -> String {
    "text-embedding-3-small".into()
}
fn default_embedding_dimensions() -> u32 {
    1536
}

/// The knowledge base: sources, sync schedule, chunking and vector store.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeSpec {
    /// Documents to index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub sources: Vec<KnowledgeSource>,
    /// Cron schedule (UTC) of the knowledge sync CronJob.
    #[serde(default = "default_sync_schedule")]
    #[schemars(regex(pattern = pattern::CRON))]
    pub sync_schedule: String,
    /// How documents are split before embedding.
    #[serde(default)]
    pub chunking: ChunkingSpec,
    /// Where vectors are stored.
    #[serde(default)]
    pub vector_store: VectorStoreSpec,
}

impl Default for KnowledgeSpec {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            sync_schedule: default_sync_schedule(),
            chunking: ChunkingSpec::default(),
            vector_store: VectorStoreSpec::default(),
        }
    }
}

fn default_sync_schedule() -> String {
    "0 * * * *".into()
}

/// One source of documents. Exactly one of configMap, url, upload, googleDrive.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.configMap), has(self.url), has(self.upload), has(self.googleDrive)].filter(x, x).size() == 1").message("a knowledge source sets exactly one of configMap, url, upload, googleDrive"))]
pub struct KnowledgeSource {
    /// Unique name of the source within the client.
    #[schemars(length(min = 1, max = 63), regex(pattern = pattern::DNS_LABEL))]
    pub name: String,
    /// Default payload type of the chunks from this source.
    #[serde(default, rename = "type")]
    pub doc_type: DocumentType,
    /// Documents kept in git as a ConfigMap (one key = one document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// A document fetched over HTTP(S).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSource>,
    /// Documents uploaded through the runtime's authenticated admin endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSource>,
    /// A Google Drive folder read with a service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_drive: Option<GoogleDriveSource>,
    /// Internal documents (instructions, objection-handling scripts for the
    /// LLM and managers): the LLM gets them as context marked not to quote;
    /// retrieval-only replies never use them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

/// Kind of knowledge a chunk holds (Qdrant payload `type`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocumentType {
    Faq,
    Case,
    Policy,
    Pricing,
    #[default]
    Custom,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// ConfigMap name in the client's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Keys to index; all keys when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub keys: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlSource {
    /// The document's address.
    #[schemars(regex(pattern = pattern::HTTP_URL), length(max = 2048))]
    pub url: String,
    /// Optional bearer token sent with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretKeyRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadSource {
    /// Largest accepted upload, in MiB.
    #[serde(default = "default_max_upload")]
    #[schemars(range(min = 1, max = 100))]
    pub max_size_mib: u32,
}

fn default_max_upload() -> u32 {
    20
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleDriveSource {
    /// Id of the Drive folder.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[-_a-zA-Z0-9]+$"))]
    pub folder_id: String,
    /// Service-account JSON key with read access to the folder.
    pub credentials_secret_ref: SecretKeyRef,
    /// Drive API base URL.
    #[serde(default = "default_drive_url")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub api_base_url: String,
}

fn default_drive_url() -> String {
    "https://www.googleapis.com".into()
}

/// Chunking of documents before embedding, in tokens.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.overlapTokens < self.maxTokens").message("chunking.overlapTokens must be smaller than chunking.maxTokens"))]
pub struct ChunkingSpec {
    #[serde(default = "default_chunk_tokens")]
    #[schemars(range(min = 50, max = 8000))]
    pub max_tokens: u32,
    #[serde(default = "default_overlap_tokens")]
    #[schemars(range(min = 0, max = 4000))]
    pub overlap_tokens: u32,
}

impl Default for ChunkingSpec {
    fn default() -> Self {
        Self {
            max_tokens: default_chunk_tokens(),
            overlap_tokens: default_overlap_tokens(),
        }
    }
}

fn default_chunk_tokens() -> u32 {
    500
}
fn default_overlap_tokens() -> u32 {
    50
}

/// The vector store backend.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backend != 'Qdrant' || has(self.url)").message("vectorStore.url is required when backend is Qdrant"))]
pub struct VectorStoreSpec {
    /// Edge: Qdrant's engine in-process on the runtime's volume (one replica).
    /// Qdrant: a Qdrant server; the operator creates `{name}_knowledge`.
    #[serde(default)]
    pub backend: VectorBackend,
    /// Qdrant server URL (gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub url: Option<String>,
    /// Qdrant API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Edge: size of the runtime's PersistentVolumeClaim (`<name>-data`), so
    /// a new pod (a rollout, a reschedule) opens the shard instead of
    /// embedding every document again.
    #[serde(default = "default_edge_volume")]
    #[schemars(regex(pattern = r"^[0-9]+(Mi|Gi|Ti)$"))]
    pub volume_size: String,
}

fn default_edge_volume() -> String {
    "1Gi".into()
}

impl Default for VectorStoreSpec {
    fn default() -> Self {
        Self {
            backend: VectorBackend::default(),
            url: None,
            api_key_secret_ref: None,
            volume_size: default_edge_volume(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VectorBackend {
    #[default]
    Edge,
    Qdrant,
}

/// Replaces one global prompt template for this client.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptOverride {
    /// Template name, e.g. greeting, classify, answer, clarify, off_topic, fallback_critical.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub name: String,
    /// The prompt text.
    #[schemars(length(min = 1, max = 20000))]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
}

/// Handover to a human manager.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandoverSpec {
    /// Where managers are notified.
    pub adapter: HandoverAdapter,
    /// Used when the primary adapter fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<HandoverAdapter>,
    /// Words in a customer's message that ask for a human (case-insensitive).
    #[serde(default = "default_keywords")]
    #[schemars(length(max = 100))]
    pub keywords: Vec<String>,
    /// Intents that hand over without asking.
    #[serde(default = "default_handover_intents")]
    #[schemars(length(max = 20))]
    pub intents: Vec<String>,
    /// Subjects a human handles: a message about one is handed over. The
    /// built-in topics (`BUILT_IN_HANDOVER_TOPICS`) come with example phrases
    /// and word stems in Russian, Kazakh and English; a topic of the tenant's
    /// own needs examples. Matched semantically (the embedding model) without
    /// an LLM and by the LLM's classification with one. `[]` hands over by
    /// topic never.
    #[serde(default = "default_handover_topics")]
    #[schemars(length(max = 20))]
    pub topics: Vec<HandoverTopic>,
    /// Hours after which a human-held conversation returns to the bot.
    #[serde(default = "default_auto_return_hours")]
    #[schemars(range(min = 1, max = 720))]
    pub auto_return_hours: u32,
    /// Managers' notification; placeholders {user_name} {phone} {intent} {context} {channel}.
    #[serde(default = "default_notify_template")]
    #[schemars(length(min = 1, max = 4000))]
    pub notify_template: String,
}

fn default_keywords() -> Vec<String> {
    [
        "менеджер",
        "человек",
        "оператор",
        "позвонить",
        "живой",
        "маман",
        "адам",
        "manager",
        "human",
        "operator",
    ]
    .map(String::from)
    .to_vec()
}

/// A subject handed to a human (`handovers.trigger_value` is its name).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandoverTopic {
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,39}$"))]
    pub name: String,
    /// What the topic covers, for the LLM classifier (the built-in topics
    /// have their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 300))]
    pub description: Option<String>,
    /// Customer messages about the topic, added to a built-in topic's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub examples: Vec<String>,
    /// Word beginnings (or phrases) that decide the topic alone
    /// ("перенес" for "перенести", "перенесите").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub stems: Vec<String>,
}

/// Topics the runtime knows examples and stems for: problems with a payment
/// already made, moving or cancelling a booking or order, health questions
/// (contraindications, allergies, pregnancy, symptoms), complaints, and the
/// state of the customer's own order.
pub const BUILT_IN_HANDOVER_TOPICS: [&str; 5] = [
    "payment",
    "booking_change",
    "medical",
    "complaint",
    "order_status",
];

fn default_handover_topics() -> Vec<HandoverTopic> {
    BUILT_IN_HANDOVER_TOPICS
        .iter()
        .map(|name| HandoverTopic {
            name: (*name).to_owned(),
            description: None,
            examples: Vec::new(),
            stems: Vec::new(),
        })
        .collect()
}

fn default_handover_intents() -> Vec<String> {
    ["complaint", "ready_to_buy", "human_request"]
        .map(String::from)
        .to_vec()
}

fn default_auto_return_hours() -> u32 {
    24
}

fn default_notify_template() -> String {
    "Новая заявка: {user_name} ({phone}), {channel}\nПричина: {intent}\n\n{context}".into()
}

/// One handover adapter: its type and the settings block of that type.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'telegram' || has(self.telegram)").message("handover type telegram needs the telegram block"))]
#[x_kube(validation = Rule::new("!(self.type in ['webhook', 'custom']) || has(self.webhook)").message("handover types webhook and custom need the webhook block"))]
#[x_kube(validation = Rule::new("self.type != 'email' || has(self.email)").message("handover type email needs the email block"))]
#[x_kube(validation = Rule::new("!(self.type in ['bitrix', 'amocrm', 'hubspot']) || has(self.crm)").message("CRM handover types need the crm block"))]
#[x_kube(validation = Rule::new("self.type == 'whatsappWeb' || has(self.secretRef)").message("this handover type needs secretRef with its credentials"))]
pub struct HandoverAdapter {
    #[serde(rename = "type")]
    pub adapter_type: HandoverAdapterType,
    /// Credentials of the adapter (bot token, SMTP password, CRM key, signing key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramHandover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookHandover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailHandover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm: Option<CrmHandover>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HandoverAdapterType {
    /// POST to the client's URL.
    Webhook,
    /// A Telegram group (forum topics per customer) of managers.
    Telegram,
    Email,
    Bitrix,
    Amocrm,
    Hubspot,
    /// Only marks the conversation; managers answer from the same WhatsApp number.
    WhatsappWeb,
    /// The client's own endpoint, same contract as webhook.
    Custom,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelegramHandover {
    /// Chat id of the managers' group (negative for supergroups).
    #[schemars(regex(pattern = r"^-?[0-9]+$"))]
    pub chat_id: String,
    /// One forum topic per customer (the group must be a forum).
    #[serde(default = "default_true")]
    pub use_topics: bool,
    /// Telegram Bot API base URL.
    #[serde(default = "default_telegram_url")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub api_base_url: String,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookHandover {
    /// Where handover events are POSTed (signed with the key in secretRef).
    #[schemars(regex(pattern = pattern::HTTP_URL), length(max = 2048))]
    pub url: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailHandover {
    /// Recipients.
    #[schemars(length(min = 1, max = 20))]
    pub to: Vec<String>,
    /// Sender address.
    #[schemars(length(min = 3, max = 254))]
    pub from: String,
    #[schemars(length(min = 1, max = 253))]
    pub smtp_host: String,
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub smtp_port: u16,
    #[serde(default)]
    pub tls: SmtpTls,
}

fn default_smtp_port() -> u16 {
    587
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SmtpTls {
    #[default]
    StartTls,
    Tls,
    None,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrmHandover {
    /// The CRM account's API address (e.g. https://company.bitrix24.kz/rest/1/).
    #[schemars(regex(pattern = pattern::HTTP_URL), length(max = 2048))]
    pub base_url: String,
    /// Pipeline or funnel the lead goes to, when the CRM has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub pipeline: Option<String>,
}

/// Daily encrypted backup of conversations and messages.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.storage != 'S3' || has(self.s3)").message("backup storage S3 needs the s3 block"))]
pub struct BackupSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Cron schedule (UTC) of the backup CronJob.
    #[serde(default = "default_backup_schedule")]
    #[schemars(regex(pattern = pattern::CRON))]
    pub schedule: String,
    /// Days a backup is kept.
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub retention_days: u32,
    /// Filesystem: a PersistentVolumeClaim. S3: S3-compatible object storage.
    #[serde(default)]
    pub storage: BackupStorage,
    /// Size of the PersistentVolumeClaim for Filesystem storage.
    #[serde(default = "default_backup_volume")]
    #[schemars(regex(pattern = r"^[0-9]+(Mi|Gi|Ti)$"))]
    pub volume_size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
}

impl Default for BackupSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: default_backup_schedule(),
            retention_days: default_retention_days(),
            storage: BackupStorage::default(),
            volume_size: default_backup_volume(),
            s3: None,
        }
    }
}

fn default_backup_schedule() -> String {
    "0 3 * * *".into()
}
fn default_retention_days() -> u32 {
    30
}
fn default_backup_volume() -> String {
    "1Gi".into()
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupStorage {
    #[default]
    Filesystem,
    S3,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::HTTP_URL))]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Keys `accessKeyId` and `secretAccessKey`.
    pub credentials_secret_ref: SecretRef,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// The tenant's bot-runtime Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    /// Replicas while Active (Suspended scales to zero). Edge vector storage needs 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,
    /// Image of truffles-bot; the operator's default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Webhook requests per minute accepted for the whole tenant.
    #[serde(default = "default_rate_limit")]
    #[schemars(range(min = 1, max = 100000))]
    pub rate_limit_per_minute: u32,
    /// Messages per minute accepted from one end user.
    #[serde(default = "default_user_rate_limit")]
    #[schemars(range(min = 1, max = 10000))]
    pub user_rate_limit_per_minute: u32,
    /// tracing filter, e.g. info or truffles_bot=debug.
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 256))]
    pub log_level: String,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            image: None,
            resources: None,
            rate_limit_per_minute: default_rate_limit(),
            user_rate_limit_per_minute: default_user_rate_limit(),
            log_level: default_log_level(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}
fn default_rate_limit() -> u32 {
    100
}
fn default_user_rate_limit() -> u32 {
    20
}
fn default_log_level() -> String {
    "info".into()
}

/// Exposure of the tenant's webhook endpoints. Omitted: no Ingress (the Service
/// only); given with a host: enabled unless `enabled: false`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.host)").message("ingress.host is required when ingress is enabled"))]
pub struct IngressSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Public host name, e.g. bots.truffles.kz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// TLS Secret for the host; HTTPS is expected in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state, written only by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrufflesClientStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClientPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Id of the client row in the platform database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Database schema holding the tenant's operational data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Vector collection of the knowledge base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Where the webhook URL can be read. The URL holds the webhook secret, so it
    /// lives in a Secret, never in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_secret_ref: Option<SecretKeyRef>,
    /// Set when the Subscription's billing state suspends the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_suspended: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onboarded_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_knowledge_sync_at: Option<Time>,
}

/// Where the tenant is in its lifecycle.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClientPhase {
    Onboarding,
    Active,
    Suspended,
    Deleting,
    Deleted,
    Failed,
}
