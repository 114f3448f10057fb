//! The syntax tree of a query.

use crate::Span;

/// A whole query: `let` statements, then one tabular expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `let name = scalar;` in order.
    pub lets: Vec<Let>,
    /// What the query returns.
    pub body: Tabular,
}

/// `let name = expr;`
#[derive(Debug, Clone, PartialEq)]
pub struct Let {
    /// The name bound.
    pub name: Ident,
    /// Its value (a scalar expression).
    pub value: Expr,
}

/// A name (a table, column, function or `let` binding), as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where.
    pub span: Span,
}

/// A source and the operators piped after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tabular {
    /// Where rows come from.
    pub source: Source,
    /// `| op` in order.
    pub ops: Vec<Operator>,
}

/// Where a tabular expression's rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// One table.
    Table(Ident),
    /// `union T1, T2, …` (columns are the union of the tables').
    Union(Vec<Ident>),
}

/// A tabular operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    /// Which, with its arguments.
    pub kind: OperatorKind,
    /// Where (from the operator's name to its last argument).
    pub span: Span,
}

/// The tabular operators of the subset.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorKind {
    /// `where` / `filter` predicate.
    Where(Expr),
    /// `project` columns (a name alone, or `name = expr`).
    Project(Vec<Assign>),
    /// `project-away` columns.
    ProjectAway(Vec<Ident>),
    /// `project-rename new = old, …`.
    ProjectRename(Vec<(Ident, Ident)>),
    /// `extend name = expr, …` (a name may be left out: `Column1`…).
    Extend(Vec<Assign>),
    /// `summarize aggregates by groups`.
    Summarize {
        /// Aggregations (`count()`, `name = avg(x)`, …).
        aggregates: Vec<Assign>,
        /// Grouping expressions (`by`).
        by: Vec<Assign>,
    },
    /// `order by` / `sort by`.
    Sort(Vec<SortKey>),
    /// `top N by key`.
    Top {
        /// How many rows.
        count: Expr,
        /// Ordered by.
        by: SortKey,
    },
    /// `take N` / `limit N`.
    Take(Expr),
    /// `distinct cols` (`None`: `distinct *`).
    Distinct(Option<Vec<Ident>>),
    /// `count`.
    Count,
    /// `union T, …` after a pipe.
    Union(Vec<Ident>),
    /// `render chart …`: accepted and reported, not applied.
    Render(Ident),
}

/// `name = expr`, or `expr` alone (its name then comes from the
/// expression, as KQL names it).
#[derive(Debug, Clone, PartialEq)]
pub struct Assign {
    /// The name given, if any.
    pub name: Option<Ident>,
    /// The value.
    pub expr: Expr,
}

/// A sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// What is sorted on.
    pub expr: Expr,
    /// `asc` (KQL's default is `desc`).
    pub ascending: bool,
    /// `nulls first` / `nulls last`; `None`: KQL's default for the
    /// direction (last for `desc`, first for `asc`).
    pub nulls_first: Option<bool>,
}

/// A scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where.
    pub span: Span,
}

/// Scalar expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal.
    Literal(Literal),
    /// A column or `let` name.
    Name(Ident),
    /// `f(args)`.
    Call {
        /// The function.
        name: Ident,
        /// Its arguments.
        args: Vec<Expr>,
    },
    /// `-e`.
    Negate(Box<Expr>),
    /// `l op r`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left.
        left: Box<Expr>,
        /// Right.
        right: Box<Expr>,
    },
    /// `e in (…)`, `e !in (…)`, `in~`, `!in~`.
    In {
        /// The value.
        expr: Box<Expr>,
        /// The list.
        list: Vec<Expr>,
        /// `!in`.
        negated: bool,
        /// `in~` (case-insensitive).
        case_insensitive: bool,
    },
    /// `e between (lo .. hi)`, `!between`.
    Between {
        /// The value.
        expr: Box<Expr>,
        /// Low end, inclusive.
        low: Box<Expr>,
        /// High end, inclusive.
        high: Box<Expr>,
        /// `!between`.
        negated: bool,
    },
}

/// Literals.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string.
    String(String),
    /// A 64-bit integer.
    Long(i64),
    /// A real.
    Real(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A timespan, in nanoseconds (`1h`, `30m`, `timespan(2d)`).
    Timespan(i64),
    /// `datetime(…)`: the text inside, parsed by the compiler.
    Datetime(String),
    /// `null` (of an unknown type).
    Null,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `==`
    Eq,
    /// `!=` / `<>`
    Ne,
    /// `=~`
    EqCi,
    /// `!~`
    NeCi,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// A string operator (`has`, `!contains_cs`, …).
    Str(StringOp),
}

/// The string predicates: which test, whether negated, whether case
/// matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringOp {
    /// Which test.
    pub test: StringTest,
    /// `!has` and the like.
    pub negated: bool,
    /// `_cs`: case-sensitive.
    pub case_sensitive: bool,
}

/// String tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringTest {
    /// A whole term (`has`).
    Has,
    /// A term's start (`hasprefix`).
    HasPrefix,
    /// A term's end (`hassuffix`).
    HasSuffix,
    /// A substring.
    Contains,
    /// A prefix.
    StartsWith,
    /// A suffix.
    EndsWith,
}

impl StringOp {
    /// The operator as KQL spells it.
    pub fn spelling(self) -> String {
        let base = match self.test {
            StringTest::Has => "has",
            StringTest::HasPrefix => "hasprefix",
            StringTest::HasSuffix => "hassuffix",
            StringTest::Contains => "contains",
            StringTest::StartsWith => "startswith",
            StringTest::EndsWith => "endswith",
        };
        format!(
            "{}{base}{}",
            if self.negated { "!" } else { "" },
            if self.case_sensitive { "_cs" } else { "" }
        )
    }

    /// Reads a spelling (`!has_cs`), without the `!`; `None` if it is not one.
    pub fn from_word(word: &str, negated: bool) -> Option<StringOp> {
        let lower = word.to_ascii_lowercase();
        let (base, case_sensitive) = match lower.strip_suffix("_cs") {
            Some(b) => (b, true),
            None => (lower.as_str(), false),
        };
        let test = match base {
            "has" => StringTest::Has,
            "hasprefix" => StringTest::HasPrefix,
            "hassuffix" => StringTest::HasSuffix,
            "contains" => StringTest::Contains,
            "startswith" => StringTest::StartsWith,
            "endswith" => StringTest::EndsWith,
            _ => return None,
        };
        // KQL's operators are lowercase words.
        (word == lower).then_some(StringOp {
            test,
            negated,
            case_sensitive,
        })
    }
}
