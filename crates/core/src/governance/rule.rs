//! The policy rule language: `if` conditions (`allOf`, `anyOf`, `not`,
//! `field` / `value` / `count` with an operator) parsed once into a tree and
//! evaluated against a resource view.

use serde_json::{Map, Value};

use super::aliases;
use super::expr::{contains, loose_eq, order, scalar_text, Expr, Scope};
use super::PolicyError;

/// Most conditions one rule may hold.
const MAX_NODES: usize = 2_000;
/// Deepest nesting of conditions.
const MAX_DEPTH: usize = 32;
/// Deepest nesting of counts (a count in a count's `where`).
const MAX_COUNT_NESTING: usize = 3;

/// A condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Every one holds.
    AllOf(Vec<Cond>),
    /// At least one holds.
    AnyOf(Vec<Cond>),
    /// It does not hold.
    Not(Box<Cond>),
    /// `lhs op rhs`.
    Leaf(Box<Leaf>),
}

/// A condition's left-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Lhs {
    /// `field`: an alias or the resource's own field; its view path.
    Field {
        /// As written.
        alias: String,
        /// In the view.
        path: String,
    },
    /// `value`: an expression.
    Value(Expr),
    /// `count` of an array field's members (matching `where`).
    CountField {
        /// The `[*]` alias as written.
        alias: String,
        /// Its view path.
        path: String,
        /// The filter.
        filter: Option<Cond>,
    },
    /// `count` of a value array's members (matching `where`).
    CountValue {
        /// The array.
        value: Expr,
        /// `name`, for `current('name')`.
        name: Option<String>,
        /// The filter.
        filter: Option<Cond>,
    },
}

/// A condition operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names are Azure Policy's
pub enum Op {
    Equals,
    NotEquals,
    Like,
    NotLike,
    Match,
    MatchInsensitively,
    NotMatch,
    NotMatchInsensitively,
    Contains,
    NotContains,
    In,
    NotIn,
    ContainsKey,
    NotContainsKey,
    Less,
    LessOrEquals,
    Greater,
    GreaterOrEquals,
    Exists,
}

const OPS: &[(&str, Op)] = &[
    ("equals", Op::Equals),
    ("notEquals", Op::NotEquals),
    ("like", Op::Like),
    ("notLike", Op::NotLike),
    ("match", Op::Match),
    ("matchInsensitively", Op::MatchInsensitively),
    ("notMatch", Op::NotMatch),
    ("notMatchInsensitively", Op::NotMatchInsensitively),
    ("contains", Op::Contains),
    ("notContains", Op::NotContains),
    ("in", Op::In),
    ("notIn", Op::NotIn),
    ("containsKey", Op::ContainsKey),
    ("notContainsKey", Op::NotContainsKey),
    ("less", Op::Less),
    ("lessOrEquals", Op::LessOrEquals),
    ("greater", Op::Greater),
    ("greaterOrEquals", Op::GreaterOrEquals),
    ("exists", Op::Exists),
];

impl Op {
    /// Azure's name of the operator.
    pub fn name(self) -> &'static str {
        OPS.iter()
            .find(|(_, o)| *o == self)
            .map_or("equals", |(n, _)| n)
    }
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    /// What is compared.
    pub lhs: Lhs,
    /// How.
    pub op: Op,
    /// With what.
    pub rhs: Expr,
}

/// What parsing has seen so far (bounds, parameters used).
#[derive(Default)]
pub struct ParseState {
    nodes: usize,
    /// Parameter names the rule reads.
    pub parameters: Vec<String>,
    /// Aliases the rule's expressions read through `field()`.
    pub fields: Vec<String>,
    /// `[*]` aliases of the counts being parsed (innermost last), so a
    /// `where` may refer to the member.
    counts: Vec<String>,
}

fn key_of<'a>(m: &'a Map<String, Value>, name: &str) -> Option<(&'a String, &'a Value)> {
    m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))
}

impl Cond {
    /// Parses a condition.
    pub fn parse(v: &Value, st: &mut ParseState, depth: usize) -> Result<Cond, PolicyError> {
        st.nodes += 1;
        if st.nodes > MAX_NODES || depth > MAX_DEPTH {
            return Err(PolicyError::rule(
                "The policy rule is too large or nested too deeply.",
            ));
        }
        let Value::Object(m) = v else {
            return Err(PolicyError::rule(
                "A policy rule condition must be an object.",
            ));
        };
        for (word, build) in [
            ("allOf", Cond::AllOf as fn(Vec<Cond>) -> Cond),
            ("anyOf", Cond::AnyOf),
        ] {
            if let Some((_, inner)) = key_of(m, word) {
                if m.len() != 1 {
                    return Err(PolicyError::rule(format!(
                        "The '{word}' condition must not have other properties."
                    )));
                }
                let Value::Array(items) = inner else {
                    return Err(PolicyError::rule(format!("'{word}' must be an array.")));
                };
                if items.is_empty() {
                    return Err(PolicyError::rule(format!("'{word}' must not be empty.")));
                }
                let parsed = items
                    .iter()
                    .map(|c| Cond::parse(c, st, depth + 1))
                    .collect::<Result<_, _>>()?;
                return Ok(build(parsed));
            }
        }
        if let Some((_, inner)) = key_of(m, "not") {
            if m.len() != 1 {
                return Err(PolicyError::rule(
                    "The 'not' condition must not have other properties.",
                ));
            }
            return Ok(Cond::Not(Box::new(Cond::parse(inner, st, depth + 1)?)));
        }
        Ok(Cond::Leaf(Box::new(Leaf::parse(m, st, depth)?)))
    }

    /// Evaluates the condition.
    pub fn eval(&self, s: &dyn Scope) -> Result<bool, PolicyError> {
        match self {
            Cond::AllOf(cs) => {
                for c in cs {
                    if !c.eval(s)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Cond::AnyOf(cs) => {
                for c in cs {
                    if c.eval(s)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Cond::Not(c) => Ok(!c.eval(s)?),
            Cond::Leaf(l) => l.eval(s),
        }
    }

    /// The resource types the condition limits itself to, when it says so
    /// up front (`field: type` `equals`/`in` at the top or in the top
    /// `allOf`); `None`: any type.
    pub fn types(&self) -> Option<Vec<String>> {
        let leaf_types = |c: &Cond| -> Option<Vec<String>> {
            let Cond::Leaf(l) = c else { return None };
            let Lhs::Field { path, .. } = &l.lhs else {
                return None;
            };
            if path != "type" {
                return None;
            }
            match (&l.op, &l.rhs) {
                (Op::Equals, Expr::Lit(Value::String(t))) => Some(vec![t.clone()]),
                (Op::In, Expr::Lit(Value::Array(ts))) => Some(
                    ts.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            }
        };
        match self {
            Cond::AllOf(cs) => cs.iter().find_map(leaf_types),
            other => leaf_types(other),
        }
    }
}

impl Leaf {
    fn parse(
        m: &Map<String, Value>,
        st: &mut ParseState,
        depth: usize,
    ) -> Result<Leaf, PolicyError> {
        let mut lhs = None;
        let mut op = None;
        for (k, v) in m {
            let lower = k.to_ascii_lowercase();
            match lower.as_str() {
                "field" => {
                    let Value::String(alias) = v else {
                        return Err(PolicyError::rule("'field' must be a string."));
                    };
                    let path = field_path(alias)?;
                    set_once(
                        &mut lhs,
                        Lhs::Field {
                            alias: alias.clone(),
                            path,
                        },
                    )?;
                }
                "value" => {
                    let e = Expr::parse_value(v)?;
                    e.parameters_used(&mut st.parameters);
                    e.fields_used(&mut st.fields);
                    set_once(&mut lhs, Lhs::Value(e))?;
                }
                "count" => set_once(&mut lhs, parse_count(v, st, depth)?)?,
                _ => {
                    let Some((_, o)) = OPS.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)) else {
                        return Err(PolicyError::rule(format!(
                            "The policy rule condition property '{k}' is not supported."
                        )));
                    };
                    if op.is_some() {
                        return Err(PolicyError::rule(
                            "A policy rule condition must have exactly one operator.",
                        ));
                    }
                    let rhs = Expr::parse_value(v)?;
                    rhs.parameters_used(&mut st.parameters);
                    rhs.fields_used(&mut st.fields);
                    if *o == Op::Exists {
                        if let Expr::Lit(l) = &rhs {
                            if !matches!(l, Value::Bool(_))
                                && !matches!(
                                    l.as_str().map(str::to_ascii_lowercase).as_deref(),
                                    Some("true" | "false")
                                )
                            {
                                return Err(PolicyError::rule(
                                    "The 'exists' operator takes true or false.",
                                ));
                            }
                        }
                    }
                    op = Some((*o, rhs));
                }
            }
        }
        let lhs = lhs.ok_or_else(|| {
            PolicyError::rule("A policy rule condition needs 'field', 'value' or 'count'.")
        })?;
        let (op, rhs) =
            op.ok_or_else(|| PolicyError::rule("A policy rule condition needs an operator."))?;
        if matches!(lhs, Lhs::Value(_)) && op == Op::Exists {
            return Err(PolicyError::rule(
                "The 'exists' operator cannot be used with 'value'.",
            ));
        }
        Ok(Leaf { lhs, op, rhs })
    }

    fn eval(&self, s: &dyn Scope) -> Result<bool, PolicyError> {
        s.step()?;
        let rhs = self.rhs.eval(s)?;
        match &self.lhs {
            Lhs::Field { alias, path } => match s.field_multi(alias, path)? {
                Fielded::One(v) => test(self.op, &v, &rhs),
                Fielded::Many(vs) => {
                    for v in &vs {
                        if !test(self.op, v, &rhs)? {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                }
            },
            Lhs::Value(e) => test(self.op, &e.eval(s)?, &rhs),
            Lhs::CountField {
                alias,
                path,
                filter,
            } => {
                let members = match s.field_multi(alias, path)? {
                    Fielded::Many(vs) => vs,
                    Fielded::One(Value::Null) => Vec::new(),
                    Fielded::One(v) => vec![v],
                };
                let key = (alias.to_ascii_lowercase(), Some(path.as_str()));
                let n = count_members(s, key, &members, filter.as_ref())?;
                test(self.op, &Value::from(n), &rhs)
            }
            Lhs::CountValue {
                value,
                name,
                filter,
            } => {
                let members = match value.eval(s)? {
                    Value::Array(a) => a,
                    Value::Null => Vec::new(),
                    other => vec![other],
                };
                let key = (name.clone().unwrap_or_default().to_ascii_lowercase(), None);
                let n = count_members(s, key, &members, filter.as_ref())?;
                test(self.op, &Value::from(n), &rhs)
            }
        }
    }
}

fn count_members(
    s: &dyn Scope,
    (key, base): (String, Option<&str>),
    members: &[Value],
    filter: Option<&Cond>,
) -> Result<i64, PolicyError> {
    if members.len() > super::expr::MAX_ITEMS {
        return Err(PolicyError::evaluation(format!(
            "a count goes over more than {} members",
            super::expr::MAX_ITEMS
        )));
    }
    let Some(f) = filter else {
        return Ok(members.len() as i64);
    };
    let mut n = 0;
    for m in members {
        let inner = Member {
            outer: s,
            key: &key,
            base,
            member: m,
        };
        if f.eval(&inner)? {
            n += 1;
        }
    }
    Ok(n)
}

fn set_once(slot: &mut Option<Lhs>, v: Lhs) -> Result<(), PolicyError> {
    if slot.is_some() {
        return Err(PolicyError::rule(
            "A policy rule condition must have exactly one of 'field', 'value' and 'count'.",
        ));
    }
    *slot = Some(v);
    Ok(())
}

/// The view path of a `field`, or 400 for an alias Keyhaven does not know.
pub fn field_path(alias: &str) -> Result<String, PolicyError> {
    aliases::path_of(alias).ok_or_else(|| {
        PolicyError::alias(format!(
            "The policy rule field '{}' is not a known alias. Keyhaven knows the Key Vault aliases listed in docs/policy.md.",
            alias.chars().take(200).collect::<String>()
        ))
    })
}

fn parse_count(v: &Value, st: &mut ParseState, depth: usize) -> Result<Lhs, PolicyError> {
    let Value::Object(m) = v else {
        return Err(PolicyError::rule("'count' must be an object."));
    };
    for k in m.keys() {
        if !["field", "value", "name", "where"]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(k))
        {
            return Err(PolicyError::rule(format!(
                "The count property '{k}' is not supported."
            )));
        }
    }
    if st.counts.len() >= MAX_COUNT_NESTING {
        return Err(PolicyError::rule(format!(
            "Counts may be nested at most {MAX_COUNT_NESTING} deep."
        )));
    }
    let filter_of = |st: &mut ParseState, key: String| -> Result<Option<Cond>, PolicyError> {
        st.counts.push(key);
        let out = key_of(m, "where")
            .map(|(_, w)| Cond::parse(w, st, depth + 1))
            .transpose();
        st.counts.pop();
        out
    };
    match (key_of(m, "field"), key_of(m, "value")) {
        (Some((_, Value::String(alias))), None) => {
            if key_of(m, "name").is_some() {
                return Err(PolicyError::rule("A field count cannot have a 'name'."));
            }
            let path = field_path(alias)?;
            if !path.ends_with("[*]") {
                return Err(PolicyError::rule(format!(
                    "The count field '{alias}' must be an array alias ending in [*]."
                )));
            }
            let filter = filter_of(st, alias.to_ascii_lowercase())?;
            Ok(Lhs::CountField {
                alias: alias.clone(),
                path,
                filter,
            })
        }
        (None, Some((_, value))) => {
            let value = Expr::parse_value(value)?;
            value.parameters_used(&mut st.parameters);
            value.fields_used(&mut st.fields);
            let name = match key_of(m, "name") {
                Some((_, Value::String(n))) => Some(n.clone()),
                Some(_) => return Err(PolicyError::rule("The count 'name' must be a string.")),
                None => None,
            };
            let filter = filter_of(st, name.clone().unwrap_or_default().to_ascii_lowercase())?;
            Ok(Lhs::CountValue {
                value,
                name,
                filter,
            })
        }
        _ => Err(PolicyError::rule(
            "A count must have exactly one of 'field' (a string) and 'value'.",
        )),
    }
}

/// What a field names: one value, or (through `[*]`) every member's.
pub enum Fielded {
    /// No `[*]` on the way.
    One(Value),
    /// Through `[*]`.
    Many(Vec<Value>),
}

/// A count's member in scope: `field` of the count's `[*]` alias (and
/// longer aliases under it) and `current()` read the member.
struct Member<'a> {
    outer: &'a dyn Scope,
    /// The count's `[*]` alias or `name`, lower case.
    key: &'a str,
    /// The `[*]` alias's view path (a field count).
    base: Option<&'a str>,
    member: &'a Value,
}

impl Scope for Member<'_> {
    fn parameter(&self, name: &str) -> Option<Value> {
        self.outer.parameter(name)
    }

    fn field_multi(&self, alias: &str, path: &str) -> Result<Fielded, PolicyError> {
        if let Some(rel) = self.relative(alias, path) {
            return Ok(select(self.member, rel));
        }
        self.outer.field_multi(alias, path)
    }

    fn current(&self, name: Option<&str>) -> Result<Value, PolicyError> {
        match name {
            None => Ok(self.member.clone()),
            Some(n) if n.eq_ignore_ascii_case(self.key) => Ok(self.member.clone()),
            Some(n) => match aliases::path_of(n)
                .as_deref()
                .and_then(|p| self.relative(n, p).map(str::to_owned))
            {
                Some(rel) => Ok(match select(self.member, &rel) {
                    Fielded::One(v) => v,
                    Fielded::Many(vs) => Value::Array(vs),
                }),
                None => self.outer.current(Some(n)),
            },
        }
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

impl Member<'_> {
    /// The path under the member that a field names, if it is the count's
    /// `[*]` alias or one beneath it.
    fn relative<'p>(&self, alias: &str, path: &'p str) -> Option<&'p str> {
        let base = self.base?;
        let head = alias.get(..self.key.len())?;
        if !head.eq_ignore_ascii_case(self.key) {
            return None;
        }
        path.get(base.len()..).map(|r| r.trim_start_matches('.'))
    }
}

/// Reads `path` (segments split on `.`, `x[*]` every member of array `x`)
/// from `root`; object keys match case-insensitively.
pub fn select(root: &Value, path: &str) -> Fielded {
    if path.is_empty() {
        return Fielded::One(root.clone());
    }
    if let Some(tag) = path.strip_prefix("tags.") {
        return Fielded::One(
            get_ci(root, "tags")
                .and_then(|t| get_ci(t, tag))
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    let mut current: Vec<&Value> = vec![root];
    let mut many = false;
    for seg in path.split('.') {
        let (name, star) = match seg.strip_suffix("[*]") {
            Some(n) => (n, true),
            None => (seg, false),
        };
        let mut next = Vec::new();
        for v in current {
            let Some(child) = get_ci(v, name) else {
                if !many {
                    next.push(&Value::Null);
                }
                continue;
            };
            if star || (many && child.is_array()) {
                if let Value::Array(a) = child {
                    next.extend(a.iter());
                }
            } else {
                next.push(child);
            }
        }
        many |= star;
        current = next;
    }
    if many {
        Fielded::Many(current.into_iter().cloned().collect())
    } else {
        Fielded::One(current.first().map_or(Value::Null, |v| (*v).clone()))
    }
}

fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let m = v.as_object()?;
    m.get(key)
        .or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

/// One operator applied.
pub fn test(op: Op, lhs: &Value, rhs: &Value) -> Result<bool, PolicyError> {
    let as_list = |v: &Value| -> Result<Vec<Value>, PolicyError> {
        match v {
            Value::Array(a) => Ok(a.clone()),
            _ => Err(PolicyError::evaluation(format!(
                "The '{}' operator expects an array, not '{}'.",
                op.name(),
                scalar_text(v).chars().take(64).collect::<String>()
            ))),
        }
    };
    Ok(match op {
        Op::Equals => loose_eq(lhs, rhs),
        Op::NotEquals => !loose_eq(lhs, rhs),
        Op::Like => like(&scalar_text(lhs), &scalar_text(rhs)) && !lhs.is_null(),
        Op::NotLike => !like(&scalar_text(lhs), &scalar_text(rhs)) || lhs.is_null(),
        Op::Match => pattern(&scalar_text(lhs), &scalar_text(rhs), false) && !lhs.is_null(),
        Op::MatchInsensitively => {
            pattern(&scalar_text(lhs), &scalar_text(rhs), true) && !lhs.is_null()
        }
        Op::NotMatch => !pattern(&scalar_text(lhs), &scalar_text(rhs), false) || lhs.is_null(),
        Op::NotMatchInsensitively => {
            !pattern(&scalar_text(lhs), &scalar_text(rhs), true) || lhs.is_null()
        }
        Op::Contains => !lhs.is_null() && contains(lhs, rhs),
        Op::NotContains => lhs.is_null() || !contains(lhs, rhs),
        Op::In => as_list(rhs)?.iter().any(|x| loose_eq(lhs, x)),
        Op::NotIn => !as_list(rhs)?.iter().any(|x| loose_eq(lhs, x)),
        Op::ContainsKey => lhs
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(&scalar_text(rhs)))),
        Op::NotContainsKey => !lhs
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(&scalar_text(rhs)))),
        Op::Less | Op::LessOrEquals | Op::Greater | Op::GreaterOrEquals => {
            if lhs.is_null() || rhs.is_null() {
                return Ok(false);
            }
            let o = order(lhs, rhs)?;
            match op {
                Op::Less => o.is_lt(),
                Op::LessOrEquals => o.is_le(),
                Op::Greater => o.is_gt(),
                _ => o.is_ge(),
            }
        }
        Op::Exists => {
            let want = match rhs {
                Value::Bool(b) => *b,
                other => scalar_text(other).eq_ignore_ascii_case("true"),
            };
            let present = match lhs {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            present == want
        }
    })
}

/// `like`: `*` matches any run of characters; case-insensitive.
pub fn like(text: &str, pat: &str) -> bool {
    crate::ids::wildcard_matches(pat, text)
}

/// `match`: `#` a digit, `?` a letter, `.` any character, others themselves.
pub fn pattern(text: &str, pat: &str, insensitive: bool) -> bool {
    let (t, p) = if insensitive {
        (text.to_lowercase(), pat.to_lowercase())
    } else {
        (text.to_owned(), pat.to_owned())
    };
    let (t, p): (Vec<char>, Vec<char>) = (t.chars().collect(), p.chars().collect());
    t.len() == p.len()
        && t.iter().zip(&p).all(|(c, q)| match q {
            '#' => c.is_ascii_digit(),
            '?' => c.is_alphabetic(),
            '.' => true,
            other => c == other,
        })
}
