//! Azure Policy's template expressions: a string `"[fn(args)]"` in a rule's
//! `value`, a condition's right-hand side, an effect or a member
//! definition's parameter. Parsed once, when a definition is written (an
//! unknown function is refused then), and evaluated against a resource.

use serde_json::{json, Value};

use super::rule::Fielded;
use super::time;
use super::PolicyError;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal (a JSON value that was not an expression, or a string,
    /// number or boolean inside one).
    Lit(Value),
    /// `name(args…)`.
    Call(Func, Vec<Expr>),
    /// `x.name`.
    Prop(Box<Expr>, String),
    /// `x[i]`.
    Index(Box<Expr>, Box<Expr>),
}

/// The template functions Keyhaven evaluates.
#[allow(missing_docs)] // the names are the template language's
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Parameters,
    Field,
    Current,
    RequestContext,
    Concat,
    ToLower,
    ToUpper,
    Trim,
    UtcNow,
    AddDays,
    Length,
    If,
    Equals,
    Not,
    And,
    Or,
    Empty,
    Contains,
    Replace,
    Substring,
    Split,
    First,
    Last,
    PadLeft,
    IpRangeContains,
    String,
    Int,
    Bool,
    Less,
    LessOrEquals,
    Greater,
    GreaterOrEquals,
    StartsWith,
    EndsWith,
    IndexOf,
    Coalesce,
    CreateArray,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Min,
    Max,
    True,
    False,
    Null,
}

const FUNCS: &[(&str, Func, usize, usize)] = &[
    ("parameters", Func::Parameters, 1, 1),
    ("field", Func::Field, 1, 1),
    ("current", Func::Current, 0, 1),
    ("requestContext", Func::RequestContext, 0, 0),
    ("concat", Func::Concat, 1, 64),
    ("toLower", Func::ToLower, 1, 1),
    ("toUpper", Func::ToUpper, 1, 1),
    ("trim", Func::Trim, 1, 1),
    ("utcNow", Func::UtcNow, 0, 1),
    ("addDays", Func::AddDays, 2, 2),
    ("length", Func::Length, 1, 1),
    ("if", Func::If, 3, 3),
    ("equals", Func::Equals, 2, 2),
    ("not", Func::Not, 1, 1),
    ("and", Func::And, 1, 64),
    ("or", Func::Or, 1, 64),
    ("empty", Func::Empty, 1, 1),
    ("contains", Func::Contains, 2, 2),
    ("replace", Func::Replace, 3, 3),
    ("substring", Func::Substring, 2, 3),
    ("split", Func::Split, 2, 2),
    ("first", Func::First, 1, 1),
    ("last", Func::Last, 1, 1),
    ("padLeft", Func::PadLeft, 2, 3),
    ("ipRangeContains", Func::IpRangeContains, 2, 2),
    ("string", Func::String, 1, 1),
    ("int", Func::Int, 1, 1),
    ("bool", Func::Bool, 1, 1),
    ("less", Func::Less, 2, 2),
    ("lessOrEquals", Func::LessOrEquals, 2, 2),
    ("greater", Func::Greater, 2, 2),
    ("greaterOrEquals", Func::GreaterOrEquals, 2, 2),
    ("startsWith", Func::StartsWith, 2, 2),
    ("endsWith", Func::EndsWith, 2, 2),
    ("indexOf", Func::IndexOf, 2, 2),
    ("coalesce", Func::Coalesce, 1, 64),
    ("createArray", Func::CreateArray, 0, 64),
    ("add", Func::Add, 2, 2),
    ("sub", Func::Sub, 2, 2),
    ("mul", Func::Mul, 2, 2),
    ("div", Func::Div, 2, 2),
    ("mod", Func::Mod, 2, 2),
    ("min", Func::Min, 1, 64),
    ("max", Func::Max, 1, 64),
    ("true", Func::True, 0, 0),
    ("false", Func::False, 0, 0),
    ("null", Func::Null, 0, 0),
];

/// Deepest nesting an expression may have.
const MAX_DEPTH: usize = 32;

/// What an expression is evaluated against.
pub trait Scope {
    /// `parameters('name')`.
    fn parameter(&self, name: &str) -> Option<Value>;
    /// A field (an alias and its view path): one value, or through `[*]`
    /// every member's.
    fn field_multi(&self, alias: &str, path: &str) -> Result<Fielded, PolicyError>;
    /// `field('alias')` as one value (members through `[*]` as an array).
    fn field(&self, alias: &str) -> Result<Value, PolicyError> {
        let path = super::rule::field_path(alias)?;
        Ok(match self.field_multi(alias, &path)? {
            Fielded::One(v) => v,
            Fielded::Many(vs) => Value::Array(vs),
        })
    }
    /// `current('name')` (`None`: the innermost count's element).
    fn current(&self, name: Option<&str>) -> Result<Value, PolicyError>;
    /// `requestContext().apiVersion`.
    fn api_version(&self) -> String;
    /// Now, Unix seconds.
    fn now(&self) -> i64;
    /// Counts one step of the evaluation; an error once its budget is spent.
    fn step(&self) -> Result<(), PolicyError> {
        Ok(())
    }
}

impl Expr {
    /// Parses a JSON value: a string `"[…]"` is an expression (`"[[…"` is
    /// the literal text `"[…"`), anything else a literal.
    pub fn parse_value(v: &Value) -> Result<Expr, PolicyError> {
        match v {
            Value::String(s) => Expr::parse_str(s),
            other => Ok(Expr::Lit(other.clone())),
        }
    }

    /// Parses a string as `parse_value` does.
    pub fn parse_str(s: &str) -> Result<Expr, PolicyError> {
        if let Some(rest) = s.strip_prefix("[[") {
            return Ok(Expr::Lit(Value::String(format!("[{rest}"))));
        }
        match s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Some(inner) => {
                let mut p = Parser {
                    text: inner,
                    chars: inner.char_indices().collect(),
                    at: 0,
                };
                let e = p.expr(0)?;
                p.skip_ws();
                if p.at < p.chars.len() {
                    return Err(p.error("unexpected text after the expression"));
                }
                Ok(e)
            }
            None => Ok(Expr::Lit(Value::String(s.to_owned()))),
        }
    }

    /// True if the expression is a literal.
    pub fn is_literal(&self) -> bool {
        matches!(self, Expr::Lit(_))
    }

    /// Every parameter name the expression reads (for checking that a
    /// definition declares them).
    pub fn parameters_used(&self, out: &mut Vec<String>) {
        self.literal_args(Func::Parameters, out);
    }

    /// Every literal `field('…')` argument the expression reads.
    pub fn fields_used(&self, out: &mut Vec<String>) {
        self.literal_args(Func::Field, out);
    }

    /// The literal first arguments of every call of `func`.
    fn literal_args(&self, func: Func, out: &mut Vec<String>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Call(f, args) => {
                if *f == func {
                    if let Some(Expr::Lit(Value::String(n))) = args.first() {
                        out.push(n.clone());
                    }
                }
                for a in args {
                    a.literal_args(func, out);
                }
            }
            Expr::Prop(x, _) => x.literal_args(func, out),
            Expr::Index(x, i) => {
                x.literal_args(func, out);
                i.literal_args(func, out);
            }
        }
    }

    /// Evaluates the expression.
    pub fn eval(&self, s: &dyn Scope) -> Result<Value, PolicyError> {
        match self {
            Expr::Lit(v) => Ok(v.clone()),
            Expr::Prop(x, name) => {
                let v = x.eval(s)?;
                Ok(match &v {
                    Value::Object(m) => m
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                })
            }
            Expr::Index(x, i) => {
                let v = x.eval(s)?;
                let i = i.eval(s)?;
                Ok(match (&v, &i) {
                    (Value::Array(a), Value::Number(n)) => n
                        .as_u64()
                        .and_then(|n| a.get(usize::try_from(n).ok()?))
                        .cloned()
                        .unwrap_or(Value::Null),
                    (Value::Object(m), Value::String(k)) => m
                        .iter()
                        .find(|(mk, _)| mk.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                })
            }
            Expr::Call(f, args) => call(*f, args, s),
        }
    }
}

fn eval_error(msg: impl Into<String>) -> PolicyError {
    PolicyError::evaluation(msg)
}

fn str_arg(v: &Value, what: &str) -> Result<String, PolicyError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Bool(_) | Value::Number(_) => Ok(scalar_text(v)),
        _ => Err(eval_error(format!("{what} expects a string"))),
    }
}

fn int_arg(v: &Value, what: &str) -> Result<i64, PolicyError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| eval_error(format!("{what} expects an integer"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| eval_error(format!("{what} expects an integer, not '{s}'"))),
        _ => Err(eval_error(format!("{what} expects an integer"))),
    }
}

/// A scalar's text as Azure Policy compares it (`true`, `42`, `text`).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Truthiness of a `bool()`/`if()` argument.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

/// Longest text an expression may produce.
pub const MAX_TEXT: usize = 64 * 1024;
/// Most members an array an expression produces (or a count goes over) may have.
pub const MAX_ITEMS: usize = 4_096;
/// Most nodes (members, entries, and each 64 bytes of text) a value an
/// expression produces may weigh, nested arrays and objects included.
const MAX_WEIGHT: usize = 64 * 1024;

/// A value within the size limits, or an evaluation error.
pub fn bounded(v: Value) -> Result<Value, PolicyError> {
    match &v {
        Value::String(t) if t.len() > MAX_TEXT => Err(eval_error(format!(
            "an expression produced more than {MAX_TEXT} bytes of text"
        ))),
        Value::Array(a) if a.len() > MAX_ITEMS => Err(eval_error(format!(
            "an expression produced more than {MAX_ITEMS} array members"
        ))),
        Value::Array(_) | Value::Object(_) if weight(&v, MAX_WEIGHT).is_none() => Err(eval_error(
            "an expression produced a value larger than Keyhaven evaluates",
        )),
        _ => Ok(v),
    }
}

/// The weight of a value (nodes, and text in 64-byte units), if it stays
/// within `budget`.
fn weight(v: &Value, budget: usize) -> Option<usize> {
    let own = match v {
        Value::String(t) => 1 + t.len() / 64,
        _ => 1,
    };
    let mut used = own;
    if used > budget {
        return None;
    }
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(a) => Box::new(a.iter()),
        Value::Object(m) => Box::new(m.values()),
        _ => Box::new(std::iter::empty()),
    };
    for c in children {
        used += weight(c, budget - used)?;
        if used > budget {
            return None;
        }
    }
    Some(used)
}

/// Text of `parts` joined, or an error before building one past the limit.
fn joined_len(parts: &[&str]) -> Result<(), PolicyError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total > MAX_TEXT {
        return Err(eval_error(format!(
            "an expression would produce more than {MAX_TEXT} bytes of text"
        )));
    }
    Ok(())
}

fn call(f: Func, args: &[Expr], s: &dyn Scope) -> Result<Value, PolicyError> {
    s.step()?;
    bounded(call_unbounded(f, args, s)?)
}

fn call_unbounded(f: Func, args: &[Expr], s: &dyn Scope) -> Result<Value, PolicyError> {
    // `if` evaluates only the branch taken.
    if f == Func::If {
        let [c, a, b] = args else {
            return Err(eval_error("if expects three arguments"));
        };
        return if truthy(&c.eval(s)?) {
            a.eval(s)
        } else {
            b.eval(s)
        };
    }
    let v: Vec<Value> = args.iter().map(|a| a.eval(s)).collect::<Result<_, _>>()?;
    let a0 = v.first().cloned().unwrap_or(Value::Null);
    let a1 = v.get(1).cloned().unwrap_or(Value::Null);
    Ok(match f {
        Func::Parameters => {
            let name = str_arg(&a0, "parameters")?;
            s.parameter(&name).ok_or_else(|| {
                eval_error(format!(
                    "The parameter '{name}' is not defined or has no value."
                ))
            })?
        }
        Func::Field => s.field(&str_arg(&a0, "field")?)?,
        Func::Current => {
            let name = v.first().map(|a| str_arg(a, "current")).transpose()?;
            s.current(name.as_deref())?
        }
        Func::RequestContext => json!({"apiVersion": s.api_version()}),
        Func::Concat => {
            if v.iter().all(|x| x.is_array() || x.is_null()) && v.iter().any(Value::is_array) {
                Value::Array(
                    v.iter()
                        .filter_map(Value::as_array)
                        .flatten()
                        .cloned()
                        .collect(),
                )
            } else {
                let texts = v
                    .iter()
                    .map(|x| str_arg(x, "concat"))
                    .collect::<Result<Vec<_>, _>>()?;
                joined_len(&texts.iter().map(String::as_str).collect::<Vec<_>>())?;
                Value::String(texts.concat())
            }
        }
        Func::ToLower => Value::String(str_arg(&a0, "toLower")?.to_lowercase()),
        Func::ToUpper => Value::String(str_arg(&a0, "toUpper")?.to_uppercase()),
        Func::Trim => Value::String(str_arg(&a0, "trim")?.trim().to_owned()),
        Func::UtcNow => Value::String(time::iso(s.now())),
        Func::AddDays => {
            let at = str_arg(&a0, "addDays")?;
            let secs = time::parse(&at)
                .ok_or_else(|| eval_error(format!("addDays: '{at}' is not a date-time")))?;
            let days = int_arg(&a1, "addDays")?.clamp(-3_650_000, 3_650_000);
            Value::String(time::iso(secs.saturating_add(days.saturating_mul(86_400))))
        }
        Func::Length => json!(match &a0 {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            Value::String(t) => t.chars().count(),
            Value::Null => 0,
            _ => return Err(eval_error("length expects a string, array or object")),
        }),
        Func::If => Value::Null,
        Func::Equals => Value::Bool(loose_eq(&a0, &a1)),
        Func::Not => Value::Bool(!truthy(&a0)),
        Func::And => Value::Bool(v.iter().all(truthy)),
        Func::Or => Value::Bool(v.iter().any(truthy)),
        Func::Empty => Value::Bool(match &a0 {
            Value::Null => true,
            Value::String(t) => t.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
            _ => false,
        }),
        Func::Contains => Value::Bool(contains(&a0, &a1)),
        Func::Replace => {
            let hay = str_arg(&a0, "replace")?;
            let old = str_arg(&a1, "replace")?;
            let new = str_arg(v.get(2).unwrap_or(&Value::Null), "replace")?;
            if old.is_empty() {
                Value::String(hay)
            } else {
                // The result's size is known before it is built.
                let n = hay.matches(old.as_str()).count();
                let size = hay.len() - n * old.len() + n.saturating_mul(new.len());
                if size > MAX_TEXT {
                    return Err(eval_error(format!(
                        "replace would produce more than {MAX_TEXT} bytes of text"
                    )));
                }
                Value::String(hay.replace(&old, &new))
            }
        }
        Func::Substring => {
            let t: Vec<char> = str_arg(&a0, "substring")?.chars().collect();
            let start = usize::try_from(int_arg(&a1, "substring")?).unwrap_or(usize::MAX);
            let len = match v.get(2) {
                Some(l) => usize::try_from(int_arg(l, "substring")?).unwrap_or(usize::MAX),
                None => t.len().saturating_sub(start),
            };
            let end = start.checked_add(len).filter(|e| *e <= t.len());
            match end {
                Some(end) if start <= t.len() => {
                    Value::String(t.get(start..end).unwrap_or_default().iter().collect())
                }
                _ => return Err(eval_error("substring: the range is outside the string")),
            }
        }
        Func::Split => {
            let t = str_arg(&a0, "split")?;
            let seps: Vec<String> = match &a1 {
                Value::Array(a) => a.iter().map(scalar_text).collect(),
                other => vec![str_arg(other, "split")?],
            };
            let mut parts = vec![t];
            for sep in seps.iter().filter(|s| !s.is_empty()) {
                parts = parts
                    .iter()
                    .flat_map(|p| p.split(sep.as_str()).map(str::to_owned).collect::<Vec<_>>())
                    .collect();
            }
            Value::Array(parts.into_iter().map(Value::String).collect())
        }
        Func::First => match &a0 {
            Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
            Value::String(t) => t
                .chars()
                .next()
                .map_or(Value::Null, |c| json!(c.to_string())),
            _ => Value::Null,
        },
        Func::Last => match &a0 {
            Value::Array(a) => a.last().cloned().unwrap_or(Value::Null),
            Value::String(t) => t
                .chars()
                .last()
                .map_or(Value::Null, |c| json!(c.to_string())),
            _ => Value::Null,
        },
        Func::PadLeft => {
            let t = str_arg(&a0, "padLeft")?;
            let width = usize::try_from(int_arg(&a1, "padLeft")?.clamp(0, 16_384)).unwrap_or(0);
            let pad = match v.get(2) {
                Some(p) => str_arg(p, "padLeft")?.chars().next().unwrap_or(' '),
                None => ' ',
            };
            let n = t.chars().count();
            let mut out: String = std::iter::repeat_n(pad, width.saturating_sub(n)).collect();
            out.push_str(&t);
            Value::String(out)
        }
        Func::IpRangeContains => {
            let range = str_arg(&a0, "ipRangeContains")?;
            let target = str_arg(&a1, "ipRangeContains")?;
            Value::Bool(ip_range_contains(&range, &target)?)
        }
        Func::String => match &a0 {
            Value::String(_) => a0,
            Value::Array(_) | Value::Object(_) => Value::String(a0.to_string()),
            other => Value::String(scalar_text(other)),
        },
        Func::Int => json!(int_arg(&a0, "int")?),
        Func::Bool => Value::Bool(truthy(&a0)),
        Func::Less => Value::Bool(order(&a0, &a1)? == std::cmp::Ordering::Less),
        Func::LessOrEquals => Value::Bool(order(&a0, &a1)? != std::cmp::Ordering::Greater),
        Func::Greater => Value::Bool(order(&a0, &a1)? == std::cmp::Ordering::Greater),
        Func::GreaterOrEquals => Value::Bool(order(&a0, &a1)? != std::cmp::Ordering::Less),
        Func::StartsWith => Value::Bool(
            str_arg(&a0, "startsWith")?
                .to_lowercase()
                .starts_with(&str_arg(&a1, "startsWith")?.to_lowercase()),
        ),
        Func::EndsWith => Value::Bool(
            str_arg(&a0, "endsWith")?
                .to_lowercase()
                .ends_with(&str_arg(&a1, "endsWith")?.to_lowercase()),
        ),
        Func::IndexOf => {
            let hay = str_arg(&a0, "indexOf")?.to_lowercase();
            let needle = str_arg(&a1, "indexOf")?.to_lowercase();
            json!(hay
                .find(&needle)
                .map_or(-1, |b| hay.get(..b).map_or(0, |p| p.chars().count() as i64)))
        }
        Func::Coalesce => v
            .iter()
            .find(|x| !x.is_null())
            .cloned()
            .unwrap_or(Value::Null),
        Func::CreateArray => Value::Array(v),
        Func::Add | Func::Sub | Func::Mul | Func::Div | Func::Mod => {
            let (x, y) = (int_arg(&a0, "arithmetic")?, int_arg(&a1, "arithmetic")?);
            json!(match f {
                Func::Add => x.saturating_add(y),
                Func::Sub => x.saturating_sub(y),
                Func::Mul => x.saturating_mul(y),
                Func::Div => x
                    .checked_div(y)
                    .ok_or_else(|| eval_error("div: division by zero"))?,
                _ => x
                    .checked_rem(y)
                    .ok_or_else(|| eval_error("mod: division by zero"))?,
            })
        }
        Func::Min | Func::Max => {
            let items: Vec<Value> = match v.as_slice() {
                [Value::Array(a)] => a.clone(),
                _ => v.clone(),
            };
            let mut best: Option<i64> = None;
            for it in &items {
                let n = int_arg(it, "min/max")?;
                best = Some(match best {
                    None => n,
                    Some(b) if f == Func::Min => b.min(n),
                    Some(b) => b.max(n),
                });
            }
            best.map_or(Value::Null, |b| json!(b))
        }
        Func::True => Value::Bool(true),
        Func::False => Value::Bool(false),
        Func::Null => Value::Null,
    })
}

/// Equality as Azure Policy's `equals` compares: scalars by their text,
/// case-insensitively; arrays and objects structurally.
pub fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => a == b,
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => scalar_text(a).to_lowercase() == scalar_text(b).to_lowercase(),
    }
}

/// `contains`: a substring (case-insensitive), an array member, an object key.
pub fn contains(hay: &Value, needle: &Value) -> bool {
    match hay {
        Value::String(s) => s
            .to_lowercase()
            .contains(&scalar_text(needle).to_lowercase()),
        Value::Array(a) => a.iter().any(|x| loose_eq(x, needle)),
        Value::Object(m) => {
            let k = scalar_text(needle);
            m.keys().any(|mk| mk.eq_ignore_ascii_case(&k))
        }
        _ => false,
    }
}

/// Ordering for `less`/`greater`: numbers numerically, date-times as
/// instants, other text ordinally (case-insensitively).
pub fn order(a: &Value, b: &Value) -> Result<std::cmp::Ordering, PolicyError> {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return x
            .partial_cmp(&y)
            .ok_or_else(|| eval_error("numbers that cannot be compared"));
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if let (Some(tx), Some(ty)) = (time::parse(x), time::parse(y)) {
                return Ok(tx.cmp(&ty));
            }
            Ok(x.to_lowercase().cmp(&y.to_lowercase()))
        }
        _ => Err(eval_error(format!(
            "'{}' and '{}' cannot be compared",
            short(a),
            short(b)
        ))),
    }
}

fn short(v: &Value) -> String {
    let t = scalar_text(v);
    t.chars().take(64).collect()
}

/// `ipRangeContains(range, target)`: IPv4 addresses and CIDR ranges.
fn ip_range_contains(range: &str, target: &str) -> Result<bool, PolicyError> {
    let parse = |s: &str| -> Option<(u32, u32)> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, b.parse::<u32>().ok().filter(|b| *b <= 32)?),
            None => (s.trim(), 32),
        };
        let ip: std::net::Ipv4Addr = addr.parse().ok()?;
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        let start = u32::from(ip) & mask;
        Some((start, start | !mask))
    };
    match (parse(range), parse(target)) {
        (Some((a, b)), Some((c, d))) => Ok(a <= c && d <= b),
        _ => Err(eval_error(format!(
            "ipRangeContains: '{}' or '{}' is not an IPv4 address or range",
            range.chars().take(64).collect::<String>(),
            target.chars().take(64).collect::<String>()
        ))),
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> PolicyError {
        let shown: String = self.text.chars().take(200).collect();
        PolicyError::rule(format!(
            "The template language expression '{shown}' is not valid: {what} (position {}).",
            self.at
        ))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).map(|(_, c)| *c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, PolicyError> {
        if depth > MAX_DEPTH {
            return Err(self.error("the expression is nested too deeply"));
        }
        self.skip_ws();
        let mut e = match self.peek() {
            Some('\'') => self.string()?,
            Some(c) if c.is_ascii_digit() || c == '-' => self.number()?,
            Some(c) if c.is_ascii_alphabetic() => {
                let name = self.ident();
                if !self.eat('(') {
                    return Err(self.error(&format!("'{name}' must be called as a function")));
                }
                let (func, min, max) = FUNCS
                    .iter()
                    .find(|(n, ..)| n.eq_ignore_ascii_case(&name))
                    .map(|(_, f, min, max)| (*f, *min, *max))
                    .ok_or_else(|| {
                        self.error(&format!("the function '{name}' is not supported"))
                    })?;
                let mut args = Vec::new();
                if !self.eat(')') {
                    loop {
                        args.push(self.expr(depth + 1)?);
                        if self.eat(')') {
                            break;
                        }
                        if !self.eat(',') {
                            return Err(self.error("expected ',' or ')'"));
                        }
                    }
                }
                if args.len() < min || args.len() > max {
                    return Err(self.error(&format!(
                        "the function '{name}' takes {min} to {max} arguments"
                    )));
                }
                Expr::Call(func, args)
            }
            _ => return Err(self.error("expected a function, string or number")),
        };
        loop {
            self.skip_ws();
            match self.peek() {
                Some('.') => {
                    self.at += 1;
                    let name = self.ident();
                    if name.is_empty() {
                        return Err(self.error("expected a property name after '.'"));
                    }
                    e = Expr::Prop(Box::new(e), name);
                }
                Some('[') => {
                    self.at += 1;
                    let i = self.expr(depth + 1)?;
                    if !self.eat(']') {
                        return Err(self.error("expected ']'"));
                    }
                    e = Expr::Index(Box::new(e), Box::new(i));
                }
                _ => return Ok(e),
            }
        }
    }

    fn ident(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            out.push(c);
            self.at += 1;
        }
        out
    }

    fn string(&mut self) -> Result<Expr, PolicyError> {
        self.at += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("a string is not closed")),
                Some('\'') => {
                    self.at += 1;
                    if self.peek() == Some('\'') {
                        out.push('\'');
                        self.at += 1;
                    } else {
                        return Ok(Expr::Lit(Value::String(out)));
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Expr, PolicyError> {
        let mut t = String::new();
        if self.peek() == Some('-') {
            t.push('-');
            self.at += 1;
        }
        while let Some(c) = self.peek().filter(char::is_ascii_digit) {
            t.push(c);
            self.at += 1;
        }
        t.parse::<i64>()
            .map(|n| Expr::Lit(json!(n)))
            .map_err(|_| self.error("not a number"))
    }
}
