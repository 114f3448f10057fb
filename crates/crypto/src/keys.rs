//! The software key backend: keys generated and used by the system OpenSSL 3
//! (through the `openssl` crate). Private keys leave it only as PKCS#8 DER to
//! be sealed by the barrier; signatures follow JOSE (EC signatures are raw
//! `r || s`, fixed width).

use keyhaven_core::key::{
    CipherAlgorithm, Curve, KeyBackend, KeySpec, KeyType, PrivateJwk, PublicKey, SealedPrivate,
    SignAlgorithm,
};
use keyhaven_core::{Error, Result, Sensitive};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};

/// Most key handles kept; the cache is cleared past this.
const KEY_CACHE: usize = 4096;

/// Keys in software, with OpenSSL. Decrypted, parsed private keys are cached
/// by the identity of their sealed material ([`SealedPrivate::id`]): OpenSSL
/// 3's decoders and RSA's blinding setup cost far more than a signature, so a
/// sign with a warm handle neither decrypts nor parses. OpenSSL clears private
/// key components when a key is freed; the RSA1_5 rejection seed is zeroized.
#[derive(Default)]
pub struct SoftwareKeys {
    handles: std::sync::RwLock<std::collections::HashMap<Vec<u8>, std::sync::Arc<Handle>>>,
}

/// A decrypted private key ready for use.
pub(crate) struct Handle {
    pub(crate) pkey: PKey<Private>,
    /// Key-derivation secret of RSA1_5 implicit rejection: SHA-256 of the
    /// private exponent (as OpenSSL 3.2 derives it), computed once.
    rejection_seed: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SoftwareKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareKeys")
    }
}

impl SoftwareKeys {
    /// A backend with an empty key cache.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn handle(&self, key: &SealedPrivate<'_>) -> Result<std::sync::Arc<Handle>> {
        if let Some(h) = self
            .handles
            .read()
            .ok()
            .and_then(|m| m.get(key.id).cloned())
        {
            return Ok(h);
        }
        let der = (key.open)()?;
        let pkey = PKey::private_key_from_pkcs8(der.expose()).map_err(crypto_err)?;
        let rejection_seed = zeroize::Zeroizing::new(match pkey.rsa() {
            Ok(rsa) => {
                let d = zeroize::Zeroizing::new(
                    rsa.d()
                        .to_vec_padded(rsa.size() as i32)
                        .map_err(crypto_err)?,
                );
                openssl::sha::sha256(&d)
            }
            Err(_) => [0u8; 32],
        });
        let handle = std::sync::Arc::new(Handle {
            pkey,
            rejection_seed,
        });
        if let Ok(mut m) = self.handles.write() {
            if m.len() >= KEY_CACHE {
                m.clear();
            }
            m.insert(key.id.to_vec(), handle.clone());
        }
        Ok(handle)
    }
}

pub(crate) fn crypto_err<T>(_: T) -> Error {
    Error::Integrity
}

pub(crate) fn nid(curve: Curve) -> Nid {
    match curve {
        Curve::P256 => Nid::X9_62_PRIME256V1,
        Curve::P384 => Nid::SECP384R1,
        Curve::P521 => Nid::SECP521R1,
        Curve::P256K => Nid::SECP256K1,
    }
}

fn digest_of(alg: SignAlgorithm) -> MessageDigest {
    match alg {
        SignAlgorithm::Rs(384) | SignAlgorithm::Ps(384) | SignAlgorithm::Es(384) => {
            MessageDigest::sha384()
        }
        SignAlgorithm::Rs(512) | SignAlgorithm::Ps(512) | SignAlgorithm::Es(512) => {
            MessageDigest::sha512()
        }
        _ => MessageDigest::sha256(),
    }
}

pub(crate) fn public_of<T: openssl::pkey::HasPublic>(pkey: &PKey<T>) -> Result<PublicKey> {
    if let Ok(rsa) = pkey.rsa() {
        return Ok(PublicKey {
            kty: KeyType::Rsa,
            n: Some(rsa.n().to_vec()),
            e: Some(rsa.e().to_vec()),
            crv: None,
            x: None,
            y: None,
            bits: None,
        });
    }
    let ec = pkey.ec_key().map_err(crypto_err)?;
    let curve = match ec.group().curve_name() {
        Some(Nid::X9_62_PRIME256V1) => Curve::P256,
        Some(Nid::SECP384R1) => Curve::P384,
        Some(Nid::SECP521R1) => Curve::P521,
        Some(Nid::SECP256K1) => Curve::P256K,
        _ => return Err(Error::BadParameter("Unsupported curve.".into())),
    };
    let mut ctx = BigNumContext::new().map_err(crypto_err)?;
    let (mut x, mut y) = (
        BigNum::new().map_err(crypto_err)?,
        BigNum::new().map_err(crypto_err)?,
    );
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
        .map_err(crypto_err)?;
    let len = i32::try_from(curve.coordinate_len()).map_err(crypto_err)?;
    Ok(PublicKey {
        kty: KeyType::Ec,
        n: None,
        e: None,
        crv: Some(curve),
        x: Some(x.to_vec_padded(len).map_err(crypto_err)?),
        y: Some(y.to_vec_padded(len).map_err(crypto_err)?),
        bits: None,
    })
}

/// Symmetric keys exist only inside an HSM.
fn symmetric_in_software() -> Error {
    Error::BadParameter(
        "oct-HSM (symmetric) keys are kept only inside the HSM of a managed HSM pool.".into(),
    )
}

fn public_pkey(public: &PublicKey) -> Result<PKey<Public>> {
    match public.kty {
        KeyType::Oct => Err(symmetric_in_software()),
        KeyType::Rsa => {
            let (n, e) = (
                public.n.as_deref().ok_or(Error::Integrity)?,
                public.e.as_deref().ok_or(Error::Integrity)?,
            );
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(n).map_err(crypto_err)?,
                BigNum::from_slice(e).map_err(crypto_err)?,
            )
            .map_err(crypto_err)?;
            PKey::from_rsa(rsa).map_err(crypto_err)
        }
        KeyType::Ec => {
            let curve = public.crv.ok_or(Error::Integrity)?;
            let group = EcGroup::from_curve_name(nid(curve)).map_err(crypto_err)?;
            let x = BigNum::from_slice(public.x.as_deref().ok_or(Error::Integrity)?)
                .map_err(crypto_err)?;
            let y = BigNum::from_slice(public.y.as_deref().ok_or(Error::Integrity)?)
                .map_err(crypto_err)?;
            let ec =
                EcKey::from_public_key_affine_coordinates(&group, &x, &y).map_err(crypto_err)?;
            PKey::from_ec_key(ec).map_err(crypto_err)
        }
    }
}

fn rsa_padding(alg: CipherAlgorithm) -> Padding {
    match alg {
        CipherAlgorithm::Rsa15 => Padding::PKCS1,
        CipherAlgorithm::RsaOaep | CipherAlgorithm::RsaOaep256 => Padding::PKCS1_OAEP,
    }
}

fn oaep_md(ctx: &mut PkeyCtx<impl openssl::pkey::HasPublic>, alg: CipherAlgorithm) -> Result<()> {
    if alg == CipherAlgorithm::RsaOaep256 {
        ctx.set_rsa_oaep_md(openssl::md::Md::sha256())
            .map_err(crypto_err)?;
        ctx.set_rsa_mgf1_md(openssl::md::Md::sha256())
            .map_err(crypto_err)?;
    }
    Ok(())
}

fn s(v: &Option<Sensitive<Vec<u8>>>) -> Option<&[u8]> {
    v.as_ref().map(|x| x.expose().as_slice())
}

fn bn(v: Option<&[u8]>, what: &str) -> Result<BigNum> {
    let bytes = v.ok_or_else(|| {
        Error::BadParameter(format!("The key is missing its '{what}' parameter."))
    })?;
    BigNum::from_slice(bytes).map_err(crypto_err)
}

impl KeyBackend for SoftwareKeys {
    fn import(&self, key: &PrivateJwk) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        let invalid =
            || Error::BadParameter("The key parameters are inconsistent or invalid.".into());
        let pkey = match key.kty {
            KeyType::Oct => return Err(symmetric_in_software()),
            KeyType::Rsa => {
                let rsa = Rsa::from_private_components(
                    bn(key.n.as_deref(), "n")?,
                    bn(key.e.as_deref(), "e")?,
                    bn(s(&key.d), "d")?,
                    bn(s(&key.p), "p")?,
                    bn(s(&key.q), "q")?,
                    bn(s(&key.dp), "dp")?,
                    bn(s(&key.dq), "dq")?,
                    bn(s(&key.qi), "qi")?,
                )
                .map_err(|_| invalid())?;
                if !rsa.check_key().unwrap_or(false) {
                    return Err(invalid());
                }
                let bits = rsa.size() * 8;
                if ![2048, 3072, 4096].contains(&bits) {
                    return Err(Error::BadParameter(
                        "RSA keys must be 2048, 3072 or 4096 bits.".into(),
                    ));
                }
                PKey::from_rsa(rsa).map_err(crypto_err)?
            }
            KeyType::Ec => {
                let curve = key.crv.ok_or_else(|| {
                    Error::BadParameter("The key is missing its 'crv' parameter.".into())
                })?;
                let group = EcGroup::from_curve_name(nid(curve)).map_err(crypto_err)?;
                let (x, y) = (bn(key.x.as_deref(), "x")?, bn(key.y.as_deref(), "y")?);
                let public = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                    .map_err(|_| invalid())?;
                let d = bn(s(&key.d), "d")?;
                let ec = EcKey::from_private_components(&group, &d, public.public_key())
                    .map_err(|_| invalid())?;
                ec.check_key().map_err(|_| invalid())?;
                PKey::from_ec_key(ec).map_err(crypto_err)?
            }
        };
        let der = Sensitive::new(pkey.private_key_to_pkcs8().map_err(crypto_err)?);
        Ok((der, public_of(&pkey)?))
    }

    fn encrypt(
        &self,
        public: &PublicKey,
        alg: CipherAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let pkey = public_pkey(public)?;
        let mut ctx = PkeyCtx::new(&pkey).map_err(crypto_err)?;
        ctx.encrypt_init().map_err(crypto_err)?;
        ctx.set_rsa_padding(rsa_padding(alg)).map_err(crypto_err)?;
        oaep_md(&mut ctx, alg)?;
        let mut out = Vec::new();
        ctx.encrypt_to_vec(plaintext, &mut out)
            .map_err(crypto_err)?;
        Ok(out)
    }

    fn decrypt(
        &self,
        key: &SealedPrivate<'_>,
        alg: CipherAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Sensitive<Vec<u8>>> {
        let handle = self.handle(key)?;
        let bad = || Error::BadParameter("The ciphertext could not be decrypted.".into());
        let mut ctx = PkeyCtx::new(&handle.pkey).map_err(crypto_err)?;
        ctx.decrypt_init().map_err(crypto_err)?;
        if alg == CipherAlgorithm::Rsa15 {
            // Raw RSA, then padding checked with implicit rejection: the
            // only errors left are public ones (length, value >= n).
            let k = handle.pkey.size();
            if ciphertext.len() > k {
                return Err(bad());
            }
            let mut block = vec![0u8; k - ciphertext.len()];
            block.extend_from_slice(ciphertext);
            ctx.set_rsa_padding(Padding::NONE).map_err(crypto_err)?;
            let mut raw = zeroize::Zeroizing::new(Vec::new());
            ctx.decrypt_to_vec(&block, &mut raw).map_err(|_| bad())?;
            return crate::rsa1_5::decode(&handle.rejection_seed, ciphertext, &raw)
                .map(Sensitive::new);
        }
        ctx.set_rsa_padding(rsa_padding(alg)).map_err(crypto_err)?;
        oaep_md(&mut ctx, alg)?;
        let mut out = Vec::new();
        match ctx.decrypt_to_vec(ciphertext, &mut out) {
            Ok(_) => Ok(Sensitive::new(out)),
            Err(_) => Err(bad()),
        }
    }

    fn generate(&self, spec: &KeySpec) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        let pkey = match spec.kty {
            KeyType::Oct => return Err(symmetric_in_software()),
            KeyType::Rsa => {
                let bits = spec.size.unwrap_or(2048);
                let e = BigNum::from_u32(spec.exponent.unwrap_or(65_537)).map_err(crypto_err)?;
                if spec.exponent.is_some_and(|e| e < 3 || e % 2 == 0) {
                    return Err(Error::BadParameter(
                        "The public exponent must be an odd number of at least 3.".into(),
                    ));
                }
                PKey::from_rsa(Rsa::generate_with_e(bits, &e).map_err(crypto_err)?)
                    .map_err(crypto_err)?
            }
            KeyType::Ec => {
                let group = EcGroup::from_curve_name(nid(spec.curve.unwrap_or(Curve::P256)))
                    .map_err(crypto_err)?;
                PKey::from_ec_key(EcKey::generate(&group).map_err(crypto_err)?)
                    .map_err(crypto_err)?
            }
        };
        let der = Sensitive::new(pkey.private_key_to_pkcs8().map_err(crypto_err)?);
        Ok((der, public_of(&pkey)?))
    }

    fn sign(&self, key: &SealedPrivate<'_>, alg: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let handle = self.handle(key)?;
        let pkey = &handle.pkey;
        match alg {
            SignAlgorithm::Rs(_) | SignAlgorithm::Ps(_) => {
                let mut ctx = PkeyCtx::new(pkey).map_err(crypto_err)?;
                ctx.sign_init().map_err(crypto_err)?;
                if matches!(alg, SignAlgorithm::Ps(_)) {
                    ctx.set_rsa_padding(Padding::PKCS1_PSS)
                        .map_err(crypto_err)?;
                    ctx.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::DIGEST_LENGTH)
                        .map_err(crypto_err)?;
                    ctx.set_rsa_mgf1_md(
                        openssl::md::Md::from_nid(digest_of(alg).type_())
                            .ok_or(Error::Integrity)?,
                    )
                    .map_err(crypto_err)?;
                } else {
                    ctx.set_rsa_padding(Padding::PKCS1).map_err(crypto_err)?;
                }
                ctx.set_signature_md(
                    openssl::md::Md::from_nid(digest_of(alg).type_()).ok_or(Error::Integrity)?,
                )
                .map_err(crypto_err)?;
                let mut sig = Vec::new();
                ctx.sign_to_vec(digest, &mut sig).map_err(crypto_err)?;
                Ok(sig)
            }
            SignAlgorithm::Es(_) | SignAlgorithm::Es256K => {
                let ec = pkey.ec_key().map_err(crypto_err)?;
                let sig = EcdsaSig::sign(digest, &ec).map_err(crypto_err)?;
                // The algorithm fixes the curve (checked by the caller), so
                // the width needs no point arithmetic.
                let w: i32 = match alg {
                    SignAlgorithm::Es(384) => 48,
                    SignAlgorithm::Es(512) => 66,
                    _ => 32,
                };
                let mut out = sig.r().to_vec_padded(w).map_err(crypto_err)?;
                out.extend(sig.s().to_vec_padded(w).map_err(crypto_err)?);
                Ok(out)
            }
        }
    }

    fn verify(
        &self,
        public: &PublicKey,
        alg: SignAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        let pkey = public_pkey(public)?;
        match alg {
            SignAlgorithm::Rs(_) | SignAlgorithm::Ps(_) => {
                let mut ctx = PkeyCtx::new(&pkey).map_err(crypto_err)?;
                ctx.verify_init().map_err(crypto_err)?;
                if matches!(alg, SignAlgorithm::Ps(_)) {
                    ctx.set_rsa_padding(Padding::PKCS1_PSS)
                        .map_err(crypto_err)?;
                    ctx.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::DIGEST_LENGTH)
                        .map_err(crypto_err)?;
                    ctx.set_rsa_mgf1_md(
                        openssl::md::Md::from_nid(digest_of(alg).type_())
                            .ok_or(Error::Integrity)?,
                    )
                    .map_err(crypto_err)?;
                } else {
                    ctx.set_rsa_padding(Padding::PKCS1).map_err(crypto_err)?;
                }
                ctx.set_signature_md(
                    openssl::md::Md::from_nid(digest_of(alg).type_()).ok_or(Error::Integrity)?,
                )
                .map_err(crypto_err)?;
                Ok(ctx.verify(digest, signature).unwrap_or(false))
            }
            SignAlgorithm::Es(_) | SignAlgorithm::Es256K => {
                let width = public.crv.ok_or(Error::Integrity)?.coordinate_len();
                if signature.len() != 2 * width {
                    return Ok(false);
                }
                let (r, s) = signature.split_at(width);
                let sig = EcdsaSig::from_private_components(
                    BigNum::from_slice(r).map_err(crypto_err)?,
                    BigNum::from_slice(s).map_err(crypto_err)?,
                )
                .map_err(crypto_err)?;
                let ec = pkey.ec_key().map_err(crypto_err)?;
                Ok(sig.verify(digest, &ec).unwrap_or(false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs or decrypts with `private` as if it were sealed under `id`.
    fn with_key<T>(
        id: &[u8],
        private: &Sensitive<Vec<u8>>,
        f: impl FnOnce(&SealedPrivate<'_>) -> T,
    ) -> T {
        let open = || Ok(Sensitive::new(private.expose().clone()));
        f(&SealedPrivate {
            id,
            open: &open,
            hsm: false,
        })
    }

    fn roundtrip(spec: KeySpec, algs: &[SignAlgorithm]) {
        let k = SoftwareKeys::new();
        let (private, public) = k.generate(&spec).unwrap();
        for alg in algs {
            let digest = vec![7u8; alg.digest_len()];
            let sig = with_key(b"k", &private, |key| k.sign(key, *alg, &digest)).unwrap();
            assert!(k.verify(&public, *alg, &digest, &sig).unwrap(), "{alg:?}");
            let mut bad = sig.clone();
            bad[0] ^= 1;
            assert!(
                !k.verify(&public, *alg, &digest, &bad).unwrap(),
                "{alg:?} tampered"
            );
        }
    }

    #[test]
    fn every_signature_algorithm_round_trips() {
        roundtrip(
            KeySpec {
                kty: KeyType::Rsa,
                size: Some(2048),
                exponent: None,
                curve: None,
                hsm: false,
                label: String::new(),
            },
            &[
                SignAlgorithm::Rs(256),
                SignAlgorithm::Rs(384),
                SignAlgorithm::Rs(512),
                SignAlgorithm::Ps(256),
                SignAlgorithm::Ps(384),
                SignAlgorithm::Ps(512),
            ],
        );
        for (curve, alg) in [
            (Curve::P256, SignAlgorithm::Es(256)),
            (Curve::P384, SignAlgorithm::Es(384)),
            (Curve::P521, SignAlgorithm::Es(512)),
            (Curve::P256K, SignAlgorithm::Es256K),
        ] {
            roundtrip(
                KeySpec {
                    kty: KeyType::Ec,
                    size: None,
                    exponent: None,
                    curve: Some(curve),
                    hsm: false,
                    label: String::new(),
                },
                &[alg],
            );
        }
    }

    #[test]
    fn rsa_encryption_round_trips_and_rsa1_5_never_reports_bad_padding() {
        let k = SoftwareKeys::new();
        let (private, public) = k
            .generate(&KeySpec {
                kty: KeyType::Rsa,
                size: Some(2048),
                exponent: None,
                curve: None,
                hsm: false,
                label: String::new(),
            })
            .unwrap();
        for alg in [
            CipherAlgorithm::Rsa15,
            CipherAlgorithm::RsaOaep,
            CipherAlgorithm::RsaOaep256,
        ] {
            let ct = k
                .encrypt(&public, alg, b"a 32-byte content encryption key")
                .unwrap();
            assert_eq!(
                with_key(b"r", &private, |key| k.decrypt(key, alg, &ct))
                    .unwrap()
                    .expose(),
                b"a 32-byte content encryption key"
            );
        }
        let garbage = vec![0x42u8; 256];
        let a = with_key(b"r", &private, |key| {
            k.decrypt(key, CipherAlgorithm::Rsa15, &garbage)
        })
        .unwrap();
        let b = with_key(b"r2", &private, |key| {
            k.decrypt(key, CipherAlgorithm::Rsa15, &garbage)
        })
        .unwrap();
        assert_eq!(
            a.expose(),
            b.expose(),
            "implicit rejection is deterministic"
        );
        assert!(a.expose().len() < 246);
        assert!(with_key(b"r", &private, |key| {
            k.decrypt(key, CipherAlgorithm::RsaOaep, &garbage)
        })
        .is_err());
    }

    /// Valid and invalid RSA1_5 blocks, interleaved, through the backend:
    /// their output lengths overlap and their times are printed side by side
    /// (a measurement, not an assertion: no timing assertions in tests).
    #[test]
    fn rsa1_5_valid_and_invalid_blocks_look_alike() {
        let k = SoftwareKeys::new();
        let (private, public) = k
            .generate(&KeySpec {
                kty: KeyType::Rsa,
                size: Some(2048),
                exponent: None,
                curve: None,
                hsm: false,
                label: String::new(),
            })
            .unwrap();
        let pk = public_pkey(&public).unwrap().rsa().unwrap();
        let (mut valid, mut invalid) = (Vec::new(), Vec::new());
        for i in 0..64usize {
            let mut msg = vec![0u8; 1 + (i * 37) % 240];
            openssl::rand::rand_bytes(&mut msg).unwrap();
            valid.push(k.encrypt(&public, CipherAlgorithm::Rsa15, &msg).unwrap());
            let mut block = vec![0u8; 256];
            openssl::rand::rand_bytes(&mut block).unwrap();
            block[0] = 0;
            block[1] = 3;
            let mut ct = vec![0u8; 256];
            pk.public_encrypt(&block, &mut ct, Padding::NONE).unwrap();
            invalid.push(ct);
        }
        let run = |cts: &[Vec<u8>]| {
            let start = std::time::Instant::now();
            let lens: Vec<usize> = cts
                .iter()
                .map(|c| {
                    with_key(b"t", &private, |key| {
                        k.decrypt(key, CipherAlgorithm::Rsa15, c)
                    })
                    .unwrap()
                    .expose()
                    .len()
                })
                .collect();
            (start.elapsed().as_secs_f64() / cts.len() as f64, lens)
        };
        run(&valid[..4]);
        let (mut tv, mut ti) = (0.0, 0.0);
        let (mut lv, mut li) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (t, l) = run(&valid);
            tv += t;
            lv = l;
            let (t, l) = run(&invalid);
            ti += t;
            li = l;
        }
        let distinct = |l: &[usize]| l.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct(&li) > 32, "synthetic lengths spread: {li:?}");
        assert!(distinct(&lv) > 32);
        let mean = |l: &[usize]| l.iter().sum::<usize>() as f64 / l.len() as f64;
        eprintln!(
            "RSA1_5 decrypt: valid {:.1} us, invalid {:.1} us (ratio {:.3}); mean length valid {:.0}, invalid {:.0}",
            tv / 3.0 * 1e6,
            ti / 3.0 * 1e6,
            ti / tv,
            mean(&lv),
            mean(&li)
        );
    }

    #[test]
    fn ec_public_coordinates_are_fixed_width() {
        let (_, public) = SoftwareKeys::new()
            .generate(&KeySpec {
                kty: KeyType::Ec,
                size: None,
                exponent: None,
                curve: Some(Curve::P521),
                hsm: false,
                label: String::new(),
            })
            .unwrap();
        assert_eq!(public.x.unwrap().len(), 66);
        assert_eq!(public.y.unwrap().len(), 66);
    }

    #[test]
    fn a_warm_handle_neither_decrypts_nor_parses() {
        let k = SoftwareKeys::new();
        let (private, public) = k
            .generate(&KeySpec {
                kty: KeyType::Ec,
                size: None,
                exponent: None,
                curve: Some(Curve::P256),
                hsm: false,
                label: String::new(),
            })
            .unwrap();
        let opened = std::cell::Cell::new(0);
        let open = || {
            opened.set(opened.get() + 1);
            Ok(Sensitive::new(private.expose().clone()))
        };
        let key = SealedPrivate {
            id: b"vault/key/v1",
            open: &open,
            hsm: false,
        };
        let digest = [9u8; 32];
        for _ in 0..3 {
            let sig = k.sign(&key, SignAlgorithm::Es(256), &digest).unwrap();
            assert!(k
                .verify(&public, SignAlgorithm::Es(256), &digest, &sig)
                .unwrap());
        }
        assert_eq!(opened.get(), 1, "opened once, then served from the handle");
        let failing = || Err(Error::Integrity);
        let other = SealedPrivate {
            id: b"vault/key/v2",
            open: &failing,
            hsm: false,
        };
        assert!(
            k.sign(&other, SignAlgorithm::Es(256), &digest).is_err(),
            "another id never reuses a handle"
        );
    }
}
