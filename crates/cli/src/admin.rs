//! Admin subcommands: directory (users, groups, applications) through the
//! Graph subset, managed identities and workloads through ARM, and signing-key
//! rotation. Each prints the server's JSON answer.

use std::io::BufRead;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::client::Connection;

/// Where to find the deployment.
#[derive(Args)]
pub struct Target {
    /// bootstrap.json of the deployment (default: <data-dir>/bootstrap.json).
    #[arg(long, env = "KEYHAVEN_BOOTSTRAP", global = true)]
    bootstrap: Option<PathBuf>,
    /// Data directory whose bootstrap.json to use.
    #[arg(
        long,
        env = "KEYHAVEN_DATA_DIR",
        default_value = "./keyhaven-data",
        global = true
    )]
    data_dir: PathBuf,
}

impl Target {
    /// The data directory named.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The bootstrap.json named (or the data directory's).
    pub fn bootstrap_path(&self) -> PathBuf {
        self.bootstrap
            .clone()
            .unwrap_or_else(|| self.data_dir.join("bootstrap.json"))
    }

    fn connect(&self) -> Result<Connection> {
        Connection::from_bootstrap(&self.bootstrap_path())
    }
}

/// Users.
#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a user; the password is read from standard input (one line).
    Create {
        /// User principal name, e.g. alice@example.test.
        #[arg(long)]
        upn: String,
        /// Display name.
        #[arg(long)]
        display_name: String,
        /// Create the account disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List users.
    List,
    /// Show a user (object id or UPN).
    Show {
        /// Object id or UPN.
        id: String,
    },
    /// Enable or disable a user.
    SetEnabled {
        /// Object id or UPN.
        id: String,
        /// true or false.
        #[arg(action = clap::ArgAction::Set)]
        enabled: bool,
    },
    /// Delete a user.
    Delete {
        /// Object id or UPN.
        id: String,
    },
}

/// Groups.
#[derive(Subcommand)]
pub enum GroupCmd {
    /// Create a security group.
    Create {
        /// Display name.
        #[arg(long)]
        display_name: String,
    },
    /// Add a member (user, group or service principal object id).
    AddMember {
        /// Group object id.
        group: String,
        /// Member object id.
        member: String,
    },
    /// Remove a member.
    RemoveMember {
        /// Group object id.
        group: String,
        /// Member object id.
        member: String,
    },
    /// List members.
    Members {
        /// Group object id.
        group: String,
        /// Include members of nested groups.
        #[arg(long)]
        transitive: bool,
    },
}

/// Applications and their service principals.
#[derive(Subcommand)]
pub enum AppCmd {
    /// Register an application with its service principal; `--secret` also
    /// creates a client secret (shown once).
    Create {
        /// Display name.
        #[arg(long)]
        display_name: String,
        /// Also create a client secret.
        #[arg(long)]
        secret: bool,
    },
    /// Add a client secret to an application (object id); shown once.
    AddSecret {
        /// Application object id.
        id: String,
        /// Expiry, ISO-8601 (default: two years).
        #[arg(long)]
        end: Option<String>,
    },
    /// List applications.
    List,
    /// Delete an application (and its service principal).
    Delete {
        /// Application object id.
        id: String,
    },
}

/// Managed identities and workloads.
#[derive(Subcommand)]
pub enum IdentityCmd {
    /// Create a user-assigned managed identity.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Resource group (default: the bootstrap one).
        #[arg(long)]
        resource_group: Option<String>,
    },
}

/// Workloads: what the metadata endpoint recognises callers by.
#[derive(Subcommand)]
pub enum WorkloadCmd {
    /// Create or update a workload.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Resource group (default: the bootstrap one).
        #[arg(long)]
        resource_group: Option<String>,
        /// Source address of the workload (repeatable).
        #[arg(long = "address", required = true)]
        addresses: Vec<IpAddr>,
        /// Give it a system-assigned identity.
        #[arg(long)]
        system_assigned: bool,
        /// Attach a user-assigned identity (its ARM id; repeatable).
        #[arg(long = "identity")]
        identities: Vec<String>,
    },
    /// Delete a workload.
    Delete {
        /// Name.
        #[arg(long)]
        name: String,
        /// Resource group (default: the bootstrap one).
        #[arg(long)]
        resource_group: Option<String>,
    },
}

/// Runs a user command.
pub fn user(t: &Target, cmd: UserCmd) -> Result<Value> {
    let c = t.connect()?;
    let tok = c.token(&c.graph_url)?;
    let base = format!("{}/v1.0/users", c.graph_url);
    match cmd {
        UserCmd::Create {
            upn,
            display_name,
            disabled,
        } => {
            let password = read_secret_line()?;
            let nick: String = upn
                .split('@')
                .next()
                .unwrap_or("user")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let body = json!({
                "accountEnabled": !disabled,
                "displayName": display_name,
                "userPrincipalName": upn,
                "mailNickname": nick,
                "passwordProfile": {"password": password, "forceChangePasswordNextSignIn": false},
            });
            c.call("POST", &base, &tok, Some(&body))
        }
        UserCmd::List => c.call("GET", &base, &tok, None),
        UserCmd::Show { id } => c.call("GET", &format!("{base}/{id}"), &tok, None),
        UserCmd::SetEnabled { id, enabled } => {
            c.call(
                "PATCH",
                &format!("{base}/{id}"),
                &tok,
                Some(&json!({"accountEnabled": enabled})),
            )?;
            c.call("GET", &format!("{base}/{id}"), &tok, None)
        }
        UserCmd::Delete { id } => c.call("DELETE", &format!("{base}/{id}"), &tok, None),
    }
}

/// Runs a group command.
pub fn group(t: &Target, cmd: GroupCmd) -> Result<Value> {
    let c = t.connect()?;
    let tok = c.token(&c.graph_url)?;
    let base = format!("{}/v1.0/groups", c.graph_url);
    match cmd {
        GroupCmd::Create { display_name } => {
            let nick: String = display_name
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let body = json!({"displayName": display_name, "mailNickname": nick, "mailEnabled": false, "securityEnabled": true});
            c.call("POST", &base, &tok, Some(&body))
        }
        GroupCmd::AddMember { group, member } => {
            let body =
                json!({"@odata.id": format!("{}/v1.0/directoryObjects/{member}", c.graph_url)});
            c.call(
                "POST",
                &format!("{base}/{group}/members/$ref"),
                &tok,
                Some(&body),
            )
        }
        GroupCmd::RemoveMember { group, member } => c.call(
            "DELETE",
            &format!("{base}/{group}/members/{member}/$ref"),
            &tok,
            None,
        ),
        GroupCmd::Members { group, transitive } => {
            let rel = if transitive {
                "transitiveMembers"
            } else {
                "members"
            };
            c.call("GET", &format!("{base}/{group}/{rel}"), &tok, None)
        }
    }
}

/// Runs an application command.
pub fn app(t: &Target, cmd: AppCmd) -> Result<Value> {
    let c = t.connect()?;
    let tok = c.token(&c.graph_url)?;
    let base = format!("{}/v1.0/applications", c.graph_url);
    match cmd {
        AppCmd::Create {
            display_name,
            secret,
        } => {
            let app = c.call(
                "POST",
                &base,
                &tok,
                Some(&json!({"displayName": display_name})),
            )?;
            let (Some(id), Some(app_id)) = (
                app.get("id").and_then(Value::as_str),
                app.get("appId").and_then(Value::as_str),
            ) else {
                bail!("the server returned no application id");
            };
            let sp = c.call(
                "POST",
                &format!("{}/v1.0/servicePrincipals", c.graph_url),
                &tok,
                Some(&json!({"appId": app_id})),
            )?;
            let mut out = Map::new();
            out.insert("application".into(), app.clone());
            out.insert("servicePrincipal".into(), sp);
            if secret {
                let cred = c.call(
                    "POST",
                    &format!("{base}/{id}/addPassword"),
                    &tok,
                    Some(&json!({"passwordCredential": {"displayName": "keyhaven-cli"}})),
                )?;
                out.insert("password".into(), cred);
            }
            Ok(Value::Object(out))
        }
        AppCmd::AddSecret { id, end } => {
            let pc = match end {
                Some(e) => json!({"displayName": "keyhaven-cli", "endDateTime": e}),
                None => json!({"displayName": "keyhaven-cli"}),
            };
            c.call(
                "POST",
                &format!("{base}/{id}/addPassword"),
                &tok,
                Some(&json!({"passwordCredential": pc})),
            )
        }
        AppCmd::List => c.call("GET", &base, &tok, None),
        AppCmd::Delete { id } => c.call("DELETE", &format!("{base}/{id}"), &tok, None),
    }
}

const UAMI_API: &str = "2023-01-31";
const WORKLOAD_API: &str = "2026-01-01";

fn rg_url(c: &Connection, rg: &Option<String>) -> String {
    format!(
        "{}/subscriptions/{}/resourceGroups/{}/providers",
        c.management_url,
        c.subscription_id,
        rg.as_deref().unwrap_or(&c.resource_group)
    )
}

/// Runs a managed-identity command.
pub fn identity(t: &Target, cmd: IdentityCmd) -> Result<Value> {
    let c = t.connect()?;
    let tok = c.token(&c.management_url)?;
    match cmd {
        IdentityCmd::Create {
            name,
            resource_group,
        } => {
            let url = format!(
                "{}/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?api-version={UAMI_API}",
                rg_url(&c, &resource_group)
            );
            c.call("PUT", &url, &tok, Some(&json!({"location": "local"})))
        }
    }
}

/// Runs a workload command.
pub fn workload(t: &Target, cmd: WorkloadCmd) -> Result<Value> {
    let c = t.connect()?;
    let tok = c.token(&c.management_url)?;
    match cmd {
        WorkloadCmd::Create {
            name,
            resource_group,
            addresses,
            system_assigned,
            identities,
        } => {
            let url = format!(
                "{}/Keyhaven.Compute/workloads/{name}?api-version={WORKLOAD_API}",
                rg_url(&c, &resource_group)
            );
            let kind = match (system_assigned, !identities.is_empty()) {
                (true, true) => "SystemAssigned, UserAssigned",
                (true, false) => "SystemAssigned",
                (false, true) => "UserAssigned",
                (false, false) => "None",
            };
            let ua: Map<String, Value> = identities.into_iter().map(|i| (i, json!({}))).collect();
            let body = json!({
                "location": "local",
                "properties": {"addresses": addresses.iter().map(ToString::to_string).collect::<Vec<_>>()},
                "identity": {"type": kind, "userAssignedIdentities": ua},
            });
            c.call("PUT", &url, &tok, Some(&body))
        }
        WorkloadCmd::Delete {
            name,
            resource_group,
        } => {
            let url = format!(
                "{}/Keyhaven.Compute/workloads/{name}?api-version={WORKLOAD_API}",
                rg_url(&c, &resource_group)
            );
            c.call("DELETE", &url, &tok, None)
        }
    }
}

/// Rotates the token signing key.
pub fn rotate_signing_key(t: &Target) -> Result<Value> {
    deployment_action(t, "Keyhaven.Identity/rotateSigningKey")
}

/// `keyhaven check`: the server's integrity check.
pub fn check_integrity(t: &Target) -> Result<Value> {
    deployment_action(t, "Keyhaven.Security/checkIntegrity")
}

/// `keyhaven rotate-master-key`.
pub fn rotate_master_key(t: &Target) -> Result<Value> {
    deployment_action(t, "Keyhaven.Security/rotateMasterKey")
}

/// `keyhaven master-key-usage`.
pub fn master_key_usage(t: &Target) -> Result<Value> {
    deployment_action(t, "Keyhaven.Security/masterKeyUsage")
}

/// POST `/providers/{action}` on the management plane as the bootstrap
/// principal (a directory admin).
fn deployment_action(t: &Target, action: &str) -> Result<Value> {
    let c = t.connect()?;
    let tok = c.token(&c.management_url)?;
    let url = format!(
        "{}/providers/{action}?api-version={WORKLOAD_API}",
        c.management_url
    );
    c.call("POST", &url, &tok, None)
}

fn read_secret_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        bail!("give the password on standard input");
    }
    Ok(pw)
}

/// Filters of `keyhaven logs`.
#[derive(clap::Args)]
pub struct LogsFilter {
    /// The vault (in the bootstrap resource group unless --resource-group).
    #[arg(long, default_value = "dev")]
    pub vault: String,
    /// Resource group of the vault.
    #[arg(long)]
    pub resource_group: Option<String>,
    /// From (ISO 8601 or Unix seconds).
    #[arg(long)]
    pub from: Option<String>,
    /// To (ISO 8601 or Unix seconds).
    #[arg(long)]
    pub to: Option<String>,
    /// operationName, e.g. SecretGet.
    #[arg(long)]
    pub operation: Option<String>,
    /// callerIpAddress.
    #[arg(long)]
    pub caller: Option<String>,
    /// resultType: Success or Failure.
    #[arg(long)]
    pub result: Option<String>,
    /// Most records (newest first).
    #[arg(long, default_value_t = 100)]
    pub top: u32,
}

fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Queries the vault's records in Keyhaven's log store (a diagnostic
/// setting must send them there).
pub fn logs(t: &Target, f: LogsFilter) -> Result<Value> {
    let c = t.connect()?;
    let tok = c.token(&c.management_url)?;
    let rg = f.resource_group.unwrap_or_else(|| c.resource_group.clone());
    let mut url = format!(
        "{}/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{}/providers/Keyhaven.Insights/auditEvents?api-version=2021-05-01-preview&top={}",
        c.management_url, c.subscription_id, f.vault, f.top
    );
    for (k, v) in [
        ("from", f.from),
        ("to", f.to),
        ("operation", f.operation),
        ("caller", f.caller),
        ("result", f.result),
    ] {
        if let Some(v) = v {
            url.push_str(&format!("&{k}={}", query_escape(&v)));
        }
    }
    c.call("GET", &url, &tok, None)
}
