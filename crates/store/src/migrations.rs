//! Versioned schema migrations, one list per dialect. A migration is never
//! edited once released; changes are new entries.
//!
//! Migration 8 makes every write to authorization data (vaults, ARM
//! resources other than dead letters, group memberships, a principal's
//! deletion or enabled flag) move the `authz_generation` setting in the same
//! transaction, by trigger, so no caller can commit a change and skip the
//! bump (a cancelled request, a crash, a failed second statement). On
//! PostgreSQL they are deferred constraint triggers: the counter's row is
//! locked only at commit, briefly, never in the middle of a transaction
//! (where it would serialise every authorization write behind a long purge
//! and could close a lock cycle).
//!
//! Migration 9 gives each vault a row version (`rev`), moved by every
//! settings write, so vault writes and purges compare-and-set against the
//! row they read.
//!
//! Migration 14 keeps Azure Policy compliance states (no trigger watches
//! them: writing one moves no authorization generation).
//!
//! Migration 11 adds the outbox of change events, written in the
//! transaction of the change and emptied by delivery from any node.

/// SQLite migrations: (version, SQL).
pub const SQLITE: &[(i64, &str)] = &[
    (
        1,
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE principals (
        object_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, kind TEXT NOT NULL,
        app_id TEXT UNIQUE, display_name TEXT NOT NULL, credentials TEXT NOT NULL);
     CREATE TABLE vaults (
        name TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, tenant_id TEXT NOT NULL,
        subscription_id TEXT NOT NULL, resource_group TEXT NOT NULL, sku TEXT NOT NULL,
        retention_days INTEGER NOT NULL, purge_protection INTEGER NOT NULL,
        wrapped_key BLOB NOT NULL, created INTEGER NOT NULL);
     CREATE TABLE objects (
        vault_id TEXT NOT NULL, kind TEXT NOT NULL, name_lower TEXT NOT NULL, name TEXT NOT NULL,
        latest_seq INTEGER, deleted_date INTEGER, scheduled_purge_date INTEGER,
        PRIMARY KEY (vault_id, kind, name_lower));
     CREATE INDEX objects_purge ON objects (scheduled_purge_date) WHERE scheduled_purge_date IS NOT NULL;
     CREATE TABLE versions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, vault_id TEXT NOT NULL, kind TEXT NOT NULL,
        name_lower TEXT NOT NULL, version TEXT NOT NULL, enabled INTEGER NOT NULL,
        nbf INTEGER, exp INTEGER, created INTEGER NOT NULL, updated INTEGER NOT NULL,
        content_type TEXT, tags TEXT NOT NULL, managed INTEGER NOT NULL, payload BLOB NOT NULL,
        meta TEXT NOT NULL, UNIQUE (vault_id, kind, name_lower, version));
     CREATE INDEX versions_by_name ON versions (vault_id, kind, name_lower, seq);",
    ),
    (
        2,
        "ALTER TABLE principals ADD COLUMN upn TEXT;
     ALTER TABLE principals ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE principals ADD COLUMN attrs TEXT NOT NULL DEFAULT '{}';
     ALTER TABLE principals ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
     CREATE UNIQUE INDEX principals_upn ON principals (tenant_id, lower(upn)) WHERE upn IS NOT NULL;
     CREATE INDEX principals_kind ON principals (tenant_id, kind, object_id);
     CREATE TABLE applications (
        object_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, app_id TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL, credentials TEXT NOT NULL, attrs TEXT NOT NULL,
        created INTEGER NOT NULL);
     CREATE TABLE group_members (
        group_id TEXT NOT NULL, member_id TEXT NOT NULL, PRIMARY KEY (group_id, member_id));
     CREATE INDEX group_members_member ON group_members (member_id);",
    ),
    (
        3,
        "CREATE TABLE resources (
        id_lower TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL,
        subscription_id TEXT NOT NULL, resource_group TEXT NOT NULL, name TEXT NOT NULL,
        location TEXT NOT NULL, tags TEXT NOT NULL, properties TEXT NOT NULL,
        created INTEGER NOT NULL, updated INTEGER NOT NULL);
     CREATE INDEX resources_by_kind ON resources (kind, subscription_id, id_lower);",
    ),
    (
        4,
        "ALTER TABLE vaults ADD COLUMN properties TEXT NOT NULL DEFAULT '{\"enableRbacAuthorization\":true}';",
    ),
    (
        5,
        "CREATE TABLE object_policies (
        vault_id TEXT NOT NULL, kind TEXT NOT NULL, name_lower TEXT NOT NULL, body TEXT NOT NULL,
        created INTEGER NOT NULL, updated INTEGER NOT NULL,
        PRIMARY KEY (vault_id, kind, name_lower));
     CREATE TABLE jobs (job TEXT PRIMARY KEY, lease_until INTEGER NOT NULL, finished INTEGER);",
    ),
    (
        6,
        "CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, vault TEXT NOT NULL, time INTEGER NOT NULL,
        operation TEXT NOT NULL, caller TEXT NOT NULL, result TEXT NOT NULL, record TEXT NOT NULL);
     CREATE INDEX audit_events_by_vault ON audit_events (vault, time);",
    ),
    (
        7,
        "CREATE TABLE throttle_usage (
        vault_id TEXT NOT NULL, class TEXT NOT NULL, win INTEGER NOT NULL, node TEXT NOT NULL,
        count INTEGER NOT NULL, PRIMARY KEY (vault_id, class, win, node));",
    ),
    (
        8,
        "INSERT OR IGNORE INTO settings (key, value) VALUES ('authz_generation', CAST('0' AS BLOB));
     CREATE TRIGGER authz_vault_insert AFTER INSERT ON vaults FOR EACH ROW BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_vault_update AFTER UPDATE ON vaults FOR EACH ROW BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_vault_delete AFTER DELETE ON vaults FOR EACH ROW BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_resource_insert AFTER INSERT ON resources FOR EACH ROW WHEN NEW.kind <> 'Keyhaven.EventGrid/deadLetters' BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_resource_update AFTER UPDATE ON resources FOR EACH ROW WHEN NEW.kind <> 'Keyhaven.EventGrid/deadLetters' BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_resource_delete AFTER DELETE ON resources FOR EACH ROW WHEN OLD.kind <> 'Keyhaven.EventGrid/deadLetters' BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_member_insert AFTER INSERT ON group_members FOR EACH ROW BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_member_delete AFTER DELETE ON group_members FOR EACH ROW BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_principal_update AFTER UPDATE ON principals FOR EACH ROW WHEN OLD.enabled IS NOT NEW.enabled BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;
     CREATE TRIGGER authz_principal_delete AFTER DELETE ON principals FOR EACH ROW BEGIN UPDATE settings SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) WHERE key = 'authz_generation'; END;",
    ),
    (
        9,
        "ALTER TABLE vaults ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;",
    ),
    (
        10,
        "CREATE INDEX versions_exp ON versions (vault_id, exp) WHERE exp IS NOT NULL;",
    ),
    (
        11,
        "CREATE TABLE outbox (
        id TEXT NOT NULL, subscription TEXT NOT NULL, body TEXT NOT NULL, due INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
        claim TEXT NOT NULL DEFAULT '', claimed_until INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (id, subscription));
     CREATE INDEX outbox_due ON outbox (due);",
    ),
    (
        12,
        "CREATE TABLE metric_minutes (
        vault TEXT NOT NULL, minute INTEGER NOT NULL, activity TEXT NOT NULL, status INTEGER NOT NULL,
        count INTEGER NOT NULL, latency_ms INTEGER NOT NULL,
        PRIMARY KEY (vault, minute, activity, status));
     CREATE INDEX metric_minutes_by_minute ON metric_minutes (minute);",
    ),
    (13, crate::logs::LOG_TABLE_SQLITE),
    (14, crate::sql::POLICY_STATES_TABLE),
];

/// PostgreSQL migrations: (version, SQL).
pub const POSTGRES: &[(i64, &str)] = &[
    (
        1,
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
     CREATE TABLE principals (
        object_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, kind TEXT NOT NULL,
        app_id TEXT UNIQUE, display_name TEXT NOT NULL, credentials TEXT NOT NULL);
     CREATE TABLE vaults (
        name TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, tenant_id TEXT NOT NULL,
        subscription_id TEXT NOT NULL, resource_group TEXT NOT NULL, sku TEXT NOT NULL,
        retention_days BIGINT NOT NULL, purge_protection BOOLEAN NOT NULL,
        wrapped_key BYTEA NOT NULL, created BIGINT NOT NULL);
     CREATE TABLE objects (
        vault_id TEXT NOT NULL, kind TEXT NOT NULL, name_lower TEXT NOT NULL, name TEXT NOT NULL,
        latest_seq BIGINT, deleted_date BIGINT, scheduled_purge_date BIGINT,
        PRIMARY KEY (vault_id, kind, name_lower));
     CREATE INDEX objects_purge ON objects (scheduled_purge_date) WHERE scheduled_purge_date IS NOT NULL;
     CREATE TABLE versions (
        seq BIGSERIAL PRIMARY KEY, vault_id TEXT NOT NULL, kind TEXT NOT NULL,
        name_lower TEXT NOT NULL, version TEXT NOT NULL, enabled BOOLEAN NOT NULL,
        nbf BIGINT, exp BIGINT, created BIGINT NOT NULL, updated BIGINT NOT NULL,
        content_type TEXT, tags TEXT NOT NULL, managed BOOLEAN NOT NULL, payload BYTEA NOT NULL,
        meta TEXT NOT NULL, UNIQUE (vault_id, kind, name_lower, version));
     CREATE INDEX versions_by_name ON versions (vault_id, kind, name_lower, seq);",
    ),
    (
        2,
        "ALTER TABLE principals ADD COLUMN upn TEXT;
     ALTER TABLE principals ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT TRUE;
     ALTER TABLE principals ADD COLUMN attrs TEXT NOT NULL DEFAULT '{}';
     ALTER TABLE principals ADD COLUMN created BIGINT NOT NULL DEFAULT 0;
     CREATE UNIQUE INDEX principals_upn ON principals (tenant_id, lower(upn)) WHERE upn IS NOT NULL;
     CREATE INDEX principals_kind ON principals (tenant_id, kind, object_id);
     CREATE TABLE applications (
        object_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, app_id TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL, credentials TEXT NOT NULL, attrs TEXT NOT NULL,
        created BIGINT NOT NULL);
     CREATE TABLE group_members (
        group_id TEXT NOT NULL, member_id TEXT NOT NULL, PRIMARY KEY (group_id, member_id));
     CREATE INDEX group_members_member ON group_members (member_id);",
    ),
    (
        3,
        "CREATE TABLE resources (
        id_lower TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL,
        subscription_id TEXT NOT NULL, resource_group TEXT NOT NULL, name TEXT NOT NULL,
        location TEXT NOT NULL, tags TEXT NOT NULL, properties TEXT NOT NULL,
        created BIGINT NOT NULL, updated BIGINT NOT NULL);
     CREATE INDEX resources_by_kind ON resources (kind, subscription_id, id_lower);",
    ),
    (
        4,
        "ALTER TABLE vaults ADD COLUMN properties TEXT NOT NULL DEFAULT '{\"enableRbacAuthorization\":true}';",
    ),
    (
        5,
        "CREATE TABLE object_policies (
        vault_id TEXT NOT NULL, kind TEXT NOT NULL, name_lower TEXT NOT NULL, body TEXT NOT NULL,
        created BIGINT NOT NULL, updated BIGINT NOT NULL,
        PRIMARY KEY (vault_id, kind, name_lower));
     CREATE TABLE jobs (job TEXT PRIMARY KEY, lease_until BIGINT NOT NULL, finished BIGINT);",
    ),
    (
        6,
        "CREATE TABLE audit_events (
        seq BIGSERIAL PRIMARY KEY, vault TEXT NOT NULL, time BIGINT NOT NULL,
        operation TEXT NOT NULL, caller TEXT NOT NULL, result TEXT NOT NULL, record TEXT NOT NULL);
     CREATE INDEX audit_events_by_vault ON audit_events (vault, time);",
    ),
    (
        7,
        "CREATE TABLE throttle_usage (
        vault_id TEXT NOT NULL, class TEXT NOT NULL, win BIGINT NOT NULL, node TEXT NOT NULL,
        count BIGINT NOT NULL, PRIMARY KEY (vault_id, class, win, node));",
    ),
    (
        8,
        "INSERT INTO settings (key, value) VALUES ('authz_generation', convert_to('0', 'UTF8')) ON CONFLICT DO NOTHING;
     CREATE FUNCTION keyhaven_authz_changed() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
     BEGIN
        UPDATE settings SET value = convert_to((convert_from(value, 'UTF8')::bigint + 1)::text, 'UTF8')
         WHERE key = 'authz_generation';
        PERFORM pg_notify('keyhaven_settings', 'authz_generation');
        RETURN NULL;
     END $$;
     CREATE CONSTRAINT TRIGGER authz_vaults AFTER INSERT OR UPDATE OR DELETE ON vaults
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyhaven_authz_changed();
     CREATE CONSTRAINT TRIGGER authz_resource_write AFTER INSERT OR UPDATE ON resources
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.kind <> 'Keyhaven.EventGrid/deadLetters') EXECUTE FUNCTION keyhaven_authz_changed();
     CREATE CONSTRAINT TRIGGER authz_resource_delete AFTER DELETE ON resources
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.kind <> 'Keyhaven.EventGrid/deadLetters') EXECUTE FUNCTION keyhaven_authz_changed();
     CREATE CONSTRAINT TRIGGER authz_members AFTER INSERT OR DELETE ON group_members
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyhaven_authz_changed();
     CREATE CONSTRAINT TRIGGER authz_principal_update AFTER UPDATE ON principals
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled) EXECUTE FUNCTION keyhaven_authz_changed();
     CREATE CONSTRAINT TRIGGER authz_principal_delete AFTER DELETE ON principals
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyhaven_authz_changed();",
    ),
    (
        9,
        "ALTER TABLE vaults ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;",
    ),
    (
        10,
        "CREATE INDEX versions_exp ON versions (vault_id, exp) WHERE exp IS NOT NULL;",
    ),
    (
        11,
        "CREATE TABLE outbox (
        id TEXT NOT NULL, subscription TEXT NOT NULL, body TEXT NOT NULL, due BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
        claim TEXT NOT NULL DEFAULT '', claimed_until BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id, subscription));
     CREATE INDEX outbox_due ON outbox (due);",
    ),
    (
        12,
        "CREATE TABLE metric_minutes (
        vault TEXT NOT NULL, minute BIGINT NOT NULL, activity TEXT NOT NULL, status BIGINT NOT NULL,
        count BIGINT NOT NULL, latency_ms BIGINT NOT NULL,
        PRIMARY KEY (vault, minute, activity, status));
     CREATE INDEX metric_minutes_by_minute ON metric_minutes (minute);",
    ),
    (13, crate::logs::LOG_TABLE_POSTGRES),
    (14, crate::sql::POLICY_STATES_TABLE),
];
