"""What the `_mhsm` variants of Microsoft's suites need from Keyhaven: a
server with a SoftHSM2 token (the managed HSM's keys live there), and a pool
that is activated (its security domain downloaded to throwaway
certificates) with the suites' principal as Administrator, Crypto User,
Crypto Officer, Backup User and Restore User at `/`."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "compat"))

import sdclient  # noqa: E402
from khcompat import KEYHAVEN_BIN, KeyhavenServer, bootstrap_object_id, management_token  # noqa: E402

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN, SO_PIN = "4711-upstream-pin", "0815-upstream-so"
POOL = "khupstream"
ROLES = {
    "Crypto User": "21dbd100-6940-42c2-9190-5d6cb909625b",
    "Crypto Officer": "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
    "Backup User": "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8",
    "Restore User": "6efe6056-5259-49d2-8b3d-d3d73544b20b",
}
_PIN_FILE: List[Path] = []


def tokens(root: Path, labels: List[str]) -> None:
    """Initialises one SoftHSM2 token per label under `root`, each with its
    backup wrapping key, and points SOFTHSM2_CONF at them (for every server
    started afterwards)."""
    assert Path(MODULE).exists(), "softhsm2 is not installed (apt-get install softhsm2)"
    (root / "tokens").mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    env = {**os.environ, "KEYHAVEN_PKCS11_SO_PIN": SO_PIN}
    for label in labels:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN,
                        "--pin", PIN], env=env, check=True, capture_output=True, timeout=30)
        subprocess.run([KEYHAVEN_BIN, "hsm", "init", "--pkcs11-module", MODULE, "--pkcs11-token-label", label],
                       env=env, check=True, capture_output=True, timeout=30)
    pin = root / "pin"
    pin.write_text(PIN + "\n")
    pin.chmod(0o600)
    _PIN_FILE[:] = [pin]


class PoolServer(KeyhavenServer):
    """A server with its own token of the shared token directory."""

    def __init__(self, *args, token: str, storage=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.token_label = token
        self.identity_file = None
        if storage:
            # The pool's managed identity may write the suite's container, as
            # an identity granted Storage Blob Data Contributor would.
            self.identity_file = Path(self.workdir) / "storage-identity"
            self.identity_file.write_text(f"{POOL} {storage['container_url']} {storage['sas']}\n")
            self.identity_file.chmod(0o600)

    def command(self):
        extra = ["--pkcs11-module", MODULE, "--pkcs11-token-label", self.token_label,
                 "--pkcs11-pin-file", str(_PIN_FILE[0]), "--backup-storage-allow", "127.0.0.1"]
        if self.identity_file:
            extra += ["--backup-storage-identity", str(self.identity_file)]
        return super().command() + extra


def _wrapping_certs(n: int = 3):
    out = []
    for i in range(n):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"upstream sd {i}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        out.append(x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    return out


def activated_pool(server: KeyhavenServer, work: Path) -> str:
    """Creates and activates the pool; returns its URL."""
    b = server.bootstrap
    oid = bootstrap_object_id(server)
    arm = (f"{b['management_url']}/subscriptions/{b['subscription_id']}/resourceGroups/{b['resource_group']}"
           f"/providers/Microsoft.KeyVault/managedHSMs/{POOL}")
    r = requests.put(arm, params={"api-version": "2026-02-01"},
                     headers={"Authorization": f"Bearer {management_token(server)}"},
                     json={"location": "westeurope", "sku": {"family": "B", "name": "Standard_B1"},
                           "properties": {"tenantId": b["tenant_id"], "initialAdminObjectIds": [oid],
                                          "softDeleteRetentionInDays": 7}},
                     verify=b["ca_cert"], timeout=60)
    assert r.status_code == 200, r.text
    url = r.json()["properties"]["hsmUri"].rstrip("/")
    resource = "https://" + url.split(".", 1)[1]
    tok = requests.post(server.token_url(), data={
        "grant_type": "client_credentials", "client_id": b["client_id"], "client_secret": b["client_secret"],
        "scope": f"{resource}/.default"}, verify=b["ca_cert"], timeout=60)
    assert tok.status_code == 200, tok.text
    headers = {"Authorization": f"Bearer {tok.json()['access_token']}"}
    r = requests.post(f"{url}/securitydomain/download", params={"api-version": "7.5"}, headers=headers,
                      json={"certificates": [sdclient.wrapping_jwk(c) for c in _wrapping_certs()], "required": 2},
                      verify=b["ca_cert"], timeout=60)
    assert r.status_code == 202, r.text
    for role, guid in ROLES.items():
        name = str(__import__("uuid").uuid4())
        r = requests.put(f"{url}/providers/Microsoft.Authorization/roleAssignments/{name}",
                         params={"api-version": "7.5"}, headers=headers,
                         json={"properties": {"principalId": oid, "roleDefinitionId": guid}},
                         verify=b["ca_cert"], timeout=60)
        assert r.status_code == 201, (role, r.text)
    return url
