//! Key rotation policies and the scheduler that carries them out.
//!
//! A policy belongs to a key name (not a version), survives rotation, recovery
//! and restore of its key's versions, and is purged with the key. Its lifetime
//! actions are evaluated against the key's latest version: `Rotate` after
//! `timeAfterCreate` or `timeBeforeExpiry`, `Notify` at `timeBeforeExpiry`.
//! Every action on a given version is a job claimed through the store, so with
//! several nodes on one database it runs once; a node that dies holding a claim
//! loses it when the lease ends and another node takes over.

use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, Operation};
use crate::error::{Error, Result};
use crate::ids::ObjectName;
use crate::key::KeyBundle;
use crate::object::{AttributesPatch, ObjectKind, VersionRecord};
use crate::service::VaultService;
use crate::store::PolicyRecord;
use crate::vault::VaultRecord;

const KIND: ObjectKind = ObjectKind::Key;
const DAY: i64 = 86_400;
/// Shortest trigger Azure accepts (7 days).
const MIN_TRIGGER: i64 = 7 * DAY;
/// Shortest `expiryTime` Azure accepts (28 days).
const MIN_EXPIRY: i64 = 28 * DAY;
/// Longest duration accepted anywhere (100 years), so arithmetic cannot overflow.
const MAX_DURATION: i64 = 100 * 365 * DAY;
/// How long a scheduler node holds a claimed job before others may take it.
const LEASE: i64 = 300;
/// Finished jobs are forgotten after this long.
const FORGET_AFTER: i64 = 400 * DAY;
/// Policies read per store round trip by the scheduler.
const SCAN_PAGE: u32 = 100;
/// Upper bound of pages one scheduler pass reads (bounded work per tick).
const SCAN_PAGES: usize = 10_000;

/// What a lifetime action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyAction {
    /// Create a new key version.
    Rotate,
    /// Tell subscribers the key is near expiry.
    Notify,
}

impl PolicyAction {
    /// Parses Azure's `action.type` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("rotate") {
            Ok(Self::Rotate)
        } else if s.eq_ignore_ascii_case("notify") {
            Ok(Self::Notify)
        } else {
            Err(Error::BadParameter(format!(
                "The lifetime action type '{}' is invalid. Supported types: Rotate, Notify.",
                s.chars().take(20).collect::<String>()
            )))
        }
    }

    /// Azure's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotate => "Rotate",
            Self::Notify => "Notify",
        }
    }
}

/// When a lifetime action fires; durations are ISO 8601 as the caller wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// This long after the latest version was created.
    AfterCreate(String),
    /// This long before the latest version expires.
    BeforeExpiry(String),
}

/// One lifetime action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeAction {
    /// What to do.
    pub action: PolicyAction,
    /// When.
    pub trigger: Trigger,
}

/// A key's rotation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// The actions, at most one of each type.
    pub lifetime_actions: Vec<LifetimeAction>,
    /// Lifetime of versions created by rotation (ISO 8601), applied as `exp`.
    pub expiry_time: Option<String>,
}

impl RotationPolicy {
    /// The policy every key has until one is set: notify 30 days before expiry.
    pub fn default_policy() -> Self {
        Self {
            lifetime_actions: vec![LifetimeAction {
                action: PolicyAction::Notify,
                trigger: Trigger::BeforeExpiry("P30D".into()),
            }],
            expiry_time: None,
        }
    }

    /// Checks Azure's rules; an empty action list means the default actions.
    pub fn validated(mut self) -> Result<Self> {
        let expiry = match &self.expiry_time {
            Some(e) => {
                let secs = iso_duration(e)?;
                if secs < MIN_EXPIRY {
                    return Err(Error::BadParameter(
                        "The rotation policy's expiryTime must be at least 28 days (P28D).".into(),
                    ));
                }
                Some(secs)
            }
            None => None,
        };
        if self.lifetime_actions.is_empty() {
            self.lifetime_actions = Self::default_policy().lifetime_actions;
        }
        for (i, a) in self.lifetime_actions.iter().enumerate() {
            if self
                .lifetime_actions
                .iter()
                .take(i)
                .any(|b| b.action == a.action)
            {
                return Err(Error::BadParameter(format!(
                    "The rotation policy has more than one {} lifetime action.",
                    a.action.as_str()
                )));
            }
            let secs = match &a.trigger {
                Trigger::AfterCreate(_) if a.action == PolicyAction::Notify => {
                    return Err(Error::BadParameter(
                        "A Notify lifetime action supports only timeBeforeExpiry.".into(),
                    ))
                }
                Trigger::AfterCreate(d) | Trigger::BeforeExpiry(d) => iso_duration(d)?,
            };
            if secs < MIN_TRIGGER {
                return Err(Error::BadParameter(
                    "A lifetime action's trigger must be at least 7 days (P7D).".into(),
                ));
            }
            if let (Trigger::BeforeExpiry(_), Some(exp), PolicyAction::Rotate) =
                (&a.trigger, expiry, a.action)
            {
                if secs >= exp {
                    return Err(Error::BadParameter(
                        "The Rotate action's timeBeforeExpiry must be shorter than expiryTime."
                            .into(),
                    ));
                }
            }
        }
        Ok(self)
    }

    /// The `exp` a version created at `now` gets under this policy.
    pub fn expiry_for(&self, now: i64) -> Option<i64> {
        self.expiry_time
            .as_deref()
            .and_then(|e| iso_duration(e).ok())
            .map(|d| now.saturating_add(d))
    }

    /// When `action` fires for `latest`, if it ever does.
    fn due_at(action: &LifetimeAction, latest: &VersionRecord) -> Option<i64> {
        match &action.trigger {
            Trigger::AfterCreate(d) => Some(
                latest
                    .attributes
                    .created
                    .saturating_add(iso_duration(d).ok()?),
            ),
            Trigger::BeforeExpiry(d) => {
                Some(latest.attributes.exp?.saturating_sub(iso_duration(d).ok()?))
            }
        }
    }
}

/// A stored policy with its timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRotationPolicy {
    /// The policy.
    pub policy: RotationPolicy,
    /// Created and updated, `None` for the default policy of a key that never had one set.
    pub times: Option<(i64, i64)>,
}

/// What one scheduler pass did, for logs, tests and (later) change events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledAction {
    /// The vault's name.
    pub vault: String,
    /// The key's name.
    pub name: String,
    /// The version the action was about.
    pub version: String,
    /// Rotate or Notify.
    pub action: PolicyAction,
    /// For Rotate: the new version.
    pub new_version: Option<String>,
}

/// Seconds in an ISO 8601 duration (`P1Y2M3W4DT5H6M7S`; a year is 365 days,
/// a month 30), refusing anything else with Azure's 400.
pub fn iso_duration(s: &str) -> Result<i64> {
    let bad = || {
        Error::BadParameter(format!(
            "'{}' is not a valid ISO 8601 duration (for example P90D, P3M, P1Y).",
            s.chars().take(32).collect::<String>()
        ))
    };
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let mut total: i64 = 0;
    let mut parts = 0;
    let mut add = |part: &str, units: &[(char, i64)]| -> Result<()> {
        let mut num = String::new();
        let mut order = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                if num.len() > 9 {
                    return Err(bad());
                }
                continue;
            }
            let pos = units.iter().position(|(u, _)| *u == c).ok_or_else(bad)?;
            if num.is_empty() || pos < order {
                return Err(bad());
            }
            order = pos + 1;
            let n: i64 = num.parse().map_err(|_| bad())?;
            let (_, secs) = units.get(pos).ok_or_else(bad)?;
            total = total
                .checked_add(n.checked_mul(*secs).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            num.clear();
            parts += 1;
        }
        if num.is_empty() {
            Ok(())
        } else {
            Err(bad())
        }
    };
    add(
        date,
        &[
            ('Y', 365 * DAY),
            ('M', 30 * DAY),
            ('W', 7 * DAY),
            ('D', DAY),
        ],
    )?;
    if let Some(t) = time {
        add(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    if parts == 0 || total > MAX_DURATION {
        return Err(bad());
    }
    Ok(total)
}

fn policy_body(p: &RotationPolicy) -> Result<String> {
    serde_json::to_string(p).map_err(|_| Error::Integrity)
}

fn parse_body(body: &str) -> Result<RotationPolicy> {
    serde_json::from_str(body).map_err(|_| Error::Integrity)
}

impl VaultService {
    /// The key's rotation policy, or the default one if none was set.
    pub async fn get_rotation_policy(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<StoredRotationPolicy> {
        auth.require_on(vault, Operation::KeyGetRotationPolicy, name)?;
        self.live_version(vault, KIND, name, None).await?;
        Ok(match self.store.get_policy(&vault.id, KIND, name).await? {
            Some(rec) => StoredRotationPolicy {
                policy: parse_body(&rec.body)?,
                times: Some((rec.created, rec.updated)),
            },
            None => StoredRotationPolicy {
                policy: RotationPolicy::default_policy(),
                times: None,
            },
        })
    }

    /// Replaces the key's rotation policy.
    pub async fn set_rotation_policy(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        policy: RotationPolicy,
    ) -> Result<StoredRotationPolicy> {
        auth.require_on(vault, Operation::KeySetRotationPolicy, name)?;
        let policy = policy.validated()?;
        self.live_version(vault, KIND, name, None).await?;
        let now = self.clock.now();
        let rec = PolicyRecord {
            body: policy_body(&policy)?,
            created: now,
            updated: now,
        };
        self.store.put_policy(&vault.id, KIND, name, &rec).await?;
        let stored = self.store.get_policy(&vault.id, KIND, name).await?;
        Ok(StoredRotationPolicy {
            policy,
            times: stored.map(|r| (r.created, r.updated)),
        })
    }

    /// When the key's rotation policy next rotates `latest` (its `Rotate`
    /// action), if it has one.
    pub(crate) async fn next_rotation(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        latest: &VersionRecord,
    ) -> Result<Option<i64>> {
        let Some(rec) = self.store.get_policy(&vault.id, KIND, name).await? else {
            return Ok(None);
        };
        let policy = parse_body(&rec.body)?;
        Ok(policy
            .lifetime_actions
            .iter()
            .filter(|a| a.action == PolicyAction::Rotate)
            .find_map(|a| RotationPolicy::due_at(a, latest)))
    }

    /// The `exp` a version created now by rotation gets: from the key's
    /// policy's `expiryTime`, if it has one.
    pub(crate) async fn rotation_expiry(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Option<i64>> {
        Ok(match self.store.get_policy(&vault.id, KIND, name).await? {
            Some(rec) => parse_body(&rec.body)?.expiry_for(self.clock.now()),
            None => None,
        })
    }

    /// One scheduler pass: every due lifetime action of every key policy,
    /// each claimed so that it runs once across nodes. Failures of one key are
    /// logged and do not stop the others.
    pub async fn run_key_rotations(&self) -> Result<Vec<ScheduledAction>> {
        let mut done = Vec::new();
        for p in self.scheduled_policies(KIND).await? {
            match self.run_policy(&p.vault_name, &p.name, &p.policy).await {
                Ok(mut actions) => done.append(&mut actions),
                Err(e) => tracing::warn!(
                    vault = %p.vault_name, key = %p.name, error = %e,
                    "key rotation policy could not be carried out"
                ),
            }
        }
        Ok(done)
    }

    /// Every policy of live objects of `kind`, page by page (bounded).
    pub(crate) async fn scheduled_policies(
        &self,
        kind: ObjectKind,
    ) -> Result<Vec<crate::store::ScheduledPolicy>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..SCAN_PAGES {
            let page = self
                .store
                .list_policies(kind, cursor.as_deref(), SCAN_PAGE)
                .await?;
            out.extend(page.items);
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        Ok(out)
    }

    async fn run_policy(
        &self,
        vault_name: &str,
        name: &ObjectName,
        rec: &PolicyRecord,
    ) -> Result<Vec<ScheduledAction>> {
        let policy = parse_body(&rec.body)?;
        let Ok(vname) = vault_name.parse() else {
            return Ok(Vec::new());
        };
        let Some(vault) = self.store.get_vault(&vname).await? else {
            return Ok(Vec::new());
        };
        let Some(latest) = self.store.get_version(&vault.id, KIND, name, None).await? else {
            return Ok(Vec::new());
        };
        let now = self.clock.now();
        let mut out = Vec::new();
        for action in &policy.lifetime_actions {
            if RotationPolicy::due_at(action, &latest).is_none_or(|at| now < at) {
                continue;
            }
            let job = format!(
                "key-{}/{}/{}/{}",
                action.action.as_str().to_ascii_lowercase(),
                vault.id,
                name.key(),
                latest.version
            );
            if !self.store.claim_job(&job, now, now + LEASE).await? {
                continue;
            }
            let mut events = Vec::new();
            let new_version = match action.action {
                PolicyAction::Rotate => {
                    let b = self.rotate_unchecked(&vault, name, &latest).await?;
                    Some(b.record.version.to_string())
                }
                PolicyAction::Notify => {
                    events.extend(self.event(
                        crate::events::EventType::KeyNearExpiry,
                        &vault,
                        &latest,
                    ));
                    None
                }
            };
            self.store
                .finish_job(&job, now, now - FORGET_AFTER, &events)
                .await?;
            self.events_committed(!events.is_empty());
            tracing::info!(
                vault = %vault.name, key = %name, version = %latest.version,
                action = action.action.as_str(), new_version = new_version.as_deref().unwrap_or(""),
                "key lifetime action carried out"
            );
            out.push(ScheduledAction {
                vault: vault.name.to_string(),
                name: name.to_string(),
                version: latest.version.to_string(),
                action: action.action,
                new_version,
            });
            if action.action == PolicyAction::Rotate {
                // The other actions concerned the version just replaced.
                break;
            }
        }
        Ok(out)
    }

    /// Rotation without an authorization check, for the scheduler and for
    /// `rotate_key` after its check.
    pub(crate) async fn rotate_unchecked(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        current: &VersionRecord,
    ) -> Result<KeyBundle> {
        let exp = self.rotation_expiry(vault, name).await?;
        self.rotate_from(
            vault,
            name,
            current,
            &AttributesPatch {
                exp,
                ..AttributesPatch::default()
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_azure_writes_them() {
        assert_eq!(iso_duration("P90D").unwrap(), 90 * DAY);
        assert_eq!(iso_duration("P2M").unwrap(), 60 * DAY);
        assert_eq!(iso_duration("P1Y6M").unwrap(), 545 * DAY);
        assert_eq!(iso_duration("P2W").unwrap(), 14 * DAY);
        assert_eq!(iso_duration("P1DT12H").unwrap(), DAY + 12 * 3600);
        assert_eq!(iso_duration("PT36H").unwrap(), 36 * 3600);
        for bad in [
            "",
            "P",
            "90D",
            "PT",
            "P1DT",
            "P-1D",
            "P1.5D",
            "P1D2Y",
            "PXD",
            "P1",
            "P200Y",
            "P9999999999D",
        ] {
            assert!(iso_duration(bad).is_err(), "{bad}");
        }
    }

    fn action(a: PolicyAction, t: Trigger) -> LifetimeAction {
        LifetimeAction {
            action: a,
            trigger: t,
        }
    }

    #[test]
    fn policies_follow_azure_rules() {
        let ok = RotationPolicy {
            lifetime_actions: vec![
                action(PolicyAction::Rotate, Trigger::AfterCreate("P2M".into())),
                action(PolicyAction::Notify, Trigger::BeforeExpiry("P30D".into())),
            ],
            expiry_time: Some("P90D".into()),
        };
        assert!(ok.clone().validated().is_ok());
        let empty = RotationPolicy {
            lifetime_actions: vec![],
            expiry_time: None,
        };
        assert_eq!(empty.validated().unwrap(), RotationPolicy::default_policy());
        let bad = [
            RotationPolicy {
                expiry_time: Some("P27D".into()),
                ..ok.clone()
            },
            RotationPolicy {
                lifetime_actions: vec![action(
                    PolicyAction::Rotate,
                    Trigger::AfterCreate("P6D".into()),
                )],
                expiry_time: None,
            },
            RotationPolicy {
                lifetime_actions: vec![action(
                    PolicyAction::Notify,
                    Trigger::AfterCreate("P30D".into()),
                )],
                expiry_time: None,
            },
            RotationPolicy {
                lifetime_actions: vec![
                    action(PolicyAction::Rotate, Trigger::AfterCreate("P30D".into())),
                    action(PolicyAction::Rotate, Trigger::AfterCreate("P60D".into())),
                ],
                expiry_time: None,
            },
            RotationPolicy {
                lifetime_actions: vec![action(
                    PolicyAction::Rotate,
                    Trigger::BeforeExpiry("P90D".into()),
                )],
                expiry_time: Some("P90D".into()),
            },
        ];
        for p in bad {
            assert!(p.clone().validated().is_err(), "{p:?}");
        }
    }
}
