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


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_before_1_2_is_refused(server, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(server.ca_cert)
    # Allow the old protocol on the client side (OpenSSL's default floor is 1.2).
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = getattr(ssl.TLSVersion, version)
    ctx.maximum_version = getattr(ssl.TLSVersion, version)
    with socket.create_connection(("127.0.0.1", server.port), timeout=HTTP_TIMEOUT) as raw:
        with pytest.raises(ssl.SSLError):
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                pass


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_1_2_and_1_3_are_served(server, version):
    ctx = ssl.create_default_context(cafile=server.ca_cert)
    ctx.minimum_version = getattr(ssl.TLSVersion, version)
    ctx.maximum_version = getattr(ssl.TLSVersion, version)
    with socket.create_connection(("127.0.0.1", server.port), timeout=HTTP_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="dev.vault.localhost") as tls:
            assert tls.version() == version.replace("_", ".")


def test_h2_and_http_1_1_are_offered_by_alpn(server):
    for proto in ("h2", "http/1.1"):
        ctx = ssl.create_default_context(cafile=server.ca_cert)
        ctx.set_alpn_protocols([proto])
        with socket.create_connection(("127.0.0.1", server.port), timeout=HTTP_TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.selected_alpn_protocol() == proto


def test_plain_http_is_not_served(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=HTTP_TIMEOUT) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw.settimeout(HTTP_TIMEOUT)
        try:
            reply = raw.recv(4096)
        except (ConnectionResetError, socket.timeout):
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 200")
