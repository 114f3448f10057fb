#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use rusqlite::{params_from_iter, Connection};

use super::compile::{parse_datetime as datetime_us, SqlParam};
use super::*;

const H: i64 = 3_600_000_000;
const T0: i64 = 1_796_400_000_000_000; // 2026-12-04T16:00:00Z

struct Rec {
    table: &'static str,
    ws: &'static str,
    t: i64,
    op: &'static str,
    ip: &'static str,
    status: i64,
    dur: i64,
    id: &'static str,
}

fn records() -> Vec<Rec> {
    let r = |table, ws, t, op, ip, status, dur, id| Rec {
        table,
        ws,
        t,
        op,
        ip,
        status,
        dur,
        id,
    };
    vec![
        r(
            "AzureDiagnostics",
            "w1",
            T0,
            "SecretGet",
            "10.0.0.1",
            200,
            5,
            "https://v.vault/secrets/db-password/abc",
        ),
        r(
            "AzureDiagnostics",
            "w1",
            T0 + 10,
            "SecretGet",
            "10.0.0.1",
            200,
            7,
            "https://v.vault/secrets/db-password/def",
        ),
        r(
            "AzureDiagnostics",
            "w1",
            T0 + H,
            "SecretGet",
            "10.0.0.2",
            403,
            2,
            "https://v.vault/secrets/api-key",
        ),
        r(
            "AzureDiagnostics",
            "w1",
            T0 + H + 5,
            "KeySign",
            "10.0.0.2",
            200,
            40,
            "https://v.vault/keys/signer/1",
        ),
        r(
            "AzureDiagnostics",
            "w1",
            T0 + 2 * H,
            "SecretSet",
            "10.0.0.3",
            200,
            12,
            "https://v.vault/secrets/db-password-old",
        ),
        r(
            "AzureDiagnostics",
            "w2",
            T0 + 2 * H,
            "SecretGet",
            "10.9.9.9",
            200,
            1,
            "https://other.vault/secrets/db-password",
        ),
        r(
            "AZKVAuditLogs",
            "w1",
            T0 + 3 * H,
            "VaultGet",
            "10.0.0.4",
            200,
            3,
            "",
        ),
    ]
}

/// `metric_minutes` (migration 12) and its rows: vault `v` in scope, `other`
/// not.
const METRICS: &str = "CREATE TABLE metric_minutes (
    vault TEXT NOT NULL, minute BIGINT NOT NULL, activity TEXT NOT NULL, status BIGINT NOT NULL,
    count BIGINT NOT NULL, latency_ms BIGINT NOT NULL, PRIMARY KEY (vault, minute, activity, status));
 INSERT INTO metric_minutes VALUES
    ('/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v', 29940000, 'secretget', 200, 3, 30),
    ('/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v', 29940000, 'secretget', 500, 1, 10),
    ('/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v', 29940001, 'keysign', 200, 2, 8),
    ('/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/other', 29940000, 'secretget', 200, 5, 5);";

fn db() -> Connection {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(LOG_TABLE_SQLITE).unwrap();
    c.execute_batch(METRICS).unwrap();
    for r in records() {
        let (result, signature) = outcome(r.status);
        c.execute(
            &INSERT.replace('$', "?"),
            rusqlite::params![
                r.ws, r.table, r.t, r.op, result, signature, r.dur, r.ip, r.id, r.status
            ],
        )
        .unwrap();
    }
    c
}

fn scope() -> QueryScope {
    QueryScope {
        workspaces: vec![("w1".into(), i64::MIN)],
        resource: None,
        metric_vaults: vec![(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v".into(),
            "w1".into(),
        )],
        from_us: T0 - 24 * H,
        to_us: T0 + 24 * H,
        now_us: T0 + 4 * H,
    }
}

const INSERT: &str = "INSERT INTO log_records (workspace, log_table, time_us, category, resource_id, resource, resource_group, subscription_id, resource_type, operation, operation_version, result_type, result_signature, result_description, duration_ms, caller_ip, correlation_id, oid, appid, upn, tid, object_id, request_uri, http_status, client_info, identity, properties) VALUES ($1, $2, $3, 'AuditEvent', '/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/V', 'V', 'RG', 'S', 'VAULTS', $4, '7.5', $5, $6, '', $7, $8, 'c', 'oid', 'app', '', 'tid', $9, $9, $10, 'ua', '{}', '{}')";

fn outcome(status: i64) -> (&'static str, &'static str) {
    if status < 400 {
        ("Success", "OK")
    } else {
        ("Failure", "Forbidden")
    }
}

/// Runs a query on SQLite and, when the run has a PostgreSQL server
/// (`KEYHAVEN_TEST_POSTGRES`, as the README's test command sets), on
/// PostgreSQL too; the two must agree. Rows as strings (NULL as "null",
/// booleans as 1/0).
fn run(q: &str) -> (Vec<(String, KqlType)>, Vec<Vec<String>>) {
    let parsed = keyhaven_kql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    // Dynamic values as the runner gives them (arrays sorted, compact).
    let canonical = |(cols, rows): (Vec<(String, KqlType)>, Vec<Vec<String>>)| {
        let rows = rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .zip(&cols)
                    .map(|(v, (_, ty))| {
                        if *ty == KqlType::Dynamic && v != "null" {
                            super::run::canonical_dynamic(&v)
                        } else {
                            v
                        }
                    })
                    .collect()
            })
            .collect();
        (cols, rows)
    };
    let sqlite = canonical(run_sqlite(q, &parsed));
    if let Ok(url) = std::env::var("KEYHAVEN_TEST_POSTGRES") {
        let pg = canonical(run_postgres(q, &parsed, &url));
        assert_eq!(pg, sqlite, "{q}: PostgreSQL and SQLite disagree");
    }
    sqlite
}

fn run_sqlite(q: &str, parsed: &keyhaven_kql::Query) -> (Vec<(String, KqlType)>, Vec<Vec<String>>) {
    let c = compile(parsed, &scope(), Dialect::Sqlite).unwrap_or_else(|e| panic!("{q}: {e:?}"));
    let conn = db();
    let mut stmt = conn
        .prepare(&c.sql)
        .unwrap_or_else(|e| panic!("{q}: {e}\n{}", c.sql));
    let params: Vec<rusqlite::types::Value> = c
        .params
        .iter()
        .map(|p| match p {
            SqlParam::Text(s) => rusqlite::types::Value::Text(s.clone()),
            SqlParam::Int(n) => rusqlite::types::Value::Integer(*n),
            SqlParam::Real(f) => rusqlite::types::Value::Real(*f),
        })
        .collect();
    let n = c.columns.len();
    let rows = stmt
        .query_map(params_from_iter(params), |row| {
            (0..n)
                .map(|i| {
                    Ok(match row.get::<_, rusqlite::types::Value>(i)? {
                        rusqlite::types::Value::Null => "null".to_owned(),
                        rusqlite::types::Value::Integer(v) => v.to_string(),
                        rusqlite::types::Value::Real(v) => v.to_string(),
                        rusqlite::types::Value::Text(v) => v,
                        rusqlite::types::Value::Blob(_) => "blob".to_owned(),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    (c.columns, rows)
}

fn run_postgres(
    q: &str,
    parsed: &keyhaven_kql::Query,
    base: &str,
) -> (Vec<(String, KqlType)>, Vec<Vec<String>>) {
    use tokio_postgres::types::ToSql;
    let c = compile(parsed, &scope(), Dialect::Postgres).unwrap_or_else(|e| panic!("{q}: {e:?}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .expect("KEYHAVEN_TEST_POSTGRES is set but PostgreSQL is unreachable");
        tokio::spawn(conn);
        let schema = format!("kh_logs_{}", keyhaven_core::Version::random());
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema}; {}",
                log_table_ddl(Dialect::Postgres)
            ))
            .await
            .unwrap();
        for r in records() {
            let (result, signature) = outcome(r.status);
            let values: [&(dyn ToSql + Sync); 10] = [
                &r.ws, &r.table, &r.t, &r.op, &result, &signature, &r.dur, &r.ip, &r.id, &r.status,
            ];
            client.execute(INSERT, &values).await.unwrap();
        }
        client.batch_execute(METRICS).await.unwrap();
        let params: Vec<Box<dyn ToSql + Sync + Send>> = c
            .params
            .iter()
            .map(|p| -> Box<dyn ToSql + Sync + Send> {
                match p {
                    SqlParam::Text(s) => Box::new(s.clone()),
                    SqlParam::Int(n) => Box::new(*n),
                    SqlParam::Real(f) => Box::new(*f),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let result = client.query(&c.sql, &refs).await;
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
        let rows = result.unwrap_or_else(|e| panic!("{q}: {e:?}\n{}", c.sql));
        let out =
            rows.iter()
                .map(|row| {
                    c.columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, ty))| match ty {
                            KqlType::Long | KqlType::Datetime | KqlType::Timespan => row
                                .get::<_, Option<i64>>(i)
                                .map_or("null".into(), |v| v.to_string()),
                            KqlType::Real => row
                                .get::<_, Option<f64>>(i)
                                .map_or("null".into(), |v| v.to_string()),
                            KqlType::Bool => row
                                .get::<_, Option<bool>>(i)
                                .map_or("null".into(), |v| if v { "1".into() } else { "0".into() }),
                            KqlType::String | KqlType::Dynamic => row
                                .get::<_, Option<String>>(i)
                                .unwrap_or_else(|| "null".into()),
                        })
                        .collect::<Vec<String>>()
                })
                .collect();
        (c.columns.clone(), out)
    })
}

fn rows(q: &str) -> Vec<Vec<String>> {
    run(q).1
}

fn err(q: &str) -> String {
    let parsed = keyhaven_kql::parse(q).unwrap();
    compile(&parsed, &scope(), Dialect::Sqlite)
        .unwrap_err()
        .message
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn where_reads_one_workspace_and_table() {
    assert_eq!(rows("AzureDiagnostics | count"), vec![s(&["5"])]);
    assert_eq!(rows("AZKVAuditLogs | count"), vec![s(&["1"])]);
    assert_eq!(
        rows("union AzureDiagnostics, AZKVAuditLogs | count"),
        vec![s(&["6"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where OperationName == 'SecretGet' | count"),
        vec![s(&["3"])]
    );
    assert_eq!(rows("AzureDiagnostics | where OperationName =~ 'secretget' and CallerIPAddress != '10.0.0.1' | count"), vec![s(&["1"])]);
}

#[test]
fn the_sample_summarize_by_caller_and_hour() {
    let (cols, got) = run(
        "AzureDiagnostics | where TimeGenerated > ago(1d) and OperationName == \"SecretGet\" | summarize count() by CallerIPAddress, bin(TimeGenerated, 1h) | sort by CallerIPAddress asc",
    );
    assert_eq!(
        cols,
        vec![
            ("CallerIPAddress".into(), KqlType::String),
            ("TimeGenerated".into(), KqlType::Datetime),
            ("count_".into(), KqlType::Long)
        ]
    );
    let hour = |t: i64| (t - t.rem_euclid(H)).to_string();
    assert_eq!(
        got,
        vec![
            vec!["10.0.0.1".to_owned(), hour(T0), "2".into()],
            vec!["10.0.0.2".to_owned(), hour(T0 + H), "1".into()]
        ]
    );
}

#[test]
fn string_predicates_match_terms_and_substrings() {
    let ids = |q: &str| {
        rows(q)
            .into_iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>()
    };
    let base = "AzureDiagnostics | where id_s";
    let tail = "| project id_s | sort by id_s asc";
    // A term between non-alphanumerics: db-password-old has it too.
    assert_eq!(ids(&format!("{base} has 'db-password' {tail}")).len(), 3);
    assert_eq!(ids(&format!("{base} has 'password-old' {tail}")).len(), 1);
    assert_eq!(ids(&format!("{base} has 'password' {tail}")).len(), 3);
    assert_eq!(
        ids(&format!("{base} has 'passw' {tail}")).len(),
        0,
        "has is a whole term"
    );
    assert_eq!(ids(&format!("{base} contains 'passw' {tail}")).len(), 3);
    assert_eq!(
        ids(&format!("{base} has 'API' {tail}")),
        vec!["https://v.vault/secrets/api-key"]
    );
    assert_eq!(ids(&format!("{base} has_cs 'API' {tail}")).len(), 0);
    assert_eq!(
        ids(&format!("{base} !has 'secrets' {tail}")),
        vec!["https://v.vault/keys/signer/1"]
    );
    assert_eq!(
        ids(&format!("{base} endswith '/1' {tail}")),
        vec!["https://v.vault/keys/signer/1"]
    );
    assert_eq!(
        ids(&format!("{base} startswith 'HTTPS://V.VAULT/KEYS' {tail}")).len(),
        1
    );
    assert_eq!(ids(&format!("{base} hasprefix 'sign' {tail}")).len(), 1);
    assert_eq!(
        ids(&format!("{base} has '*' {tail}")).len(),
        0,
        "glob characters are literal"
    );
}

#[test]
fn in_between_and_arithmetic() {
    assert_eq!(
        rows("AzureDiagnostics | where OperationName in ('KeySign', 'SecretSet') | count"),
        vec![s(&["2"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where OperationName !in~ ('secretget') | count"),
        vec![s(&["2"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where DurationMs between (5 .. 12) | count"),
        vec![s(&["3"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where httpStatusCode_d >= 300 | project ResultSignature"),
        vec![s(&["Forbidden"])]
    );
    assert_eq!(
        rows(
            "let slow = 10; AzureDiagnostics | where DurationMs > slow * 2 | project OperationName"
        ),
        vec![s(&["KeySign"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where TimeGenerated >= now() - 2h | count"),
        vec![s(&["1"])]
    );
}

#[test]
fn project_extend_rename_distinct_top_take() {
    let (cols, got) = run("AzureDiagnostics | extend Slow = DurationMs > 10, D2 = DurationMs * 2 | project OperationName, Slow, D2 | top 2 by D2 desc");
    assert_eq!(
        cols.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["OperationName", "Slow", "D2"]
    );
    assert_eq!(
        got,
        vec![s(&["KeySign", "1", "80"]), s(&["SecretSet", "1", "24"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | distinct OperationName | sort by OperationName asc"),
        vec![s(&["KeySign"]), s(&["SecretGet"]), s(&["SecretSet"])]
    );
    assert_eq!(rows("AzureDiagnostics | project-rename Op = OperationName | where Op == 'KeySign' | project Op"), vec![s(&["KeySign"])]);
    let (cols, _) = run("AzureDiagnostics | project-away ResourceId, Type | take 1");
    assert!(!cols.iter().any(|c| c.0 == "ResourceId" || c.0 == "Type"));
    assert_eq!(
        rows("AzureDiagnostics | sort by DurationMs asc | take 2 | project DurationMs"),
        vec![s(&["2"]), s(&["5"])]
    );
    assert_eq!(rows("AzureDiagnostics | summarize n = dcount(CallerIPAddress), mx = max(DurationMs), a = avg(DurationMs), f = countif(ResultType == 'Failure')"), vec![s(&["3", "40", "13.2", "1"])]);
}

#[test]
fn datetimes_parse_as_azure_writes_them() {
    assert_eq!(datetime_us("1970-01-01"), Some(0));
    assert_eq!(
        datetime_us("2026-12-04T10:30:00Z"),
        Some(1_796_380_200_000_000)
    );
    assert_eq!(datetime_us("2026-12-04 10:30"), Some(1_796_380_200_000_000));
    assert_eq!(
        datetime_us("2026-12-04T10:30:00.25"),
        Some(1_796_380_200_250_000)
    );
    for bad in [
        "2026-13-01",
        "2026-12-04T25:00",
        "x",
        "2026-12-04T10:30:00.12345678",
    ] {
        assert_eq!(datetime_us(bad), None, "{bad}");
    }
    assert_eq!(
        rows("AzureDiagnostics | where TimeGenerated < datetime(2026-01-01) | count"),
        vec![s(&["0"])]
    );
}

#[test]
fn semantic_errors_name_what_is_wrong() {
    assert!(
        err("Nope | count").contains("Failed to resolve table or column expression named 'Nope'")
    );
    assert!(err("AzureDiagnostics | where Nope == 1")
        .contains("'where' operator: Failed to resolve column or scalar expression named 'Nope'"));
    assert!(err("AzureDiagnostics | where DurationMs == 'x'")
        .contains("Cannot compare values of types long and string"));
    assert!(err("AzureDiagnostics | where DurationMs").contains("boolean"));
    assert!(err("AzureDiagnostics | summarize make_list(DurationMs)")
        .contains("'make_list' is not supported"));
    assert!(err("AzureDiagnostics | where frob(1)").contains("Unknown function: 'frob'"));
    assert!(err("AzureDiagnostics | where count() > 1").contains("only in summarize"));
    assert!(err("AzureDiagnostics | where id_s has OperationName").contains("string literal"));
    assert!(err("AzureDiagnostics | take 'x'").contains("long"));
    assert!(
        err("AzureDiagnostics | where TimeGenerated > datetime(2026-99-01)")
            .contains("Failed to parse datetime literal")
    );
}

#[test]
fn caller_text_never_becomes_sql() {
    // Strings are parameters; names are quoted.
    assert_eq!(
        rows("AzureDiagnostics | where OperationName == \"x' OR '1'='1\" | count"),
        vec![s(&["0"])]
    );
    let (cols, got) = run("AzureDiagnostics | extend ['a\"b; DROP TABLE log_records'] = 1 | project ['a\"b; DROP TABLE log_records'] | take 1");
    assert_eq!(cols[0].0, "a\"b; DROP TABLE log_records");
    assert_eq!(got, vec![s(&["1"])]);
    assert_eq!(rows("AzureDiagnostics | count"), vec![s(&["5"])]);
}

#[test]
fn empty_lists_and_negations() {
    assert_eq!(
        rows("AzureDiagnostics | where OperationName in () | count"),
        vec![s(&["0"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where OperationName !in () | count"),
        vec![s(&["5"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where DurationMs !between (5 .. 12) | count"),
        vec![s(&["2"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where not(OperationName startswith 'secret') | count"),
        vec![s(&["1"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where isnotempty(id_s) and not(isempty(CallerIPAddress)) | count"),
        vec![s(&["5"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | where OperationName == 'KeySign' | project t = tostring(TimeGenerated), s = tostring(DurationMs), b = tostring(DurationMs > 1)"),
        vec![s(&["2026-12-04T17:00:00.000Z", "40", "true"])]
    );
}

#[test]
fn row_counts_are_bounded() {
    assert_eq!(rows("AzureDiagnostics | take -3 | count"), vec![s(&["0"])]);
    assert_eq!(rows("AzureDiagnostics | take 0 | count"), vec![s(&["0"])]);
    assert_eq!(
        rows("AzureDiagnostics | take 9223372036854775807 | count"),
        vec![s(&["5"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | top 1 by DurationMs asc | project DurationMs"),
        vec![s(&["2"])]
    );
}

/// The review's findings, each a query that went wrong before.
#[test]
fn review_findings_stay_fixed() {
    // SQL growing exponentially with the query: refused, not built.
    let lets: String = (1..=40)
        .map(|i| format!("let a{i} = a{} + a{};", i - 1, i - 1))
        .collect();
    assert!(err(&format!("let a0 = 1; {lets} AzureDiagnostics | take 1")).contains("too complex"));
    let bins = format!(
        "AzureDiagnostics | where {}DurationMs{} > 0",
        "bin(".repeat(25),
        ", 1)".repeat(25)
    );
    assert!(err(&bins).contains("too complex"));
    // KQL names are case-sensitive; SQLite's are not.
    assert_eq!(
        rows("AzureDiagnostics | extend category = 'zzz' | where category == 'zzz' | count"),
        vec![s(&["5"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | extend category = 'zzz' | where Category == 'AuditEvent' | count"),
        vec![s(&["5"])]
    );
    // Names given twice are refused, not silently merged.
    assert!(
        err("AzureDiagnostics | summarize sum(DurationMs + 1), sum(DurationMs + 2)")
            .contains("named twice")
    );
    assert!(err("AzureDiagnostics | project-rename TenantId = Category").contains("exists"));
    // A union's missing text is empty, not null.
    assert_eq!(
        rows("union AzureDiagnostics, AZKVAuditLogs | where ResourceGroup != 'x' | count"),
        vec![s(&["6"])]
    );
    // extend applies its assignments in order.
    assert_eq!(
        rows("AzureDiagnostics | where OperationName == 'KeySign' | extend DurationMs = DurationMs * 2, d = DurationMs | project d"),
        vec![s(&["80"])]
    );
    // Text sorts by bytes on both stores (upper case before lower).
    assert_eq!(
        rows("AzureDiagnostics | where DurationMs in (5, 7) | extend w = iff(DurationMs == 5, 'b', 'B') | sort by w asc | project w"),
        vec![s(&["B"]), s(&["b"])]
    );
    // Toward zero and floor as KQL has them.
    assert_eq!(
        rows(
            "AzureDiagnostics | take 1 | project a = toint(2.7), b = bin(-0.5, 1), c = bin(-1, 2)"
        ),
        vec![s(&["2", "-1", "-2"])]
    );
    assert!(
        err("AzureDiagnostics | summarize count() by bin(TimeGenerated, 0tick)")
            .contains("at least one microsecond")
    );
    assert!(
        err("AzureDiagnostics | where TimeGenerated > datetime(2026-02-31)")
            .contains("Failed to parse datetime")
    );
    // The hidden order is not the caller's to name.
    assert_eq!(rows("AzureDiagnostics | sort by DurationMs asc | extend kh_order = 1 | take 1 | project DurationMs"), vec![s(&["2"])]);
}

#[test]
fn percentiles_are_the_nearest_rank_in_each_group() {
    // DurationMs in w1's AzureDiagnostics: 5, 7, 2, 40, 12.
    let (cols, r) = run("AzureDiagnostics | summarize percentile(DurationMs, 50)");
    assert_eq!(
        cols,
        vec![("percentile_DurationMs_50".to_owned(), KqlType::Long)]
    );
    assert_eq!(r, vec![s(&["7"])]);
    let (cols, r) =
        run("AzureDiagnostics | summarize percentiles(DurationMs, 0, 90, 99.5, 100), n = count()");
    assert_eq!(
        cols.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        vec![
            "percentile_DurationMs_0",
            "percentile_DurationMs_90",
            "percentile_DurationMs_99_5",
            "percentile_DurationMs_100",
            "n"
        ]
    );
    assert_eq!(r, vec![s(&["2", "40", "40", "40", "5"])]);
    // Rank >= 0.644 * 5 = 3.22: the 4th of 2, 5, 7, 12, 40.
    assert_eq!(
        rows("AzureDiagnostics | summarize percentile(DurationMs, 64.4)"),
        vec![s(&["12"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | summarize p = percentile(DurationMs, 50) by OperationName | order by OperationName asc"),
        vec![
            s(&["KeySign", "40"]),
            s(&["SecretGet", "5"]),
            s(&["SecretSet", "12"])
        ]
    );
    // Of a datetime, by a bin; of an expression; nulls are not ranked.
    assert_eq!(
        rows("AzureDiagnostics | summarize percentile(TimeGenerated, 100) by bin(TimeGenerated, 1h) | count"),
        vec![s(&["3"])]
    );
    assert_eq!(
        rows("AzureDiagnostics | extend d = iff(DurationMs > 10, DurationMs, toint(null)) | summarize percentile(d, 0), percentile(DurationMs * 2, 100)"),
        vec![s(&["12", "80"])]
    );
    for (q, want) in [
        (
            "AzureDiagnostics | summarize percentile(OperationName, 50)",
            "needs a numeric",
        ),
        (
            "AzureDiagnostics | summarize percentile(DurationMs, 101)",
            "from 0 to 100",
        ),
        (
            "AzureDiagnostics | summarize percentile(DurationMs, 50, 90)",
            "one percentage",
        ),
        (
            "AzureDiagnostics | summarize x = percentiles(DurationMs, 50, 90)",
            "cannot be named",
        ),
    ] {
        assert!(err(q).contains(want), "{q}: {}", err(q));
    }
}

#[test]
fn the_term_index_finds_what_has_finds() {
    // Each `has` on an indexed column (id_s, requestUri_s) is answered with
    // the term index (a leading `where`) and without it (after an
    // `extend`): the rows must be the same.
    for term in [
        "db-password",
        "DB-PASSWORD",
        "password",
        "pass",
        "secrets/db-password",
        "/abc",
        "v.vault",
        "https://v.vault/secrets/db-password/abc",
        "signer",
        "-",
        "",
        "db password",
        "héllo",
    ] {
        for col in ["id_s", "requestUri_s"] {
            for op in ["has", "has_cs"] {
                let lit = term.replace('\\', "\\\\").replace('"', "\\\"");
                let indexed = rows(&format!(
                    "AzureDiagnostics | where {col} {op} \"{lit}\" and DurationMs >= 0 | project TimeGenerated | order by TimeGenerated asc"
                ));
                let scanned = rows(&format!(
                    "AzureDiagnostics | extend k = 1 | where {col} {op} \"{lit}\" | project TimeGenerated | order by TimeGenerated asc"
                ));
                assert_eq!(indexed, scanned, "{col} {op} {term:?}");
            }
        }
    }
    assert_eq!(
        rows("AzureDiagnostics | where id_s has 'db-password' | count"),
        vec![s(&["3"])]
    );
    // In a union, the table without the column is not lost to the index.
    assert_eq!(
        rows("union AzureDiagnostics, AZKVAuditLogs | where id_s has 'signer' | count"),
        vec![s(&["1"])]
    );
    // The compiled query uses the index only for a leading `where`.
    let parsed = keyhaven_kql::parse("AzureDiagnostics | where id_s has 'db-password'").unwrap();
    let c = compile(&parsed, &scope(), Dialect::Sqlite).unwrap();
    assert!(c.sql.contains("log_terms MATCH"), "{}", c.sql);
    let parsed =
        keyhaven_kql::parse("AzureDiagnostics | where id_s !has 'x' or id_s has 'y'").unwrap();
    let c = compile(&parsed, &scope(), Dialect::Sqlite).unwrap();
    assert!(!c.sql.contains("log_terms"), "{}", c.sql);
}

#[test]
fn make_set_is_one_sorted_array_on_both_stores() {
    let (cols, r) = run("AzureDiagnostics | summarize make_set(OperationName)");
    assert_eq!(
        cols,
        vec![("set_OperationName".to_owned(), KqlType::Dynamic)]
    );
    assert_eq!(r, vec![s(&[r#"["KeySign","SecretGet","SecretSet"]"#])]);
    assert_eq!(
        rows("AzureDiagnostics | summarize ips = make_set(CallerIPAddress), d = make_set(DurationMs) by OperationName | order by OperationName asc"),
        vec![
            s(&["KeySign", r#"["10.0.0.2"]"#, "[40]"]),
            s(&["SecretGet", r#"["10.0.0.1","10.0.0.2"]"#, "[2,5,7]"]),
            s(&["SecretSet", r#"["10.0.0.3"]"#, "[12]"]),
        ]
    );
    // Nulls are left out; an empty group's set is [].
    assert_eq!(
        rows("AzureDiagnostics | extend d = iff(DurationMs > 100, DurationMs, toint(null)) | summarize make_set(d)"),
        vec![s(&["[]"])]
    );
    assert!(
        err("AzureDiagnostics | summarize make_set(TimeGenerated)").contains("string or a number")
    );
    // Reals: the same text on both stores.
    assert_eq!(
        rows("AzureDiagnostics | summarize make_set(httpStatusCode_d)"),
        vec![s(&["[200,403]"])]
    );
    assert!(
        err("AzureDiagnostics | where make_set(OperationName) == 1").contains("only in summarize")
    );
}

#[test]
fn azure_metrics_are_the_minutes_of_the_vaults_in_scope() {
    // T0 is minute 29,940,000: 4 requests (one a 500) then 2 the next.
    assert_eq!(rows("AzureMetrics | count"), vec![s(&["8"])]);
    assert_eq!(
        rows("AzureMetrics | where MetricName == 'ServiceApiHit' | project TimeGenerated, Total, Count, Average | order by TimeGenerated asc"),
        vec![
            s(&[&T0.to_string(), "4", "4", "1"]),
            s(&[&(T0 + 60_000_000).to_string(), "2", "2", "1"])
        ]
    );
    assert_eq!(
        rows("AzureMetrics | where TimeGenerated == datetime(2026-12-04T16:00:00Z) and MetricName in ('ServiceApiLatency', 'Availability') | project MetricName, Total, Average, UnitName | order by MetricName asc"),
        vec![
            s(&["Availability", "75", "75", "Percent"]),
            s(&["ServiceApiLatency", "40", "10", "MilliSeconds"])
        ]
    );
    assert_eq!(
        rows("AzureMetrics | summarize dcount(ResourceId) by Resource, ResourceGroup, SubscriptionId, TimeGrain, _ResourceId"),
        vec![s(&[
            "V",
            "RG",
            "S",
            "PT1M",
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v",
            "1"
        ])]
    );
    // The time span bounds it like the other tables; a union reads both.
    assert_eq!(
        rows("AzureMetrics | where TimeGenerated > datetime(2026-12-04T16:00:30Z) | count"),
        vec![s(&["4"])]
    );
    assert_eq!(
        rows(
            "union AzureMetrics, AzureDiagnostics | summarize count() by Type | order by Type asc"
        ),
        vec![s(&["AzureDiagnostics", "5"]), s(&["AzureMetrics", "8"])]
    );
}
