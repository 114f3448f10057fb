"""Just-in-time roles (issue #27): Privileged Identity Management for Azure
resources, driven with Microsoft's azure-mgmt-authorization 4.0.0 (pinned)
and `az rest`, against a private Keyhaven per store.

An administrator makes a user eligible for Key Vault Secrets User on a vault;
the user has no access until they activate with a justification, reads the
secret, and is refused again after the activation's end (a few seconds here)
without anything else happening; the scheduler then removes the assignment
and audits the expiry. The policy's rules are enforced with Azure's error
(RoleAssignmentRequestPolicyValidationFailed naming the rules): too long,
no justification, not eligible, no second factor. An approval rule holds
the activation until an approver approves (never the requestor). A second
node on the same PostgreSQL database enforces activation and expiry within a
second.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Dict, List, Optional

import pytest
import requests
from azure.core.credentials import AccessToken

from khcompat import (
    CLIENT_KWARGS,
    HTTP_TIMEOUT,
    KeyhavenServer,
    create_user,
    graph_scope,
    module_server,
    request_password_token,
    running_server,
    trust_server_ca,
    vault_arm_id,
)
from test_azure_cli import AZ, Az, LabServer
from test_conditional_access import (
    KEY_VAULT_APP,
    ARM_APP,
    Tenant,
    audit_records,
    device_code_answer,
    device_sign_in,
    enrolled_user,
    hidden,
    keyhaven_cloud,
    policies,  # noqa: F401  (the fixture, over this module's tenant)
    redeem_device_code,
)

SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KV_ADMIN = "00482a5a-887f-4fb3-b363-3b7fe8e74483"


class Bearer:
    """A TokenCredential handing out one token (a user's, from any flow)."""

    def __init__(self, token: str):
        self.token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3000)


class PimServer(LabServer):
    """Port 443 for az login, and a scheduler pass every second."""

    def command(self) -> List[str]:
        return super().command() + ["--scheduler-interval", "1"]


@pytest.fixture(scope="module")
def tenant(store_kind, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"pim-{store_kind}")
    with module_server(PimServer, store_kind, work / "server") as srv:
        az = Az(srv, work / "azure")
        if AZ:
            proc = keyhaven_cloud(srv, az)
            assert proc.returncode == 0, proc.stderr[-2000:]
        yield Tenant(srv, az)


def client(server, token: str):
    from azure.mgmt.authorization import AuthorizationManagementClient
    return AuthorizationManagementClient(Bearer(token), server.subscription_id, base_url=server.management_url,
                                         credential_scopes=[server.management_scope], **CLIENT_KWARGS)


def admin_client(server):
    return client(server, server.token(server.management_scope))


def user_tokens(server, upn: str, password: str) -> Dict[str, str]:
    out = {}
    for name, scope in (("arm", server.management_scope), ("vault", server.vault_scope)):
        r = request_password_token(server, upn, password, scope)
        assert r.status_code == 200, r.text
        out[name] = r.json()["access_token"]
    return out


def read_secret(server, vault_token: str, name: str) -> int:
    return server.vault_request("GET", f"/secrets/{name}", token=vault_token).status_code


def seed_secret(server) -> str:
    name = f"jit-{uuid.uuid4().hex[:8]}"
    r = server.vault_request("PUT", f"/secrets/{name}", token=server.token(), json={"value": "behind-pim"})
    assert r.status_code == 200, r.text
    return name


def role_id(server, guid: str) -> str:
    return f"/subscriptions/{server.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def make_eligible(server, principal: str, scope: str, role: str = SECRETS_USER) -> Any:
    from azure.mgmt.authorization.models import RoleEligibilityScheduleRequest
    req = RoleEligibilityScheduleRequest(
        principal_id=principal, role_definition_id=role_id(server, role), request_type="AdminAssign",
        justification="on call rota", schedule_info={"start_date_time": None,
                                                     "expiration": {"type": "NoExpiration"}})
    return admin_client(server).role_eligibility_schedule_requests.create(scope, str(uuid.uuid4()), req)


def activate(server, arm_token: str, principal: str, scope: str, duration: str,
             justification: Optional[str] = "INC-4711: rotate the DB password", role: str = SECRETS_USER,
             request_type: str = "SelfActivate"):
    from azure.mgmt.authorization.models import RoleAssignmentScheduleRequest
    req = RoleAssignmentScheduleRequest(
        principal_id=principal, role_definition_id=role_id(server, role), request_type=request_type,
        justification=justification,
        schedule_info={"expiration": {"type": "AfterDuration", "duration": duration}})
    return client(server, arm_token).role_assignment_schedule_requests.create(scope, str(uuid.uuid4()), req)


def policy_failure(exc_info, *rules: str) -> None:
    err = exc_info.value
    assert err.status_code == 400, err
    assert err.error.code == "RoleAssignmentRequestPolicyValidationFailed", err.error
    assert err.error.message == "The following policy rules failed: " + json.dumps(list(rules)).replace(", ", ","), \
        err.error.message


def patch_policy(server, scope: str, role: str, rules: List[Dict[str, Any]]) -> Any:
    c = admin_client(server)
    assignments = list(c.role_management_policy_assignments.list_for_scope(scope))
    mine = [a for a in assignments if a.role_definition_id.lower().endswith(role)]
    assert len(mine) == 1, [a.role_definition_id for a in assignments]
    policy_name = mine[0].policy_id.rsplit("/", 1)[1]
    return c.role_management_policies.update(scope, policy_name, {"properties": {"rules": rules}})


def reset_policy(server, scope: str, role: str) -> None:
    c = admin_client(server)
    mine = [a for a in c.role_management_policy_assignments.list_for_scope(scope)
            if a.role_definition_id.lower().endswith(role)]
    c.role_management_policies.delete(scope, mine[0].policy_id.rsplit("/", 1)[1])


def until(what: str, probe, seconds: float = 5.0, step: float = 0.1):
    end = time.monotonic() + seconds
    last = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what}: not within {seconds}s (last {last!r})")


# ---------------------------------------------------------------------------

def test_eligible_user_activates_reads_and_is_refused_after_expiry(tenant):
    from azure.core.exceptions import HttpResponseError
    s = tenant.server
    scope = vault_arm_id(s).lstrip("/")
    name = seed_secret(s)
    user, password = create_user(s, prefix="oncall")
    tok = user_tokens(s, user["userPrincipalName"], password)
    assert read_secret(s, tok["vault"], name) == 403, "no standing access"
    made = make_eligible(s, user["id"], scope)
    assert made.status == "Provisioned" and made.request_type == "AdminAssign"
    assert made.target_role_eligibility_schedule_id
    # Eligible is not access.
    assert read_secret(s, tok["vault"], name) == 403
    mine = list(client(s, tok["arm"]).role_eligibility_schedule_instances.list_for_scope(scope, filter="asTarget()"))
    assert [(i.principal_id, i.role_definition_id.rsplit("/", 1)[1]) for i in mine] == [(user["id"], SECRETS_USER)]
    assert mine[0].expanded_properties.role_definition.display_name == "Key Vault Secrets User"
    # The policy's rules, named as Azure names them.
    with pytest.raises(HttpResponseError) as e:
        activate(s, tok["arm"], user["id"], scope, "PT1H", justification=None)
    policy_failure(e, "JustificationRule")
    with pytest.raises(HttpResponseError) as e:
        activate(s, tok["arm"], user["id"], scope, "PT9H")
    policy_failure(e, "ExpirationRule")
    with pytest.raises(HttpResponseError) as e:
        activate(s, tok["arm"], user["id"], scope, "PT1H", role=KV_ADMIN)
    policy_failure(e, "EligibilityRule")
    # Someone else cannot activate it for the user.
    other, other_pw = create_user(s, prefix="bystander")
    other_tok = user_tokens(s, other["userPrincipalName"], other_pw)
    with pytest.raises(HttpResponseError) as e:
        activate(s, other_tok["arm"], user["id"], scope, "PT1H")
    assert e.value.status_code == 403
    with pytest.raises(HttpResponseError) as e:
        activate(s, other_tok["arm"], other["id"], scope, "PT1H")
    policy_failure(e, "EligibilityRule")
    # Activation: in effect at once, for 6 seconds.
    started = time.time()
    done = activate(s, tok["arm"], user["id"], scope, "PT6S")
    assert done.status == "Provisioned" and done.request_type == "SelfActivate", done.as_dict()
    assert done.linked_role_eligibility_schedule_id
    assert until("activation takes effect", lambda: read_secret(s, tok["vault"], name) == 200, 1.5)
    active = list(client(s, tok["arm"]).role_assignment_schedule_instances.list_for_scope(scope, filter="asTarget()"))
    assert [a.assignment_type for a in active] == ["Activated"] and active[0].end_date_time
    # A second activation while one is live is refused.
    with pytest.raises(HttpResponseError) as e:
        activate(s, tok["arm"], user["id"], scope, "PT1H")
    assert e.value.status_code == 409 and e.value.error.code == "RoleAssignmentExists"
    # The request is readable by its requestor, with Azure's shape.
    got = client(s, tok["arm"]).role_assignment_schedule_requests.get(scope, done.name)
    assert got.justification.startswith("INC-4711") and got.requestor_id == user["id"]
    # Expiry: refused from the end on, whatever the scheduler did.
    time.sleep(max(0.0, started + 6.3 - time.time()))
    assert read_secret(s, tok["vault"], name) == 403, "expired activations grant nothing"
    # The scheduler removes it and audits the expiry.
    def expired():
        return [r for r in audit_records(tenant) if r["operationName"] == "RoleAssignmentScheduleExpire"
                and (r.get("identity") or {}).get("claim", {}).get("oid") == user["id"]]
    assert until("the expiry is audited", expired, 5.0)
    assert not [a for a in admin_client(s).role_assignments.list_for_scope("/" + scope)
                if a.principal_id == user["id"]]
    # Deactivate ends it early.
    activate(s, tok["arm"], user["id"], scope, "PT1H")
    assert until("re-activated", lambda: read_secret(s, tok["vault"], name) == 200, 1.5)
    activate(s, tok["arm"], user["id"], scope, "PT1H", request_type="SelfDeactivate", justification="done")
    assert until("deactivated", lambda: read_secret(s, tok["vault"], name) == 403, 1.5)
    # An activation starts now, not in a month (a grant nobody sees coming).
    from azure.mgmt.authorization.models import RoleAssignmentScheduleRequest
    later = RoleAssignmentScheduleRequest(
        principal_id=user["id"], role_definition_id=role_id(s, SECRETS_USER), request_type="SelfActivate",
        justification="later", schedule_info={"start_date_time": "2030-01-01T00:00:00Z",
                                              "expiration": {"type": "AfterDuration", "duration": "PT1H"}})
    with pytest.raises(HttpResponseError) as e:
        client(s, tok["arm"]).role_assignment_schedule_requests.create(scope, str(uuid.uuid4()), later)
    assert e.value.status_code == 400 and e.value.error.code == "InvalidScheduleInfo"
    # Removing the eligibility ends the live activation with it.
    activate(s, tok["arm"], user["id"], scope, "PT1H")
    assert until("re-activated", lambda: read_secret(s, tok["vault"], name) == 200, 1.5)
    from azure.mgmt.authorization.models import RoleEligibilityScheduleRequest
    admin_client(s).role_eligibility_schedule_requests.create(scope, str(uuid.uuid4()), RoleEligibilityScheduleRequest(
        principal_id=user["id"], role_definition_id=role_id(s, SECRETS_USER), request_type="AdminRemove",
        justification="left the team"))
    assert until("eligibility removal ends the activation", lambda: read_secret(s, tok["vault"], name) == 403, 1.5)


def test_approval_by_an_approver_never_the_requestor(tenant):
    from azure.core.exceptions import HttpResponseError
    s = tenant.server
    scope = vault_arm_id(s).lstrip("/")
    name = seed_secret(s)
    user, password = create_user(s, prefix="requestor")
    approver, approver_pw = create_user(s, prefix="approver")
    tok = user_tokens(s, user["userPrincipalName"], password)
    approver_tok = user_tokens(s, approver["userPrincipalName"], approver_pw)
    make_eligible(s, user["id"], scope)
    approvers = [{"userType": "User", "isBackup": False, "id": approver["id"], "description": "lead"},
                 {"userType": "User", "isBackup": False, "id": user["id"], "description": "self"}]
    try:
        updated = patch_policy(s, scope, SECRETS_USER, [{
            "id": "Approval_EndUser_Assignment", "ruleType": "RoleManagementPolicyApprovalRule",
            "target": {"caller": "EndUser", "operations": ["All"], "level": "Assignment"},
            "setting": {"isApprovalRequired": True, "isApprovalRequiredForExtension": False,
                        "isRequestorJustificationRequired": True, "approvalMode": "SingleStage",
                        "approvalStages": [{"approvalStageTimeOutInDays": 1, "isApproverJustificationRequired": True,
                                            "escalationTimeInMinutes": 0, "primaryApprovers": approvers,
                                            "isEscalationEnabled": False}]}}])
        assert len(updated.rules) == 17, "a PATCH merges by rule id"
        pending = activate(s, tok["arm"], user["id"], scope, "PT1H")
        assert pending.status == "PendingApproval" and pending.approval_id, pending.as_dict()
        assert read_secret(s, tok["vault"], name) == 403
        approval = pending.approval_id.rsplit("/", 1)[1]
        url = lambda who_tok, path="", method="GET", body=None: requests.request(  # noqa: E731
            method, f"{s.management_url.rstrip('/')}/providers/Microsoft.Authorization/roleAssignmentApprovals/"
                    f"{approval}{path}", params={"api-version": "2021-01-01-preview"},
            headers={"Authorization": f"Bearer {who_tok}"}, json=body, verify=s.ca_cert, timeout=HTTP_TIMEOUT)
        seen = url(approver_tok["arm"])
        assert seen.status_code == 200, seen.text
        stage = seen.json()["properties"]["stages"][0]
        assert stage["properties"]["assignedToMe"] is True and stage["properties"]["reviewResult"] == "NotReviewed"
        stage_path = f"/stages/{stage['name']}"
        # The approver sees what it approves: the request itself.
        shown = client(s, approver_tok["arm"]).role_assignment_schedule_requests.get(scope, pending.name)
        assert shown.principal_id == user["id"] and shown.justification.startswith("INC-4711")
        # The requestor is listed as an approver, and still cannot approve.
        own = url(tok["arm"], stage_path, "PUT", {"properties": {"reviewResult": "Approve", "justification": "me"}})
        assert own.status_code == 403 and own.json()["error"]["code"] == "SelfApprovalNotAllowed", own.text
        assert read_secret(s, tok["vault"], name) == 403
        ok = url(approver_tok["arm"], stage_path, "PUT",
                 {"properties": {"reviewResult": "Approve", "justification": "incident confirmed"}})
        assert ok.status_code == 200 and ok.json()["properties"]["reviewResult"] == "Approve", ok.text
        assert until("approved activation takes effect", lambda: read_secret(s, tok["vault"], name) == 200, 1.5)
        again = url(approver_tok["arm"], stage_path, "PUT", {"properties": {"reviewResult": "Deny"}})
        assert again.status_code == 400 and again.json()["error"]["code"] == "ApprovalAlreadyCompleted"
        got = client(s, tok["arm"]).role_assignment_schedule_requests.get(scope, pending.name)
        assert got.status == "Provisioned"
    finally:
        reset_policy(s, scope, SECRETS_USER)


def test_activation_requiring_mfa_needs_a_token_with_it(tenant, policies):
    from azure.core.exceptions import HttpResponseError
    s = tenant.server
    scope = vault_arm_id(s).lstrip("/")
    user, password, app = enrolled_user(tenant, prefix="mfa-oncall")
    tok = user_tokens(s, user["userPrincipalName"], password)
    make_eligible(s, user["id"], scope)
    try:
        patch_policy(s, scope, SECRETS_USER, [{
            "id": "Enablement_EndUser_Assignment", "ruleType": "RoleManagementPolicyEnablementRule",
            "enabledRules": ["MultiFactorAuthentication", "Justification"]}])
        with pytest.raises(HttpResponseError) as e:
            activate(s, tok["arm"], user["id"], scope, "PT1H", justification=None)
        policy_failure(e, "JustificationRule", "MfaRule")
        # An ARM token with a second factor: Conditional Access asks for it on
        # the device-code page for this user.
        policies.policy("MFA for ARM for this user", apps=[ARM_APP], grant=["mfa"],
                        users={"includeUsers": [user["id"]]})
        device_code, page = device_sign_in(tenant, user["userPrincipalName"], password, s.management_scope)
        done = device_code_answer(tenant, hidden(page.text, "mfa_ticket"), app.code())
        assert "You have signed in" in done.text, done.text[:400]
        mfa_arm = redeem_device_code(tenant, device_code).json()["access_token"]
        made = activate(s, mfa_arm, user["id"], scope, "PT1H")
        assert made.status == "Provisioned"
    finally:
        reset_policy(s, scope, SECRETS_USER)


def test_az_rest_drives_the_seed_flow(tenant):
    if not AZ:
        pytest.fail("the Azure CLI was not found (KEYHAVEN_AZ); run through scripts/compat", pytrace=False)
    s = tenant.server
    scope = vault_arm_id(s)
    name = seed_secret(s)
    user, password = create_user(s, prefix="azrest")
    make_eligible(s, user["id"], scope.lstrip("/"))
    az = tenant.az
    az.json("login", "-u", user["userPrincipalName"], f"--password={password}")
    base = s.management_url.rstrip("/")
    eligible = az.json("rest", "--method", "get", "--url",
                       f"{base}{scope}/providers/Microsoft.Authorization/roleEligibilityScheduleInstances"
                       "?api-version=2020-10-01&$filter=asTarget()")
    assert [e["properties"]["principalId"] for e in eligible["value"]] == [user["id"]]
    body = {"properties": {"principalId": user["id"], "roleDefinitionId": role_id(s, SECRETS_USER),
                           "requestType": "SelfActivate", "justification": "seed walkthrough",
                           "linkedRoleEligibilityScheduleId": eligible["value"][0]["id"],
                           "scheduleInfo": {"expiration": {"type": "AfterDuration", "duration": "PT30M"}}}}
    made = az.json("rest", "--method", "put", "--url",
                   f"{base}{scope}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/"
                   f"{uuid.uuid4()}?api-version=2020-10-01", "--body", json.dumps(body))
    assert made["properties"]["status"] == "Provisioned", made
    value = az.tsv("keyvault", "secret", "show", "--vault-name", "dev", "--name", name, "--query", "value")
    assert value == "behind-pim"


def test_a_second_node_enforces_activation_and_expiry_within_a_second(tmp_path, monkeypatch):
    """Two nodes on one PostgreSQL database: an activation made on one node
    opens the vault on the other within a second, and its end closes it
    there at once."""
    from test_durability import second_node
    with running_server(KeyhavenServer, "postgres", tmp_path / "a") as a:
        b = second_node(a, tmp_path / "b").start()
        try:
            trust_server_ca(monkeypatch, a)
            scope = vault_arm_id(a).lstrip("/")
            name = seed_secret(a)
            user, password = create_user(a, prefix="twonode")
            tok_a = user_tokens(a, user["userPrincipalName"], password)
            vault_b = request_password_token(b, user["userPrincipalName"], password, b.vault_scope)
            assert vault_b.status_code == 200
            tok_b = vault_b.json()["access_token"]
            assert read_secret(b, tok_b, name) == 403
            make_eligible(a, user["id"], scope)
            started = time.time()
            activate(a, tok_a["arm"], user["id"], scope, "PT4S")
            until("node B sees the activation", lambda: read_secret(b, tok_b, name) == 200, 1.0, 0.05)
            time.sleep(max(0.0, started + 4.3 - time.time()))
            assert read_secret(b, tok_b, name) == 403, "node B refuses after the end"
        finally:
            b.stop()


def test_activation_and_expiry_are_events_of_the_vault(tenant):
    """An Event Grid subscription on the vault hears a role activated at the
    vault and its end (Keyhaven's own event types, from the scheduler, once
    across nodes)."""
    from test_events import Receiver, event_grid, subscribe
    s = tenant.server
    scope = vault_arm_id(s).lstrip("/")
    receiver = Receiver()
    try:
        path, r = subscribe(s, receiver.url, types=["Keyhaven.Authorization.RoleAssignmentActivated",
                                                    "Keyhaven.Authorization.RoleAssignmentExpired"])
        assert r.status_code == 201, r.text
        user, password = create_user(s, prefix="evented")
        tok = user_tokens(s, user["userPrincipalName"], password)
        make_eligible(s, user["id"], scope)
        activate(s, tok["arm"], user["id"], scope, "PT3S")

        def of(kind):
            return lambda e: (event_grid(e) or {}).get("eventType") == f"Keyhaven.Authorization.{kind}" \
                and event_grid(e)["data"]["PrincipalId"] == user["id"]
        began = event_grid(receiver.wait_for(of("RoleAssignmentActivated"), 15)[0])
        assert began["topic"].lower() == vault_arm_id(s).lower()
        assert began["data"]["ObjectType"] == "RoleAssignment" and began["data"]["EXP"]
        ended = event_grid(receiver.wait_for(of("RoleAssignmentExpired"), 15)[0])
        assert ended["data"]["ObjectName"] == began["data"]["ObjectName"]
        assert len([e for e in receiver.events if of("RoleAssignmentActivated")(e)]) == 1
    finally:
        receiver.close()


def test_an_administrators_active_assignment_with_an_end(tenant):
    """AdminAssign on roleAssignmentScheduleRequests: active at once, no
    activation needed, over at its end; the admin policy's rules apply
    (justification by default)."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.authorization.models import RoleAssignmentScheduleRequest
    s = tenant.server
    scope = vault_arm_id(s).lstrip("/")
    name = seed_secret(s)
    user, password = create_user(s, prefix="contractor")
    tok = user_tokens(s, user["userPrincipalName"], password)

    def assign(justification):
        return admin_client(s).role_assignment_schedule_requests.create(scope, str(uuid.uuid4()), RoleAssignmentScheduleRequest(
            principal_id=user["id"], role_definition_id=role_id(s, SECRETS_USER), request_type="AdminAssign",
            justification=justification, schedule_info={"expiration": {"type": "AfterDuration", "duration": "PT4S"}}))
    with pytest.raises(HttpResponseError) as e:
        assign(None)
    policy_failure(e, "JustificationRule")
    started = time.time()
    made = assign("two-day contract")
    assert made.status == "Provisioned" and made.request_type == "AdminAssign"
    assert until("in force at once", lambda: read_secret(s, tok["vault"], name) == 200, 1.5)
    listed = [a for a in admin_client(s).role_assignment_schedules.list_for_scope(scope)
              if a.principal_id == user["id"]]
    assert [a.assignment_type for a in listed] == ["Assigned"] and listed[0].end_date_time
    # The user cannot end it as if it were its own activation.
    with pytest.raises(HttpResponseError):
        activate(s, tok["arm"], user["id"], scope, "PT1H", request_type="SelfDeactivate", justification="x")
    time.sleep(max(0.0, started + 4.3 - time.time()))
    assert read_secret(s, tok["vault"], name) == 403
