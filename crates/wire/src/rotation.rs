//! `KeyRotationPolicy` as Azure writes it:
//! `{"id", "lifetimeActions":[{"trigger":{"timeAfterCreate"|"timeBeforeExpiry"},
//! "action":{"type"}}], "attributes":{"expiryTime","created","updated"}}`.

use keyhaven_core::rotation::{
    LifetimeAction, PolicyAction, RotationPolicy, StoredRotationPolicy, Trigger,
};
use keyhaven_core::Error;
use serde::{Deserialize, Serialize};

use crate::urls::VaultUrls;

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TriggerWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    time_after_create: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_before_expiry: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ActionWire {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct LifetimeActionWire {
    trigger: Option<TriggerWire>,
    action: Option<ActionWire>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PolicyAttributesWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    updated: Option<i64>,
}

/// `PUT /keys/{name}/rotationpolicy` body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotationPolicyIn {
    lifetime_actions: Option<Vec<LifetimeActionWire>>,
    attributes: Option<PolicyAttributesWire>,
}

impl TryFrom<KeyRotationPolicyIn> for RotationPolicy {
    type Error = Error;

    fn try_from(p: KeyRotationPolicyIn) -> Result<Self, Error> {
        let lifetime_actions = p
            .lifetime_actions
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                let action = a
                    .action
                    .and_then(|x| x.kind)
                    .ok_or_else(|| bad("Each lifetime action needs an action type."))?;
                let trigger = match a.trigger.unwrap_or_default() {
                    TriggerWire {
                        time_after_create: Some(d),
                        time_before_expiry: None,
                    } => Trigger::AfterCreate(d),
                    TriggerWire {
                        time_after_create: None,
                        time_before_expiry: Some(d),
                    } => Trigger::BeforeExpiry(d),
                    _ => {
                        return Err(bad(
                            "Each lifetime action's trigger needs exactly one of timeAfterCreate and timeBeforeExpiry.",
                        ))
                    }
                };
                Ok(LifetimeAction {
                    action: PolicyAction::parse(&action)?,
                    trigger,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            lifetime_actions,
            expiry_time: p.attributes.and_then(|a| a.expiry_time),
        })
    }
}

fn bad(msg: &str) -> Error {
    Error::BadParameter(msg.to_owned())
}

/// The policy as returned by GET and PUT.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotationPolicy {
    id: String,
    lifetime_actions: Vec<LifetimeActionWire>,
    attributes: PolicyAttributesWire,
}

impl KeyRotationPolicy {
    /// The wire form of `stored`, the policy of key `name`.
    pub fn new(stored: &StoredRotationPolicy, name: &str, urls: &VaultUrls) -> Self {
        let lifetime_actions = stored
            .policy
            .lifetime_actions
            .iter()
            .map(|a| LifetimeActionWire {
                trigger: Some(match &a.trigger {
                    Trigger::AfterCreate(d) => TriggerWire {
                        time_after_create: Some(d.clone()),
                        time_before_expiry: None,
                    },
                    Trigger::BeforeExpiry(d) => TriggerWire {
                        time_after_create: None,
                        time_before_expiry: Some(d.clone()),
                    },
                }),
                action: Some(ActionWire {
                    kind: Some(a.action.as_str().to_owned()),
                }),
            })
            .collect();
        Self {
            id: format!("{}/rotationpolicy", urls.unversioned("keys", name)),
            lifetime_actions,
            attributes: PolicyAttributesWire {
                expiry_time: stored.policy.expiry_time.clone(),
                created: stored.times.map(|t| t.0),
                updated: stored.times.map(|t| t.1),
            },
        }
    }
}
