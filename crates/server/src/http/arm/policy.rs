//! Azure Policy's ARM resources under `Microsoft.Authorization`: policy
//! definitions (Azure's Key Vault built-ins at tenant scope, custom ones at
//! the subscription), initiatives (`policySetDefinitions`), assignments at
//! any scope and exemptions, as `az policy` 2.91 and azure-mgmt-resource's
//! `PolicyClient` drive them. A document is checked in full when written
//! (`keyhaven_core::governance`); what is stored compiles.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use keyhaven_core::governance::{self, builtins, PolicyError};
use keyhaven_core::{Principal, ResourceRecord};
use serde_json::{json, Map, Value};

use super::common::{
    check_subscription, domain_failure, method_not_allowed, not_supported, parse_body,
    split_at_provider, ArmFailure,
};
use crate::http::extract::query_map;
use crate::http::response::json as reply;
use crate::policy::{
    assignment_of, properties_of, Catalog, ASSIGNMENT_TYPE, DEFINITION_TYPE, EXEMPTION_TYPE,
    SET_TYPE,
};
use crate::state::AppState;

const MARKER: &str = "/providers/microsoft.authorization/";

/// The four kinds, by their path segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Definition,
    Set,
    Assignment,
    Exemption,
}

impl Kind {
    fn of(segment: &str) -> Option<Kind> {
        Some(match segment.to_ascii_lowercase().as_str() {
            "policydefinitions" => Kind::Definition,
            "policysetdefinitions" => Kind::Set,
            "policyassignments" => Kind::Assignment,
            "policyexemptions" => Kind::Exemption,
            _ => return None,
        })
    }

    fn arm_type(self) -> &'static str {
        match self {
            Kind::Definition => DEFINITION_TYPE,
            Kind::Set => SET_TYPE,
            Kind::Assignment => ASSIGNMENT_TYPE,
            Kind::Exemption => EXEMPTION_TYPE,
        }
    }

    fn segment(self) -> &'static str {
        self.arm_type()
            .strip_prefix("Microsoft.Authorization/")
            .unwrap_or_default()
    }

    fn action(self, verb: &str) -> String {
        format!("{}/{verb}", self.arm_type())
    }
}

/// Handles a request for one of the four kinds, or returns it.
pub async fn handle(st: &AppState, caller: &Principal, req: Request) -> Result<Response, Request> {
    let Some((scope, rest)) = split_at_provider(req.uri().path(), MARKER, false) else {
        return Err(req);
    };
    let Some(kind) = rest.first().and_then(|s| Kind::of(s)) else {
        return Err(req);
    };
    let name = rest.get(1).cloned();
    let query = query_map(req.uri().query());
    let method = req.method().clone();
    let body = req.into_body();
    let out = if rest.len() > 2 {
        Err(not_supported())
    } else {
        route(
            st,
            caller,
            kind,
            &scope,
            name.as_deref(),
            &method,
            &query,
            body,
        )
        .await
    };
    Ok(out.unwrap_or_else(IntoResponse::into_response))
}

#[allow(clippy::too_many_arguments)]
async fn route(
    st: &AppState,
    caller: &Principal,
    kind: Kind,
    scope: &str,
    name: Option<&str>,
    method: &Method,
    query: &HashMap<String, String>,
    body: Body,
) -> Result<Response, ArmFailure> {
    let at = Place::parse(st, scope, kind)?;
    match (name, method.clone()) {
        (None, Method::GET) => list(st, caller, kind, &at, query).await,
        (Some(n), Method::GET) => get(st, caller, kind, &at, n).await,
        (Some(n), Method::PUT) => put(st, caller, kind, &at, n, body).await,
        (Some(n), Method::PATCH) if kind == Kind::Assignment || kind == Kind::Exemption => {
            patch(st, caller, kind, &at, n, body).await
        }
        (Some(n), Method::DELETE) => delete(st, caller, kind, &at, n).await,
        _ => Err(method_not_allowed()),
    }
}

fn policy_failure(e: PolicyError) -> ArmFailure {
    let status = if e.code == "PolicyDefinitionNotFound" || e.code == "PolicySetDefinitionNotFound"
    {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    };
    ArmFailure::new(status, e.code, e.message)
}

fn bad(code: &'static str, msg: impl Into<String>) -> ArmFailure {
    ArmFailure::new(StatusCode::BAD_REQUEST, code, msg)
}

/// Where a request is: the tenant (built-ins), the subscription, a group,
/// or a resource.
struct Place {
    /// The scope as written, `""` for the tenant.
    scope: String,
    /// Its resource group, if any.
    group: String,
}

impl Place {
    fn parse(st: &AppState, scope: &str, kind: Kind) -> Result<Place, ArmFailure> {
        if scope.is_empty() {
            return match kind {
                Kind::Definition | Kind::Set => Ok(Place {
                    scope: String::new(),
                    group: String::new(),
                }),
                _ => Err(bad(
                    "InvalidScope",
                    "Policy assignments and exemptions need a subscription, resource group or resource scope.",
                )),
            };
        }
        let parts: Vec<&str> = scope.split('/').collect();
        let sub = match parts.as_slice() {
            ["", s, sub, ..] if s.eq_ignore_ascii_case("subscriptions") => *sub,
            _ => {
                return Err(bad(
                    "InvalidScope",
                    format!(
                        "The scope '{}' is not valid. Management groups are not supported.",
                        scope.chars().take(300).collect::<String>()
                    ),
                ))
            }
        };
        check_subscription(st, sub)?;
        if matches!(kind, Kind::Definition | Kind::Set) && parts.len() != 3 {
            return Err(bad(
                "InvalidScope",
                "Policy definitions live at the subscription.",
            ));
        }
        let group = match parts.get(3) {
            Some(g) if g.eq_ignore_ascii_case("resourceGroups") => {
                parts.get(4).map(|s| (*s).to_owned()).unwrap_or_default()
            }
            Some(_) => return Err(bad("InvalidScope", "The scope is not a valid ARM id.")),
            None => String::new(),
        };
        if parts.len() == 4 || (parts.len() > 5 && parts.len().is_multiple_of(2)) {
            return Err(bad("InvalidScope", "The scope is not a valid ARM id."));
        }
        // Scopes are written in the subscription's own casing.
        let mut canonical = format!("/subscriptions/{}", st.subscription_id);
        if let Some(tail) = parts.get(3..) {
            if !tail.is_empty() {
                canonical.push('/');
                canonical.push_str(&tail.join("/"));
            }
        }
        let canonical = canonical.replacen("/resourcegroups/", "/resourceGroups/", 1);
        Ok(Place {
            scope: canonical,
            group,
        })
    }

    fn id(&self, kind: Kind, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/{}/{name}",
            self.scope,
            kind.segment()
        )
    }
}

async fn require(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    action: &str,
) -> Result<(), ArmFailure> {
    super::resource::authorize_principal(st, caller, scope, action).await
}

fn valid_name(kind: Kind, name: &str) -> Result<(), ArmFailure> {
    let max = match kind {
        Kind::Assignment | Kind::Exemption => 64,
        _ => 128,
    };
    let ok = !name.is_empty()
        && name.len() <= max
        && !name.ends_with(' ')
        && !name.chars().any(|c| {
            matches!(
                c,
                '<' | '>' | '*' | '%' | '&' | ':' | '\\' | '?' | '.' | '+' | '/'
            ) || c.is_control()
        });
    if ok {
        Ok(())
    } else {
        Err(bad(
            "InvalidPolicyName",
            format!("The name must be 1 to {max} characters and must not contain <>*%&:\\?.+/ or end with a space."),
        ))
    }
}

/// The ARM shape of a stored document.
fn out(st: &AppState, kind: Kind, r: &ResourceRecord) -> Value {
    let doc: Value = serde_json::from_str(&r.properties).unwrap_or_else(|_| json!({}));
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "type": kind.arm_type(),
        "properties": doc.get("properties").cloned().unwrap_or_else(|| json!({})),
        "systemData": {
            "createdBy": doc.get("createdBy").cloned().unwrap_or(Value::Null),
            "createdByType": "User",
            "createdAt": governance::time::iso(r.created),
            "lastModifiedBy": doc.get("updatedBy").cloned().unwrap_or(Value::Null),
            "lastModifiedByType": "User",
            "lastModifiedAt": governance::time::iso(r.updated),
        },
    });
    if kind == Kind::Assignment {
        if let Some(m) = v.as_object_mut() {
            if !r.location.is_empty() {
                m.insert("location".into(), json!(r.location));
            }
            if let Some(identity) = identity_out(st, &doc) {
                m.insert("identity".into(), identity);
            }
        }
    }
    v
}

fn identity_out(st: &AppState, doc: &Value) -> Option<Value> {
    let id = doc.get("identity")?;
    let kind = id.get("type")?.as_str()?;
    let mut out = json!({"type": kind});
    if let (Some(p), Some(m)) = (id.get("principalId"), out.as_object_mut()) {
        m.insert("principalId".into(), p.clone());
        m.insert("tenantId".into(), json!(st.tokens.tenant_id()));
    }
    if let (Some(u), Some(m)) = (id.get("userAssignedIdentities"), out.as_object_mut()) {
        m.insert("userAssignedIdentities".into(), u.clone());
    }
    Some(out)
}

fn builtin_out(b: &builtins::BuiltIn, kind: Kind) -> Value {
    json!({
        "id": builtins::id_of(&b.name),
        "name": b.name,
        "type": kind.arm_type(),
        "properties": b.properties,
    })
}

async fn load(st: &AppState, kind: Kind, id: &str) -> Result<Option<ResourceRecord>, ArmFailure> {
    super::resource::load(st, id, kind.arm_type()).await
}

fn missing(kind: Kind, name: &str) -> ArmFailure {
    let (code, what) = match kind {
        Kind::Definition => ("PolicyDefinitionNotFound", "policy definition"),
        Kind::Set => ("PolicySetDefinitionNotFound", "policy set definition"),
        Kind::Assignment => ("PolicyAssignmentNotFound", "policy assignment"),
        Kind::Exemption => ("PolicyExemptionNotFound", "policy exemption"),
    };
    ArmFailure::new(
        StatusCode::NOT_FOUND,
        code,
        format!(
            "The {what} '{}' could not be found.",
            name.chars().take(128).collect::<String>()
        ),
    )
}

async fn get(
    st: &AppState,
    caller: &Principal,
    kind: Kind,
    at: &Place,
    name: &str,
) -> Result<Response, ArmFailure> {
    if at.scope.is_empty() {
        // Azure's built-ins are readable by every signed-in caller.
        return match (kind, builtins::get(name)) {
            (Kind::Definition, Some(b)) => Ok(reply(StatusCode::OK, &builtin_out(b, kind))),
            _ => Err(missing(kind, name)),
        };
    }
    require(st, caller, &at.scope, &kind.action("read")).await?;
    let r = load(st, kind, &at.id(kind, name))
        .await?
        .ok_or_else(|| missing(kind, name))?;
    Ok(reply(StatusCode::OK, &out(st, kind, &r)))
}

/// `$filter` of a list: `atScope()`, `atExactScope()`, `atScopeAndBelow()`,
/// `policyDefinitionId eq '…'`, `policyType eq '…'`, `category eq '…'`.
struct Filter {
    exact: bool,
    above: bool,
    below: bool,
    definition: Option<String>,
    policy_type: Option<String>,
    category: Option<String>,
    assignment: Option<String>,
}

fn filter_of(q: &HashMap<String, String>) -> Result<Filter, ArmFailure> {
    let mut f = Filter {
        exact: false,
        above: true,
        below: true,
        definition: None,
        policy_type: None,
        category: None,
        assignment: None,
    };
    let Some(raw) = q.get("$filter").map(|s| s.trim()) else {
        return Ok(f);
    };
    let quoted = |s: &str, key: &str| -> Option<String> {
        let rest = s.get(key.len()..)?.trim_start();
        let rest = rest.strip_prefix("eq")?.trim();
        Some(rest.strip_prefix('\'')?.strip_suffix('\'')?.to_owned())
    };
    let lower = raw.to_ascii_lowercase();
    match lower.as_str() {
        "atscope()" => f.below = false,
        "atexactscope()" => f.exact = true,
        "atscopeandbelow()" => {}
        "excludeexpired()" => {}
        _ if lower.starts_with("policydefinitionid") => {
            f.definition = quoted(raw, "policyDefinitionId");
        }
        _ if lower.starts_with("policytype") => f.policy_type = quoted(raw, "policyType"),
        _ if lower.starts_with("category") => f.category = quoted(raw, "category"),
        _ if lower.starts_with("policyassignmentid") => {
            f.assignment = quoted(raw, "policyAssignmentId");
        }
        _ => {
            return Err(bad(
                "InvalidFilterInQueryString",
                format!(
                    "The filter '{}' is not supported.",
                    raw.chars().take(200).collect::<String>()
                ),
            ))
        }
    }
    if f.definition.is_none()
        && f.policy_type.is_none()
        && f.category.is_none()
        && f.assignment.is_none()
        && ![
            "atscope()",
            "atexactscope()",
            "atscopeandbelow()",
            "excludeexpired()",
        ]
        .contains(&lower.as_str())
    {
        return Err(bad(
            "InvalidFilterInQueryString",
            "The filter value must be quoted with single quotes.",
        ));
    }
    Ok(f)
}

async fn list(
    st: &AppState,
    caller: &Principal,
    kind: Kind,
    at: &Place,
    q: &HashMap<String, String>,
) -> Result<Response, ArmFailure> {
    let f = filter_of(q)?;
    let mut value = Vec::new();
    if matches!(kind, Kind::Definition | Kind::Set) {
        if kind == Kind::Definition
            && !f
                .policy_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("Custom"))
        {
            for b in builtins::all() {
                let cat = crate::policy::at(&b.properties, "/metadata/category")
                    .as_str()
                    .unwrap_or_default();
                if f.category
                    .as_deref()
                    .is_none_or(|c| c.eq_ignore_ascii_case(cat))
                    && f.policy_type
                        .as_deref()
                        .is_none_or(|t| t.eq_ignore_ascii_case("BuiltIn"))
                {
                    value.push(builtin_out(b, kind));
                }
            }
        }
        if !at.scope.is_empty()
            && !f
                .policy_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("BuiltIn"))
        {
            require(st, caller, &at.scope, &kind.action("read")).await?;
            for r in list_kind(st, kind).await? {
                let props = properties_of(&r);
                let cat = crate::policy::at(&props, "/metadata/category")
                    .as_str()
                    .unwrap_or_default();
                if f.category
                    .as_deref()
                    .is_none_or(|c| c.eq_ignore_ascii_case(cat))
                {
                    value.push(out(st, kind, &r));
                }
            }
        }
    } else {
        require(st, caller, &at.scope, &kind.action("read")).await?;
        for r in list_kind(st, kind).await? {
            let Some(own) = scope_of(&r) else { continue };
            let exact = own.eq_ignore_ascii_case(&at.scope);
            let above = governance::in_scope(&at.scope, &own);
            let below = governance::in_scope(&own, &at.scope);
            let shown = if f.exact {
                exact
            } else {
                exact || (f.above && above) || (f.below && below)
            };
            if !shown {
                continue;
            }
            let doc: Value = serde_json::from_str(&r.properties).unwrap_or_default();
            let p = &crate::policy::at(&doc, "/properties");
            if let Some(d) = &f.definition {
                if !crate::policy::at(p, "/policyDefinitionId")
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(d))
                {
                    continue;
                }
            }
            if let Some(a) = &f.assignment {
                if !crate::policy::at(p, "/policyAssignmentId")
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(a))
                {
                    continue;
                }
            }
            value.push(out(st, kind, &r));
        }
    }
    Ok(reply(StatusCode::OK, &json!({ "value": value })))
}

async fn list_kind(st: &AppState, kind: Kind) -> Result<Vec<ResourceRecord>, ArmFailure> {
    st.store
        .list_resources(kind.arm_type(), &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))
}

/// The scope a stored assignment or exemption sits at.
fn scope_of(r: &ResourceRecord) -> Option<String> {
    let lower = r.id.to_ascii_lowercase();
    let at = lower.rfind(MARKER)?;
    r.id.get(..at).map(str::to_owned)
}

async fn put(
    st: &AppState,
    caller: &Principal,
    kind: Kind,
    at: &Place,
    name: &str,
    body: Body,
) -> Result<Response, ArmFailure> {
    writable(st, caller, kind, at, "write").await?;
    valid_name(kind, name)?;
    let body: Value = parse_body(body).await?;
    let Some(Value::Object(props)) = body.get("properties").cloned() else {
        return Err(bad(
            "InvalidRequestContent",
            "The request must have a 'properties' object.",
        ));
    };
    let id = at.id(kind, name);
    let existing = load(st, kind, &id).await?;
    let mut props = props;
    let mut location = String::new();
    let mut identity = Value::Null;
    let mut dropped_principal = None;
    match kind {
        Kind::Definition => {
            check_definition(&mut props)?;
            keeps_assignments(st, kind, &id, &props).await?;
        }
        Kind::Set => {
            check_set(st, &mut props).await?;
            keeps_assignments(st, kind, &id, &props).await?;
        }
        Kind::Assignment => {
            let rules = check_assignment(st, at, &mut props).await?;
            let old_doc: Value = existing
                .as_ref()
                .and_then(|r| serde_json::from_str(&r.properties).ok())
                .unwrap_or_default();
            (location, identity) =
                assignment_identity(st, caller, (&id, name), &body, existing.as_ref()).await?;
            check_assignment_identity(&rules, &identity)?;
            dropped_principal = crate::policy::at(&old_doc, "/identity/principalId")
                .as_str()
                .filter(|old| identity.get("principalId").and_then(Value::as_str) != Some(*old))
                .map(str::to_owned);
        }
        Kind::Exemption => check_exemption(st, caller, at, &mut props).await?,
    }
    if kind == Kind::Assignment || kind == Kind::Exemption {
        props.insert("scope".into(), json!(at.scope));
        if kind == Kind::Exemption {
            props.remove("scope");
        }
    }
    let metadata = props.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = metadata.as_object_mut() {
        let now = governance::time::iso(st.clock.now());
        if existing.is_none() {
            m.insert("createdBy".into(), json!(caller.object_id));
            m.insert("createdOn".into(), json!(now));
        } else {
            m.insert("updatedBy".into(), json!(caller.object_id));
            m.insert("updatedOn".into(), json!(now));
        }
    }
    let created_by = existing
        .as_ref()
        .and_then(|r| serde_json::from_str::<Value>(&r.properties).ok())
        .and_then(|d| d.get("createdBy").cloned())
        .unwrap_or_else(|| json!(caller.object_id));
    let doc = json!({
        "properties": Value::Object(props),
        "identity": identity,
        "createdBy": created_by,
        "updatedBy": caller.object_id,
    });
    let (rec, created) = super::resource::put_document(
        st,
        existing.as_ref(),
        super::resource::Document {
            id,
            kind: kind.arm_type(),
            subscription: &st.subscription_id,
            group: &at.group,
            name,
            location,
            tags: "{}".into(),
            properties: doc.to_string(),
        },
    )
    .await?;
    if kind == Kind::Assignment {
        // A system-assigned identity this update dropped goes with it, once
        // the assignment no longer names it.
        if let Some(old) = dropped_principal {
            let _ = st.store.delete_principal(&old).await;
        }
        crate::policy_scan::spawn_assignment_scan(st.clone(), rec.id.clone());
    }
    // Definitions and assignments answer 201 to every PUT, as ARM does (the
    // CLI and SDK accept nothing else); initiatives and exemptions 201/200.
    let status = if created || matches!(kind, Kind::Definition | Kind::Assignment) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(reply(status, &out(st, kind, &rec)))
}

/// Refuses a definition or initiative update that would leave an
/// assignment of it unable to compile (a new required parameter, narrower
/// allowed values): it would silently enforce nothing.
async fn keeps_assignments(
    st: &AppState,
    kind: Kind,
    id: &str,
    props: &Map<String, Value>,
) -> Result<(), ArmFailure> {
    let now = Catalog::load(st).await.map_err(domain_failure)?;
    let value = Value::Object(props.clone());
    let next = if kind == Kind::Definition {
        now.clone().with_definition(id, &value)
    } else {
        now.clone().with_set(id, &value)
    };
    let broken = now.broken_by(&next, st).await.map_err(domain_failure)?;
    if let Some((a, why)) = broken.first() {
        return Err(bad(
            "InvalidPolicyDefinitionUpdate",
            format!(
                "The change would break the policy assignment '{}': {why}",
                a.chars().take(300).collect::<String>()
            ),
        ));
    }
    Ok(())
}

fn check_definition(props: &mut Map<String, Value>) -> Result<(), ArmFailure> {
    let parsed = Value::Object(props.clone());
    governance::Definition::parse(&parsed).map_err(policy_failure)?;
    if !props.keys().any(|k| k.eq_ignore_ascii_case("mode")) {
        props.insert("mode".into(), json!("Indexed"));
    }
    props.insert("policyType".into(), json!("Custom"));
    Ok(())
}

async fn check_set(st: &AppState, props: &mut Map<String, Value>) -> Result<(), ArmFailure> {
    let catalog = Catalog::load(st).await.map_err(domain_failure)?;
    let parsed = Value::Object(props.clone());
    let (_, members) = governance::parse_set(&parsed, &|d| catalog.definition(d).map(|(_, d)| d))
        .map_err(policy_failure)?;
    // Reference ids are filled in where the body left them out.
    if let Some(Value::Array(items)) = props.get_mut("policyDefinitions") {
        for (item, m) in items.iter_mut().zip(&members) {
            if let Some(o) = item.as_object_mut() {
                o.insert("policyDefinitionReferenceId".into(), json!(m.reference_id));
            }
        }
    }
    props.insert("policyType".into(), json!("Custom"));
    Ok(())
}

/// The caller may `verb` (`write`, `delete`) documents of `kind` at the
/// scope; the tenant's built-ins are never writable.
async fn writable(
    st: &AppState,
    caller: &Principal,
    kind: Kind,
    at: &Place,
    verb: &str,
) -> Result<(), ArmFailure> {
    if at.scope.is_empty() {
        return Err(ArmFailure::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "Built-in policy definitions cannot be changed or deleted.",
        ));
    }
    require(st, caller, &at.scope, &kind.action(verb)).await
}

/// A required text property, or 400 naming it.
fn required(props: &Map<String, Value>, key: &str, what: &str) -> Result<String, ArmFailure> {
    props
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            bad(
                "InvalidRequestContent",
                format!("The {what} needs a '{key}'."),
            )
        })
}

async fn check_assignment(
    st: &AppState,
    at: &Place,
    props: &mut Map<String, Value>,
) -> Result<Vec<governance::Rule>, ArmFailure> {
    let def_id = required(props, "policyDefinitionId", "policy assignment")?;
    match props.get("enforcementMode").and_then(Value::as_str) {
        None => {
            props.insert("enforcementMode".into(), json!("Default"));
        }
        Some(m) if m.eq_ignore_ascii_case("Default") || m.eq_ignore_ascii_case("DoNotEnforce") => {}
        Some(m) => {
            return Err(bad(
                "InvalidPolicyEnforcementMode",
                format!(
                    "The enforcement mode '{}' is not supported; use Default or DoNotEnforce.",
                    m.chars().take(64).collect::<String>()
                ),
            ))
        }
    }
    let not_scopes = match props.get("notScopes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad(
                    "InvalidRequestContent",
                    "'notScopes' must be an array of strings.",
                )
            })?,
        Some(_) => {
            return Err(bad(
                "InvalidRequestContent",
                "'notScopes' must be an array.",
            ))
        }
    };
    for n in &not_scopes {
        if !governance::in_scope(n, &format!("/subscriptions/{}", st.subscription_id)) {
            return Err(bad(
                "InvalidNotScopes",
                format!(
                    "The not-scope '{}' is not in this subscription.",
                    n.chars().take(300).collect::<String>()
                ),
            ));
        }
    }
    props.insert("notScopes".into(), json!(not_scopes));
    if let Some(Value::Array(msgs)) = props.get("nonComplianceMessages") {
        if msgs
            .iter()
            .any(|m| !m.get("message").is_some_and(Value::is_string))
        {
            return Err(bad(
                "InvalidRequestContent",
                "Each non-compliance message needs a 'message'.",
            ));
        }
    }
    // The definition exists and the parameters fit it.
    let catalog = Catalog::load(st).await.map_err(domain_failure)?;
    let probe = std::sync::Arc::new(governance::Assignment {
        id: String::new(),
        name: String::new(),
        display_name: String::new(),
        scope: at.scope.clone(),
        not_scopes,
        definition_id: def_id.clone(),
        parameters: props.get("parameters").cloned(),
        enforce: true,
        messages: Vec::new(),
        identity: None,
    });
    governance::rules_of(&probe, &|id| catalog.resolve(id)).map_err(policy_failure)
}

/// An assignment's `location` and stored `identity`: a system-assigned
/// identity gets a principal of its own (kept across updates, removed when
/// the identity is); a user-assigned one must exist.
async fn assignment_identity(
    st: &AppState,
    caller: &Principal,
    (id, name): (&str, &str),
    body: &Value,
    existing: Option<&ResourceRecord>,
) -> Result<(String, Value), ArmFailure> {
    let old_doc: Value = existing
        .and_then(|r| serde_json::from_str(&r.properties).ok())
        .unwrap_or_default();
    let old_principal = crate::policy::at(&old_doc, "/identity/principalId")
        .as_str()
        .map(str::to_owned);
    let wanted = body
        .get("identity")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("None")
        .to_owned();
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| existing.map(|e| e.location.clone()))
        .unwrap_or_default();
    let kind = wanted.to_ascii_lowercase().replace(' ', "");
    let identity = match kind.as_str() {
        "none" => Value::Null,
        "systemassigned" | "userassigned" | "systemassigned,userassigned" => {
            if location.is_empty() {
                return Err(bad(
                    "LocationRequired",
                    "The location property is required when a policy assignment has a managed identity.",
                ));
            }
            let mut out = Map::new();
            out.insert("type".into(), json!(wanted));
            if kind.contains("systemassigned") {
                let principal = match &old_principal {
                    Some(p) => p.clone(),
                    None => {
                        st.directory
                            .new_identity_principal(id, name)
                            .await
                            .map_err(|e| {
                                ArmFailure::new(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "InternalError",
                                    e.to_string(),
                                )
                            })?
                            .object_id
                    }
                };
                out.insert("principalId".into(), json!(principal));
            }
            if kind.contains("userassigned") {
                let ids: Vec<String> = crate::policy::at(body, "/identity/userAssignedIdentities")
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                if ids.len() != 1 {
                    return Err(bad(
                        "InvalidIdentity",
                        "A policy assignment takes exactly one user-assigned identity.",
                    ));
                }
                let mut map = Map::new();
                for uid in ids {
                    // Using an identity needs the right to assign it, as for
                    // a workload: the assignment acts as that identity.
                    super::resource::authorize_principal(
                        st,
                        caller,
                        &uid,
                        super::identities::ASSIGN_IDENTITY,
                    )
                    .await?;
                    let (_, props) = st.directory.user_assigned(&uid).await.map_err(|_| {
                        bad(
                            "InvalidIdentity",
                            format!(
                                "The user-assigned identity '{}' was not found.",
                                uid.chars().take(300).collect::<String>()
                            ),
                        )
                    })?;
                    map.insert(
                        uid,
                        json!({"principalId": props.principal_id, "clientId": props.client_id}),
                    );
                }
                out.insert("userAssignedIdentities".into(), Value::Object(map));
            }
            Value::Object(out)
        }
        _ => {
            return Err(bad(
                "InvalidIdentity",
                format!(
                    "The identity type '{}' is not supported.",
                    wanted.chars().take(64).collect::<String>()
                ),
            ))
        }
    };
    Ok((location, identity))
}

/// An assignment whose rules deploy or modify needs an identity to act
/// as, as on Azure.
fn check_assignment_identity(
    rules: &[governance::Rule],
    identity: &Value,
) -> Result<(), ArmFailure> {
    let acts = rules.iter().any(|r| {
        matches!(
            r.effect,
            governance::Effect::DeployIfNotExists | governance::Effect::Modify
        )
    });
    if identity.is_null() && acts {
        return Err(bad(
            "InvalidPolicyAssignmentIdentity",
            "A policy assignment whose definitions deploy or modify resources needs a managed identity (identity and location).",
        ));
    }
    Ok(())
}

async fn check_exemption(
    st: &AppState,
    caller: &Principal,
    at: &Place,
    props: &mut Map<String, Value>,
) -> Result<(), ArmFailure> {
    let aid = required(props, "policyAssignmentId", "exemption")?;
    match props.get("exemptionCategory").and_then(Value::as_str) {
        Some(c) if c.eq_ignore_ascii_case("Waiver") || c.eq_ignore_ascii_case("Mitigated") => {}
        _ => {
            return Err(bad(
                "InvalidExemptionCategory",
                "The exemption category must be 'Waiver' or 'Mitigated'.",
            ))
        }
    }
    if let Some(e) = props.get("expiresOn").filter(|v| !v.is_null()) {
        if e.as_str().and_then(governance::time::parse).is_none() {
            return Err(bad(
                "InvalidExpiresOn",
                "'expiresOn' must be an ISO 8601 date-time.",
            ));
        }
    }
    let r = load(st, Kind::Assignment, &aid)
        .await?
        .ok_or_else(|| missing(Kind::Assignment, &aid))?;
    let a = assignment_of(&r).ok_or_else(|| missing(Kind::Assignment, &aid))?;
    // Exempting needs the right on the assignment too.
    require(
        st,
        caller,
        &a.scope,
        "Microsoft.Authorization/policyAssignments/exempt/action",
    )
    .await?;
    let validate = props
        .get("assignmentScopeValidation")
        .and_then(Value::as_str)
        .is_none_or(|v| !v.eq_ignore_ascii_case("DoNotValidate"));
    if validate && !governance::in_scope(&at.scope, &a.scope) {
        return Err(bad(
            "InvalidExemptionScope",
            "The exemption's scope must be at or beneath the policy assignment's scope.",
        ));
    }
    props.insert("policyAssignmentId".into(), json!(r.id));
    let refs: Vec<String> = match props.get("policyDefinitionReferenceIds") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(v)) => v
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            return Err(bad(
                "InvalidRequestContent",
                "'policyDefinitionReferenceIds' must be an array.",
            ))
        }
    };
    if !refs.is_empty() {
        let catalog = Catalog::load(st).await.map_err(domain_failure)?;
        let members = catalog.members(&a.definition_id).unwrap_or_default();
        if let Some(r) = refs.iter().find(|r| {
            !members
                .iter()
                .any(|m| m.reference_id.eq_ignore_ascii_case(r))
        }) {
            return Err(bad(
                "InvalidPolicyDefinitionReferenceId",
                format!("The policy definition reference id '{}' is not in the assigned policy set definition.", r.chars().take(128).collect::<String>()),
            ));
        }
    }
    Ok(())
}

/// `PATCH` of an assignment (`location`, `identity`, `properties.{resourceSelectors,overrides}`)
/// or an exemption (`properties.{resourceSelectors,assignmentScopeValidation}`):
/// Keyhaven evaluates neither selectors nor overrides, so a PATCH that asks
/// for them is refused rather than ignored.
async fn patch(
    st: &AppState,
    caller: &Principal,
    kind: Kind,
    at: &Place,
    name: &str,
    body: Body,
) -> Result<Response, ArmFailure> {
    require(st, caller, &at.scope, &kind.action("write")).await?;
    let body: Value = parse_body(body).await?;
    let r = load(st, kind, &at.id(kind, name))
        .await?
        .ok_or_else(|| missing(kind, name))?;
    let asks = crate::policy::at(&body, "/properties/resourceSelectors")
        .as_array()
        .is_some_and(|a| !a.is_empty())
        || crate::policy::at(&body, "/properties/overrides")
            .as_array()
            .is_some_and(|a| !a.is_empty());
    if asks || body.get("identity").is_some() {
        return Err(bad(
            "UnsupportedPolicyFeature",
            "Keyhaven does not evaluate resource selectors or overrides; change an assignment's identity with PUT.",
        ));
    }
    Ok(reply(StatusCode::OK, &out(st, kind, &r)))
}

async fn delete(
    st: &AppState,
    caller: &Principal,
    kind: Kind,
    at: &Place,
    name: &str,
) -> Result<Response, ArmFailure> {
    writable(st, caller, kind, at, "delete").await?;
    let id = at.id(kind, name);
    let Some(r) = load(st, kind, &id).await? else {
        return Ok(super::resource::deleted(false));
    };
    // A definition or initiative still assigned (or in an initiative) stays.
    if matches!(kind, Kind::Definition | Kind::Set) {
        let users = in_use(st, &r.id).await?;
        if let Some(u) = users {
            return Err(ArmFailure::new(
                StatusCode::BAD_REQUEST,
                if kind == Kind::Definition {
                    "PolicyDefinitionInUse"
                } else {
                    "PolicySetDefinitionInUse"
                },
                format!(
                    "The policy definition '{name}' is referenced by '{u}' and cannot be deleted."
                ),
            ));
        }
    }
    let gone = st
        .store
        .delete_resource(&r.id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    if kind == Kind::Assignment {
        let doc: Value = serde_json::from_str(&r.properties).unwrap_or_default();
        if let Some(p) = crate::policy::at(&doc, "/identity/principalId").as_str() {
            let _ = st.store.delete_principal(p).await;
        }
        let _ = st
            .store
            .forget_policy_states(&r.id.to_ascii_lowercase())
            .await;
    }
    Ok(reply(StatusCode::OK, &out(st, kind, &r)).into_response()).map(|resp| {
        if gone {
            resp
        } else {
            super::resource::deleted(false)
        }
    })
}

/// An assignment or initiative that uses the definition or initiative `id`.
async fn in_use(st: &AppState, id: &str) -> Result<Option<String>, ArmFailure> {
    for r in list_kind(st, Kind::Assignment).await? {
        if let Some(a) = assignment_of(&r) {
            if a.definition_id.eq_ignore_ascii_case(id) {
                return Ok(Some(r.id));
            }
        }
    }
    for r in list_kind(st, Kind::Set).await? {
        let props = properties_of(&r);
        let uses = crate::policy::at(&props, "/policyDefinitions")
            .as_array()
            .is_some_and(|a| {
                a.iter().any(|m| {
                    crate::policy::at(m, "/policyDefinitionId")
                        .as_str()
                        .is_some_and(|x| x.eq_ignore_ascii_case(id))
                })
            });
        if uses {
            return Ok(Some(r.id));
        }
    }
    Ok(None)
}
