//! The Managed HSM security domain, in the formats the Azure CLI's own
//! `security_domain` module reads and writes (azure-cli 2.91.0):
//!
//! - **Download**: the pool's state (tagged plaintexts) is encrypted under a
//!   fresh 32-byte blob key with compact JWE `dir` / `A256CBC-HS512`, each
//!   item's key derived by SP 800-108 (HMAC-SHA512, counter mode, label = the
//!   tag). The blob key is split by Shamir's scheme byte-wise over GF(257),
//!   M of N; each share is a compact JWE (`RSA-OAEP-256` / `A256CBC-HS512`)
//!   to one of the customer's wrapping certificates.
//! - **Upload**: the CLI recombines a quorum of shares client side, opens the
//!   items and re-encrypts them under a new blob key wrapped (JWE
//!   `RSA-OAEP-256`) to the pool's exchange key, which this module makes.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use keyhaven_core::sensitive::Sensitive;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Padding;
use openssl::sign::Signer;
use openssl::symm::{Cipher, Mode};
use serde::{Deserialize, Serialize};

/// Why a security-domain request or blob is refused (a 400 for the caller).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SdError(pub String);

type Result<T> = std::result::Result<T, SdError>;

fn err(msg: impl Into<String>) -> SdError {
    SdError(msg.into())
}

fn ossl(e: openssl::error::ErrorStack) -> SdError {
    let _ = e;
    err("a cryptographic operation failed")
}

const BLOB_KEY_LEN: usize = 32;
/// Fewest and most wrapping certificates, and the quorum's bounds (the CLI's).
pub const MIN_CERTS: usize = 3;
/// Most wrapping certificates.
pub const MAX_CERTS: usize = 10;

/// SP 800-108 counter-mode KDF with HMAC-SHA512, one block (what the CLI
/// computes for every length it asks, 512 bits): `HMAC(key, be32(1) || label
/// || 0x00 || context || be32(bits))`, truncated to `bits / 8`.
pub fn kdf(key: &[u8], label: &str, context: &str, bits: u32) -> Result<Sensitive<Vec<u8>>> {
    let k = PKey::hmac(key).map_err(ossl)?;
    let mut s = Signer::new(MessageDigest::sha512(), &k).map_err(ossl)?;
    s.update(&1u32.to_be_bytes()).map_err(ossl)?;
    s.update(label.as_bytes()).map_err(ossl)?;
    s.update(&[0]).map_err(ossl)?;
    s.update(context.as_bytes()).map_err(ossl)?;
    s.update(&bits.to_be_bytes()).map_err(ossl)?;
    let mut out = s.sign_to_vec().map_err(ossl)?;
    out.truncate((bits / 8) as usize);
    Ok(Sensitive::new(out))
}

fn hs512_tag(mac_key: &[u8], aad: &[u8], iv: &[u8], ct: &[u8]) -> Result<Vec<u8>> {
    let k = PKey::hmac(mac_key).map_err(ossl)?;
    let mut s = Signer::new(MessageDigest::sha512(), &k).map_err(ossl)?;
    s.update(aad).map_err(ossl)?;
    s.update(iv).map_err(ossl)?;
    s.update(ct).map_err(ossl)?;
    s.update(&((aad.len() as u64) * 8).to_be_bytes())
        .map_err(ossl)?;
    let mut t = s.sign_to_vec().map_err(ossl)?;
    t.truncate(32);
    Ok(t)
}

fn cbc(mode: Mode, key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    let cipher = Cipher::aes_256_cbc();
    match mode {
        Mode::Encrypt => openssl::symm::encrypt(cipher, key, Some(iv), data).map_err(ossl),
        Mode::Decrypt => openssl::symm::decrypt(cipher, key, Some(iv), data)
            .map_err(|_| err("the security domain does not decrypt")),
    }
}

fn random(n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0; n];
    openssl::rand::rand_bytes(&mut b).map_err(ossl)?;
    Ok(b)
}

/// A compact JWE with `enc: A256CBC-HS512` and the given header, content key
/// and (already wrapped, or empty for `dir`) encrypted key.
fn jwe_encrypt(header: &str, cek: &[u8], encrypted_key: &[u8], plaintext: &[u8]) -> Result<String> {
    let (mac_key, enc_key) = cek.split_at(32);
    let h = URL_SAFE_NO_PAD.encode(header);
    let iv = random(16)?;
    let ct = cbc(Mode::Encrypt, enc_key, &iv, plaintext)?;
    let tag = hs512_tag(mac_key, h.as_bytes(), &iv, &ct)?;
    Ok(format!(
        "{h}.{}.{}.{}.{}",
        URL_SAFE_NO_PAD.encode(encrypted_key),
        URL_SAFE_NO_PAD.encode(&iv),
        URL_SAFE_NO_PAD.encode(&ct),
        URL_SAFE_NO_PAD.encode(&tag)
    ))
}

struct Jwe {
    header: serde_json::Value,
    header_b64: String,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ct: Vec<u8>,
    tag: Vec<u8>,
}

fn b64u(part: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| err("the security domain holds a JWE part that is not base64url"))
}

fn jwe_parse(compact: &str) -> Result<Jwe> {
    let parts: Vec<&str> = compact.split('.').collect();
    let [h, k, iv, ct, tag] = parts.as_slice() else {
        return Err(err(
            "the security domain holds a JWE that is not compact JWE",
        ));
    };
    let header: serde_json::Value = serde_json::from_slice(&b64u(h)?)
        .map_err(|_| err("the security domain holds a JWE header that is not JSON"))?;
    if header.get("enc").and_then(|e| e.as_str()) != Some("A256CBC-HS512") {
        return Err(err("the security domain's JWE must use enc A256CBC-HS512"));
    }
    Ok(Jwe {
        header,
        header_b64: (*h).to_owned(),
        encrypted_key: b64u(k)?,
        iv: b64u(iv)?,
        ct: b64u(ct)?,
        tag: b64u(tag)?,
    })
}

fn jwe_decrypt(j: &Jwe, cek: &[u8]) -> Result<Sensitive<Vec<u8>>> {
    if cek.len() != 64 || j.iv.len() != 16 || j.tag.len() != 32 {
        return Err(err("the security domain does not decrypt"));
    }
    let (mac_key, enc_key) = cek.split_at(32);
    let want = hs512_tag(mac_key, j.header_b64.as_bytes(), &j.iv, &j.ct)?;
    if !openssl::memcmp::eq(&want, &j.tag) {
        return Err(err(
            "the security domain does not authenticate: it was altered or belongs to another key",
        ));
    }
    Ok(Sensitive::new(cbc(Mode::Decrypt, enc_key, &j.iv, &j.ct)?))
}

/// RSA-OAEP with SHA-256 and MGF1-SHA-256, no label (JWE `RSA-OAEP-256`),
/// on a context already initialised for encryption or decryption.
fn oaep256<T>(ctx: &mut openssl::pkey_ctx::PkeyCtx<T>) -> Result<()> {
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).map_err(ossl)?;
    ctx.set_rsa_oaep_md(openssl::md::Md::sha256())
        .map_err(ossl)?;
    ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).map_err(ossl)
}

fn oaep256_encrypt(key: &PKey<Public>, data: &[u8]) -> Result<Vec<u8>> {
    let mut ctx = openssl::pkey_ctx::PkeyCtx::new(key).map_err(ossl)?;
    ctx.encrypt_init().map_err(ossl)?;
    oaep256(&mut ctx)?;
    let mut out = Vec::new();
    ctx.encrypt_to_vec(data, &mut out).map_err(ossl)?;
    Ok(out)
}

fn oaep256_decrypt(key: &PKey<Private>, data: &[u8]) -> Result<Sensitive<Vec<u8>>> {
    let mut ctx = openssl::pkey_ctx::PkeyCtx::new(key).map_err(ossl)?;
    ctx.decrypt_init().map_err(ossl)?;
    oaep256(&mut ctx)?;
    let mut out = Vec::new();
    ctx.decrypt_to_vec(data, &mut out).map_err(|_| {
        err("the security domain's wrapped key does not open with this HSM's exchange key")
    })?;
    Ok(Sensitive::new(out))
}

// --- Shamir over GF(257), byte-wise ---

const P: u32 = 257;

fn inv(x: u32) -> u32 {
    // x^(p-2) mod p.
    let (mut r, mut b, mut e) = (1u32, x % P, P - 2);
    while e > 0 {
        if e & 1 == 1 {
            r = r * b % P;
        }
        b = b * b % P;
        e >>= 1;
    }
    r
}

/// Splits `secret` into `n` shares, any `m` of which recover it: share `x`
/// (1-based) is one little-endian `u16` per secret byte, `(x << 9) | P(x)`.
pub fn shamir_split(secret: &[u8], n: usize, m: usize) -> Result<Vec<Sensitive<Vec<u8>>>> {
    if m < 2 || m > n || n > 126 {
        return Err(err(
            "the quorum must be between 2 and the number of certificates",
        ));
    }
    let mut shares: Vec<Vec<u8>> = vec![Vec::with_capacity(secret.len() * 2); n];
    let mut coeffs = vec![0u32; m];
    for b in secret {
        for (k, c) in coeffs.iter_mut().enumerate() {
            if k == 0 {
                *c = u32::from(*b);
                continue;
            }
            // Uniform in 0..257 by rejection from two random bytes.
            loop {
                let mut r = [0u8; 2];
                openssl::rand::rand_bytes(&mut r).map_err(ossl)?;
                let v = u32::from(u16::from_le_bytes(r));
                if v < 65535 - (65535 % P) {
                    *c = v % P;
                    break;
                }
            }
        }
        for (x, share) in (1u32..).zip(shares.iter_mut()) {
            let y = coeffs.iter().rev().fold(0u32, |acc, c| (acc * x + c) % P);
            let w = u16::try_from((x << 9) | y).map_err(|_| err("share index out of range"))?;
            share.extend_from_slice(&w.to_le_bytes());
        }
    }
    coeffs.iter_mut().for_each(|c| *c = 0);
    Ok(shares.into_iter().map(Sensitive::new).collect())
}

/// Recombines shares made by [`shamir_split`] (or the CLI's encoding).
pub fn shamir_combine(shares: &[&[u8]]) -> Result<Sensitive<Vec<u8>>> {
    let first = shares.first().ok_or_else(|| err("no shares"))?;
    if first.len() % 2 != 0 || first.is_empty() || shares.iter().any(|s| s.len() != first.len()) {
        return Err(err("the shares differ in length"));
    }
    let words: Vec<Vec<u32>> = shares
        .iter()
        .map(|s| {
            s.chunks_exact(2)
                .map(|w| {
                    u32::from(u16::from_le_bytes([
                        w.first().copied().unwrap_or(0),
                        w.last().copied().unwrap_or(0),
                    ]))
                })
                .collect()
        })
        .collect();
    let xs: Vec<u32> = words
        .iter()
        .map(|w| w.first().map_or(0, |v| v >> 9))
        .collect();
    for (i, x) in xs.iter().enumerate() {
        if *x == 0 || xs.iter().take(i).any(|y| y == x) {
            return Err(err("the shares are not distinct"));
        }
    }
    let len = first.len() / 2;
    let mut out = Vec::with_capacity(len);
    for pos in 0..len {
        let mut acc = 0u32;
        for (i, (share, xi)) in words.iter().zip(&xs).enumerate() {
            let w = share.get(pos).copied().unwrap_or(0);
            if w >> 9 != *xi {
                return Err(err("a share changes its index"));
            }
            let y = (w & 0x1ff) % P;
            let mut l = 1u32;
            for (j, xj) in xs.iter().enumerate() {
                if i != j {
                    l = l * xj % P * inv((xj + P - xi) % P) % P;
                }
            }
            acc = (acc + y * l) % P;
        }
        out.push(u8::try_from(acc).map_err(|_| err("the shares do not recombine"))?);
    }
    Ok(Sensitive::new(out))
}

// --- The blob ---

#[derive(Serialize, Deserialize)]
struct DataItem {
    compact_jwe: String,
    tag: String,
}

#[derive(Serialize, Deserialize)]
struct EncData {
    data: Vec<DataItem>,
    kdf: String,
}

#[derive(Serialize, Deserialize)]
struct EncShare {
    enc_key: String,
    x5t_256: String,
}

#[derive(Serialize, Deserialize)]
struct SharedKeys {
    enc_shares: Vec<EncShare>,
    key_algorithm: String,
    required: usize,
}

#[derive(Serialize)]
struct DownloadBlob {
    #[serde(rename = "EncData")]
    enc_data: EncData,
    #[serde(rename = "SharedKeys")]
    shared_keys: SharedKeys,
    version: u32,
}

#[derive(Deserialize)]
struct WrappedKey {
    enc_key: String,
    x5t_256: String,
}

#[derive(Deserialize)]
struct UploadBlob {
    #[serde(rename = "EncData")]
    enc_data: EncData,
    #[serde(rename = "WrappedKey")]
    wrapped_key: WrappedKey,
}

/// `x5t#S256`: base64url SHA-256 of a certificate's DER.
pub fn x5t_256(cert_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(openssl::sha::sha256(cert_der))
}

/// A wrapping certificate from the download request: `x5c[0]` of a JWK,
/// which must be an RSA key of at least 2048 bits.
pub fn wrapping_cert(jwk: &serde_json::Value) -> Result<Vec<u8>> {
    let jwk = jwk.get("value").unwrap_or(jwk);
    let der = jwk
        .get("x5c")
        .and_then(|x| x.as_array())
        .and_then(|a| a.first())
        .and_then(|c| c.as_str())
        .and_then(|c| STANDARD.decode(c).ok())
        .ok_or_else(|| err("Each certificate must be a JWK with an x5c chain (base64 DER)."))?;
    let cert = openssl::x509::X509::from_der(&der)
        .map_err(|_| err("A wrapping certificate's x5c[0] is not an X.509 certificate."))?;
    let key = cert.public_key().map_err(ossl)?;
    match key.rsa() {
        Ok(r) if r.size() * 8 >= 2048 => Ok(der),
        _ => Err(err(
            "Wrapping certificates must hold RSA keys of at least 2048 bits.",
        )),
    }
}

/// Makes the download blob (JSON text): `items` encrypted under a fresh blob
/// key split `required`-of-`certs.len()` to the wrapping certificates.
pub fn make_download(
    certs: &[Vec<u8>],
    required: usize,
    items: &[(&str, &[u8])],
) -> Result<String> {
    if !(MIN_CERTS..=MAX_CERTS).contains(&certs.len()) {
        return Err(err(format!(
            "Between {MIN_CERTS} and {MAX_CERTS} wrapping certificates are required."
        )));
    }
    if required < 2 || required > certs.len() {
        return Err(err(format!(
            "The quorum ('required') must be at least 2 and at most the number of certificates ({}).",
            certs.len()
        )));
    }
    let mut thumbprints: Vec<String> = certs.iter().map(|c| x5t_256(c)).collect();
    thumbprints.sort();
    thumbprints.dedup();
    if thumbprints.len() != certs.len() {
        return Err(err("The wrapping certificates must be distinct."));
    }
    let blob_key = Sensitive::new(random(BLOB_KEY_LEN)?);
    let mut data = Vec::with_capacity(items.len());
    for (tag, plaintext) in items {
        let cek = kdf(blob_key.expose(), tag, "", 512)?;
        let header =
            serde_json::json!({"alg": "dir", "enc": "A256CBC-HS512", "kid": tag}).to_string();
        data.push(DataItem {
            compact_jwe: jwe_encrypt(&header, cek.expose(), &[], plaintext)?,
            tag: (*tag).to_owned(),
        });
    }
    let shares = shamir_split(blob_key.expose(), certs.len(), required)?;
    let mut enc_shares = Vec::with_capacity(certs.len());
    for (cert, share) in certs.iter().zip(&shares) {
        let x509 = openssl::x509::X509::from_der(cert).map_err(ossl)?;
        let public = x509.public_key().map_err(ossl)?;
        let cek = Sensitive::new(random(64)?);
        let wrapped = oaep256_encrypt(&public, cek.expose())?;
        let kid = x5t_256(cert);
        let header = serde_json::json!({"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512", "kid": kid})
            .to_string();
        enc_shares.push(EncShare {
            enc_key: jwe_encrypt(&header, cek.expose(), &wrapped, share.expose())?,
            x5t_256: kid,
        });
    }
    let blob = DownloadBlob {
        enc_data: EncData {
            data,
            kdf: "sp108_kdf".into(),
        },
        shared_keys: SharedKeys {
            enc_shares,
            key_algorithm: "shamir_share".into(),
            required,
        },
        version: 2,
    };
    serde_json::to_string(&blob).map_err(|_| err("the security domain could not be written"))
}

/// A pool's exchange key for an upload: an RSA-3072 key and a self-signed
/// certificate for it. Returns (private key PKCS#8 DER, certificate DER).
pub fn new_exchange_key(subject: &str) -> Result<(Sensitive<Vec<u8>>, Vec<u8>)> {
    let rsa = openssl::rsa::Rsa::generate(3072).map_err(ossl)?;
    let key = PKey::from_rsa(rsa).map_err(ossl)?;
    let mut name = openssl::x509::X509NameBuilder::new().map_err(ossl)?;
    name.append_entry_by_text("CN", subject).map_err(ossl)?;
    let name = name.build();
    let mut b = openssl::x509::X509Builder::new().map_err(ossl)?;
    b.set_version(2).map_err(ossl)?;
    let serial = openssl::bn::BigNum::from_slice(&random(16)?)
        .and_then(|n| n.to_asn1_integer())
        .map_err(ossl)?;
    b.set_serial_number(&serial).map_err(ossl)?;
    b.set_subject_name(&name).map_err(ossl)?;
    b.set_issuer_name(&name).map_err(ossl)?;
    b.set_pubkey(&key).map_err(ossl)?;
    let now = openssl::asn1::Asn1Time::days_from_now(0).map_err(ossl)?;
    let later = openssl::asn1::Asn1Time::days_from_now(365).map_err(ossl)?;
    b.set_not_before(&now).map_err(ossl)?;
    b.set_not_after(&later).map_err(ossl)?;
    b.sign(&key, MessageDigest::sha256()).map_err(ossl)?;
    let cert = b.build().to_der().map_err(ossl)?;
    let private = key.private_key_to_pkcs8().map_err(ossl)?;
    Ok((Sensitive::new(private), cert))
}

/// The transfer key as `GET /securitydomain/upload` returns it: a JWK (as
/// JSON text) with the exchange certificate in `x5c`.
pub fn transfer_key_jwk(cert_der: &[u8]) -> Result<String> {
    let cert = openssl::x509::X509::from_der(cert_der).map_err(ossl)?;
    let rsa = cert.public_key().and_then(|k| k.rsa()).map_err(ossl)?;
    let sha1 = openssl::hash::hash(MessageDigest::sha1(), cert_der).map_err(ossl)?;
    Ok(serde_json::json!({
        "kty": "RSA",
        "key_ops": ["wrapKey", "verify", "encrypt"],
        "kid": "not used",
        "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
        "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
        "x5c": [STANDARD.encode(cert_der)],
        "x5t": URL_SAFE_NO_PAD.encode(sha1),
        "x5t#S256": x5t_256(cert_der),
    })
    .to_string())
}

/// Opens an upload blob with the pool's exchange key: the tagged plaintexts.
pub fn open_upload(
    blob: &str,
    exchange_private: &[u8],
    exchange_cert: &[u8],
) -> Result<Vec<(String, Sensitive<Vec<u8>>)>> {
    let b: UploadBlob = serde_json::from_str(blob.trim()).map_err(|_| {
        err("The security domain to upload is not a restore blob (EncData and WrappedKey); make it with `az keyvault security-domain upload` or `restore-blob`.")
    })?;
    if b.wrapped_key.x5t_256 != x5t_256(exchange_cert) {
        return Err(err(
            "The security domain was wrapped to another exchange key; run init-recovery again and use the key it gives.",
        ));
    }
    let key = PKey::private_key_from_pkcs8(exchange_private).map_err(ossl)?;
    let jwe = jwe_parse(&b.wrapped_key.enc_key)?;
    if jwe.header.get("alg").and_then(|a| a.as_str()) != Some("RSA-OAEP-256") {
        return Err(err("The wrapped key must use alg RSA-OAEP-256."));
    }
    let cek = oaep256_decrypt(&key, &jwe.encrypted_key)?;
    let blob_key = jwe_decrypt(&jwe, cek.expose())?;
    if b.enc_data.data.is_empty() || b.enc_data.data.len() > 16 {
        return Err(err("The security domain holds no data."));
    }
    let mut out = Vec::with_capacity(b.enc_data.data.len());
    for item in &b.enc_data.data {
        let jwe = jwe_parse(&item.compact_jwe)?;
        let cek = kdf(blob_key.expose(), &item.tag, "", 512)?;
        out.push((item.tag.clone(), jwe_decrypt(&jwe, cek.expose())?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn kdf_matches_the_cli() {
        // The CLI's own self test and a vector checked against its classes.
        let k = kdf(&[0x41; 32], "label", "context", 256).unwrap();
        assert_eq!(
            hex(k.expose()),
            "f0ca51f6308791404bf68b56024ee7c64d6c737716f81d47e1e68b5c4e399575"
        );
        let key: Vec<u8> = (0u8..32).collect();
        let k = kdf(&key, "hsm_backup", "", 512).unwrap();
        assert_eq!(hex(k.expose()), "2d34f55a1dd64e68d793ce19439e032e913bc2c83a99237a33c1bde888fb91da91626f37c72aaff2d718d3e7a37f0a39417a66839669da3c76fe4336aec9747c");
    }

    #[test]
    fn jwe_opens_a_cli_made_item() {
        let key: Vec<u8> = (0u8..32).collect();
        let cek = kdf(&key, "hsm_backup", "", 512).unwrap();
        let jwe = jwe_parse("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2Q0JDLUhTNTEyIiwia2lkIjoiaHNtX2JhY2t1cCJ9..AAECAwQFBgcICQoLDA0ODw.sP-P7nWpBWTMY4a8y_LL1Lk2VxGjRL0QPpsK47q7dDI.SOefSfXnco91HJnlDeXXU1ji_0PhraQNZY87FUkv6o0").unwrap();
        assert_eq!(
            jwe_decrypt(&jwe, cek.expose()).unwrap().expose().as_slice(),
            b"hello security domain"
        );
        // One flipped bit of the ciphertext: refused, not decrypted.
        let bad = jwe_parse("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2Q0JDLUhTNTEyIiwia2lkIjoiaHNtX2JhY2t1cCJ9..AAECAwQFBgcICQoLDA0ODw.sP-P7nWpBWTMY4a8y_LL1Lk2VxGjRL0QPpsK47q7dDM.SOefSfXnco91HJnlDeXXU1ji_0PhraQNZY87FUkv6o0").unwrap();
        assert!(jwe_decrypt(&bad, cek.expose()).is_err());
    }

    #[test]
    fn shamir_recombines_cli_shares_and_its_own() {
        let decode = |h: &str| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let s1 = decode("c8024602c602d802");
        let s2 = decode("8f040d048d049f04");
        let s3 = decode("5606d50654066606");
        for pair in [[&s1, &s2], [&s1, &s3], [&s3, &s2]] {
            let got = shamir_combine(&[pair[0], pair[1]]).unwrap();
            assert_eq!(got.expose().as_slice(), &[0x00, 0x7f, 0xff, 0x10]);
        }
        let secret: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37)).collect();
        let shares = shamir_split(&secret, 5, 3).unwrap();
        let pick = |idx: &[usize]| -> Vec<&[u8]> {
            idx.iter().map(|i| shares[*i].expose().as_slice()).collect()
        };
        assert_eq!(shamir_combine(&pick(&[0, 2, 4])).unwrap().expose(), &secret);
        assert_eq!(shamir_combine(&pick(&[4, 1, 3])).unwrap().expose(), &secret);
        // Two of a 3-quorum give something else.
        // (A byte may come out as 256, which is no byte at all: an error.)
        assert!(shamir_combine(&pick(&[0, 1])).map_or(true, |got| got.expose() != &secret));
        assert!(shamir_split(&secret, 3, 4).is_err());
        assert!(shamir_split(&secret, 3, 1).is_err());
    }

    /// The whole round trip as the CLI does it: download to three
    /// certificates, recombine two shares, re-wrap to the exchange key,
    /// upload.
    #[test]
    fn download_then_upload_round_trip() {
        let mut certs = Vec::new();
        let mut keys = Vec::new();
        for i in 0..3 {
            let (k, c) = new_exchange_key(&format!("sd{i}")).unwrap();
            keys.push(PKey::private_key_from_pkcs8(k.expose()).unwrap());
            certs.push(c);
        }
        let blob = make_download(&certs, 2, &[("hsm_backup", b"domain state")]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&blob).unwrap();
        let shares = v["SharedKeys"]["enc_shares"].as_array().unwrap();
        let mut plain = Vec::new();
        for (i, s) in shares.iter().enumerate().take(2) {
            assert_eq!(s["x5t_256"], x5t_256(&certs[i]));
            let j = jwe_parse(s["enc_key"].as_str().unwrap()).unwrap();
            let cek = oaep256_decrypt(&keys[i], &j.encrypted_key).unwrap();
            plain.push(jwe_decrypt(&j, cek.expose()).unwrap());
        }
        let blob_key =
            shamir_combine(&[plain[0].expose().as_slice(), plain[1].expose().as_slice()]).unwrap();
        let item = &v["EncData"]["data"][0];
        let cek = kdf(blob_key.expose(), "hsm_backup", "", 512).unwrap();
        let state = jwe_decrypt(
            &jwe_parse(item["compact_jwe"].as_str().unwrap()).unwrap(),
            cek.expose(),
        )
        .unwrap();
        assert_eq!(state.expose().as_slice(), b"domain state");
        // Re-wrap for upload under a new key to the exchange key.
        let (xk, xc) = new_exchange_key("exchange").unwrap();
        let new_key = random(32).unwrap();
        let cek = kdf(&new_key, "hsm_backup", "", 512).unwrap();
        let h = r#"{"alg":"dir","enc":"A256CBC-HS512","kid":"hsm_backup"}"#;
        let data = jwe_encrypt(h, cek.expose(), &[], state.expose()).unwrap();
        let wrap_cek = random(64).unwrap();
        let xpub = openssl::x509::X509::from_der(&xc)
            .unwrap()
            .public_key()
            .unwrap();
        let wrapped = oaep256_encrypt(&xpub, &wrap_cek).unwrap();
        let wh = r#"{"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":"not used"}"#;
        let enc_key = jwe_encrypt(wh, &wrap_cek, &wrapped, &new_key).unwrap();
        let upload = serde_json::json!({
            "EncData": {"data": [{"compact_jwe": data, "tag": "hsm_backup"}], "kdf": "sp108_kdf"},
            "WrappedKey": {"enc_key": enc_key, "x5t_256": x5t_256(&xc)},
        })
        .to_string();
        let opened = open_upload(&upload, xk.expose(), &xc).unwrap();
        assert_eq!(opened[0].0, "hsm_backup");
        assert_eq!(opened[0].1.expose().as_slice(), b"domain state");
        // Another pool's exchange key does not open it.
        let (ok2, oc2) = new_exchange_key("other").unwrap();
        assert!(open_upload(&upload, ok2.expose(), &oc2).is_err());
        // A tampered item is refused.
        let tampered = upload.replacen("\"compact_jwe\":\"eyJ", "\"compact_jwe\":\"eyK", 1);
        assert!(open_upload(&tampered, xk.expose(), &xc).is_err());
    }
}
