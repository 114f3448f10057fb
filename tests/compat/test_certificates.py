"""Certificates, first slice: self-signed certificates created from policies
through azure-keyvault-certificates' CertificateClient (the SDK poller runs
unchanged), each checked independently with pyca/cryptography: subject, SANs,
EKUs, key usage, validity, signature, the public key equal to the backing
key's JWK, and the backing secret's private key matching it. Then policy
updates, listing, delete/recover/purge of the certificate with its key and
secret, and the errors of bad policies."""

from __future__ import annotations

import base64
import hashlib

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateContentType,
    CertificatePolicy,
    KeyCurveName,
    KeyType,
    KeyUsageType,
    WellKnownIssuerNames,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from khcompat import CLIENT_KWARGS, unique

POLL = {"_polling_interval": 0.2}


@pytest.fixture(scope="module")
def certs(server, credential):
    c = CertificateClient(server.vault_url, credential, **CLIENT_KWARGS)
    yield c
    c.close()


@pytest.fixture(scope="module")
def secrets(server, credential):
    c = SecretClient(server.vault_url, credential, **CLIENT_KWARGS)
    yield c
    c.close()


@pytest.fixture(scope="module")
def keys(server, credential):
    c = KeyClient(server.vault_url, credential, **CLIENT_KWARGS)
    yield c
    c.close()


def create(certs, name, policy, **kw):
    return certs.begin_create_certificate(name, policy, **kw, **POLL).result()


def public_numbers_of_jwk(jwk):
    if jwk.kty.startswith("RSA"):
        return rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big"))
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[jwk.crv]
    return ec.EllipticCurvePublicNumbers(int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve)


def verify_self_signed(cert: x509.Certificate):
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    else:
        pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def test_default_policy_makes_a_self_signed_rsa_certificate(certs, secrets, keys, server, credential):
    name = unique("cert")
    cert = create(certs, name, CertificatePolicy.get_default(), tags={"team": "web"})
    assert cert.name == name and cert.properties.tags == {"team": "web"}
    assert cert.key_id.endswith(f"/keys/{name}/{cert.properties.version}")
    assert cert.secret_id.endswith(f"/secrets/{name}/{cert.properties.version}")
    parsed = x509.load_der_x509_certificate(bytes(cert.cer))
    assert parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "DefaultPolicy"
    assert parsed.issuer == parsed.subject
    verify_self_signed(parsed)
    assert cert.properties.x509_thumbprint == parsed.fingerprint(hashes.SHA1())
    assert cert.properties.not_before == parsed.not_valid_before_utc
    assert cert.properties.expires_on == parsed.not_valid_after_utc
    months = (parsed.not_valid_after_utc.year - parsed.not_valid_before_utc.year) * 12 + \
        parsed.not_valid_after_utc.month - parsed.not_valid_before_utc.month
    assert months == 12
    eku = parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = parsed.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign

    policy = cert.policy
    assert policy.issuer_name == "Self" and policy.key_type == KeyType.rsa and policy.key_size == 2048
    assert policy.exportable is True and policy.reuse_key is False
    assert policy.content_type == CertificateContentType.pkcs12 and policy.validity_in_months == 12

    # The backing key: same public key, signs like any key.
    key = keys.get_key(name)
    assert key.properties.managed is True and key.properties.version == cert.properties.version
    assert public_numbers_of_jwk(key.key) == parsed.public_key().public_numbers()
    digest = hashlib.sha256(b"certificate key signs").digest()
    sig = CryptographyClient(key.id, credential, **CLIENT_KWARGS).sign(SignatureAlgorithm.rs256, digest).signature
    parsed.public_key().verify(sig, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))

    # The backing secret: a PFX with empty password holding key and certificate.
    secret = secrets.get_secret(name)
    assert secret.properties.content_type == "application/x-pkcs12"
    assert secret.properties.managed is True and secret.properties.key_id == key.id
    pkey, pcert, extra = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    assert pcert == parsed and not extra
    assert pkey.public_key().public_numbers() == parsed.public_key().public_numbers()


@pytest.mark.parametrize("curve", [KeyCurveName.p_256, KeyCurveName.p_384])
def test_custom_ec_policy_in_pem(certs, secrets, curve):
    name = unique("ecc")
    policy = CertificatePolicy(
        issuer_name=WellKnownIssuerNames.self,
        subject="CN=api.example.test, O=Keyhaven Tests, C=DE",
        san_dns_names=["api.example.test", "*.api.example.test"],
        san_emails=["ops@example.test"],
        san_user_principal_names=["svc@example.test"],
        key_type=KeyType.ec, key_curve_name=curve,
        key_usage=[KeyUsageType.digital_signature, KeyUsageType.non_repudiation],
        enhanced_key_usage=["1.3.6.1.5.5.7.3.1"],
        content_type=CertificateContentType.pem, validity_in_months=3,
    )
    cert = create(certs, name, policy)
    parsed = x509.load_der_x509_certificate(bytes(cert.cer))
    verify_self_signed(parsed)
    assert parsed.subject.rfc4514_string() == "C=DE,O=Keyhaven Tests,CN=api.example.test"
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.example.test", "*.api.example.test"]
    assert san.get_values_for_type(x509.RFC822Name) == ["ops@example.test"]
    upn = san.get_values_for_type(x509.OtherName)
    assert upn[0].type_id.dotted_string == "1.3.6.1.4.1.311.20.2.3" and b"svc@example.test" in upn[0].value
    assert list(parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = parsed.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_encipherment
    assert isinstance(parsed.public_key(), ec.EllipticCurvePublicKey)
    assert parsed.public_key().curve.name == {"P-256": "secp256r1", "P-384": "secp384r1"}[curve]
    assert cert.policy.san_user_principal_names == ["svc@example.test"]

    secret = secrets.get_secret(name)
    assert secret.properties.content_type == "application/x-pem-file"
    assert "-----BEGIN PRIVATE KEY-----" in secret.value
    pem_cert = x509.load_pem_x509_certificate(secret.value.encode())
    assert pem_cert == parsed
    pkey = serialization.load_pem_private_key(secret.value.encode(), None)
    assert pkey.public_key().public_numbers() == parsed.public_key().public_numbers()


def test_non_exportable_key_stays_out_of_the_secret(certs, secrets):
    name = unique("noexp")
    # key_type too: the SDK drops key_props when its only value is exportable=False.
    policy = CertificatePolicy(issuer_name="Self", subject="CN=noexport", exportable=False, key_type=KeyType.rsa,
                               content_type=CertificateContentType.pem)
    cert = create(certs, name, policy)
    value = secrets.get_secret(name).value
    assert "PRIVATE KEY" not in value
    assert x509.load_pem_x509_certificate(value.encode()) == x509.load_der_x509_certificate(bytes(cert.cer))
    assert cert.policy.exportable is False


def test_versions_policy_update_and_pending_operation(certs):
    name = unique("ver")
    first = create(certs, name, CertificatePolicy(issuer_name="Self", subject="CN=one"))
    op = certs.get_certificate_operation(name)
    assert op.status == "completed" and op.issuer_name == "Self" and op.target.endswith(f"/certificates/{name}")

    assert certs.get_certificate_policy(name).subject == "CN=one"
    updated = certs.update_certificate_policy(
        name, CertificatePolicy(issuer_name="Self", subject="CN=two", validity_in_months=6))
    assert updated.subject == "CN=two" and updated.validity_in_months == 6
    # A new version follows the stored policy when none is given.
    second = certs.begin_create_certificate(name, certs.get_certificate_policy(name), **POLL).result()
    assert second.properties.version != first.properties.version
    parsed = x509.load_der_x509_certificate(bytes(second.cer))
    assert parsed.subject.rfc4514_string() == "CN=two"
    versions = {p.version for p in certs.list_properties_of_certificate_versions(name)}
    assert versions == {first.properties.version, second.properties.version}
    old = certs.get_certificate_version(name, first.properties.version)
    assert x509.load_der_x509_certificate(bytes(old.cer)).subject.rfc4514_string() == "CN=one"
    assert name in {c.name for c in certs.list_properties_of_certificates()}

    props = certs.update_certificate_properties(name, enabled=False, tags={"a": "b"})
    assert props.properties.enabled is False and props.properties.tags == {"a": "b"}


def test_delete_recover_purge_take_key_and_secret_along(certs, keys, secrets, server):
    name = unique("del")
    create(certs, name, CertificatePolicy(issuer_name="Self", subject="CN=del"))
    deleted = certs.begin_delete_certificate(name, **POLL).result()
    assert deleted.recovery_id.endswith(f"/deletedcertificates/{name}")
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(name)
    with pytest.raises(ResourceNotFoundError):
        secrets.get_secret(name)
    assert certs.get_deleted_certificate(name).name == name
    assert name in {c.name for c in certs.list_deleted_certificates()}
    with pytest.raises(ResourceExistsError):
        create(certs, name, CertificatePolicy(issuer_name="Self", subject="CN=again"))

    certs.begin_recover_deleted_certificate(name, **POLL).result()
    assert keys.get_key(name).properties.managed is True
    assert secrets.get_secret(name).properties.content_type == "application/x-pkcs12"

    certs.begin_delete_certificate(name, **POLL).result()
    certs.purge_deleted_certificate(name)
    with pytest.raises(ResourceNotFoundError):
        certs.get_deleted_certificate(name)
    with pytest.raises(ResourceNotFoundError):
        keys.get_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        secrets.get_deleted_secret(name)
    # The name is free again, its policy gone with it.
    with pytest.raises(ResourceNotFoundError):
        certs.get_certificate_policy(name)
    create(certs, name, CertificatePolicy(issuer_name="Self", subject="CN=reborn"))


def test_bad_policies_are_refused_and_nothing_is_created(certs, keys, secrets, server, token):
    name = unique("bad")
    bad = [
        {"policy": {"issuer": {"name": "Self"}, "x509_props": {"subject": "no equals sign"}}},
        {"policy": {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=x", "validity_months": 0}}},
        {"policy": {"issuer": {"name": "Self"}, "key_props": {"kty": "RSA", "key_size": 1024}, "x509_props": {"subject": "CN=x"}}},
        {"policy": {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=x", "key_usage": ["flyAway"]}}},
        {"policy": {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=x", "ekus": ["server auth"]}}},
        {"policy": {"issuer": {"name": "Self"}, "secret_props": {"contentType": "text/plain"}, "x509_props": {"subject": "CN=x"}}},
        {"policy": {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=x"},
                    "lifetime_actions": [{"trigger": {"lifetime_percentage": 100}, "action": {"action_type": "AutoRenew"}}]}},
        {"policy": {"issuer": {"name": "NoSuchIssuer"}, "x509_props": {"subject": "CN=x"}}},
        {"policy": {"issuer": {"name": "Self"}}},
        {},
    ]
    for body in bad:
        r = server.vault_request("POST", f"/certificates/{name}/create", token=token, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "BadParameter" and r.json()["error"]["message"]
    for getter in (certs.get_certificate, keys.get_key, secrets.get_secret):
        with pytest.raises(ResourceNotFoundError):
            getter(name)

    # A plain key of the same name keeps its name.
    keys.create_ec_key(name)
    r = server.vault_request("POST", f"/certificates/{name}/create", token=token,
                             json={"policy": {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=x"}}})
    assert r.status_code == 409, r.text


# ---- import, CSR + merge ----

import datetime

from cryptography.x509 import CertificateSigningRequestBuilder  # noqa: F401  (documents the pyca side)


def make_ca(cn="Keyhaven Test CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def sign_with_ca(ca_key, ca_cert, public_key, subject, sans=None, days=10):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(public_key)
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
         .not_valid_after(now + datetime.timedelta(days=days)))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in sans]), critical=False)
    return b.sign(ca_key, hashes.SHA256())


def leaf_with_key(kind="rsa"):
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    ca_key, ca_cert = make_ca()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imported.example.test"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Imports")])
    leaf = sign_with_ca(ca_key, ca_cert, key.public_key(), subject, sans=["imported.example.test"])
    return key, leaf, ca_cert


@pytest.mark.parametrize("password", [None, b"s3cr3t pass"])
def test_import_pfx_keeps_key_chain_and_facts(certs, keys, secrets, credential, password):
    key, leaf, ca = leaf_with_key("rsa")
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    pfx = pkcs12.serialize_key_and_certificates(b"imp", key, leaf, [ca], enc)
    name = unique("pfx")
    cert = certs.import_certificate(name, pfx, password=password.decode() if password else None, tags={"src": "pfx"})
    assert x509.load_der_x509_certificate(bytes(cert.cer)) == leaf
    assert cert.properties.tags == {"src": "pfx"}
    assert cert.policy.issuer_name == "Unknown" and cert.policy.key_type == KeyType.rsa
    assert cert.policy.subject == "CN=imported.example.test, O=Imports"
    assert cert.policy.san_dns_names == ["imported.example.test"]
    # The imported key signs in the vault; pyca verifies with the certificate.
    kv_key = keys.get_key(name)
    digest = hashlib.sha256(b"imported").digest()
    sig = CryptographyClient(kv_key.id, credential, **CLIENT_KWARGS).sign(SignatureAlgorithm.ps256, digest).signature
    leaf.public_key().verify(sig, digest, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                             Prehashed(hashes.SHA256()))
    pkey, pcert, extra = pkcs12.load_key_and_certificates(base64.b64decode(secrets.get_secret(name).value), None)
    assert pcert == leaf and extra == [ca]
    assert pkey.private_numbers() == key.private_numbers()


def test_import_pem_with_the_sdk_and_as_raw_text(certs, secrets, server, token):
    key, leaf, ca = leaf_with_key("ec")
    pem = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
           + ca.public_bytes(serialization.Encoding.PEM) + leaf.public_bytes(serialization.Encoding.PEM))
    name = unique("pem")
    policy = CertificatePolicy(issuer_name="Unknown", subject="CN=imported.example.test",
                               content_type=CertificateContentType.pem, key_type=KeyType.ec)
    cert = certs.import_certificate(name, pem, policy=policy)
    assert x509.load_der_x509_certificate(bytes(cert.cer)) == leaf
    value = secrets.get_secret(name).value
    chain = x509.load_pem_x509_certificates(value.encode())
    assert chain == [leaf, ca], "leaf first, then the rest"
    assert serialization.load_pem_private_key(value.encode(), None).private_numbers() == key.private_numbers()

    # The CLI sends PEM text as is.
    r = server.vault_request("POST", f"/certificates/{unique('pemtxt')}/import", token=token,
                             json={"value": pem.decode(), "policy": {"secret_props": {"contentType": "application/x-pem-file"}}})
    assert r.status_code == 200, r.text
    assert r.json()["policy"]["secret_props"]["contentType"] == "application/x-pem-file"


def test_bad_imports_get_azure_errors_and_leave_nothing(certs, keys, server, token):
    key, leaf, ca = leaf_with_key("rsa")
    pfx = pkcs12.serialize_key_and_certificates(b"x", key, leaf, None,
                                               serialization.BestAvailableEncryption(b"right"))
    only_cert = leaf.public_bytes(serialization.Encoding.PEM)
    other_key = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    name = unique("badimp")
    cases = [
        {"value": base64.b64encode(pfx).decode(), "pwd": "wrong"},
        {"value": base64.b64encode(pfx).decode()},
        {"value": "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"},
        {"value": base64.b64encode(only_cert).decode()},
        {"value": (only_cert + other_key).decode()},
        {"value": "%%% not base64 %%%"},
        {},
    ]
    for body in cases:
        r = server.vault_request("POST", f"/certificates/{name}/import", token=token, json=body)
        assert r.status_code == 400, (list(body), r.text)
        assert r.json()["error"]["code"] == "BadParameter"
        assert "right" not in r.text
    with pytest.raises(ResourceNotFoundError):
        certs.get_certificate(name)
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(name)


def test_unknown_issuer_csr_signed_elsewhere_then_merged(certs, keys, secrets):
    name = unique("csr")
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown, subject="CN=merge.example.test",
                               san_dns_names=["merge.example.test"])
    op = certs.begin_create_certificate(name, policy, **POLL).result()
    assert op.status == "inProgress" and op.issuer_name == "Unknown"
    csr = x509.load_der_x509_csr(bytes(op.csr))
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=merge.example.test"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["merge.example.test"]
    with pytest.raises(ResourceNotFoundError):
        certs.get_certificate(name)

    ca_key, ca_cert = make_ca()
    # A certificate for another key is refused, and the request stays pending.
    stranger = sign_with_ca(ca_key, ca_cert, rsa.generate_private_key(65537, 2048).public_key(), csr.subject)
    with pytest.raises(HttpResponseError) as e:
        certs.merge_certificate(name, [stranger.public_bytes(serialization.Encoding.DER)])
    assert e.value.status_code == 400
    assert certs.get_certificate_operation(name).status == "inProgress"

    signed = sign_with_ca(ca_key, ca_cert, csr.public_key(), csr.subject, sans=["merge.example.test"])
    merged = certs.merge_certificate(name, [signed.public_bytes(serialization.Encoding.DER),
                                            ca_cert.public_bytes(serialization.Encoding.DER)])
    assert x509.load_der_x509_certificate(bytes(merged.cer)) == signed
    ca_cert.public_key().verify(signed.signature, signed.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    assert certs.get_certificate_operation(name).status == "completed"
    kv_key = keys.get_key(name)
    assert public_numbers_of_jwk(kv_key.key) == signed.public_key().public_numbers()
    pkey, pcert, extra = pkcs12.load_key_and_certificates(base64.b64decode(secrets.get_secret(name).value), None)
    assert pcert == signed and extra == [ca_cert]
    assert pkey.public_key().public_numbers() == signed.public_key().public_numbers()


def test_preserve_order_of_a_pending_request_holds_through_the_merge(certs):
    """`preserveCertOrder` given when the request was created (api-version
    2025-07-01 and later) is what the merged certificate reports."""
    name = unique("keep")
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown, subject="CN=keep.example.test",
                               content_type=CertificateContentType.pem)
    op = certs.begin_create_certificate(name, policy, preserve_order=True, **POLL).result()
    csr = x509.load_der_x509_csr(bytes(op.csr))
    ca_key, ca_cert = make_ca()
    signed = sign_with_ca(ca_key, ca_cert, csr.public_key(), csr.subject)
    merged = certs.merge_certificate(name, [signed.public_bytes(serialization.Encoding.DER),
                                            ca_cert.public_bytes(serialization.Encoding.DER)])
    assert merged.properties.preserve_order is True
    assert certs.get_certificate(name).properties.preserve_order is True
    # Without it, the merged certificate does not claim it.
    other = unique("nokeep")
    op = certs.begin_create_certificate(other, policy, **POLL).result()
    csr = x509.load_der_x509_csr(bytes(op.csr))
    signed = sign_with_ca(ca_key, ca_cert, csr.public_key(), csr.subject)
    merged = certs.merge_certificate(other, [signed.public_bytes(serialization.Encoding.DER)])
    assert not merged.properties.preserve_order


def test_pending_request_can_be_cancelled_and_deleted(certs):
    name = unique("cancel")
    certs.begin_create_certificate(name, CertificatePolicy(issuer_name="Unknown", subject="CN=c"), **POLL).result()
    with pytest.raises(ResourceExistsError):
        certs.begin_create_certificate(name, CertificatePolicy(issuer_name="Unknown", subject="CN=c"), **POLL)
    cancelled = certs.cancel_certificate_operation(name)
    assert cancelled.cancellation_requested is True and cancelled.status == "cancelled"
    deleted = certs.delete_certificate_operation(name)
    assert deleted.status == "cancelled"
    with pytest.raises(ResourceNotFoundError):
        certs.get_certificate_operation(name)
    # With the request gone a new one may start.
    op = certs.begin_create_certificate(name, CertificatePolicy(issuer_name="Unknown", subject="CN=c"), **POLL).result()
    assert op.status == "inProgress"


# ---- issuers, contacts and the private CA ----

from azure.keyvault.certificates import AdministratorContact, CertificateContact  # noqa: E402

PRIVATE_CA = "Keyhaven-PrivateCA"


def test_issuers_round_trip_without_ever_returning_the_password(certs, server, token):
    name = unique("iss")
    admins = [AdministratorContact(first_name="Ada", last_name="L", email="ada@example.test", phone="123")]
    created = certs.create_issuer(name, "DigiCert", account_id="acct-1", password="hunter2",
                                  organization_id="org-9", admin_contacts=admins, enabled=True)
    assert created.provider == "DigiCert" and created.account_id == "acct-1" and created.organization_id == "org-9"
    assert created.admin_contacts[0].email == "ada@example.test"
    got = certs.get_issuer(name)
    assert got.password is None and got.enabled is True
    r = server.vault_request("GET", f"/certificates/issuers/{name}", token=token)
    assert "hunter2" not in r.text and r.json()["id"].endswith(f"/certificates/issuers/{name}")
    updated = certs.update_issuer(name, enabled=False, account_id="acct-2")
    assert updated.enabled is False and updated.account_id == "acct-2" and updated.provider == "DigiCert"
    assert name in {i.name for i in certs.list_properties_of_issuers()}
    # A public CA cannot be reached from here: issuing through it is refused.
    with pytest.raises(HttpResponseError) as e:
        create(certs, unique("viadigi"), CertificatePolicy(issuer_name=name, subject="CN=x"))
    assert e.value.status_code == 400
    deleted = certs.delete_issuer(name)
    assert deleted.name == name
    with pytest.raises(ResourceNotFoundError):
        certs.get_issuer(name)
    r = server.vault_request("PUT", f"/certificates/issuers/{unique('iss')}", token=token, json={})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"
    r = server.vault_request("PUT", f"/certificates/issuers/{unique('iss')}", token=token, json={"provider": PRIVATE_CA})
    assert r.status_code == 400, "a private-CA issuer must name its CA certificate"


def test_contacts_set_get_delete(certs):
    contacts = [CertificateContact(email="pki@example.test", name="PKI", phone="555"),
                CertificateContact(email="oncall@example.test")]
    set_ = certs.set_contacts(contacts)
    assert [c.email for c in set_] == ["pki@example.test", "oncall@example.test"]
    got = certs.get_contacts()
    assert [(c.email, c.name, c.phone) for c in got] == [("pki@example.test", "PKI", "555"),
                                                        ("oncall@example.test", None, None)]
    deleted = certs.delete_contacts()
    assert len(deleted) == 2
    with pytest.raises(ResourceNotFoundError):
        certs.get_contacts()


def make_vault_ca(certs, ca_name):
    ca_policy = CertificatePolicy(issuer_name="Self", subject=f"CN={ca_name} Root, O=Keyhaven Tests",
                                  key_type=KeyType.ec, key_curve_name=KeyCurveName.p_384,
                                  key_usage=[KeyUsageType.key_cert_sign, KeyUsageType.crl_sign,
                                             KeyUsageType.digital_signature],
                                  validity_in_months=24, exportable=False)
    return create(certs, ca_name, ca_policy)


def test_private_ca_issues_certificates_chained_to_a_vault_ca(certs, secrets, keys, credential):
    ca_name = unique("teamca")
    ca = make_vault_ca(certs, ca_name)
    ca_cert = x509.load_der_x509_certificate(bytes(ca.cer))
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    issuer = unique("teamissuer")
    certs.create_issuer(issuer, PRIVATE_CA, account_id=ca_name)

    leaf_name = unique("svc")
    policy = CertificatePolicy(issuer_name=issuer, subject="CN=svc.internal.test",
                               san_dns_names=["svc.internal.test"], validity_in_months=6)
    leaf = create(certs, leaf_name, policy)
    parsed = x509.load_der_x509_certificate(bytes(leaf.cer))
    assert parsed.issuer == ca_cert.subject and parsed.subject != ca_cert.subject
    ca_cert.public_key().verify(parsed.signature, parsed.tbs_certificate_bytes,
                                ec.ECDSA(parsed.signature_hash_algorithm))
    parsed.verify_directly_issued_by(ca_cert)
    aki = parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert parsed.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert parsed.not_valid_after_utc <= ca_cert.not_valid_after_utc
    assert leaf.policy.issuer_name == issuer
    # The secret carries the chain; the CA's own key never left the vault.
    pkey, pcert, extra = pkcs12.load_key_and_certificates(base64.b64decode(secrets.get_secret(leaf_name).value), None)
    assert pcert == parsed and extra == [ca_cert]
    ca_pfx = pkcs12.load_key_and_certificates(base64.b64decode(secrets.get_secret(ca_name).value), None)
    assert ca_pfx[0] is None, "a non-exportable CA key is not in its secret"

    # The CA refuses to issue when it cannot: a CA without keyCertSign, or disabled.
    plain = create(certs, unique("plain"), CertificatePolicy(issuer_name="Self", subject="CN=plain"))
    bad_issuer = unique("badissuer")
    certs.create_issuer(bad_issuer, PRIVATE_CA, account_id=plain.name)
    with pytest.raises(HttpResponseError) as e:
        create(certs, unique("nope"), CertificatePolicy(issuer_name=bad_issuer, subject="CN=x"))
    assert e.value.status_code == 400 and "keyCertSign" in e.value.message
    with pytest.raises(HttpResponseError) as e:
        create(certs, unique("nope"), CertificatePolicy(issuer_name=unique("noissuer"), subject="CN=x"))
    assert e.value.status_code == 400


def test_backup_restore_brings_back_certificate_key_secret_and_policy(certs, keys, secrets, credential, server, token):
    name = unique("bak")
    policy = CertificatePolicy(issuer_name="Self", subject="CN=backup.example.test", validity_in_months=7,
                               content_type=CertificateContentType.pem)
    first = create(certs, name, policy)
    second = create(certs, name, certs.get_certificate_policy(name))
    blob = certs.backup_certificate(name)
    assert b"backup.example.test" not in blob and b"PRIVATE KEY" not in blob
    with pytest.raises(ResourceExistsError):
        certs.restore_certificate_backup(blob)
    certs.begin_delete_certificate(name, **POLL).result()
    certs.purge_deleted_certificate(name)

    restored = certs.restore_certificate_backup(blob)
    assert restored.name == name and restored.properties.version == second.properties.version
    assert restored.cer == second.cer
    assert {p.version for p in certs.list_properties_of_certificate_versions(name)} == {
        first.properties.version, second.properties.version}
    assert certs.get_certificate_policy(name).validity_in_months == 7
    key = keys.get_key(name)
    assert key.properties.managed is True
    digest = hashlib.sha256(b"restored").digest()
    sig = CryptographyClient(key.id, credential, **CLIENT_KWARGS).sign(SignatureAlgorithm.rs256, digest).signature
    x509.load_der_x509_certificate(bytes(restored.cer)).public_key().verify(
        sig, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    value = secrets.get_secret(name).value
    assert serialization.load_pem_private_key(value.encode(), None).public_key().public_numbers() == \
        x509.load_der_x509_certificate(bytes(restored.cer)).public_key().public_numbers()

    # A key backup is not a certificate backup, nor garbage.
    key_blob = keys.backup_key(name)
    for bad_blob in (key_blob, b"garbage"):
        r = server.vault_request("POST", "/certificates/restore", token=token,
                                 json={"value": base64.urlsafe_b64encode(bad_blob).decode().rstrip("=")})
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter", r.text


def test_a_certificates_key_and_secret_change_only_through_it(certs, keys, secrets):
    name = unique("owned")
    create(certs, name, CertificatePolicy(issuer_name="Self", subject="CN=owned"))
    attempts = [
        lambda: secrets.set_secret(name, "overwrite"),
        lambda: secrets.begin_delete_secret(name, **POLL),
        lambda: keys.begin_delete_key(name, **POLL),
        lambda: keys.create_rsa_key(name),
        lambda: keys.rotate_key(name),
    ]
    for attempt in attempts:
        with pytest.raises(HttpResponseError) as e:
            attempt()
        assert e.value.status_code == 403 and "managed by a certificate" in e.value.message
    certs.begin_delete_certificate(name, **POLL).result()
    for attempt in (lambda: secrets.begin_recover_deleted_secret(name, **POLL),
                    lambda: keys.purge_deleted_key(name)):
        with pytest.raises(HttpResponseError) as e:
            attempt()
        assert e.value.status_code == 403
    certs.begin_recover_deleted_certificate(name, **POLL).result()
    assert keys.get_key(name).properties.managed is True
