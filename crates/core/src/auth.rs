//! Who is calling and what they may do. The `Authorizer` port decides; an
//! `Authorized` value is the only proof of a decision, and every service method
//! demands one, so no handler can reach the domain without step 7.

use crate::error::{Error, Result};
use crate::vault::VaultRecord;

/// The kinds of principals in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A human user.
    User,
    /// A group of principals.
    Group,
    /// An application's service principal.
    ServicePrincipal,
    /// A managed identity.
    ManagedIdentity,
}

impl PrincipalKind {
    /// Stable storage tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::ServicePrincipal => "servicePrincipal",
            Self::ManagedIdentity => "managedIdentity",
        }
    }

    /// Parses the storage tag.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "group" => Some(Self::Group),
            "servicePrincipal" => Some(Self::ServicePrincipal),
            "managedIdentity" => Some(Self::ManagedIdentity),
            _ => None,
        }
    }
}

/// An authenticated caller, as established from a validated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Object id (`oid`).
    pub object_id: String,
    /// Tenant id (`tid`).
    pub tenant_id: String,
    /// Application (client) id (`azp`/`appid`), for applications.
    pub app_id: Option<String>,
    /// What sort of principal it is.
    pub kind: PrincipalKind,
}

/// Data-plane operations, named as Azure's audit log names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Set a secret (new version).
    SecretSet,
    /// Get a secret value.
    SecretGet,
    /// Update secret attributes.
    SecretUpdate,
    /// List secrets.
    SecretList,
    /// List versions of a secret.
    SecretListVersions,
    /// Delete a secret.
    SecretDelete,
    /// Get a deleted secret.
    SecretGetDeleted,
    /// List deleted secrets.
    SecretListDeleted,
    /// Recover a deleted secret.
    SecretRecover,
    /// Purge a deleted secret.
    SecretPurge,
    /// Back up a secret.
    SecretBackup,
    /// Restore a secret backup.
    SecretRestore,
    /// Create a key (new version).
    KeyCreate,
    /// Get a key (public parts).
    KeyGet,
    /// List keys.
    KeyList,
    /// List versions of a key.
    KeyListVersions,
    /// Delete a key.
    KeyDelete,
    /// Get a deleted key.
    KeyGetDeleted,
    /// List deleted keys.
    KeyListDeleted,
    /// Recover a deleted key.
    KeyRecover,
    /// Purge a deleted key.
    KeyPurge,
    /// Sign a digest.
    KeySign,
    /// Verify a signature.
    KeyVerify,
    /// Encrypt with a key.
    KeyEncrypt,
    /// Decrypt with a key.
    KeyDecrypt,
    /// Wrap a key.
    KeyWrap,
    /// Unwrap a key.
    KeyUnwrap,
    /// Update a key's attributes, tags or operations.
    KeyUpdate,
    /// Import a key.
    KeyImport,
    /// Back up a key.
    KeyBackup,
    /// Restore a key backup.
    KeyRestore,
    /// Rotate a key now.
    KeyRotate,
    /// Read a key's rotation policy.
    KeyGetRotationPolicy,
    /// Set a key's rotation policy.
    KeySetRotationPolicy,
    /// Create a certificate.
    CertificateCreate,
    /// Get a certificate, its policy or its pending operation.
    CertificateGet,
    /// List certificates or versions.
    CertificateList,
    /// Update a certificate or its policy.
    CertificateUpdate,
    /// Delete a certificate.
    CertificateDelete,
    /// Get a deleted certificate.
    CertificateGetDeleted,
    /// List deleted certificates.
    CertificateListDeleted,
    /// Recover a deleted certificate.
    CertificateRecover,
    /// Purge a deleted certificate.
    CertificatePurge,
    /// Import a certificate.
    CertificateImport,
    /// Create or update a certificate issuer.
    CertificateSetIssuer,
    /// Read a certificate issuer.
    CertificateGetIssuer,
    /// List certificate issuers.
    CertificateListIssuers,
    /// Delete a certificate issuer.
    CertificateDeleteIssuer,
    /// Read, set or delete the certificate contacts.
    CertificateContacts,
    /// Back up a certificate.
    CertificateBackup,
    /// Restore a certificate backup.
    CertificateRestore,
    /// A managed HSM pool's full backup (not a vault operation: not in `ALL`).
    PoolBackup,
    /// A managed HSM pool's full or selective restore (not in `ALL`).
    PoolRestore,
}

impl Operation {
    /// Azure's `operationName`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SecretSet => "SecretSet",
            Self::SecretGet => "SecretGet",
            Self::SecretUpdate => "SecretUpdate",
            Self::SecretList => "SecretList",
            Self::SecretListVersions => "SecretListVersions",
            Self::SecretDelete => "SecretDelete",
            Self::SecretGetDeleted => "SecretGetDeleted",
            Self::SecretListDeleted => "SecretListDeleted",
            Self::SecretRecover => "SecretRecover",
            Self::SecretPurge => "SecretPurge",
            Self::SecretBackup => "SecretBackup",
            Self::SecretRestore => "SecretRestore",
            Self::KeyCreate => "KeyCreate",
            Self::KeyGet => "KeyGet",
            Self::KeyList => "KeyList",
            Self::KeyListVersions => "KeyListVersions",
            Self::KeyDelete => "KeyDelete",
            Self::KeyGetDeleted => "KeyGetDeleted",
            Self::KeyListDeleted => "KeyListDeleted",
            Self::KeyRecover => "KeyRecover",
            Self::KeyPurge => "KeyPurge",
            Self::KeySign => "KeySign",
            Self::KeyVerify => "KeyVerify",
            Self::KeyEncrypt => "KeyEncrypt",
            Self::KeyDecrypt => "KeyDecrypt",
            Self::KeyWrap => "KeyWrap",
            Self::KeyUnwrap => "KeyUnwrap",
            Self::KeyUpdate => "KeyUpdate",
            Self::KeyImport => "KeyImport",
            Self::KeyBackup => "KeyBackup",
            Self::KeyRestore => "KeyRestore",
            Self::KeyRotate => "KeyRotate",
            Self::KeyGetRotationPolicy => "KeyRotationPolicyGet",
            Self::KeySetRotationPolicy => "KeyRotationPolicySet",
            Self::CertificateCreate => "CertificateCreate",
            Self::CertificateGet => "CertificateGet",
            Self::CertificateList => "CertificateList",
            Self::CertificateUpdate => "CertificateUpdate",
            Self::CertificateDelete => "CertificateDelete",
            Self::CertificateGetDeleted => "CertificateGetDeleted",
            Self::CertificateListDeleted => "CertificateListDeleted",
            Self::CertificateRecover => "CertificateRecover",
            Self::CertificatePurge => "CertificatePurge",
            Self::CertificateImport => "CertificateImport",
            Self::CertificateSetIssuer => "CertificateIssuerSet",
            Self::CertificateGetIssuer => "CertificateIssuerGet",
            Self::CertificateListIssuers => "CertificateIssuerList",
            Self::CertificateDeleteIssuer => "CertificateIssuerDelete",
            Self::CertificateContacts => "CertificateContactsSet",
            Self::CertificateBackup => "CertificateBackup",
            Self::CertificateRestore => "CertificateRestore",
            Self::PoolBackup => "BackupHsm",
            Self::PoolRestore => "RestoreHsm",
        }
    }

    /// The RBAC data action this operation needs.
    pub fn data_action(self) -> &'static str {
        match self {
            Self::SecretSet => "Microsoft.KeyVault/vaults/secrets/setSecret/action",
            Self::SecretGet => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            Self::SecretUpdate => "Microsoft.KeyVault/vaults/secrets/update/action",
            Self::SecretList
            | Self::SecretListVersions
            | Self::SecretGetDeleted
            | Self::SecretListDeleted => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            Self::SecretDelete => "Microsoft.KeyVault/vaults/secrets/delete",
            Self::SecretRecover => "Microsoft.KeyVault/vaults/secrets/recover/action",
            Self::SecretPurge => "Microsoft.KeyVault/vaults/secrets/purge/action",
            Self::SecretBackup => "Microsoft.KeyVault/vaults/secrets/backup/action",
            Self::SecretRestore => "Microsoft.KeyVault/vaults/secrets/restore/action",
            Self::KeyCreate => "Microsoft.KeyVault/vaults/keys/create/action",
            Self::KeyGet
            | Self::KeyList
            | Self::KeyListVersions
            | Self::KeyGetDeleted
            | Self::KeyListDeleted => "Microsoft.KeyVault/vaults/keys/read",
            Self::KeyDelete => "Microsoft.KeyVault/vaults/keys/delete",
            Self::KeyRecover => "Microsoft.KeyVault/vaults/keys/recover/action",
            Self::KeyPurge => "Microsoft.KeyVault/vaults/keys/purge/action",
            Self::KeySign => "Microsoft.KeyVault/vaults/keys/sign/action",
            Self::KeyVerify => "Microsoft.KeyVault/vaults/keys/verify/action",
            Self::KeyEncrypt => "Microsoft.KeyVault/vaults/keys/encrypt/action",
            Self::KeyDecrypt => "Microsoft.KeyVault/vaults/keys/decrypt/action",
            Self::KeyWrap => "Microsoft.KeyVault/vaults/keys/wrap/action",
            Self::KeyUnwrap => "Microsoft.KeyVault/vaults/keys/unwrap/action",
            Self::KeyUpdate => "Microsoft.KeyVault/vaults/keys/update/action",
            Self::KeyImport => "Microsoft.KeyVault/vaults/keys/import/action",
            Self::KeyBackup => "Microsoft.KeyVault/vaults/keys/backup/action",
            Self::KeyRestore => "Microsoft.KeyVault/vaults/keys/restore/action",
            Self::KeyRotate => "Microsoft.KeyVault/vaults/keys/rotate/action",
            Self::KeyGetRotationPolicy => "Microsoft.KeyVault/vaults/keyrotationpolicies/read",
            Self::KeySetRotationPolicy => "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
            Self::CertificateCreate => "Microsoft.KeyVault/vaults/certificates/create/action",
            Self::CertificateGet => "Microsoft.KeyVault/vaults/certificates/read",
            Self::CertificateList => "Microsoft.KeyVault/vaults/certificates/read",
            Self::CertificateUpdate => "Microsoft.KeyVault/vaults/certificates/update/action",
            Self::CertificateDelete => "Microsoft.KeyVault/vaults/certificates/delete",
            Self::CertificateGetDeleted => "Microsoft.KeyVault/vaults/certificates/read",
            Self::CertificateListDeleted => "Microsoft.KeyVault/vaults/certificates/read",
            Self::CertificateRecover => "Microsoft.KeyVault/vaults/certificates/recover/action",
            Self::CertificatePurge => "Microsoft.KeyVault/vaults/certificates/purge/action",
            Self::CertificateImport => "Microsoft.KeyVault/vaults/certificates/import/action",
            Self::CertificateSetIssuer => "Microsoft.KeyVault/vaults/certificatecas/write",
            Self::CertificateGetIssuer => "Microsoft.KeyVault/vaults/certificatecas/read",
            Self::CertificateListIssuers => "Microsoft.KeyVault/vaults/certificatecas/read",
            Self::CertificateDeleteIssuer => "Microsoft.KeyVault/vaults/certificatecas/delete",
            Self::CertificateContacts => "Microsoft.KeyVault/vaults/certificatecontacts/write",
            Self::CertificateBackup => "Microsoft.KeyVault/vaults/certificates/backup/action",
            Self::CertificateRestore => "Microsoft.KeyVault/vaults/certificates/restore/action",
            Self::PoolBackup => "Microsoft.KeyVault/managedHsm/backup/start/action",
            Self::PoolRestore => "Microsoft.KeyVault/managedHsm/restore/start/action",
        }
    }

    /// Every data-plane operation (for exhaustive tests and tables).
    pub const ALL: &'static [Operation] = &[
        Self::SecretSet,
        Self::SecretGet,
        Self::SecretUpdate,
        Self::SecretList,
        Self::SecretListVersions,
        Self::SecretDelete,
        Self::SecretGetDeleted,
        Self::SecretListDeleted,
        Self::SecretRecover,
        Self::SecretPurge,
        Self::SecretBackup,
        Self::SecretRestore,
        Self::KeyCreate,
        Self::KeyGet,
        Self::KeyList,
        Self::KeyListVersions,
        Self::KeyDelete,
        Self::KeyGetDeleted,
        Self::KeyListDeleted,
        Self::KeyRecover,
        Self::KeyPurge,
        Self::KeySign,
        Self::KeyVerify,
        Self::KeyEncrypt,
        Self::KeyDecrypt,
        Self::KeyWrap,
        Self::KeyUnwrap,
        Self::KeyUpdate,
        Self::KeyImport,
        Self::KeyBackup,
        Self::KeyRestore,
        Self::KeyRotate,
        Self::KeyGetRotationPolicy,
        Self::KeySetRotationPolicy,
        Self::CertificateCreate,
        Self::CertificateGet,
        Self::CertificateList,
        Self::CertificateUpdate,
        Self::CertificateDelete,
        Self::CertificateGetDeleted,
        Self::CertificateListDeleted,
        Self::CertificateRecover,
        Self::CertificatePurge,
        Self::CertificateImport,
        Self::CertificateSetIssuer,
        Self::CertificateGetIssuer,
        Self::CertificateListIssuers,
        Self::CertificateDeleteIssuer,
        Self::CertificateContacts,
        Self::CertificateBackup,
        Self::CertificateRestore,
    ];

    /// The collection of the object this operation acts on (`secrets`, …).
    pub fn collection(self) -> &'static str {
        match self {
            Self::KeyCreate
            | Self::KeyGet
            | Self::KeyList
            | Self::KeyListVersions
            | Self::KeyDelete
            | Self::KeyGetDeleted
            | Self::KeyListDeleted
            | Self::KeyRecover
            | Self::KeyPurge
            | Self::KeySign
            | Self::KeyVerify
            | Self::KeyEncrypt
            | Self::KeyDecrypt
            | Self::KeyWrap
            | Self::KeyUnwrap
            | Self::KeyUpdate
            | Self::KeyImport
            | Self::KeyBackup
            | Self::KeyRestore
            | Self::KeyRotate
            | Self::KeyGetRotationPolicy
            | Self::KeySetRotationPolicy
            | Self::PoolBackup
            | Self::PoolRestore => "keys",
            Self::CertificateCreate
            | Self::CertificateGet
            | Self::CertificateList
            | Self::CertificateUpdate
            | Self::CertificateDelete
            | Self::CertificateGetDeleted
            | Self::CertificateListDeleted
            | Self::CertificateRecover
            | Self::CertificatePurge
            | Self::CertificateImport
            | Self::CertificateSetIssuer
            | Self::CertificateGetIssuer
            | Self::CertificateListIssuers
            | Self::CertificateDeleteIssuer
            | Self::CertificateContacts
            | Self::CertificateBackup
            | Self::CertificateRestore => "certificates",
            _ => "secrets",
        }
    }

    /// The access-policy permission (category, name) this operation needs.
    pub fn permission(self) -> (&'static str, &'static str) {
        match self {
            Self::SecretSet | Self::SecretUpdate => ("secrets", "set"),
            Self::SecretGet | Self::SecretGetDeleted => ("secrets", "get"),
            Self::SecretList | Self::SecretListVersions | Self::SecretListDeleted => {
                ("secrets", "list")
            }
            Self::SecretDelete => ("secrets", "delete"),
            Self::SecretRecover => ("secrets", "recover"),
            Self::SecretPurge => ("secrets", "purge"),
            Self::SecretBackup => ("secrets", "backup"),
            Self::SecretRestore => ("secrets", "restore"),
            Self::KeyCreate => ("keys", "create"),
            Self::KeyGet | Self::KeyGetDeleted => ("keys", "get"),
            Self::KeyList | Self::KeyListVersions | Self::KeyListDeleted => ("keys", "list"),
            Self::KeyDelete => ("keys", "delete"),
            Self::KeyRecover => ("keys", "recover"),
            Self::KeyPurge => ("keys", "purge"),
            Self::KeySign => ("keys", "sign"),
            Self::KeyVerify => ("keys", "verify"),
            Self::KeyEncrypt => ("keys", "encrypt"),
            Self::KeyDecrypt => ("keys", "decrypt"),
            Self::KeyWrap => ("keys", "wrapKey"),
            Self::KeyUnwrap => ("keys", "unwrapKey"),
            Self::KeyUpdate => ("keys", "update"),
            Self::KeyImport => ("keys", "import"),
            Self::KeyBackup => ("keys", "backup"),
            Self::KeyRestore => ("keys", "restore"),
            Self::KeyRotate => ("keys", "rotate"),
            Self::KeyGetRotationPolicy => ("keys", "getrotationpolicy"),
            Self::KeySetRotationPolicy => ("keys", "setrotationpolicy"),
            Self::CertificateCreate => ("certificates", "create"),
            Self::CertificateGet => ("certificates", "get"),
            Self::CertificateList => ("certificates", "list"),
            Self::CertificateUpdate => ("certificates", "update"),
            Self::CertificateDelete => ("certificates", "delete"),
            Self::CertificateGetDeleted => ("certificates", "get"),
            Self::CertificateListDeleted => ("certificates", "list"),
            Self::CertificateRecover => ("certificates", "recover"),
            Self::CertificatePurge => ("certificates", "purge"),
            Self::CertificateImport => ("certificates", "import"),
            Self::CertificateSetIssuer => ("certificates", "setissuers"),
            Self::CertificateGetIssuer => ("certificates", "getissuers"),
            Self::CertificateListIssuers => ("certificates", "listissuers"),
            Self::CertificateDeleteIssuer => ("certificates", "deleteissuers"),
            Self::CertificateContacts => ("certificates", "managecontacts"),
            Self::CertificateBackup => ("certificates", "backup"),
            Self::CertificateRestore => ("certificates", "restore"),
            Self::PoolBackup => ("keys", "backup"),
            Self::PoolRestore => ("keys", "restore"),
        }
    }
}

/// The authorization port: Azure RBAC or vault access policies, as the vault
/// says. One decision function per request.
#[async_trait::async_trait]
pub trait Authorizer: Send + Sync {
    /// Allows or refuses `principal` doing `operation` on `object` in `vault`.
    async fn check(
        &self,
        principal: &Principal,
        vault: &VaultRecord,
        operation: Operation,
        object: Option<&str>,
    ) -> Result<()>;
}

/// Proof that the caller was authorized for one operation on one vault.
#[derive(Debug)]
pub struct Authorized {
    principal: Principal,
    vault_id: String,
    operation: Operation,
    /// The object the decision was made for (`None`: the vault).
    object: Option<String>,
}

impl Authorized {
    /// Asks the authorizer; the only way to obtain an `Authorized`.
    pub async fn check(
        authorizer: &dyn Authorizer,
        principal: &Principal,
        vault: &VaultRecord,
        operation: Operation,
        object: Option<&str>,
    ) -> Result<Self> {
        authorizer
            .check(principal, vault, operation, object)
            .await?;
        Ok(Self {
            principal: principal.clone(),
            vault_id: vault.id.clone(),
            operation,
            object: object.map(str::to_owned),
        })
    }

    /// The authorized caller.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The authorized operation.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// Confirms this proof covers `operation` on the object `name` of
    /// `vault`: a decision made for another object (with RBAC, scopes can
    /// differ per object) or for the vault as a whole does not pass.
    pub fn require_on(
        &self,
        vault: &VaultRecord,
        operation: Operation,
        name: &crate::ids::ObjectName,
    ) -> Result<()> {
        self.require(vault, operation)?;
        if self
            .object
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case(name.as_str()))
        {
            Ok(())
        } else {
            Err(Error::Forbidden {
                reason: crate::error::ForbiddenReason::Rbac,
                message: format!(
                    "The caller is not authorized to perform {} on this object.",
                    operation.name()
                ),
            })
        }
    }

    /// Confirms this proof covers `operation` on `vault`.
    pub fn require(&self, vault: &VaultRecord, operation: Operation) -> Result<()> {
        if self.operation == operation && self.vault_id == vault.id {
            Ok(())
        } else {
            Err(Error::Forbidden {
                reason: crate::error::ForbiddenReason::Rbac,
                message: format!(
                    "The caller is not authorized to perform {} on this vault.",
                    operation.name()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct AllowAll;

    #[async_trait::async_trait]
    impl Authorizer for AllowAll {
        async fn check(
            &self,
            _: &Principal,
            _: &VaultRecord,
            _: Operation,
            _: Option<&str>,
        ) -> Result<()> {
            Ok(())
        }
    }

    fn vault(id: &str) -> VaultRecord {
        VaultRecord {
            id: id.into(),
            name: "vault".parse().unwrap(),
            tenant_id: "t".into(),
            subscription_id: "s".into(),
            resource_group: "g".into(),
            sku: "standard".into(),
            retention_days: 90,
            purge_protection: false,
            wrapped_key: Vec::new(),
            created: 0,
            properties: Default::default(),
            rev: 0,
        }
    }

    /// Finding 12: the proof named the vault and operation but not the
    /// object, so a decision for one secret could serve another.
    #[tokio::test]
    async fn a_proof_for_one_object_does_not_cover_another() {
        let p = Principal {
            object_id: "o".into(),
            tenant_id: "t".into(),
            app_id: None,
            kind: crate::PrincipalKind::ServicePrincipal,
        };
        let v = vault("id");
        let a = Authorized::check(&AllowAll, &p, &v, Operation::SecretGet, Some("Alpha"))
            .await
            .unwrap();
        let alpha: crate::ObjectName = "alpha".parse().unwrap();
        let beta: crate::ObjectName = "beta".parse().unwrap();
        assert!(a.require_on(&v, Operation::SecretGet, &alpha).is_ok());
        assert!(a.require_on(&v, Operation::SecretGet, &beta).is_err());
        assert!(a.require_on(&v, Operation::SecretSet, &alpha).is_err());
        assert!(a
            .require_on(&vault("other"), Operation::SecretGet, &alpha)
            .is_err());
        let whole = Authorized::check(&AllowAll, &p, &v, Operation::SecretGet, None)
            .await
            .unwrap();
        assert!(whole.require_on(&v, Operation::SecretGet, &alpha).is_err());
    }
}
