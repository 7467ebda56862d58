//! CRM adapters: a lead (or contact) for the customer when the handover
//! opens, and the conversation and later customer messages as comments on it.
//! Request shapes are the ones each CRM documents:
//! - Bitrix24 inbound webhook: `POST {baseUrl}/{token}/crm.lead.add.json`
//!   `{"fields":{TITLE,NAME,PHONE:[{VALUE,VALUE_TYPE}],COMMENTS,SOURCE_DESCRIPTION}}`
//!   → `{"result":<lead id>}`; `crm.timeline.comment.add.json`
//!   `{"fields":{ENTITY_ID,ENTITY_TYPE:"lead",COMMENT}}`.
//! - amoCRM API v4 (OAuth access token): `POST /api/v4/leads/complex`
//!   `[{name,pipeline_id?,_embedded:{contacts:[{first_name,custom_fields_values:
//!   [{field_code:"PHONE",values:[{enum_code:"WORK",value}]}]}]}}]` → `[{"id",..}]`;
//!   `POST /api/v4/leads/{id}/notes` `[{"note_type":"common","params":{"text"}}]`.
//! - HubSpot CRM v3 (private app token): `POST /crm/v3/objects/contacts`
//!   `{"properties":{firstname,phone}}` → `{"id"}`; `POST /crm/v3/objects/notes`
//!   `{"properties":{hs_timestamp,hs_note_body},"associations":[{"to":{"id"},
//!   "types":[{"associationCategory":"HUBSPOT_DEFINED","associationTypeId":202}]}]}`.
//!
//! The manager's answer comes back through the reply webhook (`webhook.rs`).

use serde_json::{Value, json};
use truffles_crds::client::HandoverAdapterType;

use crate::fetch::Fetcher;

use super::adapter::{
    Adapter, AdapterConfig, AdapterError, Delivered, Delivery, Kind, Notice, post_json, secret,
};
use super::telegram::notice_text;

pub struct Crm {
    kind: HandoverAdapterType,
    fetch: Fetcher,
    base_url: String,
    token: String,
    pipeline: Option<String>,
}

impl Crm {
    pub fn new(config: &AdapterConfig, fetch: Fetcher) -> Result<Self, AdapterError> {
        let name = match config.spec.adapter_type {
            HandoverAdapterType::Bitrix => "bitrix",
            HandoverAdapterType::Amocrm => "amocrm",
            _ => "hubspot",
        };
        let crm = config
            .spec
            .crm
            .as_ref()
            .ok_or_else(|| AdapterError::Misconfigured {
                adapter: name,
                why: "the adapter has no `crm` block".into(),
            })?;
        Ok(Self {
            kind: config.spec.adapter_type,
            fetch,
            base_url: crm.base_url.trim_end_matches('/').to_owned(),
            token: secret(&config.secrets, name, "token")?.to_owned(),
            pipeline: crm.pipeline.clone(),
        })
    }

    fn service(&self) -> &'static str {
        match self.kind {
            HandoverAdapterType::Bitrix => "Bitrix24",
            HandoverAdapterType::Amocrm => "amoCRM",
            _ => "HubSpot",
        }
    }

    async fn deliver_notice(&self, notice: &Notice) -> Result<Delivered, AdapterError> {
        let mut created = None;
        let lead = match (&notice.handover.external_ref, notice.kind) {
            (Some(existing), kind) if kind != Kind::Card => existing.clone(),
            _ => {
                let id = self.create(notice).await?;
                created = Some(id.clone());
                id
            }
        };
        let comment = if notice.kind == Kind::Card {
            format!("{}\n\n{}", notice.card, notice.handover.context)
        } else {
            notice_text(notice)
        };
        let comment_id = self.comment(&lead, &comment).await?;
        Ok(Delivered {
            external_ref: created,
            response: json!({"crm": self.service(), "lead": lead, "comment": comment_id}),
        })
    }

    fn title(notice: &Notice) -> String {
        let h = &notice.handover;
        format!(
            "{} — {} ({})",
            h.user_name.as_deref().unwrap_or("Клиент"),
            h.trigger,
            h.channel
        )
    }

    fn phone(notice: &Notice) -> Option<String> {
        notice.handover.phone.as_deref().map(|p| format!("+{p}"))
    }

    /// Creates the lead (contact for HubSpot); returns its id.
    async fn create(&self, notice: &Notice) -> Result<String, AdapterError> {
        let service = self.service();
        let h = &notice.handover;
        let name = h.user_name.clone().unwrap_or_else(|| "Клиент".into());
        let missing_id = |answer: &Value| AdapterError::Rejected {
            service,
            why: format!(
                "no id in the answer: {}",
                answer.to_string().chars().take(200).collect::<String>()
            ),
        };
        match self.kind {
            HandoverAdapterType::Bitrix => {
                let mut fields = json!({
                    "TITLE": Self::title(notice),
                    "NAME": name,
                    "COMMENTS": notice.card,
                    "SOURCE_DESCRIPTION": "Truffles",
                });
                if let Some(phone) = Self::phone(notice) {
                    fields["PHONE"] = json!([{"VALUE": phone, "VALUE_TYPE": "WORK"}]);
                }
                let answer = self
                    .bitrix(
                        "crm.lead.add",
                        &json!({"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}}),
                    )
                    .await?;
                id_of(answer.get("result")).ok_or_else(|| missing_id(&answer))
            }
            HandoverAdapterType::Amocrm => {
                let mut contact = json!({"first_name": name});
                if let Some(phone) = Self::phone(notice) {
                    contact["custom_fields_values"] = json!([{"field_code": "PHONE", "values": [{"enum_code": "WORK", "value": phone}]}]);
                }
                let mut lead =
                    json!({"name": Self::title(notice), "_embedded": {"contacts": [contact]}});
                if let Some(pipeline) = self.pipeline.as_deref().and_then(|p| p.parse::<i64>().ok())
                {
                    lead["pipeline_id"] = json!(pipeline);
                }
                let url = format!("{}/api/v4/leads/complex", self.base_url);
                let answer = post_json(
                    &self.fetch,
                    service,
                    &url,
                    Some(&self.token),
                    &json!([lead]),
                )
                .await?;
                id_of(answer.get(0).and_then(|l| l.get("id"))).ok_or_else(|| missing_id(&answer))
            }
            _ => {
                let mut properties = json!({"firstname": name});
                if let Some(phone) = Self::phone(notice) {
                    properties["phone"] = json!(phone);
                }
                let url = format!("{}/crm/v3/objects/contacts", self.base_url);
                let answer = post_json(
                    &self.fetch,
                    service,
                    &url,
                    Some(&self.token),
                    &json!({"properties": properties}),
                )
                .await?;
                id_of(answer.get("id")).ok_or_else(|| missing_id(&answer))
            }
        }
    }

    /// Adds a comment (timeline comment, note) to the lead; returns its id.
    async fn comment(&self, lead: &str, text: &str) -> Result<Option<String>, AdapterError> {
        let service = self.service();
        let answer = match self.kind {
            HandoverAdapterType::Bitrix => {
                let answer = self
                    .bitrix(
                        "crm.timeline.comment.add",
                        &json!({"fields": {"ENTITY_ID": lead.parse::<i64>().unwrap_or_default(), "ENTITY_TYPE": "lead", "COMMENT": text}}),
                    )
                    .await?;
                id_of(answer.get("result"))
            }
            HandoverAdapterType::Amocrm => {
                let url = format!("{}/api/v4/leads/{lead}/notes", self.base_url);
                let answer = post_json(
                    &self.fetch,
                    service,
                    &url,
                    Some(&self.token),
                    &json!([{"note_type": "common", "params": {"text": text}}]),
                )
                .await?;
                id_of(answer.pointer("/_embedded/notes/0/id"))
            }
            _ => {
                let url = format!("{}/crm/v3/objects/notes", self.base_url);
                let body = json!({
                    "properties": {
                        "hs_timestamp": sqlx::types::chrono::Utc::now().to_rfc3339(),
                        "hs_note_body": text,
                    },
                    // 202: note to contact, a HubSpot-defined association.
                    "associations": [{"to": {"id": lead}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}],
                });
                let answer =
                    post_json(&self.fetch, service, &url, Some(&self.token), &body).await?;
                id_of(answer.get("id"))
            }
        };
        Ok(answer)
    }

    /// Bitrix24 answers errors as `{"error","error_description"}`, sometimes with HTTP 200.
    async fn bitrix(&self, method: &str, body: &Value) -> Result<Value, AdapterError> {
        let url = format!("{}/{}/{method}.json", self.base_url, self.token);
        let answer = post_json(&self.fetch, "Bitrix24", &url, None, body).await?;
        if let Some(error) = answer.get("error") {
            return Err(AdapterError::Rejected {
                service: "Bitrix24",
                why: format!(
                    "{error}: {}",
                    answer
                        .get("error_description")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
            });
        }
        Ok(answer)
    }
}

fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Adapter for Crm {
    fn kind(&self) -> HandoverAdapterType {
        self.kind
    }
    fn deliver<'a>(&'a self, notice: &'a Notice) -> Delivery<'a> {
        Box::pin(self.deliver_notice(notice))
    }
}
