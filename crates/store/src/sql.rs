//! Statements shared by both dialects (written with `$N` placeholders; SQLite
//! runs them as `?N`) and the row shape both decode into.

use std::collections::BTreeMap;

use keyhaven_core::object::{Attributes, DeletedInfo, ObjectKind, VersionRecord};
use keyhaven_core::store::{StoreError, StoreResult};

/// Columns of a version row joined with its object row, in `RowData` order.
pub const VERSION_COLS: &str = "o.name, v.version, v.enabled, v.nbf, v.exp, v.created, v.updated, \
     v.content_type, v.tags, v.managed, v.payload, v.meta, v.seq, o.deleted_date, o.scheduled_purge_date, v.kind";

pub fn get_latest() -> String {
    format!(
        "SELECT {VERSION_COLS} FROM objects o JOIN versions v ON v.seq = o.latest_seq \
         WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3 AND o.deleted_date IS NULL"
    )
}

pub fn get_by_version() -> String {
    format!(
        "SELECT {VERSION_COLS} FROM objects o JOIN versions v \
           ON v.vault_id = o.vault_id AND v.kind = o.kind AND v.name_lower = o.name_lower \
         WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3 AND o.deleted_date IS NULL \
           AND v.version = $4"
    )
}

pub fn get_deleted() -> String {
    format!(
        "SELECT {VERSION_COLS} FROM objects o JOIN versions v ON v.seq = o.latest_seq \
         WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3 AND o.deleted_date IS NOT NULL"
    )
}

/// `$3` is the name cursor ('' for the first page), `$4` the limit.
pub fn list_latest(deleted: bool) -> String {
    let state = if deleted { "IS NOT NULL" } else { "IS NULL" };
    format!(
        "SELECT {VERSION_COLS} FROM objects o JOIN versions v ON v.seq = o.latest_seq \
         WHERE o.vault_id = $1 AND o.kind = $2 AND o.deleted_date {state} AND o.name_lower > $3 \
         ORDER BY o.name_lower LIMIT $4"
    )
}

/// `$4` is the seq cursor (0 for the first page), `$5` the limit.
pub fn list_versions() -> String {
    format!(
        "SELECT {VERSION_COLS} FROM objects o JOIN versions v \
           ON v.vault_id = o.vault_id AND v.kind = o.kind AND v.name_lower = o.name_lower \
         WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3 AND o.deleted_date IS NULL \
           AND v.seq > $4 ORDER BY v.seq LIMIT $5"
    )
}

/// Latest versions of a vault's live objects expiring in [`$2`, `$3`),
/// `$4` the seq cursor, `$5` the limit (the expiry scan; index `versions_exp`).
pub fn expiring() -> String {
    format!(
        "SELECT {VERSION_COLS} FROM versions v JOIN objects o \
           ON o.vault_id = v.vault_id AND o.kind = v.kind AND o.name_lower = v.name_lower \
          AND o.latest_seq = v.seq \
         WHERE v.vault_id = $1 AND v.exp IS NOT NULL AND v.exp >= $2 AND v.exp < $3 \
           AND o.deleted_date IS NULL AND v.seq > $4 ORDER BY v.seq LIMIT $5"
    )
}

pub fn list_deleted_versions() -> String {
    format!(
        "SELECT {VERSION_COLS} FROM objects o JOIN versions v \
           ON v.vault_id = o.vault_id AND v.kind = o.kind AND v.name_lower = o.name_lower \
         WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3 AND o.deleted_date IS NOT NULL \
           AND v.seq > $4 ORDER BY v.seq LIMIT $5"
    )
}

/// `SELECT` of the given columns of one object row ($1 vault, $2 kind, $3
/// lower-case name).
macro_rules! object_row {
    ($cols:literal) => {
        concat!(
            "SELECT ",
            $cols,
            " FROM objects WHERE vault_id = $1 AND kind = $2 AND name_lower = $3"
        )
    };
}
pub const OBJECT_STATE: &str = object_row!("deleted_date");
/// PostgreSQL: [`OBJECT_STATE`] locking the row.
pub const OBJECT_STATE_FOR_UPDATE: &str = concat!(object_row!("deleted_date"), " FOR UPDATE");
/// PostgreSQL: [`OBJECT_STATE`] and the name as stored, locking the row.
/// (Not joined with the latest version: when the lock had to wait, only the
/// locked row is read again, so a joined row would be the one from before
/// the other writer committed.)
pub const OBJECT_STATE_NAME_FOR_UPDATE: &str =
    concat!(object_row!("deleted_date, name"), " FOR UPDATE");
/// Whether an object's latest version is owned by a certificate (no row
/// when the object has no version yet).
pub const LATEST_MANAGED: &str =
    "SELECT v.managed FROM objects o JOIN versions v ON v.seq = o.latest_seq \
     WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3";
pub const INSERT_OBJECT: &str = "INSERT INTO objects (vault_id, kind, name_lower, name) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
/// Whether the vault whose lower-cased ARM id (with a trailing `/`) is
/// parameter `$p` has an event subscription (events are recorded only then).
macro_rules! subscribed {
    ($p:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM resources WHERE kind = 'Microsoft.EventGrid/eventSubscriptions' \
             AND substr(id_lower, 1, length(",
            $p,
            ")) = ",
            $p,
            ")"
        )
    };
}
macro_rules! version_columns {
    () => {
        "INSERT INTO versions (vault_id, kind, name_lower, version, enabled, nbf, exp, created, updated, content_type, tags, managed, payload, meta) "
    };
}
macro_rules! insert_version {
    () => {
        concat!(
            version_columns!(),
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )
    };
}
pub const INSERT_VERSION: &str = insert_version!();
/// PostgreSQL: [`INSERT_VERSION`] and [`SET_LATEST`] in one statement (the
/// object row's count is what `execute` returns: 1).
pub const PG_INSERT_VERSION_SET_LATEST: &str = concat!(
    "WITH v AS (",
    insert_version!(),
    " RETURNING seq) UPDATE objects SET latest_seq = (SELECT seq FROM v) \
     WHERE vault_id = $1 AND kind = $2 AND name_lower = $3"
);
/// PostgreSQL, one version written alone, with at most one event, in one
/// statement: [`PG_INSERT_VERSION_SET_LATEST`] guarded by the checks
/// `put_versions_with` reads (the object is not soft-deleted; its latest
/// version, if any, is a certificate's exactly when this one is:
/// [`check_managed`]) and, when $15 is not NULL, by the object being stored
/// under that name exactly (the name the event was made with); and the
/// event ($16…$19: `RECORD_EVENT`'s parameters, $16 NULL for none),
/// recorded only with the version. A write the guard refuses changes
/// nothing (0 rows), so the transaction's COMMIT can travel with it. The
/// guard takes the row lock itself (held already, unless a statement before
/// it failed in the client only), and its snapshot follows the lock, so it
/// sees what the checks see.
pub const PG_GUARDED_INSERT_VERSION_SET_LATEST: &str = concat!(
    "WITH ok AS (SELECT 1 FROM objects o LEFT JOIN versions l ON l.seq = o.latest_seq \
     WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3 AND o.deleted_date IS NULL \
     AND (l.managed IS NULL OR l.managed = $12) AND ($15::text IS NULL OR o.name = $15) \
     FOR UPDATE OF o), v AS (",
    version_columns!(),
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 WHERE EXISTS (SELECT 1 FROM ok) \
     RETURNING seq), e AS (INSERT INTO outbox (id, subscription, body, due) SELECT $16, '', $17, $19 \
     WHERE $16::text IS NOT NULL AND EXISTS (SELECT 1 FROM v) AND ",
    subscribed!("$18"),
    " ON CONFLICT DO NOTHING) UPDATE objects o SET latest_seq = v.seq FROM v \
     WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3"
);
pub const SET_LATEST: &str =
    "UPDATE objects SET latest_seq = $4 WHERE vault_id = $1 AND kind = $2 AND name_lower = $3";
/// Compare-and-set: written only if every mutable field still holds what
/// was read ($12…$18). `IS NOT DISTINCT FROM` is SQLite's `IS` (see `q`).
pub const UPDATE_VERSION: &str = "UPDATE versions SET enabled = $5, nbf = $6, exp = $7, updated = $8, content_type = $9, tags = $10, meta = $11 \
     WHERE vault_id = $1 AND kind = $2 AND name_lower = $3 AND version = $4 \
     AND enabled = $12 AND nbf IS NOT DISTINCT FROM $13 AND exp IS NOT DISTINCT FROM $14 AND updated = $15 \
     AND content_type IS NOT DISTINCT FROM $16 AND tags = $17 AND meta = $18 \
     AND EXISTS (SELECT 1 FROM objects o WHERE o.vault_id = $1 AND o.kind = $2 AND o.name_lower = $3 AND o.deleted_date IS NULL)";
/// Whether a live version exists at all (after a compare-and-set wrote
/// nothing): a soft-deleted object's versions count as missing.
pub const VERSION_EXISTS: &str =
    "SELECT 1 FROM versions v JOIN objects o ON o.vault_id = v.vault_id AND o.kind = v.kind AND o.name_lower = v.name_lower \
     WHERE v.vault_id = $1 AND v.kind = $2 AND v.name_lower = $3 AND v.version = $4 AND o.deleted_date IS NULL";
pub const MARK_DELETED: &str = "UPDATE objects SET deleted_date = $4, scheduled_purge_date = $5 \
     WHERE vault_id = $1 AND kind = $2 AND name_lower = $3 AND deleted_date IS NULL AND latest_seq IS NOT NULL";
pub const RECOVER: &str = "UPDATE objects SET deleted_date = NULL, scheduled_purge_date = NULL \
     WHERE vault_id = $1 AND kind = $2 AND name_lower = $3 AND deleted_date IS NOT NULL \
       AND (scheduled_purge_date IS NULL OR scheduled_purge_date > $4)";
pub const DELETE_DELETED_OBJECT: &str = "DELETE FROM objects WHERE vault_id = $1 AND kind = $2 AND name_lower = $3 AND deleted_date IS NOT NULL";
pub const DELETE_VERSIONS: &str =
    "DELETE FROM versions WHERE vault_id = $1 AND kind = $2 AND name_lower = $3";
pub const PURGE_EXPIRED_VERSIONS: &str = "DELETE FROM versions WHERE EXISTS (SELECT 1 FROM objects o \
     WHERE o.vault_id = versions.vault_id AND o.kind = versions.kind AND o.name_lower = versions.name_lower \
       AND o.scheduled_purge_date IS NOT NULL AND o.scheduled_purge_date <= $1)";
pub const PURGE_EXPIRED_OBJECTS: &str =
    "DELETE FROM objects WHERE scheduled_purge_date IS NOT NULL AND scheduled_purge_date <= $1";
/// PostgreSQL: the expiry purge as one statement. The object rows are
/// deleted first (locking them: a recover that committed meanwhile is
/// re-checked and kept), and the versions and policies deleted are exactly
/// those of the objects deleted, so a recovered object never loses them.
pub const PG_PURGE_EXPIRED: &str = "WITH gone AS ( \
       DELETE FROM objects WHERE scheduled_purge_date IS NOT NULL AND scheduled_purge_date <= $1 \
       RETURNING vault_id, kind, name_lower), \
     v AS (DELETE FROM versions USING gone WHERE versions.vault_id = gone.vault_id \
       AND versions.kind = gone.kind AND versions.name_lower = gone.name_lower), \
     p AS (DELETE FROM object_policies USING gone WHERE object_policies.vault_id = gone.vault_id \
       AND object_policies.kind = gone.kind AND object_policies.name_lower = gone.name_lower) \
     SELECT count(*) FROM gone";
pub const GET_SETTING: &str = "SELECT value FROM settings WHERE key = $1";
pub const REPLACE_SETTING: &str = "UPDATE settings SET value = $3 WHERE key = $1 AND value = $2";
pub const PUT_SETTING: &str =
    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING";
/// PostgreSQL: the change and its notification in one statement, so every
/// listening node hears of exactly the changes that committed.
pub const PG_REPLACE_SETTING: &str =
    "WITH u AS (UPDATE settings SET value = $3 WHERE key = $1 AND value = $2 RETURNING key) \
     SELECT pg_notify('keyhaven_settings', key) FROM u";
pub const PG_PUT_SETTING: &str = "WITH i AS (INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING key) \
     SELECT pg_notify('keyhaven_settings', key) FROM i";
pub const PRINCIPAL_COLS: &str = "p.object_id, p.tenant_id, p.kind, p.app_id, p.upn, p.display_name, p.enabled, p.credentials, p.attrs, p.created";
pub const INSERT_PRINCIPAL: &str = "INSERT INTO principals (object_id, tenant_id, kind, app_id, upn, display_name, enabled, credentials, attrs, created) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub const UPDATE_PRINCIPAL_IF: &str = "UPDATE principals SET app_id = $2, upn = $3, display_name = $4, enabled = $5, credentials = $6, attrs = $7 \
     WHERE object_id = $1 AND upn IS NOT DISTINCT FROM $8 AND display_name = $9 AND enabled = $10 AND credentials = $11 AND attrs = $12";
pub const DELETE_PRINCIPAL: &str = "DELETE FROM principals WHERE object_id = $1";
pub const DELETE_MEMBERSHIPS: &str =
    "DELETE FROM group_members WHERE group_id = $1 OR member_id = $1";
pub const APPLICATION_COLS: &str =
    "object_id, tenant_id, app_id, display_name, credentials, attrs, created";
pub const INSERT_APPLICATION: &str = "INSERT INTO applications (object_id, tenant_id, app_id, display_name, credentials, attrs, created) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub const UPDATE_APPLICATION: &str =
    "UPDATE applications SET display_name = $2, credentials = $3, attrs = $4 WHERE object_id = $1";
pub const DELETE_APPLICATION: &str = "DELETE FROM applications WHERE object_id = $1";
pub const ADD_MEMBER: &str =
    "INSERT INTO group_members (group_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub const REMOVE_MEMBER: &str = "DELETE FROM group_members WHERE group_id = $1 AND member_id = $2";
pub const GROUPS_OF: &str =
    "SELECT group_id FROM group_members WHERE member_id = $1 ORDER BY group_id";

/// `SELECT` of principals with a `WHERE` clause.
pub fn select_principals(filter: &str) -> String {
    format!("SELECT {PRINCIPAL_COLS} FROM principals p WHERE {filter}")
}

/// Direct members of group `$1`.
pub fn members() -> String {
    format!(
        "SELECT {PRINCIPAL_COLS} FROM group_members m JOIN principals p ON p.object_id = m.member_id \
         WHERE m.group_id = $1 ORDER BY p.object_id"
    )
}

/// `SELECT` of applications with a `WHERE` clause.
pub fn select_applications(filter: &str) -> String {
    format!("SELECT {APPLICATION_COLS} FROM applications WHERE {filter}")
}
pub const INSERT_VAULT: &str = "INSERT INTO vaults (name, id, tenant_id, subscription_id, resource_group, sku, retention_days, purge_protection, wrapped_key, created, properties) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
pub const GET_VAULT: &str = "SELECT name, id, tenant_id, subscription_id, resource_group, sku, retention_days, purge_protection, wrapped_key, created, properties, rev FROM vaults WHERE name = $1";
pub const LIST_VAULTS: &str = "SELECT name, id, tenant_id, subscription_id, resource_group, sku, retention_days, purge_protection, wrapped_key, created, properties, rev FROM vaults ORDER BY name";
pub const REPLACE_WRAPPED_KEY: &str =
    "UPDATE vaults SET wrapped_key = $3 WHERE id = $1 AND wrapped_key = $2";
/// Compare-and-set on the row version read (`$6`).
pub const REPLACE_VAULT: &str = "UPDATE vaults SET sku = $2, retention_days = $3, purge_protection = $4, properties = $5, rev = rev + 1 WHERE id = $1 AND rev = $6";
/// The vault row goes first, only at the row version read (`$2`): its
/// wrapped data key goes with it (crypto-shredding), and nothing else is
/// deleted unless it went.
pub const PURGE_VAULT_ROW: &str = "DELETE FROM vaults WHERE id = $1 AND rev = $2";
/// Then these, in order, each with the vault id as `$1`.
pub const PURGE_VAULT_DATA: [&str; 3] = [
    "DELETE FROM versions WHERE vault_id = $1",
    "DELETE FROM objects WHERE vault_id = $1",
    "DELETE FROM object_policies WHERE vault_id = $1",
];

/// A `vaults` row in `GET_VAULT` column order.
pub type VaultRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    bool,
    Vec<u8>,
    i64,
    String,
    i64,
);

/// Decodes a vault row.
pub fn vault_record(row: VaultRow) -> StoreResult<keyhaven_core::vault::VaultRecord> {
    let (
        name,
        id,
        tenant_id,
        subscription_id,
        resource_group,
        sku,
        retention_days,
        purge_protection,
        wrapped_key,
        created,
        properties,
        rev,
    ) = row;
    Ok(keyhaven_core::vault::VaultRecord {
        id,
        name: name
            .parse()
            .map_err(|_| StoreError::Corrupt("vault name".into()))?,
        tenant_id,
        subscription_id,
        resource_group,
        sku,
        retention_days,
        purge_protection,
        wrapped_key,
        created,
        properties: parse_properties(&properties)?,
        rev,
    })
}

/// A decoded version row, dialect-neutral.
pub struct RowData {
    pub name: String,
    pub version: String,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
    pub content_type: Option<String>,
    pub tags: String,
    pub managed: bool,
    pub payload: Vec<u8>,
    pub meta: String,
    pub seq: i64,
    pub deleted_date: Option<i64>,
    pub scheduled_purge_date: Option<i64>,
    pub kind: String,
}

impl RowData {
    pub fn into_record(self) -> StoreResult<VersionRecord> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("bad {what} in versions row"));
        Ok(VersionRecord {
            kind: ObjectKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            name: self.name.parse().map_err(|_| corrupt("name"))?,
            version: self.version.parse().map_err(|_| corrupt("version"))?,
            attributes: Attributes {
                enabled: self.enabled,
                nbf: self.nbf,
                exp: self.exp,
                created: self.created,
                updated: self.updated,
            },
            tags: serde_json::from_str::<BTreeMap<String, String>>(&self.tags)
                .map_err(|_| corrupt("tags"))?,
            content_type: self.content_type,
            managed: self.managed,
            payload: self.payload,
            meta: self.meta,
        })
    }

    pub fn deleted_info(&self) -> StoreResult<DeletedInfo> {
        match (self.deleted_date, self.scheduled_purge_date) {
            (Some(deleted_date), Some(scheduled_purge_date)) => Ok(DeletedInfo {
                deleted_date,
                scheduled_purge_date,
            }),
            _ => Err(StoreError::Corrupt("deleted object without dates".into())),
        }
    }
}

/// Serializes tags for the `tags` column.
pub fn tags_json(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| String::from("{}"))
}

/// Builds a page from `limit + 1` fetched rows: the extra row only signals
/// that another page exists; the cursor is taken from the last kept row.
pub fn page_of<T>(mut rows: Vec<(T, String)>, limit: u32) -> keyhaven_core::object::Page<T> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|(_, c)| c.clone())
    } else {
        None
    };
    keyhaven_core::object::Page {
        items: rows.into_iter().map(|(t, _)| t).collect(),
        next,
    }
}

/// Parses a seq cursor; a foreign cursor starts from the beginning.
pub fn seq_cursor(cursor: Option<&str>) -> i64 {
    cursor.and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Unwraps the deletion info of a deleted listing.
pub fn with_deleted_info(
    page: keyhaven_core::object::Page<(VersionRecord, Option<DeletedInfo>)>,
) -> StoreResult<keyhaven_core::object::Page<(VersionRecord, DeletedInfo)>> {
    let next = page.next;
    let items = page
        .items
        .into_iter()
        .map(|(r, i)| {
            i.map(|i| (r, i))
                .ok_or_else(|| StoreError::Corrupt("deleted object without dates".into()))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(keyhaven_core::object::Page { items, next })
}

/// A page of objects by name (cursor: the lower-cased name) from `limit + 1`
/// rows of `list_latest`, with deletion info when listing deleted objects.
pub fn name_page(
    rows: Vec<RowData>,
    limit: u32,
    deleted: bool,
) -> StoreResult<keyhaven_core::object::Page<(VersionRecord, Option<DeletedInfo>)>> {
    let rows = rows
        .into_iter()
        .map(|r| {
            let info = if deleted {
                Some(r.deleted_info()?)
            } else {
                None
            };
            let rec = r.into_record()?;
            let cursor = rec.name.key();
            Ok(((rec, info), cursor))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(page_of(rows, limit))
}

/// A page of versions (cursor: the insertion sequence) from `limit + 1` rows
/// of `list_versions`.
pub fn version_page(
    rows: Vec<RowData>,
    limit: u32,
) -> StoreResult<keyhaven_core::object::Page<VersionRecord>> {
    let rows = rows
        .into_iter()
        .map(|r| {
            let seq = r.seq.to_string();
            r.into_record().map(|rec| (rec, seq))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(page_of(rows, limit))
}

pub const RESOURCE_COLS: &str =
    "id, kind, subscription_id, resource_group, name, location, tags, properties, created, updated";
pub const UPSERT_RESOURCE: &str = "INSERT INTO resources (id_lower, id, kind, subscription_id, resource_group, name, location, tags, properties, created, updated) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (id_lower) DO UPDATE SET location = excluded.location, tags = excluded.tags, properties = excluded.properties, updated = excluded.updated";
pub const RESOURCE_EXISTS: &str = "SELECT 1 FROM resources WHERE id_lower = $1";
pub const DELETE_RESOURCE: &str = "DELETE FROM resources WHERE id_lower = $1";

/// `SELECT` of resources with a `WHERE` clause.
pub fn select_resources(filter: &str) -> String {
    format!("SELECT {RESOURCE_COLS} FROM resources WHERE {filter}")
}

/// Serializes vault properties for the `properties` column.
pub fn properties_json(p: &keyhaven_core::vault::VaultProperties) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| String::from("{}"))
}

/// Parses the `properties` column.
pub fn parse_properties(s: &str) -> StoreResult<keyhaven_core::vault::VaultProperties> {
    serde_json::from_str(s).map_err(|_| StoreError::Corrupt("vault properties".into()))
}

/// A page of directory rows keyed by id, from `limit + 1` rows.
pub fn by_id_page<T>(
    items: Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> String,
) -> keyhaven_core::object::Page<T> {
    let rows = items.into_iter().map(|t| {
        let c = id(&t);
        (t, c)
    });
    page_of(rows.collect(), limit)
}

pub const GET_POLICY: &str = "SELECT body, created, updated FROM object_policies \
     WHERE vault_id = $1 AND kind = $2 AND name_lower = $3";
pub const PUT_POLICY: &str =
    "INSERT INTO object_policies (vault_id, kind, name_lower, body, created, updated) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (vault_id, kind, name_lower) \
     DO UPDATE SET body = excluded.body, updated = excluded.updated";
/// A policy where there was none (compare-and-set against "absent").
pub const INSERT_POLICY_NEW: &str =
    "INSERT INTO object_policies (vault_id, kind, name_lower, body, created, updated) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
/// A policy replaced only if its body still is `$6`.
pub const REPLACE_POLICY_IF: &str = "UPDATE object_policies SET body = $4, updated = $5 \
     WHERE vault_id = $1 AND kind = $2 AND name_lower = $3 AND body = $6";
pub const DELETE_POLICY: &str =
    "DELETE FROM object_policies WHERE vault_id = $1 AND kind = $2 AND name_lower = $3";
pub const PURGE_EXPIRED_POLICIES: &str =
    "DELETE FROM object_policies WHERE EXISTS (SELECT 1 FROM objects o \
     WHERE o.vault_id = object_policies.vault_id AND o.kind = object_policies.kind \
       AND o.name_lower = object_policies.name_lower \
       AND o.scheduled_purge_date IS NOT NULL AND o.scheduled_purge_date <= $1)";
/// `$2`/`$3` are the (vault id, name) cursor ('' for the first page), `$4` the limit.
pub const LIST_POLICIES: &str =
    "SELECT p.vault_id, p.name_lower, vt.name, o.name, p.body, p.created, p.updated \
     FROM object_policies p \
     JOIN objects o ON o.vault_id = p.vault_id AND o.kind = p.kind AND o.name_lower = p.name_lower \
     JOIN vaults vt ON vt.id = p.vault_id \
     WHERE p.kind = $1 AND o.deleted_date IS NULL AND o.latest_seq IS NOT NULL \
       AND (p.vault_id > $2 OR (p.vault_id = $2 AND p.name_lower > $3)) \
     ORDER BY p.vault_id, p.name_lower LIMIT $4";
pub const CLAIM_JOB: &str = "INSERT INTO jobs (job, lease_until, finished) VALUES ($1, $2, NULL) \
     ON CONFLICT (job) DO UPDATE SET lease_until = excluded.lease_until \
     WHERE jobs.finished IS NULL AND jobs.lease_until <= $3";
pub const PUT_USAGE: &str =
    "INSERT INTO throttle_usage (vault_id, class, win, node, count) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (vault_id, class, win, node) DO UPDATE SET count = excluded.count";
pub const SUM_USAGE: &str = "SELECT vault_id, class, CAST(SUM(count) AS BIGINT) FROM throttle_usage WHERE win = $1 GROUP BY vault_id, class";
pub const FORGET_USAGE: &str = "DELETE FROM throttle_usage WHERE win < $1";
/// Finished jobs among `$1`, a JSON array of job ids (one statement for
/// any number, in both dialects).
pub const SQLITE_FINISHED_JOBS: &str =
    "SELECT job FROM jobs WHERE finished IS NOT NULL AND job IN (SELECT value FROM json_each($1))";
pub const PG_FINISHED_JOBS: &str =
    "SELECT job FROM jobs WHERE finished IS NOT NULL AND job = ANY($1)";
/// Finishes a job once: a node whose lease ran out finds it finished by the
/// node that took over and records nothing.
pub const FINISH_JOB: &str = "UPDATE jobs SET finished = $2 WHERE job = $1 AND finished IS NULL";
pub const FORGET_JOBS: &str = "DELETE FROM jobs WHERE finished IS NOT NULL AND finished < $1";

// The outbox of change events: an entry with an empty `subscription` is an
// event not yet matched to subscriptions; the others are deliveries.
pub const INSERT_EVENT: &str = "INSERT INTO outbox (id, subscription, body, due) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
/// Records an event (`$1` id, `$2` body, due at `$4`, its time in
/// milliseconds, so older events go first) only while its vault has an
/// event subscription: a resource of that type under `$3`, the vault's ARM
/// id in lower case with a trailing `/`. The check walks the deployment's
/// event subscriptions (the `kind` index), not its other resources.
pub const RECORD_EVENT: &str = concat!(
    "INSERT INTO outbox (id, subscription, body, due) SELECT $1, '', $2, $4 WHERE ",
    subscribed!("$3"),
    " ON CONFLICT DO NOTHING"
);
pub const OBJECT_NAME: &str = object_row!("name");
/// PostgreSQL: claims due entries not under an unexpired claim, oldest due
/// first; rows another claim holds are skipped, and the outer condition is
/// checked again against the row as it is when locked.
pub const PG_CLAIM_EVENTS: &str = "UPDATE outbox SET claim = $1, claimed_until = $2 \
     WHERE claimed_until <= $3 AND due <= $3 AND (id, subscription) IN \
     (SELECT id, subscription FROM outbox WHERE due <= $3 AND claimed_until <= $3 \
      ORDER BY due LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, subscription, body, attempts";
/// SQLite (one writer; no `RETURNING` before 3.35): the due entries, then
/// `SQLITE_CLAIM_EVENT` on each, in one immediate transaction.
pub const SQLITE_DUE_EVENTS: &str = "SELECT id, subscription, body, attempts FROM outbox \
     WHERE due <= $1 AND claimed_until <= $1 ORDER BY due LIMIT $2";
pub const SQLITE_CLAIM_EVENT: &str =
    "UPDATE outbox SET claim = $3, claimed_until = $4 WHERE id = $1 AND subscription = $2";
/// Sets aside an entry that is not an event (corrupt, or written by a newer
/// version): never due again, kept for an operator to look at.
pub const PARK_EVENT: &str =
    "UPDATE outbox SET due = 9223372036854775807, claim = '', claimed_until = 0, \
     last_error = 'not an event this node can read' WHERE id = $1 AND subscription = $2";
pub const DELETE_CLAIMED_EVENT: &str =
    "DELETE FROM outbox WHERE id = $1 AND subscription = $2 AND claim = $3";
pub const RETRY_EVENT: &str = "UPDATE outbox SET due = $4, attempts = attempts + 1, last_error = $5, claim = '', claimed_until = 0 \
     WHERE id = $1 AND subscription = $2 AND claim = $3";
pub const RELEASE_EVENT: &str = "UPDATE outbox SET due = $4, claim = '', claimed_until = 0 \
     WHERE id = $1 AND subscription = $2 AND claim = $3";
pub const OUTBOX_LEN: &str = "SELECT COUNT(*) FROM outbox";

/// One claimed outbox row as an item; `None` for a row that is not an
/// event (the store parks it with `PARK_EVENT`).
pub fn outbox_item(
    id: &str,
    subscription: String,
    body: &str,
    attempts: i64,
    claim: &str,
) -> Option<keyhaven_core::events::OutboxItem> {
    let event = keyhaven_core::events::ChangeEvent::from_json(body).filter(|e| e.id == id);
    let Some(event) = event else {
        tracing::warn!(event = %id, "an outbox entry is not an event this node can read; set aside");
        return None;
    };
    Some(keyhaven_core::events::OutboxItem {
        event,
        subscription,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        claim: claim.to_owned(),
    })
}

/// When an event's entries are first due (Unix milliseconds): its time, so
/// the outbox is worked oldest first and retries are not starved by new
/// events.
pub fn event_due(e: &keyhaven_core::events::ChangeEvent) -> i64 {
    e.time.saturating_mul(1000)
}

/// The version among `recs` an event is about, if any.
pub fn event_about<'a>(
    e: &keyhaven_core::events::ChangeEvent,
    recs: &'a [VersionRecord],
) -> Option<&'a VersionRecord> {
    recs.iter()
        .find(|r| r.kind.title() == e.object_type && r.name.as_str() == e.object_name)
}

/// The id, stored body, subscription prefix and due time (`RECORD_EVENT`'s
/// parameters) of each event, named as its object is stored when it is about one of `recs`
/// (`stored_name` reads that name in the write's transaction).
pub fn event_bodies(
    events: &[keyhaven_core::events::ChangeEvent],
    recs: &[VersionRecord],
    mut stored_name: impl FnMut(&VersionRecord) -> StoreResult<Option<String>>,
) -> StoreResult<Vec<(String, String, String, i64)>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let mut e = e.clone();
        if let Some(rec) = event_about(&e, recs) {
            if let Some(name) = stored_name(rec)? {
                e.object_name = name;
            }
        }
        let under = format!("{}/", e.vault_id.to_ascii_lowercase());
        out.push((e.id.clone(), e.to_json(), under, event_due(&e)));
    }
    Ok(out)
}

/// `rec`'s name as its object row stores it (`stored`, read in the write's
/// transaction: the casing the object was created with), or `rec`'s own
/// when there is no row.
pub fn stored_object_name(
    stored: Option<String>,
    rec: &VersionRecord,
) -> StoreResult<keyhaven_core::ids::ObjectName> {
    match stored {
        Some(name) => name
            .parse()
            .map_err(|_| StoreError::Corrupt("an object's stored name".into())),
        None => Ok(rec.name.clone()),
    }
}

/// One row of `LIST_POLICIES`.
pub type PolicyRow = (String, String, String, String, String, i64, i64);

/// Splits a policy cursor into (vault id, name).
pub fn policy_cursor(cursor: Option<&str>) -> (String, String) {
    cursor
        .and_then(|c| c.split_once('/'))
        .map(|(v, n)| (v.to_owned(), n.to_owned()))
        .unwrap_or_default()
}

/// A page of policies from `limit + 1` rows.
pub fn policy_page(
    mut rows: Vec<PolicyRow>,
    limit: u32,
) -> StoreResult<keyhaven_core::object::Page<keyhaven_core::store::ScheduledPolicy>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|(v, n, ..)| format!("{v}/{n}"))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|(_, _, vault_name, name, body, created, updated)| {
            Ok(keyhaven_core::store::ScheduledPolicy {
                vault_name,
                name: name
                    .parse()
                    .map_err(|_| StoreError::Corrupt("object name".into()))?,
                policy: keyhaven_core::store::PolicyRecord {
                    body,
                    created,
                    updated,
                },
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(keyhaven_core::object::Page { items, next })
}

/// [`APPEND_AUDIT`] for a batch, as column arrays (PostgreSQL).
pub const APPEND_AUDITS: &str = "INSERT INTO audit_events (vault, time, operation, caller, result, record) SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])";
pub const APPEND_AUDIT: &str = "INSERT INTO audit_events (vault, time, operation, caller, result, record) VALUES ($1, $2, $3, $4, $5, $6)";
pub const QUERY_AUDIT: &str =
    "SELECT record FROM audit_events WHERE vault = $1 AND time >= $2 AND time <= $3 \
     AND ($4 = '' OR operation = $4) AND ($5 = '' OR caller = $5) AND ($6 = '' OR result = $6) \
     ORDER BY seq DESC LIMIT $7";

pub const ADD_METRICS: &str =
    "INSERT INTO metric_minutes (vault, minute, activity, status, count, latency_ms) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (vault, minute, activity, status) DO UPDATE SET count = metric_minutes.count + excluded.count, \
     latency_ms = metric_minutes.latency_ms + excluded.latency_ms";
/// PostgreSQL: a whole batch in one statement (keys are distinct).
pub const ADD_METRICS_BATCH: &str =
    "INSERT INTO metric_minutes (vault, minute, activity, status, count, latency_ms) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[]) \
     ON CONFLICT (vault, minute, activity, status) DO UPDATE SET count = metric_minutes.count + excluded.count, \
     latency_ms = metric_minutes.latency_ms + excluded.latency_ms";
pub const FORGET_METRICS: &str = "DELETE FROM metric_minutes WHERE minute < $1";
pub const QUERY_METRICS: &str = "SELECT $2 + ((minute - $2) / $4) * $4 AS bucket, activity, status, \
     CAST(SUM(count) AS BIGINT), CAST(SUM(latency_ms) AS BIGINT) FROM metric_minutes \
     WHERE vault = $1 AND minute >= $2 AND minute <= $3 GROUP BY bucket, activity, status ORDER BY bucket, activity, status";

/// Refuses a version whose `managed` flag differs from the object's latest
/// (`latest`: `None` when the object has no version yet): a plain write
/// onto a certificate's key or secret, or a certificate onto a plain one —
/// checked inside the write's transaction, so a race past the service's
/// earlier checks is caught too.
pub fn check_managed(
    latest: Option<bool>,
    rec: &keyhaven_core::object::VersionRecord,
) -> StoreResult<()> {
    match latest {
        Some(true) if !rec.managed => Err(StoreError::Managed {
            kind: rec.kind,
            name: rec.name.to_string(),
        }),
        Some(false) if rec.managed => Err(StoreError::NameExists {
            kind: rec.kind,
            name: rec.name.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Migration 14 (both dialects): Azure Policy compliance states.
pub const POLICY_STATES_TABLE: &str = "CREATE TABLE policy_states (
        assignment_id TEXT NOT NULL, reference_id TEXT NOT NULL, resource_id TEXT NOT NULL,
        component TEXT NOT NULL, compliance TEXT NOT NULL, time BIGINT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (assignment_id, reference_id, resource_id, component));
     CREATE INDEX policy_states_by_resource ON policy_states (resource_id);";
pub const PUT_POLICY_STATE: &str = "INSERT INTO policy_states \
     (assignment_id, reference_id, resource_id, component, compliance, time, record) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (assignment_id, reference_id, resource_id, component) DO UPDATE SET \
     compliance = excluded.compliance, time = excluded.time, record = excluded.record";
pub const CLEAR_POLICY_STATES: &str =
    "DELETE FROM policy_states WHERE assignment_id = $1 AND component = ''";
pub const FORGET_POLICY_STATES: &str = "DELETE FROM policy_states WHERE assignment_id = $1";
pub const LIST_POLICY_STATES: &str = "SELECT assignment_id, reference_id, resource_id, component, compliance, time, record \
     FROM policy_states WHERE resource_id = CAST($1 AS TEXT) \
     OR substr(resource_id, 1, length(CAST($1 AS TEXT)) + 1) = CAST($1 AS TEXT) || '/' OR assignment_id = CAST($1 AS TEXT) \
     ORDER BY resource_id, component, assignment_id, reference_id LIMIT $2";
