"""The client side of a Managed HSM security domain, written from the
formats the Azure CLI's `security_domain` module reads and writes
(azure-cli 2.91.0), with pyca/cryptography only: an independent check of
what Keyhaven produces and accepts (the CLI lab runs the real `az`).

- shares: compact JWE, alg RSA-OAEP-256, enc A256CBC-HS512; each holds one
  little-endian u16 per secret byte, `(x << 9) | P(x)` over GF(257);
- data items: compact JWE, alg dir, enc A256CBC-HS512, the key derived by
  SP 800-108 (HMAC-SHA512, counter mode, label = the item's tag).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Dict, List, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding as sympad
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding

P = 257


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_dec(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kdf(key: bytes, label: str) -> bytes:
    return hmac.new(key, b"\x00\x00\x00\x01" + label.encode() + b"\x00" + b"" + (512).to_bytes(4, "big"),
                    hashlib.sha512).digest()


def _tag(mac_key: bytes, header_b64: str, iv: bytes, ct: bytes) -> bytes:
    aad = header_b64.encode()
    return hmac.new(mac_key, aad + iv + ct + (len(aad) * 8).to_bytes(8, "big"), hashlib.sha512).digest()[:32]


def jwe_encrypt(header: dict, cek: bytes, encrypted_key: bytes, plaintext: bytes) -> str:
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(16)
    padder = sympad.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(cek[32:]), modes.CBC(iv)).encryptor()
    ct = enc.update(padded) + enc.finalize()
    return ".".join([h, b64u(encrypted_key), b64u(iv), b64u(ct), b64u(_tag(cek[:32], h, iv, ct))])


def jwe_decrypt(compact: str, cek: bytes) -> bytes:
    h, _k, iv, ct, tag = compact.split(".")
    header = json.loads(b64u_dec(h))
    assert header["enc"] == "A256CBC-HS512", header
    iv_b, ct_b = b64u_dec(iv), b64u_dec(ct)
    if not hmac.compare_digest(_tag(cek[:32], h, iv_b, ct_b), b64u_dec(tag)):
        raise ValueError("JWE tag does not verify")
    dec = Cipher(algorithms.AES(cek[32:]), modes.CBC(iv_b)).decryptor()
    padded = dec.update(ct_b) + dec.finalize()
    unpadder = sympad.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


OAEP256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def jwe_rsa_decrypt(compact: str, private_key) -> bytes:
    header = json.loads(b64u_dec(compact.split(".")[0]))
    assert header["alg"] == "RSA-OAEP-256", header
    cek = private_key.decrypt(b64u_dec(compact.split(".")[1]), OAEP256)
    return jwe_decrypt(compact, cek)


def cert_x5t256(cert: x509.Certificate) -> str:
    return b64u(hashlib.sha256(cert.public_bytes(Encoding.DER)).digest())


def wrapping_jwk(cert: x509.Certificate) -> dict:
    """A certificate as `az keyvault security-domain download` sends it."""
    der = cert.public_bytes(Encoding.DER)
    pub = cert.public_key().public_numbers()
    return {"x5c": [base64.b64encode(der).decode()], "x5t": b64u(hashlib.sha1(der).digest()),
            "x5t#S256": b64u(hashlib.sha256(der).digest()), "key_ops": ["verify", "encrypt", "wrapKey"],
            "kty": "RSA", "alg": "RSA-OAEP-256",
            "n": b64u(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")), "e": b64u(pub.e.to_bytes(3, "big"))}


def combine(shares: List[bytes]) -> bytes:
    words = [[int.from_bytes(s[i:i + 2], "little") for i in range(0, len(s), 2)] for s in shares]
    xs = [w[0] >> 9 for w in words]
    out = bytearray()
    for pos in range(len(words[0])):
        acc = 0
        for i, w in enumerate(words):
            assert w[pos] >> 9 == xs[i]
            y = w[pos] & 0x1FF
            num, den = 1, 1
            for j, xj in enumerate(xs):
                if j != i:
                    num = num * xj % P
                    den = den * (xj - xs[i]) % P
            acc = (acc + y * num * pow(den, P - 2, P)) % P
        if acc > 255:
            raise ValueError("the shares do not recombine to a key")
        out.append(acc)
    return bytes(out)


def open_download(blob: str, keys: List[Tuple[x509.Certificate, rsa.RSAPrivateKey]]) -> Dict[str, bytes]:
    """What `restore-blob` does first: a quorum of shares → the blob key →
    the tagged plaintexts."""
    sd = json.loads(blob)
    shared = sd["SharedKeys"]
    assert shared["key_algorithm"] == "shamir_share"
    shares = []
    for cert, key in keys:
        thumb = cert_x5t256(cert)
        for s in shared["enc_shares"]:
            if s["x5t_256"] == thumb:
                shares.append(jwe_rsa_decrypt(s["enc_key"], key))
    if len(shares) < shared["required"]:
        raise ValueError(f"{len(shares)} shares for a quorum of {shared['required']}")
    blob_key = combine(shares[: shared["required"]])
    return {d["tag"]: jwe_decrypt(d["compact_jwe"], kdf(blob_key, d["tag"])) for d in sd["EncData"]["data"]}


def restore_blob(items: Dict[str, bytes], exchange_cert: x509.Certificate) -> str:
    """What `upload` sends: the items under a new blob key wrapped to the
    HSM's exchange key."""
    new_key = os.urandom(32)
    data = [{"compact_jwe": jwe_encrypt({"alg": "dir", "enc": "A256CBC-HS512", "kid": tag}, kdf(new_key, tag), b"", pt),
             "tag": tag} for tag, pt in items.items()]
    cek = os.urandom(64)
    wrapped = exchange_cert.public_key().encrypt(cek, OAEP256)
    enc_key = jwe_encrypt({"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512", "kid": "not used"}, cek, wrapped, new_key)
    return json.dumps({"EncData": {"data": data, "kdf": "sp108_kdf"},
                       "WrappedKey": {"enc_key": enc_key, "x5t_256": cert_x5t256(exchange_cert)}})
