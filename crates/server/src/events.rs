//! Change-event delivery, as Azure Event Grid does it for Key Vault: event
//! subscriptions on a vault (ARM resources) name a webhook, an event-type
//! filter and a schema (Event Grid or CloudEvents 1.0). A subscription is
//! created only after its endpoint passes the validation handshake. Events
//! are queued in memory and delivered by one task per node; a failed delivery
//! is retried with exponential backoff, then dead-lettered into the store.

use std::sync::Arc;
use std::time::Duration;

use keyhaven_core::events::{ChangeEvent, EventSink, EventType};
use keyhaven_core::{ResourceRecord, Storage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::Endpoints;

/// The ARM type of event subscriptions.
pub const SUBSCRIPTION_TYPE: &str = "Microsoft.EventGrid/eventSubscriptions";
/// The ARM type under which dead-lettered deliveries are kept.
pub const DEAD_LETTER_TYPE: &str = "Keyhaven.EventGrid/deadLetters";

/// Delivery schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schema {
    /// `EventGridSchema`: a JSON array of Event Grid events.
    EventGrid,
    /// `CloudEventSchemaV1_0`: one CloudEvent per request.
    CloudEvents,
}

/// An event subscription as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    /// The vault's ARM id.
    pub vault_id: String,
    /// Webhook URL.
    pub endpoint: String,
    /// Event types delivered (empty: all).
    pub included_event_types: Vec<String>,
    /// Schema.
    pub schema: Schema,
}

/// How delivery retries.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts before dead-lettering.
    pub attempts: u32,
    /// First backoff; doubled each time.
    pub base: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_secs(1),
        }
    }
}

/// The event bus of a node: the domain's `EventSink`.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: mpsc::UnboundedSender<ChangeEvent>,
}

impl EventSink for EventBus {
    fn emit(&self, event: ChangeEvent) {
        let _ = self.tx.send(event);
    }
}

fn iso(secs: i64) -> String {
    keyhaven_wire::oauth::iso8601(secs)
}

fn collection(object_type: &str) -> &'static str {
    match object_type {
        "Key" => "keys",
        "Certificate" => "certificates",
        _ => "secrets",
    }
}

/// The `data` of a Key Vault event.
fn data_of(e: &ChangeEvent, endpoints: &Endpoints) -> Value {
    let id = if e.object_name.is_empty() {
        endpoints.vault_url(&e.vault_name)
    } else {
        format!(
            "{}/{}/{}/{}",
            endpoints.vault_url(&e.vault_name),
            collection(e.object_type),
            e.object_name,
            e.version
        )
    };
    json!({
        "Id": id,
        "VaultName": e.vault_name,
        "ObjectType": e.object_type,
        "ObjectName": e.object_name,
        "Version": e.version,
        "NBF": e.nbf,
        "EXP": e.exp,
    })
}

/// The request body for `schema`, and its content type.
pub fn body_of(e: &ChangeEvent, schema: Schema, endpoints: &Endpoints) -> (Value, &'static str) {
    let id = uuid::Uuid::new_v4().to_string();
    let data = data_of(e, endpoints);
    match schema {
        Schema::EventGrid => (
            json!([{
                "id": id,
                "topic": e.vault_id,
                "subject": e.object_name,
                "eventType": e.event_type.azure_name(),
                "eventTime": iso(e.time),
                "data": data,
                "dataVersion": "1",
                "metadataVersion": "1",
            }]),
            "application/json",
        ),
        Schema::CloudEvents => (
            json!({
                "specversion": "1.0",
                "id": id,
                "source": e.vault_id,
                "subject": e.object_name,
                "type": e.event_type.azure_name(),
                "time": iso(e.time),
                "datacontenttype": "application/json",
                "data": data,
            }),
            "application/cloudevents+json; charset=utf-8",
        ),
    }
}

/// What went wrong with a webhook call, without the URL: ureq's own text
/// carries the whole URL, whose query often holds the subscriber's secret.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, _) => format!("HTTP {code}"),
        ureq::Error::Transport(t) => format!("transport error ({})", t.kind()),
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .redirects(0)
        .build()
}

/// The validation handshake of a new subscription: Event Grid schema posts a
/// `SubscriptionValidationEvent` and expects `{"validationResponse": code}`;
/// CloudEvents sends the abuse-protection `OPTIONS` and expects
/// `WebHook-Allowed-Origin`.
pub async fn validate_endpoint(
    endpoint: &str,
    schema: Schema,
    topic: &str,
    now: i64,
) -> Result<(), String> {
    let (endpoint, topic) = (endpoint.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || match schema {
        Schema::EventGrid => {
            let code = uuid::Uuid::new_v4().to_string();
            let event = json!([{
                "id": uuid::Uuid::new_v4().to_string(),
                "topic": topic,
                "subject": "",
                "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                "eventTime": iso(now),
                "data": {"validationCode": code, "validationUrl": null},
                "dataVersion": "2",
                "metadataVersion": "1",
            }]);
            let resp = agent()
                .post(&endpoint)
                .set("aeg-event-type", "SubscriptionValidation")
                .send_json(event)
                .map_err(|e| {
                    format!(
                        "the endpoint did not answer the validation event: {}",
                        describe(&e)
                    )
                })?;
            let body: Value = resp
                .into_json()
                .map_err(|_| "the endpoint's validation answer is not JSON".to_owned())?;
            if body.get("validationResponse").and_then(Value::as_str) == Some(code.as_str()) {
                Ok(())
            } else {
                Err("the endpoint did not echo the validation code".into())
            }
        }
        Schema::CloudEvents => {
            let resp = agent()
                .request("OPTIONS", &endpoint)
                .set("WebHook-Request-Origin", "eventgrid.azure.net")
                .call()
                .map_err(|e| {
                    format!(
                        "the endpoint did not answer the validation request: {}",
                        describe(&e)
                    )
                })?;
            let allowed = resp.header("WebHook-Allowed-Origin").unwrap_or_default();
            if allowed == "*" || allowed.eq_ignore_ascii_case("eventgrid.azure.net") {
                Ok(())
            } else {
                Err("the endpoint did not allow the origin (WebHook-Allowed-Origin)".into())
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

fn deliver_once(
    endpoint: &str,
    body: &Value,
    content_type: &str,
    event_type: &str,
) -> Result<(), String> {
    agent()
        .post(endpoint)
        .set("Content-Type", content_type)
        .set("aeg-event-type", "Notification")
        .set("aeg-subscription-name", event_type)
        .send_string(&body.to_string())
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// Starts the delivery task; returns the bus to give the domain.
pub fn start(
    store: Arc<dyn Storage>,
    endpoints: Endpoints,
    subscription_id: String,
    retry: Retry,
) -> EventBus {
    let (tx, mut rx) = mpsc::unbounded_channel::<ChangeEvent>();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let subs = match store
                .list_resources(SUBSCRIPTION_TYPE, &subscription_id)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "event subscriptions could not be read; event dropped");
                    continue;
                }
            };
            for rec in subs {
                let Ok(sub) = serde_json::from_str::<Subscription>(&rec.properties) else {
                    continue;
                };
                let name = event.event_type.azure_name();
                let wanted = sub.vault_id.eq_ignore_ascii_case(&event.vault_id)
                    && (sub.included_event_types.is_empty()
                        || sub
                            .included_event_types
                            .iter()
                            .any(|t| t.eq_ignore_ascii_case(name)));
                if !wanted {
                    continue;
                }
                let (body, content_type) = body_of(&event, sub.schema, &endpoints);
                let (store, rec_id) = (store.clone(), rec.id.clone());
                // Each subscription's deliveries run on their own, so a slow
                // endpoint delays nobody else.
                tokio::spawn(async move {
                    let mut wait = retry.base;
                    let mut last_error = String::new();
                    for attempt in 1..=retry.attempts.max(1) {
                        let (endpoint, body2, ct) =
                            (sub.endpoint.clone(), body.clone(), content_type);
                        let result = tokio::task::spawn_blocking(move || {
                            deliver_once(&endpoint, &body2, ct, name)
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        match result {
                            Ok(()) => return,
                            Err(e) => last_error = e,
                        }
                        if attempt < retry.attempts {
                            tokio::time::sleep(wait).await;
                            wait = wait.saturating_mul(2);
                        }
                    }
                    tracing::warn!(subscription = %rec_id, error = %last_error, "event delivery failed; dead-lettered");
                    let id = format!("{rec_id}/deadLetters/{}", uuid::Uuid::new_v4());
                    let now = body
                        .pointer("/0/eventTime")
                        .or_else(|| body.pointer("/time"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let _ = store
                        .put_resource(&ResourceRecord {
                            id,
                            kind: DEAD_LETTER_TYPE.into(),
                            subscription_id: rec.subscription_id.clone(),
                            resource_group: rec.resource_group.clone(),
                            name: rec.name.clone(),
                            location: rec.location.clone(),
                            tags: "{}".into(),
                            properties: json!({
                                "subscription": rec_id,
                                "event": body,
                                "lastError": last_error,
                                "attempts": retry.attempts,
                                "eventTime": now,
                            })
                            .to_string(),
                            created: 0,
                            updated: 0,
                        })
                        .await;
                });
            }
        }
    });
    EventBus { tx }
}

/// Parses event types of a filter, refusing unknown ones.
pub fn check_event_types(types: &[String]) -> Result<(), String> {
    for t in types {
        if !EventType::ALL
            .iter()
            .any(|k| k.azure_name().eq_ignore_ascii_case(t))
        {
            return Err(format!("'{t}' is not a Key Vault event type."));
        }
    }
    Ok(())
}
