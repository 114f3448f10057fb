//! The directory on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use keyhaven_core::directory::{ApplicationRecord, DirectoryStore, PrincipalRecord};
use keyhaven_core::object::Page;
use keyhaven_core::store::{StoreError, StoreResult};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::{err, PostgresStore, P};
use crate::sql;

fn write_err(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Duplicate("object with the same id, appId or userPrincipalName".into())
    } else {
        err(e)
    }
}

fn principal(r: &Row) -> StoreResult<PrincipalRecord> {
    Ok(PrincipalRecord {
        object_id: r.try_get(0).map_err(err)?,
        tenant_id: r.try_get(1).map_err(err)?,
        kind: r.try_get(2).map_err(err)?,
        app_id: r.try_get(3).map_err(err)?,
        upn: r.try_get(4).map_err(err)?,
        display_name: r.try_get(5).map_err(err)?,
        enabled: r.try_get(6).map_err(err)?,
        credentials: r.try_get(7).map_err(err)?,
        attrs: r.try_get(8).map_err(err)?,
        created: r.try_get(9).map_err(err)?,
    })
}

fn application(r: &Row) -> StoreResult<ApplicationRecord> {
    Ok(ApplicationRecord {
        object_id: r.try_get(0).map_err(err)?,
        tenant_id: r.try_get(1).map_err(err)?,
        app_id: r.try_get(2).map_err(err)?,
        display_name: r.try_get(3).map_err(err)?,
        credentials: r.try_get(4).map_err(err)?,
        attrs: r.try_get(5).map_err(err)?,
        created: r.try_get(6).map_err(err)?,
    })
}

impl PostgresStore {
    async fn principals(&self, q: &str, p: &[P<'_>]) -> StoreResult<Vec<PrincipalRecord>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(q).await.map_err(err)?;
        c.query(&stmt, p)
            .await
            .map_err(err)?
            .iter()
            .map(principal)
            .collect()
    }

    async fn applications(&self, q: &str, p: &[P<'_>]) -> StoreResult<Vec<ApplicationRecord>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(q).await.map_err(err)?;
        c.query(&stmt, p)
            .await
            .map_err(err)?
            .iter()
            .map(application)
            .collect()
    }

    async fn exec(&self, q: &str, p: &[P<'_>]) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute(q, p).await.map_err(write_err)
    }
}

#[async_trait]
impl DirectoryStore for PostgresStore {
    async fn create_principal(&self, p: &PrincipalRecord) -> StoreResult<()> {
        self.exec(
            sql::INSERT_PRINCIPAL,
            &[
                &p.object_id,
                &p.tenant_id,
                &p.kind,
                &p.app_id,
                &p.upn,
                &p.display_name,
                &p.enabled,
                &p.credentials,
                &p.attrs,
                &p.created,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_principal(&self, object_id: &str) -> StoreResult<Option<PrincipalRecord>> {
        Ok(self
            .principals(&sql::select_principals("p.object_id = $1"), &[&object_id])
            .await?
            .pop())
    }

    async fn principal_by_app_id(&self, app_id: &str) -> StoreResult<Option<PrincipalRecord>> {
        Ok(self
            .principals(&sql::select_principals("p.app_id = $1"), &[&app_id])
            .await?
            .pop())
    }

    async fn principal_by_upn(
        &self,
        tenant_id: &str,
        upn: &str,
    ) -> StoreResult<Option<PrincipalRecord>> {
        Ok(self
            .principals(
                &sql::select_principals("p.tenant_id = $1 AND lower(p.upn) = lower($2)"),
                &[&tenant_id, &upn],
            )
            .await?
            .pop())
    }

    async fn list_principals(
        &self,
        tenant_id: &str,
        kind: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<PrincipalRecord>> {
        let after = cursor.unwrap_or("");
        let rows = self
            .principals(
                &sql::select_principals("p.tenant_id = $1 AND p.kind = $2 AND p.object_id > $3 ORDER BY p.object_id LIMIT $4"),
                &[&tenant_id, &kind, &after, &(i64::from(limit) + 1)],
            )
            .await?;
        Ok(sql::by_id_page(rows, limit, |p| p.object_id.clone()))
    }

    async fn update_principal_if(
        &self,
        p: &PrincipalRecord,
        old: &PrincipalRecord,
    ) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        let n = self
            .exec(
                sql::UPDATE_PRINCIPAL_IF,
                &[
                    &p.object_id,
                    &p.app_id,
                    &p.upn,
                    &p.display_name,
                    &p.enabled,
                    &p.credentials,
                    &p.attrs,
                    &old.upn,
                    &old.display_name,
                    &old.enabled,
                    &old.credentials,
                    &old.attrs,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn delete_principal(&self, object_id: &str) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        tx.execute(sql::DELETE_MEMBERSHIPS, &[&object_id])
            .await
            .map_err(err)?;
        let n = tx
            .execute(sql::DELETE_PRINCIPAL, &[&object_id])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(n == 1)
    }

    async fn create_application(&self, a: &ApplicationRecord) -> StoreResult<()> {
        self.exec(
            sql::INSERT_APPLICATION,
            &[
                &a.object_id,
                &a.tenant_id,
                &a.app_id,
                &a.display_name,
                &a.credentials,
                &a.attrs,
                &a.created,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_application(&self, object_id: &str) -> StoreResult<Option<ApplicationRecord>> {
        Ok(self
            .applications(&sql::select_applications("object_id = $1"), &[&object_id])
            .await?
            .pop())
    }

    async fn application_by_app_id(&self, app_id: &str) -> StoreResult<Option<ApplicationRecord>> {
        Ok(self
            .applications(&sql::select_applications("app_id = $1"), &[&app_id])
            .await?
            .pop())
    }

    async fn list_applications(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<ApplicationRecord>> {
        let after = cursor.unwrap_or("");
        let rows = self
            .applications(
                &sql::select_applications(
                    "tenant_id = $1 AND object_id > $2 ORDER BY object_id LIMIT $3",
                ),
                &[&tenant_id, &after, &(i64::from(limit) + 1)],
            )
            .await?;
        Ok(sql::by_id_page(rows, limit, |a| a.object_id.clone()))
    }

    async fn update_application(&self, a: &ApplicationRecord) -> StoreResult<bool> {
        let n = self
            .exec(
                sql::UPDATE_APPLICATION,
                &[&a.object_id, &a.display_name, &a.credentials, &a.attrs],
            )
            .await?;
        Ok(n == 1)
    }

    async fn delete_application(&self, object_id: &str) -> StoreResult<bool> {
        Ok(self.exec(sql::DELETE_APPLICATION, &[&object_id]).await? == 1)
    }

    async fn add_member(&self, group_id: &str, member_id: &str) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        Ok(self.exec(sql::ADD_MEMBER, &[&group_id, &member_id]).await? == 1)
    }

    async fn remove_member(&self, group_id: &str, member_id: &str) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        Ok(self
            .exec(sql::REMOVE_MEMBER, &[&group_id, &member_id])
            .await?
            == 1)
    }

    async fn members(&self, group_id: &str) -> StoreResult<Vec<PrincipalRecord>> {
        self.principals(&sql::members(), &[&group_id]).await
    }

    async fn groups_of(&self, member_id: &str) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql::GROUPS_OF).await.map_err(err)?;
        c.query(&stmt, &[&member_id])
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.try_get(0).map_err(err))
            .collect()
    }
}
