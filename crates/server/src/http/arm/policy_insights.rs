//! `Microsoft.PolicyInsights`: compliance states (`policyStates`
//! `queryResults` and `summarize`, 2019-10-01), on-demand evaluation
//! (`triggerEvaluation`) and remediation tasks (2021-10-01), as `az policy
//! state` and `az policy remediation` drive them.

use std::collections::{BTreeMap, HashMap};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use keyhaven_core::governance::{self, states::StateRow};
use keyhaven_core::{Principal, ResourceRecord};
use serde_json::{json, Map, Value};

use super::common::{
    domain_failure, method_not_allowed, not_supported, parse_body, split_at_provider, ArmFailure,
};
use crate::http::extract::query_map;
use crate::http::response::json as reply;
use crate::policy::{assignment_of, Catalog, ASSIGNMENT_TYPE};
use crate::state::AppState;

const MARKER: &str = "/providers/microsoft.policyinsights/";
/// ARM type of remediation tasks.
pub const REMEDIATION_TYPE: &str = "Microsoft.PolicyInsights/remediations";
/// Most states one query reads.
const MAX_STATES: u32 = 10_000;

/// Handles a `Microsoft.PolicyInsights` request, or returns it.
pub async fn handle(st: &AppState, caller: &Principal, req: Request) -> Result<Response, Request> {
    let Some((scope, names)) = split_at_provider(req.uri().path(), MARKER, true) else {
        return Err(req);
    };
    let rest: Vec<String> = names.iter().map(|s| s.to_ascii_lowercase()).collect();
    let query = query_map(req.uri().query());
    let method = req.method().clone();
    let body = req.into_body();
    let parts: Vec<&str> = rest.iter().map(String::as_str).collect();
    let out = match (parts.as_slice(), &method) {
        (["policystates", "latest" | "default", "queryresults"], &Method::POST | &Method::GET) => {
            query_results(st, caller, &scope, &query).await
        }
        (["policystates", "latest", "summarize"], &Method::POST) => {
            summarize(st, caller, &scope, &query).await
        }
        (["policystates", "latest", "triggerevaluation"], &Method::POST) => {
            trigger(st, caller, &scope).await
        }
        (["remediations"], &Method::GET) => list_remediations(st, caller, &scope).await,
        (["remediations", _], m) => {
            let name = names.get(1).cloned().unwrap_or_default();
            match *m {
                Method::GET => get_remediation(st, caller, &scope, &name).await,
                Method::PUT => put_remediation(st, caller, &scope, &name, body).await,
                Method::DELETE => delete_remediation(st, caller, &scope, &name).await,
                _ => Err(method_not_allowed()),
            }
        }
        (["remediations", _, "cancel"], &Method::POST) => {
            let name = names.get(1).cloned().unwrap_or_default();
            get_remediation(st, caller, &scope, &name).await
        }
        (["remediations", _, "listdeployments"], &Method::POST) => {
            Ok(reply(StatusCode::OK, &json!({"value": []})))
        }
        _ => Err(not_supported()),
    };
    Ok(out.unwrap_or_else(IntoResponse::into_response))
}

fn bad(code: &'static str, msg: impl Into<String>) -> ArmFailure {
    ArmFailure::new(StatusCode::BAD_REQUEST, code, msg)
}

/// The resource scope a query names: a scope as is; an assignment,
/// definition or initiative id by where it sits.
fn resource_scope(scope: &str) -> &str {
    let lower = scope.to_ascii_lowercase();
    match lower.find("/providers/microsoft.authorization/") {
        Some(i) => scope.get(..i).unwrap_or(scope),
        None => scope,
    }
}

fn check_scope(st: &AppState, scope: &str) -> Result<(), ArmFailure> {
    let sub = format!("/subscriptions/{}", st.subscription_id);
    if scope.is_empty() || !governance::in_scope(resource_scope(scope), &sub) {
        return Err(ArmFailure::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            "The scope is not in this deployment's subscription (management groups are not supported).",
        ));
    }
    Ok(())
}

/// The scope is this subscription's and the caller may perform `action`
/// there (an assignment or definition scope checks where it sits).
async fn permitted(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    action: &str,
) -> Result<(), ArmFailure> {
    check_scope(st, scope)?;
    super::resource::authorize_principal(st, caller, resource_scope(scope), action).await
}

/// The states at a scope, one per (assignment, member, resource): a vault's
/// object states fold into it as components.
async fn states_at(st: &AppState, scope: &str) -> Result<Vec<Value>, ArmFailure> {
    let lower = scope.to_ascii_lowercase();
    let by_definition = lower.contains("/providers/microsoft.authorization/policydefinitions/")
        || lower.contains("/providers/microsoft.authorization/policysetdefinitions/");
    let listed_at = if by_definition {
        resource_scope(scope)
    } else {
        scope
    };
    let rows = st
        .store
        .list_policy_states(listed_at, MAX_STATES)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    let mut grouped: BTreeMap<(String, String, String), (Value, Vec<StateRow>)> = BTreeMap::new();
    for r in rows {
        let Ok(rec) = serde_json::from_str::<Value>(&r.record) else {
            continue;
        };
        if by_definition {
            let def = crate::policy::at(&rec, "/policyDefinitionId")
                .as_str()
                .unwrap_or_default();
            let set = crate::policy::at(&rec, "/policySetDefinitionId")
                .as_str()
                .unwrap_or_default();
            if !def.eq_ignore_ascii_case(scope) && !set.eq_ignore_ascii_case(scope) {
                continue;
            }
        }
        let key = (
            r.resource_id.clone(),
            r.assignment_id.clone(),
            r.reference_id.clone(),
        );
        let entry = grouped
            .entry(key)
            .or_insert_with(|| (rec.clone(), Vec::new()));
        if r.component.is_empty() {
            entry.0 = rec;
        }
        entry.1.push(r);
    }
    let mut out = Vec::new();
    for (_, (mut rec, rows)) in grouped {
        let components: Vec<&StateRow> = rows.iter().filter(|r| !r.component.is_empty()).collect();
        let state = if rows.iter().any(|r| r.compliance == "NonCompliant") {
            "NonCompliant"
        } else if rows.iter().all(|r| r.compliance == "Exempt") {
            "Exempt"
        } else {
            "Compliant"
        };
        if let Some(m) = rec.as_object_mut() {
            m.remove("component");
            m.insert("complianceState".into(), json!(state));
            m.insert("isCompliant".into(), json!(state != "NonCompliant"));
            if !components.is_empty() {
                m.insert(
                    "components".into(),
                    Value::Array(
                        components
                            .iter()
                            .map(|c| {
                                let (kind, name) =
                                    c.component.split_once('/').unwrap_or(("", &c.component));
                                json!({
                                    "id": c.component,
                                    "type": kind,
                                    "name": name,
                                    "complianceState": c.compliance,
                                    "timestamp": governance::time::iso(c.time),
                                })
                            })
                            .collect(),
                    ),
                );
                if m.get("resourceType")
                    .and_then(Value::as_str)
                    .is_some_and(|t| {
                        t.to_ascii_lowercase()
                            .starts_with("microsoft.keyvault.data/")
                    })
                {
                    m.insert("resourceType".into(), json!(governance::aliases::VAULTS));
                }
            }
        }
        out.push(rec);
    }
    Ok(out)
}

/// `$filter` of a states query: clauses `field eq 'text'|true|false`
/// joined by `and`.
fn filter_states(
    states: Vec<Value>,
    q: &HashMap<String, String>,
) -> Result<Vec<Value>, ArmFailure> {
    let Some(raw) = q.get("$filter").map(|s| s.trim()).filter(|s| !s.is_empty()) else {
        return Ok(states);
    };
    let mut clauses = Vec::new();
    for part in split_and(raw) {
        let (field, value) = part.split_once(" eq ").ok_or_else(|| {
            bad(
                "InvalidFilter",
                format!(
                    "The filter clause '{}' is not supported; use field eq 'value'.",
                    part.chars().take(200).collect::<String>()
                ),
            )
        })?;
        let v = value.trim();
        let want = if let Some(t) = v.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
            json!(t)
        } else if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
            json!(v.eq_ignore_ascii_case("true"))
        } else {
            return Err(bad(
                "InvalidFilter",
                "Filter values must be quoted text, true or false.",
            ));
        };
        clauses.push((field.trim().to_owned(), want));
    }
    Ok(states
        .into_iter()
        .filter(|s| {
            clauses.iter().all(|(f, want)| {
                let got = s.as_object().and_then(|m| {
                    m.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(f))
                        .map(|(_, v)| v)
                });
                got.is_some_and(|g| governance::expr::loose_eq(g, want))
            })
        })
        .collect())
}

fn split_and(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let words: Vec<&str> = raw.split(' ').collect();
    for w in words {
        quoted ^= w.matches('\'').count() % 2 == 1;
        if !quoted && w.eq_ignore_ascii_case("and") {
            out.push(std::mem::take(&mut cur).trim().to_owned());
        } else {
            cur.push(' ');
            cur.push_str(w);
        }
    }
    out.push(cur.trim().to_owned());
    out
}

async fn query_results(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ArmFailure> {
    permitted(
        st,
        caller,
        scope,
        "Microsoft.PolicyInsights/policyStates/queryResults/read",
    )
    .await?;
    let mut states = filter_states(states_at(st, scope).await?, q)?;
    let expand = q
        .get("$expand")
        .is_some_and(|e| e.to_ascii_lowercase().contains("components"));
    if !expand {
        for s in &mut states {
            if let Some(m) = s.as_object_mut() {
                m.remove("components");
            }
        }
    }
    if let Some(top) = q.get("$top") {
        let n: usize = top
            .parse()
            .map_err(|_| bad("InvalidTop", "$top must be a positive integer."))?;
        states.truncate(n);
    }
    Ok(reply(
        StatusCode::OK,
        &json!({
            "@odata.context": "https://management.azure.com/subscriptions/$metadata#policyStates",
            "@odata.count": states.len(),
            "value": states,
        }),
    ))
}

fn results_of(states: &[&Value], query_uri: &str) -> Value {
    let nc: Vec<&&Value> = states
        .iter()
        .filter(|s| crate::policy::at(s, "/complianceState") == "NonCompliant")
        .collect();
    let resources: std::collections::BTreeSet<String> = nc
        .iter()
        .map(|s| {
            crate::policy::at(s, "/resourceId")
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .collect();
    let policies: std::collections::BTreeSet<String> = nc
        .iter()
        .map(|s| {
            format!(
                "{}|{}",
                crate::policy::at(s, "/policyAssignmentId")
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                crate::policy::at(s, "/policyDefinitionReferenceId")
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
            )
        })
        .collect();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for s in states {
        *by_state
            .entry(
                crate::policy::at(s, "/complianceState")
                    .as_str()
                    .unwrap_or("Unknown"),
            )
            .or_default() += 1;
    }
    json!({
        "queryResultsUri": query_uri,
        "nonCompliantResources": resources.len(),
        "nonCompliantPolicies": policies.len(),
        "resourceDetails": by_state.iter().map(|(k, v)| json!({"complianceState": k, "count": v})).collect::<Vec<_>>(),
        "policyDetails": [
            {"complianceState": "noncompliant", "count": policies.len()},
        ],
        "policyGroupDetails": [],
    })
}

async fn summarize(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ArmFailure> {
    permitted(
        st,
        caller,
        scope,
        "Microsoft.PolicyInsights/policyStates/summarize/read",
    )
    .await?;
    let states = filter_states(states_at(st, scope).await?, q)?;
    let uri = format!(
        "{}{scope}/providers/Microsoft.PolicyInsights/policyStates/latest/queryResults?api-version=2019-10-01",
        st.endpoints.management_url()
    );
    let all: Vec<&Value> = states.iter().collect();
    let mut assignments: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for s in &states {
        assignments
            .entry(
                crate::policy::at(s, "/policyAssignmentId")
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default()
            .push(s);
    }
    let per_assignment: Vec<Value> = assignments
        .iter()
        .map(|(aid, ss)| {
            let mut defs: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
            for s in ss {
                defs.entry((
                    crate::policy::at(s, "/policyDefinitionId").as_str().unwrap_or_default().to_owned(),
                    crate::policy::at(s, "/policyDefinitionReferenceId").as_str().unwrap_or_default().to_owned(),
                ))
                .or_default()
                .push(s);
            }
            json!({
                "policyAssignmentId": aid,
                "policySetDefinitionId": ss.first().and_then(|s| crate::policy::at(s, "/policySetDefinitionId").as_str()).unwrap_or_default(),
                "results": results_of(ss, &uri),
                "policyDefinitions": defs.iter().map(|((d, r), ds)| json!({
                    "policyDefinitionId": d,
                    "policyDefinitionReferenceId": r,
                    "policyDefinitionGroupNames": [],
                    "effect": ds.first().and_then(|s| crate::policy::at(s, "/policyDefinitionAction").as_str()).unwrap_or_default(),
                    "results": results_of(ds, &uri),
                })).collect::<Vec<_>>(),
                "policyGroups": [],
            })
        })
        .collect();
    Ok(reply(
        StatusCode::OK,
        &json!({
            "@odata.context": "https://management.azure.com/subscriptions/$metadata#summary",
            "@odata.count": 1,
            "value": [{
                "@odata.id": null,
                "@odata.context": "https://management.azure.com/subscriptions/$metadata#summary/$entity",
                "results": results_of(&all, &uri),
                "policyAssignments": per_assignment,
            }],
        }),
    ))
}

/// `triggerEvaluation`: scans now and answers when done (200; the CLI's
/// poller accepts a finished operation at once).
async fn trigger(st: &AppState, caller: &Principal, scope: &str) -> Result<Response, ArmFailure> {
    permitted(
        st,
        caller,
        scope,
        "Microsoft.PolicyInsights/policyStates/triggerEvaluation/action",
    )
    .await?;
    crate::policy_scan::scan(st, None, Some(resource_scope(scope)))
        .await
        .map_err(domain_failure)?;
    Ok(reply(StatusCode::OK, &json!({"status": "Succeeded"})))
}

fn remediation_id(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.PolicyInsights/remediations/{name}")
}

fn remediation_out(r: &ResourceRecord) -> Value {
    let props: Value = serde_json::from_str(&r.properties).unwrap_or_else(|_| json!({}));
    json!({"id": r.id, "name": r.name, "type": REMEDIATION_TYPE, "properties": props})
}

async fn put_remediation(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    name: &str,
    body: Body,
) -> Result<Response, ArmFailure> {
    allowed(st, caller, scope, "write").await?;
    if name.is_empty() || name.len() > 260 || name.contains(['\\', '?', '#', '%']) {
        return Err(bad(
            "InvalidRemediationName",
            "The remediation name is invalid.",
        ));
    }
    let body: Value = parse_body(body).await?;
    let p = body.get("properties").cloned().unwrap_or_else(|| json!({}));
    let aid = crate::policy::at(&p, "/policyAssignmentId")
        .as_str()
        .ok_or_else(|| {
            bad(
                "InvalidRequestContent",
                "The remediation needs a 'policyAssignmentId'.",
            )
        })?
        .to_owned();
    let assignment = st
        .store
        .get_resource(&aid)
        .await
        .map_err(|e| domain_failure(e.into()))?
        .filter(|r| r.kind == ASSIGNMENT_TYPE)
        .and_then(|r| assignment_of(&r).map(|a| (r, a)));
    let Some((arec, a)) = assignment else {
        return Err(ArmFailure::new(
            StatusCode::NOT_FOUND,
            "PolicyAssignmentNotFound",
            format!(
                "The policy assignment '{}' could not be found.",
                aid.chars().take(300).collect::<String>()
            ),
        ));
    };
    let refid = crate::policy::at(&p, "/policyDefinitionReferenceId")
        .as_str()
        .map(str::to_owned);
    if let Some(r) = &refid {
        let catalog = Catalog::load(st).await.map_err(domain_failure)?;
        let members = catalog.members(&a.definition_id).unwrap_or_default();
        if !members
            .iter()
            .any(|m| m.reference_id.eq_ignore_ascii_case(r))
        {
            return Err(bad(
                "InvalidPolicyDefinitionReferenceId",
                "The policy definition reference id is not in the assigned policy set definition.",
            ));
        }
    } else if Catalog::load(st)
        .await
        .map_err(domain_failure)?
        .members(&a.definition_id)
        .is_some()
    {
        return Err(bad(
            "MissingPolicyDefinitionReferenceId",
            "Remediating a policy set assignment needs a 'policyDefinitionReferenceId'.",
        ));
    }
    let mode = crate::policy::at(&p, "/resourceDiscoveryMode")
        .as_str()
        .unwrap_or("ExistingNonCompliant");
    if !mode.eq_ignore_ascii_case("ExistingNonCompliant")
        && !mode.eq_ignore_ascii_case("ReEvaluateCompliance")
    {
        return Err(bad(
            "InvalidResourceDiscoveryMode",
            "resourceDiscoveryMode must be ExistingNonCompliant or ReEvaluateCompliance.",
        ));
    }
    // Remediation runs where both the task and the assignment reach: the
    // task's scope inside the assignment's, or the assignment's inside the
    // task's; scopes that do not nest are refused (the caller's right is at
    // the task's scope only).
    let reach = if governance::in_scope(scope, &a.scope) {
        scope.to_owned()
    } else if governance::in_scope(&a.scope, scope) {
        a.scope.clone()
    } else {
        return Err(bad(
            "InvalidRemediationScope",
            "The remediation's scope and the policy assignment's scope do not overlap.",
        ));
    };
    let locations: Vec<String> = crate::policy::at(&p, "/filters/locations")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    let created_on = governance::time::iso(st.clock.now());
    let done = crate::policy_scan::remediate(st, &arec.id, refid.as_deref(), &reach, &locations)
        .await
        .map_err(domain_failure)?;
    let failed = done.total - done.succeeded;
    let mut props = Map::new();
    props.insert("policyAssignmentId".into(), json!(arec.id));
    if let Some(r) = &refid {
        props.insert("policyDefinitionReferenceId".into(), json!(r));
    }
    props.insert("resourceDiscoveryMode".into(), json!(mode));
    props.insert(
        "provisioningState".into(),
        json!(if failed == 0 { "Succeeded" } else { "Failed" }),
    );
    props.insert("createdOn".into(), json!(created_on));
    props.insert(
        "lastUpdatedOn".into(),
        json!(governance::time::iso(st.clock.now())),
    );
    props.insert(
        "filters".into(),
        p.get("filters")
            .cloned()
            .unwrap_or_else(|| json!({"locations": []})),
    );
    props.insert(
        "deploymentStatus".into(),
        json!({"totalDeployments": done.total, "successfulDeployments": done.succeeded, "failedDeployments": failed}),
    );
    props.insert(
        "resourceCount".into(),
        json!(crate::policy_scan::REMEDIATION_LIMIT),
    );
    props.insert("parallelDeployments".into(), json!(1));
    if let Some(e) = &done.first_error {
        props.insert("statusMessage".into(), json!(e));
    }
    let id = remediation_id(scope, name);
    let existing = load_remediation(st, scope, name).await?;
    let (rec, created) = super::resource::put_document(
        st,
        existing.as_ref(),
        super::resource::Document {
            id,
            kind: REMEDIATION_TYPE,
            subscription: &st.subscription_id,
            group: "",
            name,
            location: String::new(),
            tags: "{}".into(),
            properties: Value::Object(props).to_string(),
        },
    )
    .await?;
    super::common::reply(created, &remediation_out(&rec))
}

/// The caller may `verb` remediations at `scope` (in this subscription).
async fn allowed(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    verb: &str,
) -> Result<(), ArmFailure> {
    permitted(
        st,
        caller,
        scope,
        &format!("Microsoft.PolicyInsights/remediations/{verb}"),
    )
    .await
}

async fn load_remediation(
    st: &AppState,
    scope: &str,
    name: &str,
) -> Result<Option<ResourceRecord>, ArmFailure> {
    super::resource::load(st, &remediation_id(scope, name), REMEDIATION_TYPE).await
}

async fn get_remediation(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    name: &str,
) -> Result<Response, ArmFailure> {
    allowed(st, caller, scope, "read").await?;
    let r = load_remediation(st, scope, name).await?.ok_or_else(|| {
        ArmFailure::new(
            StatusCode::NOT_FOUND,
            "RemediationNotFound",
            "The remediation could not be found.",
        )
    })?;
    Ok(reply(StatusCode::OK, &remediation_out(&r)))
}

async fn list_remediations(
    st: &AppState,
    caller: &Principal,
    scope: &str,
) -> Result<Response, ArmFailure> {
    allowed(st, caller, scope, "read").await?;
    let all = st
        .store
        .list_resources(REMEDIATION_TYPE, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    let value: Vec<Value> = all
        .iter()
        .filter(|r| {
            split_at_provider(&r.id, MARKER, true)
                .is_some_and(|(s, _)| s.eq_ignore_ascii_case(scope))
        })
        .map(remediation_out)
        .collect();
    Ok(reply(StatusCode::OK, &json!({"value": value})))
}

async fn delete_remediation(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    name: &str,
) -> Result<Response, ArmFailure> {
    allowed(st, caller, scope, "delete").await?;
    let Some(r) = load_remediation(st, scope, name).await? else {
        return Ok(super::resource::deleted(false));
    };
    st.store
        .delete_resource(&r.id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    Ok(reply(StatusCode::OK, &remediation_out(&r)))
}
