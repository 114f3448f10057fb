"""The management plane with Microsoft's management SDKs unchanged:
azure-mgmt-resource for subscriptions and resource groups, azure-mgmt-keyvault
for the whole vault lifecycle (create, read, update, list, access policies,
delete, deleted vaults, recover, purge, name availability), and the data plane
of a vault used the moment it exists."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from khcompat import CLIENT_KWARGS, arm, assert_arm_error, management_token, unique

POLL = {"polling_interval": 0}


@pytest.fixture(scope="module")
def mgmt(server):
    from azure.mgmt.keyvault import KeyVaultManagementClient
    c = KeyVaultManagementClient(server.credential(), server.subscription_id, base_url=server.management_url,
                                 credential_scopes=[server.management_scope], **CLIENT_KWARGS)
    yield c
    c.close()


@pytest.fixture(scope="module")
def resources(server):
    from azure.mgmt.resource import ResourceManagementClient
    c = ResourceManagementClient(server.credential(), server.subscription_id, base_url=server.management_url,
                                 credential_scopes=[server.management_scope], **CLIENT_KWARGS)
    yield c
    c.close()


@pytest.fixture(scope="module")
def subscriptions(server):
    from azure.mgmt.resource import SubscriptionClient
    c = SubscriptionClient(server.credential(), base_url=server.management_url,
                           credential_scopes=[server.management_scope], **CLIENT_KWARGS)
    yield c
    c.close()


def vault_name() -> str:
    return unique("kv")[:24].rstrip("-")


def new_group(resources) -> str:
    rg = unique("rg")
    g = resources.resource_groups.create_or_update(rg, {"location": "westeurope", "tags": {"env": "test"}})
    assert g.name == rg and g.location == "westeurope" and g.properties.provisioning_state == "Succeeded"
    return rg


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def params(server, **props):
    """A VaultCreateOrUpdateParameters body (this SDK sends dicts as they are,
    so keys are the wire's camelCase)."""
    base = {"tenantId": server.tenant_id, "sku": {"family": "A", "name": "standard"},
            "enableRbacAuthorization": True}
    base.update({camel(k): v for k, v in props.items()})
    return {"location": "westeurope", "tags": {"team": "platform"}, "properties": base}


def create_vault(mgmt, server, rg, name, **props):
    return mgmt.vaults.begin_create_or_update(rg, name, params(server, **props), **POLL).result()


def test_subscription_and_resource_groups(server, resources, subscriptions):
    subs = list(subscriptions.subscriptions.list())
    assert [s.subscription_id for s in subs] == [server.subscription_id]
    assert subscriptions.subscriptions.get(server.subscription_id).state == "Enabled"
    rg = new_group(resources)
    assert resources.resource_groups.check_existence(rg) is True
    assert resources.resource_groups.get(rg).tags == {"env": "test"}
    assert rg in {g.name for g in resources.resource_groups.list()}
    updated = resources.resource_groups.create_or_update(rg, {"location": "westeurope", "tags": {"env": "prod"}})
    assert updated.tags == {"env": "prod"}
    with pytest.raises(HttpResponseError) as e:
        resources.resource_groups.create_or_update(rg, {"location": "eastus"})
    assert e.value.status_code == 409
    resources.resource_groups.begin_delete(rg, **POLL).result()
    assert resources.resource_groups.check_existence(rg) is False
    with pytest.raises(ResourceNotFoundError):
        resources.resource_groups.get(rg)


def test_vault_lifecycle_and_its_data_plane_at_once(server, mgmt, resources, credential, monkeypatch):
    rg = new_group(resources)
    name = vault_name()
    assert mgmt.vaults.check_name_availability({"name": name, "type": "Microsoft.KeyVault/vaults"}).name_available
    v = create_vault(mgmt, server, rg, name, soft_delete_retention_in_days=7)
    assert v.name == name and v.location == "westeurope" and v.tags == {"team": "platform"}
    p = v.properties
    assert p.provisioning_state == "Succeeded" and p.enable_rbac_authorization is True
    assert p.soft_delete_retention_in_days == 7 and p.enable_soft_delete is True
    assert p.vault_uri.startswith(f"https://{name}.vault.localhost:") and p.vault_uri.endswith("/")
    taken = mgmt.vaults.check_name_availability({"name": name, "type": "Microsoft.KeyVault/vaults"})
    assert taken.name_available is False and taken.reason == "AlreadyExists"
    bad = mgmt.vaults.check_name_availability({"name": "1-bad--name", "type": "Microsoft.KeyVault/vaults"})
    assert bad.name_available is False and bad.reason == "AccountNameInvalid"

    # The data plane of the new vault works at once (the creator is Owner of the subscription
    # and Key Vault Administrator there, so RBAC lets it in).
    secrets = SecretClient(p.vault_uri, credential, **CLIENT_KWARGS)
    secrets.set_secret("first", "value-1")
    assert secrets.get_secret("first").value == "value-1"

    got = mgmt.vaults.get(rg, name)
    assert got.id.lower() == f"/subscriptions/{server.subscription_id}/resourcegroups/{rg}/providers/microsoft.keyvault/vaults/{name}".lower()
    assert name in {x.name for x in mgmt.vaults.list_by_resource_group(rg)}
    assert name in {x.name for x in mgmt.vaults.list_by_subscription()}
    assert name in {x.name for x in mgmt.vaults.list()}

    patched = mgmt.vaults.update(rg, name, {"tags": {"team": "sec"}, "properties": {
        "enabledForDeployment": True, "enablePurgeProtection": True,
        "networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices",
                        "ipRules": [{"value": "203.0.113.0/24"}, {"value": "127.0.0.1"}]}}})
    assert patched.tags == {"team": "sec"} and patched.properties.enabled_for_deployment is True
    assert patched.properties.enable_purge_protection is True
    assert [r.value for r in patched.properties.network_acls.ip_rules] == ["203.0.113.0/24", "127.0.0.1"]
    assert patched.properties.soft_delete_retention_in_days == 7, "PATCH keeps what it does not name"

    # Access policies through their own operation (stored even while RBAC decides).
    from azure.mgmt.keyvault.models import AccessPolicyUpdateKind
    entry = {"tenantId": server.tenant_id, "objectId": "00000000-0000-0000-0000-000000000001",
             "permissions": {"secrets": ["get", "list"]}}
    out = mgmt.vaults.update_access_policy(rg, name, AccessPolicyUpdateKind.ADD,
                                           {"properties": {"accessPolicies": [entry]}})
    assert [a.object_id for a in out.properties.access_policies] == [entry["objectId"]]

    # Delete: soft; the name stays taken; the data plane is gone.
    mgmt.vaults.delete(rg, name)
    with pytest.raises(ResourceNotFoundError):
        mgmt.vaults.get(rg, name)
    deleted = mgmt.vaults.get_deleted(name, "westeurope")
    assert deleted.properties.vault_id == got.id and deleted.properties.purge_protection_enabled is True
    assert name in {d.name for d in mgmt.vaults.list_deleted()}
    assert mgmt.vaults.check_name_availability({"name": name, "type": "Microsoft.KeyVault/vaults"}).name_available is False
    with pytest.raises(HttpResponseError) as e:
        secrets.get_secret("first")
    assert e.value.status_code == 404
    with pytest.raises(HttpResponseError) as e:
        create_vault(mgmt, server, rg, name)
    assert e.value.status_code == 409

    # Purge protection refuses an early purge; recovery brings the vault and its data back.
    with pytest.raises(HttpResponseError) as e:
        mgmt.vaults.begin_purge_deleted(name, "westeurope", **POLL).result()
    assert e.value.status_code == 409
    recovered = create_vault(mgmt, server, rg, name, create_mode="recover")
    assert recovered.properties.enable_purge_protection is True
    assert secrets.get_secret("first").value == "value-1"
    secrets.close()


def test_purge_shreds_the_vault_and_frees_its_name(server, mgmt, resources, credential):
    rg = new_group(resources)
    name = vault_name()
    v = create_vault(mgmt, server, rg, name)
    secrets = SecretClient(v.properties.vault_uri, credential, **CLIENT_KWARGS)
    secrets.set_secret("doomed", "x")
    mgmt.vaults.delete(rg, name)
    mgmt.vaults.begin_purge_deleted(name, "westeurope", **POLL).result()
    with pytest.raises(ResourceNotFoundError):
        mgmt.vaults.get_deleted(name, "westeurope")
    assert mgmt.vaults.check_name_availability({"name": name, "type": "Microsoft.KeyVault/vaults"}).name_available
    again = create_vault(mgmt, server, rg, name)
    fresh = SecretClient(again.properties.vault_uri, credential, **CLIENT_KWARGS)
    assert [s.name for s in fresh.list_properties_of_secrets()] == []
    assert [s.name for s in fresh.list_deleted_secrets()] == []
    fresh.close()
    secrets.close()


def test_deleting_a_group_soft_deletes_its_vaults(server, mgmt, resources):
    rg = new_group(resources)
    name = vault_name()
    create_vault(mgmt, server, rg, name)
    resources.resource_groups.begin_delete(rg, **POLL).result()
    assert mgmt.vaults.get_deleted(name, "westeurope").name == name
    # Recovery needs the group back, as in Azure.
    with pytest.raises(HttpResponseError) as e:
        create_vault(mgmt, server, rg, name, create_mode="recover")
    assert e.value.status_code == 404
    resources.resource_groups.create_or_update(rg, {"location": "westeurope"})
    assert create_vault(mgmt, server, rg, name, create_mode="recover").name == name


def test_bad_vault_requests_get_arm_errors(server, mgmt, resources):
    rg = new_group(resources)
    token = management_token(server)
    base = f"/subscriptions/{server.subscription_id}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults"
    api = {"api_version": "2026-05-15"}
    good = {"location": "westeurope", "properties": {"tenantId": server.tenant_id,
                                                     "sku": {"family": "A", "name": "standard"}}}
    cases = [
        ("x", good, 400, "VaultNameNotValid"),
        (vault_name(), {**good, "properties": {**good["properties"], "softDeleteRetentionInDays": 6}}, 400, "BadRequest"),
        (vault_name(), {**good, "properties": {**good["properties"], "softDeleteRetentionInDays": 91}}, 400, "BadRequest"),
        (vault_name(), {**good, "properties": {**good["properties"], "sku": {"name": "gold"}}}, 400, "BadRequest"),
        (vault_name(), {**good, "properties": {**good["properties"], "tenantId": "00000000-0000-0000-0000-000000000000"}}, 400, "BadRequest"),
        (vault_name(), {**good, "properties": {**good["properties"], "enableSoftDelete": False}}, 400, "BadRequest"),
        (vault_name(), {**good, "properties": {**good["properties"], "networkAcls": {"ipRules": [{"value": "300.1.1.1"}]}}}, 400, "BadRequest"),
        (vault_name(), {"properties": good["properties"]}, 400, "LocationRequired"),
    ]
    for name, body, status, code in cases:
        assert_arm_error(arm(server, "PUT", f"{base}/{name}", token, body, **api), status, code)
    # Unknown group, duplicate name in another group, purge protection off.
    assert_arm_error(arm(server, "PUT", f"/subscriptions/{server.subscription_id}/resourceGroups/{unique('nogroup')}"
                                        f"/providers/Microsoft.KeyVault/vaults/{vault_name()}", token, good, **api),
                     404, "ResourceGroupNotFound")
    name = vault_name()
    create_vault(mgmt, server, rg, name, enable_purge_protection=True)
    other = new_group(resources)
    assert_arm_error(arm(server, "PUT", f"/subscriptions/{server.subscription_id}/resourceGroups/{other}"
                                        f"/providers/Microsoft.KeyVault/vaults/{name}", token, good, **api),
                     409, "VaultAlreadyExists")
    r = arm(server, "PATCH", f"{base}/{name}", token, {"properties": {"enablePurgeProtection": False}}, **api)
    assert_arm_error(r, 400, "BadRequest")
    assert "irreversible" in r.json()["error"]["message"]
    assert mgmt.vaults.get(rg, name).properties.enable_purge_protection is True


def test_recovery_brings_the_vault_back_as_it_was_deleted(server, mgmt, resources):
    """A recover body carries a default sku and permission model (as `az
    keyvault recover` sends); the recovered vault keeps its own."""
    rg = new_group(resources)
    name = vault_name()
    create_vault(mgmt, server, rg, name, enable_rbac_authorization=False, soft_delete_retention_in_days=9)
    mgmt.vaults.delete(rg, name)
    recovered = create_vault(mgmt, server, rg, name, create_mode="recover")
    assert recovered.properties.enable_rbac_authorization is False
    assert recovered.properties.soft_delete_retention_in_days == 9
