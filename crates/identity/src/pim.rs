//! Just-in-time roles (Privileged Identity Management for Azure resources):
//! eligibility schedules, the rules of a role management policy per role and
//! scope, and the checks an activation request must pass. The effect of an
//! activation is an ordinary role assignment with an end time, which the
//! authorization decision ignores from that time on, on every node, whether
//! or not the sweeper has removed it yet.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Resource type of eligibility schedules.
pub const ELIGIBILITY_TYPE: &str = "Microsoft.Authorization/roleEligibilitySchedules";
/// Resource type of eligibility schedule requests.
pub const ELIGIBILITY_REQUEST_TYPE: &str =
    "Microsoft.Authorization/roleEligibilityScheduleRequests";
/// Resource type of assignment schedule requests.
pub const ASSIGNMENT_REQUEST_TYPE: &str = "Microsoft.Authorization/roleAssignmentScheduleRequests";
/// Resource type of customized role management policies.
pub const POLICY_TYPE: &str = "Microsoft.Authorization/roleManagementPolicies";
/// Resource type of approvals.
pub const APPROVAL_TYPE: &str = "Microsoft.Authorization/roleAssignmentApprovals";

/// Longest schedule Keyhaven takes (about 10 years).
pub const MAX_SECS: i64 = 10 * 366 * 86_400;

/// Parses an ISO 8601 duration (`PT8H`, `P365D`, `P1DT2H30M`, `PT90S`,
/// `P2W`) into seconds. Years and months are refused (their length varies).
pub fn parse_duration(s: &str) -> Option<i64> {
    let rest = s.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    if date.is_empty() && time.is_none_or(str::is_empty) {
        return None;
    }
    let mut total: i64 = 0;
    let mut add = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut num = String::new();
        let mut last_unit = None;
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let pos = units.iter().position(|(u, _)| *u == c)?;
            if last_unit.is_some_and(|l| pos <= l) || num.is_empty() || num.len() > 9 {
                return None;
            }
            last_unit = Some(pos);
            let n: i64 = num.parse().ok()?;
            total = total.checked_add(n.checked_mul(units.get(pos)?.1)?)?;
            num.clear();
        }
        num.is_empty().then_some(())
    };
    add(date, &[('W', 7 * 86_400), ('D', 86_400)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        add(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    (total > 0 && total <= MAX_SECS).then_some(total)
}

/// A request's `scheduleInfo`, resolved to times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (Unix s).
    pub start: i64,
    /// End, or none (`NoExpiration`).
    pub end: Option<i64>,
}

/// Reads `scheduleInfo` (`startDateTime`, `expiration.type`/`duration`/
/// `endDateTime`) as of `now`; `Err` names what is wrong.
pub fn window_of(info: Option<&Value>, now: i64) -> Result<Window, String> {
    let Some(info) = info.filter(|v| !v.is_null()) else {
        return Ok(Window {
            start: now,
            end: None,
        });
    };
    let start = match info.get("startDateTime").and_then(Value::as_str) {
        Some(t) => {
            crate::pim::parse_time(t).ok_or("scheduleInfo.startDateTime is not a valid time.")?
        }
        None => now,
    };
    let start = start.max(now - 300);
    let exp = info.get("expiration");
    let kind = exp
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("NoExpiration");
    let end = match kind {
        "NoExpiration" => None,
        "AfterDuration" => {
            let d = exp
                .and_then(|e| e.get("duration"))
                .and_then(Value::as_str)
                .and_then(parse_duration)
                .ok_or(
                    "scheduleInfo.expiration.duration must be an ISO 8601 duration such as PT8H.",
                )?;
            Some(start + d)
        }
        "AfterDateTime" => {
            let t = exp
                .and_then(|e| e.get("endDateTime"))
                .and_then(Value::as_str)
                .and_then(parse_time)
                .ok_or("scheduleInfo.expiration.endDateTime is not a valid time.")?;
            if t <= start {
                return Err("scheduleInfo.expiration.endDateTime must be after the start.".into());
            }
            Some(t)
        }
        _ => return Err(
            "scheduleInfo.expiration.type must be AfterDuration, AfterDateTime or NoExpiration."
                .into(),
        ),
    };
    if end.is_some_and(|e| e - start > MAX_SECS) {
        return Err("The schedule is too long.".into());
    }
    Ok(Window { start, end })
}

/// Parses an RFC 3339 time (`2026-12-05T07:00:00Z`, fractions and offsets
/// allowed) into Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    keyhaven_core::governance::time::parse(s)
}

/// The rule names of `RoleAssignmentRequestPolicyValidationFailed`.
pub mod rule {
    /// The request is longer than allowed, or has no end where one is required.
    pub const EXPIRATION: &str = "ExpirationRule";
    /// No justification.
    pub const JUSTIFICATION: &str = "JustificationRule";
    /// No ticket.
    pub const TICKETING: &str = "TicketingRule";
    /// The caller's token has no second factor.
    pub const MFA: &str = "MfaRule";
    /// The principal is not eligible.
    pub const ELIGIBILITY: &str = "EligibilityRule";
}

/// An approver (`UserSet`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approver {
    /// `User` or `Group`.
    pub kind: String,
    /// Object id.
    pub id: String,
}

/// What a policy's rules require.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Longest activation (seconds).
    pub max_activation: i64,
    /// `Enablement_EndUser_Assignment`.
    pub activation_mfa: bool,
    /// `Enablement_EndUser_Assignment`.
    pub activation_justification: bool,
    /// `Enablement_EndUser_Assignment`.
    pub activation_ticket: bool,
    /// `Approval_EndUser_Assignment`: who approves, when required.
    pub approvers: Option<Vec<Approver>>,
    /// How long an approval waits for a decision (seconds).
    pub approval_timeout: i64,
    /// `Enablement_Admin_Eligibility` / `Enablement_Admin_Assignment`:
    /// (mfa, justification, ticket) an administrator's request needs.
    pub admin_eligibility_needs: (bool, bool, bool),
    /// As above, for an administrator's active assignment.
    pub admin_assignment_needs: (bool, bool, bool),
    /// `Expiration_Admin_Eligibility`: (required, longest).
    pub eligibility: (bool, i64),
    /// `Expiration_Admin_Assignment`: (required, longest).
    pub admin_assignment: (bool, i64),
}

fn target(caller: &str, level: &str) -> Value {
    json!({"caller": caller, "operations": ["All"], "level": level, "targetObjects": null,
           "inheritableSettings": null, "enforcedSettings": null})
}

fn notifications(caller: &str, level: &str) -> Vec<Value> {
    ["Admin", "Requestor", "Approver"]
        .iter()
        .map(|r| {
            json!({"id": format!("Notification_{r}_{caller}_{level}"), "ruleType": "RoleManagementPolicyNotificationRule",
                   "notificationType": "Email", "recipientType": r, "notificationLevel": "All",
                   "isDefaultRecipientsEnabled": true, "notificationRecipients": [],
                   "target": target(caller, level)})
        })
        .collect()
}

/// The 17 rules of a policy no one has changed, as Azure names them.
/// Keyhaven's defaults: eligibility up to a year, no expiry required;
/// activation up to 8 hours with a justification; no approval, no MFA.
pub fn default_rules() -> Vec<Value> {
    let mut r = vec![
        json!({"id": "Expiration_Admin_Eligibility", "ruleType": "RoleManagementPolicyExpirationRule",
               "isExpirationRequired": false, "maximumDuration": "P365D", "target": target("Admin", "Eligibility")}),
        json!({"id": "Enablement_Admin_Eligibility", "ruleType": "RoleManagementPolicyEnablementRule",
               "enabledRules": [], "target": target("Admin", "Eligibility")}),
    ];
    r.extend(notifications("Admin", "Eligibility"));
    r.push(json!({"id": "Expiration_Admin_Assignment", "ruleType": "RoleManagementPolicyExpirationRule",
                  "isExpirationRequired": false, "maximumDuration": "P180D", "target": target("Admin", "Assignment")}));
    r.push(json!({"id": "Enablement_Admin_Assignment", "ruleType": "RoleManagementPolicyEnablementRule",
                  "enabledRules": ["Justification"], "target": target("Admin", "Assignment")}));
    r.extend(notifications("Admin", "Assignment"));
    r.push(json!({"id": "Expiration_EndUser_Assignment", "ruleType": "RoleManagementPolicyExpirationRule",
                  "isExpirationRequired": true, "maximumDuration": "PT8H", "target": target("EndUser", "Assignment")}));
    r.push(json!({"id": "Enablement_EndUser_Assignment", "ruleType": "RoleManagementPolicyEnablementRule",
                  "enabledRules": ["Justification"], "target": target("EndUser", "Assignment")}));
    r.push(json!({"id": "Approval_EndUser_Assignment", "ruleType": "RoleManagementPolicyApprovalRule",
                  "setting": {"isApprovalRequired": false, "isApprovalRequiredForExtension": false,
                              "isRequestorJustificationRequired": true, "approvalMode": "SingleStage",
                              "approvalStages": [{"approvalStageTimeOutInDays": 1, "isApproverJustificationRequired": true,
                                                  "escalationTimeInMinutes": 0, "primaryApprovers": [],
                                                  "isEscalationEnabled": false, "escalationApprovers": null}]},
                  "target": target("EndUser", "Assignment")}));
    r.push(json!({"id": "AuthenticationContext_EndUser_Assignment", "ruleType": "RoleManagementPolicyAuthenticationContextRule",
                  "isEnabled": false, "claimValue": "", "target": target("EndUser", "Assignment")}));
    r.extend(notifications("EndUser", "Assignment"));
    r
}

const RULE_TYPES: [&str; 5] = [
    "RoleManagementPolicyExpirationRule",
    "RoleManagementPolicyEnablementRule",
    "RoleManagementPolicyApprovalRule",
    "RoleManagementPolicyNotificationRule",
    "RoleManagementPolicyAuthenticationContextRule",
];

/// Merges PATCHed rules into `stored` by `id` (Azure's partial update);
/// every rule must be one of the 17 and keep its type.
pub fn merge_rules(stored: &mut [Value], patch: &[Value]) -> Result<(), String> {
    for p in patch {
        let id = p
            .get("id")
            .and_then(Value::as_str)
            .ok_or("Every rule needs an id.")?;
        let slot = stored
            .iter_mut()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .ok_or_else(|| {
                format!(
                    "'{}' is not a rule of a role management policy.",
                    id.chars().take(80).collect::<String>()
                )
            })?;
        let kind = p.get("ruleType").and_then(Value::as_str);
        if kind.is_some_and(|k| {
            !RULE_TYPES.contains(&k) || Some(k) != slot.get("ruleType").and_then(Value::as_str)
        }) {
            return Err(format!("Rule '{id}' has the wrong ruleType."));
        }
        let mut merged = slot.clone();
        if let (Some(m), Some(o)) = (merged.as_object_mut(), p.as_object()) {
            for (k, v) in o {
                m.insert(k.clone(), v.clone());
            }
        }
        check_rule(&merged)?;
        *slot = merged;
    }
    Ok(())
}

fn check_rule(r: &Value) -> Result<(), String> {
    let id = r.get("id").and_then(Value::as_str).unwrap_or("");
    match r.get("ruleType").and_then(Value::as_str) {
        Some("RoleManagementPolicyExpirationRule") => {
            let d = r
                .get("maximumDuration")
                .and_then(Value::as_str)
                .unwrap_or("");
            if parse_duration(d).is_none() {
                return Err(format!(
                    "Rule '{id}': maximumDuration must be an ISO 8601 duration such as PT8H."
                ));
            }
        }
        Some("RoleManagementPolicyEnablementRule") => {
            let ok = r
                .get("enabledRules")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter().all(|x| {
                        matches!(
                            x.as_str(),
                            Some("MultiFactorAuthentication" | "Justification" | "Ticketing")
                        )
                    })
                });
            if !ok {
                return Err(format!("Rule '{id}': enabledRules may hold MultiFactorAuthentication, Justification and Ticketing."));
            }
        }
        Some("RoleManagementPolicyApprovalRule") => {
            let s = r.get("setting");
            let required = s
                .and_then(|s| s.get("isApprovalRequired"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let stages = s
                .and_then(|s| s.get("approvalStages"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let escalation = r
                .pointer("/setting/approvalStages/0/isEscalationEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if stages > 1 || escalation {
                return Err(format!(
                    "Rule '{id}': Keyhaven approves in one stage without escalation."
                ));
            }
            if required && approvers_of(r).is_empty() {
                return Err(format!(
                    "Rule '{id}': an approval needs at least one primary approver."
                ));
            }
            for a in approvers_of(r) {
                if uuid::Uuid::parse_str(&a.id).is_err()
                    || !matches!(a.kind.as_str(), "User" | "Group")
                {
                    return Err(format!(
                        "Rule '{id}': approvers are users or groups named by object id."
                    ));
                }
            }
        }
        Some("RoleManagementPolicyAuthenticationContextRule")
            if r.get("isEnabled").and_then(Value::as_bool) == Some(true) =>
        {
            return Err("Authentication contexts are not supported by Keyhaven; require MultiFactorAuthentication instead.".into());
        }
        _ => {}
    }
    Ok(())
}

fn approvers_of(r: &Value) -> Vec<Approver> {
    r.pointer("/setting/approvalStages/0/primaryApprovers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|u| {
                    Some(Approver {
                        kind: u
                            .get("userType")
                            .and_then(Value::as_str)
                            .unwrap_or("User")
                            .to_owned(),
                        id: u.get("id").and_then(Value::as_str)?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn rule<'a>(rules: &'a [Value], id: &str) -> Option<&'a Value> {
    rules
        .iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
}

fn expiration(rules: &[Value], id: &str, default: i64) -> (bool, i64) {
    let r = rule(rules, id);
    (
        r.and_then(|r| r.get("isExpirationRequired"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        r.and_then(|r| r.get("maximumDuration"))
            .and_then(Value::as_str)
            .and_then(parse_duration)
            .unwrap_or(default),
    )
}

/// What a policy's rules say.
pub fn rules_of(rules: &[Value]) -> Rules {
    let enabled = |id: &str, what: &str| {
        rule(rules, id)
            .and_then(|r| r.get("enabledRules"))
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(what)))
    };
    let approval = rule(rules, "Approval_EndUser_Assignment");
    let approvers = approval
        .filter(|r| {
            r.pointer("/setting/isApprovalRequired")
                .and_then(Value::as_bool)
                == Some(true)
        })
        .map(approvers_of);
    let needs = |id: &str| {
        (
            enabled(id, "MultiFactorAuthentication"),
            enabled(id, "Justification"),
            enabled(id, "Ticketing"),
        )
    };
    Rules {
        approval_timeout: approval
            .and_then(|r| r.pointer("/setting/approvalStages/0/approvalStageTimeOutInDays"))
            .and_then(Value::as_i64)
            .filter(|d| (1..=365).contains(d))
            .unwrap_or(1)
            * 86_400,
        admin_eligibility_needs: needs("Enablement_Admin_Eligibility"),
        admin_assignment_needs: needs("Enablement_Admin_Assignment"),
        max_activation: expiration(rules, "Expiration_EndUser_Assignment", 8 * 3600).1,
        activation_mfa: enabled("Enablement_EndUser_Assignment", "MultiFactorAuthentication"),
        activation_justification: enabled("Enablement_EndUser_Assignment", "Justification"),
        activation_ticket: enabled("Enablement_EndUser_Assignment", "Ticketing"),
        approvers,
        eligibility: expiration(rules, "Expiration_Admin_Eligibility", 365 * 86_400),
        admin_assignment: expiration(rules, "Expiration_Admin_Assignment", 180 * 86_400),
    }
}

/// What an activation request carries for the rules.
#[derive(Debug, Clone, Copy)]
pub struct Activation<'a> {
    /// Its window.
    pub window: Window,
    /// Its justification.
    pub justification: Option<&'a str>,
    /// Its ticket number.
    pub ticket: Option<&'a str>,
    /// Whether the caller's token carries a second factor.
    pub mfa: bool,
    /// Whether an eligibility covers it.
    pub eligible: bool,
}

/// The rules an activation fails, in Azure's names (empty: it passes).
pub fn check_activation(r: &Rules, a: &Activation<'_>) -> Vec<&'static str> {
    let mut failed = Vec::new();
    if !a.eligible {
        failed.push(rule::ELIGIBILITY);
    }
    match a.window.end {
        Some(end) if end - a.window.start <= r.max_activation => {}
        _ => failed.push(rule::EXPIRATION),
    }
    let blank = |s: Option<&str>| s.is_none_or(|s| s.trim().is_empty());
    if r.activation_justification && blank(a.justification) {
        failed.push(rule::JUSTIFICATION);
    }
    if r.activation_ticket && blank(a.ticket) {
        failed.push(rule::TICKETING);
    }
    if r.activation_mfa && !a.mfa {
        failed.push(rule::MFA);
    }
    failed
}

/// The rules an administrator's eligible or active assignment fails:
/// `required_and_max` of its expiration rule, `needs` (mfa, justification,
/// ticket) of its enablement rule.
pub fn check_admin(
    required_and_max: (bool, i64),
    needs: (bool, bool, bool),
    w: &Window,
    a: &Activation<'_>,
) -> Vec<&'static str> {
    let (required, max) = required_and_max;
    let mut failed = match w.end {
        None if required => vec![rule::EXPIRATION],
        Some(end) if end - w.start > max => vec![rule::EXPIRATION],
        _ => Vec::new(),
    };
    let blank = |s: Option<&str>| s.is_none_or(|s| s.trim().is_empty());
    if needs.1 && blank(a.justification) {
        failed.push(rule::JUSTIFICATION);
    }
    if needs.2 && blank(a.ticket) {
        failed.push(rule::TICKETING);
    }
    if needs.0 && !a.mfa {
        failed.push(rule::MFA);
    }
    failed
}

/// A deterministic GUID for a (scope, role) policy.
pub fn policy_guid(scope: &str, role_guid: &str) -> String {
    let digest = openssl::hash::hash(
        openssl::hash::MessageDigest::sha256(),
        format!(
            "{}|{}",
            scope.to_ascii_lowercase(),
            role_guid.to_ascii_lowercase()
        )
        .as_bytes(),
    )
    .map(|d| d.to_vec())
    .unwrap_or_default();
    let mut b = [0u8; 16];
    for (i, x) in digest.iter().take(16).enumerate() {
        if let Some(slot) = b.get_mut(i) {
            *slot = *x;
        }
    }
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT8H"), Some(8 * 3600));
        assert_eq!(parse_duration("P365D"), Some(365 * 86_400));
        assert_eq!(parse_duration("P1DT2H30M"), Some(86_400 + 2 * 3600 + 1800));
        assert_eq!(parse_duration("PT90S"), Some(90));
        assert_eq!(parse_duration("P2W"), Some(14 * 86_400));
        for bad in [
            "",
            "P",
            "PT",
            "8H",
            "PT8",
            "P1M",
            "P1Y",
            "PT1M8H",
            "PT-5S",
            "P99999999999D",
            "PT0S",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn activation_rules_name_what_failed() {
        let r = rules_of(&default_rules());
        assert_eq!(r.max_activation, 8 * 3600);
        assert!(r.activation_justification && !r.activation_mfa && r.approvers.is_none());
        let w = Window {
            start: 100,
            end: Some(100 + 3600),
        };
        let ok = Activation {
            window: w,
            justification: Some("ticket 42"),
            ticket: None,
            mfa: false,
            eligible: true,
        };
        assert!(check_activation(&r, &ok).is_empty());
        let long = Activation {
            window: Window {
                start: 100,
                end: Some(100 + 9 * 3600),
            },
            justification: None,
            ..ok
        };
        assert_eq!(
            check_activation(&r, &long),
            vec![rule::EXPIRATION, rule::JUSTIFICATION]
        );
        let open = Activation {
            window: Window {
                start: 100,
                end: None,
            },
            eligible: false,
            ..ok
        };
        assert_eq!(
            check_activation(&r, &open),
            vec![rule::ELIGIBILITY, rule::EXPIRATION]
        );
    }

    #[test]
    fn patches_merge_by_id_and_are_checked() {
        let mut rules = default_rules();
        assert_eq!(rules.len(), 17);
        merge_rules(&mut rules, &[json!({"id": "Enablement_EndUser_Assignment", "ruleType": "RoleManagementPolicyEnablementRule",
                                          "enabledRules": ["MultiFactorAuthentication", "Justification"]}),
                                  json!({"id": "Expiration_EndUser_Assignment", "maximumDuration": "PT1H"})]).unwrap();
        let r = rules_of(&rules);
        assert!(r.activation_mfa && r.activation_justification);
        assert_eq!(r.max_activation, 3600);
        assert_eq!(rules.len(), 17);
        assert!(merge_rules(&mut rules, &[json!({"id": "Nope"})]).is_err());
        assert!(merge_rules(
            &mut rules,
            &[json!({"id": "Expiration_EndUser_Assignment", "maximumDuration": "8 hours"})]
        )
        .is_err());
        assert!(merge_rules(&mut rules, &[json!({"id": "Approval_EndUser_Assignment", "setting": {"isApprovalRequired": true, "approvalStages": [{"primaryApprovers": []}]}})]).is_err());
        let approver = "11111111-1111-1111-1111-111111111111";
        merge_rules(&mut rules, &[json!({"id": "Approval_EndUser_Assignment", "setting": {"isApprovalRequired": true,
            "approvalMode": "SingleStage", "approvalStages": [{"primaryApprovers": [{"userType": "User", "id": approver}]}]}})]).unwrap();
        assert_eq!(
            rules_of(&rules).approvers,
            Some(vec![Approver {
                kind: "User".into(),
                id: approver.into()
            }])
        );
        assert_eq!(
            policy_guid("/subscriptions/A", "r"),
            policy_guid("/subscriptions/a", "R")
        );
    }
}
