//! The deployment integrity check: every vault's data key unwraps, every
//! stored version of every object (live and soft-deleted) authenticates
//! under it with the associated data that binds it to its vault, kind, name
//! and version, and key metadata parses. Values are opened and dropped at
//! once (zeroized); the report names objects, never their contents.

use serde::Serialize;

use crate::error::Result;
use crate::ids::ObjectName;
use crate::object::ObjectKind;
use crate::service::VaultService;
use crate::vault::VaultRecord;

/// Most problems listed in a report (the count is always exact).
const MAX_LISTED: usize = 1000;

/// What the check found.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityReport {
    /// Vaults checked (including soft-deleted ones).
    pub vaults: u64,
    /// Objects checked (live and soft-deleted).
    pub objects: u64,
    /// Versions whose payload was opened.
    pub versions: u64,
    /// Problems found.
    pub problem_count: u64,
    /// The first problems, as `vault/kind/name/version: what`.
    pub problems: Vec<String>,
}

impl IntegrityReport {
    fn problem(&mut self, what: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(what);
        }
    }
}

impl VaultService {
    /// Names of a vault's objects of `kind`, live or soft-deleted.
    pub(crate) async fn object_names(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        deleted: bool,
    ) -> Result<Vec<ObjectName>> {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let next = if deleted {
                let p = self
                    .store
                    .list_deleted(&vault.id, kind, cursor.as_deref(), 500)
                    .await?;
                names.extend(p.items.into_iter().map(|(r, _)| r.name));
                p.next
            } else {
                let p = self
                    .store
                    .list_latest(&vault.id, kind, cursor.as_deref(), 500)
                    .await?;
                names.extend(p.items.into_iter().map(|r| r.name));
                p.next
            };
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(names),
            }
        }
    }

    /// Every version of an object, live or soft-deleted.
    pub(crate) async fn versions_of(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        deleted: bool,
    ) -> Result<Vec<crate::object::VersionRecord>> {
        Ok(if deleted {
            self.store.deleted_versions(&vault.id, kind, name).await?
        } else {
            self.store.all_versions(&vault.id, kind, name).await?
        })
    }

    /// Opens everything the store holds and reports what does not open.
    pub async fn check_integrity(&self) -> Result<IntegrityReport> {
        let mut report = IntegrityReport::default();
        for vault in self.store.list_vaults().await? {
            report.vaults += 1;
            if vault.wrapped_key.is_empty() {
                continue; // purged: crypto-shredded on purpose
            }
            for kind in [ObjectKind::Secret, ObjectKind::Key, ObjectKind::Certificate] {
                for deleted in [false, true] {
                    for name in self.object_names(&vault, kind, deleted).await? {
                        report.objects += 1;
                        for rec in self.versions_of(&vault, kind, &name, deleted).await? {
                            let at = format!(
                                "{}/{}/{}/{}",
                                vault.name,
                                kind.as_str(),
                                rec.name,
                                rec.version
                            );
                            if kind == ObjectKind::Key && crate::key::meta_of(&rec).is_err() {
                                report.problem(format!("{at}: key metadata does not parse"));
                            }
                            if rec.payload.is_empty() {
                                continue;
                            }
                            report.versions += 1;
                            let aad = Self::payload_aad(&vault, kind, &rec.name, &rec.version);
                            if self.barrier.open(&vault, &aad, &rec.payload).is_err() {
                                report.problem(format!(
                                    "{at}: payload does not authenticate (altered, moved, or its vault key is gone)"
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}
