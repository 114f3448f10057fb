//! Change-event delivery, as Azure Event Grid does it for Key Vault: event
//! subscriptions on a vault (ARM resources) name a webhook, an event-type
//! filter and a schema (Event Grid or CloudEvents 1.0). A subscription is
//! created only after its endpoint passes the validation handshake.
//!
//! Events are durable: the domain records each in the store's outbox in the
//! transaction of its change, and every node runs a dispatcher that claims
//! due entries (a lease, so a node that dies lets another take over),
//! matches an event to the subscriptions that want it (one delivery entry
//! each), and delivers. A failed delivery is retried with exponential
//! backoff by whichever node is alive, then dead-lettered into the store in
//! the transaction that removes it. Delivery is at least once; the event id
//! is the same on every attempt.

use std::sync::Arc;
use std::time::Duration;

use keyhaven_core::events::{ChangeEvent, EventSink, EventType, OutboxItem, Settle};
use keyhaven_core::{ResourceRecord, Storage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};

use crate::config::Endpoints;

/// The ARM type of event subscriptions.
pub const SUBSCRIPTION_TYPE: &str = keyhaven_core::events::SUBSCRIPTION_TYPE;
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

/// The event bus of a node: the domain's `EventSink`, which wakes the
/// node's dispatcher when the domain committed events.
#[derive(Debug, Clone)]
pub struct EventBus {
    wake: Arc<Notify>,
}

impl EventSink for EventBus {
    fn committed(&self) {
        self.wake.notify_one();
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
    if e.object_type == "RoleAssignment" {
        // Keyhaven's just-in-time role events: the assignment's ARM id, the
        // principal (carried as `version`), its window.
        return json!({
            "Id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", e.vault_id, e.object_name),
            "VaultName": e.vault_name,
            "ObjectType": e.object_type,
            "ObjectName": e.object_name,
            "PrincipalId": e.version,
            "NBF": e.nbf,
            "EXP": e.exp,
        });
    }
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
    let id = &e.id;
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

/// How long a claimed entry is this node's before another may take it: far
/// longer than one delivery attempt (5 s).
const LEASE_MS: i64 = 60_000;
/// How often a node looks for due entries without being woken (entries
/// another node recorded, or left behind by a node that died).
const POLL: Duration = Duration::from_secs(1);
/// Shortest pause between two claims of the outbox when woken by writes.
const COALESCE: Duration = Duration::from_millis(20);
/// Deliveries in flight per node.
const IN_FLIGHT: usize = 32;

fn now_ms() -> i64 {
    crate::clock::SystemClock::now_ms()
}

/// One node's dispatcher of the outbox.
struct Dispatcher {
    store: Arc<dyn Storage>,
    endpoints: Endpoints,
    subscription_id: String,
    retry: Retry,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    /// Deliveries in flight per subscription.
    busy: InFlight,
}

/// Deliveries in flight to one subscription per node: an endpoint that
/// hangs holds at most these of the node's slots, not all of them.
const PER_SUBSCRIPTION: usize = 4;
/// How long an entry handed back for a busy subscription waits.
const BUSY_BACKOFF_MS: i64 = 1000;

/// Deliveries in flight per subscription (by lower-case id).
#[derive(Default)]
struct InFlight(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl InFlight {
    /// A delivery slot of `subscription`, unless it has enough in flight.
    fn reserve(&self, subscription: &str) -> Option<Busy<'_>> {
        let key = subscription.to_ascii_lowercase();
        let mut m = self.0.lock().ok()?;
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= PER_SUBSCRIPTION {
            return None;
        }
        *n += 1;
        Some(Busy { map: &self.0, key })
    }
}

/// One delivery slot of a subscription, given back when dropped.
struct Busy<'a> {
    map: &'a std::sync::Mutex<std::collections::HashMap<String, usize>>,
    key: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            if let Some(n) = m.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

/// Starts this node's dispatcher; returns the bus to give the domain.
pub fn start(
    store: Arc<dyn Storage>,
    endpoints: Endpoints,
    subscription_id: String,
    retry: Retry,
) -> EventBus {
    let (wake, commits) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let d = Arc::new(Dispatcher {
        store,
        endpoints,
        subscription_id,
        retry,
        wake,
        slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        busy: InFlight::default(),
    });
    let committed = Arc::clone(&commits);
    tokio::spawn(async move {
        loop {
            d.drain().await;
            tokio::select! {
                // A delivery ended (a slot is free) or a retry is due.
                () = d.wake.notified() => {}
                () = committed.notified() => {
                    // Every write that records an event wakes the loop, but
                    // the store records one only for a vault with an event
                    // subscription: under a stream of writes, claim at most
                    // once per COALESCE rather than once per write. (A wake
                    // during the pause is kept: the next claim covers it.)
                    tokio::time::sleep(COALESCE).await;
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    });
    EventBus { wake: commits }
}

impl Dispatcher {
    /// Claims due entries while there are free slots, each handled on its
    /// own task; a finished one wakes the loop again. A subscription holds
    /// at most `PER_SUBSCRIPTION` slots (its other entries are handed back
    /// for a second), so an endpoint that hangs slows only its own.
    async fn drain(self: &Arc<Self>) {
        for _ in 0..64 {
            let free = self.slots.available_permits();
            if free == 0 {
                return;
            }
            let (now, claim) = (now_ms(), uuid::Uuid::new_v4().to_string());
            let limit = u32::try_from(free).unwrap_or(1);
            let items = match self
                .store
                .claim_events(now, now + LEASE_MS, &claim, limit)
                .await
            {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(error = %e, "the event outbox could not be read");
                    return;
                }
            };
            if items.is_empty() {
                return;
            }
            for item in items {
                let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else {
                    return;
                };
                let me = Arc::clone(self);
                tokio::spawn(async move {
                    let id = item.event.id.clone();
                    if let Err(e) = me.handle(item).await {
                        // Left under its claim: taken again when the lease ends.
                        tracing::warn!(event = %id, error = %e, "event entry not settled");
                    }
                    drop(permit);
                    me.wake.notify_one();
                });
            }
        }
    }

    async fn handle(&self, item: OutboxItem) -> Result<(), keyhaven_core::StoreError> {
        if item.subscription.is_empty() {
            return self.fan_out(&item).await;
        }
        let Some(_busy) = self.busy.reserve(&item.subscription) else {
            let due = now_ms().saturating_add(BUSY_BACKOFF_MS);
            self.store
                .settle_event(&item, &Settle::Release { due })
                .await?;
            return Ok(());
        };
        let Some(rec) = self.store.get_resource(&item.subscription).await? else {
            // The subscription was deleted: nobody to deliver to.
            self.store.settle_event(&item, &Settle::Done).await?;
            return Ok(());
        };
        let Ok(sub) = serde_json::from_str::<Subscription>(&rec.properties) else {
            tracing::warn!(subscription = %rec.id, event = %item.event.id,
                "event subscription unreadable; delivery dropped");
            self.store.settle_event(&item, &Settle::Done).await?;
            return Ok(());
        };
        let (body, content_type) = body_of(&item.event, sub.schema, &self.endpoints);
        let name = item.event.event_type.azure_name();
        let (endpoint, payload) = (sub.endpoint.clone(), body.clone());
        let result = tokio::task::spawn_blocking(move || {
            deliver_once(&endpoint, &payload, content_type, name)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let last_error = match result {
            Ok(()) => {
                self.store.settle_event(&item, &Settle::Done).await?;
                return Ok(());
            }
            Err(e) => e,
        };
        let attempts = item.attempts.saturating_add(1);
        if attempts >= self.retry.attempts.max(1) {
            tracing::warn!(subscription = %rec.id, event = %item.event.id, error = %last_error,
                "event delivery failed; dead-lettered");
            let letter = dead_letter(&rec, &item, body, last_error, attempts);
            self.store
                .settle_event(&item, &Settle::DeadLetter(letter))
                .await?;
            return Ok(());
        }
        let wait = self
            .retry
            .base
            .saturating_mul(1u32 << (attempts - 1).min(20));
        let due = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        self.store
            .settle_event(&item, &Settle::Retry { due, last_error })
            .await?;
        let wake = Arc::clone(&self.wake);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            wake.notify_one();
        });
        Ok(())
    }

    /// Replaces an event by one delivery per subscription that wants it.
    async fn fan_out(&self, item: &OutboxItem) -> Result<(), keyhaven_core::StoreError> {
        let event = &item.event;
        let name = event.event_type.azure_name();
        let wanted: Vec<String> = self
            .store
            .list_resources(SUBSCRIPTION_TYPE, &self.subscription_id)
            .await?
            .into_iter()
            .filter(|rec| {
                let sub = serde_json::from_str::<Subscription>(&rec.properties);
                if sub.is_err() {
                    tracing::warn!(subscription = %rec.id, "event subscription unreadable; skipped");
                }
                sub.is_ok_and(|sub| {
                    sub.vault_id.eq_ignore_ascii_case(&event.vault_id)
                        && (sub.included_event_types.is_empty()
                            || sub
                                .included_event_types
                                .iter()
                                .any(|t| t.eq_ignore_ascii_case(name)))
                })
            })
            .map(|rec| rec.id)
            .collect();
        let any = !wanted.is_empty();
        if self
            .store
            .settle_event(item, &Settle::FanOut(wanted))
            .await?
            && any
        {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// The dead letter of a delivery given up on.
fn dead_letter(
    sub: &ResourceRecord,
    item: &OutboxItem,
    body: Value,
    last_error: String,
    attempts: u32,
) -> ResourceRecord {
    let time = body
        .pointer("/0/eventTime")
        .or_else(|| body.pointer("/time"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    ResourceRecord {
        id: format!("{}/deadLetters/{}", sub.id, item.event.id),
        kind: DEAD_LETTER_TYPE.into(),
        subscription_id: sub.subscription_id.clone(),
        resource_group: sub.resource_group.clone(),
        name: sub.name.clone(),
        location: sub.location.clone(),
        tags: "{}".into(),
        properties: json!({
            "subscription": sub.id,
            "event": body,
            "lastError": last_error,
            "attempts": attempts,
            "eventTime": time,
        })
        .to_string(),
        created: 0,
        updated: 0,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_holds_a_bounded_share_of_the_slots() {
        let f = InFlight::default();
        let held: Vec<_> = (0..PER_SUBSCRIPTION)
            .map(|_| f.reserve("/Sub/A").unwrap())
            .collect();
        assert!(
            f.reserve("/sub/a").is_none(),
            "the same subscription, any casing"
        );
        assert!(f.reserve("/sub/b").is_some(), "others are not held up");
        drop(held);
        assert!(f.reserve("/sub/a").is_some());
        assert!(f.0.lock().unwrap().get("/sub/a").is_none_or(|n| *n <= 1));
    }
}
