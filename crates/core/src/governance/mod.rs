//! Azure Policy: definitions (a rule, an effect, parameters), initiatives,
//! assignments at a scope, exemptions, and the evaluation of a resource
//! against all of them. Pure logic: the server keeps the documents as ARM
//! resources and calls `PolicySet::evaluate` on every write it governs.

pub mod aliases;
pub mod builtins;
pub mod expr;
pub mod rule;
pub mod states;
pub mod time;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use expr::{Expr, Scope};
use rule::{select, Cond, Fielded, Lhs, ParseState};

/// A policy document that cannot be accepted, or a rule that could not be
/// evaluated; `code` is Azure's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Azure's error code (`InvalidPolicyRule`, …).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl PolicyError {
    /// A malformed rule.
    pub fn rule(message: impl Into<String>) -> Self {
        Self {
            code: "InvalidPolicyRule",
            message: message.into(),
        }
    }

    /// An alias Keyhaven does not know.
    pub fn alias(message: impl Into<String>) -> Self {
        Self {
            code: "InvalidPolicyAlias",
            message: message.into(),
        }
    }

    /// A rule that failed while evaluating a resource.
    pub fn evaluation(message: impl Into<String>) -> Self {
        Self {
            code: "PolicyEvaluationFailed",
            message: message.into(),
        }
    }

    /// Any other refusal, with its own code.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What a definition does to a matching resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Refuse the write.
    Deny,
    /// Record non-compliance.
    Audit,
    /// Record non-compliance unless a related resource exists.
    AuditIfNotExists,
    /// Deploy a related resource unless one exists.
    DeployIfNotExists,
    /// Change the resource's properties or tags.
    Modify,
    /// Nothing.
    Disabled,
}

impl Effect {
    /// Parses an effect name (case-insensitive).
    pub fn parse(s: &str) -> Option<Effect> {
        Some(match s.to_ascii_lowercase().as_str() {
            "deny" => Effect::Deny,
            "audit" => Effect::Audit,
            "auditifnotexists" => Effect::AuditIfNotExists,
            "deployifnotexists" => Effect::DeployIfNotExists,
            "modify" => Effect::Modify,
            "disabled" => Effect::Disabled,
            _ => return None,
        })
    }

    /// Azure's name of the effect.
    pub fn name(self) -> &'static str {
        match self {
            Effect::Deny => "deny",
            Effect::Audit => "audit",
            Effect::AuditIfNotExists => "auditifnotexists",
            Effect::DeployIfNotExists => "deployifnotexists",
            Effect::Modify => "modify",
            Effect::Disabled => "disabled",
        }
    }
}

/// Which resources a definition evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every resource type (ARM).
    All,
    /// Resources with tags and a location (ARM).
    Indexed,
    /// Secrets, keys and certificates (`Microsoft.KeyVault.Data`).
    KeyVaultData,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s.to_ascii_lowercase().as_str() {
            "all" => Mode::All,
            "indexed" => Mode::Indexed,
            "microsoft.keyvault.data" => Mode::KeyVaultData,
            _ => return None,
        })
    }

    /// True if a definition of this mode evaluates resources of type `t`.
    pub fn covers(self, t: &str) -> bool {
        aliases::is_data_type(t) == (self == Mode::KeyVaultData)
    }
}

/// A parameter's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // Azure's names
pub enum ParamType {
    String,
    Array,
    Object,
    Boolean,
    Integer,
    Float,
    DateTime,
}

impl ParamType {
    fn parse(s: &str) -> Option<ParamType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "string" => ParamType::String,
            "array" => ParamType::Array,
            "object" => ParamType::Object,
            "boolean" => ParamType::Boolean,
            "integer" => ParamType::Integer,
            "float" => ParamType::Float,
            "datetime" => ParamType::DateTime,
            _ => return None,
        })
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Array => v.is_array(),
            ParamType::Object => v.is_object(),
            ParamType::Boolean => v.is_boolean(),
            ParamType::Integer => v.is_i64() || v.is_u64(),
            ParamType::Float => v.is_number(),
            ParamType::DateTime => v.as_str().and_then(time::parse).is_some(),
        }
    }
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDef {
    /// Its name as declared.
    pub name: String,
    /// Its type.
    pub kind: ParamType,
    /// The values it may take, if limited.
    pub allowed: Option<Vec<Value>>,
    /// Its default.
    pub default: Option<Value>,
}

/// Parameter values by lower-case name.
pub type Params = HashMap<String, Value>;

/// A `Modify` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct ModifyOp {
    /// `addOrReplace`, `add` or `remove`.
    pub operation: ModifyKind,
    /// The field as written.
    pub field: String,
    /// Its view path.
    pub path: String,
    /// The value to set.
    pub value: Option<Expr>,
}

/// What a `Modify` operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModifyKind {
    /// Set, replacing.
    AddOrReplace,
    /// Set if absent.
    Add,
    /// Remove.
    Remove,
}

/// `then.details`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Details {
    /// The related resource type (`…IfNotExists`).
    pub kind: Option<String>,
    /// The related resource's name, if the rule names it.
    pub name: Option<Expr>,
    /// When a related resource counts.
    pub existence: Option<Cond>,
    /// Roles the assignment's identity needs.
    pub role_definition_ids: Vec<String>,
    /// The ARM deployment `DeployIfNotExists` makes.
    pub deployment: Option<Value>,
    /// `Modify`'s operations.
    pub operations: Vec<ModifyOp>,
}

/// A parsed, validated definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// Which resources it evaluates.
    pub mode: Mode,
    /// Declared parameters by lower-case name.
    pub parameters: HashMap<String, ParamDef>,
    /// The `if`.
    pub cond: Cond,
    /// The `then.effect` (often `[parameters('effect')]`).
    pub effect: Expr,
    /// `then.details`.
    pub details: Details,
    /// The types the rule limits itself to (lower case), if it says.
    types: Option<Vec<String>>,
}

fn get<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// Declared parameters (`properties.parameters` of a definition or an
/// initiative), checked.
pub fn parse_parameters(v: Option<&Value>) -> Result<HashMap<String, ParamDef>, PolicyError> {
    let mut out = HashMap::new();
    let Some(v) = v else { return Ok(out) };
    let Value::Object(m) = v else {
        return Err(PolicyError::new(
            "InvalidPolicyParameters",
            "The policy parameters must be an object.",
        ));
    };
    for (name, decl) in m {
        let bad = |what: &str| {
            PolicyError::new(
                "InvalidPolicyParameters",
                format!("The policy parameter '{name}' is invalid: {what}."),
            )
        };
        let Value::Object(d) = decl else {
            return Err(bad("its declaration must be an object"));
        };
        let kind = get(d, "type")
            .and_then(Value::as_str)
            .and_then(ParamType::parse)
            .ok_or_else(|| {
                bad("'type' must be String, Array, Object, Boolean, Integer, Float or DateTime")
            })?;
        let allowed = match get(d, "allowedValues") {
            Some(Value::Array(a)) => {
                // An array's allowed values are its members' (or whole arrays).
                if let Some(x) = a
                    .iter()
                    .find(|x| !kind.accepts(x) && (kind != ParamType::Array || x.is_object()))
                {
                    return Err(bad(&format!("the allowed value {x} is not of its type")));
                }
                Some(a.clone())
            }
            Some(_) => return Err(bad("'allowedValues' must be an array")),
            None => None,
        };
        let default = get(d, "defaultValue").cloned();
        if let Some(dv) = &default {
            if !kind.accepts(dv) {
                return Err(bad("its default value is not of its type"));
            }
            if let Some(a) = &allowed {
                if !allowed_contains(a, dv) {
                    return Err(bad("its default value is not among its allowed values"));
                }
            }
        }
        out.insert(
            name.to_ascii_lowercase(),
            ParamDef {
                name: name.clone(),
                kind,
                allowed,
                default,
            },
        );
    }
    Ok(out)
}

fn allowed_contains(allowed: &[Value], v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().all(|i| allowed.iter().any(|a| a == i)),
        other => allowed.iter().any(|a| a == other),
    }
}

/// Values for declared parameters from `{name: {value}}`: each given value
/// is checked against its declaration, a missing one takes its default.
pub fn resolve_parameters(
    declared: &HashMap<String, ParamDef>,
    given: Option<&Value>,
    owner: &str,
) -> Result<Params, PolicyError> {
    let mut out = Params::new();
    if let Some(given) = given {
        let Value::Object(m) = given else {
            return Err(PolicyError::new(
                "InvalidPolicyParameters",
                "The policy assignment parameters must be an object.",
            ));
        };
        for (name, wrapped) in m {
            let Some(decl) = declared.get(&name.to_ascii_lowercase()) else {
                return Err(PolicyError::new(
                    "UndefinedPolicyParameter",
                    format!("The policy parameter '{name}' is not defined in policy definition '{owner}'."),
                ));
            };
            let value = match wrapped {
                Value::Object(w) => get(w, "value").cloned().unwrap_or(Value::Null),
                _ => {
                    return Err(PolicyError::new(
                        "InvalidPolicyParameters",
                        format!("The policy parameter '{name}' must be given as {{\"value\": …}}."),
                    ))
                }
            };
            if value.is_null() {
                continue;
            }
            check_value(decl, &value, owner)?;
            out.insert(name.to_ascii_lowercase(), value);
        }
    }
    for (key, decl) in declared {
        if out.contains_key(key) {
            continue;
        }
        match &decl.default {
            Some(d) => {
                out.insert(key.clone(), d.clone());
            }
            None => {
                return Err(PolicyError::new(
                    "MissingPolicyParameter",
                    format!(
                        "The policy parameter '{}' is missing in policy assignment of '{owner}'.",
                        decl.name
                    ),
                ))
            }
        }
    }
    Ok(out)
}

fn check_value(decl: &ParamDef, value: &Value, owner: &str) -> Result<(), PolicyError> {
    if !decl.kind.accepts(value) {
        return Err(PolicyError::new(
            "InvalidPolicyParameterType",
            format!(
                "The value of policy parameter '{}' in policy definition '{owner}' is not of type '{:?}'.",
                decl.name, decl.kind
            ),
        ));
    }
    if let Some(allowed) = &decl.allowed {
        if !allowed_contains(allowed, value) {
            let list = allowed
                .iter()
                .map(expr::scalar_text)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(PolicyError::new(
                "PolicyParameterValueNotAllowed",
                format!(
                    "The value '{}' is not allowed for policy parameter '{}' in policy definition '{owner}'. The allowed values are '{list}'.",
                    expr::scalar_text(value).chars().take(200).collect::<String>(),
                    decl.name
                ),
            ));
        }
    }
    Ok(())
}

impl Definition {
    /// Parses and checks a definition's `properties` (`mode`, `parameters`,
    /// `policyRule`). Anything Keyhaven would not evaluate is refused.
    pub fn parse(props: &Value) -> Result<Definition, PolicyError> {
        let Value::Object(p) = props else {
            return Err(PolicyError::rule(
                "The policy definition properties must be an object.",
            ));
        };
        let mode = match get(p, "mode") {
            None => Mode::Indexed,
            Some(Value::String(m)) => Mode::parse(m).ok_or_else(|| {
                PolicyError::new(
                    "InvalidPolicyMode",
                    format!("The policy mode '{m}' is not supported. Use 'All', 'Indexed' or 'Microsoft.KeyVault.Data'."),
                )
            })?,
            Some(_) => return Err(PolicyError::new("InvalidPolicyMode", "The policy mode must be a string.")),
        };
        let parameters = parse_parameters(get(p, "parameters"))?;
        let Some(Value::Object(rule)) = get(p, "policyRule") else {
            return Err(PolicyError::rule(
                "The policy definition must have a 'policyRule' object.",
            ));
        };
        for k in rule.keys() {
            if !k.eq_ignore_ascii_case("if") && !k.eq_ignore_ascii_case("then") {
                return Err(PolicyError::rule(format!(
                    "The policy rule property '{k}' is not supported; a rule has 'if' and 'then'."
                )));
            }
        }
        let mut st = ParseState::default();
        let cond = Cond::parse(
            get(rule, "if")
                .ok_or_else(|| PolicyError::rule("The policy rule must have an 'if'."))?,
            &mut st,
            0,
        )?;
        let Some(Value::Object(then)) = get(rule, "then") else {
            return Err(PolicyError::rule(
                "The policy rule must have a 'then' object.",
            ));
        };
        let effect = match get(then, "effect") {
            Some(Value::String(e)) => Expr::parse_str(e)?,
            _ => {
                return Err(PolicyError::rule(
                    "The policy rule's 'then' must have an 'effect' string.",
                ))
            }
        };
        effect.parameters_used(&mut st.parameters);
        if let Expr::Lit(Value::String(e)) = &effect {
            if Effect::parse(e).is_none() {
                return Err(unsupported_effect(e));
            }
        }
        let details = parse_details(then, &mut st)?;
        for f in &st.fields {
            rule::field_path(f)?;
        }
        for used in &st.parameters {
            if !parameters.contains_key(&used.to_ascii_lowercase()) {
                return Err(PolicyError::rule(format!(
                    "The policy rule uses parameter '{used}', which is not declared."
                )));
            }
        }
        let types = cond
            .types()
            .map(|ts| ts.iter().map(|t| t.to_ascii_lowercase()).collect());
        Ok(Definition {
            mode,
            parameters,
            cond,
            effect,
            details,
            types,
        })
    }

    /// True if the definition evaluates resources of type `t`.
    pub fn applies_to(&self, t: &str) -> bool {
        self.mode.covers(t)
            && self
                .types
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|x| x.eq_ignore_ascii_case(t)))
    }

    /// The effect under `params`.
    pub fn effect_with(&self, params: &Params) -> Result<Effect, PolicyError> {
        let scope = ParamsOnly::new(params);
        let v = self.effect.eval(&scope)?;
        let name = v.as_str().unwrap_or_default();
        let e = Effect::parse(name).ok_or_else(|| unsupported_effect(name))?;
        if self.mode == Mode::KeyVaultData
            && !matches!(e, Effect::Deny | Effect::Audit | Effect::Disabled)
        {
            return Err(PolicyError::new(
                "InvalidPolicyRuleEffect",
                format!("The effect '{name}' is not supported for mode 'Microsoft.KeyVault.Data'; use Audit, Deny or Disabled."),
            ));
        }
        if matches!(e, Effect::AuditIfNotExists | Effect::DeployIfNotExists)
            && self.details.kind.is_none()
        {
            return Err(PolicyError::new(
                "InvalidPolicyRuleEffectDetails",
                format!("The effect '{name}' needs 'details' with a 'type'."),
            ));
        }
        if e == Effect::DeployIfNotExists && self.details.deployment.is_none() {
            return Err(PolicyError::new(
                "InvalidPolicyRuleEffectDetails",
                "The effect 'DeployIfNotExists' needs 'details.deployment'.",
            ));
        }
        if e == Effect::Modify && self.details.operations.is_empty() {
            return Err(PolicyError::new(
                "InvalidPolicyRuleEffectDetails",
                "The effect 'Modify' needs 'details.operations'.",
            ));
        }
        Ok(e)
    }

    /// True if the `if` holds for `resource` (its view) under `ctx`.
    pub fn matches(
        &self,
        resource: &Value,
        params: &Params,
        ctx: &Context,
    ) -> Result<bool, PolicyError> {
        self.cond.eval(&ResourceScope::new(resource, params, ctx))
    }

    /// True if `related` (a related resource's view) satisfies the
    /// existence condition (none: any related resource does).
    pub fn exists_ok(
        &self,
        resource: &Value,
        related: &Value,
        params: &Params,
        ctx: &Context,
    ) -> Result<bool, PolicyError> {
        let Some(c) = &self.details.existence else {
            return Ok(true);
        };
        c.eval(&RelatedScope {
            outer: ResourceScope::new(resource, params, ctx),
            related,
        })
    }

    /// The leaf `field` conditions of the top of the rule, as evaluated
    /// against `resource` (for a deny's `evaluatedExpressions`).
    pub fn explain(&self, resource: &Value, params: &Params, ctx: &Context) -> Vec<Value> {
        let scope = ResourceScope::new(resource, params, ctx);
        let mut out = Vec::new();
        explain_into(&self.cond, &scope, &mut out, 0);
        out
    }
}

fn explain_into(c: &Cond, s: &ResourceScope<'_>, out: &mut Vec<Value>, depth: usize) {
    if depth > 3 || out.len() >= 10 {
        return;
    }
    match c {
        Cond::AllOf(cs) | Cond::AnyOf(cs) => {
            for c in cs {
                explain_into(c, s, out, depth + 1);
            }
        }
        Cond::Not(c) => explain_into(c, s, out, depth + 1),
        Cond::Leaf(l) => {
            let Lhs::Field { alias, path } = &l.lhs else {
                return;
            };
            let Ok(result) = c.eval(s) else { return };
            if !result {
                return;
            }
            let value = match s.field_multi(alias, path) {
                Ok(Fielded::One(v)) => v,
                Ok(Fielded::Many(vs)) => Value::Array(vs),
                Err(_) => Value::Null,
            };
            let target = l.rhs.eval(s).unwrap_or(Value::Null);
            out.push(json!({
                "result": "True",
                "expressionKind": "Field",
                "expression": alias,
                "path": path,
                "expressionValue": value,
                "targetValue": target,
                "operator": capitalized(l.op.name()),
            }));
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn unsupported_effect(e: &str) -> PolicyError {
    PolicyError::new(
        "InvalidPolicyRuleEffect",
        format!(
            "The policy effect '{}' is not supported. Keyhaven supports Deny, Audit, AuditIfNotExists, DeployIfNotExists, Modify and Disabled.",
            e.chars().take(100).collect::<String>()
        ),
    )
}

fn parse_details(then: &Map<String, Value>, st: &mut ParseState) -> Result<Details, PolicyError> {
    let mut d = Details::default();
    let Some(details) = get(then, "details") else {
        return Ok(d);
    };
    let Value::Object(m) = details else {
        // Append-style arrays are not supported.
        return Err(PolicyError::new(
            "InvalidPolicyRuleEffectDetails",
            "The policy rule's 'details' must be an object.",
        ));
    };
    if let Some(t) = get(m, "type") {
        let t = t.as_str().ok_or_else(|| {
            PolicyError::new(
                "InvalidPolicyRuleEffectDetails",
                "'details.type' must be a string.",
            )
        })?;
        if !t.eq_ignore_ascii_case(aliases::DIAGNOSTICS) {
            return Err(PolicyError::new(
                "InvalidPolicyRuleEffectDetails",
                format!(
                    "The related resource type '{t}' is not supported; Keyhaven supports '{}'.",
                    aliases::DIAGNOSTICS
                ),
            ));
        }
        d.kind = Some(aliases::DIAGNOSTICS.to_owned());
    }
    if let Some(n) = get(m, "name") {
        let e = Expr::parse_value(n)?;
        e.parameters_used(&mut st.parameters);
        d.name = Some(e);
    }
    if let Some(c) = get(m, "existenceCondition") {
        d.existence = Some(Cond::parse(c, st, 1)?);
    }
    if let Some(r) = get(m, "roleDefinitionIds") {
        d.role_definition_ids = r
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    }
    if let Some(dep) = get(m, "deployment") {
        d.deployment = Some(dep.clone());
    }
    if let Some(ops) = get(m, "operations") {
        let Value::Array(ops) = ops else {
            return Err(PolicyError::new(
                "InvalidPolicyRuleEffectDetails",
                "'details.operations' must be an array.",
            ));
        };
        for op in ops {
            let Value::Object(o) = op else {
                return Err(PolicyError::new(
                    "InvalidPolicyRuleEffectDetails",
                    "A modify operation must be an object.",
                ));
            };
            let operation = match get(o, "operation")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("addorreplace") => ModifyKind::AddOrReplace,
                Some("add") => ModifyKind::Add,
                Some("remove") => ModifyKind::Remove,
                _ => {
                    return Err(PolicyError::new(
                        "InvalidPolicyRuleEffectDetails",
                        "A modify operation must be 'addOrReplace', 'add' or 'remove'.",
                    ))
                }
            };
            let field = get(o, "field").and_then(Value::as_str).ok_or_else(|| {
                PolicyError::new(
                    "InvalidPolicyRuleEffectDetails",
                    "A modify operation needs a 'field'.",
                )
            })?;
            if aliases::tag_name(field).is_none() {
                return Err(PolicyError::new(
                    "InvalidPolicyRuleEffectDetails",
                    format!("Keyhaven's Modify changes tags only; '{field}' is not a tag."),
                ));
            }
            let path = rule::field_path(field)?;
            let value = get(o, "value").map(Expr::parse_value).transpose()?;
            if let Some(v) = &value {
                v.parameters_used(&mut st.parameters);
            }
            if operation != ModifyKind::Remove && value.is_none() {
                return Err(PolicyError::new(
                    "InvalidPolicyRuleEffectDetails",
                    "A modify 'add' or 'addOrReplace' needs a 'value'.",
                ));
            }
            d.operations.push(ModifyOp {
                operation,
                field: field.to_owned(),
                path,
                value,
            });
        }
    }
    Ok(d)
}

/// What an evaluation knows besides the resource.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The request's api-version (`requestContext().apiVersion`).
    pub api_version: String,
    /// Now, Unix seconds.
    pub now: i64,
}

struct ParamsOnly<'a>(&'a Params, std::cell::Cell<u32>);

impl<'a> ParamsOnly<'a> {
    fn new(p: &'a Params) -> Self {
        Self(p, std::cell::Cell::new(0))
    }
}

impl Scope for ParamsOnly<'_> {
    fn parameter(&self, name: &str) -> Option<Value> {
        self.0.get(&name.to_ascii_lowercase()).cloned()
    }

    fn field_multi(&self, _: &str, _: &str) -> Result<Fielded, PolicyError> {
        Err(PolicyError::rule("An effect cannot read fields."))
    }

    fn current(&self, _: Option<&str>) -> Result<Value, PolicyError> {
        Err(PolicyError::rule(
            "'current()' is only valid inside a count.",
        ))
    }

    fn api_version(&self) -> String {
        String::new()
    }

    fn now(&self) -> i64 {
        0
    }

    fn step(&self) -> Result<(), PolicyError> {
        let n = self.1.get() + 1;
        self.1.set(n);
        if n > STEP_BUDGET {
            return Err(PolicyError::evaluation(format!(
                "The expression took more than {STEP_BUDGET} steps to evaluate."
            )));
        }
        Ok(())
    }
}

/// Most steps (conditions and function calls) one evaluation of one rule
/// may take; beyond it the rule fails to evaluate (and counts as matched).
const STEP_BUDGET: u32 = 100_000;

/// A resource and its assignment's parameters, as a rule sees them.
struct ResourceScope<'a> {
    resource: &'a Value,
    params: &'a Params,
    ctx: &'a Context,
    steps: std::cell::Cell<u32>,
}

impl<'a> ResourceScope<'a> {
    fn new(resource: &'a Value, params: &'a Params, ctx: &'a Context) -> Self {
        Self {
            resource,
            params,
            ctx,
            steps: std::cell::Cell::new(0),
        }
    }
}

impl Scope for ResourceScope<'_> {
    fn parameter(&self, name: &str) -> Option<Value> {
        self.params.get(&name.to_ascii_lowercase()).cloned()
    }

    fn field_multi(&self, _alias: &str, path: &str) -> Result<Fielded, PolicyError> {
        Ok(select(self.resource, path))
    }

    fn current(&self, _: Option<&str>) -> Result<Value, PolicyError> {
        Err(PolicyError::evaluation(
            "'current()' is only valid inside a count.",
        ))
    }

    fn api_version(&self) -> String {
        self.ctx.api_version.clone()
    }

    fn now(&self) -> i64 {
        self.ctx.now
    }

    fn step(&self) -> Result<(), PolicyError> {
        let n = self.steps.get() + 1;
        self.steps.set(n);
        if n > STEP_BUDGET {
            return Err(PolicyError::evaluation(format!(
                "The policy rule took more than {STEP_BUDGET} steps to evaluate."
            )));
        }
        Ok(())
    }
}

/// An existence condition's scope: fields of the related type read the
/// related resource; `field()` of the evaluated resource's own aliases
/// reads it.
struct RelatedScope<'a> {
    outer: ResourceScope<'a>,
    related: &'a Value,
}

impl Scope for RelatedScope<'_> {
    fn parameter(&self, name: &str) -> Option<Value> {
        self.outer.parameter(name)
    }

    fn field_multi(&self, alias: &str, path: &str) -> Result<Fielded, PolicyError> {
        match aliases::type_of(alias) {
            Some(aliases::DIAGNOSTICS) => Ok(select(self.related, path)),
            Some(_) => self.outer.field_multi(alias, path),
            None => Ok(select(self.related, path)),
        }
    }

    fn current(&self, n: Option<&str>) -> Result<Value, PolicyError> {
        self.outer.current(n)
    }

    fn api_version(&self) -> String {
        self.outer.api_version()
    }

    fn now(&self) -> i64 {
        self.outer.now()
    }

    fn step(&self) -> Result<(), PolicyError> {
        self.outer.step()
    }
}

impl Expr {
    /// Evaluates the expression against a resource view and parameters.
    pub fn eval_in(
        &self,
        resource: &Value,
        params: &Params,
        ctx: &Context,
    ) -> Result<Value, PolicyError> {
        self.eval(&ResourceScope::new(resource, params, ctx))
    }
}

/// Evaluates every expression in a JSON document (strings `"[…]"`) against
/// a resource view and parameters: a DeployIfNotExists deployment's
/// parameters, or its template's resources.
pub fn evaluate_json(
    v: &Value,
    resource: &Value,
    params: &Params,
    ctx: &Context,
) -> Result<Value, PolicyError> {
    let scope = ResourceScope::new(resource, params, ctx);
    walk(v, &scope, 0)
}

fn walk(v: &Value, s: &ResourceScope<'_>, depth: usize) -> Result<Value, PolicyError> {
    if depth > 64 {
        return Err(PolicyError::evaluation(
            "The document is nested too deeply.",
        ));
    }
    Ok(match v {
        Value::String(t) => Expr::parse_str(t)?.eval(s)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| walk(x, s, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), walk(x, s, depth + 1)?)))
                .collect::<Result<_, PolicyError>>()?,
        ),
        other => other.clone(),
    })
}

/// An initiative's member.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The member definition's id.
    pub definition_id: String,
    /// `policyDefinitionReferenceId`.
    pub reference_id: String,
    /// The parameter values it passes (may be `[parameters('x')]` of the
    /// initiative's own).
    pub parameters: Option<Value>,
}

/// One policy assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// Its ARM id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `displayName`.
    pub display_name: String,
    /// Where it applies.
    pub scope: String,
    /// Where it does not.
    pub not_scopes: Vec<String>,
    /// The definition or initiative it assigns.
    pub definition_id: String,
    /// `{name: {value}}`.
    pub parameters: Option<Value>,
    /// False under `DoNotEnforce`.
    pub enforce: bool,
    /// `nonComplianceMessages`: (reference id or none, message).
    pub messages: Vec<(Option<String>, String)>,
    /// The principal its managed identity signs in as, if it has one.
    pub identity: Option<String>,
}

impl Assignment {
    /// Its display name, or its name when it has none.
    pub fn display_name_or_name(&self) -> &str {
        if self.display_name.is_empty() {
            &self.name
        } else {
            &self.display_name
        }
    }
}

/// One exemption.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemption {
    /// Its ARM id.
    pub id: String,
    /// Where it applies.
    pub scope: String,
    /// The assignment it exempts from.
    pub assignment_id: String,
    /// The initiative members it exempts from (empty: all).
    pub reference_ids: Vec<String>,
    /// When it stops, Unix seconds.
    pub expires: Option<i64>,
}

/// True if `id` is `scope` or beneath it (ARM ids, case-insensitive, at a
/// segment boundary).
pub fn in_scope(id: &str, scope: &str) -> bool {
    crate::ids::scope_covers(scope, id)
}

/// One definition in force under one assignment.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The assignment.
    pub assignment: Arc<Assignment>,
    /// The definition's id.
    pub definition_id: String,
    /// The definition's display name.
    pub definition_name: String,
    /// The initiative's id and the member's reference id, if through one.
    pub set: Option<(String, String)>,
    /// The definition.
    pub definition: Arc<Definition>,
    /// Its parameter values.
    pub params: Params,
    /// The effect they give.
    pub effect: Effect,
}

/// What a rule made of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compliance {
    /// The `if` did not hold (or the related resource exists).
    Compliant,
    /// It held.
    NonCompliant,
    /// An exemption covers the resource.
    Exempt,
}

impl Compliance {
    /// Azure's name.
    pub fn name(self) -> &'static str {
        match self {
            Compliance::Compliant => "Compliant",
            Compliance::NonCompliant => "NonCompliant",
            Compliance::Exempt => "Exempt",
        }
    }
}

/// A rule's verdict on one resource.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The rule.
    pub rule: Arc<Rule>,
    /// The outcome.
    pub compliance: Compliance,
    /// Whether the rule's `if` held.
    pub matched: bool,
    /// The exemptions that apply.
    pub exemptions: Vec<String>,
    /// For an `…IfNotExists` rule whose `if` held: the related resources
    /// must be looked at (the caller decides compliance).
    pub needs_related: bool,
    /// An evaluation error (the rule then counts as non-compliant).
    pub error: Option<String>,
}

/// Every rule in force, ready to evaluate.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// The rules.
    pub rules: Vec<Arc<Rule>>,
    /// The exemptions.
    pub exemptions: Vec<Exemption>,
}

impl PolicySet {
    /// The rules' verdicts on the resource `id` of `kind` (its view
    /// `resource`); rules whose effect is `Disabled`, whose scope does not
    /// hold the resource or whose definition does not cover its type give
    /// none.
    pub fn evaluate(&self, id: &str, kind: &str, resource: &Value, ctx: &Context) -> Vec<Verdict> {
        let mut out = Vec::new();
        for r in &self.rules {
            if r.effect == Effect::Disabled
                || !r.definition.applies_to(kind)
                || !in_scope(id, &r.assignment.scope)
                || r.assignment.not_scopes.iter().any(|n| in_scope(id, n))
            {
                continue;
            }
            let exemptions: Vec<String> = self
                .exemptions
                .iter()
                .filter(|e| {
                    e.assignment_id.eq_ignore_ascii_case(&r.assignment.id)
                        && in_scope(id, &e.scope)
                        && e.expires.is_none_or(|x| x > ctx.now)
                        && (e.reference_ids.is_empty()
                            || r.set.as_ref().is_some_and(|(_, refid)| {
                                e.reference_ids
                                    .iter()
                                    .any(|x| x.eq_ignore_ascii_case(refid))
                            }))
                })
                .map(|e| e.id.clone())
                .collect();
            let (matched, error) = match r.definition.matches(resource, &r.params, ctx) {
                Ok(m) => (m, None),
                Err(e) => (true, Some(e.message)),
            };
            let needs_related = matched
                && error.is_none()
                && exemptions.is_empty()
                && matches!(
                    r.effect,
                    Effect::AuditIfNotExists | Effect::DeployIfNotExists
                );
            let compliance = if !exemptions.is_empty() {
                Compliance::Exempt
            } else if matched && !needs_related {
                Compliance::NonCompliant
            } else {
                Compliance::Compliant
            };
            out.push(Verdict {
                rule: Arc::clone(r),
                compliance,
                matched,
                exemptions,
                needs_related,
                error,
            });
        }
        out
    }
}

/// Builds the rules of one assignment: `lookup` gives a definition's
/// (display name, parsed definition) or an initiative's (display name,
/// declared parameters, members) by id.
pub fn rules_of(
    a: &Arc<Assignment>,
    lookup: &dyn Fn(&str) -> Option<Resolved>,
) -> Result<Vec<Rule>, PolicyError> {
    let not_found = |id: &str| {
        PolicyError::new(
            "PolicyDefinitionNotFound",
            format!(
                "The policy definition '{}' could not be found.",
                id.chars().take(300).collect::<String>()
            ),
        )
    };
    match lookup(&a.definition_id).ok_or_else(|| not_found(&a.definition_id))? {
        Resolved::Definition { name, definition } => {
            let params = resolve_parameters(
                &definition.parameters,
                a.parameters.as_ref(),
                &a.definition_id,
            )?;
            let effect = definition.effect_with(&params)?;
            Ok(vec![Rule {
                assignment: Arc::clone(a),
                definition_id: a.definition_id.clone(),
                definition_name: name,
                set: None,
                definition,
                params,
                effect,
            }])
        }
        Resolved::Set {
            parameters,
            members,
            ..
        } => {
            let set_params =
                resolve_parameters(&parameters, a.parameters.as_ref(), &a.definition_id)?;
            let scope = ParamsOnly::new(&set_params);
            let mut out = Vec::new();
            for m in members {
                let Some(Resolved::Definition { name, definition }) = lookup(&m.definition_id)
                else {
                    return Err(not_found(&m.definition_id));
                };
                // Member values may be expressions over the initiative's.
                let given = match &m.parameters {
                    Some(Value::Object(map)) => {
                        let mut resolved = Map::new();
                        for (k, w) in map {
                            let raw = w.get("value").cloned().unwrap_or(Value::Null);
                            let v = Expr::parse_value(&raw)?.eval(&scope)?;
                            resolved.insert(k.clone(), json!({ "value": v }));
                        }
                        Some(Value::Object(resolved))
                    }
                    _ => None,
                };
                let params =
                    resolve_parameters(&definition.parameters, given.as_ref(), &m.definition_id)?;
                let effect = definition.effect_with(&params)?;
                out.push(Rule {
                    assignment: Arc::clone(a),
                    definition_id: m.definition_id.clone(),
                    definition_name: name,
                    set: Some((a.definition_id.clone(), m.reference_id.clone())),
                    definition,
                    params,
                    effect,
                });
            }
            Ok(out)
        }
    }
}

/// A definition or initiative found by id.
pub enum Resolved {
    /// A definition.
    Definition {
        /// Its display name.
        name: String,
        /// It, parsed.
        definition: Arc<Definition>,
    },
    /// An initiative.
    Set {
        /// Its display name.
        name: String,
        /// Its declared parameters.
        parameters: HashMap<String, ParamDef>,
        /// Its members.
        members: Vec<Member>,
    },
}

/// Checks an initiative's `properties` and returns its declared
/// parameters and members (each member's definition must be found by
/// `lookup`; reference ids are filled in and unique).
pub fn parse_set(
    props: &Value,
    lookup: &dyn Fn(&str) -> Option<Arc<Definition>>,
) -> Result<(HashMap<String, ParamDef>, Vec<Member>), PolicyError> {
    let Value::Object(p) = props else {
        return Err(PolicyError::new(
            "InvalidPolicySetDefinition",
            "The policy set definition properties must be an object.",
        ));
    };
    let parameters = parse_parameters(get(p, "parameters"))?;
    let Some(Value::Array(items)) = get(p, "policyDefinitions") else {
        return Err(PolicyError::new(
            "InvalidPolicySetDefinition",
            "The policy set definition must have a 'policyDefinitions' array.",
        ));
    };
    if items.is_empty() || items.len() > 1000 {
        return Err(PolicyError::new(
            "InvalidPolicySetDefinition",
            "A policy set definition holds 1 to 1000 policy definitions.",
        ));
    }
    let mut members = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(PolicyError::new(
                "InvalidPolicySetDefinition",
                "Each policy definition reference must be an object.",
            ));
        };
        let id = get(m, "policyDefinitionId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                PolicyError::new(
                    "InvalidPolicySetDefinition",
                    "Each policy definition reference needs a 'policyDefinitionId'.",
                )
            })?;
        let def = lookup(id).ok_or_else(|| {
            PolicyError::new(
                "PolicyDefinitionNotFound",
                format!(
                    "The policy definition '{}' could not be found.",
                    id.chars().take(300).collect::<String>()
                ),
            )
        })?;
        let reference_id = get(m, "policyDefinitionReferenceId")
            .and_then(Value::as_str)
            .map_or_else(
                || format!("{}_{}", id.rsplit('/').next().unwrap_or("ref"), i + 1),
                str::to_owned,
            );
        if members
            .iter()
            .any(|x: &Member| x.reference_id.eq_ignore_ascii_case(&reference_id))
        {
            return Err(PolicyError::new(
                "InvalidPolicySetDefinition",
                format!("The policy definition reference id '{reference_id}' is used twice."),
            ));
        }
        let given = get(m, "parameters").cloned();
        // Every member parameter must be declared by the member; the
        // initiative parameters it reads must be declared by the initiative.
        if let Some(Value::Object(g)) = &given {
            for (k, w) in g {
                if !def.parameters.contains_key(&k.to_ascii_lowercase()) {
                    return Err(PolicyError::new("UndefinedPolicyParameter", format!("The policy parameter '{k}' is not defined in policy definition '{id}'.")));
                }
                let mut used = Vec::new();
                Expr::parse_value(&w.get("value").cloned().unwrap_or(Value::Null))?
                    .parameters_used(&mut used);
                if let Some(u) = used
                    .iter()
                    .find(|u| !parameters.contains_key(&u.to_ascii_lowercase()))
                {
                    return Err(PolicyError::new(
                        "UndefinedPolicyParameter",
                        format!("The policy set definition parameter '{u}' is not declared."),
                    ));
                }
            }
        }
        members.push(Member {
            definition_id: id.to_owned(),
            reference_id,
            parameters: given,
        });
    }
    Ok((parameters, members))
}

#[cfg(test)]
mod tests;
