//! Azure RBAC as data: the built-in role definitions (real ids, actions and
//! data actions), custom roles, role assignments at scopes, and the matching
//! rules (case-insensitive, `*` wildcards, scope prefixes on path segments).

use serde::{Deserialize, Serialize};

use crate::condition::Attributes;

/// ARM type of role definitions.
pub const ROLE_DEFINITION_TYPE: &str = "Microsoft.Authorization/roleDefinitions";
/// ARM type of role assignments.
pub const ROLE_ASSIGNMENT_TYPE: &str = "Microsoft.Authorization/roleAssignments";

/// One permission block of a role.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Permission {
    /// Control-plane actions.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Excluded control-plane actions.
    #[serde(rename = "notActions", default)]
    pub not_actions: Vec<String>,
    /// Data-plane actions.
    #[serde(rename = "dataActions", default)]
    pub data_actions: Vec<String>,
    /// Excluded data-plane actions.
    #[serde(rename = "notDataActions", default)]
    pub not_data_actions: Vec<String>,
    /// An ABAC condition (version 2.0) that must hold for the actions of
    /// this block to apply (see [`crate::condition`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The condition's language version (`2.0`).
    #[serde(
        rename = "conditionVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub condition_version: Option<String>,
}

/// A role definition (built-in or custom).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleDefinition {
    /// The role's GUID.
    #[serde(skip)]
    pub id: String,
    /// Name.
    #[serde(rename = "roleName")]
    pub role_name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// `BuiltInRole` or `CustomRole`.
    #[serde(rename = "type", default = "custom_role")]
    pub kind: String,
    /// Scopes it may be assigned at.
    #[serde(rename = "assignableScopes", default)]
    pub assignable_scopes: Vec<String>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

fn custom_role() -> String {
    "CustomRole".into()
}

/// The properties of a stored role assignment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleAssignment {
    /// The assignment's name (GUID).
    #[serde(skip)]
    pub name: String,
    /// Full role definition id (…/roleDefinitions/{guid}).
    #[serde(rename = "roleDefinitionId")]
    pub role_definition_id: String,
    /// The principal.
    #[serde(rename = "principalId")]
    pub principal_id: String,
    /// `User`, `Group`, `ServicePrincipal`.
    #[serde(rename = "principalType", default)]
    pub principal_type: String,
    /// The scope (ARM id prefix).
    pub scope: String,
    /// An ABAC condition on the assignment (validated when written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Just-in-time roles: when a time-bound assignment starts (Unix s).
    #[serde(rename = "startsAt", default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<i64>,
    /// Just-in-time roles: when it ends; the decision ignores it from then.
    #[serde(rename = "endsAt", default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<i64>,
    /// Just-in-time roles: the schedule request that made it, and the
    /// eligibility it activates (`None` for an administrator's assignment).
    #[serde(rename = "schedule", default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleLink>,
}

/// Where a time-bound assignment came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScheduleLink {
    /// The `roleAssignmentScheduleRequests` name.
    #[serde(rename = "requestName")]
    pub request: String,
    /// The eligibility schedule's name, for an activation.
    #[serde(
        rename = "eligibility",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub eligibility: Option<String>,
}

impl RoleAssignment {
    /// Whether the assignment grants anything at `now` (a time-bound one
    /// only inside its window).
    pub fn active_at(&self, now: i64) -> bool {
        self.starts.is_none_or(|s| s <= now) && self.ends.is_none_or(|e| now < e)
    }

    /// The GUID at the end of the role definition id.
    pub fn role_guid(&self) -> &str {
        self.role_definition_id.rsplit('/').next().unwrap_or("")
    }

    /// True if the assignment's own condition (if any) lets it apply to
    /// `action`.
    pub fn condition_holds(&self, action: &str, conditions: Conditions<'_>) -> bool {
        match (&self.condition, conditions) {
            (None, _) => true,
            (Some(_), Conditions::Unrestricted) => false,
            (Some(c), Conditions::Evaluate(attrs)) => crate::condition::evaluate(c, action, attrs),
        }
    }
}

/// How the conditions of permission blocks are treated in a decision.
#[derive(Debug, Clone, Copy)]
pub enum Conditions<'a> {
    /// Evaluated against these attributes of the request.
    Evaluate(&'a Attributes),
    /// Only blocks without a condition count: the caller must hold the
    /// action unrestricted (changing a vault's permission model).
    Unrestricted,
}

impl RoleDefinition {
    /// True if this role allows control-plane `action` with no request
    /// attributes (a conditioned block allows only what its condition
    /// allows without them).
    pub fn allows_action(&self, action: &str) -> bool {
        self.allows_action_with(action, Conditions::Evaluate(&Attributes::none()))
    }

    /// True if this role allows control-plane `action`, its conditions
    /// treated as `conditions` says.
    pub fn allows_action_with(&self, action: &str, conditions: Conditions<'_>) -> bool {
        self.permissions.iter().any(|p| {
            p.actions.iter().any(|a| matches(a, action))
                && !p.not_actions.iter().any(|a| matches(a, action))
                && match (&p.condition, conditions) {
                    (None, _) => true,
                    (Some(_), Conditions::Unrestricted) => false,
                    (Some(c), Conditions::Evaluate(attrs)) => {
                        crate::condition::evaluate(c, action, attrs)
                    }
                }
        })
    }

    /// True if this role allows data-plane `action`.
    pub fn allows_data_action(&self, action: &str) -> bool {
        self.permissions.iter().any(|p| {
            p.data_actions.iter().any(|a| matches(a, action))
                && !p.not_data_actions.iter().any(|a| matches(a, action))
        })
    }
}

pub use keyhaven_core::ids::{scope_covers, wildcard_matches as matches};

const KV_READS: &[&str] = &[
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
];

struct Builtin {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    actions: &'static [&'static str],
    not_actions: &'static [&'static str],
    data_actions: &'static [&'static str],
    condition: Option<&'static str>,
}

/// The roles Key Vault Data Access Administrator may assign and remove, as
/// its condition in Azure lists them: Key Vault Administrator, Certificates
/// Officer, Crypto Officer, Crypto Service Encryption User, Crypto User,
/// Reader, Secrets Officer and Secrets User.
// Azure: built-in roles, "Key Vault Data Access Administrator".
const DATA_ACCESS_ADMIN_CONDITION: &str = "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals{00482a5a-887f-4fb3-b363-3b7fe8e74483, a4417e6f-fecd-4de8-b567-7b0420556985, 14b46e9e-c2b7-41b4-b07b-48a6ebf60603, e147488a-f6f5-4113-8e2d-b22465e65bf6, 12338af0-0e69-4776-bea7-57ae8d297424, 21090545-7ca7-4776-b22c-e363652d74d2, b86a8fe4-44ce-4948-aee5-eccb2c155cd7, 4633458b-17de-408a-b874-0445c86b69e6})) AND ((!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals{00482a5a-887f-4fb3-b363-3b7fe8e74483, a4417e6f-fecd-4de8-b567-7b0420556985, 14b46e9e-c2b7-41b4-b07b-48a6ebf60603, e147488a-f6f5-4113-8e2d-b22465e65bf6, 12338af0-0e69-4776-bea7-57ae8d297424, 21090545-7ca7-4776-b22c-e363652d74d2, b86a8fe4-44ce-4948-aee5-eccb2c155cd7, 4633458b-17de-408a-b874-0445c86b69e6}))";

const BUILTINS: &[Builtin] = &[
    Builtin {
        id: "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        name: "Key Vault Administrator",
        description: "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and secrets. Cannot manage key vault resources or manage role assignments.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
        condition: None,
    },
    Builtin {
        id: "21090545-7ca7-4776-b22c-e363652d74d2",
        name: "Key Vault Reader",
        description: "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as secret contents or key material.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
        condition: None,
    },
    Builtin {
        id: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        name: "Key Vault Secrets Officer",
        description: "Perform any action on the secrets of a key vault, except manage permissions.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
        condition: None,
    },
    Builtin {
        id: "4633458b-17de-408a-b874-0445c86b69e6",
        name: "Key Vault Secrets User",
        description: "Read secret contents including secret portion of a certificate with private key.",
        actions: &[],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/getSecret/action", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
        condition: None,
    },
    Builtin {
        id: "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        name: "Key Vault Crypto Officer",
        description: "Perform any action on the keys of a key vault, except manage permissions.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*"],
        condition: None,
    },
    Builtin {
        id: "12338af0-0e69-4776-bea7-57ae8d297424",
        name: "Key Vault Crypto User",
        description: "Perform cryptographic operations using keys.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/update/action",
            "Microsoft.KeyVault/vaults/keys/backup/action",
            "Microsoft.KeyVault/vaults/keys/encrypt/action",
            "Microsoft.KeyVault/vaults/keys/decrypt/action",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            "Microsoft.KeyVault/vaults/keys/sign/action",
            "Microsoft.KeyVault/vaults/keys/verify/action",
        ],
        condition: None,
    },
    Builtin {
        id: "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        name: "Key Vault Crypto Service Encryption User",
        description: "Read metadata of keys and perform wrap/unwrap operations.",
        actions: &[
            "Microsoft.EventGrid/eventSubscriptions/write",
            "Microsoft.EventGrid/eventSubscriptions/read",
            "Microsoft.EventGrid/eventSubscriptions/delete",
        ],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
        ],
        condition: None,
    },
    Builtin {
        id: "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
        name: "Key Vault Crypto Service Release User",
        description: "Release keys.",
        actions: &[],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/keys/release/action"],
        condition: None,
    },
    Builtin {
        id: "a4417e6f-fecd-4de8-b567-7b0420556985",
        name: "Key Vault Certificates Officer",
        description: "Perform any action on the certificates of a key vault, except manage permissions.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/certificatecas/*",
            "Microsoft.KeyVault/vaults/certificates/*",
            "Microsoft.KeyVault/vaults/certificatecontacts/write",
        ],
        condition: None,
    },
    Builtin {
        id: "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
        name: "Key Vault Certificate User",
        description: "Read entire certificate contents including secret and key portion.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/certificates/read",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            "Microsoft.KeyVault/vaults/keys/read",
        ],
        condition: None,
    },
    Builtin {
        id: "f25e0fa2-a7c8-4377-a976-54943a77a395",
        name: "Key Vault Contributor",
        description: "Manage key vaults, but does not allow you to assign roles in Azure RBAC, and does not allow you to access secrets, keys, or certificates.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.KeyVault/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
        ],
        not_actions: &[
            "Microsoft.KeyVault/locations/deletedVaults/purge/action",
            "Microsoft.KeyVault/hsmPools/*",
            "Microsoft.KeyVault/managedHsms/*",
        ],
        data_actions: &[],
        condition: None,
    },
    Builtin {
        id: "8b54135c-b56d-4d72-a534-26097cfdc8d8",
        name: "Key Vault Data Access Administrator",
        description: "Manage access to Azure Key Vault by adding or removing role assignments for the Key Vault Administrator, Key Vault Certificates Officer, Key Vault Crypto Officer, Key Vault Crypto Service Encryption User, Key Vault Crypto User, Key Vault Reader, Key Vault Secrets Officer, or Key Vault Secrets User roles. Includes an ABAC condition to constrain role assignments.",
        actions: &[
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/subscriptions/read",
            "Microsoft.Management/managementGroups/read",
            "Microsoft.Support/*",
            "Microsoft.KeyVault/vaults/*/read",
        ],
        not_actions: &[],
        data_actions: &[],
        condition: Some(DATA_ACCESS_ADMIN_CONDITION),
    },
    Builtin {
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        condition: None,
    },
    Builtin {
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
        data_actions: &[],
        condition: None,
    },
    Builtin {
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        condition: None,
    },
    Builtin {
        id: "73c42c96-874c-492b-b04d-ab87d138a893",
        name: "Log Analytics Reader",
        description: "Log Analytics Reader can view and search all monitoring data as well as and view monitoring settings, including viewing the configuration of Azure diagnostics on all Azure resources.",
        actions: &[
            "*/read",
            "Microsoft.OperationalInsights/workspaces/analytics/query/action",
            "Microsoft.OperationalInsights/workspaces/search/action",
            "Microsoft.Support/*",
        ],
        not_actions: &["Microsoft.OperationalInsights/workspaces/sharedKeys/read"],
        data_actions: &[],
        condition: None,
    },
    Builtin {
        id: "92aaf0da-9dab-42b6-94a3-d43ce8d16293",
        name: "Log Analytics Contributor",
        description: "Log Analytics Contributor can read all monitoring data and edit monitoring settings. Editing monitoring settings includes adding the VM extension to VMs; reading storage account keys to be able to configure collection of logs from Azure Storage; adding solutions; and configuring Azure diagnostics on all Azure resources.",
        actions: &[
            "*/read",
            "Microsoft.ClassicCompute/virtualMachines/extensions/*",
            "Microsoft.ClassicStorage/storageAccounts/listKeys/action",
            "Microsoft.Compute/virtualMachines/extensions/*",
            "Microsoft.HybridCompute/machines/extensions/write",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Insights/diagnosticSettings/*",
            "Microsoft.OperationalInsights/*",
            "Microsoft.OperationsManagement/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourcegroups/deployments/*",
            "Microsoft.Storage/storageAccounts/listKeys/action",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        condition: None,
    },
    Builtin {
        id: "36243c78-bf99-498c-9df9-86d9f8d28608",
        name: "Resource Policy Contributor",
        description: "Users with rights to create/modify resource policy, create support ticket and read resources/hierarchy.",
        actions: &[
            "*/read",
            "Microsoft.Authorization/policyassignments/*",
            "Microsoft.Authorization/policydefinitions/*",
            "Microsoft.Authorization/policyexemptions/*",
            "Microsoft.Authorization/policysetdefinitions/*",
            "Microsoft.PolicyInsights/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        condition: None,
    },
    Builtin {
        id: "749f88d5-cbae-40b8-bcfc-e573ddc772fa",
        name: "Monitoring Contributor",
        description: "Can read all monitoring data and update monitoring settings.",
        actions: &[
            "*/read",
            "Microsoft.AlertsManagement/alerts/*",
            "Microsoft.Insights/actiongroups/*",
            "Microsoft.Insights/diagnosticSettings/*",
            "Microsoft.Insights/metricAlerts/*",
            "Microsoft.Insights/scheduledqueryrules/*",
            "Microsoft.OperationalInsights/workspaces/search/action",
            "Microsoft.OperationalInsights/workspaces/sharedKeys/action",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        condition: None,
    },
    Builtin {
        id: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        name: "User Access Administrator",
        description: "Lets you manage user access to Azure resources.",
        actions: &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        condition: None,
    },
];

/// Id of Owner.
pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
/// Id of Key Vault Administrator.
pub const KEY_VAULT_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";

/// Every built-in role definition.
pub fn builtin_roles() -> Vec<RoleDefinition> {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    BUILTINS
        .iter()
        .map(|b| RoleDefinition {
            id: b.id.to_owned(),
            role_name: b.name.to_owned(),
            description: b.description.to_owned(),
            kind: "BuiltInRole".into(),
            assignable_scopes: vec!["/".into()],
            permissions: vec![Permission {
                actions: owned(b.actions),
                not_actions: owned(b.not_actions),
                data_actions: owned(b.data_actions),
                not_data_actions: Vec::new(),
                condition: b.condition.map(str::to_owned),
                condition_version: b.condition.map(|_| "2.0".to_owned()),
            }],
        })
        .collect()
}

/// A built-in role by GUID.
pub fn builtin_role(id: &str) -> Option<RoleDefinition> {
    builtin_roles()
        .into_iter()
        .find(|r| r.id.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_azure_does() {
        assert!(matches(
            "Microsoft.KeyVault/vaults/*",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        ));
        assert!(matches(
            "microsoft.keyvault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        ));
        assert!(matches("*", "anything/at/all"));
        assert!(matches("*/read", "Microsoft.KeyVault/vaults/read"));
        assert!(!matches(
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/setSecret/action"
        ));
    }

    #[test]
    fn scopes_cover_descendants_on_segment_boundaries() {
        let v = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/dev";
        assert!(scope_covers("/subscriptions/s", v));
        assert!(scope_covers("/subscriptions/S/resourcegroups/RG", v));
        assert!(scope_covers(v, &format!("{v}/secrets/x")));
        assert!(!scope_covers(
            &format!("{v}/secrets/x"),
            &format!("{v}/secrets/xy")
        ));
        assert!(!scope_covers("/subscriptions/s/resourceGroups/r", v));
        assert!(scope_covers("/", v));
    }

    #[test]
    fn builtin_roles_have_their_azure_ids() {
        let roles = builtin_roles();
        assert_eq!(roles.len(), 20);
        let la_reader = builtin_role("73c42c96-874c-492b-b04d-ab87d138a893").unwrap();
        assert_eq!(la_reader.role_name, "Log Analytics Reader");
        assert!(la_reader.allows_action("Microsoft.OperationalInsights/workspaces/query/read"));
        assert!(
            !la_reader.allows_action("Microsoft.OperationalInsights/workspaces/sharedKeys/action")
        );
        assert!(!la_reader.allows_action("Microsoft.KeyVault/vaults/write"));
        let secrets_user = builtin_role("4633458b-17de-408a-b874-0445c86b69e6").unwrap();
        assert_eq!(secrets_user.role_name, "Key Vault Secrets User");
        assert!(
            secrets_user.allows_data_action("Microsoft.KeyVault/vaults/secrets/getSecret/action")
        );
        assert!(
            !secrets_user.allows_data_action("Microsoft.KeyVault/vaults/secrets/setSecret/action")
        );
        let contributor = builtin_role("b24988ac-6180-42a0-ab88-20f7382dd24c").unwrap();
        assert!(contributor.allows_action("Microsoft.KeyVault/vaults/write"));
        assert!(!contributor.allows_action("Microsoft.Authorization/roleAssignments/write"));
    }
}
