//! The versioned-object core shared by secrets, keys and certificates:
//! versions, attributes, tags, soft-delete state and paging. Each object kind
//! adds only its payload (sealed by the barrier) and its operations.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::ids::{ObjectName, Version};

/// The kinds of versioned objects a vault holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A secret value.
    Secret,
    /// A cryptographic key.
    Key,
    /// An X.509 certificate.
    Certificate,
}

impl ObjectKind {
    /// Stable storage tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Key => "key",
            Self::Certificate => "certificate",
        }
    }

    /// Parses the storage tag.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "secret" => Some(Self::Secret),
            "key" => Some(Self::Key),
            "certificate" => Some(Self::Certificate),
            _ => None,
        }
    }

    /// Lower-case noun for messages.
    pub fn noun(self) -> &'static str {
        self.as_str()
    }

    /// Capitalised noun for messages.
    pub fn title(self) -> &'static str {
        match self {
            Self::Secret => "Secret",
            Self::Key => "Key",
            Self::Certificate => "Certificate",
        }
    }
}

/// Limits Azure documents for tags.
pub const MAX_TAGS: usize = 15;
/// Longest tag name.
pub const MAX_TAG_NAME: usize = 512;
/// Longest tag value.
pub const MAX_TAG_VALUE: usize = 256;

/// Attributes every object version carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Whether the version may be used.
    pub enabled: bool,
    /// Not-before, Unix seconds.
    pub nbf: Option<i64>,
    /// Expiry, Unix seconds.
    pub exp: Option<i64>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Last update time, Unix seconds.
    pub updated: i64,
}

/// Caller-supplied attribute changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributesPatch {
    /// New enabled flag.
    pub enabled: Option<bool>,
    /// New not-before.
    pub nbf: Option<i64>,
    /// New expiry.
    pub exp: Option<i64>,
}

impl Attributes {
    /// Attributes of a version created at `now` with the caller's choices.
    pub fn new(now: i64, patch: &AttributesPatch) -> Self {
        Self {
            enabled: patch.enabled.unwrap_or(true),
            nbf: patch.nbf,
            exp: patch.exp,
            created: now,
            updated: now,
        }
    }

    /// Applies a patch at `now`.
    pub fn apply(&mut self, patch: &AttributesPatch, now: i64) {
        if let Some(e) = patch.enabled {
            self.enabled = e;
        }
        if patch.nbf.is_some() {
            self.nbf = patch.nbf;
        }
        if patch.exp.is_some() {
            self.exp = patch.exp;
        }
        self.updated = now;
    }
}

/// Checks tag count and lengths against Azure's limits.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::BadParameter(format!(
            "Too many tags: {} (at most {MAX_TAGS}).",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_NAME {
            return Err(Error::BadParameter(format!(
                "Tag names must be 1-{MAX_TAG_NAME} characters."
            )));
        }
        if v.chars().count() > MAX_TAG_VALUE {
            return Err(Error::BadParameter(format!(
                "Tag values must be at most {MAX_TAG_VALUE} characters."
            )));
        }
    }
    Ok(())
}

/// One stored version of an object. `payload` is ciphertext from the barrier;
/// `meta` is kind-specific public metadata (JSON), never secret material.
#[derive(Debug, Clone)]
pub struct VersionRecord {
    /// Secret, key or certificate.
    pub kind: ObjectKind,
    /// The object name as first created.
    pub name: ObjectName,
    /// This version's id.
    pub version: Version,
    /// Enabled, nbf, exp, created, updated.
    pub attributes: Attributes,
    /// Caller tags.
    pub tags: BTreeMap<String, String>,
    /// Caller content type.
    pub content_type: Option<String>,
    /// True when owned by a certificate.
    pub managed: bool,
    /// Sealed payload (ciphertext).
    pub payload: Vec<u8>,
    /// Kind-specific public metadata (JSON text).
    pub meta: String,
}

/// Soft-delete bookkeeping of a deleted object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedInfo {
    /// When it was deleted, Unix seconds.
    pub deleted_date: i64,
    /// When it will be purged, Unix seconds.
    pub scheduled_purge_date: i64,
}

/// One page of a listing plus the opaque cursor of the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Cursor for the next page, `None` on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Maps the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// Default and maximum page size (`maxresults`).
pub const MAX_PAGE_SIZE: u32 = 25;

/// Validates a caller's `maxresults`.
pub fn page_size(maxresults: Option<i64>) -> Result<u32> {
    match maxresults {
        None => Ok(MAX_PAGE_SIZE),
        Some(n) if (1..=i64::from(MAX_PAGE_SIZE)).contains(&n) => {
            u32::try_from(n).map_err(|_| bad_maxresults(n))
        }
        Some(n) => Err(bad_maxresults(n)),
    }
}

fn bad_maxresults(n: i64) -> Error {
    Error::BadParameter(format!(
        "Invalid maxresults {n}: the value must be between 1 and {MAX_PAGE_SIZE}."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_changes_only_given_fields() {
        let mut a = Attributes::new(10, &AttributesPatch::default());
        a.apply(
            &AttributesPatch {
                enabled: Some(false),
                ..Default::default()
            },
            20,
        );
        assert!(!a.enabled);
        assert_eq!(a.created, 10);
        assert_eq!(a.updated, 20);
        assert_eq!(a.exp, None);
    }

    #[test]
    fn maxresults_outside_one_to_twenty_five_is_rejected() {
        assert_eq!(page_size(None).unwrap(), 25);
        assert_eq!(page_size(Some(1)).unwrap(), 1);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(26)).is_err());
    }

    #[test]
    fn too_many_tags_are_rejected() {
        let tags: BTreeMap<_, _> = (0..16).map(|i| (format!("t{i}"), "v".to_owned())).collect();
        assert!(validate_tags(&tags).is_err());
    }
}
