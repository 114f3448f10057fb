#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::parse;
use crate::ast::*;

fn ok(q: &str) -> Query {
    parse(q).unwrap_or_else(|e| panic!("{q}: {e} at {:?}", e.line_pos(q)))
}

fn where_expr(q: &str) -> Expr {
    match &ok(q).body.ops[0].kind {
        OperatorKind::Where(e) => e.clone(),
        other => panic!("{other:?}"),
    }
}

fn name(e: &Expr) -> &str {
    match &e.kind {
        ExprKind::Name(i) => &i.name,
        other => panic!("{other:?}"),
    }
}

/// Key Vault's documented sample queries and the shapes users write.
#[test]
fn microsoft_sample_queries_parse() {
    for q in [
        "AzureDiagnostics\n| where ResourceProvider ==\"MICROSOFT.KEYVAULT\"\n| summarize count() by Resource, OperationName",
        "AzureDiagnostics | where ResourceProvider == \"MICROSOFT.KEYVAULT\" and OperationName == \"SecretGet\" | project TimeGenerated, CallerIPAddress, id_s",
        "AzureDiagnostics | where ResourceProvider ==\"MICROSOFT.KEYVAULT\" | where httpStatusCode_d >= 300 and not(OperationName == \"Authentication\" and httpStatusCode_d == 401) | summarize count() by requestUri_s, ResultSignature",
        "AzureDiagnostics | where ResourceProvider ==\"MICROSOFT.KEYVAULT\" | summarize avg(DurationMs) by requestUri_s, bin(TimeGenerated, 1h) // requestUri_s contains the URI\n| render timechart",
        "AzureDiagnostics | where ResourceProvider ==\"MICROSOFT.KEYVAULT\" | where DurationMs > 1000 | summarize count() by bin(TimeGenerated, 1h), OperationName",
        "AzureDiagnostics | where TimeGenerated > ago(1d) and OperationName == \"SecretGet\" | summarize count() by CallerIPAddress, bin(TimeGenerated, 1h)",
        "AzureDiagnostics | where id_s has \"mysecret\" | take 50",
        "let threshold = 100ms; let who = 'app'; AZKVAuditLogs | where DurationMs > threshold / 1ms and Identity !has who | top 10 by DurationMs desc nulls last",
        "union AzureDiagnostics, AZKVAuditLogs | summarize dcount(CallerIPAddress), percentiles(DurationMs, 50, 95), make_set(OperationName) by ResultType | order by ResultType asc",
        "AzureMetrics | where MetricName == 'ServiceApiHit' | summarize sum(Total) by bin(TimeGenerated, 5m) | sort by TimeGenerated",
        "AzureDiagnostics | extend Hour = bin(TimeGenerated, 1h), Caller = tostring(identity_claim_oid_g) | project-away ResourceId, Caller | distinct OperationName | count",
        "AzureDiagnostics | where TimeGenerated between (datetime(2026-12-01) .. datetime(2026-12-04T10:30:00Z)) | project-rename Op = OperationName | limit 5",
        "AzureDiagnostics | where ResultSignature in (\"Forbidden\", 'Unauthorized') and OperationName !in~ (\"vaultget\") and isnotempty(id_s) | distinct *",
    ] {
        ok(q);
    }
}

#[test]
fn precedence_is_or_then_and_then_comparison_then_arithmetic() {
    let e = where_expr("T | where a == 1 or b == 2 and c + 1 * 2 > 3");
    let ExprKind::Binary {
        op: BinaryOp::Or,
        left,
        right,
    } = e.kind
    else {
        panic!()
    };
    assert!(matches!(
        left.kind,
        ExprKind::Binary {
            op: BinaryOp::Eq,
            ..
        }
    ));
    let ExprKind::Binary {
        op: BinaryOp::And,
        right: cmp,
        ..
    } = right.kind
    else {
        panic!()
    };
    let ExprKind::Binary {
        op: BinaryOp::Gt,
        left: sum,
        ..
    } = cmp.kind
    else {
        panic!()
    };
    let ExprKind::Binary {
        op: BinaryOp::Add,
        right: product,
        ..
    } = sum.kind
    else {
        panic!()
    };
    assert!(matches!(
        product.kind,
        ExprKind::Binary {
            op: BinaryOp::Mul,
            ..
        }
    ));
}

#[test]
fn string_operators_with_negation_and_case() {
    for (q, test, negated, cs) in [
        ("T | where x has 'a'", StringTest::Has, false, false),
        ("T | where x !has 'a'", StringTest::Has, true, false),
        ("T | where x has_cs 'a'", StringTest::Has, false, true),
        (
            "T | where x !contains_cs 'a'",
            StringTest::Contains,
            true,
            true,
        ),
        (
            "T | where x startswith 'a'",
            StringTest::StartsWith,
            false,
            false,
        ),
        (
            "T | where x !endswith 'a'",
            StringTest::EndsWith,
            true,
            false,
        ),
        (
            "T | where x hasprefix 'a'",
            StringTest::HasPrefix,
            false,
            false,
        ),
    ] {
        let e = where_expr(q);
        let ExprKind::Binary {
            op: BinaryOp::Str(op),
            left,
            ..
        } = e.kind
        else {
            panic!("{q}")
        };
        assert_eq!(
            (op.test, op.negated, op.case_sensitive),
            (test, negated, cs),
            "{q}"
        );
        assert_eq!(name(&left), "x");
        assert_eq!(q.split_whitespace().nth(4).unwrap(), op.spelling());
    }
    assert!(matches!(
        where_expr("T | where x =~ 'A'").kind,
        ExprKind::Binary {
            op: BinaryOp::EqCi,
            ..
        }
    ));
    assert!(matches!(
        where_expr("T | where x !~ 'A'").kind,
        ExprKind::Binary {
            op: BinaryOp::NeCi,
            ..
        }
    ));
    assert!(matches!(
        where_expr("T | where x <> 1").kind,
        ExprKind::Binary {
            op: BinaryOp::Ne,
            ..
        }
    ));
}

#[test]
fn in_and_between_forms() {
    let ExprKind::In {
        list,
        negated,
        case_insensitive,
        ..
    } = where_expr("T | where x in ('a', 'b')").kind
    else {
        panic!()
    };
    assert_eq!((list.len(), negated, case_insensitive), (2, false, false));
    let ExprKind::In {
        negated,
        case_insensitive,
        ..
    } = where_expr("T | where x in~ ('a')").kind
    else {
        panic!()
    };
    assert_eq!((negated, case_insensitive), (false, true));
    let ExprKind::In {
        negated,
        case_insensitive,
        ..
    } = where_expr("T | where x !in~ ('a')").kind
    else {
        panic!()
    };
    assert_eq!((negated, case_insensitive), (true, true));
    let ExprKind::In { negated, .. } = where_expr("T | where x !in (1, 2)").kind else {
        panic!()
    };
    assert!(negated);
    let ExprKind::Between {
        negated, low, high, ..
    } = where_expr("T | where x !between (1 .. 10)").kind
    else {
        panic!()
    };
    assert!(negated);
    assert_eq!(low.kind, ExprKind::Literal(Literal::Long(1)));
    assert_eq!(high.kind, ExprKind::Literal(Literal::Long(10)));
}

#[test]
fn literals() {
    let lit = |s: &str| where_expr(&format!("T | where x == {s}")).kind;
    let ExprKind::Binary { right, .. } = lit("1h") else {
        panic!()
    };
    assert_eq!(
        right.kind,
        ExprKind::Literal(Literal::Timespan(3_600_000_000_000))
    );
    for (text, nanos) in [
        ("1.5h", 5_400_000_000_000),
        ("100ms", 100_000_000),
        ("2d", 172_800_000_000_000),
        ("30m", 1_800_000_000_000),
        ("timespan(2d)", 172_800_000_000_000),
        ("-10s", -10_000_000_000),
        ("10tick", 1_000),
    ] {
        let ExprKind::Binary { right, .. } = lit(text) else {
            panic!()
        };
        assert_eq!(
            right.kind,
            ExprKind::Literal(Literal::Timespan(nanos)),
            "{text}"
        );
    }
    for (text, want) in [
        ("\"a\\\"b\\\\c\\n\"", Literal::String("a\"b\\c\n".into())),
        ("'it''s'", Literal::String("its".into())),
        ("@'C:\\path'", Literal::String("C:\\path".into())),
        ("h'hidden'", Literal::String("hidden".into())),
        ("'é✓'", Literal::String("é✓".into())),
        ("42", Literal::Long(42)),
        ("-42", Literal::Long(-42)),
        ("2.5", Literal::Real(2.5)),
        ("1e3", Literal::Real(1000.0)),
        ("true", Literal::Bool(true)),
        ("null", Literal::Null),
        (
            "datetime(2026-12-04 10:00)",
            Literal::Datetime("2026-12-04 10:00".into()),
        ),
    ] {
        let ExprKind::Binary { right, .. } = lit(text) else {
            panic!()
        };
        assert_eq!(right.kind, ExprKind::Literal(want), "{text}");
    }
}

#[test]
fn operators_and_their_arguments() {
    let q = ok("T | summarize n = count(), avg(DurationMs) by OperationName, bin(TimeGenerated, 1h) | top 3 by n asc | project-away x, y | take 7");
    let ops: Vec<_> = q.body.ops.iter().map(|o| &o.kind).collect();
    let OperatorKind::Summarize { aggregates, by } = ops[0] else {
        panic!()
    };
    assert_eq!(aggregates[0].name.as_ref().unwrap().name, "n");
    assert!(aggregates[1].name.is_none());
    assert_eq!(by.len(), 2);
    let OperatorKind::Top { by: key, .. } = ops[1] else {
        panic!()
    };
    assert!(key.ascending);
    let OperatorKind::ProjectAway(cols) = ops[2] else {
        panic!()
    };
    assert_eq!(
        cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["x", "y"]
    );
    let OperatorKind::Take(n) = ops[3] else {
        panic!()
    };
    assert_eq!(n.kind, ExprKind::Literal(Literal::Long(7)));
}

#[test]
fn sort_defaults_to_descending() {
    let q = ok("T | order by a, b asc nulls first");
    let OperatorKind::Sort(keys) = &q.body.ops[0].kind else {
        panic!()
    };
    assert!(!keys[0].ascending && keys[0].nulls_first.is_none());
    assert!(keys[1].ascending && keys[1].nulls_first == Some(true));
}

#[test]
fn errors_name_the_place_and_the_token() {
    for (q, line, pos, token, says) in [
        (
            "AzureDiagnostics\n| where x ==",
            2,
            12,
            "<end of query>",
            "could not be parsed",
        ),
        (
            "AzureDiagnostics | mv-expand x",
            1,
            19,
            "mv-expand",
            "'mv-expand' is not supported",
        ),
        (
            "AzureDiagnostics\n  | where x == 'open",
            2,
            15,
            "'open",
            "Unterminated string",
        ),
        (
            "AzureDiagnostics | where x == 1 )",
            1,
            32,
            ")",
            "could not be parsed",
        ),
        ("| where x", 1, 0, "|", "could not be parsed"),
        (
            "T | where x matches regex 'a'",
            1,
            12,
            "matches",
            "could not be parsed",
        ),
        ("T | where a.b == 1", 1, 11, ".", "Member access"),
        (
            "T | where x !like 'a'",
            1,
            12,
            "!like",
            "'!like' is not supported",
        ),
        ("let t = T | take 1; t", 1, 8, "T", "tabular"),
        (
            "union withsource=S T1, T2",
            1,
            6,
            "withsource",
            "'withsource'",
        ),
        ("T | where x == 5xyz", 1, 15, "5xyz", "not a valid literal"),
        (
            "T | where x == 99999999999999999999",
            1,
            15,
            "99999999999999999999",
            "does not fit",
        ),
        ("T | where x == 'a\\q'", 1, 17, "\\q", "escape"),
        ("T # x", 1, 2, "#", "could not be parsed"),
    ] {
        let e = parse(q).expect_err(q);
        assert_eq!(e.line_pos(q), (line, pos), "{q}: {e}");
        assert_eq!(e.token, token, "{q}");
        assert!(e.message.contains(says), "{q}: {}", e.message);
    }
}

#[test]
fn hostile_input_is_refused_not_crashed() {
    let deep = format!("T | where {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(parse(&deep).unwrap_err().message.contains("too deeply"));
    let negs = format!("T | where x == {}1", "-".repeat(5000));
    assert!(parse(&negs).is_err());
    let long = format!("T{}", " | take 1".repeat(20_000));
    assert!(parse(&long).unwrap_err().message.contains("too long"));
    // Every prefix of a valid query either parses or fails cleanly.
    let q = "let x = 1h; union A, B | where a has \"é\" and b in~ ('x') or c between (1 .. 2) | summarize n = count() by bin(t, 1h) | top 5 by n desc nulls last | project-rename m = n | render timechart";
    for end in 0..=q.len() {
        if let Some(prefix) = q.get(..end) {
            let _ = parse(prefix);
        }
    }
    for bytes in [
        &b"\"\\"[..],
        b"@'",
        b"[\"",
        b"[\"a\"",
        b"!",
        b"datetime(",
        b"timespan(x)",
        b"1e",
        b"1.",
        b"..",
        b"\xc3",
    ] {
        let _ = parse(&String::from_utf8_lossy(bytes));
    }
}

/// Found by the fuzzer: an escape cut off by the end of the text made a
/// span past the text's end.
#[test]
fn error_spans_stay_inside_the_text() {
    for q in [
        "T | where x == 'a\\",
        "t t =0 h'\\\\\\\\\\\\\\unileont  t\\",
        "T | where x == \"\\",
        "[\"",
        "datetime(",
    ] {
        let e = parse(q).unwrap_err();
        assert!(
            e.span.start <= e.span.end && e.span.end <= q.len(),
            "{q:?}: {e:?}"
        );
    }
}

/// Found by review: a long chain (`1+1+…`, `a and b and …`) made a tree as
/// deep as it is long, beyond what recursion over it can take.
#[test]
fn long_chains_count_as_nesting_and_lists_are_bounded() {
    let plus = format!("T | where {} > 0", vec!["1"; 9000].join("+"));
    assert!(parse(&plus).unwrap_err().message.contains("too deeply"));
    let and = format!("T | where {}", vec!["true"; 9000].join(" and "));
    assert!(parse(&and).unwrap_err().message.contains("too deeply"));
    // Real chains are fine.
    ok(&format!("T | where {}", vec!["x == 1"; 90].join(" or ")));
    let ops = format!("T{}", " | take 1".repeat(101));
    assert!(parse(&ops)
        .unwrap_err()
        .message
        .contains("more than 100 operators"));
    let union = format!("union {}", ["T"; 11].join(", "));
    assert!(parse(&union)
        .unwrap_err()
        .message
        .contains("at most 10 tables"));
    assert_eq!(
        where_expr("T | where x == @'a''b'").kind,
        ExprKind::Binary {
            op: BinaryOp::Eq,
            left: Box::new(Expr {
                kind: ExprKind::Name(Ident {
                    name: "x".into(),
                    span: crate::Span { start: 10, end: 11 }
                }),
                span: crate::Span { start: 10, end: 11 }
            }),
            right: Box::new(Expr {
                kind: ExprKind::Literal(Literal::String("a'b".into())),
                span: crate::Span { start: 15, end: 22 }
            }),
        }
    );
}
