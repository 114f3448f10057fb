//! Compliance scans and the `…IfNotExists` effects: a scan evaluates every
//! vault against the assignments in force and replaces their states; after
//! a vault write, `DeployIfNotExists` deploys what is missing with the
//! assignment's managed identity; remediation tasks do the same for
//! existing vaults.

use std::collections::HashMap;
use std::sync::Arc;

use keyhaven_core::governance::{aliases, Compliance, Context, Effect, PolicyError, Rule, Verdict};
use keyhaven_core::{Error, Principal, PrincipalKind, VaultRecord};
use serde_json::{json, Value};

use crate::policy::{state_row, Evaluated};
use crate::state::AppState;

/// Most resources one remediation task deploys to (Azure's default).
pub const REMEDIATION_LIMIT: usize = 500;

/// The vault as policy rules see it: its ARM `GET` shape, with the
/// request's `createMode` when there was one.
pub fn vault_view(st: &AppState, v: &VaultRecord, create_mode: Option<&str>) -> Value {
    let mut view = crate::http::arm::vaults::vault_json(st, v);
    if let (Some(mode), Some(p)) = (
        create_mode,
        view.get_mut("properties").and_then(Value::as_object_mut),
    ) {
        p.insert("createMode".into(), json!(mode));
    }
    view
}

/// The vaults' diagnostic settings in their ARM shape, read once per pass
/// (what `…IfNotExists` existence conditions look at).
pub struct Related(HashMap<String, Vec<Value>>);

impl Related {
    /// Every diagnostic setting of the deployment, by vault.
    pub async fn load(st: &AppState) -> Result<Related, Error> {
        Ok(Related(
            crate::http::arm::diagnostics::all_setting_views(st).await?,
        ))
    }

    /// Whether one of the vault's settings meets the rule's existence
    /// condition.
    pub fn ok(&self, vault_id: &str, view: &Value, rule: &Rule, now: i64) -> bool {
        let ctx = Context {
            api_version: String::new(),
            now,
        };
        self.0
            .get(&vault_id.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .any(|s| {
                rule.definition
                    .exists_ok(view, s, &rule.params, &ctx)
                    .unwrap_or(false)
            })
    }
}

/// A verdict settled: `…IfNotExists` rules whose `if` held are compliant
/// when a related resource qualifies.
fn settle(related: &Related, vault_id: &str, view: &Value, v: &Verdict, now: i64) -> Compliance {
    if !v.needs_related {
        return v.compliance;
    }
    if related.ok(vault_id, view, &v.rule, now) {
        Compliance::Compliant
    } else {
        Compliance::NonCompliant
    }
}

/// What a scan did.
#[derive(Debug, Default)]
pub struct ScanSummary {
    /// Vaults evaluated.
    pub resources: usize,
    /// States written.
    pub states: usize,
}

/// Evaluates every vault against the assignments in force (or only the
/// assignment `only`): a whole scan replaces their resource-level states;
/// one limited to `within` (a scope) updates the states of the vaults there.
pub async fn scan(
    st: &AppState,
    only: Option<&str>,
    within: Option<&str>,
) -> Result<ScanSummary, Error> {
    let compiled = st.policies().await?;
    let related = Related::load(st).await?;
    let now = st.clock.now();
    let mut by_assignment: HashMap<String, Vec<keyhaven_core::governance::states::StateRow>> =
        HashMap::new();
    for r in &compiled.set.rules {
        if only.is_none_or(|o| o.eq_ignore_ascii_case(&r.assignment.id)) {
            by_assignment.entry(r.assignment.id.clone()).or_default();
        }
    }
    let mut summary = ScanSummary::default();
    for v in st.store.list_vaults().await? {
        if v.properties.deleted.is_some()
            || v.is_managed_hsm()
            || within.is_some_and(|w| !keyhaven_core::governance::in_scope(&v.resource_id(), w))
        {
            continue;
        }
        summary.resources += 1;
        for row in vault_states(st, &compiled, &related, &v, now) {
            let Some(rows) = by_assignment
                .iter_mut()
                .find(|(a, _)| a.eq_ignore_ascii_case(&row.assignment_id))
                .map(|(_, rows)| rows)
            else {
                continue;
            };
            rows.push(row);
        }
    }
    for (assignment, rows) in by_assignment {
        summary.states += rows.len();
        if within.is_some() {
            st.store.put_policy_states(&rows).await?;
        } else {
            st.store
                .replace_policy_states(&assignment.to_ascii_lowercase(), &rows)
                .await?;
        }
    }
    Ok(summary)
}

/// Scans for one assignment in the background (after it is written).
pub fn spawn_assignment_scan(st: AppState, assignment_id: String) {
    tokio::spawn(async move {
        if let Err(e) = scan(&st, Some(&assignment_id), None).await {
            tracing::warn!(error = %e, "policy scan of a new assignment failed");
        }
    });
}

/// The daily scan, once across the nodes sharing a store.
pub async fn daily(st: &AppState) -> Result<(), Error> {
    let now = st.clock.now();
    let job = format!("policy-scan:{}", now.div_euclid(86_400));
    if !st.store.claim_job(&job, now, now + 3_600).await? {
        return Ok(());
    }
    let s = scan(st, None, None).await?;
    tracing::info!(
        resources = s.resources,
        states = s.states,
        "policy compliance scan"
    );
    st.store
        .finish_job(&job, now, now - 7 * 86_400, &[])
        .await?;
    Ok(())
}

/// The principal an assignment's managed identity signs in as, while it
/// exists and is enabled (disabling it stops its deployments).
async fn identity_of(st: &AppState, rule: &Rule) -> Option<Principal> {
    let id = rule.assignment.identity.clone()?;
    let p = st.store.get_principal(&id).await.ok()??;
    p.enabled.then_some(Principal {
        object_id: p.object_id,
        tenant_id: p.tenant_id,
        app_id: p.app_id,
        kind: PrincipalKind::ManagedIdentity,
    })
}

/// Runs a `DeployIfNotExists` rule's deployment for one vault, as the
/// assignment's managed identity. Keyhaven deploys the related type it
/// evaluates (diagnostic settings of the vault) and refuses anything else.
pub async fn deploy(
    st: &AppState,
    rule: &Rule,
    v: &VaultRecord,
    view: &Value,
) -> Result<(), String> {
    let principal = identity_of(st, rule).await.ok_or_else(|| {
        "The policy assignment has no enabled managed identity to deploy with.".to_owned()
    })?;
    let deployment = rule
        .definition
        .details
        .deployment
        .as_ref()
        .ok_or("The policy rule has no deployment.")?;
    let ctx = Context {
        api_version: String::new(),
        now: st.clock.now(),
    };
    let props = &crate::policy::at(deployment, "/properties");
    // The deployment's parameters, in the policy's scope.
    let given = keyhaven_core::governance::evaluate_json(
        crate::policy::at(props, "/parameters"),
        view,
        &rule.params,
        &ctx,
    )
    .map_err(|e: PolicyError| e.message)?;
    let mut template_params = keyhaven_core::governance::Params::new();
    if let Value::Object(m) = &given {
        for (k, w) in m {
            template_params.insert(
                k.to_ascii_lowercase(),
                w.get("value").cloned().unwrap_or(Value::Null),
            );
        }
    }
    if let Some(Value::Object(declared)) = crate::policy::at(props, "/template").get("parameters") {
        for (k, d) in declared {
            let key = k.to_ascii_lowercase();
            if let std::collections::hash_map::Entry::Vacant(e) = template_params.entry(key) {
                if let Some(dv) = d.get("defaultValue") {
                    e.insert(dv.clone());
                }
            }
        }
    }
    let resources = crate::policy::at(props, "/template/resources")
        .as_array()
        .ok_or("The deployment template has no resources.")?;
    for res in resources {
        let res =
            keyhaven_core::governance::evaluate_json(res, &Value::Null, &template_params, &ctx)
                .map_err(|e| e.message)?;
        let kind = crate::policy::at(&res, "/type")
            .as_str()
            .unwrap_or_default();
        if !kind.eq_ignore_ascii_case("Microsoft.KeyVault/vaults/providers/diagnosticSettings") {
            return Err(format!(
                "Keyhaven deploys diagnostic settings of vaults only, not '{}'.",
                kind.chars().take(100).collect::<String>()
            ));
        }
        let name = crate::policy::at(&res, "/name")
            .as_str()
            .unwrap_or_default();
        let mut parts = name.split('/');
        let (vault, setting) = (
            parts.next().unwrap_or_default(),
            parts.next_back().unwrap_or_default(),
        );
        if !vault.eq_ignore_ascii_case(v.name.as_str()) || setting.is_empty() {
            return Err("The deployment names another resource than the evaluated vault.".into());
        }
        let body = json!({ "properties": crate::policy::at(&res, "/properties") });
        crate::http::arm::diagnostics::write_setting(st, &principal, v, setting, &body)
            .await
            .map_err(|e| e.message_text())?;
    }
    Ok(())
}

/// After a vault write: deploys what enforced `DeployIfNotExists` rules
/// find missing (in the background, as Azure does after provisioning).
pub fn after_vault_write(st: AppState, v: Arc<VaultRecord>, verdicts: Vec<Verdict>) {
    let wanted: Vec<Verdict> = verdicts
        .into_iter()
        .filter(|x| {
            x.needs_related
                && x.rule.effect == Effect::DeployIfNotExists
                && x.rule.assignment.enforce
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let view = vault_view(&st, &v, None);
        let id = v.resource_id();
        let now = st.clock.now();
        let related = match Related::load(&st).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "DeployIfNotExists check failed");
                return;
            }
        };
        for x in wanted {
            if !related.ok(&id, &view, &x.rule, now) {
                if let Err(e) = deploy(&st, &x.rule, &v, &view).await {
                    tracing::warn!(assignment = %x.rule.assignment.id, error = %e, "DeployIfNotExists deployment failed");
                }
            }
        }
        if let Err(e) = record_vault(&st, &v).await {
            tracing::warn!(error = %e, "policy states after deployment not recorded");
        }
    });
}

/// One vault's states under every assignment in force.
fn vault_states(
    st: &AppState,
    compiled: &crate::policy::Compiled,
    related: &Related,
    v: &VaultRecord,
    now: i64,
) -> Vec<keyhaven_core::governance::states::StateRow> {
    let ctx = Context {
        api_version: String::new(),
        now,
    };
    let id = v.resource_id();
    let view = vault_view(st, v, None);
    let tags = view.get("tags").cloned().unwrap_or_else(|| json!({}));
    let location = crate::http::arm::vaults::location_of(v);
    let at = Evaluated {
        resource_id: &id,
        component: "",
        kind: aliases::VAULTS,
        location: &location,
        tags: &tags,
    };
    let mut rows = Vec::new();
    for verdict in compiled.set.evaluate(&id, aliases::VAULTS, &view, &ctx) {
        let c = settle(related, &id, &view, &verdict, now);
        rows.push(state_row(&at, &verdict, c, now));
    }
    rows
}

/// Evaluates one vault and records its states (every assignment).
pub async fn record_vault(st: &AppState, v: &VaultRecord) -> Result<(), Error> {
    let compiled = st.policies().await?;
    let related = Related::load(st).await?;
    let rows = vault_states(st, &compiled, &related, v, st.clock.now());
    st.store.put_policy_states(&rows).await?;
    Ok(())
}

/// What a remediation task did.
#[derive(Debug, Default)]
pub struct Remediated {
    /// Deployments attempted.
    pub total: usize,
    /// Deployments that succeeded.
    pub succeeded: usize,
    /// The first failure's message.
    pub first_error: Option<String>,
}

/// Remediates the assignment's non-compliant vaults (`DeployIfNotExists`
/// rules, optionally one initiative member): deploys to each, then
/// re-evaluates it.
pub async fn remediate(
    st: &AppState,
    assignment_id: &str,
    reference_id: Option<&str>,
    scope: &str,
    locations: &[String],
) -> Result<Remediated, Error> {
    let compiled = st.policies().await?;
    let now = st.clock.now();
    let ctx = Context {
        api_version: String::new(),
        now,
    };
    let mut out = Remediated::default();
    let related = Related::load(st).await?;
    for v in st.store.list_vaults().await? {
        if v.properties.deleted.is_some() || v.is_managed_hsm() {
            continue;
        }
        let id = v.resource_id();
        let location = crate::http::arm::vaults::location_of(&v).to_ascii_lowercase();
        if !keyhaven_core::governance::in_scope(&id, scope)
            || (!locations.is_empty() && !locations.contains(&location))
        {
            continue;
        }
        let view = vault_view(st, &v, None);
        for verdict in compiled.set.evaluate(&id, aliases::VAULTS, &view, &ctx) {
            let r = &verdict.rule;
            let member_ok = reference_id.is_none_or(|want| {
                r.set
                    .as_ref()
                    .is_some_and(|(_, refid)| refid.eq_ignore_ascii_case(want))
            });
            if !r.assignment.id.eq_ignore_ascii_case(assignment_id)
                || !member_ok
                || r.effect != Effect::DeployIfNotExists
                || !verdict.needs_related
            {
                continue;
            }
            if related.ok(&id, &view, r, now) {
                continue;
            }
            if out.total >= REMEDIATION_LIMIT {
                break;
            }
            out.total += 1;
            match deploy(st, r, &v, &view).await {
                Ok(()) => out.succeeded += 1,
                Err(e) => {
                    out.first_error.get_or_insert(e);
                }
            }
        }
        record_vault(st, &v).await?;
    }
    Ok(out)
}
