//! Managed identities: user-assigned ones are ARM resources with their own
//! principal; a workload (Keyhaven's stand-in for a VM or an app) is an ARM
//! resource with source addresses, an optional system-assigned identity and a
//! list of user-assigned ones. Which identity a caller of the metadata
//! endpoint gets is decided by its real source address — nothing secret sits
//! on the workload. Callers are authorized by the management plane's RBAC
//! check before these methods run.

use std::net::IpAddr;

use keyhaven_core::directory::PrincipalRecord;
use keyhaven_core::resource::ResourceRecord;
use keyhaven_core::{Principal, PrincipalKind};
use serde::{Deserialize, Serialize};

use crate::directory::{DirResult, Directory, DirectoryError, PrincipalAttrs, SignedIn};

/// ARM type of user-assigned identities.
pub const UAMI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";
/// ARM type of workloads.
pub const WORKLOAD_TYPE: &str = "Keyhaven.Compute/workloads";
/// Most addresses one workload may claim.
const MAX_ADDRESSES: usize = 64;

/// Where a resource lives.
#[derive(Debug, Clone)]
pub struct ResourceName {
    /// Subscription.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Name.
    pub name: String,
}

impl ResourceName {
    /// The ARM id for a resource of `kind`.
    pub fn id(&self, kind: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{kind}/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

/// Stored properties of a user-assigned identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UamiProps {
    /// The identity's principal (object) id.
    #[serde(rename = "principalId")]
    pub principal_id: String,
    /// Its client (application) id.
    #[serde(rename = "clientId")]
    pub client_id: String,
}

/// Stored properties of a workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkloadProps {
    /// Source addresses that identify the workload.
    pub addresses: Vec<IpAddr>,
    /// The system-assigned identity's principal id, if enabled.
    #[serde(rename = "systemPrincipalId", default)]
    pub system_principal_id: Option<String>,
    /// The system-assigned identity's client id.
    #[serde(rename = "systemClientId", default)]
    pub system_client_id: Option<String>,
    /// ARM ids of attached user-assigned identities.
    #[serde(rename = "userAssigned", default)]
    pub user_assigned: Vec<String>,
}

/// What a caller asks to put on a workload.
#[derive(Debug, Clone, Default)]
pub struct WorkloadSpec {
    /// Addresses.
    pub addresses: Vec<IpAddr>,
    /// Enable a system-assigned identity.
    pub system_assigned: bool,
    /// ARM ids of user-assigned identities to attach.
    pub user_assigned: Vec<String>,
    /// Location.
    pub location: String,
    /// Tags JSON.
    pub tags: String,
}

/// Which identity of a workload a metadata request asks for.
#[derive(Debug, Clone)]
pub enum IdentitySelector {
    /// The system-assigned one.
    System,
    /// By client id.
    ClientId(String),
    /// By principal (object) id.
    ObjectId(String),
    /// By ARM resource id.
    ResourceId(String),
}

/// A managed identity signed in by address.
#[derive(Debug, Clone)]
pub struct ManagedSignIn {
    /// The identity, as it goes into the token.
    pub signed_in: SignedIn,
    /// Its client id.
    pub client_id: String,
    /// The ARM id that `xms_mirid` names.
    pub resource_id: String,
}

impl Directory {
    /// Creates or updates a user-assigned identity; returns it and whether it was created.
    pub async fn put_user_assigned(
        &self,
        caller: &Principal,
        at: &ResourceName,
        location: &str,
        tags: &str,
    ) -> DirResult<(ResourceRecord, UamiProps, bool)> {
        let _ = caller; // authorized by the management plane (RBAC) before the call
        validate_name(&at.name)?;
        let id = at.id(UAMI_TYPE);
        let now = self.clock().now();
        let existing = self.store().get_resource(&id).await?;
        let (props, created_at, id) = match existing {
            Some(r) => (parse_uami(&r)?, r.created, r.id),
            None => {
                let p = self.new_identity_principal(&id, &at.name).await?;
                (
                    UamiProps {
                        principal_id: p.object_id,
                        client_id: p.app_id.unwrap_or_default(),
                    },
                    now,
                    id,
                )
            }
        };
        let record = ResourceRecord {
            id,
            kind: UAMI_TYPE.into(),
            subscription_id: at.subscription_id.clone(),
            resource_group: at.resource_group.clone(),
            name: at.name.clone(),
            location: location.to_owned(),
            tags: tags.to_owned(),
            properties: serde_json::to_string(&props).unwrap_or_default(),
            created: created_at,
            updated: now,
        };
        let created = self.store().put_resource(&record).await?;
        Ok((record, props, created))
    }

    /// Reads a user-assigned identity.
    pub async fn user_assigned(&self, id: &str) -> DirResult<(ResourceRecord, UamiProps)> {
        let r = self.resource_of(id, UAMI_TYPE).await?;
        let p = parse_uami(&r)?;
        Ok((r, p))
    }

    /// Deletes a user-assigned identity and its principal; false if absent.
    pub async fn delete_user_assigned(&self, caller: &Principal, id: &str) -> DirResult<bool> {
        let _ = caller; // authorized by the management plane (RBAC) before the call
        let Ok((r, p)) = self.user_assigned(id).await else {
            return Ok(false);
        };
        self.store().delete_principal(&p.principal_id).await?;
        Ok(self.store().delete_resource(&r.id).await?)
    }

    /// Creates or updates a workload; returns it and whether it was created.
    pub async fn put_workload(
        &self,
        caller: &Principal,
        at: &ResourceName,
        spec: WorkloadSpec,
    ) -> DirResult<(ResourceRecord, WorkloadProps, bool)> {
        let _ = caller; // authorized by the management plane (RBAC) before the call
        validate_name(&at.name)?;
        if spec.addresses.len() > MAX_ADDRESSES {
            return Err(DirectoryError::BadRequest(format!(
                "A workload may have at most {MAX_ADDRESSES} addresses."
            )));
        }
        let mut spec = spec;
        spec.addresses = spec.addresses.iter().map(IpAddr::to_canonical).collect();
        spec.addresses.dedup();
        let id = at.id(WORKLOAD_TYPE);
        let now = self.clock().now();
        for ua in &spec.user_assigned {
            self.user_assigned(ua).await.map_err(|_| {
                DirectoryError::BadRequest(format!(
                    "The user-assigned identity '{}' was not found.",
                    ua.chars().take(200).collect::<String>()
                ))
            })?;
        }
        let existing = self.store().get_resource(&id).await?;
        let (mut props, created_at, id) = match existing {
            Some(r) => (parse_workload(&r)?, r.created, r.id),
            None => (WorkloadProps::default(), now, id),
        };
        match (spec.system_assigned, props.system_principal_id.clone()) {
            (true, None) => {
                let p = self.new_identity_principal(&id, &at.name).await?;
                props.system_client_id = p.app_id.clone();
                props.system_principal_id = Some(p.object_id);
            }
            (false, Some(old)) => {
                self.store().delete_principal(&old).await?;
                props.system_principal_id = None;
                props.system_client_id = None;
            }
            _ => {}
        }
        // Each address identifies one workload: claim the new ones before the
        // record names them, release the dropped ones after.
        self.claim_addresses(&at.subscription_id, &id, &spec.addresses)
            .await?;
        let dropped: Vec<IpAddr> = props
            .addresses
            .iter()
            .filter(|a| !spec.addresses.contains(a))
            .copied()
            .collect();
        props.addresses = spec.addresses;
        props.user_assigned = spec.user_assigned;
        let record = ResourceRecord {
            id,
            kind: WORKLOAD_TYPE.into(),
            subscription_id: at.subscription_id.clone(),
            resource_group: at.resource_group.clone(),
            name: at.name.clone(),
            location: spec.location,
            tags: spec.tags,
            properties: serde_json::to_string(&props).unwrap_or_default(),
            created: created_at,
            updated: now,
        };
        let created = self.store().put_resource(&record).await?;
        self.release_addresses(&record.id, &dropped).await?;
        Ok((record, props, created))
    }

    /// Claims `addresses` for workload `id`, atomically per address (a
    /// compare-and-set on one setting each), so two workloads written at once
    /// on two nodes cannot both hold one. A claim records its holder and
    /// when it was made; one whose holder does not list the address (a write
    /// that failed half-way, a deleted workload) is free to take once it is
    /// older than [`STALE_CLAIM_SECS`], so a write in flight keeps its claim.
    async fn claim_addresses(
        &self,
        subscription_id: &str,
        id: &str,
        addresses: &[IpAddr],
    ) -> DirResult<()> {
        let me = id.to_ascii_lowercase();
        let now = self.clock().now();
        let mine = format!("{me}\n{now}");
        for a in addresses {
            let key = address_key(*a);
            let mut claimed = false;
            for _ in 0..CLAIM_ATTEMPTS {
                let current = self.store().get_setting(&key).await?;
                // A released claim (empty) is no claim: the "someone else
                // lists it" check below applies to both.
                if current.as_deref().is_none_or(<[u8]>::is_empty) {
                    // A workload written before claims existed may list
                    // the address with no claim: it keeps it.
                    if self
                        .listers(subscription_id, *a)
                        .await?
                        .iter()
                        .any(|w| w.id.to_ascii_lowercase() != me)
                    {
                        return Err(taken(*a));
                    }
                    let won = match &current {
                        None => {
                            self.store()
                                .put_setting_if_absent(&key, mine.as_bytes())
                                .await?
                        }
                        Some(empty) => {
                            self.store()
                                .replace_setting(&key, empty, mine.as_bytes())
                                .await?
                        }
                    };
                    if won {
                        claimed = true;
                        break;
                    }
                    continue;
                }
                let Some(current) = current else { continue };
                let (holder, at) = parse_claim(&current);
                if holder == me {
                    claimed = true;
                    break;
                }
                if !holder.is_empty()
                    && (now - at < STALE_CLAIM_SECS || self.lists(&holder, *a).await?)
                {
                    return Err(taken(*a));
                }
                if self
                    .store()
                    .replace_setting(&key, &current, mine.as_bytes())
                    .await?
                {
                    claimed = true;
                    break;
                }
            }
            if !claimed {
                return Err(DirectoryError::Conflict(format!(
                    "The address {a} is being claimed concurrently; try again."
                )));
            }
        }
        Ok(())
    }

    /// Releases the claims of workload `id` on `addresses`.
    async fn release_addresses(&self, id: &str, addresses: &[IpAddr]) -> DirResult<()> {
        let me = id.to_ascii_lowercase();
        for a in addresses {
            let key = address_key(*a);
            // Only a claim this workload holds is released (compare-and-set).
            if let Some(current) = self.store().get_setting(&key).await? {
                if parse_claim(&current).0 == me {
                    self.store().replace_setting(&key, &current, b"").await?;
                }
            }
        }
        Ok(())
    }

    /// True if workload `id` exists and lists `address`.
    async fn lists(&self, id: &str, address: IpAddr) -> DirResult<bool> {
        Ok(match self.workload(id).await {
            Ok((_, p)) => p.addresses.contains(&address),
            Err(DirectoryError::NotFound(_)) => false,
            Err(e) => return Err(e),
        })
    }

    /// Workloads that list `address`.
    async fn listers(
        &self,
        subscription_id: &str,
        address: IpAddr,
    ) -> DirResult<Vec<ResourceRecord>> {
        Ok(self
            .store()
            .list_resources(WORKLOAD_TYPE, subscription_id)
            .await?
            .into_iter()
            .filter(|r| parse_workload(r).is_ok_and(|p| p.addresses.contains(&address)))
            .collect())
    }

    /// Reads a workload.
    pub async fn workload(&self, id: &str) -> DirResult<(ResourceRecord, WorkloadProps)> {
        let r = self.resource_of(id, WORKLOAD_TYPE).await?;
        let p = parse_workload(&r)?;
        Ok((r, p))
    }

    /// Deletes a workload and its system-assigned identity; false if absent.
    pub async fn delete_workload(&self, caller: &Principal, id: &str) -> DirResult<bool> {
        let _ = caller; // authorized by the management plane (RBAC) before the call
        let Ok((r, p)) = self.workload(id).await else {
            return Ok(false);
        };
        if let Some(sp) = p.system_principal_id {
            self.store().delete_principal(&sp).await?;
        }
        let deleted = self.store().delete_resource(&r.id).await?;
        self.release_addresses(&r.id, &p.addresses).await?;
        Ok(deleted)
    }

    /// The identity a caller at `source` gets, or `None`.
    pub async fn managed_sign_in(
        &self,
        subscription_id: &str,
        source: IpAddr,
        selector: &IdentitySelector,
    ) -> DirResult<Option<ManagedSignIn>> {
        // An IPv4 caller on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let source = source.to_canonical();
        let workloads = self
            .store()
            .list_resources(WORKLOAD_TYPE, subscription_id)
            .await?;
        let listers: Vec<(&ResourceRecord, WorkloadProps)> = workloads
            .iter()
            .filter_map(|r| parse_workload(r).ok().map(|p| (r, p)))
            .filter(|(_, p)| p.addresses.contains(&source))
            .collect();
        // The address's claim names its workload; with no claim (a workload
        // from before claims), only an address listed by one workload alone
        // identifies it. Ambiguity signs no one in.
        let claim = self.store().get_setting(&address_key(source)).await?;
        let chosen = match claim.filter(|c| !c.is_empty()) {
            Some(c) => {
                let holder = parse_claim(&c).0;
                listers
                    .into_iter()
                    .find(|(r, _)| r.id.eq_ignore_ascii_case(&holder))
            }
            None if listers.len() == 1 => listers.into_iter().next(),
            None => None,
        };
        let Some((workload, props)) = chosen else {
            return Ok(None);
        };
        let chosen: Option<(String, String, String)> = match selector {
            IdentitySelector::System => props
                .system_principal_id
                .clone()
                .zip(props.system_client_id.clone())
                .map(|(p, c)| (p, c, workload.id.clone())),
            _ => {
                let mut found = None;
                for ua in &props.user_assigned {
                    let Ok((r, u)) = self.user_assigned(ua).await else {
                        continue;
                    };
                    let hit = match selector {
                        IdentitySelector::ClientId(c) => u.client_id.eq_ignore_ascii_case(c),
                        IdentitySelector::ObjectId(o) => u.principal_id.eq_ignore_ascii_case(o),
                        IdentitySelector::ResourceId(id) => r.id.eq_ignore_ascii_case(id),
                        IdentitySelector::System => false,
                    };
                    if hit {
                        found = Some((u.principal_id, u.client_id, r.id));
                        break;
                    }
                }
                found
            }
        };
        let Some((principal_id, client_id, resource_id)) = chosen else {
            return Ok(None);
        };
        let p = self.principal(&principal_id).await?;
        if !p.enabled {
            return Ok(None);
        }
        Ok(Some(ManagedSignIn {
            signed_in: SignedIn {
                principal: Principal {
                    object_id: p.object_id.clone(),
                    tenant_id: p.tenant_id.clone(),
                    app_id: Some(client_id.clone()),
                    kind: PrincipalKind::ManagedIdentity,
                },
                upn: None,
                name: p.display_name.clone(),
                groups: self.transitive_groups(&p.object_id).await?,
                credential_stamp: String::new(),
                session: crate::token::Session::default(),
            },
            client_id,
            resource_id,
        }))
    }

    /// Makes the principal of a system-assigned identity of `resource_id`.
    pub async fn new_identity_principal(
        &self,
        resource_id: &str,
        name: &str,
    ) -> DirResult<PrincipalRecord> {
        let p = PrincipalRecord {
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: self.tenant_id().to_owned(),
            kind: PrincipalKind::ManagedIdentity.as_str().to_owned(),
            app_id: Some(uuid::Uuid::new_v4().to_string()),
            upn: None,
            display_name: name.to_owned(),
            enabled: true,
            credentials: "{}".into(),
            attrs: serde_json::to_string(&PrincipalAttrs {
                service_principal_type: Some("ManagedIdentity".into()),
                description: Some(resource_id.to_owned()),
                ..Default::default()
            })
            .unwrap_or_default(),
            created: self.clock().now(),
        };
        self.store().create_principal(&p).await?;
        Ok(p)
    }

    async fn resource_of(&self, id: &str, kind: &str) -> DirResult<ResourceRecord> {
        self.store()
            .get_resource(id)
            .await?
            .filter(|r| r.kind.eq_ignore_ascii_case(kind))
            .ok_or_else(|| DirectoryError::NotFound(id.chars().take(200).collect()))
    }
}

/// Compare-and-set attempts of one address claim.
const CLAIM_ATTEMPTS: usize = 8;

/// Age past which a claim whose holder does not list its address is free.
const STALE_CLAIM_SECS: i64 = 60;

/// The holder (lower-case workload id) and time of an address claim.
fn parse_claim(v: &[u8]) -> (String, i64) {
    let s = String::from_utf8_lossy(v);
    let (holder, at) = s.split_once('\n').unwrap_or((&s, "0"));
    (holder.to_owned(), at.parse().unwrap_or(0))
}

/// The setting that records which workload an address identifies.
fn address_key(a: IpAddr) -> String {
    format!("workload_address|{a}")
}

fn taken(a: IpAddr) -> DirectoryError {
    // The holder may sit where the caller cannot read: not named.
    DirectoryError::Conflict(format!(
        "The address {a} already identifies another workload; an address can identify one workload only."
    ))
}

fn parse_uami(r: &ResourceRecord) -> DirResult<UamiProps> {
    serde_json::from_str(&r.properties)
        .map_err(|_| DirectoryError::BadRequest("stored identity is corrupt".into()))
}

fn parse_workload(r: &ResourceRecord) -> DirResult<WorkloadProps> {
    serde_json::from_str(&r.properties)
        .map_err(|_| DirectoryError::BadRequest("stored workload is corrupt".into()))
}

fn validate_name(name: &str) -> DirResult<()> {
    let ok = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::BadRequest(
            "Resource names may contain letters, digits, hyphens and underscores, start with a letter or digit, and be 1-128 characters long.".into(),
        ))
    }
}
