//! Azure Policy in force: the definitions, initiatives, assignments and
//! exemptions kept as ARM resources, compiled once per authorization
//! generation into a `PolicySet`, evaluated on every write Keyhaven governs
//! (vault PUT/PATCH, secret/key/certificate writes), and the compliance
//! states those evaluations leave.

use std::collections::HashMap;
use std::sync::Arc;

use keyhaven_core::governance::states::StateRow;
use keyhaven_core::governance::{
    self, builtins, Assignment, Compliance, Context, Definition, Effect, Exemption, Member,
    PolicySet, Resolved, Verdict,
};
use keyhaven_core::{Error, ResourceRecord};
use serde_json::{json, Value};

use crate::state::AppState;

/// The value at a JSON pointer, or null (reads that cannot panic).
pub(crate) fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

/// The texts of a JSON array (none for anything else).
fn texts(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The scope a stored assignment or exemption sits at.
fn scope_of(r: &ResourceRecord, kind: &str) -> Option<String> {
    let suffix = format!("/providers/{kind}");
    // An id of another shape has no scope (never the whole subscription).
    r.id.get(..r.id.len().saturating_sub(r.name.len()))?
        .trim_end_matches('/')
        .strip_suffix(suffix.as_str())
        .filter(|s| s.starts_with("/subscriptions/"))
        .map(str::to_owned)
}

/// ARM type of policy definitions.
pub const DEFINITION_TYPE: &str = "Microsoft.Authorization/policyDefinitions";
/// ARM type of initiatives.
pub const SET_TYPE: &str = "Microsoft.Authorization/policySetDefinitions";
/// ARM type of assignments.
pub const ASSIGNMENT_TYPE: &str = "Microsoft.Authorization/policyAssignments";
/// ARM type of exemptions.
pub const EXEMPTION_TYPE: &str = "Microsoft.Authorization/policyExemptions";

/// The policies in force, compiled.
#[derive(Default)]
pub struct Compiled {
    /// The rules and exemptions.
    pub set: PolicySet,
    /// Assignments that could not be compiled (a definition deleted since),
    /// with why; they enforce nothing.
    pub broken: Vec<(String, String)>,
}

/// What a stored assignment keeps: ARM's `properties`, `identity` and the
/// principal of its system-assigned identity.
pub fn assignment_of(r: &ResourceRecord) -> Option<Assignment> {
    let doc: Value = serde_json::from_str(&r.properties).ok()?;
    let p = doc.get("properties")?;
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let scope = scope_of(r, ASSIGNMENT_TYPE)?;
    Some(Assignment {
        id: r.id.clone(),
        name: r.name.clone(),
        display_name: s("displayName"),
        scope,
        not_scopes: texts(p.get("notScopes")),
        definition_id: s("policyDefinitionId"),
        parameters: p.get("parameters").cloned(),
        enforce: !s("enforcementMode").eq_ignore_ascii_case("DoNotEnforce"),
        messages: p
            .get("nonComplianceMessages")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| {
                        Some((
                            m.get("policyDefinitionReferenceId")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            m.get("message")?.as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        identity: crate::policy::at(&doc, "/identity/principalId")
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                crate::policy::at(&doc, "/identity/userAssignedIdentities")
                    .as_object()?
                    .values()
                    .next()?["principalId"]
                    .as_str()
                    .map(str::to_owned)
            }),
    })
}

/// A stored exemption.
pub fn exemption_of(r: &ResourceRecord) -> Option<Exemption> {
    let doc: Value = serde_json::from_str(&r.properties).ok()?;
    let p = doc.get("properties")?;
    let scope = scope_of(r, EXEMPTION_TYPE)?;
    Some(Exemption {
        id: r.id.clone(),
        scope,
        assignment_id: p.get("policyAssignmentId")?.as_str()?.to_owned(),
        reference_ids: texts(p.get("policyDefinitionReferenceIds")),
        expires: p
            .get("expiresOn")
            .and_then(Value::as_str)
            .and_then(governance::time::parse),
    })
}

/// The ARM `properties` a stored definition or initiative keeps.
pub fn properties_of(r: &ResourceRecord) -> Value {
    serde_json::from_str::<Value>(&r.properties)
        .ok()
        .and_then(|d| d.get("properties").cloned())
        .unwrap_or_else(|| json!({}))
}

/// Finds definitions and initiatives by id: built-ins, then the stored ones.
#[derive(Clone)]
pub struct Catalog {
    definitions: HashMap<String, (String, Arc<Definition>)>,
    sets: HashMap<String, (String, Value)>,
}

impl Catalog {
    /// The catalog of what the store holds.
    pub async fn load(st: &AppState) -> Result<Catalog, Error> {
        Self::load_from(&*st.store, &st.subscription_id).await
    }

    /// The catalog of what `store` holds for the subscription.
    pub async fn load_from(
        store: &dyn keyhaven_core::Storage,
        subscription_id: &str,
    ) -> Result<Catalog, Error> {
        let mut definitions = HashMap::new();
        for r in store
            .list_resources(DEFINITION_TYPE, subscription_id)
            .await?
        {
            let props = properties_of(&r);
            if let Ok(d) = Definition::parse(&props) {
                let name = props
                    .get("displayName")
                    .and_then(Value::as_str)
                    .unwrap_or(&r.name)
                    .to_owned();
                definitions.insert(r.id.to_ascii_lowercase(), (name, Arc::new(d)));
            }
        }
        let mut sets = HashMap::new();
        for r in store.list_resources(SET_TYPE, subscription_id).await? {
            let props = properties_of(&r);
            let name = props
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or(&r.name)
                .to_owned();
            sets.insert(r.id.to_ascii_lowercase(), (name, props));
        }
        Ok(Catalog { definitions, sets })
    }

    /// The catalog with a definition written (or replaced) as `props`.
    pub fn with_definition(mut self, id: &str, props: &Value) -> Self {
        if let Ok(d) = Definition::parse(props) {
            let name = at(props, "/displayName").as_str().unwrap_or(id).to_owned();
            self.definitions
                .insert(id.to_ascii_lowercase(), (name, Arc::new(d)));
        }
        self
    }

    /// The catalog with an initiative written (or replaced) as `props`.
    pub fn with_set(mut self, id: &str, props: &Value) -> Self {
        let name = at(props, "/displayName").as_str().unwrap_or(id).to_owned();
        self.sets
            .insert(id.to_ascii_lowercase(), (name, props.clone()));
        self
    }

    /// The assignments stored that compile against this catalog now but
    /// would not against `next` (their ids, and why).
    pub async fn broken_by(
        &self,
        next: &Catalog,
        st: &AppState,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        for r in st
            .store
            .list_resources(ASSIGNMENT_TYPE, &st.subscription_id)
            .await?
        {
            let Some(a) = assignment_of(&r) else { continue };
            let a = Arc::new(a);
            if governance::rules_of(&a, &|id| self.resolve(id)).is_err() {
                continue;
            }
            match governance::rules_of(&a, &|id| next.resolve(id)) {
                Err(e) => out.push((a.id.clone(), e.message)),
                Ok(rules)
                    if a.identity.is_none()
                        && rules.iter().any(|r| {
                            matches!(r.effect, Effect::DeployIfNotExists | Effect::Modify)
                        }) =>
                {
                    out.push((
                        a.id.clone(),
                        "it has no managed identity to deploy or modify with".into(),
                    ));
                }
                Ok(_) => {}
            }
        }
        Ok(out)
    }

    /// A definition by id.
    pub fn definition(&self, id: &str) -> Option<(String, Arc<Definition>)> {
        if let Some(b) = builtins::by_id(id) {
            let name = crate::policy::at(&b.properties, "/displayName")
                .as_str()
                .unwrap_or_default();
            return Some((name.to_owned(), Arc::clone(&b.definition)));
        }
        self.definitions.get(&id.to_ascii_lowercase()).cloned()
    }

    /// A definition or initiative by id, as assignments compile against.
    pub fn resolve(&self, id: &str) -> Option<Resolved> {
        if let Some((name, definition)) = self.definition(id) {
            return Some(Resolved::Definition { name, definition });
        }
        let (name, props) = self.sets.get(&id.to_ascii_lowercase())?;
        let (parameters, members) =
            governance::parse_set(props, &|d| self.definition(d).map(|(_, d)| d)).ok()?;
        Some(Resolved::Set {
            name: name.clone(),
            parameters,
            members,
        })
    }

    /// An initiative's members, if `id` names one.
    pub fn members(&self, id: &str) -> Option<Vec<Member>> {
        match self.resolve(id)? {
            Resolved::Set { members, .. } => Some(members),
            Resolved::Definition { .. } => None,
        }
    }
}

/// Compiles what the store holds.
pub async fn compile(
    store: &dyn keyhaven_core::Storage,
    subscription_id: &str,
) -> Result<Compiled, Error> {
    let catalog = Catalog::load_from(store, subscription_id).await?;
    let mut out = Compiled::default();
    for r in store
        .list_resources(ASSIGNMENT_TYPE, subscription_id)
        .await?
    {
        let Some(a) = assignment_of(&r) else { continue };
        let a = Arc::new(a);
        match governance::rules_of(&a, &|id| catalog.resolve(id)) {
            Ok(rules) => out.set.rules.extend(rules.into_iter().map(Arc::new)),
            Err(e) => out.broken.push((a.id.clone(), e.message)),
        }
    }
    for r in store
        .list_resources(EXEMPTION_TYPE, subscription_id)
        .await?
    {
        if let Some(e) = exemption_of(&r) {
            out.set.exemptions.push(e);
        }
    }
    Ok(out)
}

/// The outcome of evaluating one write.
pub struct Decision {
    /// Every applicable rule's verdict.
    pub verdicts: Vec<Verdict>,
    /// The first enforced `Deny` that holds, if any.
    pub deny: Option<Verdict>,
}

/// Evaluates the resource `id` of type `kind` (its view) against the
/// policies in force.
pub async fn evaluate(
    st: &AppState,
    id: &str,
    kind: &str,
    view: &Value,
    api_version: &str,
) -> Result<Decision, Error> {
    let compiled = st.policies().await?;
    let ctx = Context {
        api_version: api_version.to_owned(),
        now: st.clock.now(),
    };
    let verdicts = compiled.set.evaluate(id, kind, view, &ctx);
    let deny = verdicts
        .iter()
        .find(|v| {
            v.compliance == Compliance::NonCompliant
                && v.rule.effect == Effect::Deny
                && v.rule.assignment.enforce
        })
        .cloned();
    Ok(Decision { verdicts, deny })
}

/// The message a deny gives: the assignment's non-compliance message for
/// the member (or for all), else none.
pub fn reason(v: &Verdict) -> Option<String> {
    let refid = v.rule.set.as_ref().map(|(_, r)| r.as_str());
    let msgs = &v.rule.assignment.messages;
    msgs.iter()
        .find(|(r, _)| r.as_deref().is_some_and(|r| Some(r) == refid))
        .or_else(|| msgs.iter().find(|(r, _)| r.is_none()))
        .map(|(_, m)| m.clone())
}

/// ARM's `PolicyViolation` info for a deny.
pub fn violation_info(v: &Verdict, view: &Value, api_version: &str, now: i64) -> Value {
    let r = &v.rule;
    let ctx = Context {
        api_version: api_version.to_owned(),
        now,
    };
    let mut info = json!({
        "evaluationDetails": {
            "evaluatedExpressions": r.definition.explain(view, &r.params, &ctx),
            "reason": reason(v).unwrap_or_default(),
        },
        "policyDefinitionId": r.definition_id,
        "policyDefinitionName": r.definition_id.rsplit('/').next().unwrap_or_default(),
        "policyDefinitionDisplayName": r.definition_name,
        "policyDefinitionEffect": r.effect.name(),
        "policyAssignmentId": r.assignment.id,
        "policyAssignmentName": r.assignment.name,
        "policyAssignmentDisplayName": r.assignment.display_name,
        "policyAssignmentScope": r.assignment.scope,
        "policyAssignmentParameters": r.assignment.parameters.clone().unwrap_or_else(|| json!({})),
        "policyExemptionIds": [],
    });
    if let (Some((set, refid)), Some(m)) = (&r.set, info.as_object_mut()) {
        m.insert("policySetDefinitionId".into(), json!(set));
        m.insert(
            "policySetDefinitionName".into(),
            json!(set.rsplit('/').next().unwrap_or_default()),
        );
        m.insert("policyDefinitionReferenceId".into(), json!(refid));
    }
    if let Some(e) = &v.error {
        if let Some(m) = info.as_object_mut() {
            m.insert("evaluationError".into(), json!(e));
        }
    }
    info
}

/// Where an evaluated resource sits, for its policy states.
pub struct Evaluated<'a> {
    /// Its ARM id (a vault's, for its objects).
    pub resource_id: &'a str,
    /// The object (`secrets/name`), empty for the resource itself.
    pub component: &'a str,
    /// Its type.
    pub kind: &'a str,
    /// Its location.
    pub location: &'a str,
    /// Its tags.
    pub tags: &'a Value,
}

/// Policy states for verdicts on one resource.
pub fn states_of(at: &Evaluated<'_>, verdicts: &[Verdict], now: i64) -> Vec<StateRow> {
    verdicts
        .iter()
        .filter(|v| !v.needs_related)
        .map(|v| state_row(at, v, v.compliance, now))
        .collect()
}

/// One policy state.
pub fn state_row(at: &Evaluated<'_>, v: &Verdict, compliance: Compliance, now: i64) -> StateRow {
    let r = &v.rule;
    let (set_id, refid) = r
        .set
        .as_ref()
        .map_or((String::new(), String::new()), |(s, x)| {
            (s.clone(), x.clone())
        });
    let seg = |id: &str, key: &str| -> String {
        let parts: Vec<&str> = id.split('/').collect();
        parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case(key))
            .and_then(|i| parts.get(i + 1))
            .map(|s| (*s).to_owned())
            .unwrap_or_default()
    };
    let record = json!({
        "@odata.id": null,
        "@odata.context": "https://management.azure.com/subscriptions/$metadata#Microsoft.PolicyInsights/policyStates/$entity",
        "timestamp": governance::time::iso(now),
        "resourceId": at.resource_id,
        "policyAssignmentId": r.assignment.id,
        "policyDefinitionId": r.definition_id,
        "effectiveParameters": "",
        "isCompliant": compliance != Compliance::NonCompliant,
        "subscriptionId": seg(at.resource_id, "subscriptions"),
        "resourceType": at.kind,
        "resourceLocation": at.location,
        "resourceGroup": seg(at.resource_id, "resourceGroups"),
        "resourceTags": at.tags.to_string(),
        "policyAssignmentName": r.assignment.name,
        "policyAssignmentOwner": "tbd",
        "policyAssignmentParameters": r.assignment.parameters.clone().unwrap_or_else(|| json!({})).to_string(),
        "policyAssignmentScope": r.assignment.scope,
        "policyDefinitionName": r.definition_id.rsplit('/').next().unwrap_or_default(),
        "policyDefinitionAction": r.effect.name(),
        "policyDefinitionCategory": "tbd",
        "policySetDefinitionId": set_id,
        "policySetDefinitionName": set_id.rsplit('/').next().unwrap_or_default(),
        "policySetDefinitionOwner": "",
        "policySetDefinitionCategory": "",
        "policySetDefinitionParameters": "",
        "managementGroupIds": "",
        "policyDefinitionReferenceId": refid,
        "complianceState": compliance.name(),
        "policyDefinitionGroupNames": [""],
        "policyDefinitionVersion": "1.0.0",
        "policySetDefinitionVersion": "",
        "policyAssignmentVersion": "",
        "component": at.component,
    });
    StateRow {
        assignment_id: r.assignment.id.to_ascii_lowercase(),
        reference_id: refid.to_ascii_lowercase(),
        resource_id: at.resource_id.to_ascii_lowercase(),
        component: at.component.to_ascii_lowercase(),
        compliance: compliance.name().to_owned(),
        time: now,
        record: record.to_string(),
    }
}

/// Records the states of a write's verdicts (after the write committed; a
/// failure is logged, never the caller's: states are derived and the next
/// scan rewrites them).
pub async fn record(st: &AppState, at: &Evaluated<'_>, verdicts: &[Verdict]) {
    let rows = states_of(at, verdicts, st.clock.now());
    if rows.is_empty() {
        return;
    }
    if let Err(e) = st.store.put_policy_states(&rows).await {
        tracing::warn!(error = %e, "policy states were not recorded");
    }
}

/// Most object states waiting to be written; beyond it new ones are
/// dropped (counted and warned): states are derived, the next write of the
/// object records it again.
const STATE_QUEUE_MAX: usize = 100_000;
/// Most states one flush transaction writes.
const STATE_FLUSH_CHUNK: usize = 2_000;
/// How often queued states are written.
const STATE_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Object states on their way to the store, off the request path: a write
/// costs a map insert, not a second durable commit. States of one key
/// coalesce (the latest wins); a flush writes a batch in one transaction.
pub struct StateQueue {
    store: Arc<dyn keyhaven_core::Storage>,
    subscription_id: String,
    pending: std::sync::Mutex<HashMap<(String, String, String, String), StateRow>>,
    flusher: std::sync::OnceLock<()>,
    dropped: std::sync::atomic::AtomicU64,
}

impl StateQueue {
    /// A queue into `store` (its flusher starts with the first state).
    pub fn new(store: Arc<dyn keyhaven_core::Storage>, subscription_id: String) -> Arc<Self> {
        Arc::new(Self {
            store,
            subscription_id,
            pending: std::sync::Mutex::new(HashMap::new()),
            flusher: std::sync::OnceLock::new(),
            dropped: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Queues states.
    pub fn push(self: &Arc<Self>, rows: Vec<StateRow>) {
        self.flusher.get_or_init(|| {
            tokio::spawn(Arc::clone(self).flush_loop());
        });
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        for r in rows {
            let key = (
                r.assignment_id.clone(),
                r.reference_id.clone(),
                r.resource_id.clone(),
                r.component.clone(),
            );
            if pending.len() >= STATE_QUEUE_MAX && !pending.contains_key(&key) {
                let n = self
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n.is_multiple_of(10_000) {
                    tracing::warn!(dropped = n + 1, "policy state queue full: states dropped");
                }
                continue;
            }
            // The later evaluation wins, whichever write finished last.
            match pending.get(&key) {
                Some(old) if old.time > r.time => {}
                _ => {
                    pending.insert(key, r);
                }
            }
        }
    }

    async fn flush_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(STATE_FLUSH_EVERY);
        loop {
            tick.tick().await;
            let batch: Vec<StateRow> = match self.pending.lock() {
                Ok(mut p) if !p.is_empty() => std::mem::take(&mut *p).into_values().collect(),
                _ => continue,
            };
            // States of assignments deleted since they were queued stay gone.
            let live: std::collections::HashSet<String> = match self
                .store
                .list_resources(ASSIGNMENT_TYPE, &self.subscription_id)
                .await
            {
                Ok(all) => all.iter().map(|r| r.id.to_ascii_lowercase()).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, states = batch.len(), "policy states were not recorded");
                    continue;
                }
            };
            let batch: Vec<StateRow> = batch
                .into_iter()
                .filter(|r| live.contains(&r.assignment_id))
                .collect();
            // Short transactions: a flush never holds the writer long.
            for chunk in batch.chunks(STATE_FLUSH_CHUNK) {
                if let Err(e) = self.store.put_policy_states(chunk).await {
                    tracing::warn!(error = %e, states = chunk.len(), "policy states were not recorded");
                }
            }
        }
    }
}

/// The data-plane gate: every new secret, key or certificate version is
/// evaluated against the `Microsoft.KeyVault.Data` rules in force; an
/// enforced `Deny` refuses it, and the verdicts become the object's policy
/// states once the write commits.
pub struct Gate {
    /// The compiled policies.
    pub cache: Arc<crate::state::PolicyCache>,
    /// Where states go.
    pub states: Arc<StateQueue>,
    /// Time.
    pub clock: Arc<dyn keyhaven_core::Clock>,
}

struct Pending {
    states: Arc<StateQueue>,
    rows: Vec<StateRow>,
}

#[async_trait::async_trait]
impl keyhaven_core::governance::views::Committed for Pending {
    async fn committed(&self) {
        self.states.push(self.rows.clone());
    }
}

#[async_trait::async_trait]
impl keyhaven_core::governance::views::WriteGate for Gate {
    async fn check(
        &self,
        vault: &keyhaven_core::VaultRecord,
        kind: keyhaven_core::ObjectKind,
        name: &keyhaven_core::ObjectName,
        view: &Value,
    ) -> Result<Option<Arc<dyn keyhaven_core::governance::views::Committed>>, Error> {
        let compiled = self.cache.get().await?;
        if compiled.set.rules.is_empty() {
            return Ok(None);
        }
        let (kind_type, segment) = match kind {
            keyhaven_core::ObjectKind::Secret => (governance::aliases::SECRETS, "secrets"),
            keyhaven_core::ObjectKind::Key => (governance::aliases::KEYS, "keys"),
            keyhaven_core::ObjectKind::Certificate => {
                (governance::aliases::CERTIFICATES, "certificates")
            }
        };
        let vault_id = vault.resource_id();
        let object_id = format!("{vault_id}/{segment}/{name}");
        let now = self.clock.now();
        let ctx = Context {
            api_version: String::new(),
            now,
        };
        let verdicts = compiled.set.evaluate(&object_id, kind_type, view, &ctx);
        if verdicts.is_empty() {
            return Ok(None);
        }
        if let Some(v) = verdicts.iter().find(|v| {
            v.compliance == Compliance::NonCompliant
                && v.rule.effect == Effect::Deny
                && v.rule.assignment.enforce
        }) {
            let r = &v.rule;
            let why = reason(v)
                .map(|m| format!(" Reason: '{m}'."))
                .unwrap_or_default();
            return Err(Error::Forbidden {
                reason: keyhaven_core::error::ForbiddenReason::AzurePolicy,
                message: format!(
                    "The {} '{name}' was disallowed by policy. Policy assignment '{}' ({}) with policy definition '{}' ({}) denied it.{why}",
                    kind.noun(),
                    r.assignment.display_name_or_name(),
                    r.assignment.id,
                    r.definition_name,
                    r.definition_id,
                ),
            });
        }
        let tags = serde_json::to_value(&vault.properties.tags).unwrap_or_else(|_| json!({}));
        let location = vault
            .properties
            .location
            .clone()
            .unwrap_or_else(|| crate::config::LOCATION.to_owned());
        let component = format!("{segment}/{name}");
        let at = Evaluated {
            resource_id: &vault_id,
            component: &component,
            kind: kind_type,
            location: &location,
            tags: &tags,
        };
        Ok(Some(Arc::new(Pending {
            states: Arc::clone(&self.states),
            rows: states_of(&at, &verdicts, now),
        })))
    }
}

/// Applies the enforced `Modify` rules that hold for a vault to its tags;
/// true if any tag changed.
fn modify_vault(
    v: &mut keyhaven_core::VaultRecord,
    view: &Value,
    verdicts: &[Verdict],
    ctx: &Context,
) -> bool {
    use keyhaven_core::governance::ModifyKind;
    let mut changed = false;
    for x in verdicts {
        let r = &x.rule;
        if r.effect != Effect::Modify
            || !x.matched
            || !r.assignment.enforce
            || x.error.is_some()
            || !x.exemptions.is_empty()
        {
            continue;
        }
        for op in &r.definition.details.operations {
            let Some(tag) = op.path.strip_prefix("tags.") else {
                continue;
            };
            let existing = v
                .properties
                .tags
                .keys()
                .find(|k| k.eq_ignore_ascii_case(tag))
                .cloned();
            match op.operation {
                ModifyKind::Remove => {
                    if let Some(k) = existing {
                        v.properties.tags.remove(&k);
                        changed = true;
                    }
                }
                ModifyKind::Add if existing.is_some() => {}
                ModifyKind::Add | ModifyKind::AddOrReplace => {
                    let value = op
                        .value
                        .as_ref()
                        .and_then(|e| e.eval_in(view, &r.params, ctx).ok())
                        .map(|x| governance::expr::scalar_text(&x))
                        .unwrap_or_default();
                    if let Some(k) = existing {
                        v.properties.tags.remove(&k);
                    }
                    v.properties.tags.insert(tag.to_owned(), value);
                    changed = true;
                }
            }
        }
    }
    changed
}

/// The guard a vault write runs just before it is stored: enforced
/// `Modify` rules change its tags, then an enforced `Deny` refuses it with
/// ARM's `RequestDisallowedByPolicy`.
pub fn vault_guard<'a>(
    st: &'a AppState,
    compiled: &'a Compiled,
    api_version: &'a str,
) -> impl Fn(
    &mut keyhaven_core::VaultRecord,
    Option<&str>,
) -> Result<(), keyhaven_core::vault_admin::AdminError>
       + Send
       + Sync
       + 'a {
    move |v, mode| {
        if compiled.set.rules.is_empty() {
            return Ok(());
        }
        let ctx = Context {
            api_version: api_version.to_owned(),
            now: st.clock.now(),
        };
        let id = v.resource_id();
        let kind = governance::aliases::VAULTS;
        let view = crate::policy_scan::vault_view(st, v, mode);
        let first = compiled.set.evaluate(&id, kind, &view, &ctx);
        let view = if modify_vault(v, &view, &first, &ctx) {
            crate::policy_scan::vault_view(st, v, mode)
        } else {
            view
        };
        let verdicts = compiled.set.evaluate(&id, kind, &view, &ctx);
        let denied: Vec<&Verdict> = verdicts
            .iter()
            .filter(|x| {
                x.compliance == Compliance::NonCompliant
                    && x.rule.effect == Effect::Deny
                    && x.rule.assignment.enforce
            })
            .collect();
        let Some(first_denied) = denied.first() else {
            return Ok(());
        };
        let name = v.name.to_string();
        let message = match reason(first_denied) {
            Some(r) => format!(
                "Resource '{name}' was disallowed by policy. Reasons: '{r}'. See error details for policy resource IDs."
            ),
            None => {
                let ids: Vec<Value> = denied
                    .iter()
                    .map(|x| {
                        json!({
                            "policyAssignment": {"name": x.rule.assignment.display_name_or_name(), "id": x.rule.assignment.id},
                            "policyDefinition": {"name": x.rule.definition_name, "id": x.rule.definition_id},
                        })
                    })
                    .collect();
                format!(
                    "Resource '{name}' was disallowed by policy. Policy identifiers: '{}'.",
                    Value::Array(ids)
                )
            }
        };
        let info: Vec<Value> = denied
            .iter()
            .map(|x| {
                json!({
                    "type": "PolicyViolation",
                    "info": violation_info(x, &view, api_version, ctx.now),
                })
            })
            .collect();
        Err(keyhaven_core::vault_admin::AdminError::Disallowed(
            Box::new(json!({
                "code": "RequestDisallowedByPolicy",
                "target": name,
                "message": message,
                "additionalInfo": info,
            })),
        ))
    }
}

/// After a vault write committed: its states, and the deployments enforced
/// `DeployIfNotExists` rules find missing (in the background).
pub async fn after_vault_write(st: &AppState, v: &keyhaven_core::VaultRecord) {
    let Ok(compiled) = st.policies().await else {
        return;
    };
    if compiled.set.rules.is_empty() {
        return;
    }
    let ctx = Context {
        api_version: String::new(),
        now: st.clock.now(),
    };
    let view = crate::policy_scan::vault_view(st, v, None);
    let verdicts =
        compiled
            .set
            .evaluate(&v.resource_id(), governance::aliases::VAULTS, &view, &ctx);
    let deploys = verdicts.iter().any(|x| {
        x.needs_related && x.rule.effect == Effect::DeployIfNotExists && x.rule.assignment.enforce
    });
    if deploys {
        crate::policy_scan::after_vault_write(st.clone(), Arc::new(v.clone()), verdicts);
    } else if let Err(e) = crate::policy_scan::record_vault(st, v).await {
        tracing::warn!(error = %e, "policy states of a vault were not recorded");
    }
}
