"""Managed HSM pools: the ARM resource through azure-mgmt-keyvault, activation
by security domain (made and checked with sdclient.py, an independent
pyca/cryptography implementation of the CLI's formats), local RBAC through
azure-keyvault-administration's KeyVaultAccessControlClient, settings
through KeyVaultSettingsClient, and HSM keys through azure-keyvault-keys,
each result checked with pyca/cryptography. Keys live in a SoftHSM2 token
(the premium tier's backend). Runs on both stores."""

from __future__ import annotations

import datetime
import hashlib
import json
import time
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.administration import (KeyVaultAccessControlClient, KeyVaultRoleScope,
                                           KeyVaultSettingsClient, KeyVaultSetting, KeyVaultDataAction,
                                           KeyVaultPermission)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

import sdclient
from azurite import azurite_container
from khcompat import (CLIENT_KWARGS, HTTP_TIMEOUT, KeyhavenServer, bootstrap_object_id, new_principal,
                      running_server, unique)
from test_premium import HsmServer, hsm_environment, mgmt_kwargs, trust


class PoolServer(HsmServer):
    """The HSM server, allowed to write pool backups to Azurite on loopback."""

    def command(self):
        return super().command() + ["--backup-storage-allow", "127.0.0.1"]

ADMINISTRATOR = "a290e904-7015-4bba-90c8-60543313cdb4"
CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
CRYPTO_OFFICER = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
SD_API = "7.5"


@pytest.fixture(scope="module")
def hsm(store_kind, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"mhsm-{store_kind}")
    with hsm_environment(root), running_server(PoolServer, store_kind, root / "server") as srv:
        trust(srv)
        srv.admin_oid = bootstrap_object_id(srv)
        srv.rg = unique("rg")
        from azure.mgmt.resource import ResourceManagementClient
        with ResourceManagementClient(srv.credential(), srv.subscription_id, **mgmt_kwargs(srv)) as r:
            r.resource_groups.create_or_update(srv.rg, {"location": "westeurope"})
        yield srv


def mgmt(srv):
    from azure.mgmt.keyvault import KeyVaultManagementClient
    return KeyVaultManagementClient(srv.credential(), srv.subscription_id, **mgmt_kwargs(srv))


def pool_url(srv, name: str) -> str:
    return f"https://{name}.{srv.vault_host_suffix.replace('vault.', 'managedhsm.', 1)}"


def pool_scope(srv) -> str:
    return pool_url(srv, "x").split("x.", 1)[1]


def create_pool(srv, name: str = "", admins=None, **props):
    name = name or unique("hsm")[:24]
    body = {"location": "westeurope", "sku": {"family": "B", "name": "Standard_B1"},
            "properties": {"tenantId": srv.tenant_id, "initialAdminObjectIds": admins or [srv.admin_oid],
                           "softDeleteRetentionInDays": 7, **props}}
    with mgmt(srv) as m:
        return m.managed_hsms.begin_create_or_update(srv.rg, name, body, polling_interval=0).result()


def pool_token(srv, credential=None) -> str:
    return (credential or srv.credential()).get_token(f"https://{pool_scope(srv)}/.default").token


def pool_request(srv, name: str, method: str, path: str, token: str, api_version: str = SD_API, **kw):
    return requests.request(method, pool_url(srv, name) + path, params={"api-version": api_version},
                            headers={"Authorization": f"Bearer {token}"}, verify=srv.ca_cert,
                            timeout=HTTP_TIMEOUT, **kw)


def wrapping_keys(n: int):
    out = []
    for i in range(n):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sd wrapping key {i}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
        out.append((cert, key))
    return out


def download(srv, name: str, keys, required: int = 2):
    r = pool_request(srv, name, "POST", "/securitydomain/download", pool_token(srv),
                     json={"certificates": [sdclient.wrapping_jwk(c) for c, _ in keys], "required": required})
    return r


def activate(srv, name: str, crypto_user: bool = True):
    """Downloads the security domain; then, as an administrator does on
    Azure (Administrator holds no key actions), makes the caller Crypto User."""
    keys = wrapping_keys(3)
    r = download(srv, name, keys)
    assert r.status_code == 202, r.text
    if crypto_user:
        grant(srv, name, CRYPTO_USER, srv.admin_oid)
    return keys, r.json()["value"]


def grant(srv, name: str, role: str, principal: str, scope: str = "/"):
    with KeyVaultAccessControlClient(pool_url(srv, name), srv.credential(), verify_challenge_resource=False,
                                     **CLIENT_KWARGS) as ac:
        return ac.create_role_assignment(scope, role, principal)


def key_client(srv, name: str, credential=None) -> KeyClient:
    return KeyClient(pool_url(srv, name), credential or srv.credential(), verify_challenge_resource=False,
                     **CLIENT_KWARGS)


def verify_rs256(jwk, digest: bytes, signature: bytes):
    pub = rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")).public_key()
    pub.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def test_a_pool_is_an_arm_resource_with_soft_delete_and_purge(hsm):
    name = unique("hsm")[:24]
    with mgmt(hsm) as m:
        assert m.managed_hsms.check_mhsm_name_availability({"name": name}).name_available
        # azure-cli 2.91 sends the retention as a string.
        p = m.managed_hsms.begin_create_or_update(hsm.rg, name, {
            "location": "westeurope", "sku": {"family": "B", "name": "Standard_B1"}, "tags": {"team": "crypto"},
            "properties": {"tenantId": hsm.tenant_id, "initialAdminObjectIds": [hsm.admin_oid],
                           "softDeleteRetentionInDays": "7"}}, polling_interval=0).result()
        assert p.sku.name == "Standard_B1" and p.sku.family == "B"
        assert p.properties.hsm_uri == pool_url(hsm, name) + "/"
        assert p.properties.initial_admin_object_ids == [hsm.admin_oid]
        assert p.properties.soft_delete_retention_in_days == 7
        assert p.properties.provisioning_state == "Succeeded"
        assert p.properties.security_domain_properties.activation_status == "NotActivated"
        assert p.tags == {"team": "crypto"}
        got = m.managed_hsms.get(hsm.rg, name)
        assert got.id == p.id and got.type == "Microsoft.KeyVault/managedHSMs"
        assert name in [x.name for x in m.managed_hsms.list_by_resource_group(hsm.rg)]
        assert name in [x.name for x in m.managed_hsms.list_by_subscription()]
        # A pool is not a vault: not in the vault lists, not reachable as one.
        assert name not in [v.name for v in m.vaults.list_by_resource_group(hsm.rg)]
        with pytest.raises(ResourceNotFoundError):
            m.vaults.get(hsm.rg, name)
        taken = m.managed_hsms.check_mhsm_name_availability({"name": name})
        assert not taken.name_available and taken.reason == "AlreadyExists"
        updated = m.managed_hsms.begin_update(hsm.rg, name, {"tags": {"team": "platform"}},
                                              polling_interval=0).result()
        assert updated.tags == {"team": "platform"}
        m.managed_hsms.begin_delete(hsm.rg, name, polling_interval=0).result()
        with pytest.raises(ResourceNotFoundError):
            m.managed_hsms.get(hsm.rg, name)
        deleted = m.managed_hsms.get_deleted(name, "westeurope")
        assert deleted.properties.mhsm_id == p.id
        assert name in [d.name for d in m.managed_hsms.list_deleted()]
        assert name not in [d.name for d in m.vaults.list_deleted()]
        # Recover, delete again, purge: the name is free again.
        recovered = m.managed_hsms.begin_create_or_update(hsm.rg, name, {
            "location": "westeurope", "sku": {"family": "B", "name": "Standard_B1"},
            "properties": {"tenantId": hsm.tenant_id, "createMode": "Recover"}}, polling_interval=0).result()
        assert recovered.tags == {"team": "platform"}
        m.managed_hsms.begin_delete(hsm.rg, name, polling_interval=0).result()
        m.managed_hsms.begin_purge_deleted(name, "westeurope", polling_interval=0).result()
        assert name not in [d.name for d in m.managed_hsms.list_deleted()]
        assert m.managed_hsms.check_mhsm_name_availability({"name": name}).name_available


def test_bad_pool_requests_get_arm_errors(hsm):
    with mgmt(hsm) as m:
        for props, why in [({"tenantId": hsm.tenant_id}, "initialAdminObjectIds"),
                           ({"tenantId": hsm.tenant_id, "initialAdminObjectIds": ["not-a-guid"]}, "object id"),
                           ({"tenantId": hsm.tenant_id, "initialAdminObjectIds": [hsm.admin_oid],
                             "softDeleteRetentionInDays": 3}, "between 7 and 90")]:
            with pytest.raises(HttpResponseError) as e:
                m.managed_hsms.begin_create_or_update(hsm.rg, unique("bad")[:24], {
                    "location": "westeurope", "sku": {"name": "Standard_B1"}, "properties": props},
                    polling_interval=0).result()
            assert e.value.status_code == 400 and why in str(e.value), (props, str(e.value))


def test_a_pool_answers_only_its_security_domain_until_activated(hsm):
    name = create_pool(hsm).name
    with key_client(hsm, name) as kc:
        with pytest.raises(HttpResponseError) as e:
            kc.create_rsa_key(unique("k"), size=2048)
        assert e.value.status_code == 403 and "not activated" in e.value.message
    # The pool's host takes only tokens for the pools' audience.
    vault_token = KeyhavenServer.token(hsm)  # (HsmServer.token is its token label)
    r = pool_request(hsm, name, "GET", "/securitydomain/download/pending", vault_token)
    assert r.status_code == 401, r.text
    assert f'resource="https://{pool_scope(hsm)}"' in r.headers["WWW-Authenticate"]
    # A vault's name is not a pool, nor a pool's name a vault.
    r = requests.get(hsm.vault_url_for(name) + "/keys", params={"api-version": "7.5"},
                     headers={"Authorization": f"Bearer {vault_token}"}, verify=hsm.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and r.json()["error"]["code"] == "VaultNotFound"


def test_security_domain_download_activates_and_opens_with_a_quorum(hsm):
    name = create_pool(hsm).name
    token = pool_token(hsm)
    # A quorum above the number of certificates, or too few certificates: 400.
    keys = wrapping_keys(3)
    r = download(hsm, name, keys, required=4)
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter", r.text
    r = download(hsm, name, keys[:2], required=2)
    assert r.status_code == 400, r.text
    r = download(hsm, name, keys, required=2)
    assert r.status_code == 202, r.text
    grant(hsm, name, CRYPTO_USER, hsm.admin_oid)
    pending = r.headers["Azure-AsyncOperation"]
    assert pending == f"{pool_url(hsm, name)}/securitydomain/download/pending?api-version={SD_API}"
    status = requests.get(pending, headers={"Authorization": f"Bearer {token}"}, verify=hsm.ca_cert,
                          timeout=HTTP_TIMEOUT).json()
    assert status["status"] == "Success"
    blob = r.json()["value"]
    sd = json.loads(blob)  # the value is the JSON text itself, not base64
    assert sd["version"] == 2 and sd["SharedKeys"]["required"] == 2
    assert sorted(s["x5t_256"] for s in sd["SharedKeys"]["enc_shares"]) == sorted(
        sdclient.cert_x5t256(c) for c, _ in keys)
    # Any two of the three keys open it, to the same domain; one does not.
    a = sdclient.open_download(blob, [keys[0], keys[2]])
    b = sdclient.open_download(blob, [keys[1], keys[2]])
    assert a == b and set(a) == {"hsm_backup"}
    with pytest.raises(ValueError):
        sdclient.open_download(blob, [keys[1]])
    # Now active, on ARM and on the data plane. A retry with the same
    # certificates and quorum (its answer was lost) gets the same domain;
    # any other download is refused.
    with mgmt(hsm) as m:
        assert m.managed_hsms.get(hsm.rg, name).properties.security_domain_properties.activation_status == "Active"
    again = download(hsm, name, list(reversed(keys)), required=2)
    assert again.status_code == 202 and again.json()["value"] == blob
    assert download(hsm, name, keys, required=3).status_code == 409
    assert download(hsm, name, wrapping_keys(3)).status_code == 409
    with key_client(hsm, name) as kc:
        key = kc.create_rsa_key(unique("k"), size=2048)
        assert key.key_type == "RSA-HSM"
        assert key.id.startswith(pool_url(hsm, name) + "/keys/")
        digest = hashlib.sha256(b"signed in the pool").digest()
        with CryptographyClient(key.id, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as cc:
            verify_rs256(key.key, digest, cc.sign(SignatureAlgorithm.rs256, digest).signature)
        ec = kc.create_ec_key(unique("k"), curve="P-256")
        assert ec.key_type == "EC-HSM"
        # Secrets are not kept in a pool.
        r = pool_request(hsm, name, "PUT", "/secrets/s1", token, json={"value": "v"})
        assert r.status_code == 404, r.text


def test_upload_restores_the_domain_so_backups_move_between_pools(hsm):
    first = create_pool(hsm).name
    keys, blob = activate(hsm, first)
    token = pool_token(hsm)
    with key_client(hsm, first) as kc:
        key = kc.create_rsa_key(unique("k"), size=2048)
        backup = kc.backup_key(key.name)
    # An unrelated pool, with a domain of its own, refuses that backup.
    stranger = create_pool(hsm).name
    activate(hsm, stranger)
    with key_client(hsm, stranger) as kc:
        with pytest.raises(HttpResponseError) as e:
            kc.restore_key_backup(backup)
        assert e.value.status_code == 400 and "another security domain" in e.value.message
    # A new pool: init-recovery hands out an exchange key (the same one when asked twice).
    second = create_pool(hsm).name
    r = pool_request(hsm, second, "GET", "/securitydomain/upload", token)
    assert r.status_code == 200, r.text
    transfer = json.loads(r.json()["transfer_key"])  # a JSON string, as the CLI reads it
    again = json.loads(pool_request(hsm, second, "GET", "/securitydomain/upload", token).json()["transfer_key"])
    assert transfer["x5c"] == again["x5c"]
    import base64
    exchange = x509.load_der_x509_certificate(base64.b64decode(transfer["x5c"][0]))
    items = sdclient.open_download(blob, [keys[2], keys[0]])
    # A blob wrapped to another key, and a tampered one, are refused.
    other = wrapping_keys(1)[0][0]
    r = pool_request(hsm, second, "POST", "/securitydomain/upload", token,
                     json={"value": sdclient.restore_blob(items, other)})
    assert r.status_code == 400 and "another exchange key" in r.json()["error"]["message"], r.text
    good = sdclient.restore_blob(items, exchange)
    doc = json.loads(good)
    jwe = doc["EncData"]["data"][0]["compact_jwe"].split(".")
    jwe[3] = sdclient.b64u(bytes([sdclient.b64u_dec(jwe[3])[0] ^ 1]) + sdclient.b64u_dec(jwe[3])[1:])
    doc["EncData"]["data"][0]["compact_jwe"] = ".".join(jwe)
    r = pool_request(hsm, second, "POST", "/securitydomain/upload", token, json={"value": json.dumps(doc)})
    assert r.status_code == 400 and "altered" in r.json()["error"]["message"], r.text
    r = pool_request(hsm, second, "POST", "/securitydomain/upload", token, json={"value": good})
    assert r.status_code == 202 and r.json()["status"] == "Success", r.text
    assert r.headers["Azure-AsyncOperation"].endswith("/securitydomain/upload/pending?api-version=7.5")
    assert pool_request(hsm, second, "GET", "/securitydomain/upload/pending", token).json()["status"] == "Success"
    # The second pool holds the first's domain: the backup restores, and signs
    # with the same key.
    grant(hsm, second, CRYPTO_USER, hsm.admin_oid)
    with key_client(hsm, second) as kc:
        restored = kc.restore_key_backup(backup)
        assert restored.key.n == key.key.n
        digest = hashlib.sha256(b"after the restore").digest()
        with CryptographyClient(restored.id, hsm.credential(), verify_challenge_resource=False,
                                **CLIENT_KWARGS) as cc:
            verify_rs256(key.key, digest, cc.sign(SignatureAlgorithm.rs256, digest).signature)
    # An activated pool takes no second domain.
    r = pool_request(hsm, second, "POST", "/securitydomain/upload", token, json={"value": good})
    assert r.status_code == 409, r.text


def test_local_rbac_decides_who_uses_the_keys(hsm):
    name = create_pool(hsm).name
    activate(hsm, name, crypto_user=False)
    url = pool_url(hsm, name)
    user = new_principal(hsm, prefix="mhsm")
    with KeyVaultAccessControlClient(url, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as ac:
        roles = {r.role_name: r for r in ac.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
        assert roles["Managed HSM Administrator"].name == ADMINISTRATOR
        assert roles["Managed HSM Crypto User"].id == (
            f"Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_USER}")
        assert "Managed HSM Backup User" in roles and len(roles) == 10
        initial = list(ac.list_role_assignments(KeyVaultRoleScope.GLOBAL))
        assert [(a.properties.principal_id, a.properties.role_definition_id.rsplit("/", 1)[1])
                for a in initial] == [(hsm.admin_oid, ADMINISTRATOR)]
        # Neither Azure RBAC on ARM (the caller is Owner of the subscription)
        # nor the pool's Administrator role grants any key use.
        with key_client(hsm, name) as kc:
            with pytest.raises(HttpResponseError) as e:
                kc.create_rsa_key("k0", size=2048)
            assert e.value.status_code == 403 and e.value.error.code == "AccessDenied"
            assert "Not authorized to access Microsoft.KeyVault/managedHsm/keys/create on /keys/k0" in e.value.message
        # Crypto User at /keys/{one key} for the new principal; a custom role for another key.
        with key_client(hsm, name, user.credential(hsm)) as kc:
            with pytest.raises(HttpResponseError) as e:
                kc.create_rsa_key("k1", size=2048)
            assert e.value.status_code == 403
        a = ac.create_role_assignment("/keys/k1", roles["Managed HSM Crypto User"].id, user.object_id,
                                      name=str(uuid.uuid4()))
        assert a.properties.scope == "/keys/k1"
        assert [x.name for x in ac.list_role_assignments("/keys/k1")].count(a.name) == 1
        with key_client(hsm, name, user.credential(hsm)) as kc:
            k1 = kc.create_rsa_key("k1", size=2048)
            digest = hashlib.sha256(b"local rbac").digest()
            with CryptographyClient(k1.id, user.credential(hsm), verify_challenge_resource=False,
                                    **CLIENT_KWARGS) as cc:
                verify_rs256(k1.key, digest, cc.sign(SignatureAlgorithm.rs256, digest).signature)
            with pytest.raises(HttpResponseError) as e:
                kc.create_rsa_key("k2", size=2048)
            assert e.value.status_code == 403
            # Crypto User cannot purge, nor grant itself more.
            with pytest.raises(HttpResponseError):
                kc.purge_deleted_key("k1")
        with KeyVaultAccessControlClient(url, user.credential(hsm), verify_challenge_resource=False,
                                         **CLIENT_KWARGS) as as_user:
            with pytest.raises(HttpResponseError) as e:
                as_user.create_role_assignment("/", ADMINISTRATOR, user.object_id)
            assert e.value.status_code == 403
        # Custom roles are the pool's: made at / only, with managed HSM data
        # actions only, under a name no other role has.
        for scope, perms, name_ in [
                (KeyVaultRoleScope.KEYS, [KeyVaultDataAction.READ_HSM_KEY], "at /keys"),
                (KeyVaultRoleScope.GLOBAL, ["Microsoft.KeyVault/vaults/secrets/getSecret/action"], "vault action"),
                (KeyVaultRoleScope.GLOBAL, [KeyVaultDataAction.READ_HSM_KEY], "Managed HSM Crypto User")]:
            with pytest.raises(HttpResponseError) as e:
                ac.set_role_definition(scope, role_name=name_, permissions=[KeyVaultPermission(data_actions=perms)])
            assert e.value.status_code in (400, 409), (name_, e.value.message)
        custom = ac.set_role_definition(KeyVaultRoleScope.GLOBAL, role_name="sign only", permissions=[
            KeyVaultPermission(data_actions=[KeyVaultDataAction.SIGN_HSM_KEY, KeyVaultDataAction.READ_HSM_KEY])])
        assert custom.role_type == "CustomRole"
        ac.create_role_assignment("/keys/k1", custom.id, user.object_id)
        with pytest.raises(HttpResponseError) as e:
            ac.delete_role_definition(KeyVaultRoleScope.GLOBAL, custom.name)
        assert e.value.status_code == 400
        ac.delete_role_assignment("/keys/k1", a.name)
        assert a.name not in [x.name for x in ac.list_role_assignments("/keys/k1")]
        with key_client(hsm, name, user.credential(hsm)) as kc:
            # Still signs through the custom role; may not create any more.
            kc.get_key("k1")
            with pytest.raises(HttpResponseError) as e:
                kc.create_rsa_key("k1", size=2048)
            assert e.value.status_code == 403


def test_settings_are_the_pools_own(hsm):
    name = create_pool(hsm).name
    activate(hsm, name)
    with KeyVaultSettingsClient(pool_url(hsm, name), hsm.credential(), verify_challenge_resource=False,
                                **CLIENT_KWARGS) as sc:
        settings = {s.name: s for s in sc.list_settings()}
        s = settings["AllowKeyManagementOperationsThroughARM"]
        assert s.value == "false" and s.setting_type == "boolean"
        s = sc.update_setting(KeyVaultSetting(name="AllowKeyManagementOperationsThroughARM", value=True))
        assert s.value == "true" and sc.get_setting("AllowKeyManagementOperationsThroughARM").value == "true"
    r = pool_request(hsm, name, "PATCH", "/settings/AllowKeyManagementOperationsThroughARM", pool_token(hsm),
                     api_version="7.4", json={"value": "True"})
    assert r.status_code == 400, r.text
    r = pool_request(hsm, name, "GET", "/settings/NoSuchSetting", pool_token(hsm), api_version="7.4")
    assert r.status_code == 404, r.text


def test_oct_hsm_keys_encrypt_and_wrap_exactly_as_aes_does(hsm):
    """A known AES key imported into the pool: what the pool encrypts,
    pyca/cryptography decrypts with that key, and the reverse, in GCM, CBC,
    CBCPAD and key wrap; the key's value is never returned."""
    import os
    from azure.keyvault.keys import JsonWebKey
    from azure.keyvault.keys.crypto import EncryptionAlgorithm
    from cryptography.hazmat.primitives import padding as sympad
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

    name = create_pool(hsm).name
    activate(hsm, name)
    k = os.urandom(32)
    pt, aad = os.urandom(200), b"associated"
    with key_client(hsm, name) as kc:
        key = kc.import_key("aes", JsonWebKey(kty="oct-HSM", k=k, key_ops=["encrypt", "decrypt", "wrapKey",
                                                                              "unwrapKey"]))
        assert key.key_type == "oct-HSM" and key.key.k is None
        got = kc.get_key("aes")
        assert got.key.k is None and got.key.n is None
        with CryptographyClient(key.id, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as cc:
            r = cc.encrypt(EncryptionAlgorithm.a256_gcm, pt, additional_authenticated_data=aad)
            assert len(r.iv) == 12 and len(r.tag) == 16 and r.aad == aad
            assert AESGCM(k).decrypt(r.iv, r.ciphertext + r.tag, aad) == pt
            iv = os.urandom(12)
            sealed = AESGCM(k).encrypt(iv, pt, aad)
            back = cc.decrypt(EncryptionAlgorithm.a256_gcm, sealed[:-16], iv=iv, authentication_tag=sealed[-16:],
                              additional_authenticated_data=aad)
            assert back.plaintext == pt
            with pytest.raises(HttpResponseError) as e:
                cc.decrypt(EncryptionAlgorithm.a256_gcm, sealed[:-16], iv=iv,
                           authentication_tag=bytes(16), additional_authenticated_data=aad)
            assert e.value.status_code == 400
            # CBCPAD and KW: the SDK does these itself for an oct key it has
            # read (with a key of its own making when the service returns no
            # `k`, as Azure's does not), so they are asked of the pool directly.
            token = pool_token(hsm)

            def op(verb, body):
                r = pool_request(hsm, name, "POST", f"/keys/aes/{key.properties.version}/{verb}", token,
                                 api_version="7.6", json=body)
                assert r.status_code == 200, r.text
                return r.json()

            iv16 = os.urandom(16)
            r = op("encrypt", {"alg": "A256CBCPAD", "value": sdclient.b64u(pt), "iv": sdclient.b64u(iv16)})
            assert sdclient.b64u_dec(r["iv"]) == iv16 and r["kid"] == key.id
            padder = sympad.PKCS7(128).padder()
            enc = Cipher(algorithms.AES(k), modes.CBC(iv16)).encryptor()
            assert sdclient.b64u_dec(r["value"]) == enc.update(padder.update(pt) + padder.finalize()) + enc.finalize()
            back = op("decrypt", {"alg": "A256CBCPAD", "value": r["value"], "iv": sdclient.b64u(iv16)})
            assert sdclient.b64u_dec(back["value"]) == pt
            # A256CBC zero-pads to the block, as Azure's managed HSM does.
            r = op("encrypt", {"alg": "A256CBC", "value": sdclient.b64u(pt), "iv": sdclient.b64u(iv16)})
            assert len(sdclient.b64u_dec(r["value"])) == 208
            back = op("decrypt", {"alg": "A256CBC", "value": r["value"], "iv": sdclient.b64u(iv16)})
            assert sdclient.b64u_dec(back["value"]) == pt + bytes(8)
            cek = os.urandom(32)
            w = op("wrapkey", {"alg": "A256KW", "value": sdclient.b64u(cek)})
            assert sdclient.b64u_dec(w["value"]) == aes_key_wrap(k, cek)
            u = op("unwrapkey", {"alg": "A256KW", "value": sdclient.b64u(aes_key_wrap(k, cek))})
            assert sdclient.b64u_dec(u["value"]) == cek
            assert aes_key_unwrap(k, sdclient.b64u_dec(w["value"])) == cek
            # GCM with a caller's IV is refused (the pool makes GCM IVs).
            r = pool_request(hsm, name, "POST", f"/keys/aes/{key.properties.version}/encrypt", token,
                             api_version="7.6", json={"alg": "A256GCM", "value": sdclient.b64u(pt),
                                                      "iv": sdclient.b64u(os.urandom(12))})
            assert r.status_code == 400, r.text
            # An RSA algorithm on an AES key, a 128-bit algorithm on a 256-bit key: 400.
            for alg in (EncryptionAlgorithm.rsa_oaep_256, EncryptionAlgorithm.a128_gcm):
                with pytest.raises(HttpResponseError) as e:
                    cc.encrypt(alg, pt)
                assert e.value.status_code == 400
        made = kc.create_oct_key(unique("aes"), size=128, hardware_protected=True)
        assert made.key_type == "oct-HSM"
        assert sorted(made.key_operations) == ["decrypt", "encrypt", "unwrapKey", "wrapKey"]
        with CryptographyClient(made.id, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as cc:
            r = cc.encrypt(EncryptionAlgorithm.a128_gcm, pt)
            assert cc.decrypt(EncryptionAlgorithm.a128_gcm, r.ciphertext, iv=r.iv,
                              authentication_tag=r.tag).plaintext == pt
            rsa_key = kc.create_rsa_key(unique("rsa"), size=2048)
        with CryptographyClient(rsa_key.id, hsm.credential(), verify_challenge_resource=False,
                                **CLIENT_KWARGS) as cc:
            with pytest.raises(HttpResponseError) as e:
                cc.encrypt(EncryptionAlgorithm.a256_gcm, pt)
            assert e.value.status_code == 400
        # The backup of a generated AES key restores after a purge and
        # decrypts what it encrypted before.
        with CryptographyClient(made.id, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as cc:
            before = cc.encrypt(EncryptionAlgorithm.a128_gcm, pt)
        blob = kc.backup_key(made.name)
        kc.begin_delete_key(made.name).wait()
        # Purging needs Crypto Officer (Crypto User cannot).
        grant(hsm, name, CRYPTO_OFFICER, hsm.admin_oid)
        kc.purge_deleted_key(made.name)
        restored = kc.restore_key_backup(blob)
        with CryptographyClient(restored.id, hsm.credential(), verify_challenge_resource=False,
                                **CLIENT_KWARGS) as cc:
            assert cc.decrypt(EncryptionAlgorithm.a128_gcm, before.ciphertext, iv=before.iv,
                              authentication_tag=before.tag).plaintext == pt


def test_vaults_keep_no_symmetric_keys(hsm):
    from test_premium import make_vault
    vault = make_vault(hsm, "premium", rg=hsm.rg)
    with KeyClient(hsm.vault_url_for(vault), hsm.credential(), **CLIENT_KWARGS) as kc:
        with pytest.raises(HttpResponseError) as e:
            kc.create_oct_key(unique("aes"), size=256, hardware_protected=True)
        assert e.value.status_code == 400 and "Managed HSM" in e.value.message


# -- Full backup and restore to Blob storage (Azurite) -----------------------

@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    with azurite_container(tmp_path_factory.mktemp("azurite")) as a:
        yield a


def test_full_backup_to_blob_storage_restores_into_a_pool_with_the_same_domain(hsm, azurite):
    import os
    import re
    from azure.keyvault.administration import KeyVaultBackupClient
    from azure.keyvault.keys import JsonWebKey
    from azure.keyvault.keys.crypto import EncryptionAlgorithm
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    RESTORE_USER, BACKUP_USER = "6efe6056-5259-49d2-8b3d-d3d73544b20b", "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8"
    first = create_pool(hsm).name
    keys, blob = activate(hsm, first)
    for role in (CRYPTO_OFFICER, BACKUP_USER, RESTORE_USER):
        grant(hsm, first, role, hsm.admin_oid)
    k = os.urandom(32)
    pt = b"what the first pool encrypted"
    with key_client(hsm, first) as kc:
        aes = kc.import_key("aes1", JsonWebKey(kty="oct-HSM", k=k, key_ops=["encrypt", "decrypt"]))
        rsa_key = kc.create_rsa_key("rsa1", size=2048)
        kc.create_ec_key("ec1", curve="P-384")
    with CryptographyClient(aes.id, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as cc:
        sealed = cc.encrypt(EncryptionAlgorithm.a256_gcm, pt)
    url = pool_url(hsm, first)
    with KeyVaultBackupClient(url, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as bc:
        result = bc.begin_backup(azurite["container_url"], sas_token=azurite["sas"]).result()
        folder_url = result.folder_url
        assert re.fullmatch(re.escape(azurite["container_url"]) + rf"/mhsm-{first}-\d{{16}}", folder_url), folder_url
        folder = folder_url.rsplit("/", 1)[1]
        blobs = {b.name: azurite["container"].download_blob(b.name).readall()
                 for b in azurite["container"].list_blobs(name_starts_with=folder + "/")}
        assert set(blobs) == {f"{folder}/manifest", f"{folder}/key-0", f"{folder}/key-1", f"{folder}/key-2"}
        # What storage holds is sealed: no key name, no AES key value.
        for data in blobs.values():
            assert b"aes1" not in data and b"rsa1" not in data and k not in data
        # The AES key is purged; a selective restore brings it back, and it
        # decrypts what it encrypted before.
        with key_client(hsm, first) as kc:
            kc.begin_delete_key("aes1").wait()
            kc.purge_deleted_key("aes1")
        bc.begin_restore(folder_url, sas_token=azurite["sas"], key_name="aes1").wait()
        with CryptographyClient(aes.id, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as cc:
            assert cc.decrypt(EncryptionAlgorithm.a256_gcm, sealed.ciphertext, iv=sealed.iv,
                              authentication_tag=sealed.tag).plaintext == pt
        assert AESGCM(k).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, None) == pt
        # A full restore over existing keys leaves them as they are.
        token = pool_token(hsm)
        r = pool_request(hsm, first, "PUT", "/restore", token, api_version="7.6", json={
            "sasTokenParameters": {"storageResourceUri": azurite["container_url"], "token": azurite["sas"]},
            "folderToRestore": folder})
        # Answered as Azure answers a job, in progress; its status URL (polled
        # without an api-version) tells how it ended.
        assert r.status_code == 202 and r.json()["status"] == "InProgress", r.text
        # The job runs on its own task: polled (bounded) until it ends.
        for _ in range(300):
            status = requests.get(r.headers["azure-asyncoperation"], headers={"Authorization": f"Bearer {token}"},
                                  verify=hsm.ca_cert, timeout=HTTP_TIMEOUT)
            assert status.status_code == 200 and status.json()["jobId"] == r.json()["jobId"], status.text
            if status.json()["status"] != "InProgress":
                break
            time.sleep(0.1)
        assert status.json()["status"] == "Succeeded" and status.json()["endTime"], status.text
        assert "could not overwrite: 3" in status.json()["statusDetails"]
        # Storage the operator did not allow, and a managed identity, are refused.
        for body in ({"storageResourceUri": "https://evil.example/c", "token": "sig=x"},
                     {"storageResourceUri": azurite["container_url"], "useManagedIdentity": True}):
            r = pool_request(hsm, first, "POST", "/backup", token, api_version="7.6", json=body)
            assert r.status_code == 400, r.text
        assert "sig=" not in r.text
    # A pool with another domain cannot restore the backup.
    stranger = create_pool(hsm).name
    activate(hsm, stranger)
    grant(hsm, stranger, RESTORE_USER, hsm.admin_oid)
    with KeyVaultBackupClient(pool_url(hsm, stranger), hsm.credential(), verify_challenge_resource=False,
                              **CLIENT_KWARGS) as bc:
        with pytest.raises(HttpResponseError) as e:
            bc.begin_restore(folder_url, sas_token=azurite["sas"]).wait()
        assert "another security domain" in str(e.value)
    # A new pool holding the first's security domain restores every key.
    second = create_pool(hsm).name
    r = pool_request(hsm, second, "GET", "/securitydomain/upload", pool_token(hsm))
    import base64
    exchange = x509.load_der_x509_certificate(base64.b64decode(json.loads(r.json()["transfer_key"])["x5c"][0]))
    items = sdclient.open_download(blob, [keys[0], keys[1]])
    r = pool_request(hsm, second, "POST", "/securitydomain/upload", pool_token(hsm),
                     json={"value": sdclient.restore_blob(items, exchange)})
    assert r.status_code == 202, r.text
    for role in (CRYPTO_USER, RESTORE_USER):
        grant(hsm, second, role, hsm.admin_oid)
    with KeyVaultBackupClient(pool_url(hsm, second), hsm.credential(), verify_challenge_resource=False,
                              **CLIENT_KWARGS) as bc:
        bc.begin_restore(folder_url, sas_token=azurite["sas"]).wait()
    with key_client(hsm, second) as kc:
        assert sorted(p.name for p in kc.list_properties_of_keys()) == ["aes1", "ec1", "rsa1"]
        restored = kc.get_key("rsa1")
        assert restored.key.n == rsa_key.key.n
        moved = kc.get_key("aes1")
    with CryptographyClient(moved.id, hsm.credential(), verify_challenge_resource=False, **CLIENT_KWARGS) as cc:
        assert cc.decrypt(EncryptionAlgorithm.a256_gcm, sealed.ciphertext, iv=sealed.iv,
                          authentication_tag=sealed.tag).plaintext == pt


def test_jobs_run_on_their_own_two_at_a_time_and_report_how_they_end(hsm):
    """A restore from storage that does not answer stays InProgress after its
    202 (the job is not the request); a third job while two run is refused
    with 409; when storage goes away the two fail, their status says so, and
    a new job starts. A deleted pool is not purged under a running job."""
    import socket
    restore_user = "6efe6056-5259-49d2-8b3d-d3d73544b20b"
    name = create_pool(hsm).name
    activate(hsm, name)
    grant(hsm, name, restore_user, hsm.admin_oid)
    token = pool_token(hsm)

    def silent_storage():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        return s, {"sasTokenParameters": {"storageResourceUri": f"http://127.0.0.1:{s.getsockname()[1]}/backups",
                                          "token": "sv=2021-08-06&sig=x"}, "folderToRestore": f"mhsm-{name}-2026"}

    def status(r):
        return requests.get(r.headers["azure-asyncoperation"], headers={"Authorization": f"Bearer {token}"},
                            verify=hsm.ca_cert, timeout=HTTP_TIMEOUT)

    silent, body = silent_storage()
    try:
        started = [pool_request(hsm, name, "PUT", "/restore", token, api_version="7.6", json=body) for _ in range(2)]
        for r in started:
            assert r.status_code == 202 and r.json()["status"] == "InProgress", r.text
        for r in started:
            s = status(r)
            assert s.status_code == 200 and s.json()["status"] == "InProgress" and s.json()["endTime"] is None, s.text
        third = pool_request(hsm, name, "PUT", "/restore", token, api_version="7.6", json=body)
        assert third.status_code == 409 and third.json()["error"]["code"] == "Conflict", third.text
    finally:
        silent.close()  # the queued connections are reset
    for r in started:
        for _ in range(900):
            s = status(r)
            if s.json()["status"] != "InProgress":
                break
            time.sleep(0.1)
        assert s.json()["status"] == "Failed" and s.json()["error"]["message"] and s.json()["endTime"], s.text
    again = pool_request(hsm, name, "PUT", "/restore", token, api_version="7.6", json=body)
    assert again.status_code == 202, again.text

    # Deleted while a job runs: the purge waits for the job's end.
    silent, body = silent_storage()
    try:
        r = pool_request(hsm, name, "PUT", "/restore", token, api_version="7.6", json=body)
        assert r.status_code == 202, r.text
        with mgmt(hsm) as m:
            m.managed_hsms.begin_delete(hsm.rg, name, polling_interval=0).result()
            with pytest.raises(HttpResponseError) as e:
                m.managed_hsms.begin_purge_deleted(name, "westeurope", polling_interval=0).result()
            assert e.value.status_code == 409 and "running a backup or restore job" in str(e.value), e.value
    finally:
        silent.close()
    with mgmt(hsm) as m:
        for _ in range(300):
            try:
                m.managed_hsms.begin_purge_deleted(name, "westeurope", polling_interval=0).result()
                break
            except HttpResponseError as e:
                assert e.status_code == 409, e
                time.sleep(0.1)
        else:
            raise AssertionError("the pool was not purged after its job ended")
        assert name not in {p.name for p in m.managed_hsms.list_deleted()}
