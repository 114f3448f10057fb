//! The conformance suite every `Store` implementation must pass. It is test
//! support compiled into the library so that each implementation's tests (and
//! any out-of-tree store) can call `run`. Each check uses its own vault id, so
//! one store instance serves the whole suite.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use keyhaven_core::directory::{ApplicationRecord, PrincipalRecord};
use keyhaven_core::events::{ChangeEvent, EventType, OutboxItem, Settle};
use keyhaven_core::logs::{LogQuery, LogQueryError, LogRecord, LogValue};
use keyhaven_core::object::{Attributes, DeletedInfo, ObjectKind, VersionRecord};
use keyhaven_core::store::{PolicyRecord, Storage, Store, StoreError};
use keyhaven_core::vault::VaultRecord;
use keyhaven_core::{ObjectName, Version};

/// Runs every check against `store`.
pub async fn run(store: Arc<dyn Storage>) {
    principals_round_trip_and_stay_unique(&*store).await;
    applications_round_trip(&*store).await;
    group_membership_is_kept_both_ways(&*store).await;
    resources_upsert_and_ignore_id_case(&*store).await;
    settings_are_written_once(&*store).await;
    vaults_round_trip(&*store).await;
    versions_are_kept_and_latest_wins(&*store).await;
    expiring_latest_versions_are_found_by_window(&*store).await;
    names_are_case_insensitive_and_keep_first_casing(&*store).await;
    updates_change_only_metadata(&*store).await;
    reads_by_version_see_every_change(&*store).await;
    listing_pages_by_name_and_version(&*store).await;
    soft_delete_recover_and_purge(&*store).await;
    deleted_name_blocks_new_versions(&*store).await;
    restore_keeps_versions_and_refuses_existing_names(&*store).await;
    expired_deleted_objects_are_purged(&*store).await;
    kinds_do_not_share_names(&*store).await;
    policies_live_with_the_name_and_die_with_purge(&*store).await;
    jobs_are_claimed_once_until_the_lease_ends(&*store).await;
    usage_is_summed_across_nodes_per_window(&*store).await;
    vaults_are_replaced_listed_and_purged_with_everything_in_them(&*store).await;
    audit_records_are_kept_and_queried(&*store).await;
    metric_minutes_add_up_across_flushes(&*store).await;
    logs_are_kept_per_workspace_and_queried(&*store).await;
    policy_states_are_replaced_by_scan_and_listed_by_scope(&*store).await;
    authorization_writes_move_the_generation_themselves(&*store).await;
    multi_object_changes_are_all_or_nothing(&*store).await;
    events_are_recorded_with_their_change(&*store).await;
    outbox_entries_are_claimed_once_and_settled_by_their_claim(&*store).await;
    concurrent_sets_produce_distinct_versions(store).await;
}

fn vid() -> String {
    uuid_like()
}

fn uuid_like() -> String {
    Version::random().to_string()
}

fn name(s: &str) -> ObjectName {
    s.parse().unwrap()
}

pub(crate) fn rec(kind: ObjectKind, n: &str, created: i64, payload: &[u8]) -> VersionRecord {
    VersionRecord {
        kind,
        name: name(n),
        version: Version::random(),
        attributes: Attributes {
            enabled: true,
            nbf: None,
            exp: None,
            created,
            updated: created,
        },
        tags: BTreeMap::from([("env".to_owned(), "test".to_owned())]),
        content_type: Some("text/plain".into()),
        managed: false,
        payload: payload.to_vec(),
        meta: "{}".into(),
    }
}

async fn settings_are_written_once(s: &dyn Store) {
    let key = format!("k-{}", vid());
    assert_eq!(s.get_setting(&key).await.unwrap(), None);
    assert!(s.put_setting_if_absent(&key, b"one").await.unwrap());
    assert!(!s.put_setting_if_absent(&key, b"two").await.unwrap());
    assert_eq!(
        s.get_setting(&key).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
}

async fn vaults_round_trip(s: &dyn Store) {
    let id = vid();
    let vname = format!("v{}", &id[..20]);
    let v = VaultRecord {
        id: id.clone(),
        name: vname.parse().unwrap(),
        tenant_id: "t".into(),
        subscription_id: "sub".into(),
        resource_group: "rg".into(),
        sku: "standard".into(),
        retention_days: 7,
        purge_protection: true,
        wrapped_key: vec![1, 2, 3],
        created: 5,
        properties: Default::default(),
        rev: 0,
    };
    s.create_vault(&v).await.unwrap();
    assert!(matches!(
        s.create_vault(&v).await,
        Err(StoreError::NameExists { .. })
    ));
    let got = s.get_vault(&v.name).await.unwrap().unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.retention_days, 7);
    assert!(got.purge_protection);
    assert_eq!(got.wrapped_key, vec![1, 2, 3]);
    assert!(s
        .get_vault(&"nosuchvault".parse().unwrap())
        .await
        .unwrap()
        .is_none());
}

fn vault_record(id: &str) -> VaultRecord {
    VaultRecord {
        id: id.to_owned(),
        name: format!("v{}", &id[..20]).parse().unwrap(),
        tenant_id: "t".into(),
        subscription_id: "sub".into(),
        resource_group: "rg".into(),
        sku: "standard".into(),
        retention_days: 7,
        purge_protection: false,
        wrapped_key: vec![1],
        created: 5,
        properties: Default::default(),
        rev: 0,
    }
}

/// Every live policy of `kind` in vault `vault_name`, walking all pages.
async fn policies_in(s: &dyn Store, kind: ObjectKind, vault_name: &str) -> Vec<(String, String)> {
    let (mut out, mut cursor) = (Vec::new(), None::<String>);
    for _ in 0..10_000 {
        let page = s.list_policies(kind, cursor.as_deref(), 2).await.unwrap();
        out.extend(
            page.items
                .into_iter()
                .filter(|p| p.vault_name == vault_name)
                .map(|p| (p.name.to_string(), p.policy.body)),
        );
        match page.next {
            Some(n) => cursor = Some(n),
            None => return out,
        }
    }
    panic!("policy listing did not end");
}

async fn policies_live_with_the_name_and_die_with_purge(s: &dyn Store) {
    let v = vault_record(&vid());
    s.create_vault(&v).await.unwrap();
    let vn = v.name.to_string();
    let k = ObjectKind::Key;
    for n in ["Pa", "pb", "pc"] {
        s.put_version(&v.id, &rec(k, n, 1, b"x")).await.unwrap();
    }
    assert!(s.get_policy(&v.id, k, &name("pa")).await.unwrap().is_none());
    let first = PolicyRecord {
        body: "{\"a\":1}".into(),
        created: 10,
        updated: 10,
    };
    s.put_policy(&v.id, k, &name("pa"), &first).await.unwrap();
    let second = PolicyRecord {
        body: "{\"a\":2}".into(),
        created: 20,
        updated: 20,
    };
    s.put_policy(&v.id, k, &name("PA"), &second).await.unwrap();
    let got = s.get_policy(&v.id, k, &name("pA")).await.unwrap().unwrap();
    assert_eq!(
        (got.body.as_str(), got.created, got.updated),
        ("{\"a\":2}", 10, 20)
    );
    assert!(s
        .get_policy(&v.id, ObjectKind::Secret, &name("pa"))
        .await
        .unwrap()
        .is_none());
    for n in ["pb", "pc"] {
        s.put_policy(&v.id, k, &name(n), &first).await.unwrap();
    }
    let all = policies_in(s, k, &vn).await;
    let names: Vec<_> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Pa", "pb", "pc"]);
    assert!(policies_in(s, ObjectKind::Secret, &vn).await.is_empty());

    // A deleted object's policy is kept (for recovery) but not scheduled.
    let info = DeletedInfo {
        deleted_date: 30,
        scheduled_purge_date: 40,
    };
    s.delete_object(&v.id, k, &name("pb"), info).await.unwrap();
    assert!(s.get_policy(&v.id, k, &name("pb")).await.unwrap().is_some());
    let names: Vec<_> = policies_in(s, k, &vn)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["Pa", "pc"]);
    s.recover_object(&v.id, k, &name("pb"), 0).await.unwrap();
    assert_eq!(policies_in(s, k, &vn).await.len(), 3);

    // Purge, explicit or after retention, takes the policy with it.
    s.delete_object(&v.id, k, &name("pb"), info).await.unwrap();
    assert!(s.purge_object(&v.id, k, &name("pb")).await.unwrap());
    assert!(s.get_policy(&v.id, k, &name("pb")).await.unwrap().is_none());
    s.delete_object(&v.id, k, &name("pc"), info).await.unwrap();
    s.purge_expired(40).await.unwrap();
    assert!(s.get_policy(&v.id, k, &name("pc")).await.unwrap().is_none());
    s.put_version(&v.id, &rec(k, "pc", 50, b"y")).await.unwrap();
    assert!(s.get_policy(&v.id, k, &name("pc")).await.unwrap().is_none());
}

async fn vaults_are_replaced_listed_and_purged_with_everything_in_them(s: &dyn Store) {
    let mut v = vault_record(&vid());
    s.create_vault(&v).await.unwrap();
    // Master key rotation swaps the wrapped key only if nobody changed it.
    let original = v.wrapped_key.clone();
    assert!(s
        .replace_wrapped_key(&v.id, &original, b"rewrapped")
        .await
        .unwrap());
    assert!(!s
        .replace_wrapped_key(&v.id, &original, b"stale")
        .await
        .unwrap());
    assert!(!s
        .replace_wrapped_key("no-such-vault", b"rewrapped", b"x")
        .await
        .unwrap());
    let got = s.get_vault(&v.name).await.unwrap().unwrap();
    assert_eq!(got.wrapped_key, b"rewrapped");
    v.sku = "premium".into();
    v.retention_days = 30;
    v.purge_protection = true;
    v.wrapped_key = b"stale copy".to_vec();
    v.properties.rbac_authorization = true;
    v.properties.tags.insert("a".into(), "b".into());
    let read = s.get_vault(&v.name).await.unwrap().unwrap();
    v.rev = read.rev;
    assert!(s.replace_vault(&v).await.unwrap());
    // Issue 29, item 5: a write from the same (now stale) read is refused.
    let mut stale = v.clone();
    stale.properties.tags.clear();
    assert!(!s.replace_vault(&stale).await.unwrap());
    let got = s.get_vault(&v.name).await.unwrap().unwrap();
    assert_eq!(got.rev, read.rev + 1);
    assert_eq!(
        (
            got.sku.as_str(),
            got.retention_days,
            got.purge_protection,
            got.wrapped_key.as_slice()
        ),
        ("premium", 30, true, b"rewrapped".as_slice()),
        "replace_vault leaves the wrapped key to replace_wrapped_key"
    );
    assert_eq!(got.properties, v.properties);
    assert!(s.list_vaults().await.unwrap().iter().any(|x| x.id == v.id));

    let k = ObjectKind::Key;
    s.put_version(&v.id, &rec(k, "inside", 1, b"x"))
        .await
        .unwrap();
    s.put_version(&v.id, &rec(ObjectKind::Secret, "gone", 1, b"y"))
        .await
        .unwrap();
    let info = DeletedInfo {
        deleted_date: 1,
        scheduled_purge_date: 2,
    };
    s.delete_object(&v.id, ObjectKind::Secret, &name("gone"), info)
        .await
        .unwrap();
    let p = PolicyRecord {
        body: "{}".into(),
        created: 1,
        updated: 1,
    };
    s.put_policy(&v.id, k, &name("inside"), &p).await.unwrap();
    // A purge from a stale read (the vault was recovered or changed since)
    // removes nothing.
    assert!(!s.purge_vault(&v.id, read.rev).await.unwrap());
    assert!(s.get_vault(&v.name).await.unwrap().is_some());
    assert!(s
        .get_version(&v.id, k, &name("inside"), None)
        .await
        .unwrap()
        .is_some());
    assert!(s.purge_vault(&v.id, got.rev).await.unwrap());
    assert!(s.get_vault(&v.name).await.unwrap().is_none());
    assert!(!s.list_vaults().await.unwrap().iter().any(|x| x.id == v.id));
    assert!(s
        .get_version(&v.id, k, &name("inside"), None)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_deleted(&v.id, ObjectKind::Secret, &name("gone"))
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_policy(&v.id, k, &name("inside"))
        .await
        .unwrap()
        .is_none());
    assert!(s
        .all_versions(&v.id, k, &name("inside"))
        .await
        .unwrap()
        .is_empty());
    assert!(!s.purge_vault(&v.id, got.rev).await.unwrap());
}

async fn audit_records_are_kept_and_queried(s: &dyn Storage) {
    use keyhaven_core::{AuditQuery, AuditRow};
    let vault = format!("/subscriptions/s/vaults/{}", vid());
    for (t, op, caller, result) in [
        (10, "SecretGet", "10.0.0.1", "Success"),
        (20, "SecretSet", "10.0.0.2", "Success"),
        (30, "SecretGet", "10.0.0.2", "Failure"),
    ] {
        s.append_audits(&[AuditRow {
            vault: vault.clone(),
            time: t,
            operation: op.into(),
            caller: caller.into(),
            result: result.into(),
            record: format!("{{\"t\":{t}}}"),
        }])
        .await
        .unwrap();
    }
    let q = |f: AuditQuery| async move { s.query_audit(&f).await.unwrap() };
    let all = AuditQuery {
        vault: vault.clone(),
        from: 0,
        to: 100,
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        q(all.clone()).await,
        ["{\"t\":30}", "{\"t\":20}", "{\"t\":10}"]
    );
    assert_eq!(
        q(AuditQuery {
            operation: "SecretGet".into(),
            ..all.clone()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        q(AuditQuery {
            caller: "10.0.0.2".into(),
            result: "Success".into(),
            ..all.clone()
        })
        .await,
        ["{\"t\":20}"]
    );
    assert_eq!(
        q(AuditQuery {
            from: 15,
            to: 25,
            ..all.clone()
        })
        .await,
        ["{\"t\":20}"]
    );
    assert_eq!(
        q(AuditQuery {
            limit: 1,
            ..all.clone()
        })
        .await,
        ["{\"t\":30}"]
    );
    assert!(q(AuditQuery {
        vault: "other".into(),
        ..all
    })
    .await
    .is_empty());
}

fn log_record(ws: &str, table: &str, vault: &str, t: i64, op: &str, status: i64) -> LogRecord {
    LogRecord {
        workspace: ws.to_owned(),
        log_table: table.to_owned(),
        time_us: t,
        category: "AuditEvent".into(),
        resource_id: format!(
            "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{vault}"
        ),
        resource: vault.to_owned(),
        resource_group: "RG".into(),
        subscription_id: "S".into(),
        resource_type: "VAULTS".into(),
        operation: op.to_owned(),
        operation_version: "7.5".into(),
        result_type: if status < 400 { "Success" } else { "Failure" }.into(),
        result_signature: "OK".into(),
        duration_ms: 7,
        caller_ip: "10.0.0.1".into(),
        http_status: status,
        identity: "{}".into(),
        properties: "{}".into(),
        ..LogRecord::default()
    }
}

async fn logs_are_kept_per_workspace_and_queried(s: &dyn Storage) {
    let (a, b) = (uuid_like(), uuid_like());
    let vault = format!("V{}", &uuid_like()[..8]).to_ascii_uppercase();
    let t0: i64 = 1_796_400_000_000_000;
    s.append_logs(&[
        log_record(&a, "AzureDiagnostics", &vault, t0, "SecretGet", 200),
        log_record(&a, "AzureDiagnostics", &vault, t0 + 1, "SecretSet", 403),
        log_record(&a, "AZKVAuditLogs", &vault, t0 + 2, "KeySign", 200),
        log_record(&b, "AzureDiagnostics", &vault, t0 + 3, "SecretGet", 200),
    ])
    .await
    .unwrap();
    let q = |text: &str, ws: &str| LogQuery {
        text: text.to_owned(),
        workspaces: vec![(ws.to_owned(), i64::MIN)],
        from_us: t0 - 1,
        to_us: t0 + 10,
        now_us: t0 + 10,
        resource: None,
        metric_vaults: Vec::new(),
        timeout_ms: 30_000,
    };
    let t = s
        .query_logs(&q("AzureDiagnostics | count", &a))
        .await
        .unwrap();
    assert_eq!(t.columns, vec![("Count".to_owned(), "long")]);
    assert_eq!(
        t.rows,
        vec![vec![LogValue::Long(2)]],
        "one workspace, one table"
    );
    let t = s
        .query_logs(&q(
            "AzureDiagnostics | order by TimeGenerated asc | project TimeGenerated, OperationName, httpStatusCode_d, DurationMs, Failed = ResultType == 'Failure'",
            &a,
        ))
        .await
        .unwrap();
    assert_eq!(
        t.columns.iter().map(|c| c.1).collect::<Vec<_>>(),
        vec!["datetime", "string", "real", "long", "bool"]
    );
    assert_eq!(
        t.rows,
        vec![
            vec![
                LogValue::Long(t0),
                LogValue::Text("SecretGet".into()),
                LogValue::Real(200.0),
                LogValue::Long(7),
                LogValue::Bool(false)
            ],
            vec![
                LogValue::Long(t0 + 1),
                LogValue::Text("SecretSet".into()),
                LogValue::Real(403.0),
                LogValue::Long(7),
                LogValue::Bool(true)
            ],
        ]
    );
    // A resource's records in every workspace (resource context).
    let mut rq = q("union AzureDiagnostics, AZKVAuditLogs | count", &a);
    rq.workspaces.push((b.clone(), i64::MIN));
    rq.resource = Some(format!(
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{}",
        vault.to_ascii_lowercase()
    ));
    let t = s.query_logs(&rq).await.unwrap();
    assert_eq!(t.rows, vec![vec![LogValue::Long(4)]]);
    // Each workspace from its own earliest time (retention), and only the
    // workspaces named.
    rq.workspaces = vec![(a.clone(), t0 + 1), (b.clone(), i64::MIN)];
    let t = s.query_logs(&rq).await.unwrap();
    assert_eq!(t.rows, vec![vec![LogValue::Long(3)]]);
    rq.workspaces = vec![(b.clone(), i64::MIN)];
    let t = s.query_logs(&rq).await.unwrap();
    assert_eq!(t.rows, vec![vec![LogValue::Long(1)]]);
    // Which workspaces hold records (the sweep of deleted workspaces').
    let held = s.log_workspaces().await.unwrap();
    assert!(held.contains(&a) && held.contains(&b), "{held:?}");
    // The time span bounds every table.
    let mut narrow = q("union AzureDiagnostics, AZKVAuditLogs | count", &a);
    narrow.to_us = t0 + 1;
    let t = s.query_logs(&narrow).await.unwrap();
    assert_eq!(t.rows, vec![vec![LogValue::Long(2)]]);
    match s.query_logs(&q("AzureDiagnostics\n| where", &a)).await {
        Err(LogQueryError::Syntax { line, .. }) => assert_eq!(line, 2),
        other => panic!("a syntax error, not {other:?}"),
    }
    match s
        .query_logs(&q("AzureDiagnostics | where Nope == 1", &a))
        .await
    {
        Err(LogQueryError::Semantic(m)) => assert!(m.contains("'Nope'"), "{m}"),
        other => panic!("a semantic error, not {other:?}"),
    }
    // Forgetting is per workspace and by time, in batches.
    assert_eq!(s.forget_logs(&a, t0 + 1).await.unwrap(), 1);
    let t = s
        .query_logs(&q("union AzureDiagnostics, AZKVAuditLogs | count", &a))
        .await
        .unwrap();
    assert_eq!(t.rows, vec![vec![LogValue::Long(2)]]);
    assert_eq!(s.forget_logs(&a, i64::MAX).await.unwrap(), 2);
    assert_eq!(s.forget_logs(&b, i64::MAX).await.unwrap(), 1);
}

async fn metric_minutes_add_up_across_flushes(s: &dyn Storage) {
    use keyhaven_core::MetricRow;
    let vault = format!("/subscriptions/s/vaults/{}", vid());
    let row = |vault: &str, minute, activity: &str, status, count, latency_ms| MetricRow {
        vault: vault.into(),
        minute,
        activity: activity.into(),
        status,
        count,
        latency_ms,
    };
    // Two nodes' flushes of the same minute add up; another vault is apart.
    s.add_metrics(&[
        row(&vault, 100, "SecretGet", 200, 3, 12),
        row(&vault, 100, "SecretSet", 200, 1, 5),
    ])
    .await
    .unwrap();
    s.add_metrics(&[
        row(&vault, 100, "SecretGet", 200, 2, 8),
        row(&vault, 101, "SecretGet", 403, 1, 1),
        row(&vault, 104, "SecretGet", 200, 1, 2),
    ])
    .await
    .unwrap();
    s.add_metrics(&[row(&format!("{vault}-other"), 100, "SecretGet", 200, 9, 9)])
        .await
        .unwrap();
    assert_eq!(
        s.query_metrics(&vault, 0, 1000, 1).await.unwrap(),
        vec![
            row("", 100, "SecretGet", 200, 5, 20),
            row("", 100, "SecretSet", 200, 1, 5),
            row("", 101, "SecretGet", 403, 1, 1),
            row("", 104, "SecretGet", 200, 1, 2),
        ]
    );
    // Buckets of 5 minutes counted from `from`: 100..=104 is one.
    assert_eq!(
        s.query_metrics(&vault, 100, 109, 5).await.unwrap(),
        vec![
            row("", 100, "SecretGet", 200, 6, 22),
            row("", 100, "SecretGet", 403, 1, 1),
            row("", 100, "SecretSet", 200, 1, 5),
        ]
    );
    assert_eq!(s.query_metrics(&vault, 101, 101, 1).await.unwrap().len(), 1);
    // Minutes before the horizon are forgotten.
    s.forget_metrics(101).await.unwrap();
    assert_eq!(
        s.query_metrics(&vault, 0, 1000, 1).await.unwrap(),
        vec![
            row("", 101, "SecretGet", 403, 1, 1),
            row("", 104, "SecretGet", 200, 1, 2)
        ]
    );
}

async fn usage_is_summed_across_nodes_per_window(s: &dyn Store) {
    let v = vid();
    let row = |class: &str, n: i64| (v.clone(), class.to_owned(), n);
    let mine = |out: Vec<(String, String, i64)>| {
        let mut o: Vec<(String, i64)> = out
            .into_iter()
            .filter(|(vault, _, _)| *vault == v)
            .map(|(_, c, n)| (c, n))
            .collect();
        o.sort();
        o
    };
    let w = 1_000_000_000;
    assert_eq!(
        mine(s.share_usage("a", w, &[row("secrets", 5)]).await.unwrap()),
        vec![("secrets".to_owned(), 5)]
    );
    // Another node's counts add up; a node's report replaces its own count.
    assert_eq!(
        mine(
            s.share_usage("b", w, &[row("secrets", 7), row("keys", 1)])
                .await
                .unwrap()
        ),
        vec![("keys".to_owned(), 1), ("secrets".to_owned(), 12)]
    );
    assert_eq!(
        mine(s.share_usage("a", w, &[row("secrets", 9)]).await.unwrap()),
        vec![("keys".to_owned(), 1), ("secrets".to_owned(), 16)]
    );
    // Reading without reporting; a new window starts from nothing.
    assert_eq!(mine(s.share_usage("c", w, &[]).await.unwrap()).len(), 2);
    assert!(mine(s.share_usage("a", w + 1, &[]).await.unwrap()).is_empty());
    // Windows before the previous one are forgotten.
    s.share_usage("a", w + 5, &[]).await.unwrap();
    assert!(mine(s.share_usage("a", w, &[]).await.unwrap()).is_empty());
}

async fn jobs_are_claimed_once_until_the_lease_ends(s: &dyn Store) {
    let job = format!("conformance/{}", vid());
    assert!(s.claim_job(&job, 100, 160).await.unwrap());
    assert!(
        !s.claim_job(&job, 110, 170).await.unwrap(),
        "held by the first claim"
    );
    assert!(!s.claim_job(&job, 159, 219).await.unwrap());
    // The holder vanished: once its lease ends another node may take over.
    assert!(s.claim_job(&job, 160, 220).await.unwrap());
    let pending = format!("conformance/{}", vid());
    assert!(s.claim_job(&pending, 100, 160).await.unwrap());
    assert!(s
        .finished_jobs(std::slice::from_ref(&job))
        .await
        .unwrap()
        .is_empty());
    s.finish_job(&job, 170, 0, &[]).await.unwrap();
    assert_eq!(
        s.finished_jobs(&[pending.clone(), job.clone(), "absent".into()])
            .await
            .unwrap(),
        std::slice::from_ref(&job),
        "only finished ones"
    );
    assert!(s.finished_jobs(&[]).await.unwrap().is_empty());
    assert!(
        !s.claim_job(&job, 10_000, 10_060).await.unwrap(),
        "finished jobs never rerun"
    );

    // Finished jobs are forgotten after a while; unfinished ones are kept.
    let other = format!("conformance/{}", vid());
    assert!(s.claim_job(&other, 100, 160).await.unwrap());
    s.finish_job(&other, 170, 171, &[]).await.unwrap();
    assert!(
        s.claim_job(&job, 200, 260).await.unwrap(),
        "forgotten, so claimable again"
    );

    // Many concurrent claimants: exactly one wins.
    let race = format!("conformance/{}", vid());
    let (a, b, c, d) = tokio::join!(
        s.claim_job(&race, 300, 360),
        s.claim_job(&race, 300, 360),
        s.claim_job(&race, 300, 360),
        s.claim_job(&race, 300, 360)
    );
    let wins = [a, b, c, d]
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);
}

async fn versions_are_kept_and_latest_wins(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Secret;
    let a = rec(k, "alpha", 1, b"one");
    let b = rec(k, "alpha", 2, b"two");
    s.put_version(&v, &a).await.unwrap();
    s.put_version(&v, &b).await.unwrap();
    let latest = s
        .get_version(&v, k, &name("alpha"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, b.version);
    assert_eq!(latest.payload, b"two");
    let old = s
        .get_version(&v, k, &name("alpha"), Some(&a.version))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.payload, b"one");
    assert_eq!(old.tags.get("env").map(String::as_str), Some("test"));
    assert_eq!(old.content_type.as_deref(), Some("text/plain"));
    assert!(s
        .get_version(&v, k, &name("alpha"), Some(&Version::random()))
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_version(&v, k, &name("beta"), None)
        .await
        .unwrap()
        .is_none());
    // Another vault sees nothing.
    assert!(s
        .get_version(&vid(), k, &name("alpha"), None)
        .await
        .unwrap()
        .is_none());
}

/// The expiry scan's query: only the latest version of a live object
/// counts, in its window, for every kind, paged in write order.
async fn expiring_latest_versions_are_found_by_window(s: &dyn Store) {
    let v = vid();
    let with_exp = |kind, n: &str, created, exp| {
        let mut r = rec(kind, n, created, b"x");
        r.attributes.exp = exp;
        r
    };
    // `old` expires at 100 but was superseded by a version without expiry.
    s.put_version(&v, &with_exp(ObjectKind::Secret, "old", 1, Some(100)))
        .await
        .unwrap();
    s.put_version(&v, &with_exp(ObjectKind::Secret, "old", 2, None))
        .await
        .unwrap();
    let soon = with_exp(ObjectKind::Secret, "soon", 3, Some(150));
    let key = with_exp(ObjectKind::Key, "key", 4, Some(120));
    let later = with_exp(ObjectKind::Secret, "later", 5, Some(500));
    let gone = with_exp(ObjectKind::Secret, "gone", 6, Some(130));
    for r in [&soon, &key, &later, &gone] {
        s.put_version(&v, r).await.unwrap();
    }
    s.delete_object(
        &v,
        ObjectKind::Secret,
        &name("gone"),
        DeletedInfo {
            deleted_date: 7,
            scheduled_purge_date: 1000,
        },
    )
    .await
    .unwrap();
    // Another vault's versions are not this vault's.
    s.put_version(&vid(), &with_exp(ObjectKind::Secret, "soon", 3, Some(150)))
        .await
        .unwrap();
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s
            .expiring(&v, 100, 200, cursor.as_deref(), 1)
            .await
            .unwrap();
        found.extend(page.items.iter().map(|r| (r.kind, r.name.to_string())));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(
        found,
        vec![
            (ObjectKind::Secret, "soon".to_owned()),
            (ObjectKind::Key, "key".to_owned())
        ]
    );
    assert!(s
        .expiring(&v, 151, 500, None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
}

async fn names_are_case_insensitive_and_keep_first_casing(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Secret;
    s.put_version(&v, &rec(k, "MixedCase", 1, b"1"))
        .await
        .unwrap();
    s.put_version(&v, &rec(k, "mixedcase", 2, b"2"))
        .await
        .unwrap();
    let got = s
        .get_version(&v, k, &name("MIXEDCASE"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.name.as_str(), "MixedCase");
    assert_eq!(got.payload, b"2");
    let page = s
        .list_versions(&v, k, &name("mixedCASE"), None, 25)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
}

async fn updates_change_only_metadata(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Secret;
    let mut r = rec(k, "upd", 1, b"value");
    s.put_version(&v, &r).await.unwrap();
    let read = r.clone();
    r.attributes.enabled = false;
    r.attributes.exp = Some(99);
    r.attributes.updated = 7;
    r.tags = BTreeMap::from([("a".into(), "b".into())]);
    r.content_type = None;
    r.payload = b"must not be written".to_vec();
    r.meta = r#"{"key_ops":["sign"]}"#.into();
    s.update_version(&v, &read, &r).await.unwrap();
    let got = s
        .get_version(&v, k, &name("upd"), None)
        .await
        .unwrap()
        .unwrap();
    assert!(!got.attributes.enabled);
    assert_eq!(got.attributes.exp, Some(99));
    assert_eq!(got.attributes.updated, 7);
    assert_eq!(got.attributes.created, 1);
    assert_eq!(got.tags.get("a").map(String::as_str), Some("b"));
    assert_eq!(got.content_type, None);
    assert_eq!(got.payload, b"value");
    assert_eq!(got.meta, r#"{"key_ops":["sign"]}"#);
    let missing = rec(k, "nope", 1, b"");
    assert!(matches!(
        s.update_version(&v, &missing, &missing).await,
        Err(StoreError::Missing { .. })
    ));
    // Issue 29, item 6: a write from a stale read is refused (and changes
    // nothing), whichever field moved since the read.
    let mut stale = read.clone();
    stale.tags = BTreeMap::from([("stale".into(), "write".into())]);
    assert!(matches!(
        s.update_version(&v, &read, &stale).await,
        Err(StoreError::Changed { .. })
    ));
    let now = s
        .get_version(&v, k, &name("upd"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.tags, got.tags);
    for moved in [
        |r: &mut VersionRecord| r.attributes.enabled = !r.attributes.enabled,
        |r: &mut VersionRecord| r.attributes.nbf = Some(5),
        |r: &mut VersionRecord| r.attributes.exp = None,
        |r: &mut VersionRecord| r.attributes.updated += 1,
        |r: &mut VersionRecord| r.content_type = Some("x".into()),
        |r: &mut VersionRecord| r.meta = "{}".into(),
    ] {
        let before = s
            .get_version(&v, k, &name("upd"), None)
            .await
            .unwrap()
            .unwrap();
        let mut after = before.clone();
        moved(&mut after);
        s.update_version(&v, &before, &after).await.unwrap();
        assert!(matches!(
            s.update_version(&v, &before, &before).await,
            Err(StoreError::Changed { .. })
        ));
    }
    // A PATCH racing a DELETE finds the object gone, not a version to change.
    let last = s
        .get_version(&v, k, &name("upd"), None)
        .await
        .unwrap()
        .unwrap();
    let info = DeletedInfo {
        deleted_date: 8,
        scheduled_purge_date: 9,
    };
    s.delete_object(&v, k, &name("upd"), info).await.unwrap();
    let mut late = last.clone();
    late.attributes.enabled = !late.attributes.enabled;
    assert!(matches!(
        s.update_version(&v, &last, &late).await,
        Err(StoreError::Missing { .. })
    ));
}

/// Reads by version id (which implementations may cache) never return what a
/// later update, delete or purge changed.
async fn reads_by_version_see_every_change(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Key;
    let n = name("cached");
    let mut first = rec(k, "cached", 1, b"one");
    let second = rec(k, "cached", 2, b"two");
    s.put_version(&v, &first).await.unwrap();
    s.put_version(&v, &second).await.unwrap();
    let (vr, nr) = (&v, &n);
    let get = |ver: Version| async move { s.get_version(vr, k, nr, Some(&ver)).await.unwrap() };
    for _ in 0..2 {
        assert!(get(first.version.clone()).await.unwrap().attributes.enabled);
        assert_eq!(get(second.version.clone()).await.unwrap().payload, b"two");
    }
    let read = first.clone();
    first.attributes.enabled = false;
    s.update_version(&v, &read, &first).await.unwrap();
    assert!(!get(first.version.clone()).await.unwrap().attributes.enabled);
    let info = DeletedInfo {
        deleted_date: 3,
        scheduled_purge_date: 4,
    };
    s.delete_object(&v, k, &name("cached"), info).await.unwrap();
    assert!(get(first.version.clone()).await.is_none());
    assert!(get(second.version.clone()).await.is_none());
    s.recover_object(&v, k, &name("cached"), 0).await.unwrap();
    assert_eq!(get(second.version.clone()).await.unwrap().payload, b"two");
    s.delete_object(&v, k, &name("cached"), info).await.unwrap();
    s.purge_object(&v, k, &name("cached")).await.unwrap();
    assert!(get(second.version.clone()).await.is_none());
    assert!(get(Version::random()).await.is_none());
}

async fn listing_pages_by_name_and_version(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Secret;
    for n in ["e", "a", "d", "b", "c"] {
        s.put_version(&v, &rec(k, n, 1, b"x")).await.unwrap();
    }
    s.put_version(&v, &rec(k, "a", 2, b"newest")).await.unwrap();
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s.list_latest(&v, k, cursor.as_deref(), 2).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|r| r.name.to_string()));
        if let Some(a) = page.items.iter().find(|r| r.name.as_str() == "a") {
            assert_eq!(a.payload, b"newest");
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);

    for i in 0..4 {
        s.put_version(&v, &rec(k, "multi", i, b"x")).await.unwrap();
    }
    let p1 = s
        .list_versions(&v, k, &name("multi"), None, 3)
        .await
        .unwrap();
    assert_eq!(p1.items.len(), 3);
    let p2 = s
        .list_versions(&v, k, &name("multi"), p1.next.as_deref(), 3)
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert!(p2.next.is_none());
    assert_eq!(p1.items[0].attributes.created, 0);
    assert_eq!(p2.items[0].attributes.created, 3);
    let all = s.all_versions(&v, k, &name("multi")).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(s
        .list_versions(&v, k, &name("unknown"), None, 3)
        .await
        .unwrap()
        .items
        .is_empty());
}

async fn soft_delete_recover_and_purge(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Secret;
    let info = DeletedInfo {
        deleted_date: 10,
        scheduled_purge_date: 100,
    };
    s.put_version(&v, &rec(k, "gone", 1, b"1")).await.unwrap();
    s.put_version(&v, &rec(k, "gone", 2, b"2")).await.unwrap();
    assert!(s
        .delete_object(&v, k, &name("never"), info)
        .await
        .unwrap()
        .is_none());
    let deleted = s
        .delete_object(&v, k, &name("gone"), info)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.payload, b"2");
    assert!(s
        .delete_object(&v, k, &name("gone"), info)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_version(&v, k, &name("gone"), None)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .list_latest(&v, k, None, 25)
        .await
        .unwrap()
        .items
        .is_empty());
    let (r, i) = s.get_deleted(&v, k, &name("gone")).await.unwrap().unwrap();
    assert_eq!(r.name.as_str(), "gone");
    assert_eq!(i, info);
    assert_eq!(
        s.list_deleted(&v, k, None, 25).await.unwrap().items.len(),
        1
    );

    assert!(
        !s.recover_object(&v, k, &name("gone"), info.scheduled_purge_date)
            .await
            .unwrap(),
        "past its purge date an object is the purge's, not recoverable"
    );
    assert!(s
        .recover_object(&v, k, &name("gone"), info.scheduled_purge_date - 1)
        .await
        .unwrap());
    assert!(!s.recover_object(&v, k, &name("gone"), 0).await.unwrap());
    assert_eq!(s.all_versions(&v, k, &name("gone")).await.unwrap().len(), 2);
    assert!(s.get_deleted(&v, k, &name("gone")).await.unwrap().is_none());

    assert!(
        !s.purge_object(&v, k, &name("gone")).await.unwrap(),
        "live objects are not purged"
    );
    assert!(
        s.deleted_versions(&v, k, &name("gone"))
            .await
            .unwrap()
            .is_empty(),
        "a live object has no deleted versions"
    );
    s.delete_object(&v, k, &name("gone"), info).await.unwrap();
    let doomed = s.deleted_versions(&v, k, &name("gone")).await.unwrap();
    assert_eq!(doomed.len(), 2, "every version of the deleted object");
    assert!(s
        .all_versions(&v, k, &name("gone"))
        .await
        .unwrap()
        .is_empty());
    assert!(s.purge_object(&v, k, &name("gone")).await.unwrap());
    assert!(s
        .deleted_versions(&v, k, &name("gone"))
        .await
        .unwrap()
        .is_empty());
    assert!(s.get_deleted(&v, k, &name("gone")).await.unwrap().is_none());
    // The name is free again and starts with no old versions.
    s.put_version(&v, &rec(k, "gone", 3, b"3")).await.unwrap();
    assert_eq!(s.all_versions(&v, k, &name("gone")).await.unwrap().len(), 1);
}

async fn deleted_name_blocks_new_versions(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Secret;
    s.put_version(&v, &rec(k, "held", 1, b"1")).await.unwrap();
    let info = DeletedInfo {
        deleted_date: 1,
        scheduled_purge_date: 2,
    };
    s.delete_object(&v, k, &name("held"), info).await.unwrap();
    let r = s.put_version(&v, &rec(k, "HELD", 2, b"2")).await;
    assert!(matches!(r, Err(StoreError::NameDeleted { .. })), "{r:?}");
    assert_eq!(
        s.get_deleted(&v, k, &name("held"))
            .await
            .unwrap()
            .unwrap()
            .0
            .payload,
        b"1"
    );
}

async fn restore_keeps_versions_and_refuses_existing_names(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Secret;
    let versions = vec![rec(k, "back", 1, b"1"), rec(k, "back", 2, b"2")];
    s.restore_object(&v, &versions).await.unwrap();
    let all = s.all_versions(&v, k, &name("back")).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].version, versions[0].version);
    let latest = s
        .get_version(&v, k, &name("back"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, versions[1].version);
    let again = s.restore_object(&v, &versions).await;
    assert!(matches!(again, Err(StoreError::NameExists { .. })));
    let info = DeletedInfo {
        deleted_date: 1,
        scheduled_purge_date: 2,
    };
    s.delete_object(&v, k, &name("back"), info).await.unwrap();
    let deleted = s.restore_object(&v, &versions).await;
    assert!(matches!(deleted, Err(StoreError::NameExists { .. })));
}

async fn expired_deleted_objects_are_purged(s: &dyn Store) {
    let v = vid();
    let k = ObjectKind::Secret;
    for (n, purge_at) in [("old", 50), ("young", 500)] {
        s.put_version(&v, &rec(k, n, 1, b"1")).await.unwrap();
        let info = DeletedInfo {
            deleted_date: 1,
            scheduled_purge_date: purge_at,
        };
        s.delete_object(&v, k, &name(n), info).await.unwrap();
    }
    s.put_version(&v, &rec(k, "live", 1, b"1")).await.unwrap();
    assert!(s.purge_expired(100).await.unwrap() >= 1);
    assert!(s.get_deleted(&v, k, &name("old")).await.unwrap().is_none());
    assert!(s
        .get_deleted(&v, k, &name("young"))
        .await
        .unwrap()
        .is_some());
    assert!(s
        .get_version(&v, k, &name("live"), None)
        .await
        .unwrap()
        .is_some());
    s.put_version(&v, &rec(k, "old", 2, b"2")).await.unwrap();
    assert_eq!(s.all_versions(&v, k, &name("old")).await.unwrap().len(), 1);
}

async fn kinds_do_not_share_names(s: &dyn Store) {
    let v = vid();
    s.put_version(&v, &rec(ObjectKind::Secret, "same", 1, b"s"))
        .await
        .unwrap();
    assert!(s
        .get_version(&v, ObjectKind::Key, &name("same"), None)
        .await
        .unwrap()
        .is_none());
}

async fn concurrent_sets_produce_distinct_versions(s: Arc<dyn Storage>) {
    let v = vid();
    let k = ObjectKind::Secret;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = Arc::clone(&s);
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..5 {
                let r = rec(k, "race", t * 10 + i, format!("{t}-{i}").as_bytes());
                s.put_version(&v, &r).await.unwrap();
                ids.push(r.version);
            }
            ids
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    let stored = s.all_versions(&v, k, &name("race")).await.unwrap();
    assert_eq!(stored.len(), 40);
    for id in &written {
        assert!(stored.iter().any(|r| &r.version == id));
    }
    let latest = s
        .get_version(&v, k, &name("race"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, stored.last().unwrap().version);
}

fn principal(kind: &str, upn: Option<&str>) -> PrincipalRecord {
    PrincipalRecord {
        object_id: uuid_like(),
        tenant_id: "tenant-c".into(),
        kind: kind.into(),
        app_id: None,
        upn: upn.map(str::to_owned),
        display_name: "someone".into(),
        enabled: true,
        credentials: "{}".into(),
        attrs: "{}".into(),
        created: 1,
    }
}

async fn principals_round_trip_and_stay_unique(s: &dyn Storage) {
    let tag = &uuid_like()[..8];
    let upn = format!("Alice-{tag}@Example.test");
    let mut alice = principal("user", Some(&upn));
    s.create_principal(&alice).await.unwrap();
    assert_eq!(
        s.get_principal(&alice.object_id).await.unwrap(),
        Some(alice.clone())
    );
    let by_upn = s
        .principal_by_upn("tenant-c", &upn.to_uppercase())
        .await
        .unwrap();
    assert_eq!(by_upn.map(|p| p.object_id), Some(alice.object_id.clone()));
    assert!(s
        .principal_by_upn("other-tenant", &upn)
        .await
        .unwrap()
        .is_none());

    let twin = principal("user", Some(&upn.to_lowercase()));
    assert!(matches!(
        s.create_principal(&twin).await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(matches!(
        s.create_principal(&alice).await,
        Err(StoreError::Duplicate(_))
    ));

    let mut sp = principal("servicePrincipal", None);
    sp.app_id = Some(uuid_like());
    s.create_principal(&sp).await.unwrap();
    assert_eq!(
        s.principal_by_app_id(sp.app_id.as_deref().unwrap())
            .await
            .unwrap(),
        Some(sp.clone())
    );
    let mut sp2 = principal("servicePrincipal", None);
    sp2.app_id = sp.app_id.clone();
    assert!(matches!(
        s.create_principal(&sp2).await,
        Err(StoreError::Duplicate(_))
    ));

    let before = alice.clone();
    alice.enabled = false;
    alice.display_name = "Alice".into();
    alice.credentials = r#"{"h":"x"}"#.into();
    assert!(s.update_principal_if(&alice, &before).await.unwrap());
    assert_eq!(
        s.get_principal(&alice.object_id).await.unwrap(),
        Some(alice.clone())
    );
    let absent = principal("user", None);
    assert!(!s.update_principal_if(&absent, &absent).await.unwrap());

    // Compare-and-set: only over what is stored (a service principal's null
    // UPN compares equal to null); a stale copy writes nothing.
    let mut granted = alice.clone();
    granted.attrs = r#"{"directoryRoles":["Global Administrator"]}"#.into();
    assert!(s.update_principal_if(&granted, &alice).await.unwrap());
    let mut stale = alice.clone();
    stale.display_name = "Stale".into();
    assert!(!s.update_principal_if(&stale, &alice).await.unwrap());
    assert_eq!(
        s.get_principal(&alice.object_id).await.unwrap(),
        Some(granted.clone())
    );
    let mut sp_renamed = sp.clone();
    sp_renamed.display_name = "renamed".into();
    assert!(s.update_principal_if(&sp_renamed, &sp).await.unwrap());
    assert!(!s.update_principal_if(&sp_renamed, &sp).await.unwrap());
    alice = granted;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let page = s
            .list_principals("tenant-c", "user", cursor.as_deref(), 1)
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|p| p.object_id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(seen.contains(&alice.object_id));
    assert!(!seen.contains(&sp.object_id));

    assert!(s.delete_principal(&alice.object_id).await.unwrap());
    assert!(!s.delete_principal(&alice.object_id).await.unwrap());
    assert!(s.get_principal(&alice.object_id).await.unwrap().is_none());
}

async fn applications_round_trip(s: &dyn Storage) {
    let mut app = ApplicationRecord {
        object_id: uuid_like(),
        tenant_id: "tenant-c".into(),
        app_id: uuid_like(),
        display_name: "app".into(),
        credentials: "{}".into(),
        attrs: "{}".into(),
        created: 3,
    };
    s.create_application(&app).await.unwrap();
    assert_eq!(
        s.get_application(&app.object_id).await.unwrap(),
        Some(app.clone())
    );
    assert_eq!(
        s.application_by_app_id(&app.app_id).await.unwrap(),
        Some(app.clone())
    );
    let mut twin = app.clone();
    twin.object_id = uuid_like();
    assert!(matches!(
        s.create_application(&twin).await,
        Err(StoreError::Duplicate(_))
    ));
    app.credentials = r#"{"passwords":[]}"#.into();
    assert!(s.update_application(&app).await.unwrap());
    assert_eq!(
        s.get_application(&app.object_id)
            .await
            .unwrap()
            .unwrap()
            .credentials,
        app.credentials
    );
    let page = s.list_applications("tenant-c", None, 25).await.unwrap();
    assert!(page.items.iter().any(|a| a.object_id == app.object_id));
    assert!(s.delete_application(&app.object_id).await.unwrap());
    assert!(s
        .application_by_app_id(&app.app_id)
        .await
        .unwrap()
        .is_none());
}

async fn group_membership_is_kept_both_ways(s: &dyn Storage) {
    let group = principal("group", None);
    let inner = principal("group", None);
    let user = principal("user", None);
    for p in [&group, &inner, &user] {
        s.create_principal(p).await.unwrap();
    }
    assert!(s
        .add_member(&group.object_id, &user.object_id)
        .await
        .unwrap());
    assert!(!s
        .add_member(&group.object_id, &user.object_id)
        .await
        .unwrap());
    assert!(s
        .add_member(&group.object_id, &inner.object_id)
        .await
        .unwrap());
    assert!(s
        .add_member(&inner.object_id, &user.object_id)
        .await
        .unwrap());
    let members: Vec<String> = s
        .members(&group.object_id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.object_id)
        .collect();
    assert_eq!(members.len(), 2);
    assert!(members.contains(&user.object_id) && members.contains(&inner.object_id));
    let mut groups = s.groups_of(&user.object_id).await.unwrap();
    groups.sort();
    let mut want = vec![group.object_id.clone(), inner.object_id.clone()];
    want.sort();
    assert_eq!(groups, want);
    assert!(s
        .remove_member(&group.object_id, &user.object_id)
        .await
        .unwrap());
    assert!(!s
        .remove_member(&group.object_id, &user.object_id)
        .await
        .unwrap());
    // Deleting a principal removes its memberships in both directions.
    assert!(s.delete_principal(&inner.object_id).await.unwrap());
    assert!(s.groups_of(&user.object_id).await.unwrap().is_empty());
    assert!(s.members(&group.object_id).await.unwrap().is_empty());
}

async fn resources_upsert_and_ignore_id_case(s: &dyn Storage) {
    use keyhaven_core::resource::ResourceRecord;
    let sub = uuid_like();
    let id = format!("/subscriptions/{sub}/resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/Id1");
    let mut r = ResourceRecord {
        id: id.clone(),
        kind: "Microsoft.ManagedIdentity/userAssignedIdentities".into(),
        subscription_id: sub.clone(),
        resource_group: "RG".into(),
        name: "Id1".into(),
        location: "local".into(),
        tags: "{}".into(),
        properties: r#"{"a":1}"#.into(),
        created: 1,
        updated: 1,
    };
    assert!(s.put_resource(&r).await.unwrap());
    r.properties = r#"{"a":2}"#.into();
    r.updated = 2;
    assert!(!s.put_resource(&r).await.unwrap());
    let got = s.get_resource(&id.to_uppercase()).await.unwrap().unwrap();
    assert_eq!(got.properties, r#"{"a":2}"#);
    assert_eq!(got.created, 1);
    assert_eq!(got.id, id);
    assert_eq!(s.list_resources(&r.kind, &sub).await.unwrap().len(), 1);
    assert!(s
        .list_resources("Other/type", &sub)
        .await
        .unwrap()
        .is_empty());
    assert!(s.delete_resource(&id.to_lowercase()).await.unwrap());
    assert!(!s.delete_resource(&id).await.unwrap());
    assert!(s.get_resource(&id).await.unwrap().is_none());
}

/// Issue 29, item 2: the generation used to be moved by the caller after
/// its change, so a cancel, crash or error in between left every node on
/// the old snapshot (a deleted role assignment kept working). Now the store
/// moves it in the change's own transaction; no caller bumps anything here.
async fn authorization_writes_move_the_generation_themselves(s: &dyn Storage) {
    use keyhaven_core::resource::ResourceRecord;
    use keyhaven_core::store::AUTHZ_GENERATION;
    async fn generation(s: &dyn Storage) -> u64 {
        let raw = s.get_setting(AUTHZ_GENERATION).await.unwrap();
        std::str::from_utf8(&raw.expect("the migration creates the generation"))
            .unwrap()
            .parse()
            .unwrap()
    }
    async fn moves(s: &dyn Storage, what: &str, before: &mut u64) {
        let now = generation(s).await;
        assert!(
            now > *before,
            "{what} did not move the generation ({before} → {now})"
        );
        *before = now;
    }
    let mut g = generation(s).await;

    let sub = uuid_like();
    let mut r = ResourceRecord {
        id: format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments/a1"),
        kind: "Microsoft.Authorization/roleAssignments".into(),
        subscription_id: sub.clone(),
        resource_group: String::new(),
        name: "a1".into(),
        location: String::new(),
        tags: "{}".into(),
        properties: "{}".into(),
        created: 1,
        updated: 1,
    };
    s.put_resource(&r).await.unwrap();
    moves(s, "creating a role assignment", &mut g).await;
    r.properties = r#"{"x":1}"#.into();
    s.put_resource(&r).await.unwrap();
    moves(s, "updating a resource", &mut g).await;
    s.delete_resource(&r.id).await.unwrap();
    moves(s, "deleting a role assignment", &mut g).await;

    // Dead letters are event-delivery records, not authorization data.
    let dead = ResourceRecord {
        id: format!("/subscriptions/{sub}/deadLetters/d1"),
        kind: "Keyhaven.EventGrid/deadLetters".into(),
        ..r.clone()
    };
    s.put_resource(&dead).await.unwrap();
    assert_eq!(generation(s).await, g, "a dead letter moved the generation");

    let v = vault_record(&vid());
    s.create_vault(&v).await.unwrap();
    moves(s, "creating a vault", &mut g).await;
    let mut changed = s.get_vault(&v.name).await.unwrap().unwrap();
    changed.properties.rbac_authorization = false;
    assert!(s.replace_vault(&changed).await.unwrap());
    moves(s, "changing a vault's properties", &mut g).await;
    assert!(s.purge_vault(&v.id, changed.rev + 1).await.unwrap());
    moves(s, "purging a vault", &mut g).await;

    let group = principal("group", None);
    let mut user = principal("user", None);
    s.create_principal(&group).await.unwrap();
    s.create_principal(&user).await.unwrap();
    let g0 = generation(s).await;
    g = g0;
    s.add_member(&group.object_id, &user.object_id)
        .await
        .unwrap();
    moves(s, "adding a group member", &mut g).await;
    s.remove_member(&group.object_id, &user.object_id)
        .await
        .unwrap();
    moves(s, "removing a group member", &mut g).await;
    let before = user.clone();
    user.display_name = "renamed".into();
    assert!(s.update_principal_if(&user, &before).await.unwrap());
    assert_eq!(generation(s).await, g, "a rename moved the generation");
    let before = user.clone();
    user.enabled = false;
    assert!(s.update_principal_if(&user, &before).await.unwrap());
    moves(s, "disabling a principal", &mut g).await;
    s.delete_principal(&user.object_id).await.unwrap();
    moves(s, "deleting a principal", &mut g).await;
}

/// Issue 29, item 3: a certificate's key, secret and certificate change
/// together or not at all.
async fn multi_object_changes_are_all_or_nothing(s: &dyn Store) {
    use ObjectKind::{Certificate, Key, Secret};
    let v = vid();
    let all = [Certificate, Key, Secret];
    let version = |kind, n: &str| {
        let mut r = rec(kind, n, 10, if kind == Certificate { b"" } else { b"p" });
        r.version = "0123456789abcdef0123456789abcdef".parse().unwrap();
        r
    };
    let parts = |n: &str| all.map(|k| version(k, n)).to_vec();
    async fn states(s: &dyn Store, v: &str, n: &str) -> Vec<(bool, bool)> {
        let mut out = Vec::new();
        for kind in [Certificate, Key, Secret] {
            out.push((
                s.get_version(v, kind, &name(n), None)
                    .await
                    .unwrap()
                    .is_some(),
                s.get_deleted(v, kind, &name(n)).await.unwrap().is_some(),
            ));
        }
        out
    }
    const LIVE: [(bool, bool); 3] = [(true, false); 3];
    const DELETED: [(bool, bool); 3] = [(false, true); 3];
    const GONE: [(bool, bool); 3] = [(false, false); 3];

    s.put_versions(&v, &parts("cert")).await.unwrap();
    assert_eq!(states(s, &v, "cert").await, LIVE);
    assert_eq!(
        s.all_versions_of(&v, &all, &name("cert"))
            .await
            .unwrap()
            .iter()
            .map(|r| r.kind)
            .collect::<Vec<_>>(),
        all.to_vec()
    );

    // A deleted secret of the same name refuses the whole write.
    s.put_version(&v, &version(Secret, "half")).await.unwrap();
    let info = DeletedInfo {
        deleted_date: 20,
        scheduled_purge_date: 1_000,
    };
    s.delete_object(&v, Secret, &name("half"), info)
        .await
        .unwrap();
    assert!(matches!(
        s.put_versions(&v, &parts("half")).await,
        Err(StoreError::NameDeleted { kind: Secret, .. })
    ));
    assert!(s
        .get_version(&v, Certificate, &name("half"), None)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_version(&v, Key, &name("half"), None)
        .await
        .unwrap()
        .is_none());

    // Updates: one missing version refuses them all.
    let mut changed: Vec<_> = parts("cert").into_iter().map(|r| (r.clone(), r)).collect();
    for (_, r) in &mut changed {
        r.attributes.enabled = false;
    }
    let mut with_missing = changed.clone();
    with_missing.push((version(Key, "absent"), version(Key, "absent")));
    assert!(s.update_versions(&v, &with_missing).await.is_err());
    for kind in all {
        assert!(
            s.get_version(&v, kind, &name("cert"), None)
                .await
                .unwrap()
                .unwrap()
                .attributes
                .enabled
        );
    }
    s.update_versions(&v, &changed).await.unwrap();
    for kind in all {
        assert!(
            !s.get_version(&v, kind, &name("cert"), None)
                .await
                .unwrap()
                .unwrap()
                .attributes
                .enabled
        );
    }

    // Delete, recover and purge follow the first kind.
    assert!(s
        .delete_objects(&v, &all, &name("cert"), info)
        .await
        .unwrap()
        .is_some());
    assert_eq!(states(s, &v, "cert").await, DELETED);
    assert!(s
        .delete_objects(&v, &all, &name("cert"), info)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .recover_objects(&v, &all, &name("cert"), 30)
        .await
        .unwrap());
    assert_eq!(states(s, &v, "cert").await, LIVE);
    assert!(!s
        .recover_objects(&v, &all, &name("cert"), 30)
        .await
        .unwrap());
    assert!(!s.purge_objects(&v, &all, &name("cert")).await.unwrap());
    assert!(s
        .delete_objects(&v, &all, &name("cert"), info)
        .await
        .unwrap()
        .is_some());
    // Past the purge date the first cannot be recovered: nothing is.
    assert!(!s
        .recover_objects(&v, &all, &name("cert"), 1_000)
        .await
        .unwrap());
    assert_eq!(states(s, &v, "cert").await, DELETED);
    assert!(s.purge_objects(&v, &all, &name("cert")).await.unwrap());
    assert_eq!(states(s, &v, "cert").await, GONE);

    // A certificate's key or secret takes no plain version, and a
    // certificate takes no plain object's name (checked in the write).
    let mut owned = version(Secret, "owned");
    owned.managed = true;
    s.put_version(&v, &owned).await.unwrap();
    let mut plain = version(Secret, "owned");
    plain.version = Version::random();
    assert!(matches!(
        s.put_version(&v, &plain).await,
        Err(StoreError::Managed { kind: Secret, .. })
    ));
    s.put_version(&v, &version(Secret, "plain")).await.unwrap();
    let mut cert_parts = parts("plain");
    for r in &mut cert_parts {
        r.managed = r.kind != Certificate;
    }
    assert!(matches!(
        s.put_versions(&v, &cert_parts).await,
        Err(StoreError::NameExists { kind: Secret, .. })
    ));
    assert!(s
        .get_version(&v, Certificate, &name("plain"), None)
        .await
        .unwrap()
        .is_none());

    // A policy document changes with the versions, by compare-and-set.
    let pol = |body: &str| keyhaven_core::store::PolicyRecord {
        body: body.into(),
        created: 1,
        updated: 1,
    };
    let change = |expected: Option<&str>, body: &str| keyhaven_core::store::PolicyChange {
        kind: Certificate,
        name: name("withpolicy"),
        expected: expected.map(str::to_owned),
        record: pol(body),
    };
    s.put_versions_with(&v, &parts("withpolicy"), Some(&change(None, "one")), &[])
        .await
        .unwrap();
    let got = s
        .get_policy(&v, Certificate, &name("withpolicy"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.body, "one");
    let mut next = parts("withpolicy");
    for r in &mut next {
        r.version = Version::random();
    }
    // A stale expectation writes neither the versions nor the policy.
    assert!(matches!(
        s.put_versions_with(&v, &next, Some(&change(Some("stale"), "two")), &[])
            .await,
        Err(StoreError::Changed {
            kind: Certificate,
            ..
        })
    ));
    assert_eq!(
        s.list_versions(&v, Key, &name("withpolicy"), None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(!s.put_policy_if(&v, &change(None, "x")).await.unwrap());
    assert!(!s
        .put_policy_if(&v, &change(Some("stale"), "x"))
        .await
        .unwrap());
    assert!(s
        .put_policy_if(&v, &change(Some("one"), "two"))
        .await
        .unwrap());
    let got = s
        .get_policy(&v, Certificate, &name("withpolicy"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.body, "two");

    // Restore writes every object or none.
    s.put_version(&v, &version(Key, "taken")).await.unwrap();
    assert!(matches!(
        s.restore_object(&v, &parts("taken")).await,
        Err(StoreError::NameExists { kind: Key, .. })
    ));
    assert!(s
        .get_version(&v, Certificate, &name("taken"), None)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_version(&v, Secret, &name("taken"), None)
        .await
        .unwrap()
        .is_none());
    let restored = keyhaven_core::store::PolicyChange {
        kind: Certificate,
        name: name("cert"),
        expected: None,
        record: keyhaven_core::store::PolicyRecord {
            body: "restored".into(),
            created: 1,
            updated: 1,
        },
    };
    s.restore_object_with(&v, &parts("cert"), Some(&restored))
        .await
        .unwrap();
    assert_eq!(states(s, &v, "cert").await, LIVE);
    assert_eq!(
        s.get_policy(&v, Certificate, &name("cert"))
            .await
            .unwrap()
            .unwrap()
            .body,
        "restored"
    );
}

fn event(id: &str, vault: &str, kind: &'static str, object: &str) -> ChangeEvent {
    ChangeEvent {
        id: id.to_owned(),
        event_type: EventType::SecretNewVersionCreated,
        vault_name: "conformance".into(),
        vault_id: vault.to_owned(),
        object_type: kind,
        object_name: object.to_owned(),
        version: "v".into(),
        nbf: None,
        exp: Some(7),
        time: 1,
    }
}

/// Claims and settles (as delivered) everything due; the events, by id.
async fn drain(s: &dyn Storage) -> Vec<ChangeEvent> {
    let items = s
        .claim_events(i64::MAX - 1, i64::MAX, "drain", 1000)
        .await
        .unwrap();
    for i in &items {
        assert!(s.settle_event(i, &Settle::Done).await.unwrap());
    }
    let mut out: Vec<_> = items.into_iter().map(|i| i.event).collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// An event subscription on the vault whose ARM id is `vault` (events are
/// recorded only for vaults that have one).
async fn subscribe(s: &dyn Storage, vault: &str) {
    let id = format!("{vault}/providers/Microsoft.EventGrid/eventSubscriptions/Conformance");
    s.put_resource(&keyhaven_core::ResourceRecord {
        id,
        kind: keyhaven_core::events::SUBSCRIPTION_TYPE.into(),
        subscription_id: "s".into(),
        resource_group: "rg".into(),
        name: "Conformance".into(),
        location: "here".into(),
        tags: "{}".into(),
        properties: "{}".into(),
        created: 0,
        updated: 0,
    })
    .await
    .unwrap();
}

async fn events_are_recorded_with_their_change(s: &dyn Storage) {
    use ObjectKind::Secret;
    assert_eq!(
        s.outbox_len().await.unwrap(),
        0,
        "nothing else writes events"
    );
    let v = vid();
    // Nobody listens to this vault yet: nothing is recorded.
    s.put_versions_with(
        &v,
        &[rec(Secret, "unheard", 1, b"a")],
        None,
        &[event("e0", &v, "Secret", "unheard")],
    )
    .await
    .unwrap();
    s.enqueue_events(&[event("e0b", &v, "Secret", "unheard")])
        .await
        .unwrap();
    assert_eq!(s.outbox_len().await.unwrap(), 0);
    // Another vault whose id starts the same way is not this one.
    subscribe(s, &format!("{v}x")).await;
    s.enqueue_events(&[event("e0c", &v, "Secret", "unheard")])
        .await
        .unwrap();
    assert_eq!(s.outbox_len().await.unwrap(), 0);
    subscribe(s, &v.to_ascii_uppercase()).await;
    // The event carries the name as first stored, whatever the casing of
    // the write that caused it.
    s.put_version(&v, &rec(Secret, "Casing", 1, b"a"))
        .await
        .unwrap();
    let second = rec(Secret, "CASING", 2, b"b");
    let e1 = event("e1", &v, "Secret", "CASING");
    let stored = s
        .put_versions_with(
            &v,
            std::slice::from_ref(&second),
            None,
            std::slice::from_ref(&e1),
        )
        .await
        .unwrap();
    // The write also says how the name is stored, and how a new one is.
    let as_str = |v: Vec<ObjectName>| v.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(as_str(stored), ["Casing"]);
    let fresh = s
        .put_versions_with(&v, &[rec(ObjectKind::Key, "NewOne", 1, b"k")], None, &[])
        .await
        .unwrap();
    assert_eq!(as_str(fresh), ["NewOne"]);
    // And a write in the stored casing records its event too.
    let third = rec(Secret, "Casing", 3, b"c");
    s.put_versions_with(
        &v,
        std::slice::from_ref(&third),
        None,
        &[event("e1c", &v, "Secret", "Casing")],
    )
    .await
    .unwrap();
    let got = drain(s).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].id.as_str(), got[0].object_name.as_str()),
        ("e1", "Casing")
    );
    assert_eq!((got[0].exp, got[0].event_type), (Some(7), e1.event_type));
    assert_eq!(
        (got[1].id.as_str(), got[1].object_name.as_str()),
        ("e1c", "Casing")
    );
    let latest = s
        .get_version(&v, Secret, &name("casing"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, third.version);

    // A write that fails records nothing: a deleted name, a lost policy
    // compare-and-set.
    let info = DeletedInfo {
        deleted_date: 3,
        scheduled_purge_date: 100,
    };
    s.delete_object(&v, Secret, &name("casing"), info)
        .await
        .unwrap();
    for (id, casing) in [("e2", "casing"), ("e2b", "Casing")] {
        let refused = s
            .put_versions_with(
                &v,
                &[rec(Secret, casing, 4, b"c")],
                None,
                &[event(id, &v, "Secret", casing)],
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::NameDeleted { .. })),
            "{refused:?}"
        );
    }
    let stale = keyhaven_core::store::PolicyChange {
        kind: Secret,
        name: name("other"),
        expected: Some("never".into()),
        record: PolicyRecord {
            body: "x".into(),
            created: 1,
            updated: 1,
        },
    };
    assert!(s
        .put_versions_with(
            &v,
            &[rec(Secret, "other", 4, b"c")],
            Some(&stale),
            &[event("e3", &v, "Secret", "other")]
        )
        .await
        .is_err());
    assert_eq!(s.outbox_len().await.unwrap(), 0);

    // A vault write records its event only if it wins its compare-and-set.
    let vault = vault_record(&vid());
    s.create_vault(&vault).await.unwrap();
    let stale_vault = VaultRecord {
        rev: 5,
        ..vault.clone()
    };
    assert!(!s
        .replace_vault_with(&stale_vault, &[event("e4", &v, "Vault", "")])
        .await
        .unwrap());
    assert!(s
        .replace_vault_with(&vault, &[event("e5", &v, "Vault", "")])
        .await
        .unwrap());
    // A finished job records what it reports; enqueueing is idempotent by id.
    let job = format!("conformance/{}", vid());
    assert!(s.claim_job(&job, 1, 60).await.unwrap());
    s.finish_job(&job, 2, 0, &[event("e6", &v, "Key", "k")])
        .await
        .unwrap();
    // A node whose lease ran out finishes after the one that took over:
    // the job reports once.
    s.finish_job(&job, 3, 0, &[event("e6-again", &v, "Key", "k")])
        .await
        .unwrap();
    s.enqueue_events(&[event("e7", &v, "Certificate", "c")])
        .await
        .unwrap();
    s.enqueue_events(&[event("e7", &v, "Certificate", "c")])
        .await
        .unwrap();
    let ids: Vec<_> = drain(s).await.into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["e5", "e6", "e7"]);
    assert_eq!(s.outbox_len().await.unwrap(), 0);
}

async fn outbox_entries_are_claimed_once_and_settled_by_their_claim(s: &dyn Storage) {
    let v = vid();
    subscribe(s, &v).await;
    let events: Vec<_> = (0..6)
        .map(|i| event(&format!("c{i}"), &v, "Secret", "n"))
        .collect();
    s.enqueue_events(&events).await.unwrap();
    let a = s.claim_events(1000, 2000, "a", 4).await.unwrap();
    assert_eq!(a.len(), 4, "at most the limit");
    let rest = s.claim_events(1000, 2000, "a2", 10).await.unwrap();
    assert_eq!(rest.len(), 2, "the others only");
    assert!(
        s.claim_events(1999, 3000, "b", 10)
            .await
            .unwrap()
            .is_empty(),
        "all held"
    );
    // The first claim's lease ends: another node takes its entries, and the
    // first holder's settlement no longer counts.
    let b = s.claim_events(2000, 3000, "b", 10).await.unwrap();
    assert_eq!(b.len(), 6);
    assert!(b
        .iter()
        .all(|i| i.claim == "b" && i.subscription.is_empty() && i.attempts == 0));
    assert!(!s.settle_event(&a[0], &Settle::Done).await.unwrap());
    let by_id =
        |id: &str, items: &[OutboxItem]| items.iter().find(|i| i.event.id == id).unwrap().clone();

    // A retry is due again at its time, for any node, with one more attempt.
    let retry = by_id("c0", &b);
    let again = Settle::Retry {
        due: 5000,
        last_error: "HTTP 500".into(),
    };
    assert!(s.settle_event(&retry, &again).await.unwrap());
    assert!(
        !s.settle_event(&retry, &again).await.unwrap(),
        "settled once"
    );
    // A fan-out replaces the event by one delivery per subscription.
    let fan = by_id("c1", &b);
    let subs = vec![
        "/subscriptions/s/x/one".to_owned(),
        "/subscriptions/s/x/two".to_owned(),
    ];
    assert!(s
        .settle_event(&fan, &Settle::FanOut(subs.clone()))
        .await
        .unwrap());
    // A dead letter goes with its entry, in one transaction.
    let dead = by_id("c2", &b);
    let letter = keyhaven_core::ResourceRecord {
        id: format!("/subscriptions/s/x/one/deadLetters/{v}"),
        kind: "Keyhaven.EventGrid/deadLetters".into(),
        subscription_id: "s".into(),
        resource_group: "rg".into(),
        name: "one".into(),
        location: "here".into(),
        tags: "{}".into(),
        properties: "{}".into(),
        created: 0,
        updated: 0,
    };
    assert!(s
        .settle_event(&dead, &Settle::DeadLetter(letter.clone()))
        .await
        .unwrap());
    assert!(s.get_resource(&letter.id).await.unwrap().is_some());
    for id in ["c3", "c4", "c5"] {
        assert!(s.settle_event(&by_id(id, &b), &Settle::Done).await.unwrap());
    }
    let deliveries = s.claim_events(4000, 5500, "c", 10).await.unwrap();
    let mut got: Vec<_> = deliveries
        .iter()
        .map(|i| (i.event.id.clone(), i.subscription.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("c1".to_owned(), subs[0].clone()),
            ("c1".to_owned(), subs[1].clone())
        ]
    );
    assert_eq!(deliveries[0].event, fan.event);
    let due = s.claim_events(5000, 5100, "d", 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].event.id.as_str(), due[0].attempts), ("c0", 1));
    // Handed back unattempted: due again later, attempts unchanged.
    assert!(s
        .settle_event(&due[0], &Settle::Release { due: 5050 })
        .await
        .unwrap());
    assert!(s
        .claim_events(5049, 5100, "e", 10)
        .await
        .unwrap()
        .is_empty());
    let due = s.claim_events(5050, 5100, "e", 10).await.unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 1));

    // Concurrent claimants never share an entry.
    for i in deliveries.iter().chain(&due) {
        assert!(s.settle_event(i, &Settle::Done).await.unwrap());
    }
    let many: Vec<_> = (0..20)
        .map(|i| event(&format!("r{i:02}"), &v, "Secret", "n"))
        .collect();
    s.enqueue_events(&many).await.unwrap();
    let (w, x, y, z) = tokio::join!(
        s.claim_events(6000, 7000, "w", 8),
        s.claim_events(6000, 7000, "x", 8),
        s.claim_events(6000, 7000, "y", 8),
        s.claim_events(6000, 7000, "z", 8)
    );
    let mut all: Vec<_> = [w, x, y, z].into_iter().flat_map(Result::unwrap).collect();
    all.sort_by(|a, b| a.event.id.cmp(&b.event.id));
    let ids: Vec<_> = all.iter().map(|i| i.event.id.clone()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "no entry handed to two claims");
    assert_eq!(ids.len(), 20);
    for i in &all {
        assert!(s.settle_event(i, &Settle::Done).await.unwrap());
    }
    assert_eq!(s.outbox_len().await.unwrap(), 0);
}

async fn policy_states_are_replaced_by_scan_and_listed_by_scope(s: &dyn Storage) {
    use keyhaven_core::governance::states::StateRow;
    let sub = format!("/subscriptions/{}", uuid_like());
    let a = format!("{sub}/providers/microsoft.authorization/policyassignments/a_1");
    let row = |resource: &str, component: &str, compliance: &str| StateRow {
        assignment_id: a.clone(),
        reference_id: String::new(),
        resource_id: format!(
            "{sub}/resourcegroups/rg/providers/microsoft.keyvault/vaults/{resource}"
        ),
        component: component.into(),
        compliance: compliance.into(),
        time: 1,
        record: format!("{{\"r\":\"{resource}{component}\"}}"),
    };
    s.put_policy_states(&[
        row("v1", "", "NonCompliant"),
        row("v1", "secrets/s1", "NonCompliant"),
    ])
    .await
    .unwrap();
    // A write replaces the state with its key.
    s.put_policy_states(&[row("v1", "", "Compliant")])
        .await
        .unwrap();
    let listed = s
        .list_policy_states(&sub.to_uppercase(), 100)
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].compliance, "Compliant");
    assert_eq!(listed[1].component, "secrets/s1");
    // A scan replaces resource-level states only.
    s.replace_policy_states(&a, &[row("v2", "", "NonCompliant")])
        .await
        .unwrap();
    let listed = s.list_policy_states(&sub, 100).await.unwrap();
    let keys: Vec<(String, String)> = listed
        .iter()
        .map(|r| {
            (
                r.resource_id.rsplit('/').next().unwrap().to_owned(),
                r.component.clone(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("v1".into(), "secrets/s1".into()),
            ("v2".into(), String::new())
        ]
    );
    // Scope at a segment boundary ("v" is not "v1"'s parent), by assignment,
    // and with LIKE's wildcards taken literally.
    let v = format!("{sub}/resourcegroups/rg/providers/microsoft.keyvault/vaults/v");
    assert!(s.list_policy_states(&v, 100).await.unwrap().is_empty());
    let under_score = format!("{sub}/resourcegroups/r_");
    assert!(s
        .list_policy_states(&under_score, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.list_policy_states(&a, 100).await.unwrap().len(), 2);
    assert_eq!(s.list_policy_states(&sub, 1).await.unwrap().len(), 1);
    s.forget_policy_states(&a).await.unwrap();
    assert!(s.list_policy_states(&sub, 100).await.unwrap().is_empty());
}
