//! The directory on SQLite.

use async_trait::async_trait;
use keyhaven_core::directory::{ApplicationRecord, DirectoryStore, PrincipalRecord};
use keyhaven_core::object::Page;
use keyhaven_core::store::{StoreError, StoreResult};
use rusqlite::{params, Connection, ErrorCode, Row, TransactionBehavior};

use super::{err, q, SqliteStore};
use crate::sql;

fn write_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            StoreError::Duplicate("object with the same id, appId or userPrincipalName".into())
        }
        _ => err(e),
    }
}

fn principal(r: &Row<'_>) -> rusqlite::Result<PrincipalRecord> {
    Ok(PrincipalRecord {
        object_id: r.get(0)?,
        tenant_id: r.get(1)?,
        kind: r.get(2)?,
        app_id: r.get(3)?,
        upn: r.get(4)?,
        display_name: r.get(5)?,
        enabled: r.get(6)?,
        credentials: r.get(7)?,
        attrs: r.get(8)?,
        created: r.get(9)?,
    })
}

fn application(r: &Row<'_>) -> rusqlite::Result<ApplicationRecord> {
    Ok(ApplicationRecord {
        object_id: r.get(0)?,
        tenant_id: r.get(1)?,
        app_id: r.get(2)?,
        display_name: r.get(3)?,
        credentials: r.get(4)?,
        attrs: r.get(5)?,
        created: r.get(6)?,
    })
}

fn principals(
    c: &Connection,
    sql: &str,
    p: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<PrincipalRecord>> {
    let mut stmt = c.prepare_cached(&q(sql)).map_err(err)?;
    let rows = stmt.query_map(p, principal).map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

fn applications(
    c: &Connection,
    sql: &str,
    p: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<ApplicationRecord>> {
    let mut stmt = c.prepare_cached(&q(sql)).map_err(err)?;
    let rows = stmt.query_map(p, application).map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

#[async_trait]
impl DirectoryStore for SqliteStore {
    async fn create_principal(&self, p: &PrincipalRecord) -> StoreResult<()> {
        let p = p.clone();
        self.run(move |c| {
            c.execute(
                &q(sql::INSERT_PRINCIPAL),
                params![
                    p.object_id,
                    p.tenant_id,
                    p.kind,
                    p.app_id,
                    p.upn,
                    p.display_name,
                    p.enabled,
                    p.credentials,
                    p.attrs,
                    p.created
                ],
            )
            .map_err(write_err)?;
            Ok(())
        })
        .await
    }

    async fn get_principal(&self, object_id: &str) -> StoreResult<Option<PrincipalRecord>> {
        let id = object_id.to_owned();
        self.read(move |c| {
            Ok(principals(c, &sql::select_principals("p.object_id = $1"), &[&id])?.pop())
        })
        .await
    }

    async fn principal_by_app_id(&self, app_id: &str) -> StoreResult<Option<PrincipalRecord>> {
        let id = app_id.to_owned();
        self.read(move |c| {
            Ok(principals(c, &sql::select_principals("p.app_id = $1"), &[&id])?.pop())
        })
        .await
    }

    async fn principal_by_upn(
        &self,
        tenant_id: &str,
        upn: &str,
    ) -> StoreResult<Option<PrincipalRecord>> {
        let (t, u) = (tenant_id.to_owned(), upn.to_owned());
        self.read(move |c| {
            Ok(principals(
                c,
                &sql::select_principals("p.tenant_id = $1 AND lower(p.upn) = lower($2)"),
                &[&t, &u],
            )?
            .pop())
        })
        .await
    }

    async fn list_principals(
        &self,
        tenant_id: &str,
        kind: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<PrincipalRecord>> {
        let (t, k, after) = (
            tenant_id.to_owned(),
            kind.to_owned(),
            cursor.unwrap_or("").to_owned(),
        );
        self.read(move |c| {
            let rows = principals(
                c,
                &sql::select_principals("p.tenant_id = $1 AND p.kind = $2 AND p.object_id > $3 ORDER BY p.object_id LIMIT $4"),
                &[&t, &k, &after, &(i64::from(limit) + 1)],
            )?;
            Ok(sql::by_id_page(rows, limit, |p| p.object_id.clone()))
        })
        .await
    }

    async fn update_principal_if(
        &self,
        p: &PrincipalRecord,
        old: &PrincipalRecord,
    ) -> StoreResult<bool> {
        let (p, old) = (p.clone(), old.clone());
        self.run(move |c| {
            let n = c
                .execute(
                    &q(sql::UPDATE_PRINCIPAL_IF),
                    params![
                        p.object_id,
                        p.app_id,
                        p.upn,
                        p.display_name,
                        p.enabled,
                        p.credentials,
                        p.attrs,
                        old.upn,
                        old.display_name,
                        old.enabled,
                        old.credentials,
                        old.attrs
                    ],
                )
                .map_err(write_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_principal(&self, object_id: &str) -> StoreResult<bool> {
        let id = object_id.to_owned();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            tx.execute(&q(sql::DELETE_MEMBERSHIPS), [&id])
                .map_err(err)?;
            let n = tx.execute(&q(sql::DELETE_PRINCIPAL), [&id]).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn create_application(&self, a: &ApplicationRecord) -> StoreResult<()> {
        let a = a.clone();
        self.run(move |c| {
            c.execute(
                &q(sql::INSERT_APPLICATION),
                params![
                    a.object_id,
                    a.tenant_id,
                    a.app_id,
                    a.display_name,
                    a.credentials,
                    a.attrs,
                    a.created
                ],
            )
            .map_err(write_err)?;
            Ok(())
        })
        .await
    }

    async fn get_application(&self, object_id: &str) -> StoreResult<Option<ApplicationRecord>> {
        let id = object_id.to_owned();
        self.read(move |c| {
            Ok(applications(c, &sql::select_applications("object_id = $1"), &[&id])?.pop())
        })
        .await
    }

    async fn application_by_app_id(&self, app_id: &str) -> StoreResult<Option<ApplicationRecord>> {
        let id = app_id.to_owned();
        self.read(move |c| {
            Ok(applications(c, &sql::select_applications("app_id = $1"), &[&id])?.pop())
        })
        .await
    }

    async fn list_applications(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<ApplicationRecord>> {
        let (t, after) = (tenant_id.to_owned(), cursor.unwrap_or("").to_owned());
        self.read(move |c| {
            let rows = applications(
                c,
                &sql::select_applications(
                    "tenant_id = $1 AND object_id > $2 ORDER BY object_id LIMIT $3",
                ),
                &[&t, &after, &(i64::from(limit) + 1)],
            )?;
            Ok(sql::by_id_page(rows, limit, |a| a.object_id.clone()))
        })
        .await
    }

    async fn update_application(&self, a: &ApplicationRecord) -> StoreResult<bool> {
        let a = a.clone();
        self.run(move |c| {
            let n = c
                .execute(
                    &q(sql::UPDATE_APPLICATION),
                    params![a.object_id, a.display_name, a.credentials, a.attrs],
                )
                .map_err(write_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_application(&self, object_id: &str) -> StoreResult<bool> {
        let id = object_id.to_owned();
        self.run(move |c| Ok(c.execute(&q(sql::DELETE_APPLICATION), [&id]).map_err(err)? == 1))
            .await
    }

    async fn add_member(&self, group_id: &str, member_id: &str) -> StoreResult<bool> {
        let (g, m) = (group_id.to_owned(), member_id.to_owned());
        self.run(move |c| Ok(c.execute(&q(sql::ADD_MEMBER), [&g, &m]).map_err(err)? == 1))
            .await
    }

    async fn remove_member(&self, group_id: &str, member_id: &str) -> StoreResult<bool> {
        let (g, m) = (group_id.to_owned(), member_id.to_owned());
        self.run(move |c| Ok(c.execute(&q(sql::REMOVE_MEMBER), [&g, &m]).map_err(err)? == 1))
            .await
    }

    async fn members(&self, group_id: &str) -> StoreResult<Vec<PrincipalRecord>> {
        let g = group_id.to_owned();
        self.read(move |c| principals(c, &sql::members(), &[&g]))
            .await
    }

    async fn groups_of(&self, member_id: &str) -> StoreResult<Vec<String>> {
        let m = member_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&q(sql::GROUPS_OF)).map_err(err)?;
            let rows = stmt
                .query_map([&m], |r| r.get::<_, String>(0))
                .map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }
}
