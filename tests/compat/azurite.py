"""Azurite, Microsoft's Blob storage emulator (npm `azurite`, pinned in
tests/js and installed by scripts/compat), on a loopback port, with one
container and a SAS token for it: where managed HSM backups go in tests."""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import time
from pathlib import Path

from khcompat import free_port

ACCOUNT = "devstoreaccount1"
# Azurite's documented, well-known development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@contextlib.contextmanager
def azurite_container(work: Path, container: str = "mhsm-backups"):
    """Yields {container_url, sas, container (a ContainerClient)}; stops
    Azurite however the block ends."""
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    js = os.environ.get("KEYHAVEN_JS_DIR", "")
    binary = Path(js) / "node_modules" / ".bin" / "azurite-blob"
    assert binary.exists(), "Azurite is not installed: run through scripts/compat (npm ci in tests/js)"
    port = free_port()
    log_path = work / "azurite.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                             str(work / "data"), "--skipApiVersionCheck", "--disableTelemetry"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
        svc = BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={endpoint};")
        svc.create_container(container)
        sas = generate_container_sas(ACCOUNT, container, account_key=KEY,
                                     permission=ContainerSasPermissions(read=True, write=True, list=True,
                                                                        create=True),
                                     expiry=datetime.datetime.now(datetime.timezone.utc)
                                     + datetime.timedelta(hours=2))
        yield {"container_url": f"{endpoint}/{container}", "sas": sas,
               "container": svc.get_container_client(container)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
