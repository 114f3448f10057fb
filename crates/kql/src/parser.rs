//! Tokens to a [`Query`].

use crate::ast::*;
use crate::lexer::{lex, Tok, Token};
use crate::{ParseError, Span};

/// Deepest nesting of expressions, a chain of `a + b + …` or `a and b and
/// …` counting one level per operator (bounds recursion, in the parser and
/// in everything that walks the tree, on hostile input).
const MAX_DEPTH: usize = 100;
/// Most tabular operators in a query.
const MAX_OPERATORS: usize = 100;
/// Most tables a `union` names.
const MAX_UNION: usize = 10;

/// Parses a query.
pub fn parse(text: &str) -> Result<Query, ParseError> {
    let toks = lex(text)?;
    let mut p = Parser {
        text,
        toks,
        pos: 0,
        depth: 0,
    };
    p.query()
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

const EOF: Token = Token {
    tok: Tok::Eof,
    span: Span { start: 0, end: 0 },
};

/// The tabular operators Keyhaven runs.
const OPERATORS: &[&str] = &[
    "where",
    "filter",
    "project",
    "project-away",
    "project-rename",
    "extend",
    "summarize",
    "order",
    "sort",
    "top",
    "take",
    "limit",
    "distinct",
    "count",
    "union",
    "render",
];

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token {
        self.toks.get(self.pos).unwrap_or(&EOF)
    }

    fn peek_at(&self, n: usize) -> &Token {
        self.toks.get(self.pos + n).unwrap_or(&EOF)
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn prev_span(&self) -> Span {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map_or_else(Span::default, |t| t.span)
    }

    /// "Query could not be parsed at 'x'", at the next token.
    fn unexpected(&self) -> ParseError {
        let t = self.peek();
        let token = if t.tok == Tok::Eof {
            "<end of query>".to_owned()
        } else {
            self.text
                .get(t.span.start..t.span.end)
                .unwrap_or("")
                .to_owned()
        };
        ParseError {
            message: format!("Query could not be parsed at '{token}'."),
            span: t.span,
            token,
        }
    }

    fn error_here(&self, message: impl Into<String>) -> ParseError {
        let t = self.peek();
        ParseError {
            message: message.into(),
            span: t.span,
            token: self
                .text
                .get(t.span.start..t.span.end)
                .unwrap_or("")
                .to_owned(),
        }
    }

    fn expect(&mut self, tok: Tok) -> Result<Span, ParseError> {
        if self.peek().tok == tok {
            Ok(self.bump().span)
        } else {
            Err(self.unexpected())
        }
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(w) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.is_word(word) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Result<Ident, ParseError> {
        match &self.peek().tok {
            Tok::Ident(w) | Tok::Quoted(w) => {
                let name = w.clone();
                let span = self.bump().span;
                Ok(Ident { name, span })
            }
            _ => Err(self.unexpected()),
        }
    }

    fn query(&mut self) -> Result<Query, ParseError> {
        let mut lets = Vec::new();
        while self.is_word("let") {
            self.bump();
            let name = self.ident()?;
            self.expect(Tok::Assign)?;
            // A tabular `let` (`let T = Table | …`) is not in the subset.
            if let (Tok::Ident(_), Tok::Pipe) = (&self.peek().tok, &self.peek_at(1).tok) {
                return Err(self.error_here(
                    "A 'let' of a tabular expression is not supported by Keyhaven: only scalars.",
                ));
            }
            let value = self.expr()?;
            self.expect(Tok::Semi)?;
            lets.push(Let { name, value });
        }
        let body = self.tabular()?;
        while self.peek().tok == Tok::Semi {
            self.bump();
        }
        if self.peek().tok != Tok::Eof {
            return Err(self.unexpected());
        }
        Ok(Query { lets, body })
    }

    fn table_list(&mut self) -> Result<Vec<Ident>, ParseError> {
        // union's parameters (`withsource=`, `kind=`, `isfuzzy=`) are
        // refused by name rather than misread as tables.
        if let (Tok::Ident(w), Tok::Assign) = (&self.peek().tok, &self.peek_at(1).tok) {
            return Err(self.error_here(format!(
                "The union parameter '{w}' is not supported by Keyhaven."
            )));
        }
        let tables = self.comma_list(Self::ident)?;
        if tables.len() > MAX_UNION {
            return Err(ParseError {
                message: format!("A union names at most {MAX_UNION} tables."),
                span: tables.first().map_or_else(Span::default, |t| t.span),
                token: "union".into(),
            });
        }
        Ok(tables)
    }

    fn tabular(&mut self) -> Result<Tabular, ParseError> {
        let source = if self.is_word("union") {
            self.bump();
            Source::Union(self.table_list()?)
        } else {
            match &self.peek().tok {
                Tok::Ident(_) | Tok::Quoted(_) => Source::Table(self.ident()?),
                _ => return Err(self.unexpected()),
            }
        };
        let mut ops = Vec::new();
        while self.peek().tok == Tok::Pipe {
            if ops.len() >= MAX_OPERATORS {
                return Err(self.error_here(format!(
                    "The query has more than {MAX_OPERATORS} operators."
                )));
            }
            self.bump();
            ops.push(self.operator()?);
        }
        Ok(Tabular { source, ops })
    }

    /// The operator's name, with `project-away` and the like joined.
    fn operator_name(&mut self) -> Result<(String, Span), ParseError> {
        let first = self.peek().clone();
        let Tok::Ident(word) = &first.tok else {
            return Err(self.unexpected());
        };
        let mut name = word.clone();
        let mut span = first.span;
        self.bump();
        // `project-away`: a '-' and a word with no space between.
        if let (Tok::Minus, Tok::Ident(rest)) = (&self.peek().tok, &self.peek_at(1).tok) {
            let minus = self.peek().span;
            let after = self.peek_at(1).span;
            if minus.start == span.end && after.start == minus.end {
                name = format!("{name}-{rest}");
                span = span.to(after);
                self.bump();
                self.bump();
            }
        }
        Ok((name, span))
    }

    fn operator(&mut self) -> Result<Operator, ParseError> {
        let (name, start) = self.operator_name()?;
        if !OPERATORS.contains(&name.as_str()) {
            return Err(ParseError {
                message: format!("The operator '{name}' is not supported by Keyhaven."),
                span: start,
                token: name,
            });
        }
        let kind = match name.as_str() {
            "where" | "filter" => OperatorKind::Where(self.expr()?),
            "project" => OperatorKind::Project(self.assigns()?),
            "extend" => OperatorKind::Extend(self.assigns()?),
            "project-away" => OperatorKind::ProjectAway(self.comma_list(Self::ident)?),
            "project-rename" => {
                let mut pairs = Vec::new();
                loop {
                    let new = self.ident()?;
                    self.expect(Tok::Assign)?;
                    let old = self.ident()?;
                    pairs.push((new, old));
                    if self.peek().tok != Tok::Comma {
                        break;
                    }
                    self.bump();
                }
                OperatorKind::ProjectRename(pairs)
            }
            "summarize" => {
                let aggregates = if self.is_word("by") {
                    Vec::new()
                } else {
                    self.assigns()?
                };
                let by = if self.eat_word("by") {
                    self.assigns()?
                } else {
                    Vec::new()
                };
                if aggregates.is_empty() && by.is_empty() {
                    return Err(self.unexpected());
                }
                OperatorKind::Summarize { aggregates, by }
            }
            "order" | "sort" => {
                if !self.eat_word("by") {
                    return Err(self.unexpected());
                }
                OperatorKind::Sort(self.comma_list(Self::sort_key)?)
            }
            "top" => {
                let count = self.expr()?;
                if !self.eat_word("by") {
                    return Err(self.unexpected());
                }
                OperatorKind::Top {
                    count,
                    by: self.sort_key()?,
                }
            }
            "take" | "limit" => OperatorKind::Take(self.expr()?),
            "distinct" => {
                if self.peek().tok == Tok::Star {
                    self.bump();
                    OperatorKind::Distinct(None)
                } else {
                    OperatorKind::Distinct(Some(self.comma_list(Self::ident)?))
                }
            }
            "count" => OperatorKind::Count,
            "union" => OperatorKind::Union(self.table_list()?),
            "render" => {
                let chart = self.ident()?;
                // Its `with (…)` properties are for the portal's drawing.
                while !matches!(self.peek().tok, Tok::Pipe | Tok::Semi | Tok::Eof) {
                    self.bump();
                }
                OperatorKind::Render(chart)
            }
            _ => return Err(self.unexpected()),
        };
        Ok(Operator {
            kind,
            span: start.to(self.prev_span()),
        })
    }

    fn assigns(&mut self) -> Result<Vec<Assign>, ParseError> {
        self.comma_list(Self::assign)
    }

    /// `item (, item)*`.
    fn comma_list<T>(
        &mut self,
        item: fn(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        let mut out = vec![item(self)?];
        while self.peek().tok == Tok::Comma {
            self.bump();
            out.push(item(self)?);
        }
        Ok(out)
    }

    fn assign(&mut self) -> Result<Assign, ParseError> {
        if let (Tok::Ident(_) | Tok::Quoted(_), Tok::Assign) =
            (&self.peek().tok, &self.peek_at(1).tok)
        {
            let name = self.ident()?;
            self.bump();
            let expr = self.expr()?;
            return Ok(Assign {
                name: Some(name),
                expr,
            });
        }
        Ok(Assign {
            name: None,
            expr: self.expr()?,
        })
    }

    fn sort_key(&mut self) -> Result<SortKey, ParseError> {
        let expr = self.expr()?;
        let ascending = if self.eat_word("asc") {
            true
        } else {
            self.eat_word("desc");
            false
        };
        let nulls_first = if self.eat_word("nulls") {
            if self.eat_word("first") {
                Some(true)
            } else if self.eat_word("last") {
                Some(false)
            } else {
                return Err(self.unexpected());
            }
        } else {
            None
        };
        Ok(SortKey {
            expr,
            ascending,
            nulls_first,
        })
    }

    // --- Scalar expressions, loosest first ---

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here("The query nests expressions too deeply."));
        }
        let e = self.or();
        self.depth -= 1;
        e
    }

    fn binary(op: BinaryOp, left: Expr, right: Expr) -> Expr {
        Expr {
            span: left.span.to(right.span),
            kind: ExprKind::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
            },
        }
    }

    /// `next (op next)*`, left-associative, for the operators `op_of` knows.
    fn left_assoc(
        &mut self,
        next: fn(&mut Self) -> Result<Expr, ParseError>,
        op_of: fn(&Tok) -> Option<BinaryOp>,
    ) -> Result<Expr, ParseError> {
        let base = self.depth;
        let mut left = next(self)?;
        while let Some(op) = op_of(&self.peek().tok) {
            // Each operator nests the tree one level deeper.
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                self.depth = base;
                return Err(self.error_here("The query nests expressions too deeply."));
            }
            self.bump();
            let right = match next(self) {
                Ok(r) => r,
                Err(e) => {
                    self.depth = base;
                    return Err(e);
                }
            };
            left = Self::binary(op, left, right);
        }
        self.depth = base;
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        self.left_assoc(Self::and, |t| {
            matches!(t, Tok::Ident(w) if w == "or").then_some(BinaryOp::Or)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        self.left_assoc(Self::comparison, |t| {
            matches!(t, Tok::Ident(w) if w == "and").then_some(BinaryOp::And)
        })
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = self.additive()?;
        let op = match &self.peek().tok {
            Tok::EqEq => Some(BinaryOp::Eq),
            Tok::Ne => Some(BinaryOp::Ne),
            Tok::EqTilde => Some(BinaryOp::EqCi),
            Tok::NeTilde => Some(BinaryOp::NeCi),
            Tok::Lt => Some(BinaryOp::Lt),
            Tok::Le => Some(BinaryOp::Le),
            Tok::Gt => Some(BinaryOp::Gt),
            Tok::Ge => Some(BinaryOp::Ge),
            Tok::Ident(w) => StringOp::from_word(w, false).map(BinaryOp::Str),
            Tok::NotWord(w) => StringOp::from_word(w, true).map(BinaryOp::Str),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let right = self.additive()?;
            return Ok(Self::binary(op, left, right));
        }
        // in, in~, !in, !in~
        let membership = match &self.peek().tok {
            Tok::Ident(w) if w == "in" => Some((false, self.peek_at(1).tok == Tok::Tilde)),
            Tok::NotWord(w) if w == "in" => Some((true, false)),
            Tok::NotWord(w) if w == "in~" => Some((true, true)),
            _ => None,
        };
        if let Some((negated, case_insensitive)) = membership {
            self.bump();
            if case_insensitive && !negated {
                self.bump(); // the '~'
            }
            self.expect(Tok::LParen)?;
            let list = if self.peek().tok == Tok::RParen {
                Vec::new()
            } else {
                self.comma_list(Self::expr)?
            };
            let end = self.expect(Tok::RParen)?;
            return Ok(Expr {
                span: left.span.to(end),
                kind: ExprKind::In {
                    expr: Box::new(left),
                    list,
                    negated,
                    case_insensitive,
                },
            });
        }
        let between = match &self.peek().tok {
            Tok::Ident(w) if w == "between" => Some(false),
            Tok::NotWord(w) if w == "between" => Some(true),
            _ => None,
        };
        if let Some(negated) = between {
            self.bump();
            self.expect(Tok::LParen)?;
            let low = self.additive()?;
            self.expect(Tok::DotDot)?;
            let high = self.additive()?;
            let end = self.expect(Tok::RParen)?;
            return Ok(Expr {
                span: left.span.to(end),
                kind: ExprKind::Between {
                    expr: Box::new(left),
                    low: Box::new(low),
                    high: Box::new(high),
                    negated,
                },
            });
        }
        if let Tok::NotWord(w) = &self.peek().tok {
            let w = w.clone();
            return Err(
                self.error_here(format!("The operator '!{w}' is not supported by Keyhaven."))
            );
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        self.left_assoc(Self::multiplicative, |t| match t {
            Tok::Plus => Some(BinaryOp::Add),
            Tok::Minus => Some(BinaryOp::Sub),
            _ => None,
        })
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        self.left_assoc(Self::unary, |t| match t {
            Tok::Star => Some(BinaryOp::Mul),
            Tok::Slash => Some(BinaryOp::Div),
            Tok::Percent => Some(BinaryOp::Mod),
            _ => None,
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.peek().tok == Tok::Minus {
            let start = self.bump().span;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.error_here("The query nests expressions too deeply."));
            }
            let inner = self.unary();
            self.depth -= 1;
            let inner = inner?;
            // A negative literal stays a literal.
            return Ok(match inner.kind {
                ExprKind::Literal(Literal::Long(n)) => Expr {
                    kind: ExprKind::Literal(Literal::Long(n.wrapping_neg())),
                    span: start.to(inner.span),
                },
                ExprKind::Literal(Literal::Real(f)) => Expr {
                    kind: ExprKind::Literal(Literal::Real(-f)),
                    span: start.to(inner.span),
                },
                ExprKind::Literal(Literal::Timespan(n)) => Expr {
                    kind: ExprKind::Literal(Literal::Timespan(n.wrapping_neg())),
                    span: start.to(inner.span),
                },
                _ => Expr {
                    span: start.to(inner.span),
                    kind: ExprKind::Negate(Box::new(inner)),
                },
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let t = self.peek().clone();
        let lit = |l: Literal| Expr {
            kind: ExprKind::Literal(l),
            span: t.span,
        };
        let e = match &t.tok {
            Tok::Str(s) => {
                self.bump();
                // Adjacent string literals are one ("a" "b").
                let mut value = s.clone();
                let mut span = t.span;
                while let Tok::Str(more) = &self.peek().tok {
                    value.push_str(more);
                    span = span.to(self.peek().span);
                    self.bump();
                }
                Expr {
                    kind: ExprKind::Literal(Literal::String(value)),
                    span,
                }
            }
            Tok::Long(n) => {
                self.bump();
                lit(Literal::Long(*n))
            }
            Tok::Real(f) => {
                self.bump();
                lit(Literal::Real(*f))
            }
            Tok::Timespan(n) => {
                self.bump();
                lit(Literal::Timespan(*n))
            }
            Tok::Datetime(s) => {
                self.bump();
                lit(Literal::Datetime(s.clone()))
            }
            Tok::LParen => {
                self.bump();
                let inner = self.expr()?;
                let end = self.expect(Tok::RParen)?;
                Expr {
                    kind: inner.kind,
                    span: t.span.to(end),
                }
            }
            Tok::Quoted(_) => Expr {
                kind: ExprKind::Name(self.ident()?),
                span: t.span,
            },
            Tok::Ident(w) => {
                match w.as_str() {
                    "true" | "false" if self.peek_at(1).tok != Tok::LParen => {
                        self.bump();
                        return Ok(lit(Literal::Bool(w == "true")));
                    }
                    "null" => {
                        self.bump();
                        return Ok(lit(Literal::Null));
                    }
                    _ => {}
                }
                // Words that end an expression are not names.
                if matches!(
                    w.as_str(),
                    "by" | "and" | "or" | "asc" | "desc" | "nulls" | "in" | "between"
                ) {
                    return Err(self.unexpected());
                }
                let name = self.ident()?;
                if self.peek().tok == Tok::LParen {
                    self.bump();
                    let args = if self.peek().tok == Tok::RParen {
                        Vec::new()
                    } else {
                        self.comma_list(Self::expr)?
                    };
                    let end = self.expect(Tok::RParen)?;
                    Expr {
                        span: name.span.to(end),
                        kind: ExprKind::Call { name, args },
                    }
                } else {
                    Expr {
                        span: name.span,
                        kind: ExprKind::Name(name),
                    }
                }
            }
            _ => return Err(self.unexpected()),
        };
        if self.peek().tok == Tok::Dot {
            return Err(self.error_here(
                "Member access ('.') on dynamic values is not supported by Keyhaven.",
            ));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests;
