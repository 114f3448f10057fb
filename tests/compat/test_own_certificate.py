"""A user may bring their own certificate and key instead of the generated
local CA; bootstrap.json then names the CA they said clients should trust."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from khcompat import KeyhavenServer, PgDatabase, unique


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(out: Path):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Own Test CA")).issuer_name(_name("Own Test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = ["localhost", "login.localhost", "dev.vault.localhost", "*.vault.localhost"]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("keyhaven-own")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (out / "chain.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    (out / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return out / "ca.pem", out / "chain.pem", out / "key.pem", leaf


class OwnCertServer(KeyhavenServer):
    def __init__(self, *args, tls, **kwargs):
        self.tls = tls
        super().__init__(*args, **kwargs)

    def command(self):
        ca, chain, key = self.tls
        return super().command() + ["--tls-cert", str(chain), "--tls-key", str(key), "--tls-ca", str(ca)]


def test_own_certificate_is_served_and_named_in_bootstrap(store_kind, tmp_path, monkeypatch):
    ca, chain, key, leaf = make_pki(tmp_path / "pki")
    pg = PgDatabase().create() if store_kind == "postgres" else None
    srv = OwnCertServer(store_kind, tmp_path / "srv", pg=pg, tls=(ca, chain, key))
    try:
        srv.start()
        assert Path(srv.ca_cert) == ca.resolve()
        assert not (srv.data_dir / "tls").exists(), "no local CA is generated when a certificate is supplied"
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        client = srv.secret_client()
        name = unique()
        client.set_secret(name, "own-cert value")
        assert client.get_secret(name).value == "own-cert value"
        client.close()
    finally:
        srv.stop()
        if pg is not None:
            pg.drop()
