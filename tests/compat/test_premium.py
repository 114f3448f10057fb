"""Premium tier: RSA-HSM and EC-HSM keys in a SoftHSM2 token (Debian's
softhsm2, a token initialised in a temp dir, its backup wrapping key made
with `keyhaven hsm init`). A premium vault is created through
azure-mgmt-keyvault, its keys are used through azure-keyvault-keys and every
result is checked with pyca/cryptography; the token is inspected with
pkcs11-tool (opensc). Runs on both stores."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from khcompat import CLIENT_KWARGS, KEYHAVEN_BIN, KeyhavenServer, running_server, unique

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN, SO_PIN = "4711-user-pin", "0815-so-pin"
HOME, OTHER = "kh-premium", "kh-other"
CURVES = {"P-256": (ec.SECP256R1(), hashlib.sha256, "ES256"), "P-384": (ec.SECP384R1(), hashlib.sha384, "ES384"),
          "P-521": (ec.SECP521R1(), hashlib.sha512, "ES512"), "P-256K": (ec.SECP256K1(), hashlib.sha256, "ES256K")}


class HsmServer(KeyhavenServer):
    token = HOME
    pin_file: Path

    def command(self):
        return super().command() + ["--pkcs11-module", MODULE, "--pkcs11-token-label", self.token,
                                    "--pkcs11-pin-file", str(self.pin_file)]


def softhsm_tokens(root: Path) -> Path:
    """Two tokens, each with its own backup wrapping key; returns the conf."""
    assert Path(MODULE).exists(), "softhsm2 is not installed (apt-get install softhsm2); scripts/test installs it"
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "KEYHAVEN_PKCS11_SO_PIN": SO_PIN}
    for label in (HOME, OTHER):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", PIN],
                       env=env, check=True, capture_output=True, timeout=30)
    for label in (HOME, OTHER):
        out = subprocess.run([KEYHAVEN_BIN, "hsm", "init", "--pkcs11-module", MODULE, "--pkcs11-token-label", label],
                             env=env, check=True, capture_output=True, text=True, timeout=30)
        assert "created the backup wrapping key" in out.stdout
    again = subprocess.run([KEYHAVEN_BIN, "hsm", "init", "--pkcs11-module", MODULE, "--pkcs11-token-label", HOME],
                           env=env, check=True, capture_output=True, text=True, timeout=30)
    assert "already has" in again.stdout
    return conf


@contextlib.contextmanager
def hsm_environment(root: Path):
    """Tokens under `root`, SOFTHSM2_CONF pointing at them and a PIN file for
    the servers this block starts; the environment is restored afterwards
    (the CA variables are set once a server is up)."""
    conf = softhsm_tokens(root / "softhsm")
    saved = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin_file = root / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    HsmServer.pin_file = pin_file
    try:
        yield conf
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def trust(srv) -> None:
    os.environ["REQUESTS_CA_BUNDLE"] = srv.ca_cert
    os.environ["SSL_CERT_FILE"] = srv.ca_cert


def token_objects(conf: Path, label: str = HOME) -> str:
    """What pkcs11-tool, logged in with the user PIN, lists of private keys."""
    out = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", label, "--login", "--pin", PIN,
                          "--list-objects", "--type", "privkey"],
                         env={**os.environ, "SOFTHSM2_CONF": str(conf)}, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def object_block(listing: str, label: str) -> str:
    blocks = listing.split("Private Key Object")
    hits = [b for b in blocks if f"label:      {label}\n" in b]
    assert len(hits) == 1, listing
    return hits[0]


@pytest.fixture(scope="module")
def hsm(store_kind, tmp_path_factory):
    """A server with the HSM attached and a premium vault on it."""
    root = tmp_path_factory.mktemp(f"hsm-{store_kind}")
    with hsm_environment(root) as conf, running_server(HsmServer, store_kind, root / "server") as srv:
        trust(srv)
        srv.softhsm_conf = conf
        srv.premium = make_vault(srv, "premium")
        srv.standard = make_vault(srv, "standard")
        yield srv


def mgmt_kwargs(srv) -> dict:
    return dict(base_url=srv.management_url, credential_scopes=[srv.management_scope], **CLIENT_KWARGS)


def make_vault(srv, sku: str, rg: str = "") -> str:
    from azure.mgmt.keyvault import KeyVaultManagementClient
    from azure.mgmt.resource import ResourceManagementClient
    kw = mgmt_kwargs(srv)
    rg = rg or unique("rg")
    with ResourceManagementClient(srv.credential(), srv.subscription_id, **kw) as resources:
        resources.resource_groups.create_or_update(rg, {"location": "westeurope"})
    name = unique(sku[:4])[:24]
    with KeyVaultManagementClient(srv.credential(), srv.subscription_id, **kw) as mgmt:
        v = mgmt.vaults.begin_create_or_update(rg, name, {"location": "westeurope", "properties": {
            "tenantId": srv.tenant_id, "sku": {"family": "A", "name": sku}, "enableRbacAuthorization": True}},
            polling_interval=0).result()
    assert v.properties.sku.name == sku
    return name


@pytest.fixture(scope="module")
def keys(hsm):
    c = KeyClient(hsm.vault_url_for(hsm.premium), hsm.credential(), **CLIENT_KWARGS)
    yield c
    c.close()


def crypto(hsm, key_id):
    return CryptographyClient(key_id, hsm.credential(), **CLIENT_KWARGS)


def rsa_public(jwk):
    return rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")).public_key()


def verify_rsa(jwk, alg: str, digest: bytes, signature: bytes):
    bits = int(alg[2:])
    chosen = {256: hashes.SHA256(), 384: hashes.SHA384(), 512: hashes.SHA512()}[bits]
    pad = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(padding.MGF1(chosen), chosen.digest_size)
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    rsa_public(jwk).verify(signature, digest, pad, Prehashed(chosen))


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_hsm_signatures_verify_independently(hsm, keys, alg):
    key = keys.create_rsa_key(unique("hsm"), size=2048, hardware_protected=True)
    assert key.key_type == "RSA-HSM" and len(key.key.n) == 256
    bits = int(alg[2:])
    digest = getattr(hashlib, f"sha{bits}")(b"signed inside the HSM").digest()
    result = crypto(hsm, key.id).sign(SignatureAlgorithm(alg), digest)
    verify_rsa(key.key, alg, digest, result.signature)
    assert crypto(hsm, key.id).verify(SignatureAlgorithm(alg), digest, result.signature).is_valid


@pytest.mark.parametrize("crv", list(CURVES))
def test_ec_hsm_signatures_verify_independently(hsm, keys, crv):
    key = keys.create_ec_key(unique("hsm"), curve=crv, hardware_protected=True)
    assert key.key_type == "EC-HSM" and key.key.crv == crv
    curve, h, alg = CURVES[crv]
    digest = h(b"signed inside the HSM").digest()
    sig = crypto(hsm, key.id).sign(SignatureAlgorithm(alg), digest).signature
    half = len(sig) // 2
    assert half == len(key.key.x)
    der = encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
    public = ec.EllipticCurvePublicNumbers(int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"),
                                           curve).public_key()
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    chosen = {hashlib.sha256: hashes.SHA256(), hashlib.sha384: hashes.SHA384(), hashlib.sha512: hashes.SHA512()}[h]
    public.verify(der, digest, ec.ECDSA(Prehashed(chosen)))


def test_rsa_hsm_decrypts_and_unwraps_what_pyca_encrypted(hsm, keys):
    key = keys.create_rsa_key(unique("hsm"), size=2048, hardware_protected=True)
    public = rsa_public(key.key)
    cek = os.urandom(32)
    c = crypto(hsm, key.id)
    cases = [(EncryptionAlgorithm.rsa_oaep, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
             (EncryptionAlgorithm.rsa_oaep_256, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)),
             (EncryptionAlgorithm.rsa1_5, padding.PKCS1v15())]
    for alg, pad in cases:
        assert c.decrypt(alg, public.encrypt(cek, pad)).plaintext == cek, alg
        assert c.unwrap_key(KeyWrapAlgorithm(alg.value), public.encrypt(cek, pad)).key == cek, alg
    # What the vault encrypts, pyca's private key cannot check, but the vault itself decrypts.
    wrapped = c.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, cek)
    assert c.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == cek
    with pytest.raises(HttpResponseError) as e:
        c.decrypt(EncryptionAlgorithm.rsa_oaep_256, b"\x01" * 256)
    assert e.value.status_code == 400


def test_a_standard_vault_refuses_hsm_keys(hsm):
    with KeyClient(hsm.vault_url_for(hsm.standard), hsm.credential(), **CLIENT_KWARGS) as std:
        with pytest.raises(HttpResponseError) as e:
            std.create_rsa_key(unique("hsm"), hardware_protected=True)
        assert e.value.status_code == 403 and "standard vault" in e.value.message
        assert std.create_rsa_key(unique("sw")).key_type == "RSA", "software keys still work there"


def test_the_private_key_lives_in_the_token_and_is_not_extractable(hsm, keys):
    name = unique("hsm")
    key = keys.create_rsa_key(name, size=2048, hardware_protected=True)
    block = object_block(token_objects(hsm.softhsm_conf), f"{hsm.premium}/{name}")
    assert "RSA" in block and "sensitive" in block.split("Access:")[1], block
    assert "sign" in block.split("Usage:")[1]
    # pkcs11-tool cannot read the private key out of the token.
    out = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", HOME, "--login", "--pin", PIN,
                          "--read-object", "--type", "privkey", "--label", f"{hsm.premium}/{name}"],
                         env={**os.environ, "SOFTHSM2_CONF": str(hsm.softhsm_conf)},
                         capture_output=True, text=True, timeout=30)
    assert not out.stdout.strip().startswith("-----BEGIN") and b"\x02\x82" not in out.stdout.encode()
    # Nothing in the store holds the key: the vault's answers carry only the public half.
    assert not getattr(key.key, "d", None)


def test_rotation_import_and_purge_of_hsm_keys(hsm, keys):
    name = unique("hsm")
    first = keys.create_ec_key(name, curve="P-256", hardware_protected=True)
    rotated = keys.rotate_key(name)
    assert rotated.key_type == "EC-HSM" and rotated.key.x != first.key.x
    listing = token_objects(hsm.softhsm_conf)
    assert listing.count(f"label:      {hsm.premium}/{name}\n") == 2, "one token object per version"

    # BYOK: an imported key with Hsm=true goes into the token and signs as the original.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from azure.keyvault.keys import JsonWebKey
    n = private.private_numbers()
    big = lambda i, size=None: i.to_bytes(size or (i.bit_length() + 7) // 8, "big")
    jwk = JsonWebKey(kty="RSA", n=big(n.public_numbers.n), e=big(n.public_numbers.e), d=big(n.d), p=big(n.p),
                     q=big(n.q), dp=big(n.dmp1), dq=big(n.dmq1), qi=big(n.iqmp))
    imported_name = unique("byok")
    imported = keys.import_key(imported_name, jwk, hardware_protected=True)
    assert imported.key_type == "RSA-HSM"
    digest = hashlib.sha256(b"byok").digest()
    sig = crypto(hsm, imported.id).sign(SignatureAlgorithm.rs256, digest).signature
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    private.public_key().verify(sig, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    object_block(token_objects(hsm.softhsm_conf), f"{hsm.premium}/{imported_name}")

    # Delete keeps the token objects (the key can be recovered); purge destroys them.
    keys.begin_delete_key(name).wait()
    assert f"{hsm.premium}/{name}\n" in token_objects(hsm.softhsm_conf)
    keys.purge_deleted_key(name)
    assert f"{hsm.premium}/{name}\n" not in token_objects(hsm.softhsm_conf)


def test_hsm_key_backups_restore_only_where_the_wrapping_key_is(store_kind, tmp_path):
    """Backup, delete and purge an HSM key; the same deployment restarted on
    another token cannot restore it; back on its own token it can."""
    with hsm_environment(tmp_path) as conf, running_server(HsmServer, store_kind, tmp_path / "server") as srv:
        trust(srv)
        vault = make_vault(srv, "premium")
        url = srv.vault_url_for(vault)
        name = unique("hsm")
        with KeyClient(url, srv.credential(), **CLIENT_KWARGS) as kc:
            key = kc.create_rsa_key(name, size=2048, hardware_protected=True)
            blob = kc.backup_key(name)
            assert b"PRIVATE KEY" not in blob and len(blob) > 256
            kc.begin_delete_key(name).wait()
            kc.purge_deleted_key(name)
        assert f"{vault}/{name}\n" not in token_objects(conf)

        srv.stop()
        HsmServer.token = OTHER
        try:
            srv.start()
            with KeyClient(url, srv.credential(), **CLIENT_KWARGS) as kc:
                with pytest.raises(HttpResponseError) as e:
                    kc.restore_key_backup(blob)
                assert e.value.status_code == 400 and "only the HSM" in e.value.message
                assert name not in {k.name for k in kc.list_properties_of_keys()}
            assert f"{vault}/{name}\n" not in token_objects(conf, OTHER)
        finally:
            srv.stop()
            HsmServer.token = HOME
        srv.start()
        with KeyClient(url, srv.credential(), **CLIENT_KWARGS) as kc:
            restored = kc.restore_key_backup(blob)
            assert restored.key_type == "RSA-HSM" and restored.key.n == key.key.n
            digest = hashlib.sha256(b"restored").digest()
            sig = crypto(srv, restored.id).sign(SignatureAlgorithm.ps256, digest).signature
            verify_rsa(key.key, "PS256", digest, sig)
        object_block(token_objects(conf), f"{vault}/{name}")


def test_purging_a_premium_vault_destroys_its_token_objects(hsm):
    from azure.mgmt.keyvault import KeyVaultManagementClient
    rg = unique("rg")
    vault = make_vault(hsm, "premium", rg)
    with KeyClient(hsm.vault_url_for(vault), hsm.credential(), **CLIENT_KWARGS) as kc:
        live, deleted = unique("live"), unique("gone")
        kc.create_rsa_key(live, hardware_protected=True)
        kc.create_ec_key(deleted, hardware_protected=True)
        kc.begin_delete_key(deleted).wait()
    listing = token_objects(hsm.softhsm_conf)
    assert f"{vault}/{live}\n" in listing and f"{vault}/{deleted}\n" in listing
    with KeyVaultManagementClient(hsm.credential(), hsm.subscription_id, **mgmt_kwargs(hsm)) as mgmt:
        mgmt.vaults.delete(rg, vault)
        assert f"{vault}/{live}\n" in token_objects(hsm.softhsm_conf), "a deleted vault can be recovered"
        mgmt.vaults.begin_purge_deleted(vault, "westeurope", polling_interval=0).result()
    listing = token_objects(hsm.softhsm_conf)
    assert f"{vault}/" not in listing, listing


def test_concurrent_restores_of_one_backup_leave_one_set_of_token_objects(hsm, keys):
    """Each restore takes the backup's versions into the token before its
    commit; the restores that lose the race for the name (409) destroy what
    they took in, so the token holds exactly the winner's objects."""
    import base64
    import concurrent.futures
    import threading
    import requests
    from khcompat import HTTP_TIMEOUT
    name = unique("race")
    keys.create_rsa_key(name, size=2048, hardware_protected=True)
    for _ in range(5):
        keys.rotate_key(name)
    blob = keys.backup_key(name)
    keys.begin_delete_key(name).wait()
    keys.purge_deleted_key(name)
    assert f"{hsm.premium}/{name}\n" not in token_objects(hsm.softhsm_conf)

    token = KeyhavenServer.token(hsm)  # HsmServer.token is the token label
    url = hsm.vault_url_for(hsm.premium).rstrip("/") + "/keys/restore?api-version=7.5"
    body = {"value": base64.urlsafe_b64encode(blob).decode().rstrip("=")}
    start = threading.Barrier(6, timeout=30)

    def restore(_):
        with requests.Session() as s:
            start.wait()
            return s.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, verify=hsm.ca_cert,
                          timeout=HTTP_TIMEOUT)

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(restore, range(6)))
    outcomes = [r.status_code for r in answers]
    # Each answer in full (a list's repr is cut short in pytest's report).
    assert outcomes.count(200) == 1 and outcomes.count(409) == 5, \
        "\n".join(f"{r.status_code} {r.headers.get('x-ms-request-id', '')} {r.text[:600]}" for r in answers)
    listing = token_objects(hsm.softhsm_conf)
    assert listing.count(f"label:      {hsm.premium}/{name}\n") == 6, listing
    sig = crypto(hsm, keys.get_key(name).id).sign(SignatureAlgorithm.rs256, hashlib.sha256(b"r").digest())
    assert sig.signature
