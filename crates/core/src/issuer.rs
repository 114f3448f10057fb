//! Certificate issuers and contacts: vault-level settings of the certificates
//! API. Both are kept as policy records of the reserved certificate names
//! `issuers` and `contacts` (which no certificate can have, as on Azure,
//! because their paths collide). An issuer's password is sealed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, Operation};
use crate::error::{Error, Result};
use crate::ids::ObjectName;
use crate::object::ObjectKind;
use crate::service::VaultService;
use crate::store::PolicyRecord;
use crate::vault::VaultRecord;

/// The provider of Keyhaven's private CA: a certificate in the same vault
/// (named by the issuer's `account_id`) signs the certificates.
pub const PRIVATE_CA_PROVIDER: &str = "Keyhaven-PrivateCA";
/// Reserved certificate names.
pub const RESERVED: [&str; 2] = ["issuers", "contacts"];
const ISSUERS: &str = "issuers";
const CONTACTS: &str = "contacts";
const MAX_ISSUERS: usize = 100;
const MAX_CONTACTS: usize = 64;

/// An administrator of an issuer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AdminContact {
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
}

/// A certificate issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issuer {
    /// The name as first set.
    pub name: String,
    /// Provider (`Keyhaven-PrivateCA`, or a public CA's name, kept but not reachable).
    pub provider: String,
    /// Account id (for the private CA: the CA certificate's name).
    pub account_id: Option<String>,
    /// The account password, sealed (base64); never returned.
    pub sealed_password: Option<String>,
    /// Organization id.
    pub organization_id: Option<String>,
    /// Organization administrators.
    pub admins: Option<Vec<AdminContact>>,
    /// Enabled.
    pub enabled: bool,
    /// Created, Unix seconds.
    pub created: i64,
    /// Updated, Unix seconds.
    pub updated: i64,
}

/// A caller's issuer fields (`None` keeps the current value on update).
#[derive(Debug, Default)]
pub struct IssuerInput {
    /// Provider (required on create).
    pub provider: Option<String>,
    /// Account id.
    pub account_id: Option<String>,
    /// Password.
    pub password: Option<crate::Sensitive<String>>,
    /// Organization id.
    pub organization_id: Option<String>,
    /// Administrators.
    pub admins: Option<Vec<AdminContact>>,
    /// Enabled.
    pub enabled: Option<bool>,
}

/// A certificate contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Contact {
    /// Email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Phone.
    pub phone: Option<String>,
}

fn reserved(name: &str) -> Result<ObjectName> {
    name.parse().map_err(|_| Error::Integrity)
}

fn issuer_missing(name: &str) -> Error {
    Error::NotFound {
        kind: ObjectKind::Certificate,
        name: format!("issuers/{name}"),
    }
}

impl VaultService {
    async fn read_doc<T: for<'de> Deserialize<'de> + Default>(
        &self,
        vault: &VaultRecord,
        which: &str,
    ) -> Result<Option<T>> {
        self.store
            .get_policy(&vault.id, ObjectKind::Certificate, &reserved(which)?)
            .await?
            .map(|r| serde_json::from_str(&r.body).map_err(|_| Error::Integrity))
            .transpose()
    }

    async fn write_doc<T: Serialize>(
        &self,
        vault: &VaultRecord,
        which: &str,
        doc: &T,
    ) -> Result<()> {
        let now = self.clock.now();
        let body = serde_json::to_string(doc).map_err(|_| Error::Integrity)?;
        self.store
            .put_policy(
                &vault.id,
                ObjectKind::Certificate,
                &reserved(which)?,
                &PolicyRecord {
                    body,
                    created: now,
                    updated: now,
                },
            )
            .await?;
        Ok(())
    }

    /// Creates or updates an issuer (`create` = PUT semantics: provider required).
    pub async fn set_issuer(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        input: IssuerInput,
        create: bool,
    ) -> Result<Issuer> {
        use base64::Engine as _;
        auth.require(vault, Operation::CertificateSetIssuer)?;
        let mut doc: BTreeMap<String, Issuer> =
            self.read_doc(vault, ISSUERS).await?.unwrap_or_default();
        let now = self.clock.now();
        let existing = doc.get(&name.key()).cloned();
        if !create && existing.is_none() {
            return Err(issuer_missing(name.as_str()));
        }
        let provider = match (input.provider, &existing) {
            (Some(p), _) if !p.trim().is_empty() && p.len() <= 64 => p,
            (None, Some(e)) if !create => e.provider.clone(),
            _ => {
                return Err(Error::BadParameter(
                    "The issuer's provider is required.".into(),
                ))
            }
        };
        if provider.eq_ignore_ascii_case(PRIVATE_CA_PROVIDER) {
            let ca = input
                .account_id
                .as_deref()
                .or(existing.as_ref().and_then(|e| e.account_id.as_deref()));
            if ca.is_none_or(|c| c.parse::<ObjectName>().is_err()) {
                return Err(Error::BadParameter(format!(
                    "A {PRIVATE_CA_PROVIDER} issuer needs account_id: the name of the CA certificate in this vault."
                )));
            }
        }
        let sealed_password = match input.password {
            Some(p) => {
                let aad = format!("keyhaven/v1/issuer-password/{}/{}", vault.id, name.key());
                let sealed = self
                    .barrier
                    .seal(vault, aad.as_bytes(), p.expose().as_bytes())?;
                Some(base64::engine::general_purpose::STANDARD.encode(sealed))
            }
            None => existing.as_ref().and_then(|e| e.sealed_password.clone()),
        };
        let base = existing.clone();
        let issuer = Issuer {
            name: base
                .as_ref()
                .map_or_else(|| name.to_string(), |e| e.name.clone()),
            provider,
            account_id: input
                .account_id
                .or_else(|| base.as_ref().and_then(|e| e.account_id.clone())),
            sealed_password,
            organization_id: input
                .organization_id
                .or_else(|| base.as_ref().and_then(|e| e.organization_id.clone())),
            admins: input
                .admins
                .or_else(|| base.as_ref().and_then(|e| e.admins.clone())),
            enabled: input
                .enabled
                .or_else(|| base.as_ref().map(|e| e.enabled))
                .unwrap_or(true),
            created: base.as_ref().map_or(now, |e| e.created),
            updated: now,
        };
        if existing.is_none() && doc.len() >= MAX_ISSUERS {
            return Err(Error::BadParameter(format!(
                "A vault holds at most {MAX_ISSUERS} issuers."
            )));
        }
        doc.insert(name.key(), issuer.clone());
        self.write_doc(vault, ISSUERS, &doc).await?;
        Ok(issuer)
    }

    /// Reads an issuer.
    pub async fn get_issuer(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Issuer> {
        auth.require(vault, Operation::CertificateGetIssuer)?;
        self.find_issuer(vault, name.as_str()).await
    }

    pub(crate) async fn find_issuer(&self, vault: &VaultRecord, name: &str) -> Result<Issuer> {
        let doc: BTreeMap<String, Issuer> =
            self.read_doc(vault, ISSUERS).await?.unwrap_or_default();
        doc.get(&name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| issuer_missing(name))
    }

    /// Lists issuers (all of them: a vault holds at most 100).
    pub async fn list_issuers(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
    ) -> Result<Vec<Issuer>> {
        auth.require(vault, Operation::CertificateListIssuers)?;
        let doc: BTreeMap<String, Issuer> =
            self.read_doc(vault, ISSUERS).await?.unwrap_or_default();
        Ok(doc.into_values().collect())
    }

    /// Deletes an issuer, returning it.
    pub async fn delete_issuer(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Issuer> {
        auth.require(vault, Operation::CertificateDeleteIssuer)?;
        let mut doc: BTreeMap<String, Issuer> =
            self.read_doc(vault, ISSUERS).await?.unwrap_or_default();
        let gone = doc
            .remove(&name.key())
            .ok_or_else(|| issuer_missing(name.as_str()))?;
        self.write_doc(vault, ISSUERS, &doc).await?;
        Ok(gone)
    }

    /// The certificate contacts; 404 when never set or deleted.
    pub async fn get_contacts(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
    ) -> Result<Vec<Contact>> {
        auth.require(vault, Operation::CertificateContacts)?;
        self.read_doc::<Vec<Contact>>(vault, CONTACTS)
            .await?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::NotFound {
                kind: ObjectKind::Certificate,
                name: "contacts".into(),
            })
    }

    /// Replaces the certificate contacts.
    pub async fn set_contacts(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        contacts: Vec<Contact>,
    ) -> Result<Vec<Contact>> {
        auth.require(vault, Operation::CertificateContacts)?;
        if contacts.len() > MAX_CONTACTS {
            return Err(Error::BadParameter(format!(
                "At most {MAX_CONTACTS} contacts can be set."
            )));
        }
        for c in &contacts {
            let email_ok = c
                .email
                .as_deref()
                .is_some_and(|e| e.contains('@') && e.len() <= 256);
            if !email_ok {
                return Err(Error::BadParameter(
                    "Every contact needs a valid email address.".into(),
                ));
            }
        }
        self.write_doc(vault, CONTACTS, &contacts).await?;
        Ok(contacts)
    }

    /// Deletes the certificate contacts, returning them.
    pub async fn delete_contacts(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
    ) -> Result<Vec<Contact>> {
        auth.require(vault, Operation::CertificateContacts)?;
        let current = self
            .read_doc::<Vec<Contact>>(vault, CONTACTS)
            .await?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::NotFound {
                kind: ObjectKind::Certificate,
                name: "contacts".into(),
            })?;
        self.write_doc(vault, CONTACTS, &Vec::<Contact>::new())
            .await?;
        Ok(current)
    }
}
