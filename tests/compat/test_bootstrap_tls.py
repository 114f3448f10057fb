"""bootstrap.json and the TLS setup, as an application on a current Python
(3.13+, whose ssl defaults to VERIFY_X509_STRICT) would meet them."""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
from pathlib import Path

import pytest
import requests

from khcompat import HTTP_TIMEOUT


def test_bootstrap_json_describes_this_server(server):
    port = server.port
    assert server.authority_host == f"https://login.localhost:{port}"
    assert server.vault_url == f"https://dev.vault.localhost:{port}"
    assert server.vault_host_suffix == f"vault.localhost:{port}"
    assert server.management_scope == f"https://management.localhost:{port}/.default"
    assert server.management_url.rstrip("/") == f"https://management.localhost:{port}"
    assert os.path.isabs(server.ca_cert)
    assert Path(server.ca_cert).resolve() == (server.data_dir / "tls" / "ca.pem").resolve()
    # azure-identity's validate_tenant_id accepts only these characters.
    assert re.fullmatch(r"[0-9A-Za-z.-]+", server.tenant_id), server.tenant_id
    assert server.client_id and server.subscription_id and server.resource_group
    assert len(server.client_secret) >= 20, "client_secret is too short to be a credential"


def test_bootstrap_json_is_readable_only_by_its_owner(server):
    mode = stat.S_IMODE((server.data_dir / "bootstrap.json").stat().st_mode)
    assert mode & 0o077 == 0, f"bootstrap.json holds the client secret but has mode {oct(mode)}"


def test_healthz_needs_no_token(server):
    r = requests.get(f"https://localhost:{server.port}/healthz", verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200


@pytest.mark.parametrize(
    "host",
    ["localhost", "login.localhost", "management.localhost", "dev.vault.localhost", "nosuch.vault.localhost"],
)
def test_tls_certificate_passes_strict_verification(server, host):
    ctx = ssl.create_default_context(cafile=server.ca_cert)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    with socket.create_connection(("127.0.0.1", server.port), timeout=HTTP_TIMEOUT) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        except ssl.SSLCertVerificationError as exc:
            pytest.fail(f"{host}: certificate rejected under VERIFY_X509_STRICT: {exc.verify_message}")
