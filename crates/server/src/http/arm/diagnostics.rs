//! Diagnostic settings of a vault (`Microsoft.Insights/diagnosticSettings`,
//! as `az monitor diagnostic-settings` writes them) choose where its audit
//! records go besides the node's chained file: a Log Analytics workspace
//! that `workspaceId` names (queried with KQL, see `docs/logs.md`), the
//! older log store inside Keyhaven (`workspaceId` or `storageAccountId`,
//! any value), queryable at `…/providers/Keyhaven.Insights/auditEvents`, and stdout
//! (`keyhavenStdout: true`). Categories: logs `AuditEvent` (groups `audit`,
//! `allLogs`), metrics `AllMetrics` (served on the admin listener).

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use keyhaven_core::{AuditQuery, ResourceRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::RG;
use super::common::{domain_failure, parse_body, ArmFailure, Ctx};
use super::resource::{upsert, Put};
use crate::http::response::json as reply;
use crate::state::AppState;
use axum::{routing, Router};

/// The ARM type of diagnostic settings.
pub const SETTING_TYPE: &str = "Microsoft.Insights/diagnosticSettings";

/// A stored diagnostic setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setting {
    /// The vault's ARM id.
    pub vault_id: String,
    /// Audit records enabled.
    pub audit: bool,
    /// Metrics enabled (`AllMetrics`).
    pub metrics: bool,
    /// `workspaceId` as given.
    pub workspace_id: Option<String>,
    /// `storageAccountId` as given.
    pub storage_account_id: Option<String>,
    /// Write records to stdout.
    pub stdout: bool,
    /// POST records (batched) to this URL.
    #[serde(default)]
    pub http_endpoint: Option<String>,
    /// The category group the logs were enabled by (`audit`, `allLogs`), if
    /// they were named by group rather than category; echoed back as given.
    #[serde(default)]
    pub log_group: Option<String>,
    /// `logAnalyticsDestinationType: Dedicated`: the workspace gets the
    /// resource-specific table (`AZKVAuditLogs`) instead of
    /// `AzureDiagnostics`.
    #[serde(default)]
    pub dedicated: bool,
    /// The customer id of the workspace `workspace_id` named when the
    /// setting was written (and the caller was found allowed to send to
    /// it): records go to that workspace only while it exists, never to
    /// one made later under the same name.
    #[serde(default)]
    pub workspace_customer_id: Option<String>,
}

impl Setting {
    /// Whether records go to the store.
    pub fn to_store(&self) -> bool {
        self.audit && (self.workspace_id.is_some() || self.storage_account_id.is_some())
    }
}

/// Where vaults' metrics go: (vault ARM id in lower case, customer id of
/// the workspace), for each setting with `AllMetrics` that names a
/// workspace its writer was allowed to send to.
pub async fn metric_routes(st: &AppState) -> Result<Vec<(String, String)>, ArmFailure> {
    Ok(st
        .store
        .list_resources(SETTING_TYPE, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?
        .iter()
        .filter_map(|r| serde_json::from_str::<Setting>(&r.properties).ok())
        .filter(|s| s.metrics)
        .filter_map(|s| {
            Some((
                s.vault_id.to_ascii_lowercase(),
                s.workspace_customer_id?.to_ascii_lowercase(),
            ))
        })
        .collect())
}

fn bad(msg: impl Into<String>) -> ArmFailure {
    ArmFailure::new(StatusCode::BAD_REQUEST, "BadRequest", msg.into())
}

async fn vault_of(
    st: &AppState,
    ctx: &Ctx,
    (sub, rg, vault): (&str, &str, &str),
    action: &str,
) -> Result<String, ArmFailure> {
    let id = super::vaults::find(st, sub, rg, vault).await?.resource_id();
    st.authz
        .require_action(&ctx.caller, &id, action)
        .await
        .map_err(domain_failure)?;
    Ok(id)
}

fn out(r: &ResourceRecord, s: &Setting) -> Value {
    let retention = json!({"enabled": false, "days": 0});
    json!({
        "id": r.id,
        "name": r.name,
        "type": SETTING_TYPE,
        "properties": {
            "workspaceId": s.workspace_id,
            "storageAccountId": s.storage_account_id,
            "logs": [match &s.log_group {
                Some(g) => json!({"category": null, "categoryGroup": g, "enabled": s.audit, "retentionPolicy": retention}),
                None => json!({"category": "AuditEvent", "categoryGroup": null, "enabled": s.audit, "retentionPolicy": retention}),
            }],
            "metrics": [{"category": "AllMetrics", "enabled": s.metrics, "retentionPolicy": retention}],
            "logAnalyticsDestinationType": if s.dedicated { Value::from("Dedicated") } else { Value::Null },
            "keyhavenStdout": s.stdout,
            "keyhavenHttpEndpoint": s.http_endpoint,
        }
    })
}

/// `GET {vault}/providers/Microsoft.Insights/diagnosticSettingsCategories`.
pub async fn categories(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault)): Path<(String, String, String)>,
) -> Result<Response, ArmFailure> {
    let id = vault_of(
        &st,
        &ctx,
        (&sub, &rg, &vault),
        "Microsoft.Insights/diagnosticSettingsCategories/read",
    )
    .await?;
    let cat = |name: &str, kind: &str, groups: Value| {
        json!({
            "id": format!("{id}/providers/microsoft.insights/diagnosticSettingsCategories/{name}"),
            "name": name,
            "type": "Microsoft.Insights/diagnosticSettingsCategories",
            "properties": {"categoryType": kind, "categoryGroups": groups},
        })
    };
    Ok(reply(
        StatusCode::OK,
        &json!({"value": [cat("AuditEvent", "Logs", json!(["audit", "allLogs"])), cat("AllMetrics", "Metrics", Value::Null)]}),
    ))
}

/// A boolean as ARM takes it: `true`, or the text `"True"` a template
/// parameter of type string gives.
fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn parse_setting(
    vault_id: &str,
    body: &Value,
    allow: &crate::audit_ship::AllowList,
) -> Result<Setting, ArmFailure> {
    let p = body.pointer("/properties").cloned().unwrap_or(Value::Null);
    let mut audit = false;
    let mut log_group = None;
    for l in p
        .pointer("/logs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let enabled = flag(l.get("enabled"));
        let category = l.get("category").and_then(Value::as_str);
        let group = l.get("categoryGroup").and_then(Value::as_str);
        let known = category.is_some_and(|c| c.eq_ignore_ascii_case("AuditEvent"))
            || group.is_some_and(|g| {
                g.eq_ignore_ascii_case("audit") || g.eq_ignore_ascii_case("allLogs")
            });
        if !known {
            return Err(bad(
                "Log category must be AuditEvent (or category group audit / allLogs).",
            ));
        }
        audit |= enabled;
        if category.is_none() {
            log_group = group.map(|g| {
                if g.eq_ignore_ascii_case("audit") {
                    "audit".to_owned()
                } else {
                    "allLogs".to_owned()
                }
            });
        }
    }
    let mut metrics = false;
    for m in p
        .pointer("/metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !m
            .get("category")
            .and_then(Value::as_str)
            .is_some_and(|c| c.eq_ignore_ascii_case("AllMetrics"))
        {
            return Err(bad("Metric category must be AllMetrics."));
        }
        metrics |= flag(m.get("enabled"));
    }
    let text = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let s = Setting {
        vault_id: vault_id.to_owned(),
        audit,
        metrics,
        workspace_id: text("workspaceId"),
        storage_account_id: text("storageAccountId"),
        stdout: p
            .get("keyhavenStdout")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        http_endpoint: text("keyhavenHttpEndpoint"),
        log_group,
        dedicated: match text("logAnalyticsDestinationType") {
            None => false,
            Some(t) if t.eq_ignore_ascii_case("Dedicated") => true,
            Some(t) if t.eq_ignore_ascii_case("AzureDiagnostics") => false,
            Some(_) => {
                return Err(bad(
                    "logAnalyticsDestinationType must be Dedicated or AzureDiagnostics.",
                ))
            }
        },
        workspace_customer_id: None,
    };
    if let Some(u) = s.http_endpoint.as_deref() {
        allow.check_url(u).map_err(bad)?;
    }
    if s.workspace_id.is_none()
        && s.storage_account_id.is_none()
        && !s.stdout
        && s.http_endpoint.is_none()
    {
        return Err(bad("At least one destination is needed: workspaceId or storageAccountId (Keyhaven's log store), keyhavenStdout or keyhavenHttpEndpoint."));
    }
    Ok(s)
}

/// `PUT {vault}/providers/Microsoft.Insights/diagnosticSettings/{name}`.
pub async fn put_setting(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault, name)): Path<(String, String, String, String)>,
    req: Request,
) -> Result<Response, ArmFailure> {
    let v = super::vaults::find(&st, &sub, &rg, &vault).await?;
    // Authorize before reading the body.
    st.authz
        .require_action(
            &ctx.caller,
            &v.resource_id(),
            "Microsoft.Insights/diagnosticSettings/write",
        )
        .await
        .map_err(domain_failure)?;
    let body: Value = parse_body(req.into_body()).await?;
    let (_, status, shown) = write_setting(&st, &ctx.caller, &v, &name, &body).await?;
    Ok(reply(status, &shown))
}

/// Creates or replaces the diagnostic setting `name` of vault `v` as
/// `caller` (a user through the API, or a policy assignment's identity
/// deploying it): returns the record, the status and the ARM shape.
pub async fn write_setting(
    st: &AppState,
    caller: &keyhaven_core::Principal,
    v: &keyhaven_core::VaultRecord,
    name: &str,
    body: &Value,
) -> Result<(ResourceRecord, StatusCode, Value), ArmFailure> {
    let vid = v.resource_id();
    st.authz
        .require_action(caller, &vid, "Microsoft.Insights/diagnosticSettings/write")
        .await
        .map_err(domain_failure)?;
    if name.is_empty() || name.len() > 260 || name.contains(['/', '\\', '?', '#', '%']) {
        return Err(bad("The diagnostic setting name is invalid."));
    }
    let mut s = parse_setting(&vid, body, &st.audit_http_allow)?;
    // Records may go only into a workspace the caller may send to (as on
    // Azure: the destination's shared-keys action), or anyone who can
    // write a vault's settings could fill a stranger's workspace. The
    // workspace is fixed by its customer id now: one that does not exist
    // yet never receives this setting's records.
    if let Some(ws) = s.workspace_id.as_deref() {
        if let Some(customer_id) = super::workspaces::customer_id_of(st, ws).await? {
            st.authz
                .require_action(
                    caller,
                    ws,
                    "Microsoft.OperationalInsights/workspaces/sharedKeys/action",
                )
                .await
                .map_err(domain_failure)?;
            s.workspace_customer_id = Some(customer_id);
        }
    }
    let id = format!("{vid}/providers/{SETTING_TYPE}/{name}");
    let properties = serde_json::to_string(&s).map_err(|_| bad("Unserializable setting."))?;
    let put = Put::extension(
        id,
        SETTING_TYPE,
        (&st.subscription_id, &v.resource_group, name),
        properties,
        StatusCode::OK,
    );
    let (rec, status) = upsert(st, put).await?;
    let shown = out(&rec, &s);
    Ok((rec, status, shown))
}

/// Every vault's diagnostic settings in their ARM shape, by the vault's id
/// in lower case (what policy existence conditions read).
pub async fn all_setting_views(
    st: &AppState,
) -> Result<std::collections::HashMap<String, Vec<Value>>, keyhaven_core::Error> {
    let mut by_vault: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for r in st
        .store
        .list_resources(SETTING_TYPE, &st.subscription_id)
        .await?
    {
        if let Ok(s) = serde_json::from_str::<Setting>(&r.properties) {
            by_vault
                .entry(s.vault_id.to_ascii_lowercase())
                .or_default()
                .push(out(&r, &s));
        }
    }
    Ok(by_vault)
}

fn settings_of(all: Vec<ResourceRecord>, vault_id: &str) -> Vec<(ResourceRecord, Setting)> {
    all.into_iter()
        .filter_map(|r| {
            serde_json::from_str::<Setting>(&r.properties)
                .ok()
                .map(|s| (r, s))
        })
        .filter(|(_, s)| s.vault_id.eq_ignore_ascii_case(vault_id))
        .collect()
}

/// `GET {vault}/providers/Microsoft.Insights/diagnosticSettings[/{name}]`.
pub async fn get_settings(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault)): Path<(String, String, String)>,
) -> Result<Response, ArmFailure> {
    let vid = vault_of(
        &st,
        &ctx,
        (&sub, &rg, &vault),
        "Microsoft.Insights/diagnosticSettings/read",
    )
    .await?;
    let all = st
        .store
        .list_resources(SETTING_TYPE, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    let value: Vec<Value> = settings_of(all, &vid)
        .iter()
        .map(|(r, s)| out(r, s))
        .collect();
    Ok(reply(StatusCode::OK, &json!({"value": value})))
}

/// `GET {vault}/providers/Microsoft.Insights/diagnosticSettings/{name}`.
pub async fn get_setting(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault, name)): Path<(String, String, String, String)>,
) -> Result<Response, ArmFailure> {
    let vid = vault_of(
        &st,
        &ctx,
        (&sub, &rg, &vault),
        "Microsoft.Insights/diagnosticSettings/read",
    )
    .await?;
    let id = format!("{vid}/providers/{SETTING_TYPE}/{name}");
    let r = st
        .store
        .get_resource(&id)
        .await
        .map_err(|e| domain_failure(e.into()))?
        .ok_or_else(|| {
            ArmFailure::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "No such diagnostic setting.",
            )
        })?;
    let s: Setting = serde_json::from_str(&r.properties).map_err(|_| bad("Corrupt setting."))?;
    Ok(reply(StatusCode::OK, &out(&r, &s)))
}

/// `DELETE {vault}/providers/Microsoft.Insights/diagnosticSettings/{name}`.
pub async fn delete_setting(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault, name)): Path<(String, String, String, String)>,
) -> Result<Response, ArmFailure> {
    let vid = vault_of(
        &st,
        &ctx,
        (&sub, &rg, &vault),
        "Microsoft.Insights/diagnosticSettings/delete",
    )
    .await?;
    super::resource::remove(&st, &format!("{vid}/providers/{SETTING_TYPE}/{name}")).await
}

/// Query parameters of the audit query.
#[derive(Debug, Deserialize)]
pub struct AuditParams {
    from: Option<String>,
    to: Option<String>,
    operation: Option<String>,
    caller: Option<String>,
    result: Option<String>,
    top: Option<u32>,
}

fn parse_time(s: &Option<String>, default: i64) -> Result<i64, ArmFailure> {
    match s {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .or_else(|| keyhaven_wire::graph::parse_iso8601(v))
            .ok_or_else(|| bad("from/to are Unix seconds or ISO 8601 times.")),
    }
}

/// `GET {vault}/providers/Keyhaven.Insights/auditEvents?from&to&operation&caller&result&top`:
/// the vault's records in Keyhaven's log store, newest first.
pub async fn query_audit(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault)): Path<(String, String, String)>,
    Query(p): Query<AuditParams>,
) -> Result<Response, ArmFailure> {
    let vid = vault_of(
        &st,
        &ctx,
        (&sub, &rg, &vault),
        "Microsoft.Insights/logs/read",
    )
    .await?;
    let q = AuditQuery {
        vault: vid.to_ascii_lowercase(),
        from: parse_time(&p.from, 0)?,
        to: parse_time(&p.to, i64::MAX)?,
        operation: p.operation.unwrap_or_default(),
        caller: p.caller.unwrap_or_default(),
        result: p.result.unwrap_or_default(),
        limit: p.top.unwrap_or(100).clamp(1, 1000),
    };
    let rows = st
        .store
        .query_audit(&q)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    let value: Vec<Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    Ok(reply(StatusCode::OK, &json!({"value": value})))
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettingsCategories"),
            routing::get(categories),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettings"),
            routing::get(get_settings),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettings/{{esub}}"),
            routing::put(put_setting)
                .get(get_setting)
                .delete(delete_setting),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Keyhaven.Insights/auditEvents"),
            routing::get(query_audit),
        )
}
