//! Log Analytics workspaces (`Microsoft.OperationalInsights/workspaces`, as
//! `az monitor log-analytics workspace create|show|list|delete` drive them).
//! Keyhaven has one log store, so a workspace is a named handle on it: a
//! vault's diagnostic setting whose `workspaceId` names one sends that vault's
//! audit records to the store (see `arm_diagnostics`). The workspace keeps
//! what ARM shows of it (customer id, SKU, retention) and nothing else.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use keyhaven_core::ResourceRecord;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::RG;
use super::common::{domain_failure, parse_body, ArmFailure, Ctx};
use super::resource::{authorize, id_of, load, not_found, upsert, valid_name, Envelope, Put};
use crate::http::response::json as reply;
use crate::state::AppState;
use axum::{routing, Router};

/// The ARM type of a workspace.
pub const WORKSPACE_TYPE: &str = "Microsoft.OperationalInsights/workspaces";

/// What a workspace keeps.
#[derive(Serialize, Deserialize)]
struct Workspace {
    customer_id: String,
    sku: String,
    retention_in_days: i64,
}

fn bad(msg: impl Into<String>) -> ArmFailure {
    ArmFailure::new(StatusCode::BAD_REQUEST, "InvalidParameter", msg.into())
}

fn out(r: &ResourceRecord) -> Value {
    let w: Workspace = serde_json::from_str(&r.properties).unwrap_or(Workspace {
        customer_id: String::new(),
        sku: "PerGB2018".into(),
        retention_in_days: 30,
    });
    let created = keyhaven_wire::oauth::iso8601(r.created);
    let modified = keyhaven_wire::oauth::iso8601(r.updated);
    json!({
        "id": r.id,
        "name": r.name,
        "type": WORKSPACE_TYPE,
        "location": r.location,
        "tags": serde_json::from_str::<Value>(&r.tags).unwrap_or_else(|_| json!({})),
        "properties": {
            "provisioningState": "Succeeded",
            "customerId": w.customer_id,
            "sku": {"name": w.sku, "lastSkuUpdate": created},
            "retentionInDays": w.retention_in_days,
            "features": {"enableLogAccessUsingOnlyResourcePermissions": true},
            "workspaceCapping": {"dailyQuotaGb": -1.0, "dataIngestionStatus": "RespectQuota"},
            "publicNetworkAccessForIngestion": "Enabled",
            "publicNetworkAccessForQuery": "Enabled",
            "createdDate": created,
            "modifiedDate": modified,
        }
    })
}

type Where = Path<(String, String, String)>;

/// The workspace's id, once the caller may `verb` (`read`, `write`, `delete`) it.
async fn authorized(
    st: &AppState,
    ctx: &Ctx,
    (sub, rg, name): (&str, &str, &str),
    verb: &str,
) -> Result<String, ArmFailure> {
    let id = id_of(sub, rg, WORKSPACE_TYPE, name);
    let action = format!("Microsoft.OperationalInsights/workspaces/{verb}");
    authorize(st, ctx, &id, &action).await?;
    Ok(id)
}

/// The workspaces of one resource group.
async fn in_group(st: &AppState, sub: &str, rg: &str) -> Result<Vec<ResourceRecord>, ArmFailure> {
    let mut all = st
        .store
        .list_resources(WORKSPACE_TYPE, sub)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    all.retain(|r| r.resource_group.eq_ignore_ascii_case(rg));
    Ok(all)
}

/// The customer id of the workspace whose ARM id is `id`, if there is one.
pub async fn customer_id_of(st: &AppState, id: &str) -> Result<Option<String>, ArmFailure> {
    Ok(load(st, id, WORKSPACE_TYPE)
        .await?
        .and_then(|r| customer_id_in(&r)))
}

/// A stored workspace's customer id and retention in days.
pub fn logs_of(r: &ResourceRecord) -> Option<(String, i64)> {
    (r.kind == WORKSPACE_TYPE)
        .then(|| serde_json::from_str::<Workspace>(&r.properties).ok())
        .flatten()
        .map(|w| (w.customer_id, w.retention_in_days))
}

/// A stored workspace's customer id.
pub fn customer_id_in(r: &ResourceRecord) -> Option<String> {
    logs_of(r).map(|(customer_id, _)| customer_id)
}

/// The workspace whose customer id is `customer_id` (any group of the
/// deployment's subscription), with its customer id as stored and its
/// retention in days.
pub async fn by_customer_id(
    st: &AppState,
    customer_id: &str,
) -> Result<Option<(ResourceRecord, String, i64)>, ArmFailure> {
    let all = st
        .store
        .list_resources(WORKSPACE_TYPE, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    Ok(all.into_iter().find_map(|r| {
        let (stored, days) = logs_of(&r)?;
        stored
            .eq_ignore_ascii_case(customer_id)
            .then_some((r, stored, days))
    }))
}

/// Every workspace of the deployment: customer id and retention in days.
pub async fn all_live(st: &AppState) -> Result<Vec<(String, i64)>, ArmFailure> {
    Ok(st
        .store
        .list_resources(WORKSPACE_TYPE, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?
        .iter()
        .filter_map(logs_of)
        .collect())
}

/// `PUT …/Microsoft.OperationalInsights/workspaces/{name}`: 201 created,
/// 200 updated; complete at once.
pub async fn put_workspace(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    let id = authorized(&st, &ctx, (&sub, &rg, &name), "write").await?;
    super::groups::require_group(&st, &sub, &rg).await?;
    if name.len() < 4 || name.len() > 63 || !valid_name(&name) || name.contains(['.', '_']) {
        return Err(bad(
            "The workspace name must be 4 to 63 letters, digits and hyphens.",
        ));
    }
    let env: Envelope = parse_body(req.into_body()).await?;
    let existing: Option<Workspace> = load(&st, &id, WORKSPACE_TYPE)
        .await?
        .and_then(|r| serde_json::from_str(&r.properties).ok());
    let retention = match env.properties.pointer("/retentionInDays") {
        None | Some(Value::Null) => existing.as_ref().map_or(30, |w| w.retention_in_days),
        Some(v) => match v.as_i64() {
            Some(d) if (30..=730).contains(&d) => d,
            _ => return Err(bad("retentionInDays must be between 30 and 730.")),
        },
    };
    let sku = match env.properties.pointer("/sku/name").and_then(Value::as_str) {
        Some(s) => s.to_owned(),
        None => existing
            .as_ref()
            .map_or_else(|| "PerGB2018".into(), |w| w.sku.clone()),
    };
    let w = Workspace {
        customer_id: existing
            .map(|w| w.customer_id)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        sku,
        retention_in_days: retention,
    };
    let props = serde_json::to_string(&w).map_err(|_| bad("Unserializable workspace."))?;
    let put = Put::tracked(id, WORKSPACE_TYPE, (&sub, &rg, &name), &env, props);
    let (rec, status) = upsert(&st, put).await?;
    Ok(reply(status, &out(&rec)))
}

/// `GET …/workspaces/{name}`.
pub async fn get_workspace(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = authorized(&st, &ctx, (&sub, &rg, &name), "read").await?;
    let r = load(&st, &id, WORKSPACE_TYPE)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(reply(StatusCode::OK, &out(&r)))
}

/// `GET …/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces`.
pub async fn list_workspaces(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Response, ArmFailure> {
    let mut value = Vec::new();
    for r in &in_group(&st, &sub, &rg).await? {
        if authorize(
            &st,
            &ctx,
            &r.id,
            "Microsoft.OperationalInsights/workspaces/read",
        )
        .await
        .is_ok()
        {
            value.push(out(r));
        }
    }
    Ok(reply(StatusCode::OK, &json!({ "value": value })))
}

/// `DELETE …/workspaces/{name}`: 200, or 204 if there was none.
pub async fn delete_workspace(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = authorized(&st, &ctx, (&sub, &rg, &name), "delete").await?;
    match load(&st, &id, WORKSPACE_TYPE).await? {
        Some(r) => {
            let resp = super::resource::remove(&st, &r.id).await?;
            forget_records(&st, &r);
            Ok(resp)
        }
        None => Ok(super::resource::deleted(false)),
    }
}

/// `POST …/workspaces/{name}/api/query` (and GET with `?query=`): the
/// ARM-routed form of the query API, with an ARM token.
pub async fn query_workspace(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, WORKSPACE_TYPE, &name);
    // Existence is told only to those who may read the workspace.
    authorize(&st, &ctx, &id, crate::http::logs::QUERY_ACTION).await?;
    let customer_id = customer_id_of(&st, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    query(
        &st,
        &ctx,
        crate::http::logs::Target::Workspace(customer_id),
        req,
    )
    .await
}

/// `POST {vault}/providers/Microsoft.Insights/logs` (and GET with
/// `?query=`): Azure's ARM-routed resource-context query (api-version
/// 2018-03-01-preview): the vault's records in every live workspace, with
/// an ARM token; what the portal's Logs panel asks.
pub async fn query_vault_logs(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, "Microsoft.KeyVault/vaults", &name);
    query(&st, &ctx, crate::http::logs::Target::Resource(id), req).await
}

/// Reads a query from the request (the body, or `?query=&timespan=` for
/// GET) and runs it for the caller.
async fn query(
    st: &AppState,
    ctx: &Ctx,
    target: crate::http::logs::Target,
    req: Request,
) -> Result<Response, ArmFailure> {
    let prefer = crate::http::logs::prefer_of(&req);
    let body = if req.method() == http::Method::GET {
        crate::http::logs::request_in_uri(&req)
    } else {
        let v: Value = parse_body(req.into_body()).await?;
        crate::http::logs::request_of(v).ok_or_else(|| {
            bad("The request body is not a valid query: {\"query\": \"…\", \"timespan\": \"…\"}.")
        })?
    };
    Ok(crate::http::logs::run_query(st, &ctx.caller, target, body, prefer.as_deref()).await)
}

/// Removes the workspaces of a resource group being deleted.
pub async fn delete_in_group(st: &AppState, sub: &str, rg: &str) -> Result<(), ArmFailure> {
    for r in &in_group(st, sub, rg).await? {
        st.store
            .delete_resource(&r.id)
            .await
            .map_err(|e| domain_failure(e.into()))?;
        forget_records(st, r);
    }
    Ok(())
}

/// Forgets a deleted workspace's records, in the background (a workspace
/// made later gets a new customer id, so records left by a node that stops
/// midway are read by no one).
fn forget_records(st: &AppState, r: &ResourceRecord) {
    if let Some(customer_id) = customer_id_in(r) {
        let st = st.clone();
        tokio::spawn(async move {
            crate::log_ingest::forget(&st, &customer_id, i64::MAX).await;
        });
    }
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{RG}/Microsoft.OperationalInsights/workspaces"),
            routing::get(list_workspaces),
        )
        .route(
            &format!("{RG}/Microsoft.OperationalInsights/workspaces/{{name}}"),
            routing::put(put_workspace)
                .get(get_workspace)
                .delete(delete_workspace),
        )
        .route(
            &format!("{RG}/Microsoft.OperationalInsights/workspaces/{{name}}/api/query"),
            routing::post(query_workspace).get(query_workspace),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/logs"),
            routing::post(query_vault_logs).get(query_vault_logs),
        )
}
