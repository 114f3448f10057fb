//! Conditional Access: sign-in conditions applied when a token is issued.
//! Policies and named locations in Microsoft Graph v1.0's shapes
//! (`conditionalAccessPolicy`, `ipNamedLocation`), checked when written, and
//! their evaluation for one sign-in: who signs in, to which resource, with
//! which kind of client, from which address, and whether a second factor was
//! given. Anything a policy says that Keyhaven would not evaluate is refused
//! when written, so no condition is silently ignored at sign-in.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most policies (Entra's limit is 195).
pub const MAX_POLICIES: usize = 195;
/// Most named locations.
pub const MAX_LOCATIONS: usize = 195;
/// Most IP ranges in one named location.
pub const MAX_RANGES: usize = 2000;
/// Most ids in one include or exclude list.
const MAX_IDS: usize = 1000;
/// Longest display name.
const MAX_NAME: usize = 256;

/// Well-known resource application ids (what `includeApplications` names).
pub mod apps {
    /// Azure Key Vault.
    pub const KEY_VAULT: &str = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093";
    /// Azure Key Vault Managed HSM.
    pub const MANAGED_HSM: &str = "589d5083-6f11-4d30-a62a-a4b316a14abf";
    /// Windows Azure Service Management API (ARM).
    pub const ARM: &str = "797f4846-ba00-4fd7-ba43-dac1f8f63013";
    /// Microsoft Graph.
    pub const GRAPH: &str = "00000003-0000-0000-c000-000000000000";
    /// Log Analytics API.
    pub const LOG_ANALYTICS: &str = "ca7f3f0b-7d91-482c-8e09-c5d840d0eac5";
}

/// Why a policy or location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid<T>(text: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(text.into()))
}

// ---------------------------------------------------------------- policies

/// `conditionalAccessPolicy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Server-set id (a GUID).
    #[serde(default)]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Server-set.
    #[serde(default)]
    pub created_date_time: Option<String>,
    /// Server-set; null until the first update.
    #[serde(default)]
    pub modified_date_time: Option<String>,
    /// `enabled`, `disabled` or `enabledForReportingButNotEnforced`.
    #[serde(default)]
    pub state: String,
    /// When the policy applies.
    #[serde(default)]
    pub conditions: Conditions,
    /// What a sign-in it applies to must satisfy.
    #[serde(default)]
    pub grant_controls: Option<GrantControls>,
    /// Session restrictions.
    #[serde(default)]
    pub session_controls: Option<SessionControls>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `conditionalAccessConditionSet`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Conditions {
    /// Users, groups and directory roles.
    #[serde(default)]
    pub users: Option<Users>,
    /// Resource applications.
    #[serde(default)]
    pub applications: Option<Applications>,
    /// `all`, `browser`, `mobileAppsAndDesktopClients`, …
    #[serde(default)]
    pub client_app_types: Vec<String>,
    /// Named locations.
    #[serde(default)]
    pub locations: Option<Locations>,
    /// Workload identities (service principals).
    #[serde(default)]
    pub client_applications: Option<ClientApplications>,
    /// Not evaluated: must be absent or null.
    #[serde(default)]
    pub platforms: Option<Value>,
    /// Not evaluated: must be empty.
    #[serde(default)]
    pub sign_in_risk_levels: Vec<String>,
    /// Not evaluated: must be empty.
    #[serde(default)]
    pub user_risk_levels: Vec<String>,
    /// Not evaluated: must be empty.
    #[serde(default)]
    pub service_principal_risk_levels: Vec<String>,
    /// Not evaluated: must be absent or null.
    #[serde(default)]
    pub devices: Option<Value>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `conditionalAccessUsers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Users {
    /// Object ids, `All`, `None` or `GuestsOrExternalUsers`.
    #[serde(default)]
    pub include_users: Vec<String>,
    /// Object ids or `GuestsOrExternalUsers`.
    #[serde(default)]
    pub exclude_users: Vec<String>,
    /// Group object ids (transitive membership).
    #[serde(default)]
    pub include_groups: Vec<String>,
    /// Group object ids.
    #[serde(default)]
    pub exclude_groups: Vec<String>,
    /// Directory role template ids.
    #[serde(default)]
    pub include_roles: Vec<String>,
    /// Directory role template ids.
    #[serde(default)]
    pub exclude_roles: Vec<String>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `conditionalAccessApplications`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Applications {
    /// App ids, `All`, `None`, `Office365` or `MicrosoftAdminPortals`.
    #[serde(default)]
    pub include_applications: Vec<String>,
    /// App ids, `Office365` or `MicrosoftAdminPortals`.
    #[serde(default)]
    pub exclude_applications: Vec<String>,
    /// Not evaluated: must be empty.
    #[serde(default)]
    pub include_user_actions: Vec<String>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `conditionalAccessLocations`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Locations {
    /// Named location ids, `All` or `AllTrusted`.
    #[serde(default)]
    pub include_locations: Vec<String>,
    /// Named location ids or `AllTrusted`.
    #[serde(default)]
    pub exclude_locations: Vec<String>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `conditionalAccessClientApplications` (workload identities).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientApplications {
    /// Service principal object ids or `ServicePrincipalsInMyTenant`.
    #[serde(default)]
    pub include_service_principals: Vec<String>,
    /// Service principal object ids.
    #[serde(default)]
    pub exclude_service_principals: Vec<String>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `conditionalAccessGrantControls`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrantControls {
    /// `AND` or `OR`.
    #[serde(default)]
    pub operator: String,
    /// `block` or `mfa` (others are refused).
    #[serde(default)]
    pub built_in_controls: Vec<String>,
    /// Must be empty.
    #[serde(default)]
    pub custom_authentication_factors: Vec<String>,
    /// Must be empty.
    #[serde(default)]
    pub terms_of_use: Vec<String>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `conditionalAccessSessionControls`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionControls {
    /// How long a sign-in lasts before the user must sign in again.
    #[serde(default)]
    pub sign_in_frequency: Option<SignInFrequency>,
    /// Not evaluated: must be absent or null.
    #[serde(default)]
    pub application_enforced_restrictions: Option<Value>,
    /// Not evaluated: must be absent or null.
    #[serde(default)]
    pub cloud_app_security: Option<Value>,
    /// Not evaluated: must be absent or null.
    #[serde(default)]
    pub persistent_browser: Option<Value>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `signInFrequencySessionControl`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignInFrequency {
    /// Whether it is on.
    #[serde(default)]
    pub is_enabled: bool,
    /// `hours` or `days` (time based).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// How many hours or days.
    #[serde(default)]
    pub value: Option<i64>,
    /// `primaryAndSecondaryAuthentication` (the only one evaluated).
    #[serde(default)]
    pub authentication_type: Option<String>,
    /// `timeBased` or `everyTime`.
    #[serde(default)]
    pub frequency_interval: Option<String>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

impl SignInFrequency {
    /// The longest a sign-in lasts, in seconds; `Some(0)` for every time.
    pub fn seconds(&self) -> Option<i64> {
        if !self.is_enabled {
            return None;
        }
        if self.frequency_interval.as_deref() == Some("everyTime") {
            return Some(0);
        }
        let unit = match self.kind.as_deref() {
            Some("hours") => 3600,
            Some("days") => 86_400,
            _ => return None,
        };
        self.value.map(|v| v.saturating_mul(unit))
    }
}

/// Refuses members Keyhaven would not evaluate (null ones are dropped), so
/// nothing a policy says is silently ignored.
fn no_other(
    what: &str,
    other: &mut BTreeMap<String, Value>,
    allowed: &[&str],
) -> Result<(), Invalid> {
    other.retain(|k, v| !v.is_null() && !allowed.contains(&k.as_str()));
    match other.keys().next() {
        Some(k) => invalid(format!(
            "{what}.{} is not supported by Keyhaven.",
            k.chars().take(64).collect::<String>()
        )),
        None => Ok(()),
    }
}

const STATES: [&str; 3] = ["enabled", "disabled", "enabledForReportingButNotEnforced"];
const CLIENT_APP_TYPES: [&str; 6] = [
    "all",
    "browser",
    "mobileAppsAndDesktopClients",
    "exchangeActiveSync",
    "easSupported",
    "other",
];

fn check_ids(what: &str, ids: &[String], specials: &[&str]) -> Result<(), Invalid> {
    if ids.len() > MAX_IDS {
        return invalid(format!("{what} has more than {MAX_IDS} entries."));
    }
    for id in ids {
        if !specials.contains(&id.as_str()) && uuid::Uuid::parse_str(id).is_err() {
            let shown: String = id.chars().take(64).collect();
            return invalid(format!(
                "{what} contains '{shown}', which is neither an object id nor one of {specials:?}."
            ));
        }
    }
    Ok(())
}

impl Policy {
    fn refuse_unknown(&mut self) -> Result<(), Invalid> {
        no_other(
            "policy",
            &mut self.other,
            &["@odata.context", "@odata.type", "templateId"],
        )?;
        let c = &mut self.conditions;
        no_other("conditions", &mut c.other, &[])?;
        if let Some(u) = &mut c.users {
            no_other("conditions.users", &mut u.other, &[])?;
        }
        if let Some(a) = &mut c.applications {
            no_other("conditions.applications", &mut a.other, &[])?;
        }
        if let Some(l) = &mut c.locations {
            no_other("conditions.locations", &mut l.other, &[])?;
        }
        if let Some(w) = &mut c.client_applications {
            no_other("conditions.clientApplications", &mut w.other, &[])?;
        }
        if let Some(g) = &mut self.grant_controls {
            no_other("grantControls", &mut g.other, &[])?;
        }
        if let Some(sc) = &mut self.session_controls {
            no_other("sessionControls", &mut sc.other, &[])?;
            if let Some(f) = &mut sc.sign_in_frequency {
                no_other("sessionControls.signInFrequency", &mut f.other, &[])?;
            }
        }
        Ok(())
    }

    /// Checks a policy as written (POST, or the result of a PATCH) against
    /// the named locations that exist; fills in what Graph defaults.
    pub fn validate(&mut self, locations: &[NamedLocation]) -> Result<(), Invalid> {
        self.refuse_unknown()?;
        if self.display_name.trim().is_empty() || self.display_name.chars().count() > MAX_NAME {
            return invalid("displayName is required and at most 256 characters.");
        }
        if !STATES.contains(&self.state.as_str()) {
            return invalid(
                "state must be enabled, disabled or enabledForReportingButNotEnforced.",
            );
        }
        let c = &mut self.conditions;
        if c.client_app_types.is_empty() {
            c.client_app_types.push("all".into());
        }
        if let Some(bad) = c
            .client_app_types
            .iter()
            .find(|t| !CLIENT_APP_TYPES.contains(&t.as_str()))
        {
            let shown: String = bad.chars().take(64).collect();
            return invalid(format!("clientAppTypes value '{shown}' is not valid."));
        }
        if c.platforms.as_ref().is_some_and(|v| !v.is_null())
            || c.devices.as_ref().is_some_and(|v| !v.is_null())
            || !c.sign_in_risk_levels.is_empty()
            || !c.user_risk_levels.is_empty()
            || !c.service_principal_risk_levels.is_empty()
        {
            return invalid("Keyhaven evaluates users, applications, client app types and locations; platforms, devices and risk levels are not supported.");
        }
        let Some(apps) = c.applications.as_ref() else {
            return invalid("conditions.applications is required.");
        };
        if apps.include_applications.is_empty() {
            return invalid("conditions.applications.includeApplications is required.");
        }
        if !apps.include_user_actions.is_empty() {
            return invalid("includeUserActions is not supported.");
        }
        let app_specials = ["All", "None", "Office365", "MicrosoftAdminPortals"];
        check_ids(
            "includeApplications",
            &apps.include_applications,
            &app_specials,
        )?;
        check_ids(
            "excludeApplications",
            &apps.exclude_applications,
            &app_specials,
        )?;
        let workload = c.client_applications.is_some();
        match (&c.users, &c.client_applications) {
            (_, Some(w)) => {
                if w.include_service_principals.is_empty() {
                    return invalid("clientApplications.includeServicePrincipals is required.");
                }
                check_ids(
                    "includeServicePrincipals",
                    &w.include_service_principals,
                    &["ServicePrincipalsInMyTenant"],
                )?;
                check_ids(
                    "excludeServicePrincipals",
                    &w.exclude_service_principals,
                    &[],
                )?;
                if c.users.as_ref().is_some_and(|u| {
                    u.include_users.iter().any(|x| x != "None")
                        || !u.include_groups.is_empty()
                        || !u.include_roles.is_empty()
                }) {
                    return invalid("A policy for workload identities (clientApplications) must include no users (includeUsers: [\"None\"]).");
                }
            }
            (Some(u), None) => {
                if u.include_users.is_empty()
                    && u.include_groups.is_empty()
                    && u.include_roles.is_empty()
                {
                    return invalid("conditions.users must include users, groups or roles.");
                }
                // Keyhaven's tenant has no guests: a policy including only
                // them would never apply, so it is refused.
                check_ids("includeUsers", &u.include_users, &["All", "None"])?;
                let known = role_template_ids(&[crate::directory::GLOBAL_ADMINISTRATOR.to_owned()]);
                if let Some(r) = u.include_roles.iter().find(|r| !includes(&known, r)) {
                    return invalid(format!(
                        "includeRoles names '{}', a directory role Keyhaven does not grant; it would never match.",
                        r.chars().take(64).collect::<String>()
                    ));
                }
                check_ids("excludeUsers", &u.exclude_users, &["GuestsOrExternalUsers"])?;
                for (what, ids) in [
                    ("includeGroups", &u.include_groups),
                    ("excludeGroups", &u.exclude_groups),
                    ("includeRoles", &u.include_roles),
                    ("excludeRoles", &u.exclude_roles),
                ] {
                    check_ids(what, ids, &[])?;
                }
            }
            (None, None) => return invalid("conditions.users is required."),
        }
        if let Some(l) = &c.locations {
            check_ids(
                "includeLocations",
                &l.include_locations,
                &["All", "AllTrusted"],
            )?;
            check_ids("excludeLocations", &l.exclude_locations, &["AllTrusted"])?;
            for id in l.include_locations.iter().chain(&l.exclude_locations) {
                if !matches!(id.as_str(), "All" | "AllTrusted")
                    && !locations.iter().any(|n| n.id.eq_ignore_ascii_case(id))
                {
                    return invalid(format!("Named location '{id}' does not exist."));
                }
            }
        }
        if let Some(g) = &mut self.grant_controls {
            if !g.custom_authentication_factors.is_empty() || !g.terms_of_use.is_empty() {
                return invalid("customAuthenticationFactors and termsOfUse are not supported.");
            }
            if g.built_in_controls.is_empty() {
                return invalid("grantControls.builtInControls must name at least one control.");
            }
            if let Some(bad) = g
                .built_in_controls
                .iter()
                .find(|b| !matches!(b.as_str(), "block" | "mfa"))
            {
                let shown: String = bad.chars().take(64).collect();
                return invalid(format!(
                    "Grant control '{shown}' is not supported; Keyhaven evaluates block and mfa."
                ));
            }
            if g.built_in_controls.iter().any(|b| b == "block") && g.built_in_controls.len() > 1 {
                return invalid("block cannot be combined with other grant controls.");
            }
            if g.operator.is_empty() {
                g.operator = "OR".into();
            }
            if !matches!(g.operator.as_str(), "AND" | "OR") {
                return invalid("grantControls.operator must be AND or OR.");
            }
            if workload && g.built_in_controls.iter().any(|b| b != "block") {
                return invalid("A policy for workload identities can only block.");
            }
        } else if workload {
            return invalid("A policy for workload identities must block (grantControls builtInControls [\"block\"]).");
        }
        if let Some(s) = &self.session_controls {
            if s.application_enforced_restrictions
                .as_ref()
                .is_some_and(|v| !v.is_null())
                || s.cloud_app_security.as_ref().is_some_and(|v| !v.is_null())
                || s.persistent_browser.as_ref().is_some_and(|v| !v.is_null())
            {
                return invalid(
                    "Of the session controls, Keyhaven evaluates signInFrequency only.",
                );
            }
            if let Some(f) = &s.sign_in_frequency {
                if f.is_enabled && f.seconds().is_none_or(|v| v < 0) {
                    return invalid("signInFrequency needs type hours or days and a positive value, or frequencyInterval everyTime.");
                }
                if f.value.is_some_and(|v| !(1..=365 * 24).contains(&v)) {
                    return invalid("signInFrequency.value is out of range.");
                }
            }
        }
        if self.grant_controls.is_none()
            && self
                .session_controls
                .as_ref()
                .and_then(|s| s.sign_in_frequency.as_ref())
                .is_none_or(|f| !f.is_enabled)
        {
            return invalid("A policy needs grantControls or a session control.");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- locations

/// `ipNamedLocation` (the only kind Keyhaven can place an address in).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamedLocation {
    /// `#microsoft.graph.ipNamedLocation`.
    #[serde(rename = "@odata.type", default)]
    pub odata_type: String,
    /// Server-set id.
    #[serde(default)]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Server-set.
    #[serde(default)]
    pub created_date_time: Option<String>,
    /// Server-set.
    #[serde(default)]
    pub modified_date_time: Option<String>,
    /// Whether `AllTrusted` includes it.
    #[serde(default)]
    pub is_trusted: bool,
    /// Its ranges.
    #[serde(default)]
    pub ip_ranges: Vec<IpRange>,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// `iPv4CidrRange` / `iPv6CidrRange`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    /// `#microsoft.graph.iPv4CidrRange` or `#microsoft.graph.iPv6CidrRange`.
    #[serde(rename = "@odata.type", default)]
    pub odata_type: String,
    /// `a.b.c.d/n` or an IPv6 prefix.
    #[serde(default)]
    pub cidr_address: String,
    /// Members Keyhaven does not evaluate: refused when not null.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// The `@odata.type` of an IP named location.
pub const IP_NAMED_LOCATION: &str = "#microsoft.graph.ipNamedLocation";

/// A parsed CIDR prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `addr/len` (a bare address is a single host).
    pub fn parse(s: &str) -> Option<Self> {
        let (a, l) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() { max } else { l.parse().ok()? };
        (len <= max).then_some(Self { addr, len })
    }

    /// Whether `ip` is in the prefix (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl NamedLocation {
    /// Checks a named location as written.
    pub fn validate(&mut self) -> Result<(), Invalid> {
        no_other(
            "namedLocation",
            &mut self.other,
            &[
                "@odata.context",
                "countriesAndRegions",
                "includeUnknownCountriesAndRegions",
            ],
        )?;
        for r in &mut self.ip_ranges {
            no_other("ipRanges", &mut r.other, &[])?;
        }
        if self.odata_type != IP_NAMED_LOCATION {
            return invalid("Keyhaven supports #microsoft.graph.ipNamedLocation named locations (countries cannot be told from an address here); @odata.type is required.");
        }
        if self.display_name.trim().is_empty() || self.display_name.chars().count() > MAX_NAME {
            return invalid("displayName is required and at most 256 characters.");
        }
        if self.ip_ranges.is_empty() || self.ip_ranges.len() > MAX_RANGES {
            return invalid(format!("ipRanges must hold 1 to {MAX_RANGES} ranges."));
        }
        for r in &self.ip_ranges {
            let Some(c) = Cidr::parse(&r.cidr_address) else {
                let shown: String = r.cidr_address.chars().take(64).collect();
                return invalid(format!("'{shown}' is not a valid CIDR range."));
            };
            let want = if c.addr.is_ipv4() {
                "#microsoft.graph.iPv4CidrRange"
            } else {
                "#microsoft.graph.iPv6CidrRange"
            };
            if r.odata_type != want {
                return invalid(format!(
                    "The range '{}' needs @odata.type {want}.",
                    r.cidr_address
                ));
            }
        }
        Ok(())
    }

    /// Whether `ip` is in one of its ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ip_ranges
            .iter()
            .filter_map(|r| Cidr::parse(&r.cidr_address))
            .any(|c| c.contains(ip))
    }
}

/// Everything Conditional Access holds, stored as one document so that a
/// policy naming a location and the location's deletion cannot interleave.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Document {
    /// Policies, in creation order.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Named locations, in creation order.
    #[serde(default)]
    pub locations: Vec<NamedLocation>,
}

impl Document {
    /// Whether a policy names location `id`.
    pub fn location_in_use(&self, id: &str) -> bool {
        self.policies.iter().any(|p| {
            p.conditions.locations.as_ref().is_some_and(|l| {
                l.include_locations
                    .iter()
                    .chain(&l.exclude_locations)
                    .any(|x| x.eq_ignore_ascii_case(id))
            })
        })
    }
}

// ---------------------------------------------------------------- evaluation

/// Who signs in.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A user with its transitive groups and directory role template ids.
    User {
        /// Object id.
        object_id: &'a str,
        /// Transitive group ids.
        groups: &'a [String],
        /// Directory role template ids held.
        roles: &'a [String],
    },
    /// A service principal or managed identity.
    Workload {
        /// Object id.
        object_id: &'a str,
    },
}

/// One sign-in as Conditional Access sees it.
#[derive(Debug, Clone, Copy)]
pub struct SignIn<'a> {
    /// Who.
    pub subject: Subject<'a>,
    /// The resource's application id (see [`apps`]).
    pub resource_app: &'a str,
    /// The client application id.
    pub client_app: &'a str,
    /// `browser` or `mobileAppsAndDesktopClients`.
    pub client_app_type: &'a str,
    /// The caller's address, if known.
    pub ip: Option<IpAddr>,
    /// Whether a second factor was given in this sign-in session.
    pub mfa: bool,
    /// When the session's user last signed in with credentials (Unix s).
    pub auth_time: i64,
    /// Now.
    pub now: i64,
}

/// What the enforced policies decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Issue the token.
    Allow,
    /// Refuse: a block control applies (the policies' ids).
    Block(Vec<String>),
    /// A second factor is required and was not given.
    RequireMfa(Vec<String>),
    /// The session is older than a sign-in frequency allows.
    Reauthenticate(Vec<String>),
}

/// One policy's result, as Entra's sign-in logs list them
/// (`appliedConditionalAccessPolicies`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// Policy id.
    pub id: String,
    /// Policy name.
    pub display_name: String,
    /// `success`, `failure`, `notApplied`, `notEnabled`, `reportOnlySuccess`,
    /// `reportOnlyFailure`, `reportOnlyNotApplied` or `reportOnlyInterrupted`.
    pub result: &'static str,
    /// The grant controls it enforced (or would have).
    pub enforced_grant_controls: Vec<String>,
}

/// The evaluation of every policy for one sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the enforced policies decide.
    pub decision: Decision,
    /// Every policy's result.
    pub applied: Vec<Applied>,
}

fn includes(list: &[String], id: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(id))
}

fn location_matches(doc: &Document, list: &[String], ip: Option<IpAddr>) -> bool {
    list.iter().any(|entry| match entry.as_str() {
        "All" => true,
        "AllTrusted" => {
            ip.is_some_and(|ip| doc.locations.iter().any(|l| l.is_trusted && l.contains(ip)))
        }
        id => ip.is_some_and(|ip| {
            doc.locations
                .iter()
                .any(|l| l.id.eq_ignore_ascii_case(id) && l.contains(ip))
        }),
    })
}

fn app_matches(list: &[String], s: &SignIn<'_>) -> bool {
    list.iter().any(|entry| match entry.as_str() {
        "All" => true,
        "None" | "Office365" => false,
        "MicrosoftAdminPortals" => s
            .client_app
            .eq_ignore_ascii_case(crate::directory::PORTAL_APP_ID),
        id => id.eq_ignore_ascii_case(s.resource_app),
    })
}

/// Whether the policy's conditions cover the sign-in.
fn applies(doc: &Document, p: &Policy, s: &SignIn<'_>) -> bool {
    let c = &p.conditions;
    let who = match (s.subject, &c.users, &c.client_applications) {
        (
            Subject::User {
                object_id,
                groups,
                roles,
            },
            Some(u),
            None,
        ) => {
            let any_group = |list: &[String]| groups.iter().any(|g| includes(list, g));
            let any_role = |list: &[String]| roles.iter().any(|r| includes(list, r));
            let included = includes(&u.include_users, "All")
                || includes(&u.include_users, object_id)
                || any_group(&u.include_groups)
                || any_role(&u.include_roles);
            let excluded = includes(&u.exclude_users, object_id)
                || any_group(&u.exclude_groups)
                || any_role(&u.exclude_roles);
            included && !excluded
        }
        (Subject::Workload { object_id }, _, Some(w)) => {
            (includes(&w.include_service_principals, "ServicePrincipalsInMyTenant")
                || includes(&w.include_service_principals, object_id))
                && !includes(&w.exclude_service_principals, object_id)
        }
        _ => false,
    };
    if !who {
        return false;
    }
    let app = c.applications.as_ref().is_some_and(|a| {
        app_matches(&a.include_applications, s) && !app_matches(&a.exclude_applications, s)
    });
    let client = c
        .client_app_types
        .iter()
        .any(|t| t == "all" || t == s.client_app_type);
    let location = c.locations.as_ref().is_none_or(|l| {
        (l.include_locations.is_empty() || location_matches(doc, &l.include_locations, s.ip))
            && !location_matches(doc, &l.exclude_locations, s.ip)
    });
    app && client && location
}

/// What one applicable policy requires of the sign-in, and whether it is met.
enum Verdict {
    Met,
    Blocked,
    NeedsMfa,
    Stale,
}

fn verdict(p: &Policy, s: &SignIn<'_>) -> Verdict {
    if let Some(g) = &p.grant_controls {
        if g.built_in_controls.iter().any(|b| b == "block") {
            return Verdict::Blocked;
        }
        // Only mfa is left: with either operator it is required.
        if g.built_in_controls.iter().any(|b| b == "mfa") && !s.mfa {
            return Verdict::NeedsMfa;
        }
    }
    let max_age = p
        .session_controls
        .as_ref()
        .and_then(|c| c.sign_in_frequency.as_ref())
        .and_then(SignInFrequency::seconds);
    if let Some(max) = max_age {
        if s.now - s.auth_time > max {
            return Verdict::Stale;
        }
    }
    Verdict::Met
}

/// Evaluates every policy for a sign-in. Enforced policies decide; report-only
/// ones only say what they would have done. Block wins over everything, then
/// a stale session, then a missing second factor.
pub fn evaluate(doc: &Document, s: &SignIn<'_>) -> Outcome {
    let (mut blocked, mut stale, mut mfa) = (Vec::new(), Vec::new(), Vec::new());
    let mut applied = Vec::with_capacity(doc.policies.len());
    for p in &doc.policies {
        let report = p.state == "enabledForReportingButNotEnforced";
        let controls = p
            .grant_controls
            .as_ref()
            .map(|g| g.built_in_controls.clone())
            .unwrap_or_default();
        let result = if p.state == "disabled" {
            "notEnabled"
        } else if !applies(doc, p, s) {
            if report {
                "reportOnlyNotApplied"
            } else {
                "notApplied"
            }
        } else {
            let v = verdict(p, s);
            match (report, &v) {
                (true, Verdict::Met) => "reportOnlySuccess",
                (true, Verdict::NeedsMfa | Verdict::Stale) => "reportOnlyInterrupted",
                (true, Verdict::Blocked) => "reportOnlyFailure",
                (false, Verdict::Met) => "success",
                (false, _) => {
                    match v {
                        Verdict::Blocked => blocked.push(p.id.clone()),
                        Verdict::Stale => stale.push(p.id.clone()),
                        _ => mfa.push(p.id.clone()),
                    }
                    "failure"
                }
            }
        };
        applied.push(Applied {
            id: p.id.clone(),
            display_name: p.display_name.clone(),
            result,
            enforced_grant_controls: controls,
        });
    }
    let decision = if !blocked.is_empty() {
        Decision::Block(blocked)
    } else if !stale.is_empty() {
        Decision::Reauthenticate(stale)
    } else if !mfa.is_empty() {
        Decision::RequireMfa(mfa)
    } else {
        Decision::Allow
    };
    Outcome { decision, applied }
}

/// The role template ids of directory role names Keyhaven grants.
pub fn role_template_ids(names: &[String]) -> Vec<String> {
    let known: BTreeMap<&str, &str> = BTreeMap::from([(
        crate::directory::GLOBAL_ADMINISTRATOR,
        crate::directory::GLOBAL_ADMINISTRATOR_TEMPLATE,
    )]);
    names
        .iter()
        .filter_map(|n| known.get(n.as_str()).map(|t| (*t).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KV: &str = apps::KEY_VAULT;
    const USER: &str = "11111111-1111-1111-1111-111111111111";
    const GROUP: &str = "22222222-2222-2222-2222-222222222222";
    const LOC: &str = "33333333-3333-3333-3333-333333333333";
    const TRUSTED: &str = "44444444-4444-4444-4444-444444444444";

    fn doc(policies: Vec<Value>) -> Document {
        let locations = vec![
            serde_json::from_value(json!({
                "@odata.type": IP_NAMED_LOCATION, "id": LOC, "displayName": "outside",
                "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "203.0.113.0/24"}]
            }))
            .unwrap(),
            serde_json::from_value(json!({
                "@odata.type": IP_NAMED_LOCATION, "id": TRUSTED, "displayName": "office", "isTrusted": true,
                "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "198.51.100.0/24"},
                             {"@odata.type": "#microsoft.graph.iPv6CidrRange", "cidrAddress": "2001:db8::/32"}]
            }))
            .unwrap(),
        ];
        let policies = policies
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let mut p: Policy = serde_json::from_value(v).unwrap();
                p.id = format!("p{i}");
                p.validate(&locations).unwrap();
                p
            })
            .collect();
        Document {
            policies,
            locations,
        }
    }

    fn mfa_for_kv(state: &str) -> Value {
        json!({"displayName": "MFA for Key Vault", "state": state,
               "conditions": {"users": {"includeUsers": ["All"], "excludeGroups": [GROUP]},
                              "applications": {"includeApplications": [KV]},
                              "clientAppTypes": ["all"]},
               "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}})
    }

    fn sign_in<'a>(groups: &'a [String], ip: &str, mfa: bool) -> SignIn<'a> {
        SignIn {
            subject: Subject::User {
                object_id: USER,
                groups,
                roles: &[],
            },
            resource_app: KV,
            client_app: crate::directory::AZURE_CLI_APP_ID,
            client_app_type: "mobileAppsAndDesktopClients",
            ip: ip.parse().ok(),
            mfa,
            auth_time: 1000,
            now: 1000,
        }
    }

    #[test]
    fn mfa_policy_requires_a_second_factor_except_for_excluded_groups() {
        let d = doc(vec![mfa_for_kv("enabled")]);
        let none: Vec<String> = vec![];
        let o = evaluate(&d, &sign_in(&none, "192.0.2.1", false));
        assert_eq!(o.decision, Decision::RequireMfa(vec!["p0".into()]));
        assert_eq!(o.applied[0].result, "failure");
        assert_eq!(
            evaluate(&d, &sign_in(&none, "192.0.2.1", true)).decision,
            Decision::Allow
        );
        let excluded = vec![GROUP.to_owned()];
        let o = evaluate(&d, &sign_in(&excluded, "192.0.2.1", false));
        assert_eq!(o.decision, Decision::Allow);
        assert_eq!(o.applied[0].result, "notApplied");
        // Another resource: not covered.
        let mut s = sign_in(&none, "192.0.2.1", false);
        s.resource_app = apps::ARM;
        assert_eq!(evaluate(&d, &s).decision, Decision::Allow);
    }

    #[test]
    fn report_only_and_disabled_policies_never_refuse() {
        let none: Vec<String> = vec![];
        let d = doc(vec![mfa_for_kv("enabledForReportingButNotEnforced")]);
        let o = evaluate(&d, &sign_in(&none, "192.0.2.1", false));
        assert_eq!(o.decision, Decision::Allow);
        assert_eq!(o.applied[0].result, "reportOnlyInterrupted");
        let d = doc(vec![mfa_for_kv("disabled")]);
        let o = evaluate(&d, &sign_in(&none, "192.0.2.1", false));
        assert_eq!(o.decision, Decision::Allow);
        assert_eq!(o.applied[0].result, "notEnabled");
    }

    #[test]
    fn block_by_location_excludes_trusted_locations() {
        let none: Vec<String> = vec![];
        let d = doc(vec![json!({
            "displayName": "Block outside", "state": "enabled",
            "conditions": {"users": {"includeUsers": ["All"]},
                           "applications": {"includeApplications": ["All"]},
                           "clientAppTypes": ["all"],
                           "locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}},
            "grantControls": {"operator": "OR", "builtInControls": ["block"]}})]);
        assert_eq!(
            evaluate(&d, &sign_in(&none, "203.0.113.9", true)).decision,
            Decision::Block(vec!["p0".into()])
        );
        assert_eq!(
            evaluate(&d, &sign_in(&none, "198.51.100.7", false)).decision,
            Decision::Allow
        );
        assert_eq!(
            evaluate(&d, &sign_in(&none, "2001:db8::1", false)).decision,
            Decision::Allow
        );
        // An unknown address is in no named location: All covers it.
        assert_eq!(
            evaluate(&d, &sign_in(&none, "", false)).decision,
            Decision::Block(vec!["p0".into()])
        );
    }

    #[test]
    fn workload_policies_apply_to_service_principals_only() {
        let d = doc(vec![json!({
            "displayName": "Workloads from outside", "state": "enabled",
            "conditions": {"users": {"includeUsers": ["None"]},
                           "clientApplications": {"includeServicePrincipals": ["ServicePrincipalsInMyTenant"]},
                           "applications": {"includeApplications": ["All"]},
                           "clientAppTypes": ["all"],
                           "locations": {"includeLocations": [LOC]}},
            "grantControls": {"operator": "OR", "builtInControls": ["block"]}})]);
        let none: Vec<String> = vec![];
        let mut s = sign_in(&none, "203.0.113.9", false);
        assert_eq!(
            evaluate(&d, &s).decision,
            Decision::Allow,
            "users unaffected"
        );
        s.subject = Subject::Workload { object_id: USER };
        assert!(matches!(evaluate(&d, &s).decision, Decision::Block(_)));
        s.ip = "192.0.2.5".parse().ok();
        assert_eq!(evaluate(&d, &s).decision, Decision::Allow);
    }

    #[test]
    fn sign_in_frequency_asks_for_a_fresh_sign_in() {
        let d = doc(vec![json!({
            "displayName": "Every hour", "state": "enabled",
            "conditions": {"users": {"includeUsers": [USER]},
                           "applications": {"includeApplications": [KV]}, "clientAppTypes": ["all"]},
            "sessionControls": {"signInFrequency": {"isEnabled": true, "type": "hours", "value": 1}}})]);
        let none: Vec<String> = vec![];
        let mut s = sign_in(&none, "192.0.2.1", false);
        assert_eq!(evaluate(&d, &s).decision, Decision::Allow);
        s.now = s.auth_time + 3601;
        assert!(matches!(
            evaluate(&d, &s).decision,
            Decision::Reauthenticate(_)
        ));
    }

    #[test]
    fn what_would_be_ignored_is_refused_when_written() {
        let locs: Vec<NamedLocation> = vec![];
        for bad in [
            json!({"displayName": "x", "state": "on", "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}}, "grantControls": {"builtInControls": ["mfa"]}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}}, "grantControls": {"builtInControls": ["compliantDevice"]}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}, "signInRiskLevels": ["high"]}, "grantControls": {"builtInControls": ["mfa"]}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}, "locations": {"includeLocations": [LOC]}}, "grantControls": {"builtInControls": ["block"]}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeUsers": ["bob"]}, "applications": {"includeApplications": ["All"]}}, "grantControls": {"builtInControls": ["mfa"]}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}}, "grantControls": {"builtInControls": ["block", "mfa"]}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}, "authenticationFlows": {"transferMethods": "deviceCodeFlow"}}, "grantControls": {"builtInControls": ["block"]}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeUsers": ["GuestsOrExternalUsers"]}, "applications": {"includeApplications": ["All"]}}, "grantControls": {"builtInControls": ["block"]}}),
            json!({"displayName": "x", "state": "enabled", "conditions": {"users": {"includeRoles": ["9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"]}, "applications": {"includeApplications": ["All"]}}, "grantControls": {"builtInControls": ["mfa"]}}),
        ] {
            let mut p: Policy = serde_json::from_value(bad.clone()).unwrap();
            assert!(p.validate(&locs).is_err(), "{bad}");
        }
        let mut loc: NamedLocation = serde_json::from_value(json!({"@odata.type": "#microsoft.graph.countryNamedLocation", "displayName": "c", "countriesAndRegions": ["US"]})).unwrap();
        assert!(loc.validate().is_err());
        let mut loc: NamedLocation = serde_json::from_value(json!({"@odata.type": IP_NAMED_LOCATION, "displayName": "c", "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "10.0.0.0/33"}]})).unwrap();
        assert!(loc.validate().is_err());
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("127.0.0.2/32").unwrap();
        assert!(c.contains("127.0.0.2".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!c.contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/").is_some());
    }
}
