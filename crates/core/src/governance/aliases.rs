//! Azure Policy aliases Keyhaven knows: each names a path in the resource as
//! the policy sees it (an ARM resource as `GET` returns it; a vault object
//! in the shape `object_view` builds). A rule naming any other alias is
//! refused when the definition is written.

/// `(resource type, alias suffix, path in the resource view)`. A path
/// segment ending `[*]` is every member of an array.
const ALIASES: &[(&str, &str, &str)] = &[
    // Vaults (Key Vault keeps its sku under `properties`).
    (VAULTS, "createMode", "properties.createMode"),
    (VAULTS, "enableSoftDelete", "properties.enableSoftDelete"),
    (VAULTS, "enablePurgeProtection", "properties.enablePurgeProtection"),
    (VAULTS, "enableRbacAuthorization", "properties.enableRbacAuthorization"),
    (VAULTS, "enabledForDeployment", "properties.enabledForDeployment"),
    (VAULTS, "enabledForDiskEncryption", "properties.enabledForDiskEncryption"),
    (VAULTS, "enabledForTemplateDeployment", "properties.enabledForTemplateDeployment"),
    (VAULTS, "softDeleteRetentionInDays", "properties.softDeleteRetentionInDays"),
    (VAULTS, "publicNetworkAccess", "properties.publicNetworkAccess"),
    (VAULTS, "tenantId", "properties.tenantId"),
    (VAULTS, "vaultUri", "properties.vaultUri"),
    (VAULTS, "sku.name", "properties.sku.name"),
    (VAULTS, "sku.family", "properties.sku.family"),
    (VAULTS, "networkAcls", "properties.networkAcls"),
    (VAULTS, "networkAcls.defaultAction", "properties.networkAcls.defaultAction"),
    (VAULTS, "networkAcls.bypass", "properties.networkAcls.bypass"),
    (VAULTS, "networkAcls.ipRules[*]", "properties.networkAcls.ipRules[*]"),
    (VAULTS, "networkAcls.ipRules[*].value", "properties.networkAcls.ipRules[*].value"),
    (VAULTS, "networkAcls.virtualNetworkRules[*]", "properties.networkAcls.virtualNetworkRules[*]"),
    (VAULTS, "networkAcls.virtualNetworkRules[*].id", "properties.networkAcls.virtualNetworkRules[*].id"),
    (VAULTS, "accessPolicies[*]", "properties.accessPolicies[*]"),
    (VAULTS, "accessPolicies[*].objectId", "properties.accessPolicies[*].objectId"),
    (VAULTS, "accessPolicies[*].tenantId", "properties.accessPolicies[*].tenantId"),
    (VAULTS, "privateEndpointConnections[*]", "properties.privateEndpointConnections[*]"),
    (
        VAULTS,
        "privateEndpointConnections[*].privateLinkServiceConnectionState.status",
        "properties.privateEndpointConnections[*].properties.privateLinkServiceConnectionState.status",
    ),
    (
        VAULTS,
        "privateEndpointConnections[*].privateEndpoint.id",
        "properties.privateEndpointConnections[*].properties.privateEndpoint.id",
    ),
    (
        VAULTS,
        "privateEndpointConnections/privateLinkServiceConnectionState.status",
        "properties.privateEndpointConnections[*].properties.privateLinkServiceConnectionState.status",
    ),
    // Diagnostic settings (what AuditIfNotExists / DeployIfNotExists
    // look for beside a vault).
    (DIAGNOSTICS, "workspaceId", "properties.workspaceId"),
    (DIAGNOSTICS, "storageAccountId", "properties.storageAccountId"),
    (DIAGNOSTICS, "eventHubAuthorizationRuleId", "properties.eventHubAuthorizationRuleId"),
    (DIAGNOSTICS, "eventHubName", "properties.eventHubName"),
    (DIAGNOSTICS, "logAnalyticsDestinationType", "properties.logAnalyticsDestinationType"),
    (DIAGNOSTICS, "logs", "properties.logs"),
    (DIAGNOSTICS, "logs[*]", "properties.logs[*]"),
    (DIAGNOSTICS, "logs[*].enabled", "properties.logs[*].enabled"),
    (DIAGNOSTICS, "logs[*].category", "properties.logs[*].category"),
    (DIAGNOSTICS, "logs[*].categoryGroup", "properties.logs[*].categoryGroup"),
    (DIAGNOSTICS, "logs[*].retentionPolicy.enabled", "properties.logs[*].retentionPolicy.enabled"),
    (DIAGNOSTICS, "logs[*].retentionPolicy.days", "properties.logs[*].retentionPolicy.days"),
    (DIAGNOSTICS, "logs.enabled", "properties.logs[*].enabled"),
    (DIAGNOSTICS, "logs.category", "properties.logs[*].category"),
    (DIAGNOSTICS, "metrics", "properties.metrics"),
    (DIAGNOSTICS, "metrics[*]", "properties.metrics[*]"),
    (DIAGNOSTICS, "metrics[*].enabled", "properties.metrics[*].enabled"),
    (DIAGNOSTICS, "metrics[*].category", "properties.metrics[*].category"),
    (DIAGNOSTICS, "metrics.enabled", "properties.metrics[*].enabled"),
    // Vault objects (Microsoft.KeyVault.Data).
    (SECRETS, "attributes.expiresOn", "attributes.expiresOn"),
    (SECRETS, "attributes.notBefore", "attributes.notBefore"),
    (SECRETS, "attributes.createdOn", "attributes.createdOn"),
    (SECRETS, "attributes.enabled", "attributes.enabled"),
    (SECRETS, "contentType", "contentType"),
    (SECRETS, "managed", "managed"),
    (KEYS, "attributes.expiresOn", "attributes.expiresOn"),
    (KEYS, "attributes.notBefore", "attributes.notBefore"),
    (KEYS, "attributes.createdOn", "attributes.createdOn"),
    (KEYS, "attributes.enabled", "attributes.enabled"),
    (KEYS, "keyType", "keyType"),
    (KEYS, "keySize", "keySize"),
    (KEYS, "ellipticCurveName", "ellipticCurveName"),
    (KEYS, "scheduledRotationDate", "scheduledRotationDate"),
    (KEYS, "managed", "managed"),
    (CERTIFICATES, "attributes.expiresOn", "attributes.expiresOn"),
    (CERTIFICATES, "attributes.notBefore", "attributes.notBefore"),
    (CERTIFICATES, "attributes.createdOn", "attributes.createdOn"),
    (CERTIFICATES, "properties.validityInMonths", "properties.validityInMonths"),
    (CERTIFICATES, "keyProperties.keyType", "keyProperties.keyType"),
    (CERTIFICATES, "keyProperties.keySize", "keyProperties.keySize"),
    (CERTIFICATES, "keyProperties.ellipticCurveName", "keyProperties.ellipticCurveName"),
    (CERTIFICATES, "issuer.name", "issuer.name"),
    (CERTIFICATES, "issuer.commonName", "issuer.commonName"),
    (CERTIFICATES, "lifetimeAction.daysBeforeExpiry", "lifetimeAction.daysBeforeExpiry"),
    (CERTIFICATES, "lifetimeAction.lifetimePercentage", "lifetimeAction.lifetimePercentage"),
];

/// Key Vault's vaults.
pub const VAULTS: &str = "Microsoft.KeyVault/vaults";
/// Diagnostic settings.
pub const DIAGNOSTICS: &str = "Microsoft.Insights/diagnosticSettings";
/// Secrets, as data-plane policies see them.
pub const SECRETS: &str = "Microsoft.KeyVault.Data/vaults/secrets";
/// Keys, as data-plane policies see them.
pub const KEYS: &str = "Microsoft.KeyVault.Data/vaults/keys";
/// Certificates, as data-plane policies see them.
pub const CERTIFICATES: &str = "Microsoft.KeyVault.Data/vaults/certificates";

/// The resource types Keyhaven evaluates policies against.
pub const EVALUATED_TYPES: &[&str] = &[VAULTS, SECRETS, KEYS, CERTIFICATES];

/// True for the types a `Microsoft.KeyVault.Data` definition covers.
pub fn is_data_type(t: &str) -> bool {
    t.to_ascii_lowercase()
        .starts_with("microsoft.keyvault.data/")
}

/// The view path of a field: an alias, or one of the resource's own
/// fields (`name`, `type`, `location`, `tags`, `tags['k']`, …). `None`: not
/// a field Keyhaven knows.
pub fn path_of(field: &str) -> Option<String> {
    let lower = field.to_ascii_lowercase();
    match lower.as_str() {
        "name" | "type" | "location" | "id" | "kind" | "tags" => return Some(lower),
        "fullname" => return Some("fullName".into()),
        "identity.type" => return Some("identity.type".into()),
        _ => {}
    }
    if let Some(tag) = tag_name(field) {
        return Some(format!("tags.{tag}"));
    }
    ALIASES.iter().find_map(|(ty, suffix, path)| {
        let alias_len = ty.len() + 1 + suffix.len();
        (lower.len() == alias_len
            && lower
                .get(..ty.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ty))
            && lower.get(ty.len()..ty.len() + 1) == Some("/")
            && lower
                .get(ty.len() + 1..)
                .is_some_and(|s| s.eq_ignore_ascii_case(suffix)))
        .then(|| (*path).to_owned())
    })
}

/// The tag a field names: `tags['k']`, `tags[k]` or `tags.k`.
pub fn tag_name(field: &str) -> Option<String> {
    let rest = field.get(..4).filter(|p| p.eq_ignore_ascii_case("tags"))?;
    let _ = rest;
    let after = field.get(4..)?;
    if let Some(k) = after
        .strip_prefix("['")
        .and_then(|r| r.strip_suffix("']"))
        .or_else(|| after.strip_prefix('[').and_then(|r| r.strip_suffix(']')))
        .or_else(|| after.strip_prefix('.'))
    {
        return (!k.is_empty()).then(|| k.to_owned());
    }
    None
}

/// The resource type an alias belongs to (`None` for the resource's own
/// fields).
pub fn type_of(field: &str) -> Option<&'static str> {
    let lower = field.to_ascii_lowercase();
    [VAULTS, DIAGNOSTICS, SECRETS, KEYS, CERTIFICATES]
        .into_iter()
        .find(|t| lower.starts_with(&format!("{}/", t.to_ascii_lowercase())))
}
