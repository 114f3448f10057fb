//! Query text to tokens.

use crate::{ParseError, Span};

/// Most tokens a query may have (bounds the parser's work).
pub const MAX_TOKENS: usize = 20_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name or keyword (`where`, `TimeGenerated`); `['x y']` too.
    Ident(String),
    /// A bracketed name (`['Column name']`): never a keyword.
    Quoted(String),
    /// `!` directly followed by a word (`!has`, `!in`, `!contains_cs`).
    NotWord(String),
    Str(String),
    Long(i64),
    Real(f64),
    /// Nanoseconds.
    Timespan(i64),
    /// The raw text of `datetime(…)`.
    Datetime(String),
    Pipe,
    Comma,
    Semi,
    LParen,
    RParen,
    Assign,
    EqEq,
    Ne,
    EqTilde,
    NeTilde,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    DotDot,
    Dot,
    Tilde,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

fn err(text: &str, start: usize, end: usize, message: impl Into<String>) -> ParseError {
    // A span never runs past the text (an escape cut off at its end).
    let end = end.min(text.len());
    let span = Span {
        start: start.min(end),
        end,
    };
    ParseError {
        message: message.into(),
        span,
        token: text.get(span.start..span.end).unwrap_or("").to_owned(),
    }
}

/// Nanoseconds per unit of a timespan literal's suffix.
fn unit_nanos(unit: &str) -> Option<i64> {
    Some(match unit {
        "d" | "day" | "days" => 86_400_000_000_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000_000,
        "m" | "min" | "minute" | "minutes" => 60_000_000_000,
        "s" | "sec" | "second" | "seconds" => 1_000_000_000,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1_000_000,
        "microsecond" | "microseconds" => 1_000,
        "tick" | "ticks" => 100,
        _ => return None,
    })
}

/// `1.5h` → nanoseconds.
pub fn timespan_nanos(number: &str, unit: &str) -> Option<i64> {
    let per = unit_nanos(unit)?;
    if let Ok(n) = number.parse::<i64>() {
        return n.checked_mul(per);
    }
    let f: f64 = number.parse().ok()?;
    let v = f * per as f64;
    (v.is_finite() && v.abs() < 9.0e18).then_some(v.round() as i64)
}

pub fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = text.as_bytes();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if out.len() > MAX_TOKENS {
            return Err(err(
                text,
                i,
                i,
                format!("The query is too long (more than {MAX_TOKENS} tokens)."),
            ));
        }
        let c = at(i);
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && at(i + 1) == b'/' {
            while i < bytes.len() && at(i) != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let push = |out: &mut Vec<Token>, tok: Tok, end: usize| {
            out.push(Token {
                tok,
                span: Span { start, end },
            })
        };
        // Strings: "…", '…' (backslash escapes), @"…" / @'…' (verbatim),
        // h"…" (hidden in Azure's logs; plain here).
        let (verbatim, quote_at) = match (c, at(i + 1)) {
            (b'@', b'"' | b'\'') => (true, i + 1),
            (b'h' | b'H', b'"' | b'\'') => (false, i + 1),
            (b'"' | b'\'', _) => (false, i),
            _ => (false, usize::MAX),
        };
        if quote_at != usize::MAX {
            let quote = at(quote_at);
            let mut j = quote_at + 1;
            let mut value = String::new();
            loop {
                let Some(&b) = bytes.get(j) else {
                    return Err(err(text, start, j, "Unterminated string literal."));
                };
                if b == quote {
                    // In a verbatim string a doubled quote is one quote.
                    if verbatim && at(j + 1) == quote {
                        value.push(quote as char);
                        j += 2;
                        continue;
                    }
                    j += 1;
                    break;
                }
                if b == b'\n' {
                    return Err(err(text, start, j, "Unterminated string literal."));
                }
                if b == b'\\' && !verbatim {
                    let e = at(j + 1);
                    value.push(match e {
                        b'\\' => '\\',
                        b'"' => '"',
                        b'\'' => '\'',
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'0' => '\0',
                        _ => {
                            return Err(err(
                                text,
                                j,
                                j + 2,
                                "Invalid escape sequence in a string literal.",
                            ))
                        }
                    });
                    j += 2;
                    continue;
                }
                // Whole UTF-8 characters.
                let ch = text
                    .get(j..)
                    .and_then(|t| t.chars().next())
                    .ok_or_else(|| err(text, j, j + 1, "Invalid character."))?;
                value.push(ch);
                j += ch.len_utf8();
            }
            push(&mut out, Tok::Str(value), j);
            i = j;
            continue;
        }
        if c.is_ascii_digit() {
            let mut j = i;
            while at(j).is_ascii_digit() {
                j += 1;
            }
            let mut real = false;
            if at(j) == b'.' && at(j + 1).is_ascii_digit() {
                real = true;
                j += 1;
                while at(j).is_ascii_digit() {
                    j += 1;
                }
            }
            if matches!(at(j), b'e' | b'E')
                && (at(j + 1).is_ascii_digit()
                    || matches!(at(j + 1), b'+' | b'-') && at(j + 2).is_ascii_digit())
            {
                real = true;
                j += 2;
                while at(j).is_ascii_digit() {
                    j += 1;
                }
            }
            let number = text.get(i..j).unwrap_or("");
            // A unit right after the number makes a timespan.
            let mut k = j;
            while at(k).is_ascii_alphabetic() {
                k += 1;
            }
            if k > j {
                let unit = text.get(j..k).unwrap_or("");
                let nanos = timespan_nanos(number, unit).ok_or_else(|| {
                    err(
                        text,
                        start,
                        k,
                        format!(
                            "'{}' is not a valid literal.",
                            text.get(start..k).unwrap_or("")
                        ),
                    )
                })?;
                push(&mut out, Tok::Timespan(nanos), k);
                i = k;
                continue;
            }
            let tok =
                if real {
                    Tok::Real(number.parse().map_err(|_| {
                        err(text, start, j, format!("'{number}' is not a valid number."))
                    })?)
                } else {
                    Tok::Long(number.parse().map_err(|_| {
                        err(text, start, j, format!("'{number}' does not fit a long."))
                    })?)
                };
            push(&mut out, tok, j);
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let mut j = i;
            while at(j).is_ascii_alphanumeric() || at(j) == b'_' || at(j) == b'$' {
                j += 1;
            }
            let word = text.get(i..j).unwrap_or("").to_owned();
            // datetime(…) and timespan(…) hold raw text up to the ')'.
            let mut k = j;
            while at(k) == b' ' {
                k += 1;
            }
            if at(k) == b'(' && (word == "datetime" || word == "timespan") {
                let open = k + 1;
                let close = text
                    .get(open..)
                    .and_then(|t| t.find(')'))
                    .map(|n| open + n)
                    .ok_or_else(|| err(text, start, bytes.len(), "Missing ')'."))?;
                let raw = text.get(open..close).unwrap_or("").trim().to_owned();
                // datetime(x) with a column or string inside is a call.
                let quoted = raw.starts_with('"') || raw.starts_with('\'');
                let literal = !quoted
                    && !raw.is_empty()
                    && raw.bytes().next().is_some_and(|b| b.is_ascii_digit());
                if literal && word == "datetime" {
                    push(&mut out, Tok::Datetime(raw), close + 1);
                    i = close + 1;
                    continue;
                }
                if literal && word == "timespan" {
                    let split = raw
                        .find(|ch: char| ch.is_ascii_alphabetic())
                        .unwrap_or(raw.len());
                    let (n, u) = raw.split_at(split);
                    let nanos = timespan_nanos(n.trim(), if u.is_empty() { "d" } else { u.trim() })
                        .ok_or_else(|| {
                            err(
                                text,
                                start,
                                close + 1,
                                format!("'{raw}' is not a valid timespan."),
                            )
                        })?;
                    push(&mut out, Tok::Timespan(nanos), close + 1);
                    i = close + 1;
                    continue;
                }
            }
            push(&mut out, Tok::Ident(word), j);
            i = j;
            continue;
        }
        if c == b'[' && matches!(at(i + 1), b'"' | b'\'') {
            let quote = at(i + 1);
            let close = text
                .get(i + 2..)
                .and_then(|t| t.find(quote as char))
                .map(|n| i + 2 + n)
                .ok_or_else(|| err(text, start, bytes.len(), "Unterminated name."))?;
            if at(close + 1) != b']' {
                return Err(err(text, start, close + 1, "Expected ']'."));
            }
            let name = text.get(i + 2..close).unwrap_or("").to_owned();
            push(&mut out, Tok::Quoted(name), close + 2);
            i = close + 2;
            continue;
        }
        if c == b'!' && (at(i + 1).is_ascii_alphabetic()) {
            let mut j = i + 1;
            while at(j).is_ascii_alphanumeric() || at(j) == b'_' {
                j += 1;
            }
            let mut word = text.get(i + 1..j).unwrap_or("").to_owned();
            if at(j) == b'~' && (word == "in" || word == "between") {
                word.push('~');
                j += 1;
            }
            push(&mut out, Tok::NotWord(word), j);
            i = j;
            continue;
        }
        let two = (c, at(i + 1));
        let (tok, len) = match two {
            (b'=', b'=') => (Tok::EqEq, 2),
            (b'=', b'~') => (Tok::EqTilde, 2),
            (b'!', b'=') => (Tok::Ne, 2),
            (b'<', b'>') => (Tok::Ne, 2),
            (b'!', b'~') => (Tok::NeTilde, 2),
            (b'<', b'=') => (Tok::Le, 2),
            (b'>', b'=') => (Tok::Ge, 2),
            (b'.', b'.') => (Tok::DotDot, 2),
            (b'|', _) => (Tok::Pipe, 1),
            (b',', _) => (Tok::Comma, 1),
            (b';', _) => (Tok::Semi, 1),
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b'=', _) => (Tok::Assign, 1),
            (b'<', _) => (Tok::Lt, 1),
            (b'>', _) => (Tok::Gt, 1),
            (b'+', _) => (Tok::Plus, 1),
            (b'-', _) => (Tok::Minus, 1),
            (b'*', _) => (Tok::Star, 1),
            (b'/', _) => (Tok::Slash, 1),
            (b'%', _) => (Tok::Percent, 1),
            (b'.', _) => (Tok::Dot, 1),
            (b'~', _) => (Tok::Tilde, 1),
            _ => {
                let ch_len = text
                    .get(i..)
                    .and_then(|t| t.chars().next())
                    .map_or(1, char::len_utf8);
                return Err(err(
                    text,
                    start,
                    i + ch_len,
                    format!(
                        "Query could not be parsed at '{}'.",
                        text.get(i..i + ch_len).unwrap_or("")
                    ),
                ));
            }
        };
        push(&mut out, tok, i + len);
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        span: Span {
            start: bytes.len(),
            end: bytes.len(),
        },
    });
    Ok(out)
}
