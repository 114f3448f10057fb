"""TLS policy, checked with `openssl s_client` as a client that can still
speak the old versions (SECLEVEL=0): TLS 1.0 and 1.1 are refused by the
server (its alert, not a client-side refusal), 1.2 and 1.3 are accepted by
default, `--tls-min-version 1.3` refuses 1.2; and a replaced certificate is
served after SIGHUP without a restart."""

from __future__ import annotations

import datetime
import signal
import socket
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from khcompat import KeyhavenServer, running_server


def handshake(port: int, version: str, ca: str) -> str:
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "dev.vault.localhost",
         f"-{version}", "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", ca],
        input="", capture_output=True, text=True, timeout=20)
    return out.stdout + out.stderr


def assert_refused_by_server(output: str):
    assert "SSL alert number" in output, output[-1500:]
    assert "Cipher is (NONE)" in output or "New, (NONE)" in output, output[-1500:]


class Tls13Server(KeyhavenServer):
    def command(self):
        return super().command() + ["--tls-min-version", "1.3"]


def test_default_policy_is_tls12_and_tls13_only(server):
    for old in ("tls1", "tls1_1"):
        assert_refused_by_server(handshake(server.port, old, server.ca_cert))
    assert "New, TLSv1.2, Cipher is ECDHE-" in handshake(server.port, "tls1_2", server.ca_cert)
    assert "New, TLSv1.3, Cipher is TLS_" in handshake(server.port, "tls1_3", server.ca_cert)


def test_tls13_only_mode_refuses_tls12(store_kind, tmp_path):
    with running_server(Tls13Server, store_kind, tmp_path / "srv") as srv:
        assert_refused_by_server(handshake(srv.port, "tls1_2", srv.ca_cert))
        assert "New, TLSv1.3, Cipher is TLS_" in handshake(srv.port, "tls1_3", srv.ca_cert)


def issue(tmp_path, ca_key, ca_cert, serial: int):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names = ["localhost", "*.localhost", "*.vault.localhost", "login.localhost", "management.localhost",
             "graph.localhost"]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyhaven")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def served_serial(port: int, ca: str) -> int:
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="dev.vault.localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_a_replaced_certificate_is_served_after_sighup(store_kind, tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Reload CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    issue(tmp_path, ca_key, ca, 1001)

    class OwnCertServer(KeyhavenServer):
        def command(self):
            return super().command() + ["--tls-cert", str(tmp_path / "server.pem"), "--tls-key",
                                        str(tmp_path / "server.key"), "--tls-ca", str(tmp_path / "ca.pem")]

    with running_server(OwnCertServer, store_kind, tmp_path / "srv") as srv:
        ca_path = str(tmp_path / "ca.pem")
        assert served_serial(srv.port, ca_path) == 1001
        issue(tmp_path, ca_key, ca, 2002)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while served_serial(srv.port, ca_path) != 2002:
            assert time.monotonic() < deadline, "the new certificate was not served within 15 s"
            time.sleep(0.2)
        assert srv.proc.poll() is None, "reloading must not restart the server"
