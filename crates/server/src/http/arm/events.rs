//! Event subscriptions on a vault (`…/vaults/{name}/providers/
//! Microsoft.EventGrid/eventSubscriptions/{sub}`), as `az eventgrid
//! event-subscription create --source-resource-id <vault>` writes them, and
//! their dead letters (`…/eventSubscriptions/{sub}/deadLetters`, Keyhaven's).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use keyhaven_core::ResourceRecord;
use serde_json::{json, Value};

use super::common::RG;
use super::common::{domain_failure, parse_body, ArmFailure, Ctx};
use super::resource::{upsert, Put};
use crate::events::{
    check_event_types, validate_endpoint, Schema, Subscription, DEAD_LETTER_TYPE, SUBSCRIPTION_TYPE,
};
use crate::http::response::json as reply;
use crate::state::AppState;
use axum::{routing, Router};

type Where = Path<(String, String, String, String)>;

fn bad(msg: impl Into<String>) -> ArmFailure {
    ArmFailure::new(StatusCode::BAD_REQUEST, "InvalidRequest", msg.into())
}

async fn vault_id(st: &AppState, sub: &str, rg: &str, vault: &str) -> Result<String, ArmFailure> {
    Ok(super::vaults::find(st, sub, rg, vault).await?.resource_id())
}

/// The subscription's id, once the caller may perform `action` on it.
async fn subscription_id(
    st: &AppState,
    ctx: &Ctx,
    (sub, rg, vault, name): (&str, &str, &str, &str),
    action: &str,
) -> Result<String, ArmFailure> {
    let vid = vault_id(st, sub, rg, vault).await?;
    let id = format!("{vid}/providers/{SUBSCRIPTION_TYPE}/{name}");
    st.authz
        .require_action(&ctx.caller, &id, action)
        .await
        .map_err(domain_failure)?;
    Ok(id)
}

fn out(r: &ResourceRecord, s: &Subscription) -> Value {
    let base = s.endpoint.split('?').next().unwrap_or_default();
    json!({
        "id": r.id,
        "name": r.name,
        "type": SUBSCRIPTION_TYPE,
        "properties": {
            "topic": s.vault_id,
            "provisioningState": "Succeeded",
            "destination": {"endpointType": "WebHook", "properties": {"endpointBaseUrl": base}},
            "filter": {"includedEventTypes": if s.included_event_types.is_empty() { Value::Null } else { json!(s.included_event_types) }},
            "eventDeliverySchema": match s.schema {
                Schema::EventGrid => "EventGridSchema",
                Schema::CloudEvents => "CloudEventSchemaV1_0",
            },
        }
    })
}

/// `PUT …/eventSubscriptions/{sub}`: validated by handshake before it exists.
pub async fn put_subscription(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    let vid = vault_id(&st, &sub, &rg, &vault).await?;
    let id = format!("{vid}/providers/{SUBSCRIPTION_TYPE}/{name}");
    st.authz
        .require_action(
            &ctx.caller,
            &id,
            "Microsoft.EventGrid/eventSubscriptions/write",
        )
        .await
        .map_err(domain_failure)?;
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(bad("The event subscription name is invalid."));
    }
    let body: Value = parse_body(req.into_body()).await?;
    let p = body.pointer("/properties").cloned().unwrap_or(Value::Null);
    let endpoint_type = p
        .pointer("/destination/endpointType")
        .and_then(Value::as_str)
        .unwrap_or("WebHook");
    if !endpoint_type.eq_ignore_ascii_case("WebHook") {
        return Err(bad("Only WebHook destinations are supported."));
    }
    let endpoint = p
        .pointer("/destination/properties/endpointUrl")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .ok_or_else(|| bad("destination.properties.endpointUrl must be an http(s) URL."))?
        .to_owned();
    let types: Vec<String> = p
        .pointer("/filter/includedEventTypes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    check_event_types(&types).map_err(bad)?;
    let schema = match p.pointer("/eventDeliverySchema").and_then(Value::as_str) {
        None | Some("EventGridSchema") => Schema::EventGrid,
        Some("CloudEventSchemaV1_0") => Schema::CloudEvents,
        Some(other) => {
            return Err(bad(format!(
                "eventDeliverySchema '{other}' is not supported."
            )))
        }
    };
    validate_endpoint(&endpoint, schema, &vid, st.clock.now())
        .await
        .map_err(|e| {
            ArmFailure::new(
                StatusCode::BAD_REQUEST,
                "Url validation",
                format!(
                    "Webhook validation handshake failed for {}: {e}",
                    endpoint.split('?').next().unwrap_or_default()
                ),
            )
        })?;
    let s = Subscription {
        vault_id: vid,
        endpoint,
        included_event_types: types,
        schema,
    };
    let properties = serde_json::to_string(&s).map_err(|_| bad("Unserializable subscription."))?;
    let put = Put::extension(
        id,
        SUBSCRIPTION_TYPE,
        (&st.subscription_id, &rg, &name),
        properties,
        StatusCode::CREATED,
    );
    let (rec, status) = upsert(&st, put).await?;
    Ok(reply(status, &out(&rec, &s)))
}

async fn load(st: &AppState, id: &str) -> Result<(ResourceRecord, Subscription), ArmFailure> {
    let r = st
        .store
        .get_resource(id)
        .await
        .map_err(|e| domain_failure(e.into()))?
        .filter(|r| r.kind == SUBSCRIPTION_TYPE)
        .ok_or_else(|| {
            ArmFailure::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "No such event subscription.",
            )
        })?;
    let s = serde_json::from_str(&r.properties).map_err(|_| bad("Corrupt subscription."))?;
    Ok((r, s))
}

/// `GET …/eventSubscriptions/{sub}`.
pub async fn get_subscription(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = subscription_id(
        &st,
        &ctx,
        (&sub, &rg, &vault, &name),
        "Microsoft.EventGrid/eventSubscriptions/read",
    )
    .await?;
    let (r, s) = load(&st, &id).await?;
    Ok(reply(StatusCode::OK, &out(&r, &s)))
}

/// `GET {vault}/providers/Microsoft.EventGrid/eventSubscriptions`: the
/// vault's subscriptions (`az eventgrid event-subscription list
/// --source-resource-id <vault id>`).
pub async fn list_subscriptions(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault)): Path<(String, String, String)>,
) -> Result<Response, ArmFailure> {
    let vid = vault_id(&st, &sub, &rg, &vault).await?;
    st.authz
        .require_action(
            &ctx.caller,
            &vid,
            "Microsoft.EventGrid/eventSubscriptions/read",
        )
        .await
        .map_err(domain_failure)?;
    let all = st
        .store
        .list_resources(SUBSCRIPTION_TYPE, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    let value: Vec<Value> = all
        .iter()
        .filter_map(|r| {
            serde_json::from_str::<Subscription>(&r.properties)
                .ok()
                .filter(|s| s.vault_id.eq_ignore_ascii_case(&vid))
                .map(|s| out(r, &s))
        })
        .collect();
    Ok(reply(StatusCode::OK, &json!({"value": value})))
}

/// `DELETE …/eventSubscriptions/{sub}`.
pub async fn delete_subscription(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = subscription_id(
        &st,
        &ctx,
        (&sub, &rg, &vault, &name),
        "Microsoft.EventGrid/eventSubscriptions/delete",
    )
    .await?;
    super::resource::remove(&st, &id).await
}

/// `GET …/eventSubscriptions/{sub}/deadLetters`: deliveries that failed
/// every attempt, with the event and the last error.
pub async fn list_dead_letters(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = subscription_id(
        &st,
        &ctx,
        (&sub, &rg, &vault, &name),
        "Microsoft.EventGrid/eventSubscriptions/read",
    )
    .await?;
    let prefix = format!("{}/deadletters/", id.to_ascii_lowercase());
    let value: Vec<Value> = st
        .store
        .list_resources(DEAD_LETTER_TYPE, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?
        .into_iter()
        .filter(|r| r.id.to_ascii_lowercase().starts_with(&prefix))
        .map(|r| {
            json!({"id": r.id, "properties": serde_json::from_str::<Value>(&r.properties).unwrap_or(Value::Null)})
        })
        .collect();
    Ok(reply(StatusCode::OK, &json!({"value": value})))
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.EventGrid/eventSubscriptions"),
            routing::get(list_subscriptions),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.EventGrid/eventSubscriptions/{{esub}}"),
            routing::put(put_subscription)
                .get(get_subscription)
                .delete(delete_subscription),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.EventGrid/eventSubscriptions/{{esub}}/deadLetters"),
            routing::get(list_dead_letters),
        )
}
