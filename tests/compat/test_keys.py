"""Keys, first slice: RSA and EC keys created through azure-keyvault-keys'
KeyClient, signed with CryptographyClient, and every signature verified
independently with pyca/cryptography from the public JWK the vault returned.
Also encrypt/decrypt/wrap/unwrap, import, updates, backup/restore, rotation
and rotation policies."""

from __future__ import annotations

import hashlib

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from khcompat import CLIENT_KWARGS, unique

HASHES = {256: (hashlib.sha256, hashes.SHA256()), 384: (hashlib.sha384, hashes.SHA384()), 512: (hashlib.sha512, hashes.SHA512())}
CURVES = {"P-256": (ec.SECP256R1(), 256, 32), "P-384": (ec.SECP384R1(), 384, 48), "P-521": (ec.SECP521R1(), 512, 66),
          "P-256K": (ec.SECP256K1(), 256, 32)}
EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "P-256K": "ES256K"}


@pytest.fixture(scope="module")
def keys(server, credential):
    c = KeyClient(server.vault_url, credential, **CLIENT_KWARGS)
    yield c
    c.close()


def crypto(server, credential, key_id):
    return CryptographyClient(key_id, credential, **CLIENT_KWARGS)


def rsa_public(jwk):
    n = int.from_bytes(jwk.n, "big")
    e = int.from_bytes(jwk.e, "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def ec_public(jwk):
    curve = CURVES[jwk.crv][0]
    return ec.EllipticCurvePublicNumbers(int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve).public_key()


@pytest.mark.parametrize("size", [2048, 3072])
@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_signatures_verify_independently(server, credential, keys, size, alg):
    key = keys.create_rsa_key(unique("rsa"), size=size)
    assert key.key_type == "RSA" and len(key.key.n) * 8 == size
    assert not getattr(key.key, "d", None), "private parts are never returned"
    bits = int(alg[2:])
    h, chosen = HASHES[bits]
    digest = h(b"keyhaven signs this").digest()
    result = crypto(server, credential, key.id).sign(SignatureAlgorithm(alg), digest)
    assert result.key_id == key.id
    pad = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(mgf=padding.MGF1(chosen), salt_length=chosen.digest_size)
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    rsa_public(key.key).verify(result.signature, digest, pad, Prehashed(chosen))


@pytest.mark.parametrize("crv", ["P-256", "P-384", "P-521", "P-256K"])
def test_ec_signatures_are_raw_r_s_and_verify_independently(server, credential, keys, crv):
    key = keys.create_ec_key(unique("ec"), curve=crv)
    curve, bits, width = CURVES[crv]
    assert key.key.crv == crv and len(key.key.x) == width and len(key.key.y) == width
    h, chosen = HASHES[bits]
    digest = h(b"keyhaven signs this too").digest()
    result = crypto(server, credential, key.id).sign(SignatureAlgorithm(EC_ALG[crv]), digest)
    assert len(result.signature) == 2 * width, "ES signatures are raw r||s"
    r = int.from_bytes(result.signature[:width], "big")
    s = int.from_bytes(result.signature[width:], "big")
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    ec_public(key.key).verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(chosen)))


def test_server_side_verify_accepts_good_and_rejects_tampered_signatures(server, token, keys, credential):
    key = keys.create_ec_key(unique("ecv"), curve="P-256")
    digest = hashlib.sha256(b"x").digest()
    sig = crypto(server, credential, key.id).sign(SignatureAlgorithm.es256, digest).signature
    import base64
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    path = f"/keys/{key.name}/{key.properties.version}/verify"
    ok = server.vault_request("POST", path, token=token, json={"alg": "ES256", "digest": b64(digest), "value": b64(sig)})
    assert ok.status_code == 200 and ok.json() == {"value": True}
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    no = server.vault_request("POST", path, token=token, json={"alg": "ES256", "digest": b64(digest), "value": b64(bad)})
    assert no.status_code == 200 and no.json() == {"value": False}


def test_bad_input_gets_azure_errors(server, token, keys):
    key = keys.create_ec_key(unique("ecbad"), curve="P-256")
    path = f"/keys/{key.name}/{key.properties.version}/sign"
    cases = [
        ({"alg": "ES256", "value": "AAAA"}, "digest length"),
        ({"alg": "RS256", "value": "A" * 43}, "algorithm"),
        ({"alg": "XX999", "value": "A" * 43}, "algorithm"),
        ({"alg": "ES256", "value": "***"}, "base64url"),
    ]
    for body, _ in cases:
        r = server.vault_request("POST", path, token=token, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "BadParameter"
    r = server.vault_request("POST", f"/keys/{unique('k')}/create", token=token, json={"kty": "RSA", "key_size": 1024})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"
    # HSM keys need a premium vault (test_premium.py); this one is standard, as Azure says.
    r = server.vault_request("POST", f"/keys/{unique('k')}/create", token=token, json={"kty": "RSA-HSM"})
    assert r.status_code == 403 and "standard vault" in r.json()["error"]["message"]
    r = server.vault_request("POST", f"/keys/{unique('k')}/create", token=token, json={"kty": "oct-HSM"})
    assert r.status_code == 400 and "Managed HSM" in r.json()["error"]["message"]
    # Secure key release is not offered: refused, never silently ignored.
    for body in ({"kty": "EC", "attributes": {"exportable": True}},
                 {"kty": "EC", "release_policy": {"contentType": "application/json; charset=utf-8", "data": "e30"}}):
        r = server.vault_request("POST", f"/keys/{unique('k')}/create", token=token, json=body)
        assert r.status_code == 400 and "release" in r.json()["error"]["message"], r.text
    r = server.vault_request("PATCH", f"/keys/{key.name}", token=token, json={"attributes": {"exportable": True}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter", r.text
    r = server.vault_request("POST", f"/keys/{unique('k')}/create", token=token,
                             json={"kty": "EC", "attributes": {"exportable": False, "enabled": False}})
    assert r.status_code == 200 and r.json()["attributes"]["enabled"] is False, r.text


def test_disabled_and_restricted_keys_cannot_sign(server, credential, keys):
    digest = hashlib.sha256(b"no").digest()
    off = keys.create_ec_key(unique("off"), curve="P-256", enabled=False)
    with pytest.raises(HttpResponseError) as e:
        crypto(server, credential, off.id).sign(SignatureAlgorithm.es256, digest)
    assert e.value.status_code == 403
    verify_only = keys.create_ec_key(unique("vo"), curve="P-256", key_operations=["verify"])
    with pytest.raises(HttpResponseError) as e:
        crypto(server, credential, verify_only.id).sign(SignatureAlgorithm.es256, digest)
    assert e.value.status_code == 403


def test_list_versions_delete_recover_purge(server, keys):
    name = unique("life")
    first = keys.create_rsa_key(name)
    second = keys.create_rsa_key(name)
    assert first.properties.version != second.properties.version
    assert keys.get_key(name).properties.version == second.properties.version
    assert keys.get_key(name, first.properties.version).id == first.id
    versions = {p.version for p in keys.list_properties_of_key_versions(name)}
    assert versions == {first.properties.version, second.properties.version}
    assert name in {p.name for p in keys.list_properties_of_keys()}
    deleted = keys.begin_delete_key(name).result()
    assert deleted.recovery_id.endswith(f"/deletedkeys/{name}")
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(name)
    assert name in {d.name for d in keys.list_deleted_keys()}
    keys.begin_recover_deleted_key(name).result()
    assert keys.get_key(name).properties.version == second.properties.version
    keys.begin_delete_key(name).result()
    keys.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        keys.get_deleted_key(name)


@pytest.mark.parametrize("alg", ["RSA1_5", "RSA-OAEP", "RSA-OAEP-256"])
def test_what_pyca_encrypts_the_vault_decrypts_and_unwraps(server, credential, keys, alg):
    from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm
    key = keys.create_rsa_key(unique("enc"), size=2048)
    public = rsa_public(key.key)
    pad = {
        "RSA1_5": padding.PKCS1v15(),
        "RSA-OAEP": padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
        "RSA-OAEP-256": padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    }[alg]
    secret = b"0123456789abcdef0123456789abcdef"
    ct = public.encrypt(secret, pad)
    client = crypto(server, credential, key.id)
    assert client.decrypt(EncryptionAlgorithm(alg), ct).plaintext == secret
    assert client.unwrap_key(KeyWrapAlgorithm(alg), public.encrypt(secret, pad)).key == secret


def test_vault_encryption_round_trips_and_ciphertexts_differ(server, token, keys):
    import base64
    key = keys.create_rsa_key(unique("rt"), size=2048)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    unb64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    base = f"/keys/{key.name}/{key.properties.version}"
    outs = []
    for _ in range(2):
        r = server.vault_request("POST", f"{base}/encrypt", token=token, json={"alg": "RSA-OAEP-256", "value": b64(b"hello keys")})
        assert r.status_code == 200, r.text
        assert r.json()["kid"] == key.id
        outs.append(r.json()["value"])
    assert outs[0] != outs[1], "OAEP is randomized"
    r = server.vault_request("POST", f"{base}/decrypt", token=token, json={"alg": "RSA-OAEP-256", "value": outs[0]})
    assert r.status_code == 200 and unb64(r.json()["value"]) == b"hello keys"
    # Tampered OAEP ciphertext is refused; tampered RSA1_5 is not distinguishable.
    tampered = bytearray(unb64(outs[0]))
    tampered[10] ^= 1
    r = server.vault_request("POST", f"{base}/decrypt", token=token, json={"alg": "RSA-OAEP-256", "value": b64(bytes(tampered))})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"
    r = server.vault_request("POST", f"{base}/decrypt", token=token, json={"alg": "RSA1_5", "value": b64(bytes(tampered))})
    assert r.status_code == 200, "RSA1_5 padding failures are implicit rejections, not errors"
    too_long = b64(b"x" * 300)
    r = server.vault_request("POST", f"{base}/encrypt", token=token, json={"alg": "RSA-OAEP", "value": too_long})
    assert r.status_code == 400
    ec_key = keys.create_ec_key(unique("ecenc"))
    r = server.vault_request("POST", f"/keys/{ec_key.name}/{ec_key.properties.version}/encrypt", token=token,
                             json={"alg": "RSA-OAEP", "value": b64(b"x")})
    assert r.status_code == 403 and r.json()["error"]["innererror"]["code"] == "KeyOperationForbidden"


def _jwk_int(n: int, length: int | None = None) -> bytes:
    length = length or (n.bit_length() + 7) // 8
    return n.to_bytes(length, "big")


def test_imported_rsa_key_signs_and_what_the_vault_encrypts_pyca_decrypts(server, credential, keys):
    from azure.keyvault.keys import JsonWebKey
    from azure.keyvault.keys.crypto import EncryptionAlgorithm
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = private.private_numbers()
    jwk = JsonWebKey(kty="RSA", n=_jwk_int(nums.public_numbers.n), e=_jwk_int(nums.public_numbers.e),
                     d=_jwk_int(nums.d), p=_jwk_int(nums.p), q=_jwk_int(nums.q), dp=_jwk_int(nums.dmp1),
                     dq=_jwk_int(nums.dmq1), qi=_jwk_int(nums.iqmp))
    key = keys.import_key(unique("imp"), jwk)
    assert key.key.n == jwk.n and not getattr(key.key, "d", None)
    client = crypto(server, credential, key.id)
    digest = hashlib.sha256(b"imported").digest()
    sig = client.sign(SignatureAlgorithm.rs256, digest).signature
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    private.public_key().verify(sig, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    # The vault encrypts (server side, via raw REST) and pyca decrypts with the private key.
    import base64
    token = server.token(server.vault_scope)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    r = server.vault_request("POST", f"/keys/{key.name}/{key.properties.version}/encrypt", token=token,
                             json={"alg": "RSA-OAEP-256", "value": b64(b"for pyca")})
    assert r.status_code == 200, r.text
    ct = base64.urlsafe_b64decode(r.json()["value"] + "=" * (-len(r.json()["value"]) % 4))
    pt = private.decrypt(ct, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    assert pt == b"for pyca"


def test_imported_ec_key_signs(server, credential, keys):
    from azure.keyvault.keys import JsonWebKey
    private = ec.generate_private_key(ec.SECP384R1())
    nums = private.private_numbers()
    jwk = JsonWebKey(kty="EC", crv="P-384", x=_jwk_int(nums.public_numbers.x, 48), y=_jwk_int(nums.public_numbers.y, 48),
                     d=_jwk_int(nums.private_value, 48))
    key = keys.import_key(unique("impec"), jwk)
    digest = hashlib.sha384(b"imported ec").digest()
    sig = crypto(server, credential, key.id).sign(SignatureAlgorithm.es384, digest).signature
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    r, s = int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big")
    private.public_key().verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA384())))


def test_import_refuses_inconsistent_keys(server, token):
    import base64
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    a = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    b = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    bad = {"kty": "RSA", "n": b64(_jwk_int(a.public_numbers.n)), "e": b64(_jwk_int(65537)), "d": b64(_jwk_int(b.d)),
           "p": b64(_jwk_int(a.p)), "q": b64(_jwk_int(a.q)), "dp": b64(_jwk_int(a.dmp1)), "dq": b64(_jwk_int(a.dmq1)),
           "qi": b64(_jwk_int(a.iqmp))}
    r = server.vault_request("PUT", f"/keys/{unique('bad')}", token=token, json={"key": bad})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"
    r = server.vault_request("PUT", f"/keys/{unique('bad')}", token=token, json={"key": {"kty": "RSA", "n": "AQAB"}})
    assert r.status_code == 400


def test_update_properties_disables_and_restricts(server, credential, keys):
    key = keys.create_ec_key(unique("upd"))
    digest = hashlib.sha256(b"u").digest()
    updated = keys.update_key_properties(key.name, key.properties.version, enabled=False, tags={"t": "1"})
    assert updated.properties.enabled is False and updated.properties.tags == {"t": "1"}
    with pytest.raises(HttpResponseError) as e:
        crypto(server, credential, key.id).sign(SignatureAlgorithm.es256, digest)
    assert e.value.status_code == 403
    keys.update_key_properties(key.name, enabled=True, key_operations=["verify"])
    assert keys.get_key(key.name).key_operations == ["verify"]
    with pytest.raises(HttpResponseError) as e:
        crypto(server, credential, key.id).sign(SignatureAlgorithm.es256, digest)
    assert e.value.status_code == 403


def test_random_bytes(server, token, keys):
    got = keys.get_random_bytes(64)
    assert isinstance(got, bytes) and len(got) == 64 and got != keys.get_random_bytes(64)
    for count in (0, 129):
        r = server.vault_request("POST", "/rng", token=token, json={"count": count})
        assert r.status_code == 400


def test_backup_and_restore_keep_every_version_and_the_private_key(server, credential, keys, token):
    from azure.core.exceptions import ResourceExistsError
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    name = unique("bk")
    first = keys.create_ec_key(name, curve="P-256", tags={"gen": "1"})
    second = keys.create_rsa_key(name, size=2048)
    blob = keys.backup_key(name)
    assert isinstance(blob, bytes) and len(blob) > 64
    assert bytes(first.key.x) not in blob, "the blob is sealed, not a JWK dump"
    with pytest.raises(ResourceExistsError):
        keys.restore_key_backup(blob)  # the name is live
    keys.begin_delete_key(name).result()
    with pytest.raises(ResourceExistsError):
        keys.restore_key_backup(blob)  # soft-deleted names are taken too
    keys.purge_deleted_key(name)
    restored = keys.restore_key_backup(blob)
    assert restored.id == second.id and restored.key_type == "RSA"
    versions = {p.version: p for p in keys.list_properties_of_key_versions(name)}
    assert set(versions) == {first.properties.version, second.properties.version}
    assert versions[first.properties.version].tags == {"gen": "1"}
    # The restored versions still hold the same private keys: their
    # signatures verify under the public keys the vault issued before backup.
    digest = hashlib.sha256(b"survives backup").digest()
    sig = crypto(server, credential, first.id).sign(SignatureAlgorithm.es256, digest).signature
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    ec_public(first.key).verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    sig = crypto(server, credential, second.id).sign(SignatureAlgorithm.rs256, digest).signature
    rsa_public(second.key).verify(sig, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def test_restore_refuses_corrupt_blobs_and_other_kinds(server, token, keys):
    import base64
    secret_name = unique("notakey")
    r = server.vault_request("PUT", f"/secrets/{secret_name}", token=token, json={"value": "v"})
    assert r.status_code == 200, r.text
    r = server.vault_request("POST", f"/secrets/{secret_name}/backup", token=token)
    secret_blob = r.json()["value"]
    name = unique("bkc")
    keys.create_ec_key(name, curve="P-256")
    key_blob = keys.backup_key(name)
    r = server.vault_request("POST", "/secrets/restore", token=token,
                             json={"value": base64.urlsafe_b64encode(key_blob).decode().rstrip("=")})
    assert r.status_code == 400, "a key's backup never restores as a secret"
    tampered = bytearray(key_blob)
    tampered[len(tampered) // 2] ^= 1
    bad = [
        {"value": secret_blob},  # a secret's backup never restores as a key
        {"value": base64.urlsafe_b64encode(bytes(tampered)).decode().rstrip("=")},
        {"value": "AAAA"},
        {"value": "***"},
        {},
    ]
    for body in bad:
        r = server.vault_request("POST", "/keys/restore", token=token, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "BadParameter"
    r = server.vault_request("POST", f"/keys/{unique('none')}/backup", token=token)
    assert r.status_code == 404 and r.json()["error"]["code"] == "KeyNotFound"


def test_rotate_makes_a_new_version_of_the_same_shape(server, credential, keys):
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    name = unique("rot")
    ops = ["sign", "verify"]
    original = keys.create_rsa_key(name, size=3072, key_operations=ops, tags={"team": "pay"})
    rotated = keys.rotate_key(name)
    assert rotated.properties.version != original.properties.version
    assert rotated.key_type == "RSA" and len(rotated.key.n) * 8 == 3072 and rotated.key.e == original.key.e
    assert rotated.key.n != original.key.n, "fresh material"
    assert sorted(rotated.key_operations) == sorted(ops) and rotated.properties.tags == {"team": "pay"}
    assert keys.get_key(name).properties.version == rotated.properties.version
    assert {p.version for p in keys.list_properties_of_key_versions(name)} == {
        original.properties.version, rotated.properties.version}
    digest = hashlib.sha256(b"after rotation").digest()
    sig = crypto(server, credential, rotated.id).sign(SignatureAlgorithm.ps256, digest).signature
    rsa_public(rotated.key).verify(sig, digest, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                                   Prehashed(hashes.SHA256()))

    ec_name = unique("rotec")
    ec_key = keys.create_ec_key(ec_name, curve="P-384")
    ec_rotated = keys.rotate_key(ec_name)
    assert ec_rotated.key.crv == "P-384" and ec_rotated.key.x != ec_key.key.x

    with pytest.raises(ResourceNotFoundError):
        keys.rotate_key(unique("nokey"))


def test_rotation_policy_round_trips_through_the_sdk(server, keys):
    """The calls of the SDK's own rotation-policy test: an empty policy is
    accepted, overrides replace actions, durations come back as written."""
    from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
    name = unique("pol")
    keys.create_ec_key(name, curve="P-256")
    default = keys.get_key_rotation_policy(name)
    assert [(a.action, a.time_before_expiry) for a in default.lifetime_actions] == [
        (KeyRotationPolicyAction.notify, "P30D")]
    assert default.created_on is None and default.expires_in is None
    assert default.id.endswith(f"/keys/{name}/rotationpolicy")

    keys.update_key_rotation_policy(name, KeyRotationPolicy())
    actions = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P2M")]
    updated = keys.update_key_rotation_policy(name, KeyRotationPolicy(), lifetime_actions=actions)
    fetched = keys.get_key_rotation_policy(name)
    assert updated.expires_in is None and fetched.expires_in is None
    assert [(a.action, a.time_after_create, a.time_before_expiry) for a in fetched.lifetime_actions] == [
        (KeyRotationPolicyAction.rotate, "P2M", None)]
    assert fetched.created_on is not None and fetched.updated_on >= fetched.created_on

    newer = keys.update_key_rotation_policy(name, policy=updated, expires_in="P90D")
    assert newer.expires_in == "P90D"
    notify = [KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P60D")]
    newest = keys.update_key_rotation_policy(name, policy=newer, lifetime_actions=notify)
    fetched = keys.get_key_rotation_policy(name)
    assert newest.expires_in == fetched.expires_in == "P90D"
    assert [(a.action, a.time_before_expiry) for a in fetched.lifetime_actions] == [
        (KeyRotationPolicyAction.notify, "P60D")]

    # Rotation now applies the policy's expiryTime to the new version.
    rotated = keys.rotate_key(name)
    lifetime = rotated.properties.expires_on - rotated.properties.created_on
    assert lifetime.days == 90 and lifetime.seconds == 0, lifetime

    with pytest.raises(ResourceNotFoundError):
        keys.get_key_rotation_policy(unique("nokey"))
    with pytest.raises(HttpResponseError) as e:
        keys.update_key_rotation_policy(name, KeyRotationPolicy(), expires_in="P7D")
    assert e.value.status_code == 400 and "28 days" in e.value.message
    with pytest.raises(HttpResponseError) as e:
        keys.update_key_rotation_policy(name, KeyRotationPolicy(), lifetime_actions=[
            KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P1D")])
    assert e.value.status_code == 400
