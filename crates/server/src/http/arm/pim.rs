//! Just-in-time roles over ARM (`Microsoft.Authorization`, api-version
//! 2020-10-01, approvals 2021-01-01-preview), in the shapes of Azure's
//! Privileged Identity Management for Azure resources:
//! eligibility schedule requests, schedules and instances; assignment
//! schedule requests (`SelfActivate`, `SelfDeactivate`, `AdminAssign`,
//! `AdminRemove`), schedules and instances; role management policies and
//! their assignments per (scope, role); approvals of activations.
//!
//! An activation (or an administrator's time-bound assignment) is an
//! ordinary role assignment with an end time: the authorization decision
//! ignores it from that time on every node; the scheduler removes it and
//! records the expiry in the audit log. An approval's decision is written
//! once (a create-if-absent in the store), so two approvers acting at once
//! cannot both decide.

use axum::body::Body;
use http::{Method, StatusCode};
use keyhaven_core::resource::ResourceRecord;
use keyhaven_core::{Error, Principal};
use keyhaven_identity::condition::Attributes;
use keyhaven_identity::pim::{self, Approver, Window};
use keyhaven_identity::rbac::{RoleAssignment, ScheduleLink, ROLE_ASSIGNMENT_TYPE};
use keyhaven_wire::oauth::iso8601;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::{domain_failure, method_not_allowed, parse_body, ArmFailure};
use crate::http::response::json;
use crate::state::AppState;

const AUTHZ: &str = "/providers/Microsoft.Authorization";
const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";
const READ: &str = "Microsoft.Authorization/roleAssignments/read";
const POLICY_WRITE: &str = "Microsoft.Authorization/roleManagementPolicies/write";
const POLICY_READ: &str = "Microsoft.Authorization/roleManagementPolicies/read";

type R = Result<axum::response::Response, ArmFailure>;

/// Who calls, and whether their token carries a second factor.
pub struct Caller<'a> {
    /// The principal.
    pub principal: &'a Principal,
    /// `amr` has `mfa`.
    pub mfa: bool,
}

/// Routes a `Microsoft.Authorization` PIM path (`rest` after the provider,
/// original case); `None` if it is not one.
pub async fn route(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    rest: &[String],
    method: &Method,
    query: &std::collections::HashMap<String, String>,
    body: Body,
) -> Option<R> {
    let scope = normalize_scope(scope);
    let kind = rest.first()?.to_ascii_lowercase();
    let name = rest.get(1).map(String::as_str);
    let tail = rest.get(2).map(|s| s.to_ascii_lowercase());
    let out = match (kind.as_str(), name, tail.as_deref(), rest.len()) {
        ("roleeligibilityschedulerequests" | "roleassignmentschedulerequests", None, None, 1)
            if *method == Method::GET =>
        {
            list_requests(st, caller, &scope, &kind, query).await
        }
        (
            "roleeligibilityschedulerequests" | "roleassignmentschedulerequests",
            Some(n),
            None,
            2,
        ) => match *method {
            Method::PUT => put_request(st, caller, &scope, &kind, n, body, false).await,
            Method::GET => get_request(st, caller, &scope, &kind, n).await,
            _ => Err(method_not_allowed()),
        },
        (
            "roleeligibilityschedulerequests" | "roleassignmentschedulerequests",
            Some(n),
            Some("validate"),
            3,
        ) if *method == Method::POST => put_request(st, caller, &scope, &kind, n, body, true).await,
        (
            "roleeligibilityschedulerequests" | "roleassignmentschedulerequests",
            Some(n),
            Some("cancel"),
            3,
        ) if *method == Method::POST => cancel_request(st, caller, &scope, &kind, n).await,
        (
            "roleeligibilityschedules"
            | "roleeligibilityscheduleinstances"
            | "roleassignmentschedules"
            | "roleassignmentscheduleinstances",
            n,
            None,
            1 | 2,
        ) if *method == Method::GET => list_schedules(st, caller, &scope, &kind, n, query).await,
        ("rolemanagementpolicies", None, None, 1) if *method == Method::GET => {
            list_policies(st, caller, &scope, false, query).await
        }
        ("rolemanagementpolicyassignments", None, None, 1) if *method == Method::GET => {
            list_policies(st, caller, &scope, true, query).await
        }
        ("rolemanagementpolicies", Some(n), None, 2) => match *method {
            Method::GET => get_policy(st, caller, &scope, n, false).await,
            Method::PATCH => patch_policy(st, caller, &scope, n, body).await,
            Method::DELETE => reset_policy(st, caller, &scope, n).await,
            _ => Err(method_not_allowed()),
        },
        ("rolemanagementpolicyassignments", Some(n), None, 2) if *method == Method::GET => {
            get_policy(st, caller, &scope, n, true).await
        }
        ("roleassignmentapprovals", None, None, 1) if *method == Method::GET => {
            list_approvals(st, caller).await
        }
        ("roleassignmentapprovals", Some(id), None, 2) if *method == Method::GET => {
            get_approval(st, caller, id).await
        }
        ("roleassignmentapprovals", Some(id), Some("stages"), 3) if *method == Method::GET => {
            get_approval(st, caller, id).await
        }
        ("roleassignmentapprovals", Some(id), Some("stages"), 4) => match *method {
            Method::GET => get_approval(st, caller, id).await,
            Method::PUT | Method::PATCH => review(st, caller, id, body).await,
            _ => Err(method_not_allowed()),
        },
        _ => return None,
    };
    Some(out)
}

/// `/providers/Microsoft.Subscription/subscriptions/{id}` is the subscription.
fn normalize_scope(scope: &str) -> String {
    let lower = scope.to_ascii_lowercase();
    match lower.strip_prefix("/providers/microsoft.subscription") {
        Some(_) => scope
            .get("/providers/Microsoft.Subscription".len()..)
            .unwrap_or(scope)
            .to_owned(),
        None => scope.to_owned(),
    }
}

fn bad(code: &'static str, m: impl Into<String>) -> ArmFailure {
    ArmFailure::new(StatusCode::BAD_REQUEST, code, m)
}

fn rules_failed(failed: &[&str]) -> ArmFailure {
    bad(
        "RoleAssignmentRequestPolicyValidationFailed",
        format!(
            "The following policy rules failed: {}",
            serde_json::to_string(failed).unwrap_or_default()
        ),
    )
}

fn store_err(e: keyhaven_core::StoreError) -> ArmFailure {
    domain_failure(Error::from(e))
}

fn guid_of(id: &str) -> String {
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

// ------------------------------------------------------------------ model

/// What Keyhaven keeps of a request, besides its Azure shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The Azure shape (`id`, `name`, `type`, `properties`).
    wire: Value,
    scope: String,
    role_guid: String,
    principal_id: String,
    requestor: String,
    start: i64,
    end: Option<i64>,
    /// The eligibility an activation uses.
    #[serde(default)]
    eligibility: Option<String>,
}

/// An eligibility schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Eligibility {
    name: String,
    scope: String,
    role_definition_id: String,
    principal_id: String,
    principal_type: String,
    request: String,
    start: i64,
    end: Option<i64>,
    created: i64,
}

impl Eligibility {
    fn active_at(&self, now: i64) -> bool {
        self.start <= now + 300 && self.end.is_none_or(|e| now < e)
    }
}

/// An approval of an activation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Approval {
    id: String,
    /// The request's full resource id.
    request: String,
    requestor: String,
    approvers: Vec<Approver>,
    created: i64,
    /// After this, no decision is taken (the request times out).
    #[serde(default)]
    expires: i64,
}

/// The decision on an approval, written once.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Decision {
    result: String,
    by: String,
    justification: String,
    at: i64,
}

fn decision_key(approval: &str) -> String {
    format!("pim_approval_decision:{}", approval.to_ascii_lowercase())
}

fn record(
    st: &AppState,
    id: String,
    kind: &str,
    name: &str,
    props: String,
    now: i64,
) -> ResourceRecord {
    ResourceRecord {
        id,
        kind: kind.into(),
        subscription_id: st.subscription_id.clone(),
        resource_group: String::new(),
        name: name.to_ascii_lowercase(),
        location: String::new(),
        tags: "{}".into(),
        properties: props,
        created: now,
        updated: now,
    }
}

async fn eligibilities(st: &AppState) -> Result<Vec<Eligibility>, ArmFailure> {
    Ok(st
        .store
        .list_resources(pim::ELIGIBILITY_TYPE, &st.subscription_id)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter_map(|r| serde_json::from_str(&r.properties).ok())
        .collect())
}

async fn requests(st: &AppState, kind: &str) -> Result<Vec<Stored>, ArmFailure> {
    Ok(st
        .store
        .list_resources(kind, &st.subscription_id)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter_map(|r| serde_json::from_str(&r.properties).ok())
        .collect())
}

fn request_type_of(kind: &str) -> &'static str {
    if kind == "roleeligibilityschedulerequests" {
        pim::ELIGIBILITY_REQUEST_TYPE
    } else {
        pim::ASSIGNMENT_REQUEST_TYPE
    }
}

fn request_id(scope: &str, kind: &str, name: &str) -> String {
    let seg = if kind == "roleeligibilityschedulerequests" {
        "roleEligibilityScheduleRequests"
    } else {
        "roleAssignmentScheduleRequests"
    };
    format!("{scope}{AUTHZ}/{seg}/{}", name.to_ascii_lowercase())
}

/// The policy rules of (scope, role): the stored ones, or the defaults.
async fn policy_rules(
    st: &AppState,
    scope: &str,
    role_guid: &str,
) -> Result<Vec<Value>, ArmFailure> {
    let id = policy_id(scope, role_guid);
    Ok(match st.store.get_resource(&id).await.map_err(store_err)? {
        Some(r) => serde_json::from_str::<Value>(&r.properties)
            .ok()
            .and_then(|v| v.get("rules").and_then(Value::as_array).cloned())
            .unwrap_or_else(pim::default_rules),
        None => pim::default_rules(),
    })
}

fn policy_id(scope: &str, role_guid: &str) -> String {
    format!(
        "{scope}{AUTHZ}/roleManagementPolicies/{}",
        pim::policy_guid(scope, role_guid)
    )
}

async fn principal_type(st: &AppState, id: &str) -> Result<(String, String), ArmFailure> {
    let p = st.directory.principal(id).await.map_err(|_| {
        bad(
            "PrincipalNotFound",
            format!(
                "Principal {} does not exist in the directory.",
                id.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let t = match p.kind.as_str() {
        "user" => "User",
        "group" => "Group",
        _ => "ServicePrincipal",
    };
    Ok((p.object_id, t.to_owned()))
}

async fn expanded(st: &AppState, scope: &str, role_guid: &str, principal: &str) -> Value {
    let role = st.authz.role_definitions().await.ok().and_then(|rs| {
        rs.into_iter()
            .find(|r| r.id.eq_ignore_ascii_case(role_guid))
    });
    let p = st.directory.principal(principal).await.ok();
    json!({
        "scope": {"id": scope, "displayName": scope.rsplit('/').next().unwrap_or(""),
                  "type": if scope.contains("/providers/") { "resource" } else if scope.contains("/resourceGroups/") { "resourcegroup" } else { "subscription" }},
        "roleDefinition": {"id": st.authz.definition_id(role_guid),
                           "displayName": role.as_ref().map(|r| r.role_name.clone()).unwrap_or_default(),
                           "type": role.as_ref().map_or("BuiltInRole", |r| if r.kind == "CustomRole" { "CustomRole" } else { "BuiltInRole" })},
        "principal": {"id": principal, "displayName": p.as_ref().map(|p| p.display_name.clone()).unwrap_or_default(),
                      "email": p.as_ref().and_then(|p| p.upn.clone()),
                      "type": p.as_ref().map_or("User", |p| match p.kind.as_str() { "user" => "User", "group" => "Group", _ => "ServicePrincipal" })},
    })
}

/// Whether `who` (or one of its groups) is `id`.
async fn is_or_member(st: &AppState, who: &Principal, id: &str) -> bool {
    st.authz
        .principal_ids(who)
        .await
        .is_ok_and(|ids| ids.iter().any(|x| x.eq_ignore_ascii_case(id)))
}

async fn may_read(st: &AppState, caller: &Principal, scope: &str) -> bool {
    st.authz.require_action(caller, scope, READ).await.is_ok()
}

// --------------------------------------------------------------- requests

#[derive(Deserialize)]
struct Body_ {
    properties: Option<Value>,
}

#[allow(clippy::too_many_lines)]
async fn put_request(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    kind: &str,
    name: &str,
    body: Body,
    validate_only: bool,
) -> R {
    if uuid::Uuid::parse_str(name).is_err() {
        return Err(bad(
            "InvalidRequestName",
            "The request name must be a GUID.",
        ));
    }
    st.authz.check_scope_of(scope).map_err(domain_failure)?;
    let b: Body_ = parse_body(body).await?;
    let p = b
        .properties
        .ok_or_else(|| bad("InvalidRequestContent", "properties are required."))?;
    let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
    let request_type = text("requestType").unwrap_or_default();
    let role_definition_id = text("roleDefinitionId").ok_or_else(|| {
        bad(
            "InvalidRequestContent",
            "properties.roleDefinitionId is required.",
        )
    })?;
    let principal = text("principalId").ok_or_else(|| {
        bad(
            "InvalidRequestContent",
            "properties.principalId is required.",
        )
    })?;
    let role_guid = guid_of(&role_definition_id);
    let eligibility_kind = kind == "roleeligibilityschedulerequests";
    // Authorized before anything is looked up, so a refused caller learns
    // nothing about which principals exist.
    {
        let rid = st.authz.definition_id(&role_guid);
        match request_type.as_str() {
            "SelfActivate" | "SelfExtend" | "SelfRenew" | "SelfDeactivate" if !eligibility_kind => {
                only_self(caller, &principal)?;
            }
            "AdminAssign" | "AdminUpdate" | "AdminExtend" | "AdminRenew" => {
                require(st, caller, scope, WRITE, &rid, &principal).await?;
            }
            "AdminRemove" => require(st, caller, scope, DELETE, &rid, &principal).await?,
            _ => {
                return Err(bad(
                    "InvalidRequestType",
                    format!(
                        "requestType '{}' is not valid for this request.",
                        request_type.chars().take(40).collect::<String>()
                    ),
                ))
            }
        }
    }
    if p.get("condition").is_some_and(|c| !c.is_null()) {
        return Err(bad(
            "InvalidCondition",
            "Conditions on eligible and scheduled role assignments are not supported by Keyhaven.",
        ));
    }
    let role = st
        .authz
        .role_definitions()
        .await
        .map_err(domain_failure)?
        .into_iter()
        .find(|r| r.id.eq_ignore_ascii_case(&role_guid))
        .ok_or_else(|| {
            bad(
                "RoleDefinitionDoesNotExist",
                "The specified role definition does not exist.",
            )
        })?;
    if role.kind == "CustomRole"
        && !role
            .assignable_scopes
            .iter()
            .any(|a| keyhaven_identity::rbac::scope_covers(a, scope))
    {
        return Err(bad(
            "InvalidRoleAssignmentScope",
            "The role is not assignable at this scope.",
        ));
    }
    let now = st.clock.now();
    let window =
        pim::window_of(p.get("scheduleInfo"), now).map_err(|m| bad("InvalidScheduleInfo", m))?;
    let justification = text("justification");
    let ticket = p
        .pointer("/ticketInfo/ticketNumber")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (principal_id, principal_type) = principal_type(st, &principal).await?;
    let role_definition_id = st.authz.definition_id(&role_guid);
    let mut status = "Provisioned";
    let mut approval_id: Option<String> = None;
    let mut target_schedule: Option<String> = None;
    let mut used_eligibility: Option<String> = None;
    let rules = pim::rules_of(&policy_rules(st, scope, &role_guid).await?);
    let effect = match (eligibility_kind, request_type.as_str()) {
        (true, "AdminAssign" | "AdminUpdate" | "AdminExtend" | "AdminRenew") => {
            let failed = pim::check_admin(
                rules.eligibility,
                rules.admin_eligibility_needs,
                &window,
                &pim::Activation {
                    window,
                    justification: justification.as_deref(),
                    ticket: ticket.as_deref(),
                    mfa: caller.mfa,
                    eligible: true,
                },
            );
            if !failed.is_empty() {
                return Err(rules_failed(&failed));
            }
            let existing: Vec<String> = eligibilities(st)
                .await?
                .into_iter()
                .filter(|e| {
                    e.scope.eq_ignore_ascii_case(scope)
                        && guid_of(&e.role_definition_id) == role_guid
                        && e.principal_id.eq_ignore_ascii_case(&principal_id)
                })
                .map(|e| e.name)
                .collect();
            if request_type == "AdminAssign" && !existing.is_empty() {
                return Err(ArmFailure::new(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    "The Role assignment already exists.",
                ));
            }
            let sched = existing
                .first()
                .cloned()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            target_schedule = Some(sched.clone());
            Effect::AddEligibility(Eligibility {
                name: sched,
                scope: scope.to_owned(),
                role_definition_id: role_definition_id.clone(),
                principal_id: principal_id.clone(),
                principal_type: principal_type.clone(),
                request: request_id(scope, kind, name),
                start: window.start,
                end: window.end,
                created: now,
            })
        }
        (true, "AdminRemove") => {
            require(
                st,
                caller,
                scope,
                DELETE,
                &role_definition_id,
                &principal_id,
            )
            .await?;
            let gone: Vec<String> = eligibilities(st)
                .await?
                .into_iter()
                .filter(|e| {
                    e.scope.eq_ignore_ascii_case(scope)
                        && guid_of(&e.role_definition_id) == role_guid
                        && e.principal_id.eq_ignore_ascii_case(&principal_id)
                })
                .map(|e| e.name)
                .collect();
            if gone.is_empty() {
                return Err(bad(
                    "RoleAssignmentDoesNotExist",
                    "The role assignment does not exist.",
                ));
            }
            status = "Revoked";
            Effect::RemoveEligibility(gone)
        }
        (false, "SelfActivate" | "SelfExtend" | "SelfRenew") => {
            // An activation starts now: a start far ahead would be a grant
            // nobody can see coming.
            if window.start > now + 300 {
                return Err(bad(
                    "InvalidScheduleInfo",
                    "An activation starts now: scheduleInfo.startDateTime may be at most 5 minutes ahead.",
                ));
            }
            // Eligible directly or through a group, for this role, at this
            // scope or above, now.
            let mine = st
                .authz
                .principal_ids(caller.principal)
                .await
                .map_err(domain_failure)?;
            let found = eligibilities(st).await?.into_iter().find(|e| {
                guid_of(&e.role_definition_id) == role_guid
                    && mine.iter().any(|m| m.eq_ignore_ascii_case(&e.principal_id))
                    && keyhaven_identity::rbac::scope_covers(&e.scope, scope)
                    && e.active_at(now)
            });
            // The policies of the requested scope and of the eligibility's
            // scope both apply: a stricter rule at either one holds.
            let mut rules = rules.clone();
            let other = match &found {
                Some(e) if !e.scope.eq_ignore_ascii_case(scope) => Some(pim::rules_of(
                    &policy_rules(st, &e.scope, &role_guid).await?,
                )),
                _ => None,
            };
            // An activation never outlives its eligibility.
            let mut window = window;
            if let (Some(e), Some(end)) = (found.as_ref().and_then(|e| e.end), window.end) {
                window.end = Some(end.min(e));
            }
            let facts = pim::Activation {
                window,
                justification: justification.as_deref(),
                ticket: ticket.as_deref(),
                mfa: caller.mfa,
                eligible: found.is_some(),
            };
            let mut failed = pim::check_activation(&rules, &facts);
            if let Some(o) = &other {
                for f in pim::check_activation(o, &facts) {
                    if !failed.contains(&f) {
                        failed.push(f);
                    }
                }
                if rules.approvers.is_none() {
                    rules.approvers.clone_from(&o.approvers);
                    rules.approval_timeout = o.approval_timeout;
                }
            }
            if !failed.is_empty() {
                return Err(rules_failed(&failed));
            }
            let eligibility = found.map(|e| e.name);
            used_eligibility.clone_from(&eligibility);
            if active_activation(st, scope, &role_guid, &principal_id, now)
                .await?
                .is_some()
            {
                return Err(ArmFailure::new(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    "The Role assignment already exists.",
                ));
            }
            match rules.approvers {
                Some(approvers) => {
                    let id = uuid::Uuid::new_v4().to_string();
                    approval_id = Some(format!("{AUTHZ}/roleAssignmentApprovals/{id}"));
                    status = "PendingApproval";
                    Effect::Approval(Approval {
                        id,
                        request: request_id(scope, kind, name),
                        requestor: caller.principal.object_id.clone(),
                        approvers,
                        created: now,
                        expires: now + rules.approval_timeout,
                    })
                }
                None => {
                    let a = activation(
                        scope,
                        &role_definition_id,
                        &principal_id,
                        window,
                        name,
                        eligibility,
                    );
                    target_schedule = Some(a.name.clone());
                    Effect::AddAssignment(Box::new(a))
                }
            }
        }
        (false, "SelfDeactivate") => {
            let Some(a) = active_activation(st, scope, &role_guid, &principal_id, now).await?
            else {
                return Err(bad(
                    "RoleAssignmentDoesNotExist",
                    "The role assignment does not exist.",
                ));
            };
            status = "Revoked";
            Effect::RemoveAssignments(vec![a])
        }
        (false, "AdminAssign" | "AdminUpdate" | "AdminExtend" | "AdminRenew") => {
            let failed = pim::check_admin(
                rules.admin_assignment,
                rules.admin_assignment_needs,
                &window,
                &pim::Activation {
                    window,
                    justification: justification.as_deref(),
                    ticket: ticket.as_deref(),
                    mfa: caller.mfa,
                    eligible: true,
                },
            );
            if !failed.is_empty() {
                return Err(rules_failed(&failed));
            }
            let a = activation(
                scope,
                &role_definition_id,
                &principal_id,
                window,
                name,
                None,
            );
            target_schedule = Some(a.name.clone());
            Effect::AddAssignment(Box::new(a))
        }
        (false, "AdminRemove") => {
            require(
                st,
                caller,
                scope,
                DELETE,
                &role_definition_id,
                &principal_id,
            )
            .await?;
            let gone: Vec<RoleAssignment> = st
                .authz
                .role_assignments(scope)
                .await
                .map_err(domain_failure)?
                .into_iter()
                .filter(|a| {
                    a.schedule.is_some()
                        && a.scope.eq_ignore_ascii_case(scope)
                        && a.role_guid().eq_ignore_ascii_case(&role_guid)
                        && a.principal_id.eq_ignore_ascii_case(&principal_id)
                })
                .collect();
            if gone.is_empty() {
                return Err(bad(
                    "RoleAssignmentDoesNotExist",
                    "The role assignment does not exist.",
                ));
            }
            status = "Revoked";
            Effect::RemoveAssignments(gone)
        }
        _ => {
            return Err(bad(
                "InvalidRequestType",
                format!(
                    "requestType '{}' is not valid for this request.",
                    request_type.chars().take(40).collect::<String>()
                ),
            ))
        }
    };
    let id = request_id(scope, kind, name);
    let props = json!({
        "scope": scope,
        "roleDefinitionId": role_definition_id,
        "principalId": principal_id,
        "principalType": principal_type,
        "requestType": request_type,
        "status": status,
        "approvalId": approval_id,
        "scheduleInfo": {"startDateTime": iso8601(window.start),
                         "expiration": match window.end {
                             Some(e) => json!({"type": "AfterDateTime", "endDateTime": iso8601(e), "duration": null}),
                             None => json!({"type": "NoExpiration", "endDateTime": null, "duration": null}),
                         }},
        if eligibility_kind { "targetRoleEligibilityScheduleId" } else { "targetRoleAssignmentScheduleId" }:
            target_schedule.as_ref().map(|t| format!("{scope}{AUTHZ}/{}/{t}", if eligibility_kind { "roleEligibilitySchedules" } else { "roleAssignmentSchedules" })),
        if eligibility_kind { "targetRoleEligibilityScheduleInstanceId" } else { "targetRoleAssignmentScheduleInstanceId" }: null,
        "linkedRoleEligibilityScheduleId": used_eligibility.as_ref().map(|e| format!("{scope}{AUTHZ}/roleEligibilitySchedules/{e}")),
        "justification": justification,
        "ticketInfo": {"ticketNumber": ticket, "ticketSystem": p.pointer("/ticketInfo/ticketSystem").cloned()},
        "condition": null,
        "conditionVersion": null,
        "createdOn": iso8601(now),
        "requestorId": caller.principal.object_id,
        "expandedProperties": expanded(st, scope, &role_guid, &principal_id).await,
    });
    let type_name = if eligibility_kind {
        "Microsoft.Authorization/RoleEligibilityScheduleRequests"
    } else {
        "Microsoft.Authorization/RoleAssignmentScheduleRequests"
    };
    let wire = json!({"id": id, "name": name.to_ascii_lowercase(), "type": type_name, "properties": props});
    if validate_only {
        return Ok(json(StatusCode::OK, &wire));
    }
    // The name is claimed once (create-if-absent), so two requests racing
    // for one name cannot both be written.
    if !st
        .store
        .put_setting_if_absent(&format!("pim_request:{}", id.to_ascii_lowercase()), b"1")
        .await
        .map_err(store_err)?
        || st
            .store
            .get_resource(&id)
            .await
            .map_err(store_err)?
            .is_some()
    {
        return Err(ArmFailure::new(
            StatusCode::CONFLICT,
            "RoleAssignmentRequestExists",
            "A request with this name already exists.",
        ));
    }
    let stored = Stored {
        wire: wire.clone(),
        scope: scope.to_owned(),
        role_guid: role_guid.clone(),
        principal_id: principal_id.clone(),
        requestor: caller.principal.object_id.clone(),
        start: window.start,
        end: window.end,
        eligibility: used_eligibility,
    };
    // The writes run in their own task: a client that goes away cannot
    // stop them half-way. A revocation takes effect before it is recorded;
    // a grant is recorded before it takes effect.
    let st2 = st.clone();
    let (scope2, kind2, name2, id2) = (
        scope.to_owned(),
        kind.to_owned(),
        name.to_owned(),
        id.clone(),
    );
    tokio::spawn(
        async move { apply(&st2, &scope2, &kind2, &name2, &id2, stored, effect, now).await },
    )
    .await
    .map_err(|_| {
        ArmFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The request could not be completed.",
        )
    })??;
    Ok(json(StatusCode::CREATED, &wire))
}

/// What a request does, checked first; written only when not validating.
enum Effect {
    AddEligibility(Eligibility),
    RemoveEligibility(Vec<String>),
    AddAssignment(Box<RoleAssignment>),
    RemoveAssignments(Vec<RoleAssignment>),
    Approval(Approval),
}

/// Writes a checked request and its effect.
#[allow(clippy::too_many_arguments)]
async fn apply(
    st: &AppState,
    scope: &str,
    kind: &str,
    name: &str,
    id: &str,
    stored: Stored,
    effect: Effect,
    now: i64,
) -> Result<(), ArmFailure> {
    let write_request = || async {
        st.store
            .put_resource(&record(
                st,
                id.to_owned(),
                request_type_of(kind),
                name,
                serde_json::to_string(&stored).unwrap_or_default(),
                now,
            ))
            .await
            .map_err(store_err)
            .map(|_| ())
    };
    match effect {
        Effect::AddEligibility(e) => {
            write_request().await?;
            let eid = format!("{scope}{AUTHZ}/roleEligibilitySchedules/{}", e.name);
            st.store
                .put_resource(&record(
                    st,
                    eid,
                    pim::ELIGIBILITY_TYPE,
                    &e.name,
                    serde_json::to_string(&e).unwrap_or_default(),
                    now,
                ))
                .await
                .map_err(store_err)?;
        }
        Effect::RemoveEligibility(names) => {
            // The eligibility goes, and with it every activation it made
            // that has not ended (live or scheduled).
            for a in st
                .authz
                .role_assignments(scope)
                .await
                .map_err(domain_failure)?
            {
                if a.schedule
                    .as_ref()
                    .and_then(|l| l.eligibility.as_ref())
                    .is_some_and(|e| names.iter().any(|n| n.eq_ignore_ascii_case(e)))
                {
                    st.store
                        .delete_resource(&keyhaven_identity::Evaluator::assignment_id(
                            &a.scope, &a.name,
                        ))
                        .await
                        .map_err(store_err)?;
                }
            }
            for n in names {
                st.store
                    .delete_resource(&format!("{scope}{AUTHZ}/roleEligibilitySchedules/{n}"))
                    .await
                    .map_err(store_err)?;
            }
            write_request().await?;
        }
        Effect::AddAssignment(a) => {
            write_request().await?;
            put_assignment(st, &a, now).await?;
            tracing::info!(principal = %a.principal_id, role = %a.role_guid(), scope = %a.scope, ends = ?a.ends, "role activated");
        }
        Effect::RemoveAssignments(list) => {
            for a in list {
                st.store
                    .delete_resource(&keyhaven_identity::Evaluator::assignment_id(
                        &a.scope, &a.name,
                    ))
                    .await
                    .map_err(store_err)?;
            }
            write_request().await?;
        }
        Effect::Approval(a) => {
            write_request().await?;
            st.store
                .put_resource(&record(
                    st,
                    format!("{AUTHZ}/roleAssignmentApprovals/{}", a.id),
                    pim::APPROVAL_TYPE,
                    &a.id,
                    serde_json::to_string(&a).unwrap_or_default(),
                    now,
                ))
                .await
                .map_err(store_err)?;
        }
    }
    Ok(())
}

/// An administrator's request is authorized as the role assignment write
/// or delete it amounts to (with its ABAC attributes).
async fn require(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    action: &str,
    role_definition_id: &str,
    principal_id: &str,
) -> Result<(), ArmFailure> {
    let attrs = if action == WRITE {
        Attributes::assignment_write(role_definition_id, principal_id)
    } else {
        Attributes::assignment_delete(role_definition_id, principal_id)
    };
    st.authz
        .require_action_with(caller.principal, scope, action, &attrs)
        .await
        .map_err(domain_failure)
}

/// A self-service request names the caller.
fn only_self(caller: &Caller<'_>, principal_id: &str) -> Result<(), ArmFailure> {
    if principal_id.eq_ignore_ascii_case(&caller.principal.object_id) {
        Ok(())
    } else {
        Err(ArmFailure::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "A principal activates and deactivates only its own roles: principalId must be the caller.",
        ))
    }
}

/// The role assignment an activation (or an administrator's time-bound
/// assignment) makes.
fn activation(
    scope: &str,
    role_definition_id: &str,
    principal_id: &str,
    w: Window,
    request: &str,
    eligibility: Option<String>,
) -> RoleAssignment {
    RoleAssignment {
        name: uuid::Uuid::new_v4().to_string(),
        role_definition_id: role_definition_id.to_owned(),
        principal_id: principal_id.to_owned(),
        principal_type: String::new(),
        scope: scope.trim_end_matches('/').to_owned(),
        condition: None,
        starts: Some(w.start),
        ends: w.end,
        schedule: Some(ScheduleLink {
            request: request.to_ascii_lowercase(),
            eligibility,
        }),
    }
}

async fn put_assignment(st: &AppState, a: &RoleAssignment, now: i64) -> Result<(), ArmFailure> {
    let mut a = a.clone();
    if a.principal_type.is_empty() {
        a.principal_type = principal_type(st, &a.principal_id).await?.1;
    }
    st.store
        .put_resource(&record(
            st,
            keyhaven_identity::Evaluator::assignment_id(&a.scope, &a.name),
            ROLE_ASSIGNMENT_TYPE,
            &a.name,
            serde_json::to_string(&a).unwrap_or_default(),
            now,
        ))
        .await
        .map_err(store_err)?;
    Ok(())
}

/// The caller's live activation of a role at a scope.
async fn active_activation(
    st: &AppState,
    scope: &str,
    role_guid: &str,
    principal: &str,
    now: i64,
) -> Result<Option<RoleAssignment>, ArmFailure> {
    Ok(st
        .authz
        .role_assignments(scope)
        .await
        .map_err(domain_failure)?
        .into_iter()
        .find(|a| {
            a.schedule.as_ref().is_some_and(|s| s.eligibility.is_some())
                && a.ends.is_none_or(|e| now < e)
                && a.scope.eq_ignore_ascii_case(scope.trim_end_matches('/'))
                && a.role_guid().eq_ignore_ascii_case(role_guid)
                && a.principal_id.eq_ignore_ascii_case(principal)
        }))
}

async fn get_request(st: &AppState, caller: &Caller<'_>, scope: &str, kind: &str, name: &str) -> R {
    let id = request_id(scope, kind, name);
    let not_found = || {
        ArmFailure::new(
            StatusCode::NOT_FOUND,
            "RoleAssignmentScheduleRequestNotFound",
            "The request does not exist.",
        )
    };
    let r = st
        .store
        .get_resource(&id)
        .await
        .map_err(store_err)?
        .ok_or_else(not_found)?;
    let s: Stored = serde_json::from_str(&r.properties).map_err(|_| not_found())?;
    if !visible(st, caller.principal, &s).await {
        return Err(not_found());
    }
    Ok(json(StatusCode::OK, &s.wire))
}

/// A request is visible to its target, its requestor, its approvers, and
/// whoever may read role assignments at its scope.
async fn visible(st: &AppState, who: &Principal, s: &Stored) -> bool {
    if who.object_id.eq_ignore_ascii_case(&s.principal_id)
        || who.object_id.eq_ignore_ascii_case(&s.requestor)
        || may_read(st, who, &s.scope).await
    {
        return true;
    }
    // Approvers see what they are asked to approve.
    match s
        .wire
        .pointer("/properties/approvalId")
        .and_then(Value::as_str)
    {
        Some(id) => match approval(st, id).await {
            Ok((a, _)) => is_approver(st, who, &a).await,
            Err(_) => false,
        },
        None => false,
    }
}

async fn list_requests(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    kind: &str,
    q: &std::collections::HashMap<String, String>,
) -> R {
    let filter = q
        .get("$filter")
        .map(|f| f.to_ascii_lowercase())
        .unwrap_or_default();
    let me = caller.principal.object_id.to_ascii_lowercase();
    let can_read = may_read(st, caller.principal, scope).await;
    let mut value = Vec::new();
    for s in requests(st, request_type_of(kind)).await? {
        let covers = keyhaven_identity::rbac::scope_covers(scope, &s.scope)
            || keyhaven_identity::rbac::scope_covers(&s.scope, scope);
        let pass = if filter.contains("astarget()") {
            s.principal_id.eq_ignore_ascii_case(&me)
        } else if filter.contains("asrequestor()") {
            s.requestor.eq_ignore_ascii_case(&me)
        } else if let Some(pid) = principal_filter(&filter) {
            s.principal_id.eq_ignore_ascii_case(&pid) && covers
        } else {
            covers
        };
        if pass && (can_read || visible(st, caller.principal, &s).await) {
            value.push(s.wire);
        }
    }
    Ok(json(StatusCode::OK, &json!({"value": value})))
}

fn principal_filter(filter: &str) -> Option<String> {
    let at = filter.find("principalid eq")?;
    let rest = filter.get(at + "principalid eq".len()..)?.trim();
    let v: String = rest
        .trim_start_matches('\'')
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    (!v.is_empty()).then_some(v)
}

async fn cancel_request(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    kind: &str,
    name: &str,
) -> R {
    let id = request_id(scope, kind, name);
    let not_found = || {
        ArmFailure::new(
            StatusCode::NOT_FOUND,
            "RoleAssignmentScheduleRequestNotFound",
            "The request does not exist.",
        )
    };
    let r = st
        .store
        .get_resource(&id)
        .await
        .map_err(store_err)?
        .ok_or_else(not_found)?;
    let mut s: Stored = serde_json::from_str(&r.properties).map_err(|_| not_found())?;
    if !s
        .requestor
        .eq_ignore_ascii_case(&caller.principal.object_id)
    {
        st.authz
            .require_action(caller.principal, &s.scope, DELETE)
            .await
            .map_err(domain_failure)?;
    }
    let status = s
        .wire
        .pointer("/properties/status")
        .and_then(Value::as_str)
        .unwrap_or("");
    if status != "PendingApproval" {
        return Err(bad(
            "RequestCannotBeCancelled",
            "Only a request pending approval can be cancelled.",
        ));
    }
    // Cancelling is a decision too: written once, so an approval racing it
    // loses (or wins) cleanly.
    let approval = s
        .wire
        .pointer("/properties/approvalId")
        .and_then(Value::as_str)
        .map(guid_of)
        .unwrap_or_default();
    let d = Decision {
        result: "Canceled".into(),
        by: caller.principal.object_id.clone(),
        justification: String::new(),
        at: st.clock.now(),
    };
    if !st
        .store
        .put_setting_if_absent(
            &decision_key(&approval),
            &serde_json::to_vec(&d).unwrap_or_default(),
        )
        .await
        .map_err(store_err)?
    {
        return Err(bad(
            "RequestCannotBeCancelled",
            "The request was already decided.",
        ));
    }
    set_status(st, &mut s, &r, "Canceled").await?;
    Ok(json(StatusCode::OK, &json!({})))
}

async fn set_status(
    st: &AppState,
    s: &mut Stored,
    r: &ResourceRecord,
    status: &str,
) -> Result<(), ArmFailure> {
    if let Some(p) = s.wire.get_mut("properties").and_then(Value::as_object_mut) {
        p.insert("status".into(), json!(status));
    }
    let mut rec = r.clone();
    rec.properties = serde_json::to_string(&*s).unwrap_or_default();
    rec.updated = st.clock.now();
    st.store.put_resource(&rec).await.map_err(store_err)?;
    Ok(())
}

// -------------------------------------------------------------- schedules

async fn list_schedules(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    kind: &str,
    name: Option<&str>,
    q: &std::collections::HashMap<String, String>,
) -> R {
    let filter = q
        .get("$filter")
        .map(|f| f.to_ascii_lowercase())
        .unwrap_or_default();
    let me = caller.principal.object_id.clone();
    let mine = st
        .authz
        .principal_ids(caller.principal)
        .await
        .map_err(domain_failure)?;
    let can_read = may_read(st, caller.principal, scope).await;
    let now = st.clock.now();
    let instance = kind.ends_with("instances");
    let mut value = Vec::new();
    let wanted = |principal: &str, at: &str| -> bool {
        let covers = keyhaven_identity::rbac::scope_covers(scope, at)
            || keyhaven_identity::rbac::scope_covers(at, scope);
        let target = mine.iter().any(|m| m.eq_ignore_ascii_case(principal));
        let pass = if filter.contains("astarget()") {
            target
        } else if let Some(pid) = principal_filter(&filter) {
            principal.eq_ignore_ascii_case(&pid)
        } else {
            true
        };
        covers && pass && (can_read || target)
    };
    if kind.starts_with("roleeligibility") {
        for e in eligibilities(st).await? {
            if !wanted(&e.principal_id, &e.scope)
                || name.is_some_and(|n| !n.eq_ignore_ascii_case(&e.name))
            {
                continue;
            }
            let seg = if instance {
                "roleEligibilityScheduleInstances"
            } else {
                "roleEligibilitySchedules"
            };
            let role_guid = guid_of(&e.role_definition_id);
            value.push(json!({
                "id": format!("{}{AUTHZ}/{seg}/{}", e.scope, e.name),
                "name": e.name,
                "type": format!("Microsoft.Authorization/{seg}"),
                "properties": {
                    "scope": e.scope, "roleDefinitionId": e.role_definition_id, "principalId": e.principal_id,
                    "principalType": e.principal_type,
                    "roleEligibilityScheduleRequestId": e.request,
                    "roleEligibilityScheduleId": format!("{}{AUTHZ}/roleEligibilitySchedules/{}", e.scope, e.name),
                    "memberType": if e.principal_id.eq_ignore_ascii_case(&me) || !instance { "Direct" } else { "Group" },
                    "status": if e.active_at(now) { "Provisioned" } else { "Expired" },
                    "startDateTime": iso8601(e.start), "endDateTime": e.end.map(iso8601),
                    "condition": null, "conditionVersion": null,
                    "createdOn": iso8601(e.created), "updatedOn": iso8601(e.created),
                    "expandedProperties": expanded(st, &e.scope, &role_guid, &e.principal_id).await,
                }
            }));
        }
    } else {
        for a in st
            .authz
            .role_assignments(scope)
            .await
            .map_err(domain_failure)?
        {
            if !wanted(&a.principal_id, &a.scope)
                || name.is_some_and(|n| !n.eq_ignore_ascii_case(&a.name))
            {
                continue;
            }
            let seg = if instance {
                "roleAssignmentScheduleInstances"
            } else {
                "roleAssignmentSchedules"
            };
            let link = a.schedule.clone();
            value.push(json!({
                "id": format!("{}{AUTHZ}/{seg}/{}", a.scope, a.name),
                "name": a.name,
                "type": format!("Microsoft.Authorization/{seg}"),
                "properties": {
                    "scope": a.scope, "roleDefinitionId": a.role_definition_id, "principalId": a.principal_id,
                    "principalType": a.principal_type,
                    "roleAssignmentScheduleId": format!("{}{AUTHZ}/roleAssignmentSchedules/{}", a.scope, a.name),
                    "originRoleAssignmentId": keyhaven_identity::Evaluator::assignment_id(&a.scope, &a.name),
                    "roleAssignmentScheduleRequestId": link.as_ref().map(|l| format!("{}{AUTHZ}/roleAssignmentScheduleRequests/{}", a.scope, l.request)),
                    "linkedRoleEligibilityScheduleId": link.as_ref().and_then(|l| l.eligibility.as_ref()).map(|e| format!("{}{AUTHZ}/roleEligibilitySchedules/{e}", a.scope)),
                    "assignmentType": if link.as_ref().is_some_and(|l| l.eligibility.is_some()) { "Activated" } else { "Assigned" },
                    "memberType": "Direct",
                    "status": "Provisioned",
                    "startDateTime": a.starts.map(iso8601), "endDateTime": a.ends.map(iso8601),
                    "condition": a.condition, "conditionVersion": a.condition.as_ref().map(|_| "2.0"),
                    "expandedProperties": expanded(st, &a.scope, a.role_guid(), &a.principal_id).await,
                }
            }));
        }
    }
    if name.is_some() {
        return match value.into_iter().next() {
            Some(v) => Ok(json(StatusCode::OK, &v)),
            None => Err(ArmFailure::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The schedule does not exist.",
            )),
        };
    }
    Ok(json(StatusCode::OK, &json!({"value": value})))
}

// --------------------------------------------------------------- policies

/// The (role guid) a policy or policy-assignment name stands for at `scope`.
async fn role_of_policy_name(st: &AppState, scope: &str, name: &str) -> Result<String, ArmFailure> {
    let guid = name.split('_').next().unwrap_or(name).to_ascii_lowercase();
    st.authz
        .role_definitions()
        .await
        .map_err(domain_failure)?
        .into_iter()
        .map(|r| r.id.to_ascii_lowercase())
        .find(|r| pim::policy_guid(scope, r) == guid)
        .ok_or_else(|| {
            ArmFailure::new(
                StatusCode::NOT_FOUND,
                "RoleManagementPolicyNotFound",
                "The role management policy does not exist at this scope.",
            )
        })
}

async fn policy_out(
    st: &AppState,
    scope: &str,
    role_guid: &str,
    assignment: bool,
) -> Result<Value, ArmFailure> {
    let rules = policy_rules(st, scope, role_guid).await?;
    let pguid = pim::policy_guid(scope, role_guid);
    let pid = policy_id(scope, role_guid);
    let role = st
        .authz
        .role_definitions()
        .await
        .map_err(domain_failure)?
        .into_iter()
        .find(|r| r.id.eq_ignore_ascii_case(role_guid));
    Ok(if assignment {
        json!({
            "id": format!("{scope}{AUTHZ}/roleManagementPolicyAssignment/{pguid}_{role_guid}"),
            "name": format!("{pguid}_{role_guid}"),
            "type": "Microsoft.Authorization/RoleManagementPolicyAssignment",
            "properties": {"scope": scope, "roleDefinitionId": st.authz.definition_id(role_guid), "policyId": pid,
                           "effectiveRules": rules,
                           "policyAssignmentProperties": {
                               "scope": {"id": scope, "displayName": scope.rsplit('/').next().unwrap_or(""), "type": "subscription"},
                               "roleDefinition": {"id": st.authz.definition_id(role_guid), "displayName": role.as_ref().map(|r| r.role_name.clone()), "type": "BuiltInRole"},
                               "policy": {"id": pid, "lastModifiedBy": null, "lastModifiedDateTime": null}}}
        })
    } else {
        json!({
            "id": pid, "name": pguid, "type": "Microsoft.Authorization/RoleManagementPolicies",
            "properties": {"scope": scope, "displayName": role.as_ref().map(|r| r.role_name.clone()).unwrap_or_default(),
                           "description": "", "isOrganizationDefault": false, "lastModifiedBy": null,
                           "lastModifiedDateTime": null, "rules": rules, "effectiveRules": rules,
                           "policyProperties": {"scope": {"id": scope, "displayName": scope.rsplit('/').next().unwrap_or(""), "type": "subscription"}}}
        })
    })
}

async fn list_policies(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    assignment: bool,
    q: &std::collections::HashMap<String, String>,
) -> R {
    st.authz
        .require_action(caller.principal, scope, POLICY_READ)
        .await
        .map_err(domain_failure)?;
    let wanted = q
        .get("$filter")
        .and_then(|f| f.split('\'').nth(1))
        .map(guid_of);
    let mut value = Vec::new();
    for r in st.authz.role_definitions().await.map_err(domain_failure)? {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.eq_ignore_ascii_case(&r.id))
        {
            continue;
        }
        value.push(policy_out(st, scope, &r.id.to_ascii_lowercase(), assignment).await?);
    }
    Ok(json(StatusCode::OK, &json!({"value": value})))
}

async fn get_policy(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    name: &str,
    assignment: bool,
) -> R {
    st.authz
        .require_action(caller.principal, scope, POLICY_READ)
        .await
        .map_err(domain_failure)?;
    let role = role_of_policy_name(st, scope, name).await?;
    Ok(json(
        StatusCode::OK,
        &policy_out(st, scope, &role, assignment).await?,
    ))
}

async fn patch_policy(
    st: &AppState,
    caller: &Caller<'_>,
    scope: &str,
    name: &str,
    body: Body,
) -> R {
    let role = role_of_policy_name(st, scope, name).await?;
    st.authz
        .require_action(caller.principal, scope, POLICY_WRITE)
        .await
        .map_err(domain_failure)?;
    let b: Body_ = parse_body(body).await?;
    let patch = b
        .properties
        .as_ref()
        .and_then(|p| p.get("rules"))
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| bad("InvalidRequestContent", "properties.rules is required."))?;
    let mut rules = policy_rules(st, scope, &role).await?;
    pim::merge_rules(&mut rules, &patch).map_err(|m| bad("InvalidRoleManagementPolicyRule", m))?;
    let now = st.clock.now();
    let pid = policy_id(scope, &role);
    st.store
        .put_resource(&record(
            st,
            pid,
            pim::POLICY_TYPE,
            &pim::policy_guid(scope, &role),
            json!({"rules": rules, "by": caller.principal.object_id, "at": now}).to_string(),
            now,
        ))
        .await
        .map_err(store_err)?;
    Ok(json(
        StatusCode::OK,
        &policy_out(st, scope, &role, false).await?,
    ))
}

async fn reset_policy(st: &AppState, caller: &Caller<'_>, scope: &str, name: &str) -> R {
    let role = role_of_policy_name(st, scope, name).await?;
    st.authz
        .require_action(caller.principal, scope, POLICY_WRITE)
        .await
        .map_err(domain_failure)?;
    st.store
        .delete_resource(&policy_id(scope, &role))
        .await
        .map_err(store_err)?;
    Ok(crate::http::response::status_only(StatusCode::NO_CONTENT))
}

// -------------------------------------------------------------- approvals

async fn approval(st: &AppState, id: &str) -> Result<(Approval, Option<Decision>), ArmFailure> {
    let not_found = || {
        ArmFailure::new(
            StatusCode::NOT_FOUND,
            "RoleAssignmentApprovalNotFound",
            "The approval does not exist.",
        )
    };
    let r = st
        .store
        .get_resource(&format!("{AUTHZ}/roleAssignmentApprovals/{}", guid_of(id)))
        .await
        .map_err(store_err)?
        .ok_or_else(not_found)?;
    let a: Approval = serde_json::from_str(&r.properties).map_err(|_| not_found())?;
    let d = st
        .store
        .get_setting(&decision_key(&a.id))
        .await
        .map_err(store_err)?
        .and_then(|raw| serde_json::from_slice(&raw).ok());
    Ok((a, d))
}

async fn is_approver(st: &AppState, who: &Principal, a: &Approval) -> bool {
    for ap in &a.approvers {
        if is_or_member(st, who, &ap.id).await {
            return true;
        }
    }
    false
}

fn approval_out(a: &Approval, d: Option<&Decision>, assigned_to_me: bool) -> Value {
    let stage_id = format!("{AUTHZ}/roleAssignmentApprovals/{}/stages/{}", a.id, a.id);
    json!({
        "id": format!("{AUTHZ}/roleAssignmentApprovals/{}", a.id),
        "name": a.id,
        "type": "Microsoft.Authorization/roleAssignmentApprovals",
        "properties": {"stages": [{
            "id": stage_id, "name": a.id, "type": "Microsoft.Authorization/roleAssignmentApprovals/stages",
            "properties": {
                "displayName": "Approval stage 1",
                "status": if d.is_some() { "Completed" } else { "InProgress" },
                "assignedToMe": assigned_to_me && d.is_none(),
                "reviewedDateTime": d.map(|d| iso8601(d.at)),
                "reviewResult": d.map_or("NotReviewed", |d| match d.result.as_str() { "Approve" => "Approve", "Deny" => "Deny", _ => "NotReviewed" }),
                "justification": d.map(|d| d.justification.clone()),
                "reviewedBy": d.map(|d| json!({"principalId": d.by, "principalType": "user"})),
            }
        }]}
    })
}

async fn get_approval(st: &AppState, caller: &Caller<'_>, id: &str) -> R {
    let (a, d) = approval(st, id).await?;
    let mine = is_approver(st, caller.principal, &a).await;
    if !mine
        && !a
            .requestor
            .eq_ignore_ascii_case(&caller.principal.object_id)
    {
        return Err(ArmFailure::new(
            StatusCode::NOT_FOUND,
            "RoleAssignmentApprovalNotFound",
            "The approval does not exist.",
        ));
    }
    Ok(json(StatusCode::OK, &approval_out(&a, d.as_ref(), mine)))
}

async fn list_approvals(st: &AppState, caller: &Caller<'_>) -> R {
    let mut value = Vec::new();
    for r in st
        .store
        .list_resources(pim::APPROVAL_TYPE, &st.subscription_id)
        .await
        .map_err(store_err)?
    {
        let Ok(a) = serde_json::from_str::<Approval>(&r.properties) else {
            continue;
        };
        let mine = is_approver(st, caller.principal, &a).await;
        if mine
            || a.requestor
                .eq_ignore_ascii_case(&caller.principal.object_id)
        {
            let d = st
                .store
                .get_setting(&decision_key(&a.id))
                .await
                .map_err(store_err)?
                .and_then(|raw| serde_json::from_slice::<Decision>(&raw).ok());
            value.push(approval_out(&a, d.as_ref(), mine));
        }
    }
    Ok(json(StatusCode::OK, &json!({"value": value})))
}

/// An approver's decision (`reviewResult` `Approve` or `Deny`), once.
async fn review(st: &AppState, caller: &Caller<'_>, id: &str, body: Body) -> R {
    let (a, decided) = approval(st, id).await?;
    if !is_approver(st, caller.principal, &a).await {
        return Err(ArmFailure::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "The caller is not an approver of this request.",
        ));
    }
    if a.requestor
        .eq_ignore_ascii_case(&caller.principal.object_id)
    {
        return Err(ArmFailure::new(
            StatusCode::FORBIDDEN,
            "SelfApprovalNotAllowed",
            "A requestor cannot approve their own request.",
        ));
    }
    if decided.is_some() {
        return Err(bad(
            "ApprovalAlreadyCompleted",
            "The approval was already decided.",
        ));
    }
    let b: Body_ = parse_body(body).await?;
    let p = b.properties.unwrap_or_default();
    let result = p.get("reviewResult").and_then(Value::as_str).unwrap_or("");
    if !matches!(result, "Approve" | "Deny") {
        return Err(bad(
            "InvalidReviewResult",
            "reviewResult must be Approve or Deny.",
        ));
    }
    let justification = p
        .get("justification")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(1000)
        .collect::<String>();
    let now = st.clock.now();
    let r = st
        .store
        .get_resource(&a.request)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            ArmFailure::new(
                StatusCode::NOT_FOUND,
                "RoleAssignmentScheduleRequestNotFound",
                "The request does not exist.",
            )
        })?;
    let s: Stored = serde_json::from_str(&r.properties)
        .map_err(|_| bad("Corrupt", "The request cannot be read."))?;
    // Too late: the request timed out (recorded once, like a decision).
    let expires = if a.expires > 0 {
        a.expires
    } else {
        a.created + 86_400
    };
    if now > expires {
        let d = Decision {
            result: "TimedOut".into(),
            by: String::new(),
            justification: String::new(),
            at: now,
        };
        if st
            .store
            .put_setting_if_absent(
                &decision_key(&a.id),
                &serde_json::to_vec(&d).unwrap_or_default(),
            )
            .await
            .map_err(store_err)?
        {
            let mut s = s;
            set_status(st, &mut s, &r, "TimedOut").await?;
        }
        return Err(bad(
            "ApprovalExpired",
            "The approval timed out; the requestor must ask again.",
        ));
    }
    // The policy may have changed since: the approver must still be one.
    let current = pim::rules_of(&policy_rules(st, &s.scope, &s.role_guid).await?);
    if let Some(now_approvers) = &current.approvers {
        let mut still = false;
        for ap in now_approvers {
            if is_or_member(st, caller.principal, &ap.id).await {
                still = true;
            }
        }
        if !still {
            return Err(ArmFailure::new(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                "The caller is no longer an approver of this role.",
            ));
        }
    }
    // An approved activation needs its eligibility now, and ends with it.
    let mut window = None;
    if result == "Approve" {
        let eligibility = match &s.eligibility {
            Some(name) => eligibilities(st)
                .await?
                .into_iter()
                .find(|e| e.name.eq_ignore_ascii_case(name) && e.active_at(now)),
            None => None,
        };
        let Some(e) = eligibility else {
            return Err(rules_failed(&[pim::rule::ELIGIBILITY]));
        };
        let length = s.end.map(|end| end - s.start);
        let mut w = Window {
            start: now,
            end: length.map(|l| now + l),
        };
        if let (Some(end), Some(limit)) = (w.end, e.end) {
            w.end = Some(end.min(limit));
        }
        window = Some(w);
    }
    let d = Decision {
        result: result.to_owned(),
        by: caller.principal.object_id.clone(),
        justification,
        at: now,
    };
    if !st
        .store
        .put_setting_if_absent(
            &decision_key(&a.id),
            &serde_json::to_vec(&d).unwrap_or_default(),
        )
        .await
        .map_err(store_err)?
    {
        return Err(bad(
            "ApprovalAlreadyCompleted",
            "The approval was already decided.",
        ));
    }
    // The decision is made; its effect runs in its own task, so a client
    // that goes away does not leave it half done.
    let st2 = st.clone();
    let approver = caller.principal.object_id.clone();
    let request = a.request.clone();
    tokio::spawn(async move {
        let mut s = s;
        match window {
            Some(w) => {
                let role_definition_id = st2.authz.definition_id(&s.role_guid);
                let act = activation(
                    &s.scope,
                    &role_definition_id,
                    &s.principal_id,
                    w,
                    &guid_of(&request),
                    s.eligibility.clone(),
                );
                put_assignment(&st2, &act, w.start).await?;
                if let Some(props) = s.wire.get_mut("properties").and_then(Value::as_object_mut) {
                    props.insert(
                        "targetRoleAssignmentScheduleId".into(),
                        json!(format!("{}{AUTHZ}/roleAssignmentSchedules/{}", s.scope, act.name)),
                    );
                }
                set_status(&st2, &mut s, &r, "Provisioned").await?;
                tracing::info!(principal = %s.principal_id, approver = %approver, "role activation approved");
            }
            None => set_status(&st2, &mut s, &r, "Denied").await?,
        }
        Ok::<(), ArmFailure>(())
    })
    .await
    .map_err(|_| {
        ArmFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The decision was recorded but its effect could not be completed.",
        )
    })??;
    Ok(json(
        StatusCode::OK,
        &approval_out(&a, Some(&d), true)
            .pointer("/properties/stages/0")
            .cloned()
            .unwrap_or_default(),
    ))
}

/// The vault a scope is (or is inside), as (name, ARM id of the vault).
fn vault_of_scope(scope: &str) -> Option<(String, String)> {
    let lower = scope.to_ascii_lowercase();
    let marker = "/providers/microsoft.keyvault/vaults/";
    let at = lower.find(marker)?;
    let name: String = scope
        .get(at + marker.len()..)?
        .split('/')
        .next()?
        .to_owned();
    let id = scope.get(..at + marker.len() + name.len())?.to_owned();
    (!name.is_empty()).then_some((name, id))
}

/// The scheduler's pass over time-bound assignments, once across nodes
/// (each step is a job claimed in the store): an event when one begins at
/// a vault (`Keyhaven.Authorization.RoleAssignmentActivated`), and when one
/// has ended, an event (`…RoleAssignmentExpired`), its removal, and an audit
/// record. Expired ones already grant nothing: this only tidies and tells.
pub async fn sweep(st: &AppState) -> Result<usize, Error> {
    let now = st.clock.now();
    let mut removed = 0;
    let mut due: Vec<(String, RoleAssignment, bool)> = Vec::new();
    for r in st
        .store
        .list_resources(ROLE_ASSIGNMENT_TYPE, &st.subscription_id)
        .await?
    {
        let Ok(mut a) = serde_json::from_str::<RoleAssignment>(&r.properties) else {
            continue;
        };
        // The name is the record's (it is not in the properties).
        a.name.clone_from(&r.name);
        if a.schedule.is_none() && a.ends.is_none() {
            continue;
        }
        let expired = a.ends.is_some_and(|e| e <= now);
        // Finished jobs are forgotten after a week (by whichever job
        // finishes next): an activation is told within days of its start
        // or not at all, never twice.
        let recent = a.starts.unwrap_or(0) > now - 6 * 86_400;
        if expired || (a.active_at(now) && recent) {
            due.push((r.id, a, expired));
        }
    }
    let jobs: Vec<String> = due
        .iter()
        .map(|(_, a, expired)| {
            format!(
                "pim-{}:{}",
                if *expired { "expired" } else { "activated" },
                a.name
            )
        })
        .collect();
    let finished = st.store.finished_jobs(&jobs).await?;
    for ((id, a, expired), job) in due.into_iter().zip(jobs) {
        if finished.contains(&job) || !st.store.claim_job(&job, now, now + 300).await? {
            if expired {
                // Told already (or being told by another node): just tidy.
                if finished.contains(&job) {
                    st.store.delete_resource(&id).await?;
                }
            }
            continue;
        }
        let events: Vec<keyhaven_core::events::ChangeEvent> = match vault_of_scope(&a.scope) {
            Some((vault_name, vault_id)) => vec![keyhaven_core::events::ChangeEvent {
                id: uuid::Uuid::new_v4().to_string(),
                event_type: if expired {
                    keyhaven_core::events::EventType::RoleAssignmentExpired
                } else {
                    keyhaven_core::events::EventType::RoleAssignmentActivated
                },
                vault_name,
                vault_id,
                object_type: "RoleAssignment",
                object_name: a.name.clone(),
                version: a.principal_id.clone(),
                nbf: a.starts,
                exp: a.ends,
                time: now,
            }],
            None => Vec::new(),
        };
        st.store
            .finish_job(&job, now, now - 7 * 86_400, &events)
            .await?;
        if let Some(sink) = st.event_sink() {
            sink.committed();
        }
        if !expired {
            continue;
        }
        st.store.delete_resource(&id).await?;
        removed += 1;
        tracing::info!(principal = %a.principal_id, role = %a.role_guid(), scope = %a.scope, "time-bound role assignment expired");
        if let Some(log) = st.audit.as_ref() {
            let note = crate::audit::AuditNote {
                operation: Some("RoleAssignmentScheduleExpire".into()),
                resource_id: Some(id.clone()),
                identity: Some(
                    [("oid".to_owned(), json!(a.principal_id))]
                        .into_iter()
                        .collect(),
                ),
                properties: Some(
                    [
                        ("roleDefinitionId".to_owned(), json!(a.role_definition_id)),
                        ("scope".to_owned(), json!(a.scope)),
                        ("endDateTime".to_owned(), json!(a.ends.map(iso8601))),
                    ]
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            };
            let rec = crate::audit::record(
                &iso8601(now),
                "DELETE",
                &format!("{}{}", st.endpoints.management_url(), id),
                200,
                0,
                None,
                None,
                None,
                None,
                Some("keyhaven-scheduler".into()),
                &note,
            );
            if let Err(e) = log.append_async(rec, true).await {
                tracing::error!(error = %e, "the expiry of a role assignment could not be audited");
            }
        }
    }
    Ok(removed)
}
