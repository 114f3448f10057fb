//! The Kusto Query Language (KQL) subset that Key Vault users write against
//! Log Analytics: its lexer, its parser and the syntax tree they make.
//! Nothing here knows about SQL, HTTP or the tables a query reads; the
//! store's compiler turns a [`Query`] into SQL, and the server maps
//! [`ParseError`] to Azure's `BadArgumentError` / `SyntaxError` body.

pub mod ast;
mod lexer;
mod parser;

pub use ast::*;
pub use parser::parse;

/// Where a piece of the query text is: byte offsets into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span from `self`'s start to `other`'s end.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start,
            end: other.end.max(self.start),
        }
    }

    /// Line (1-based) and position in it (0-based, in characters), as
    /// Azure's errors count them.
    pub fn line_pos(self, text: &str) -> (usize, usize) {
        let before = text.get(..self.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let pos = before
            .rsplit_once('\n')
            .map_or(before, |(_, tail)| tail)
            .chars()
            .count();
        (line, pos)
    }
}

/// A query that cannot be read, with where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// What is wrong, in Azure's words where it has some.
    pub message: String,
    /// Where.
    pub span: Span,
    /// The text at that place (Azure's `token`).
    pub token: String,
}

impl ParseError {
    /// Line (1-based) and position (0-based) in `text`.
    pub fn line_pos(&self, text: &str) -> (usize, usize) {
        self.span.line_pos(text)
    }
}
