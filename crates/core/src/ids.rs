//! Typed identifiers, parsed once at the edge: vault names, object names and
//! object versions. A value of these types is always valid.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A vault name: 3–24 characters, letters, digits and hyphens, starting with a
/// letter, ending with a letter or digit, no consecutive hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultName(String);

impl VaultName {
    /// The name as given at creation.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VaultName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bytes = s.as_bytes();
        let ok_len = (3..=24).contains(&s.len());
        let ok_chars = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-');
        let ok_first = bytes.first().is_some_and(|b| b.is_ascii_alphabetic());
        let ok_last = bytes.last().is_some_and(|b| b.is_ascii_alphanumeric());
        let ok_hyphens = !s.contains("--");
        if ok_len && ok_chars && ok_first && ok_last && ok_hyphens {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(Error::BadParameter(format!(
                "The vault name '{}' is invalid. A vault name must be 3-24 characters of letters, digits and hyphens, start with a letter and end with a letter or digit.",
                truncate(s)
            )))
        }
    }
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a secret, key or certificate: `^[0-9a-zA-Z-]{1,127}$`.
/// Lookups are case-insensitive; the casing used at creation is kept for ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    /// The name as the caller spelled it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lookup key: names compare case-insensitively.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl FromStr for ObjectName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = (1..=127).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            // Azure: names that break the pattern are a 400 BadParameter.
            Err(Error::BadParameter(format!(
                "The request URI contains an invalid name: {}. Object names may only contain alphanumeric characters and dashes and be 1-127 characters long.",
                truncate(s)
            )))
        }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object version: 32 lowercase hex characters, chosen by the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// A fresh random version id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The 32-hex-character form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(Error::BadParameter(format!(
                "The version '{}' is invalid. A version is 32 hexadecimal characters.",
                truncate(s)
            )))
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keeps caller-supplied text in error messages short.
fn truncate(s: &str) -> String {
    s.chars().take(130).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_follow_the_azure_pattern() {
        assert!("my-Secret-1".parse::<ObjectName>().is_ok());
        assert!("".parse::<ObjectName>().is_err());
        assert!("a_b".parse::<ObjectName>().is_err());
        assert!("a.b".parse::<ObjectName>().is_err());
        assert!("x".repeat(127).parse::<ObjectName>().is_ok());
        assert!("x".repeat(128).parse::<ObjectName>().is_err());
    }

    #[test]
    fn object_name_lookup_key_ignores_case() {
        let a: ObjectName = "MySecret".parse().unwrap();
        assert_eq!(a.key(), "mysecret");
        assert_eq!(a.as_str(), "MySecret");
    }

    #[test]
    fn vault_names_follow_the_azure_rules() {
        assert!("dev".parse::<VaultName>().is_ok());
        assert!("a1-b2".parse::<VaultName>().is_ok());
        assert!("1ab".parse::<VaultName>().is_err());
        assert!("ab".parse::<VaultName>().is_err());
        assert!("ab-".parse::<VaultName>().is_err());
        assert!("a--b".parse::<VaultName>().is_err());
        assert!("a".repeat(25).parse::<VaultName>().is_err());
    }

    #[test]
    fn versions_are_32_hex_characters() {
        let v = Version::random();
        assert_eq!(v.as_str().len(), 32);
        assert!(v.as_str().parse::<Version>().is_ok());
        assert!("xyz".parse::<Version>().is_err());
    }
}

/// The parts of an ARM resource id
/// (`/subscriptions/{s}/resourceGroups/{g}/providers/{ns}/{type}/{name}`),
/// as the id spells them; a part the id lacks is empty. Segment names
/// compare without regard to case, as ARM's do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArmIdParts<'a> {
    /// The subscription id.
    pub subscription: &'a str,
    /// The resource group.
    pub resource_group: &'a str,
    /// The last type segment (`vaults`, `managedHSMs`).
    pub resource_type: &'a str,
    /// The resource's name (the last segment).
    pub name: &'a str,
}

impl<'a> ArmIdParts<'a> {
    /// Splits `id`.
    pub fn of(id: &'a str) -> Self {
        let segments: Vec<&str> = id.split('/').collect();
        let after = |name: &str| {
            segments
                .iter()
                .position(|s| s.eq_ignore_ascii_case(name))
                .and_then(|i| segments.get(i + 1))
                .copied()
                .unwrap_or_default()
        };
        let n = segments.len();
        Self {
            subscription: after("subscriptions"),
            resource_group: after("resourceGroups"),
            resource_type: if n >= 3 {
                segments.get(n - 2).copied().unwrap_or_default()
            } else {
                ""
            },
            name: segments.last().copied().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod arm_id_tests {
    use super::ArmIdParts;

    #[test]
    fn arm_ids_split_into_their_parts_whatever_the_case() {
        let p = ArmIdParts::of(
            "/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG1/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/V1",
        );
        assert_eq!(
            (p.subscription, p.resource_group, p.resource_type, p.name),
            ("S1", "RG1", "VAULTS", "V1")
        );
        let p = ArmIdParts::of(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v",
        );
        assert_eq!((p.subscription, p.resource_group, p.name), ("s", "rg", "v"));
        assert_eq!(ArmIdParts::of(""), ArmIdParts::default());
    }
}

/// Azure's wildcard matching (RBAC actions, Policy's `like`):
/// ASCII-case-insensitive, `*` matches any run of characters.
pub fn wildcard_matches(pattern: &str, action: &str) -> bool {
    glob(pattern.as_bytes(), action.as_bytes())
}

fn glob(p: &[u8], a: &[u8]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut ai) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ai < a.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some(pi);
                mark = ai;
                pi += 1;
            }
            Some(c) if a.get(ai).is_some_and(|x| x.eq_ignore_ascii_case(c)) => {
                pi += 1;
                ai += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ai = mark;
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == b'*'))
}

/// True if an assignment at `scope` covers `resource` (same id or an
/// ancestor on a path-segment boundary), ignoring case.
pub fn scope_covers(scope: &str, resource: &str) -> bool {
    let s = scope.trim_end_matches('/').as_bytes();
    let r = resource.trim_end_matches('/').as_bytes();
    if s.is_empty() {
        return true;
    }
    match r.get(..s.len()) {
        Some(head) if head.eq_ignore_ascii_case(s) => matches!(r.get(s.len()), None | Some(b'/')),
        _ => false,
    }
}
