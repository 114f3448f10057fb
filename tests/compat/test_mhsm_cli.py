"""The managed HSM lab, run with the Azure CLI (azure-cli 2.91.0, its own
venv; KEYHAVEN_AZ names its `az`) against a private Keyhaven with a SoftHSM2
token, once per store: create a pool with `az keyvault create --hsm-name`,
download its security domain to three certificates with quorum 2, make a
service principal Crypto User, create an oct-HSM key, encrypt with A256GCM
through the Python SDK as that principal, back the pool up to Azurite, purge
it, create a new pool, upload the security domain with two of the three
private keys, restore, and decrypt the earlier ciphertext — then what must
fail does. The steps share one server and one CLI profile per store; a step
that needs an earlier step's result fails (never skips) when that step did
not complete.

One deviation from the issue's wording: the backup is addressed with
`--storage-resource-uri` (Azurite's path-style URL) rather than
`--storage-account-name`/`--blob-container-name`, which build an
`https://{account}.blob.{suffix}` URL that a loopback emulator does not
serve."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path
from typing import Dict

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from azurite import azurite_container
from khcompat import CLIENT_KWARGS, KEYHAVEN_BIN, bootstrap_object_id, module_server, new_principal, unique
from test_azure_cli import AZ, AZ_TIMEOUT, Az
from test_premium import HsmServer, hsm_environment

RG, LOC = "rg-mhsm-lab", "eastus"
PT = b"sealed by the first managed HSM, opened by the second"


class LabPoolServer(HsmServer):
    def command(self):
        return super().command() + ["--backup-storage-allow", "127.0.0.1"]


class Lab:
    def __init__(self, server, az: Az, workdir: Path, storage: Dict):
        self.server, self.az, self.workdir, self.storage = server, az, workdir, storage
        self.facts: Dict[str, str] = {}

    def fact(self, name: str) -> str:
        if name not in self.facts:
            pytest.fail(f"an earlier lab step did not complete (no {name!r})", pytrace=False)
        return self.facts[name]

    def hsm_url(self, name: str) -> str:
        return f"https://{name}.managedhsm.localhost:{self.server.port}"


@pytest.fixture(scope="module")
def lab(store_kind, tmp_path_factory):
    if not AZ or not os.access(AZ, os.X_OK):
        pytest.fail(f"the Azure CLI was not found at KEYHAVEN_AZ={AZ!r}; run through scripts/compat",
                    pytrace=False)
    work = tmp_path_factory.mktemp(f"mhsm-lab-{store_kind}")
    with hsm_environment(work), module_server(LabPoolServer, store_kind, work / "server") as srv, \
            azurite_container(work) as storage:
        az = Az(srv, work / "azure")
        proc = subprocess.run([KEYHAVEN_BIN, "cloud", "--run", "--data-dir", str(srv.data_dir)], env=az.env,
                              capture_output=True, text=True, timeout=AZ_TIMEOUT, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        yield Lab(srv, az, work, storage)


def wrapping_keys(directory: Path, n: int = 3):
    """cN.cer (PEM certificate) and cN.pem (its private key), as
    `openssl req -newkey rsa:2048 -x509` makes them."""
    paths = []
    for i in range(1, n + 1):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"security domain key {i}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
        (directory / f"c{i}.cer").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"c{i}.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                                serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
        paths.append(directory / f"c{i}")
    return paths


def test_administrator_creates_a_managed_hsm_with_the_cli(lab):
    s = lab.server
    lab.az.json("login", "--service-principal", "--username", s.client_id, f"--password={s.client_secret}",
                "--tenant", s.tenant_id)
    me = bootstrap_object_id(s)
    lab.az.run("group", "create", "--name", RG, "--location", LOC)
    name = unique("labhsm")[:24]
    assert lab.az.json("keyvault", "check-name", "--name", name, "--resource-type", "hsm")["nameAvailable"]
    hsm = lab.az.json("keyvault", "create", "--hsm-name", name, "--resource-group", RG, "--location", LOC,
                      "--administrators", me, "--retention-days", "7")
    assert hsm["name"] == name and hsm["properties"]["hsmUri"] == lab.hsm_url(name) + "/"
    assert hsm["properties"]["securityDomainProperties"]["activationStatus"] == "NotActivated"
    listed = lab.az.json("keyvault", "list", "--resource-type", "hsm", "--resource-group", RG)
    assert [h["name"] for h in listed] == [name]
    # Not activated: no key can be made yet.
    err = lab.az.fails("keyvault", "key", "create", "--hsm-name", name, "--name", "early", "--kty", "oct-HSM",
                       "--size", "256")
    assert "not activated" in err, err
    lab.facts.update(me=me, first=name)


def test_security_domain_download_with_three_keys_and_quorum_two(lab):
    name = lab.fact("first")
    keys = wrapping_keys(lab.workdir)
    certs = [f"{k}.cer" for k in keys]
    sd = lab.workdir / "sd.json"
    # A quorum above the number of keys is refused by the HSM, and nothing is written.
    err = lab.az.fails("keyvault", "security-domain", "download", "--hsm-name", name, "--sd-wrapping-keys",
                       *certs, "--sd-quorum", "4", "--security-domain-file", str(sd))
    assert "quorum" in err, err
    assert not sd.exists()
    out = lab.az.json("keyvault", "security-domain", "download", "--hsm-name", name, "--sd-wrapping-keys",
                      *certs, "--sd-quorum", "2", "--security-domain-file", str(sd))
    assert out["status"] == "Success", out
    blob = json.loads(sd.read_text())
    assert blob["SharedKeys"]["required"] == 2 and len(blob["SharedKeys"]["enc_shares"]) == 3
    hsm = lab.az.json("keyvault", "show", "--hsm-name", name)
    assert hsm["properties"]["securityDomainProperties"]["activationStatus"] == "Active"
    lab.facts.update(sd=str(sd), keys=json.dumps([str(k) for k in keys]))


def test_crypto_user_for_a_service_principal_and_an_oct_hsm_key(lab):
    name = lab.fact("first")
    sp = new_principal(lab.server, prefix="mhsmapp")
    roles = lab.az.json("keyvault", "role", "definition", "list", "--hsm-name", name)
    assert "Managed HSM Crypto User" in [r["roleName"] for r in roles]
    lab.az.json("keyvault", "role", "assignment", "create", "--hsm-name", name, "--role",
                "Managed HSM Crypto User", "--assignee-object-id", sp.object_id, "--scope", "/keys")
    lab.az.json("keyvault", "role", "assignment", "create", "--hsm-name", name, "--role",
                "Managed HSM Crypto Officer", "--assignee-object-id", lab.fact("me"), "--scope", "/")
    lab.az.json("keyvault", "role", "assignment", "create", "--hsm-name", name, "--role",
                "Managed HSM Crypto User", "--assignee-object-id", lab.fact("me"), "--scope", "/")
    listed = lab.az.json("keyvault", "role", "assignment", "list", "--hsm-name", name, "--scope", "/keys")
    assert sp.object_id in [a["principalId"] for a in listed], listed
    key = lab.az.json("keyvault", "key", "create", "--hsm-name", name, "--name", "labaes", "--kty", "oct-HSM",
                      "--size", "256", "--ops", "encrypt", "decrypt")
    assert key["key"]["kty"] == "oct-HSM" and key["key"].get("k") is None
    rsa_key = lab.az.json("keyvault", "key", "create", "--hsm-name", name, "--name", "labrsa", "--kty",
                          "RSA-HSM", "--size", "2048")
    assert rsa_key["key"]["kty"] == "RSA-HSM"
    # As the principal, through the SDK: A256GCM with the oct-HSM key; an
    # AES algorithm on the RSA key, and a purge (not Crypto User's), fail.
    from azure.core.exceptions import HttpResponseError
    from azure.keyvault.keys import KeyClient
    from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm
    cred = sp.credential(lab.server)
    with CryptographyClient(key["key"]["kid"], cred, verify_challenge_resource=False, **CLIENT_KWARGS) as cc:
        r = cc.encrypt(EncryptionAlgorithm.a256_gcm, PT, additional_authenticated_data=b"lab")
    with CryptographyClient(rsa_key["key"]["kid"], cred, verify_challenge_resource=False,
                            **CLIENT_KWARGS) as cc:
        with pytest.raises(HttpResponseError) as e:
            cc.encrypt(EncryptionAlgorithm.a256_gcm, PT)
        assert e.value.status_code == 400
    with KeyClient(lab.hsm_url(name), cred, verify_challenge_resource=False, **CLIENT_KWARGS) as kc:
        with pytest.raises(HttpResponseError) as e:
            kc.purge_deleted_key("labrsa")
        assert e.value.status_code == 403 and e.value.error.code == "AccessDenied"
    lab.facts.update(sp=json.dumps([sp.app_id, sp.secret, sp.object_id]), kid=key["key"]["kid"],
                     ct=r.ciphertext.hex(), iv=r.iv.hex(), tag=r.tag.hex())


def test_backup_to_azurite_then_purge_the_hsm(lab):
    name = lab.fact("first")
    st = lab.storage
    out = lab.az.json("keyvault", "backup", "start", "--hsm-name", name, "--storage-resource-uri",
                      st["container_url"], "--storage-container-SAS-token", st["sas"])
    folder_url = out["folderUrl"]
    assert folder_url.startswith(st["container_url"] + f"/mhsm-{name}-"), out
    folder = folder_url.rsplit("/", 1)[1]
    blobs = [b.name for b in st["container"].list_blobs(name_starts_with=folder + "/")]
    assert f"{folder}/manifest" in blobs and len(blobs) == 3, blobs
    lab.az.run("keyvault", "delete", "--hsm-name", name, "--resource-group", RG)
    deleted = lab.az.json("keyvault", "list-deleted", "--resource-type", "hsm")
    assert name in [d["name"] for d in deleted]
    lab.az.run("keyvault", "purge", "--hsm-name", name, "--location", LOC)
    assert name not in [d["name"] for d in lab.az.json("keyvault", "list-deleted", "--resource-type", "hsm")]
    lab.facts["folder"] = folder


def test_new_hsm_takes_the_security_domain_with_two_of_three_keys(lab):
    keys = json.loads(lab.fact("keys"))
    sd = lab.fact("sd")
    name = unique("labhsm2")[:24]
    lab.az.json("keyvault", "create", "--hsm-name", name, "--resource-group", RG, "--location", LOC,
                "--administrators", lab.fact("me"), "--retention-days", "7")
    exchange = lab.workdir / "exchange.cer"
    lab.az.run("keyvault", "security-domain", "init-recovery", "--hsm-name", name, "--sd-exchange-key",
               str(exchange))
    assert exchange.read_text().startswith("-----BEGIN CERTIFICATE-----")
    # One key of a quorum of two: the CLI cannot recombine the domain.
    err = lab.az.fails("keyvault", "security-domain", "upload", "--hsm-name", name, "--sd-file", sd,
                       "--sd-exchange-key", str(exchange), "--sd-wrapping-keys", f"{keys[1]}.pem")
    assert "should not less than 2" in err, err
    # A tampered restore blob is refused by the HSM.
    blob_path = lab.workdir / "restore_blob.json"
    lab.az.run("keyvault", "security-domain", "restore-blob", "--sd-file", sd, "--sd-exchange-key",
               str(exchange), "--sd-wrapping-keys", f"{keys[0]}.pem", f"{keys[2]}.pem", "--sd-file-restore-blob",
               str(blob_path))
    restore_blob = json.loads(blob_path.read_text())
    jwe = restore_blob["EncData"]["data"][0]["compact_jwe"].split(".")
    jwe[3] = ("A" if jwe[3][0] != "A" else "B") + jwe[3][1:]
    tampered = dict(restore_blob)
    tampered["EncData"] = {**restore_blob["EncData"],
                           "data": [{**restore_blob["EncData"]["data"][0], "compact_jwe": ".".join(jwe)}]}
    bad_path = lab.workdir / "tampered_blob.json"
    bad_path.write_text(json.dumps(tampered))
    err = lab.az.fails("keyvault", "security-domain", "upload", "--hsm-name", name, "--sd-file", str(bad_path),
                       "--restore-blob")
    assert "altered" in err or "authenticate" in err, err
    out = lab.az.json("keyvault", "security-domain", "upload", "--hsm-name", name, "--sd-file", sd,
                      "--sd-exchange-key", str(exchange), "--sd-wrapping-keys", f"{keys[0]}.pem",
                      f"{keys[2]}.pem")
    assert out["status"] == "Success", out
    hsm = lab.az.json("keyvault", "show", "--hsm-name", name)
    assert hsm["properties"]["securityDomainProperties"]["activationStatus"] == "Active"
    lab.facts["second"] = name


def test_restore_into_the_new_hsm_and_decrypt_the_earlier_ciphertext(lab):
    name = lab.fact("second")
    st = lab.storage
    lab.az.run("keyvault", "restore", "start", "--hsm-name", name, "--storage-resource-uri", st["container_url"],
               "--storage-container-SAS-token", st["sas"], "--backup-folder", lab.fact("folder"))
    # (The administrator of the new pool holds no key actions until granted.)
    lab.az.json("keyvault", "role", "assignment", "create", "--hsm-name", name, "--role",
                "Managed HSM Crypto Auditor", "--assignee-object-id", lab.fact("me"), "--scope", "/")
    names = sorted(k["name"] for k in lab.az.json("keyvault", "key", "list", "--hsm-name", name))
    assert names == ["labaes", "labrsa"], names
    app_id, secret, oid = json.loads(lab.fact("sp"))
    lab.az.json("keyvault", "role", "assignment", "create", "--hsm-name", name, "--role",
                "Managed HSM Crypto User", "--assignee-object-id", oid, "--scope", "/keys/labaes")
    from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm
    from khcompat import app_secret_credential
    kid = lab.fact("kid").replace(lab.fact("first"), name)
    with CryptographyClient(kid, app_secret_credential(lab.server, app_id, secret), verify_challenge_resource=False,
                            **CLIENT_KWARGS) as cc:
        got = cc.decrypt(EncryptionAlgorithm.a256_gcm, bytes.fromhex(lab.fact("ct")), iv=bytes.fromhex(lab.fact("iv")),
                         authentication_tag=bytes.fromhex(lab.fact("tag")), additional_authenticated_data=b"lab")
    assert got.plaintext == PT
