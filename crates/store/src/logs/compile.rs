//! KQL syntax tree → one SQL statement with numbered parameters.

use std::collections::HashMap;

use keyhaven_kql::{
    Assign, BinaryOp, Expr, ExprKind, Ident, Literal, OperatorKind, Query, SortKey, Source, Span,
    StringOp, StringTest,
};

use super::{table, CatalogColumn, Dialect, KqlType};

/// The select list of a source step: each of the step's columns as the
/// table `cat` computes it. KQL strings are never null: a column the table
/// lacks (a `union` of tables) is empty text, null for the other types.
fn source_list(cat: &[CatalogColumn], cols: &[Column]) -> String {
    cols.iter()
        .map(|c| {
            let missing = if c.ty == KqlType::String {
                "''"
            } else {
                "NULL"
            };
            let sql = cat
                .iter()
                .find(|cc| cc.name == c.name)
                .map_or(missing, |cc| cc.sql);
            format!("{sql} AS {}", c.sql)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `log_records` columns with a term index (their text is ASCII: see
/// [`super::term_array`]).
const INDEXED_TEXT: [&str; 2] = ["object_id", "request_uri"];

/// The terms that the query's leading `where` operators require of a
/// column: each `Column has "literal"` (or `has_cs`) that is a conjunct of
/// their predicates, as the column's KQL name and the literal's terms
/// (ASCII letters and digits, lower case). A term with a character outside
/// ASCII gives none (the index splits text as the `has` test does only for
/// ASCII).
fn indexed_terms(ops: &[keyhaven_kql::Operator]) -> Vec<(String, Vec<String>)> {
    fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
        match &e.kind {
            ExprKind::Binary {
                op: BinaryOp::And,
                left,
                right,
            } => {
                conjuncts(left, out);
                conjuncts(right, out);
            }
            _ => out.push(e),
        }
    }
    let mut found = Vec::new();
    for op in ops {
        let OperatorKind::Where(p) = &op.kind else {
            break;
        };
        let mut all = Vec::new();
        conjuncts(p, &mut all);
        for e in all {
            let ExprKind::Binary {
                op:
                    BinaryOp::Str(StringOp {
                        test: StringTest::Has,
                        negated: false,
                        ..
                    }),
                left,
                right,
            } = &e.kind
            else {
                continue;
            };
            let (ExprKind::Name(col), ExprKind::Literal(Literal::String(term))) =
                (&left.kind, &right.kind)
            else {
                continue;
            };
            if !term.is_ascii() {
                continue;
            }
            let tokens: Vec<String> = term
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|t| !t.is_empty())
                .map(str::to_ascii_lowercase)
                .collect();
            if !tokens.is_empty() && tokens.len() <= 16 {
                found.push((col.name.clone(), tokens));
            }
        }
    }
    found
}

/// Most rows a query returns.
pub const MAX_ROWS: i64 = 30_000;

/// What a query may read: the records of some workspaces (one, or, for a
/// resource-context query, every live workspace), each from its own
/// earliest time (its retention), of one resource if one is named, in one
/// time span.
#[derive(Debug, Clone)]
pub struct QueryScope {
    /// Workspaces' customer ids, each with the earliest time (µs) of its
    /// records a query may read.
    pub workspaces: Vec<(String, i64)>,
    /// The resource's ARM id (compared upper case, as records keep it).
    pub resource: Option<String>,
    /// The vaults whose metrics `AzureMetrics` holds (ARM ids, lower case),
    /// each with the customer id of the workspace they are sent to.
    pub metric_vaults: Vec<(String, String)>,
    /// Records at or after this time (µs since the epoch).
    pub from_us: i64,
    /// Records at or before this time.
    pub to_us: i64,
    /// The query's `now()` (µs).
    pub now_us: i64,
}

/// A parameter of the compiled statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// Real.
    Real(f64),
}

/// A compiled query.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// One statement; parameter `n` is written `?n`.
    pub sql: String,
    /// Its parameters, `?1` first.
    pub params: Vec<SqlParam>,
    /// The result's columns, in order, with their types.
    pub columns: Vec<(String, KqlType)>,
}

/// A query that reads but means nothing here (Azure's `SemanticError`).
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    /// What is wrong.
    pub message: String,
    /// Where.
    pub span: Span,
}

type Result<T> = std::result::Result<T, CompileError>;

fn fail<T>(span: Span, message: impl Into<String>) -> Result<T> {
    Err(CompileError {
        message: message.into(),
        span,
    })
}

/// A column of a step: its KQL name and type, and the name SQL knows it
/// by (`c1`, `c2`, …: never caller text, so KQL's case-sensitive names,
/// quotes and lengths never meet SQL's rules for identifiers).
#[derive(Debug, Clone)]
struct Column {
    name: String,
    ty: KqlType,
    sql: String,
    /// The order a sort left (not a caller's column).
    hidden: bool,
}

#[derive(Debug, Clone)]
struct Typed {
    sql: String,
    ty: KqlType,
}

/// The SQL name of the hidden column that carries a sort's order onward.
const ORDER: &str = "kh_order";
/// Most bytes of SQL a query may make (a `let` used twice in the next
/// `let`, nested `bin`s: SQL text can grow faster than the query).
const MAX_SQL: usize = 256 * 1024;

/// A boolean test, or its negation.
fn predicate(test: String, negated: bool) -> Typed {
    Typed {
        sql: if negated {
            format!("(NOT {test})")
        } else {
            test
        },
        ty: KqlType::Bool,
    }
}

/// The columns a caller sees (not the hidden order).
fn visible(cols: &[Column]) -> Vec<Column> {
    cols.iter().filter(|c| !c.hidden).cloned().collect()
}

/// `c1, c2` for a select list.
fn column_list(cols: &[Column]) -> String {
    cols.iter()
        .map(|c| c.sql.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

struct Compiler {
    dialect: Dialect,
    params: Vec<SqlParam>,
    steps: Vec<String>,
    lets: HashMap<String, Typed>,
    scope: QueryScope,
    /// The current step's columns.
    cols: Vec<Column>,
    /// The operator being compiled (for messages).
    op: &'static str,
    /// SQL column names handed out.
    made: usize,
}

/// Compiles `query` for `scope`.
pub fn compile(query: &Query, scope: &QueryScope, dialect: Dialect) -> Result<Compiled> {
    let mut c = Compiler {
        dialect,
        params: Vec::new(),
        steps: Vec::new(),
        lets: HashMap::new(),
        scope: scope.clone(),
        cols: Vec::new(),
        op: "let",
        made: 0,
    };
    for l in &query.lets {
        let v = c.expr(&l.value)?;
        c.lets.insert(l.name.name.clone(), v);
    }
    c.op = "source";
    let tables = match &query.body.source {
        Source::Table(t) => vec![t.clone()],
        Source::Union(ts) => ts.clone(),
    };
    let terms = indexed_terms(&query.body.ops);
    c.source(&tables, &terms)?;
    for op in &query.body.ops {
        c.operator(&op.kind, op.span)?;
    }
    let last = c.current();
    let visible = visible(&c.cols);
    let list = column_list(&visible);
    let order = if c.ordered() {
        format!(" ORDER BY {ORDER}")
    } else {
        String::new()
    };
    let limit = c.param(SqlParam::Int(MAX_ROWS));
    if c.steps.iter().map(String::len).sum::<usize>() > 4 * MAX_SQL {
        return fail(
            Span::default(),
            "The query is too complex: its steps grow past what Keyhaven runs.",
        );
    }
    let sql = format!(
        "WITH {} SELECT {list} FROM {last}{order} LIMIT {limit}",
        c.steps.join(", ")
    );
    Ok(Compiled {
        sql,
        params: c.params,
        columns: visible
            .iter()
            .map(|col| (col.name.clone(), col.ty))
            .collect(),
    })
}

impl Compiler {
    fn param(&mut self, p: SqlParam) -> String {
        self.params.push(p);
        match self.dialect {
            Dialect::Sqlite => format!("?{}", self.params.len()),
            // PostgreSQL cannot infer a bare parameter's type everywhere
            // (a select list): each says its own.
            Dialect::Postgres => {
                let n = self.params.len();
                match self.params.last() {
                    Some(SqlParam::Text(_)) => format!("CAST(${n} AS TEXT)"),
                    Some(SqlParam::Real(_)) => format!("CAST(${n} AS DOUBLE PRECISION)"),
                    _ => format!("CAST(${n} AS BIGINT)"),
                }
            }
        }
    }

    fn current(&self) -> String {
        format!("s{}", self.steps.len().saturating_sub(1))
    }

    fn push_step(&mut self, select: String, cols: Vec<Column>) {
        let name = format!("s{}", self.steps.len());
        self.steps.push(format!("{name} AS ({select})"));
        self.cols = cols;
    }

    /// Lowercase, ASCII letters only, the same on both stores (SQLite's
    /// `lower` folds ASCII; PostgreSQL's follows the database's locale
    /// unless the collation is "C").
    fn fold(&self, sql: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("lower({sql})"),
            Dialect::Postgres => format!("lower(({sql}) COLLATE \"C\")"),
        }
    }

    /// Text ordered by bytes (KQL's ordinal order) on both stores.
    fn ordinal(&self, v: &Typed) -> String {
        match (self.dialect, v.ty) {
            (Dialect::Postgres, KqlType::String) => format!("({} COLLATE \"C\")", v.sql),
            _ => v.sql.clone(),
        }
    }

    /// Whether the current step carries the hidden order ([`ORDER`]).
    fn ordered(&self) -> bool {
        self.cols.iter().any(|c| c.hidden)
    }

    /// A column with a new SQL name.
    fn column(&mut self, name: String, ty: KqlType) -> Column {
        self.made += 1;
        Column {
            name,
            ty,
            sql: format!("c{}", self.made),
            hidden: false,
        }
    }

    /// The hidden order column.
    fn order_column() -> Column {
        Column {
            name: String::new(),
            ty: KqlType::Long,
            sql: ORDER.into(),
            hidden: true,
        }
    }

    /// A step keeping every column (the order too): `SELECT … FROM prev {tail}`.
    fn same_columns(&mut self, tail: &str) {
        let select = format!(
            "SELECT {} FROM {} {tail}",
            column_list(&self.cols),
            self.current()
        );
        let cols = self.cols.clone();
        self.push_step(select, cols);
    }

    /// The first step: the tables' columns for the scope (a union fills
    /// the columns a table lacks with NULL).
    fn source(&mut self, tables: &[Ident], terms: &[(String, Vec<String>)]) -> Result<()> {
        let mut catalogs: Vec<(&Ident, &'static [CatalogColumn])> = Vec::new();
        for t in tables {
            let cat = table(&t.name).ok_or_else(|| CompileError {
                message: format!(
                    "Failed to resolve table or column expression named '{}'",
                    t.name
                ),
                span: t.span,
            })?;
            catalogs.push((t, cat));
        }
        let mut cols: Vec<Column> = Vec::new();
        for (_, cat) in &catalogs {
            for cc in cat.iter() {
                match cols.iter().find(|c| c.name == cc.name) {
                    Some(c) if c.ty != cc.ty => {
                        return fail(
                            tables.first().map_or_else(Span::default, |t| t.span),
                            format!("union: column '{}' has two types", cc.name),
                        )
                    }
                    Some(_) => {}
                    None => {
                        let c = self.column(cc.name.to_owned(), cc.ty);
                        cols.push(c);
                    }
                }
            }
        }
        if self.scope.workspaces.is_empty() {
            return fail(
                tables.first().map_or_else(Span::default, |t| t.span),
                "A query needs a workspace.",
            );
        }
        let mut parts = Vec::new();
        for (t, cat) in &catalogs {
            if t.name == "AzureMetrics" {
                let part = self.metrics_source(cat, &cols);
                parts.push(part);
                continue;
            }
            // Each part has its own parameters (PostgreSQL wants every
            // parameter used, and a metrics-only query uses none of these).
            let mut each = Vec::new();
            for (ws, earliest) in self.scope.workspaces.clone() {
                let ws = self.param(SqlParam::Text(ws));
                let earliest = self.param(SqlParam::Int(earliest));
                each.push(format!("(workspace = {ws} AND time_us >= {earliest})"));
            }
            let mut bound = format!("({}) AND ", each.join(" OR "));
            if let Some(r) = self.scope.resource.clone() {
                let r = self.param(SqlParam::Text(r.to_ascii_uppercase()));
                bound.push_str(&format!("resource_id = {r} AND "));
            }
            let from = self.param(SqlParam::Int(self.scope.from_us));
            let to = self.param(SqlParam::Int(self.scope.to_us));
            let name = self.param(SqlParam::Text(t.name.clone()));
            let list = source_list(cat, &cols);
            // Terms a leading `where` requires of an indexed column: rows
            // that lack them are found absent in the term index instead of
            // read (a necessary condition only; the `where` itself still
            // decides).
            let mut index = Vec::new();
            for (column, tokens) in terms {
                let Some(sql) = cat
                    .iter()
                    .find(|cc| cc.name == column)
                    .map(|cc| cc.sql)
                    .filter(|sql| INDEXED_TEXT.contains(sql))
                else {
                    continue;
                };
                index.push(self.term_filter(sql, tokens));
            }
            let (bound, from_to) = if index.is_empty() {
                (
                    bound.clone(),
                    format!("time_us >= {from} AND time_us <= {to}"),
                )
            } else {
                // SQLite: the other bounds lose their index (`+`), so the
                // plan starts from the term index's few rows.
                let plus = if self.dialect == Dialect::Sqlite {
                    "+"
                } else {
                    ""
                };
                (
                    bound
                        .replace("workspace =", &format!("{plus}workspace ="))
                        .replace("resource_id =", &format!("{plus}resource_id =")),
                    format!(
                        "{plus}time_us >= {from} AND {plus}time_us <= {to} AND {}",
                        index.join(" AND ")
                    ),
                )
            };
            parts.push(format!(
                "SELECT {list} FROM log_records WHERE {bound}log_table = {name} AND {from_to}"
            ));
        }
        self.push_step(parts.join(" UNION ALL "), cols);
        Ok(())
    }

    /// `AzureMetrics`' rows: for each vault in scope and minute, one row per
    /// metric (`ServiceApiHit`, `ServiceApiResult`, `ServiceApiLatency`,
    /// `Availability`), summed over the operations, statuses and nodes of
    /// `metric_minutes`, within the time span and the retention of the
    /// workspace each vault's metrics go to.
    fn metrics_source(&mut self, cat: &[CatalogColumn], cols: &[Column]) -> String {
        const MINUTE: i64 = 60_000_000;
        // The first minute whose start is at or after `us`.
        let first_minute = |us: i64| us.div_euclid(MINUTE) + i64::from(us.rem_euclid(MINUTE) != 0);
        let earliest = self
            .scope
            .workspaces
            .iter()
            .map(|(_, e)| *e)
            .min()
            .unwrap_or(i64::MAX);
        // Minutes whose start lies in [from, to].
        let lo = first_minute(self.scope.from_us.max(earliest));
        let hi = self.scope.to_us.div_euclid(MINUTE);
        let mut vaults = self.scope.metric_vaults.clone();
        if vaults.is_empty() {
            // None: a row that matches no vault keeps the SQL one shape.
            vaults.push((String::new(), String::new()));
        }
        let mut rows = Vec::new();
        for (id, tenant) in vaults {
            let parts = keyhaven_core::ids::ArmIdParts::of(&id);
            let (res, rg, sub) = (
                parts.name.to_owned(),
                parts.resource_group.to_owned(),
                parts.subscription.to_owned(),
            );
            // This vault's own bound: its workspace's retention.
            let own = self
                .scope
                .workspaces
                .iter()
                .find(|(w, _)| w.eq_ignore_ascii_case(&tenant))
                .map_or(i64::MAX, |(_, e)| *e);
            let own = self.param(SqlParam::Int(first_minute(self.scope.from_us.max(own))));
            let [id, tenant, res, rg, sub] = [id.to_ascii_lowercase(), tenant, res, rg, sub]
                .map(|v| self.param(SqlParam::Text(v)));
            rows.push(format!(
                "SELECT {id} AS id, {tenant} AS tenant, {res} AS res, {rg} AS rg, {sub} AS sub, {own} AS lo"
            ));
        }
        let lo = self.param(SqlParam::Int(lo));
        let hi = self.param(SqlParam::Int(hi));
        let list = source_list(cat, cols);
        let d = "DOUBLE PRECISION";
        format!(
            "SELECT {list} FROM (SELECT v.tenant AS tenant, a.vault AS vault, v.res AS resource, v.rg AS rg, v.sub AS sub, a.minute AS minute, x.metric AS metric, x.unit AS unit, \
             CASE x.metric WHEN 'ServiceApiLatency' THEN a.lat WHEN 'Availability' THEN a.avail ELSE a.hits END AS total, \
             CASE x.metric WHEN 'Availability' THEN CAST(1 AS {d}) ELSE a.hits END AS cnt, \
             CASE x.metric WHEN 'ServiceApiLatency' THEN NULL WHEN 'Availability' THEN a.avail ELSE CAST(1 AS {d}) END AS mn, \
             CASE x.metric WHEN 'ServiceApiLatency' THEN NULL WHEN 'Availability' THEN a.avail ELSE CAST(1 AS {d}) END AS mx, \
             CASE x.metric WHEN 'ServiceApiLatency' THEN a.lat / NULLIF(a.hits, 0) WHEN 'Availability' THEN a.avail ELSE CAST(1 AS {d}) END AS av \
             FROM (SELECT vault, minute, CAST(SUM(count) AS {d}) AS hits, CAST(SUM(latency_ms) AS {d}) AS lat, \
             CAST(100 AS {d}) * CAST(SUM(CASE WHEN status >= 500 THEN 0 ELSE count END) AS {d}) / NULLIF(CAST(SUM(count) AS {d}), 0) AS avail \
             FROM metric_minutes WHERE vault IN (SELECT id FROM ({vaults}) w) AND minute >= {lo} AND minute <= {hi} GROUP BY vault, minute) a \
             JOIN ({vaults}) v ON a.vault = v.id AND a.minute >= v.lo \
             CROSS JOIN (SELECT 'ServiceApiHit' AS metric, 'Count' AS unit UNION ALL SELECT 'ServiceApiResult', 'Count' \
             UNION ALL SELECT 'ServiceApiLatency', 'MilliSeconds' UNION ALL SELECT 'Availability', 'Percent') x) m",
            vaults = rows.join(" UNION ALL ")
        )
    }

    /// The term index's test that `column`'s text holds `tokens` (ASCII
    /// letters and digits, lower case): an FTS5 phrase on SQLite, array
    /// containment under a GIN index on PostgreSQL.
    fn term_filter(&mut self, column: &str, tokens: &[String]) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let phrase = self.param(SqlParam::Text(format!(
                    "{column} : \"{}\"",
                    tokens.join(" ")
                )));
                format!("seq IN (SELECT rowid FROM log_terms WHERE log_terms MATCH {phrase})")
            }
            Dialect::Postgres => {
                let items: Vec<String> = tokens
                    .iter()
                    .map(|t| {
                        let cut: String = t.chars().take(super::TERM_MAX).collect();
                        self.param(SqlParam::Text(cut))
                    })
                    .collect();
                format!(
                    "{} @> ARRAY[{}]",
                    super::term_array(column),
                    items.join(", ")
                )
            }
        }
    }

    fn operator(&mut self, op: &OperatorKind, span: Span) -> Result<()> {
        let prev = self.current();
        match op {
            OperatorKind::Where(p) => {
                self.op = "where";
                let cond = self.expr(p)?;
                if cond.ty != KqlType::Bool {
                    return fail(
                        p.span,
                        "'where' operator: the predicate must be a boolean expression",
                    );
                }
                self.same_columns(&format!("WHERE {}", cond.sql));
            }
            OperatorKind::Extend(assigns) => {
                self.op = "extend";
                // One step per assignment: each sees the ones before it.
                let mut n = 0;
                for a in assigns {
                    let prev = self.current();
                    let v = self.expr(&a.expr)?;
                    let name = self.column_name(a, &mut n);
                    let made = self.column(name, v.ty);
                    let mut cols = self.cols.clone();
                    match cols.iter().position(|c| !c.hidden && c.name == made.name) {
                        Some(i) => {
                            if let Some(c) = cols.get_mut(i) {
                                *c = made.clone();
                            }
                        }
                        None => cols.push(made.clone()),
                    }
                    let list = cols
                        .iter()
                        .map(|c| {
                            if c.sql == made.sql {
                                format!("{} AS {}", v.sql, c.sql)
                            } else {
                                c.sql.clone()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.push_step(format!("SELECT {list} FROM {prev}"), cols);
                }
            }
            OperatorKind::Project(assigns) => {
                self.op = "project";
                let (mut list, mut cols) = self.named_columns(assigns)?;
                if self.ordered() {
                    list.push(ORDER.into());
                    cols.push(Self::order_column());
                }
                self.push_step(format!("SELECT {} FROM {prev}", list.join(", ")), cols);
            }
            OperatorKind::ProjectAway(names) => {
                self.op = "project-away";
                for n in names {
                    self.find(n)?;
                }
                let cols: Vec<Column> = self
                    .cols
                    .iter()
                    .filter(|c| c.hidden || !names.iter().any(|n| n.name == c.name))
                    .cloned()
                    .collect();
                let list = column_list(&cols);
                self.push_step(format!("SELECT {list} FROM {prev}"), cols);
            }
            OperatorKind::ProjectRename(pairs) => {
                self.op = "project-rename";
                // Only KQL names change: SQL's stay.
                for (new, old) in pairs {
                    let sql = self.find(old)?.sql.clone();
                    if self
                        .cols
                        .iter()
                        .any(|c| !c.hidden && c.name == new.name && c.sql != sql)
                    {
                        return fail(
                            new.span,
                            format!("project-rename: a column named '{}' exists", new.name),
                        );
                    }
                    if let Some(c) = self.cols.iter_mut().find(|c| c.sql == sql) {
                        c.name = new.name.clone();
                    }
                }
            }
            OperatorKind::Summarize { aggregates, by } => {
                self.op = "summarize";
                let windows = self.percentile_windows(aggregates, by)?;
                let prev = self.current();
                let (mut list, mut cols) = self.named_columns(by)?;
                let groups = (1..=list.len()).map(|i| i.to_string()).collect::<Vec<_>>();
                for (i, a) in aggregates.iter().enumerate() {
                    let window = windows.get(i).copied().flatten();
                    let made = self.aggregate(&a.expr, window)?;
                    if made.len() > 1 && a.name.is_some() {
                        return fail(
                            a.expr.span,
                            "summarize: percentiles() makes several columns and cannot be named",
                        );
                    }
                    for (v, default) in made {
                        let name = a.name.as_ref().map_or(default, |i| i.name.clone());
                        if cols.iter().any(|c| c.name == name) {
                            return fail(
                                a.expr.span,
                                format!("summarize: the column '{name}' is named twice"),
                            );
                        }
                        let c = self.column(name, v.ty);
                        list.push(format!("{} AS {}", v.sql, c.sql));
                        cols.push(c);
                    }
                }
                let group_by = if groups.is_empty() {
                    String::new()
                } else {
                    format!(" GROUP BY {}", groups.join(", "))
                };
                self.push_step(
                    format!("SELECT {} FROM {prev}{group_by}", list.join(", ")),
                    cols,
                );
            }
            OperatorKind::Sort(keys) => {
                self.op = "sort";
                self.sort(keys)?;
            }
            OperatorKind::Top { count, by } => {
                self.op = "top";
                self.sort(std::slice::from_ref(by))?;
                self.take(count)?;
            }
            OperatorKind::Take(n) => {
                self.op = "take";
                self.take(n)?;
            }
            OperatorKind::Distinct(cols) => {
                self.op = "distinct";
                let chosen: Vec<Column> = match cols {
                    None => visible(&self.cols),
                    Some(names) => names
                        .iter()
                        .map(|n| self.find(n).cloned())
                        .collect::<Result<_>>()?,
                };
                let list = column_list(&chosen);
                self.push_step(format!("SELECT DISTINCT {list} FROM {prev}"), chosen);
            }
            OperatorKind::Count => {
                let c = self.column("Count".into(), KqlType::Long);
                self.push_step(format!("SELECT COUNT(*) AS {} FROM {prev}", c.sql), vec![c]);
            }
            OperatorKind::Union(tables) => {
                return fail(span, format!("'union' after a pipe is not supported by Keyhaven yet; write 'union {}' as the query's source", tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")));
            }
            OperatorKind::Render(_) => {}
        }
        Ok(())
    }

    /// `expr AS "name"` for each assignment, and the columns they make (a
    /// name given twice is refused).
    fn named_columns(&mut self, assigns: &[Assign]) -> Result<(Vec<String>, Vec<Column>)> {
        let mut cols: Vec<Column> = Vec::new();
        let mut list = Vec::new();
        let mut n = 0;
        for a in assigns {
            let v = self.expr(&a.expr)?;
            let name = self.column_name(a, &mut n);
            if cols.iter().any(|c| c.name == name) {
                return fail(
                    a.expr.span,
                    format!("{}: the column '{name}' is named twice", self.op),
                );
            }
            let c = self.column(name, v.ty);
            list.push(format!("{} AS {}", v.sql, c.sql));
            cols.push(c);
        }
        Ok((list, cols))
    }

    fn sort(&mut self, keys: &[SortKey]) -> Result<()> {
        let prev = self.current();
        let mut order = Vec::new();
        for k in keys {
            let v = self.expr(&k.expr)?;
            let nulls_first = k.nulls_first.unwrap_or(k.ascending);
            order.push(format!(
                "{} {} NULLS {}",
                self.ordinal(&v),
                if k.ascending { "ASC" } else { "DESC" },
                if nulls_first { "FIRST" } else { "LAST" }
            ));
        }
        let mut cols = visible(&self.cols);
        let list = column_list(&cols);
        cols.push(Self::order_column());
        let sep = if list.is_empty() { "" } else { ", " };
        self.push_step(
            format!(
                "SELECT {list}{sep}ROW_NUMBER() OVER (ORDER BY {}) AS {ORDER} FROM {prev}",
                order.join(", "),
            ),
            cols,
        );
        Ok(())
    }

    fn take(&mut self, n: &Expr) -> Result<()> {
        let v = self.expr(n)?;
        if v.ty != KqlType::Long {
            return fail(
                n.span,
                format!("'{}' operator: the row count must be a long", self.op),
            );
        }
        let order = if self.ordered() {
            format!(" ORDER BY {ORDER}")
        } else {
            String::new()
        };
        // A negative count is no rows (PostgreSQL refuses a negative LIMIT).
        let at_least_zero = match self.dialect {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        };
        self.same_columns(&format!("{order} LIMIT {at_least_zero}(0, {})", v.sql));
        Ok(())
    }

    fn find(&self, id: &Ident) -> Result<&Column> {
        self.cols
            .iter()
            .find(|c| !c.hidden && c.name == id.name)
            .ok_or_else(|| self.unresolved(id))
    }

    /// Azure's words for a name that is neither a column nor a `let`.
    fn unresolved(&self, id: &Ident) -> CompileError {
        CompileError {
            message: format!(
                "'{}' operator: Failed to resolve column or scalar expression named '{}'",
                self.op, id.name
            ),
            span: id.span,
        }
    }

    /// The name KQL gives a column: the one written, a column's own name,
    /// `bin(col, …)`'s column, or `Column1`, `Column2`, ….
    fn column_name(&self, a: &Assign, n: &mut usize) -> String {
        if let Some(name) = &a.name {
            return name.name.clone();
        }
        match &a.expr.kind {
            ExprKind::Name(i) => i.name.clone(),
            ExprKind::Call { name, args } if name.name == "bin" => {
                match args.first().map(|e| &e.kind) {
                    Some(ExprKind::Name(i)) => i.name.clone(),
                    _ => {
                        *n += 1;
                        format!("Column{n}")
                    }
                }
            }
            _ => {
                *n += 1;
                format!("Column{n}")
            }
        }
    }

    /// For each aggregation that is a `percentile(s)`, the number of the
    /// window columns a step added before the summarize: `pv{n}` (the
    /// value), `prn{n}` (its rank in its group, nulls last) and `pcnt{n}`
    /// (the group's non-null values). The percentile is then the value of
    /// the nearest rank, `MIN(pv WHERE prn * 1,000,000 >= p * 10,000 * pcnt)`, in integers, on both
    /// stores (KQL estimates; the nearest rank is one of its answers).
    fn percentile_windows(
        &mut self,
        aggregates: &[Assign],
        by: &[Assign],
    ) -> Result<Vec<Option<(usize, KqlType)>>> {
        let is_pct = |a: &Assign| {
            matches!(&a.expr.kind, ExprKind::Call { name, .. }
                if matches!(name.name.as_str(), "percentile" | "percentiles"))
        };
        if !aggregates.iter().any(is_pct) {
            return Ok(Vec::new());
        }
        let mut partition = Vec::new();
        for b in by {
            partition.push(self.expr(&b.expr)?.sql);
        }
        let part = if partition.is_empty() {
            String::new()
        } else {
            format!("PARTITION BY {}", partition.join(", "))
        };
        let mut out = Vec::new();
        let mut extra = Vec::new();
        for a in aggregates {
            let (ExprKind::Call { args, name }, true) = (&a.expr.kind, is_pct(a)) else {
                out.push(None);
                continue;
            };
            let Some(first) = args.first() else {
                return fail(
                    a.expr.span,
                    format!("summarize: {}() needs a value and a percentage", name.name),
                );
            };
            let v = self.expr(first)?;
            if !matches!(
                v.ty,
                KqlType::Long | KqlType::Real | KqlType::Datetime | KqlType::Timespan
            ) {
                return fail(
                    first.span,
                    format!(
                        "summarize: {}() needs a numeric, datetime or timespan value, not {}",
                        name.name,
                        v.ty.name()
                    ),
                );
            }
            self.made += 1;
            let n = self.made;
            extra.push(format!(
                "{v} AS pv{n}, ROW_NUMBER() OVER ({part} ORDER BY CASE WHEN {v} IS NULL THEN 1 ELSE 0 END, {v}) AS prn{n}, COUNT({v}) OVER ({part}) AS pcnt{n}",
                v = v.sql
            ));
            out.push(Some((n, v.ty)));
        }
        let prev = self.current();
        let cols = self.cols.clone();
        self.push_step(
            format!("SELECT {prev}.*, {} FROM {prev}", extra.join(", ")),
            cols,
        );
        Ok(out)
    }

    /// The percentages of `percentile(x, p)` / `percentiles(x, p, …)`:
    /// numeric literals from 0 to 100.
    fn percentages(&self, f: &str, args: &[Expr], span: Span) -> Result<Vec<f64>> {
        let ps: Vec<f64> = args
            .iter()
            .skip(1)
            .map(|a| match &a.kind {
                ExprKind::Literal(Literal::Long(n)) => Some(*n as f64),
                ExprKind::Literal(Literal::Real(r)) => Some(*r),
                _ => None,
            })
            .collect::<Option<_>>()
            .filter(|ps: &Vec<f64>| ps.iter().all(|p| (0.0..=100.0).contains(p)))
            .ok_or_else(|| CompileError {
                message: format!("summarize: {f}()'s percentages must be numbers from 0 to 100"),
                span,
            })?;
        match (f, ps.len()) {
            ("percentile", 1) => Ok(ps),
            ("percentiles", n) if (1..=20).contains(&n) => Ok(ps),
            ("percentile", _) => fail(
                span,
                "summarize: percentile() takes a value and one percentage",
            ),
            _ => fail(
                span,
                "summarize: percentiles() takes a value and 1 to 20 percentages",
            ),
        }
    }

    /// Aggregations and their default names (`count_`, `avg_DurationMs`;
    /// `percentiles` makes one per percentage). `window` is the number of a
    /// percentile's window columns ([`Self::percentile_windows`]).
    fn aggregate(
        &mut self,
        e: &Expr,
        window: Option<(usize, KqlType)>,
    ) -> Result<Vec<(Typed, String)>> {
        if let (ExprKind::Call { name, args }, Some((n, ty))) = (&e.kind, window) {
            let f = name.name.as_str();
            let arg = match args.first().map(|a| &a.kind) {
                Some(ExprKind::Name(id)) => id.name.clone(),
                _ => String::new(),
            };
            return Ok(self
                .percentages(f, args, e.span)?
                .into_iter()
                .map(|p| {
                    let label = format!("{p}").replace('.', "_");
                    // Integers only, so both stores round alike: rank/count
                    // >= p/100, with p in units of 1/10,000.
                    let scaled = (p * 10_000.0).round() as i64;
                    (
                        Typed {
                            sql: format!(
                                "MIN(CASE WHEN prn{n} * 1000000 >= {scaled} * pcnt{n} THEN pv{n} END)"
                            ),
                            ty,
                        },
                        format!("percentile_{arg}_{label}"),
                    )
                })
                .collect());
        }
        self.aggregate_one(e).map(|one| vec![one])
    }

    /// An aggregation and its default name (`count_`, `avg_DurationMs`).
    fn aggregate_one(&mut self, e: &Expr) -> Result<(Typed, String)> {
        let ExprKind::Call { name, args } = &e.kind else {
            return fail(
                e.span,
                "summarize: an aggregation function is expected (count(), avg(x), …)",
            );
        };
        let arg_name = |i: usize| match args.get(i).map(|a| &a.kind) {
            Some(ExprKind::Name(id)) => id.name.clone(),
            _ => String::new(),
        };
        let f = name.name.as_str();
        let one = |c: &mut Self| -> Result<Typed> {
            match args.as_slice() {
                [a] => c.expr(a),
                _ => fail(e.span, format!("summarize: {f}() takes one argument")),
            }
        };
        Ok(match f {
            "count" if args.is_empty() => (
                Typed {
                    sql: "COUNT(*)".into(),
                    ty: KqlType::Long,
                },
                "count_".into(),
            ),
            "countif" => {
                let p = one(self)?;
                self.want_bool(&p, e.span)?;
                (
                    Typed {
                        sql: format!("COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0)", p.sql),
                        ty: KqlType::Long,
                    },
                    "countif_".into(),
                )
            }
            "dcount" => {
                let v = one(self)?;
                (
                    Typed {
                        sql: format!("COUNT(DISTINCT {})", v.sql),
                        ty: KqlType::Long,
                    },
                    format!("dcount_{}", arg_name(0)),
                )
            }
            "make_set" => {
                let v = one(self)?;
                if !matches!(v.ty, KqlType::String | KqlType::Long | KqlType::Real) {
                    return fail(
                        e.span,
                        format!(
                            "summarize: make_set() takes a string or a number, not {}",
                            v.ty.name()
                        ),
                    );
                }
                // The array's order and spacing differ between the stores:
                // the runner sorts every array (make_set's are the only
                // ones) and writes it compactly.
                let agg = match self.dialect {
                    Dialect::Sqlite => format!(
                        "COALESCE(json_group_array(DISTINCT {v}) FILTER (WHERE {v} IS NOT NULL), '[]')",
                        v = v.sql
                    ),
                    Dialect::Postgres => format!(
                        "COALESCE(CAST(json_agg(DISTINCT {v}) FILTER (WHERE {v} IS NOT NULL) AS TEXT), '[]')",
                        v = v.sql
                    ),
                };
                (
                    Typed {
                        sql: agg,
                        ty: KqlType::Dynamic,
                    },
                    format!("set_{}", arg_name(0)),
                )
            }
            "sum" | "avg" | "min" | "max" => {
                let v = one(self)?;
                let numeric = matches!(v.ty, KqlType::Long | KqlType::Real | KqlType::Timespan);
                let ordered = matches!(f, "min" | "max")
                    && matches!(v.ty, KqlType::Datetime | KqlType::String);
                if !(numeric || ordered) {
                    return fail(
                        e.span,
                        format!(
                            "summarize: {f}() needs a numeric argument, not {}",
                            v.ty.name()
                        ),
                    );
                }
                let ty = match f {
                    "avg" => KqlType::Real,
                    _ => v.ty,
                };
                // PostgreSQL's SUM and AVG of bigint are numeric: cast back.
                let sql = match (f, ty) {
                    ("avg", _) | ("sum", KqlType::Real) => {
                        format!(
                            "CAST({}({}) AS DOUBLE PRECISION)",
                            f.to_ascii_uppercase(),
                            v.sql
                        )
                    }
                    ("sum", _) => format!("CAST(SUM({}) AS BIGINT)", v.sql),
                    _ => format!("{}({})", f.to_ascii_uppercase(), self.ordinal(&v)),
                };
                (Typed { sql, ty }, format!("{f}_{}", arg_name(0)))
            }
            _ => {
                return fail(
                    name.span,
                    format!("summarize: the aggregation '{f}' is not supported by Keyhaven"),
                )
            }
        })
    }

    fn want_bool(&self, v: &Typed, span: Span) -> Result<()> {
        if v.ty == KqlType::Bool {
            Ok(())
        } else {
            fail(
                span,
                format!(
                    "'{}' operator: a boolean expression is expected, not {}",
                    self.op,
                    v.ty.name()
                ),
            )
        }
    }

    /// A scalar expression's SQL and type, within the SQL budget.
    fn expr(&mut self, e: &Expr) -> Result<Typed> {
        let v = self.expr_unbounded(e)?;
        if v.sql.len() > MAX_SQL {
            return fail(
                e.span,
                "The query is too complex: its expressions grow past what Keyhaven runs.",
            );
        }
        Ok(v)
    }

    fn expr_unbounded(&mut self, e: &Expr) -> Result<Typed> {
        Ok(match &e.kind {
            ExprKind::Literal(l) => self.literal(l, e.span)?,
            ExprKind::Name(id) => {
                if let Some(c) = self.cols.iter().find(|c| !c.hidden && c.name == id.name) {
                    Typed {
                        sql: c.sql.clone(),
                        ty: c.ty,
                    }
                } else if let Some(v) = self.lets.get(&id.name) {
                    v.clone()
                } else {
                    return Err(self.unresolved(id));
                }
            }
            ExprKind::Negate(inner) => {
                let v = self.expr(inner)?;
                if !matches!(v.ty, KqlType::Long | KqlType::Real | KqlType::Timespan) {
                    return fail(e.span, format!("Cannot negate a {}", v.ty.name()));
                }
                Typed {
                    sql: format!("(-{})", v.sql),
                    ty: v.ty,
                }
            }
            ExprKind::Binary { op, left, right } => self.binary(*op, left, right, e.span)?,
            ExprKind::In {
                expr,
                list,
                negated,
                case_insensitive,
            } => {
                let v = self.expr(expr)?;
                let mut items = Vec::new();
                for item in list {
                    let i = self.expr(item)?;
                    self.comparable(&v, &i, item.span)?;
                    items.push(if *case_insensitive {
                        self.fold(&i.sql)
                    } else {
                        i.sql
                    });
                }
                let lhs = if *case_insensitive {
                    self.fold(&v.sql)
                } else {
                    v.sql
                };
                let test = if items.is_empty() {
                    "(1=0)".to_owned()
                } else {
                    format!("({lhs} IN ({}))", items.join(", "))
                };
                predicate(test, *negated)
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let v = self.expr(expr)?;
                let lo = self.expr(low)?;
                let hi = self.expr(high)?;
                self.comparable(&v, &lo, low.span)?;
                self.comparable(&v, &hi, high.span)?;
                let test = format!("({} BETWEEN {} AND {})", self.ordinal(&v), lo.sql, hi.sql);
                predicate(test, *negated)
            }
            ExprKind::Call { name, args } => self.call(name, args, e.span)?,
        })
    }

    fn literal(&mut self, l: &Literal, span: Span) -> Result<Typed> {
        Ok(match l {
            Literal::String(s) => Typed {
                sql: self.param(SqlParam::Text(s.clone())),
                ty: KqlType::String,
            },
            Literal::Long(n) => Typed {
                sql: self.param(SqlParam::Int(*n)),
                ty: KqlType::Long,
            },
            Literal::Real(f) => Typed {
                sql: self.param(SqlParam::Real(*f)),
                ty: KqlType::Real,
            },
            Literal::Bool(b) => Typed {
                sql: if *b { "(1=1)".into() } else { "(1=0)".into() },
                ty: KqlType::Bool,
            },
            Literal::Timespan(ns) => Typed {
                sql: self.param(SqlParam::Int(ns / 1000)),
                ty: KqlType::Timespan,
            },
            Literal::Datetime(text) => {
                let us = parse_datetime(text).ok_or_else(|| CompileError {
                    message: format!("Failed to parse datetime literal: 'datetime({text})'"),
                    span,
                })?;
                Typed {
                    sql: self.param(SqlParam::Int(us)),
                    ty: KqlType::Datetime,
                }
            }
            Literal::Null => Typed {
                sql: "NULL".into(),
                ty: KqlType::String,
            },
        })
    }

    fn comparable(&self, a: &Typed, b: &Typed, span: Span) -> Result<()> {
        let numeric = |t: KqlType| matches!(t, KqlType::Long | KqlType::Real);
        if a.ty == b.ty
            || numeric(a.ty) && numeric(b.ty)
            || a.ty == KqlType::Dynamic
            || b.ty == KqlType::Dynamic
        {
            Ok(())
        } else {
            fail(
                span,
                format!(
                    "Cannot compare values of types {} and {}. Try adding explicit casts",
                    a.ty.name(),
                    b.ty.name()
                ),
            )
        }
    }

    fn binary(&mut self, op: BinaryOp, left: &Expr, right: &Expr, span: Span) -> Result<Typed> {
        let l = self.expr(left)?;
        // A term test's right side is a literal made into a pattern, not a
        // value of the statement.
        let term_test = matches!(op, BinaryOp::Str(s) if matches!(s.test, StringTest::Has | StringTest::HasPrefix | StringTest::HasSuffix));
        let r = if term_test {
            Typed {
                sql: String::new(),
                ty: KqlType::String,
            }
        } else {
            self.expr(right)?
        };
        let bool_of = |sql: String| Typed {
            sql,
            ty: KqlType::Bool,
        };
        Ok(match op {
            BinaryOp::And | BinaryOp::Or => {
                self.want_bool(&l, left.span)?;
                self.want_bool(&r, right.span)?;
                bool_of(format!(
                    "({} {} {})",
                    l.sql,
                    if op == BinaryOp::And { "AND" } else { "OR" },
                    r.sql
                ))
            }
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => {
                self.comparable(&l, &r, span)?;
                let sym = match op {
                    BinaryOp::Eq => "=",
                    BinaryOp::Ne => "<>",
                    BinaryOp::Lt => "<",
                    BinaryOp::Le => "<=",
                    BinaryOp::Gt => ">",
                    _ => ">=",
                };
                bool_of(format!("({} {sym} {})", self.ordinal(&l), r.sql))
            }
            BinaryOp::EqCi | BinaryOp::NeCi => {
                self.strings(&l, &r, span)?;
                let sym = if op == BinaryOp::EqCi { "=" } else { "<>" };
                bool_of(format!(
                    "({} {sym} {})",
                    self.fold(&l.sql),
                    self.fold(&r.sql)
                ))
            }
            BinaryOp::Str(s) => {
                self.strings(&l, &r, span)?;
                let test = self.string_test(s, &l, &r, right)?;
                predicate(test, s.negated)
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => {
                use KqlType::*;
                let ty = match (op, l.ty, r.ty) {
                    (BinaryOp::Add | BinaryOp::Sub, Datetime, Timespan) => Datetime,
                    (BinaryOp::Add, Timespan, Datetime) => Datetime,
                    (BinaryOp::Sub, Datetime, Datetime) => Timespan,
                    (BinaryOp::Add | BinaryOp::Sub, Timespan, Timespan) => Timespan,
                    (BinaryOp::Div, Timespan, Timespan) => Real,
                    (BinaryOp::Mul | BinaryOp::Div, Timespan, Long | Real) => Timespan,
                    (BinaryOp::Mul, Long | Real, Timespan) => Timespan,
                    (_, Long, Long) => Long,
                    (_, Long | Real, Long | Real) => Real,
                    _ => {
                        return fail(
                            span,
                            format!(
                                "The arithmetic operator cannot be applied to {} and {}",
                                l.ty.name(),
                                r.ty.name()
                            ),
                        )
                    }
                };
                let sym = match op {
                    BinaryOp::Add => "+",
                    BinaryOp::Sub => "-",
                    BinaryOp::Mul => "*",
                    BinaryOp::Div => "/",
                    _ => "%",
                };
                // timespan / timespan is a real ratio.
                let (ls, rs) = if ty == Real && op == BinaryOp::Div {
                    (format!("CAST({} AS DOUBLE PRECISION)", l.sql), r.sql)
                } else {
                    (l.sql, r.sql)
                };
                let sql = if ty == Timespan && l.ty == Timespan && matches!(r.ty, Long | Real)
                    || ty == Timespan && r.ty == Timespan && matches!(l.ty, Long | Real)
                {
                    match self.dialect {
                        Dialect::Sqlite => format!("CAST(({ls} {sym} {rs}) AS BIGINT)"),
                        Dialect::Postgres => format!("CAST(TRUNC({ls} {sym} {rs}) AS BIGINT)"),
                    }
                } else {
                    format!("({ls} {sym} {rs})")
                };
                Typed { sql, ty }
            }
        })
    }

    fn strings(&self, l: &Typed, r: &Typed, span: Span) -> Result<()> {
        let text = |t: KqlType| matches!(t, KqlType::String | KqlType::Dynamic);
        if text(l.ty) && text(r.ty) {
            Ok(())
        } else {
            fail(
                span,
                format!(
                    "A string operator needs strings, not {} and {}",
                    l.ty.name(),
                    r.ty.name()
                ),
            )
        }
    }

    fn string_test(&mut self, s: StringOp, l: &Typed, r: &Typed, right: &Expr) -> Result<String> {
        let (a, b) = if s.case_sensitive {
            (l.sql.clone(), r.sql.clone())
        } else {
            (self.fold(&l.sql), self.fold(&r.sql))
        };
        Ok(match s.test {
            StringTest::Contains => match self.dialect {
                Dialect::Sqlite => format!("(instr({a}, {b}) > 0)"),
                Dialect::Postgres => format!("(strpos({a}, {b}) > 0)"),
            },
            StringTest::StartsWith => format!("(substr({a}, 1, length({b})) = {b})"),
            StringTest::EndsWith => format!(
                "(length({a}) >= length({b}) AND substr({a}, length({a}) - length({b}) + 1) = {b})"
            ),
            StringTest::Has | StringTest::HasPrefix | StringTest::HasSuffix => {
                // A term test: the text, padded, matches the term between
                // non-alphanumeric characters (ASCII); the term must be a
                // literal.
                let ExprKind::Literal(Literal::String(term)) = &right.kind else {
                    return fail(
                        right.span,
                        format!("'{}' needs a string literal on its right", s.spelling()),
                    );
                };
                let term = if s.case_sensitive {
                    term.clone()
                } else {
                    term.to_ascii_lowercase()
                };
                let class = if s.case_sensitive {
                    "[^0-9A-Za-z]"
                } else {
                    "[^0-9a-z]"
                };
                // SQLite: GLOB (`*` any run, `[…]` a class); PostgreSQL:
                // a POSIX regular expression. The term's own characters
                // are literal in both.
                let (any, escaped) = match self.dialect {
                    Dialect::Sqlite => (
                        "*",
                        term.chars()
                            .map(|ch| match ch {
                                '*' | '?' | '[' => format!("[{ch}]"),
                                other => other.to_string(),
                            })
                            .collect::<String>(),
                    ),
                    Dialect::Postgres => (
                        "",
                        term.chars()
                            .map(|ch| {
                                if ch.is_ascii_alphanumeric() || !ch.is_ascii() {
                                    ch.to_string()
                                } else {
                                    format!("\\{ch}")
                                }
                            })
                            .collect::<String>(),
                    ),
                };
                let pattern = match s.test {
                    StringTest::Has => format!("{any}{class}{escaped}{class}{any}"),
                    StringTest::HasPrefix => format!("{any}{class}{escaped}{any}"),
                    _ => format!("{any}{escaped}{class}{any}"),
                };
                let p = self.param(SqlParam::Text(pattern));
                let matches = match self.dialect {
                    Dialect::Sqlite => "GLOB",
                    Dialect::Postgres => "~",
                };
                format!("((' ' || {a} || ' ') {matches} {p})")
            }
        })
    }

    fn call(&mut self, name: &Ident, args: &[Expr], span: Span) -> Result<Typed> {
        let f = name.name.as_str();
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            vals.push(self.expr(a)?);
        }
        let arity = |n: usize| -> Result<()> {
            if vals.len() == n {
                Ok(())
            } else {
                fail(span, format!("The function '{f}' expects {n} argument(s)"))
            }
        };
        let first = || {
            vals.first().cloned().unwrap_or(Typed {
                sql: "NULL".into(),
                ty: KqlType::String,
            })
        };
        let second = || {
            vals.get(1).cloned().unwrap_or(Typed {
                sql: "NULL".into(),
                ty: KqlType::String,
            })
        };
        Ok(match f {
            "now" => {
                let now = self.param(SqlParam::Int(self.scope.now_us));
                match vals.as_slice() {
                    [] => Typed {
                        sql: now,
                        ty: KqlType::Datetime,
                    },
                    [off] if off.ty == KqlType::Timespan => Typed {
                        sql: format!("({now} + {})", off.sql),
                        ty: KqlType::Datetime,
                    },
                    _ => return fail(span, "now() takes no argument or a timespan"),
                }
            }
            "ago" => {
                arity(1)?;
                let a = first();
                if a.ty != KqlType::Timespan {
                    return fail(span, "ago() takes a timespan");
                }
                let now = self.param(SqlParam::Int(self.scope.now_us));
                Typed {
                    sql: format!("({now} - {})", a.sql),
                    ty: KqlType::Datetime,
                }
            }
            "not" => {
                arity(1)?;
                let a = first();
                self.want_bool(&a, span)?;
                Typed {
                    sql: format!("(NOT {})", a.sql),
                    ty: KqlType::Bool,
                }
            }
            "isempty" | "isnotempty" => {
                arity(1)?;
                let a = first();
                let empty = format!("({} IS NULL OR CAST({} AS TEXT) = '')", a.sql, a.sql);
                Typed {
                    sql: if f == "isempty" {
                        empty
                    } else {
                        format!("(NOT {empty})")
                    },
                    ty: KqlType::Bool,
                }
            }
            "isnull" | "isnotnull" => {
                arity(1)?;
                let a = first();
                Typed {
                    sql: format!(
                        "({} IS {}NULL)",
                        a.sql,
                        if f == "isnull" { "" } else { "NOT " }
                    ),
                    ty: KqlType::Bool,
                }
            }
            "tostring" => {
                arity(1)?;
                let a = first();
                let sql = match a.ty {
                    KqlType::String | KqlType::Dynamic => a.sql,
                    KqlType::Datetime => match self.dialect {
                        Dialect::Sqlite => format!(
                            "strftime('%Y-%m-%dT%H:%M:%fZ', {} / 1000000.0, 'unixepoch')",
                            a.sql
                        ),
                        Dialect::Postgres => format!(
                            "to_char(to_timestamp({} / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                            a.sql
                        ),
                    },
                    KqlType::Bool => format!("(CASE WHEN {} THEN 'true' ELSE 'false' END)", a.sql),
                    _ => format!("CAST({} AS TEXT)", a.sql),
                };
                Typed {
                    sql,
                    ty: KqlType::String,
                }
            }
            "toint" | "tolong" => {
                arity(1)?;
                let a = first();
                // Toward zero, as KQL does (PostgreSQL's cast rounds).
                let sql = match (self.dialect, a.ty) {
                    (Dialect::Postgres, KqlType::Real) => {
                        format!("CAST(TRUNC({}) AS BIGINT)", a.sql)
                    }
                    _ => format!("CAST({} AS BIGINT)", a.sql),
                };
                Typed {
                    sql,
                    ty: KqlType::Long,
                }
            }
            "toreal" | "todouble" => {
                arity(1)?;
                Typed {
                    sql: format!("CAST({} AS DOUBLE PRECISION)", first().sql),
                    ty: KqlType::Real,
                }
            }
            "todatetime" => {
                arity(1)?;
                let a = first();
                match a.ty {
                    KqlType::Datetime => a,
                    KqlType::String => Typed {
                        sql: match self.dialect {
                            Dialect::Sqlite => format!(
                                "CAST(ROUND((julianday({}) - 2440587.5) * 86400000000.0) AS BIGINT)",
                                a.sql
                            ),
                            Dialect::Postgres => format!(
                                "CAST(EXTRACT(EPOCH FROM CAST({} AS TIMESTAMPTZ)) * 1000000 AS BIGINT)",
                                a.sql
                            ),
                        },
                        ty: KqlType::Datetime,
                    },
                    other => {
                        return fail(
                            span,
                            format!("todatetime() cannot convert a {}", other.name()),
                        )
                    }
                }
            }
            "tolower" | "toupper" | "strlen" => {
                arity(1)?;
                let a = first();
                match f {
                    "tolower" => Typed {
                        sql: self.fold(&a.sql),
                        ty: KqlType::String,
                    },
                    "toupper" => Typed {
                        sql: format!("upper({})", a.sql),
                        ty: KqlType::String,
                    },
                    _ => Typed {
                        sql: format!("length({})", a.sql),
                        ty: KqlType::Long,
                    },
                }
            }
            "strcat" => {
                if vals.is_empty() {
                    return fail(span, "strcat() needs arguments");
                }
                Typed {
                    sql: format!(
                        "({})",
                        vals.iter()
                            .map(|v| format!("COALESCE(CAST({} AS TEXT), '')", v.sql))
                            .collect::<Vec<_>>()
                            .join(" || ")
                    ),
                    ty: KqlType::String,
                }
            }
            "iff" | "iif" => {
                arity(3)?;
                let (c, a, b) = (
                    first(),
                    second(),
                    vals.get(2).cloned().unwrap_or_else(second),
                );
                self.want_bool(&c, span)?;
                Typed {
                    sql: format!("(CASE WHEN {} THEN {} ELSE {} END)", c.sql, a.sql, b.sql),
                    ty: a.ty,
                }
            }
            "bin" | "floor" => {
                arity(2)?;
                let (v, size) = (first(), second());
                // A size of zero (or a timespan under a microsecond) has no
                // bins.
                if matches!(
                    args.get(1).map(|a| &a.kind),
                    Some(ExprKind::Literal(Literal::Long(0)))
                        | Some(ExprKind::Literal(Literal::Timespan(-999..=999)))
                ) {
                    return fail(span, "bin() needs a size of at least one microsecond");
                }
                let ok = matches!(
                    (v.ty, size.ty),
                    (KqlType::Datetime | KqlType::Timespan, KqlType::Timespan)
                        | (KqlType::Long, KqlType::Long)
                        | (KqlType::Real, KqlType::Long | KqlType::Real)
                        | (KqlType::Long, KqlType::Real)
                );
                if !ok {
                    return fail(
                        span,
                        format!(
                            "bin() cannot round a {} by a {}",
                            v.ty.name(),
                            size.ty.name()
                        ),
                    );
                }
                let sql = if v.ty == KqlType::Real || size.ty == KqlType::Real {
                    match self.dialect {
                        // SQLite's cast truncates toward zero: one less
                        // for a negative quotient that is not whole.
                        Dialect::Sqlite => format!(
                            "((CAST(({v} / {s}) AS BIGINT) - (CASE WHEN ({v} / {s}) < CAST(({v} / {s}) AS BIGINT) THEN 1 ELSE 0 END)) * {s})",
                            v = v.sql,
                            s = size.sql
                        ),
                        Dialect::Postgres => {
                            format!("(FLOOR({v} / {s}) * {s})", v = v.sql, s = size.sql)
                        }
                    }
                } else {
                    // Floor division for integers (times before 1970 too).
                    format!(
                        "(({v} - (({v} % {s}) + {s}) % {s}))",
                        v = v.sql,
                        s = size.sql
                    )
                };
                Typed {
                    sql,
                    ty: if v.ty == KqlType::Long && size.ty == KqlType::Real {
                        KqlType::Real
                    } else {
                        v.ty
                    },
                }
            }
            "count" | "countif" | "dcount" | "sum" | "avg" | "min" | "max" | "make_set"
            | "percentile" | "percentiles" => {
                return fail(
                    span,
                    format!("The aggregation '{f}' can be used only in summarize"),
                );
            }
            _ => return fail(name.span, format!("Unknown function: '{f}'.")),
        })
    }
}

/// `2026-12-04`, `2026-12-04T10:30`, `2026-12-04 10:30:00.5Z` → µs.
pub(crate) fn parse_datetime(text: &str) -> Option<i64> {
    let t = text.trim().trim_end_matches('Z').trim_end_matches('z');
    let (date, time) = match t.split_once(['T', 't', ' ']) {
        Some((d, tm)) => (d, tm.trim()),
        None => (t, ""),
    };
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    if d.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(1..=9999).contains(&y)
    {
        return None;
    }
    let (mut hh, mut mm, mut us) = (0i64, 0i64, 0i64);
    if !time.is_empty() {
        let mut parts = time.split(':');
        hh = parts.next()?.parse().ok()?;
        mm = parts.next()?.parse().ok()?;
        if let Some(sec) = parts.next() {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            let s: i64 = whole.parse().ok()?;
            if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 7 || !(0..=59).contains(&s)
            {
                return None;
            }
            let padded = format!("{frac:0<6}");
            let micros: i64 = padded.get(..6)?.parse().ok()?;
            us = s * 1_000_000 + micros;
        }
        if parts.next().is_some() || !(0..=23).contains(&hh) || !(0..=59).contains(&mm) {
            return None;
        }
    }
    let days = keyhaven_core::clock::days_from_civil(y, m, day);
    // 2026-02-31 is no date.
    if keyhaven_core::clock::civil_from_days(days) != (y, m, day) {
        return None;
    }
    Some(((days * 86_400 + hh * 3600 + mm * 60) * 1_000_000) + us)
}
