//! The PKCS#11 backend against a real SoftHSM2 token made in a temporary
//! directory (Debian's `softhsm2`; `.ci/run` and `scripts/test` install it).
//! Results are checked with OpenSSL through the software backend's public-key
//! operations; the token itself is inspected through cryptoki.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keyhaven_core::key::{
    AesAlgorithm, AesRequest, CipherAlgorithm, Curve, KeyBackend, KeySpec, KeyType, PublicKey,
    SealedPrivate, SignAlgorithm,
};
use keyhaven_core::{Error, Sensitive};
use keyhaven_crypto::pkcs11::{init_backup_key, HsmConfig, KeyRouter, Pkcs11Keys};
use keyhaven_crypto::SoftwareKeys;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234-user";
const SO_PIN: &str = "5678-so";

/// A SoftHSM2 token directory with the given token labels, each with its own
/// backup wrapping key. Sets SOFTHSM2_CONF for this test process.
fn tokens(labels: &[&str]) -> PathBuf {
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 is not installed ({MODULE} missing): apt-get install softhsm2"
    );
    let dir = std::env::temp_dir().join(format!(
        "keyhaven-p11-{}-{}",
        std::process::id(),
        labels.join("-")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    // Tokens first: the module reads the token directory once per process.
    for label in labels {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    for label in labels {
        assert!(init_backup_key(Path::new(MODULE), label, &Sensitive::new(SO_PIN.into())).unwrap());
        assert!(
            !init_backup_key(Path::new(MODULE), label, &Sensitive::new(SO_PIN.into())).unwrap(),
            "a second init is a no-op"
        );
    }
    dir
}

fn open(label: &str) -> Pkcs11Keys {
    Pkcs11Keys::open(&HsmConfig {
        module: MODULE.into(),
        token_label: label.into(),
        pin: Sensitive::new(PIN.into()),
    })
    .unwrap()
}

fn spec(kty: KeyType, size: Option<u32>, curve: Option<Curve>) -> KeySpec {
    KeySpec {
        kty,
        size,
        exponent: None,
        curve,
        hsm: true,
        label: "vault1/key1".into(),
    }
}

/// Runs `f` with a SealedPrivate over `reference` (as the service would).
fn with<T>(
    id: &[u8],
    reference: &Sensitive<Vec<u8>>,
    f: impl FnOnce(&SealedPrivate<'_>) -> T,
) -> T {
    let bytes = reference.expose().clone();
    let open = move || Ok(Sensitive::new(bytes.clone()));
    f(&SealedPrivate {
        id,
        open: &open,
        hsm: true,
    })
}

fn digest(alg: SignAlgorithm) -> Vec<u8> {
    vec![0x5a; alg.digest_len()]
}

#[test]
fn signatures_of_every_algorithm_verify_with_openssl() {
    let _dir = tokens(&["sig"]);
    let hsm = open("sig");
    let software = SoftwareKeys::new();
    let cases: &[(KeySpec, &[SignAlgorithm])] = &[
        (
            spec(KeyType::Rsa, Some(2048), None),
            &[
                SignAlgorithm::Rs(256),
                SignAlgorithm::Rs(384),
                SignAlgorithm::Rs(512),
                SignAlgorithm::Ps(256),
                SignAlgorithm::Ps(384),
                SignAlgorithm::Ps(512),
            ],
        ),
        (
            spec(KeyType::Rsa, Some(3072), None),
            &[SignAlgorithm::Rs(256)],
        ),
        (
            spec(KeyType::Ec, None, Some(Curve::P256)),
            &[SignAlgorithm::Es(256)],
        ),
        (
            spec(KeyType::Ec, None, Some(Curve::P384)),
            &[SignAlgorithm::Es(384)],
        ),
        (
            spec(KeyType::Ec, None, Some(Curve::P521)),
            &[SignAlgorithm::Es(512)],
        ),
        (
            spec(KeyType::Ec, None, Some(Curve::P256K)),
            &[SignAlgorithm::Es256K],
        ),
    ];
    for (i, (s, algs)) in cases.iter().enumerate() {
        let (reference, public) = hsm.generate(s).unwrap();
        if let Some(n) = &public.n {
            assert_eq!(n.len() * 8, s.size.unwrap() as usize);
        }
        for alg in *algs {
            let d = digest(*alg);
            let sig = with(format!("k{i}").as_bytes(), &reference, |k| {
                hsm.sign(k, *alg, &d)
            })
            .unwrap();
            assert!(software.verify(&public, *alg, &d, &sig).unwrap(), "{alg:?}");
            let mut other = d.clone();
            other[0] ^= 1;
            assert!(!software.verify(&public, *alg, &other, &sig).unwrap());
        }
    }
}

#[test]
fn decryption_round_trips_and_rsa1_5_never_reports_bad_padding() {
    let _dir = tokens(&["dec"]);
    let hsm = open("dec");
    let software = SoftwareKeys::new();
    let (reference, public) = hsm.generate(&spec(KeyType::Rsa, Some(2048), None)).unwrap();
    for alg in [
        CipherAlgorithm::Rsa15,
        CipherAlgorithm::RsaOaep,
        CipherAlgorithm::RsaOaep256,
    ] {
        let ct = software
            .encrypt(&public, alg, b"a 32-byte content encryption key")
            .unwrap();
        let pt = with(b"d", &reference, |k| hsm.decrypt(k, alg, &ct)).unwrap();
        assert_eq!(
            pt.expose().as_slice(),
            b"a 32-byte content encryption key",
            "{alg:?}"
        );
    }
    let garbage = vec![0x42u8; 256];
    let a = with(b"d", &reference, |k| {
        hsm.decrypt(k, CipherAlgorithm::Rsa15, &garbage)
    })
    .unwrap();
    let b = with(b"d", &reference, |k| {
        hsm.decrypt(k, CipherAlgorithm::Rsa15, &garbage)
    })
    .unwrap();
    assert!(a.expose().len() < 246);
    assert_eq!(
        a.expose(),
        b.expose(),
        "implicit rejection is deterministic"
    );
    assert!(matches!(
        with(b"d", &reference, |k| hsm.decrypt(
            k,
            CipherAlgorithm::RsaOaep,
            &garbage
        )),
        Err(Error::BadParameter(_))
    ));
}

#[test]
fn imported_keys_sign_like_the_original() {
    let _dir = tokens(&["imp"]);
    let hsm = open("imp");
    let software = SoftwareKeys::new();
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let jwk = keyhaven_core::key::PrivateJwk {
        kty: KeyType::Rsa,
        n: Some(rsa.n().to_vec()),
        e: Some(rsa.e().to_vec()),
        d: Some(Sensitive::new(rsa.d().to_vec())),
        p: Some(Sensitive::new(rsa.p().unwrap().to_vec())),
        q: Some(Sensitive::new(rsa.q().unwrap().to_vec())),
        dp: Some(Sensitive::new(rsa.dmp1().unwrap().to_vec())),
        dq: Some(Sensitive::new(rsa.dmq1().unwrap().to_vec())),
        qi: Some(Sensitive::new(rsa.iqmp().unwrap().to_vec())),
        crv: None,
        x: None,
        y: None,
        k: None,
    };
    let (reference, public) = hsm.import(&jwk, "v/imported").unwrap();
    assert_eq!(public.n.as_deref(), Some(rsa.n().to_vec().as_slice()));
    let d = vec![1u8; 32];
    let sig = with(b"i", &reference, |k| {
        hsm.sign(k, SignAlgorithm::Rs(256), &d)
    })
    .unwrap();
    assert!(software
        .verify(&public, SignAlgorithm::Rs(256), &d, &sig)
        .unwrap());
}

#[test]
fn backups_restore_into_the_same_token_only() {
    let _dir = tokens(&["home", "away"]);
    let home = open("home");
    let away = open("away");
    let software = SoftwareKeys::new();
    for (i, s) in [
        spec(KeyType::Rsa, Some(2048), None),
        spec(KeyType::Ec, None, Some(Curve::P384)),
    ]
    .into_iter()
    .enumerate()
    {
        // Identities name one sealed material each, as the service's do.
        let (id, restored_id) = (format!("b{i}"), format!("r{i}"));
        let (reference, public) = home.generate(&s).unwrap();
        let wrapped = with(id.as_bytes(), &reference, |k| home.export(k)).unwrap();
        // The wrapped key holds no plaintext PKCS#8 (no DER SEQUENCE header).
        assert_ne!(wrapped.get(..2), Some(&[0x30u8, 0x82][..]));
        let restored = home
            .import_backup(&wrapped, &public, "vault1/key1")
            .unwrap();
        assert_ne!(restored.expose(), reference.expose(), "a new token object");
        let alg = if s.kty == KeyType::Rsa {
            SignAlgorithm::Rs(256)
        } else {
            SignAlgorithm::Es(384)
        };
        let d = digest(alg);
        let sig = with(restored_id.as_bytes(), &restored, |k| home.sign(k, alg, &d)).unwrap();
        assert!(software.verify(&public, alg, &d, &sig).unwrap());
        match away.import_backup(&wrapped, &public, "vault1/key1") {
            Err(Error::BadParameter(m)) => assert!(m.contains("only the HSM"), "{m}"),
            other => panic!("another token restored it: {:?}", other.map(|_| ())),
        }
        // A backup under the right wrapping key but for another public key is refused.
        let (_, stranger) = home.generate(&s).unwrap();
        assert!(home.import_backup(&wrapped, &stranger, "x").is_err());
    }
}

#[test]
fn destroyed_keys_are_gone_from_the_token() {
    let _dir = tokens(&["gone"]);
    let hsm = open("gone");
    let (reference, _) = hsm
        .generate(&spec(KeyType::Ec, None, Some(Curve::P256)))
        .unwrap();
    let d = vec![3u8; 32];
    with(b"g", &reference, |k| {
        hsm.sign(k, SignAlgorithm::Es(256), &d)
    })
    .unwrap();
    hsm.destroy(reference.expose()).unwrap();
    assert!(matches!(
        with(b"g", &reference, |k| hsm.sign(
            k,
            SignAlgorithm::Es(256),
            &d
        )),
        Err(Error::Unavailable(_))
    ));
    hsm.destroy(reference.expose()).unwrap();
}

#[test]
fn a_lost_login_is_recovered_and_concurrent_use_is_safe() {
    let _dir = tokens(&["pool"]);
    let hsm = Arc::new(open("pool"));
    let software = Arc::new(SoftwareKeys::new());
    let (reference, public) = hsm.generate(&spec(KeyType::Rsa, Some(2048), None)).unwrap();
    let d = vec![9u8; 32];
    with(b"p", &reference, |k| {
        hsm.sign(k, SignAlgorithm::Rs(256), &d)
    })
    .unwrap();
    hsm.drop_login();
    let sig = with(b"p", &reference, |k| {
        hsm.sign(k, SignAlgorithm::Rs(256), &d)
    })
    .unwrap();
    assert!(software
        .verify(&public, SignAlgorithm::Rs(256), &d, &sig)
        .unwrap());

    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let (hsm, software, reference, public) = (
                hsm.clone(),
                software.clone(),
                Sensitive::new(reference.expose().clone()),
                public.clone(),
            );
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    let d = vec![t ^ i; 32];
                    let sig = with(b"p", &reference, |k| {
                        hsm.sign(k, SignAlgorithm::Ps(256), &d)
                    })
                    .unwrap();
                    assert!(software
                        .verify(&public, SignAlgorithm::Ps(256), &d, &sig)
                        .unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(hsm.idle_sessions() >= 1 && hsm.idle_sessions() <= 16);
}

#[test]
fn private_keys_are_sensitive_and_wrap_only_under_the_trusted_key() {
    let _dir = tokens(&["inspect"]);
    let hsm = open("inspect");
    let (_, public) = hsm.generate(&spec(KeyType::Rsa, Some(2048), None)).unwrap();
    let public: PublicKey = public;
    drop(hsm);

    // Look at the token as any other PKCS#11 application with the user PIN would.
    let ctx = Pkcs11::new(MODULE).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == "inspect")
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("{e}"),
    }
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"vault1/key1".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1, "one private key object, labelled vault/key");
    let key = keys[0];
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::WrapWithTrusted,
                AttributeType::AlwaysSensitive,
                AttributeType::Token,
                AttributeType::Modulus,
            ],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(
        attrs.contains(&Attribute::AlwaysSensitive(true)),
        "{attrs:?}"
    );
    assert!(
        attrs.contains(&Attribute::WrapWithTrusted(true)),
        "{attrs:?}"
    );
    assert!(attrs.contains(&Attribute::Token(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Modulus(public.n.clone().unwrap())));
    // The private components cannot be read...
    for t in [
        AttributeType::PrivateExponent,
        AttributeType::Prime1,
        AttributeType::Prime2,
    ] {
        assert!(
            session.get_attributes(key, &[t]).unwrap().is_empty(),
            "{t:?} readable"
        );
    }
    // ...nor wrapped out under a key the user makes...
    let mine = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::ValueLen(32.into()),
            ],
        )
        .unwrap();
    match session.wrap_key(&Mechanism::AesKeyWrapPad, mine, key) {
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::KeyNotWrappable, _)) => {}
        other => panic!(
            "wrapped under an untrusted key: {:?}",
            other.map(|v| v.len())
        ),
    }
    // ...and the user cannot mark a key of their own trusted.
    assert!(session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::Trusted(true),
                Attribute::ValueLen(32.into()),
            ],
        )
        .is_err());
    // The one trusted key is the backup wrapping key, and it never leaves.
    let wrap = session
        .find_objects(&[Attribute::Label(
            keyhaven_crypto::pkcs11::WRAP_LABEL.as_bytes().to_vec(),
        )])
        .unwrap();
    assert_eq!(wrap.len(), 1);
    let w = session
        .get_attributes(
            wrap[0],
            &[
                AttributeType::Trusted,
                AttributeType::Extractable,
                AttributeType::Sensitive,
            ],
        )
        .unwrap();
    assert!(w.contains(&Attribute::Trusted(true)) && w.contains(&Attribute::Extractable(false)));
}

#[test]
fn the_router_sends_hsm_keys_to_the_token_and_others_to_software() {
    let _dir = tokens(&["route"]);
    let router = KeyRouter::new(Arc::new(SoftwareKeys::new()), Some(Arc::new(open("route"))));
    assert!(router.hardware());
    let mut s = spec(KeyType::Ec, None, Some(Curve::P256));
    let (hsm_ref, hsm_pub) = router.generate(&s).unwrap();
    assert!(hsm_ref.expose().starts_with(b"keyhaven-pkcs11-v1:"));
    s.hsm = false;
    let (sw, sw_pub) = router.generate(&s).unwrap();
    assert!(!sw.expose().starts_with(b"keyhaven-pkcs11-v1:"));
    let d = vec![4u8; 32];
    let sig = with(b"h", &hsm_ref, |k| {
        router.sign(k, SignAlgorithm::Es(256), &d)
    })
    .unwrap();
    assert!(router
        .verify(&hsm_pub, SignAlgorithm::Es(256), &d, &sig)
        .unwrap());
    let bytes = sw.expose().clone();
    let open_sw = move || Ok(Sensitive::new(bytes.clone()));
    let sig = router
        .sign(
            &SealedPrivate {
                id: b"s",
                open: &open_sw,
                hsm: false,
            },
            SignAlgorithm::Es(256),
            &d,
        )
        .unwrap();
    assert!(router
        .verify(&sw_pub, SignAlgorithm::Es(256), &d, &sig)
        .unwrap());
    let none = KeyRouter::new(Arc::new(SoftwareKeys::new()), None);
    assert!(!none.hardware());
    assert!(none.generate(&spec(KeyType::Ec, None, None)).is_err());
}

fn aes<'a>(alg: &str, encrypt: bool, data: &'a [u8]) -> AesRequest<'a> {
    AesRequest {
        encrypt,
        alg: AesAlgorithm::parse(alg).unwrap(),
        data,
        iv: None,
        aad: None,
        tag: None,
    }
}

/// oct-HSM: a known AES key imported into the token encrypts and decrypts
/// exactly as OpenSSL does with the same key, in every mode; the value
/// cannot be read back; tampering is refused.
#[test]
fn symmetric_keys_agree_with_openssl() {
    use openssl::symm::{decrypt_aead, encrypt, encrypt_aead, Cipher};
    let _dir = tokens(&["aes"]);
    let hsm = open("aes");
    let k: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(7)).collect();
    let jwk = keyhaven_core::key::PrivateJwk {
        kty: KeyType::Oct,
        n: None,
        e: None,
        d: None,
        p: None,
        q: None,
        dp: None,
        dq: None,
        qi: None,
        crv: None,
        x: None,
        y: None,
        k: Some(Sensitive::new(k.clone())),
    };
    let (reference, public) = hsm.import(&jwk, "pool/aes").unwrap();
    assert_eq!((public.kty, public.bits), (KeyType::Oct, Some(256)));
    let run = |req: &AesRequest<'_>| with(b"aes", &reference, |key| hsm.aes(key, req));
    let pt = b"Managed HSM symmetric keys, 41 bytes long".to_vec();
    let aad = b"header".to_vec();

    // GCM, both ways.
    let mut req = aes("A256GCM", true, &pt);
    req.aad = Some(&aad);
    let out = run(&req).unwrap();
    let (iv, tag) = (out.iv.clone().unwrap(), out.tag.clone().unwrap());
    assert_eq!((iv.len(), tag.len()), (12, 16));
    let opened = decrypt_aead(
        Cipher::aes_256_gcm(),
        &k,
        Some(&iv),
        &aad,
        out.value.expose(),
        &tag,
    )
    .unwrap();
    assert_eq!(opened, pt);
    let mut tag2 = [0u8; 16];
    let iv2 = [9u8; 12];
    let ct2 = encrypt_aead(Cipher::aes_256_gcm(), &k, Some(&iv2), &aad, &pt, &mut tag2).unwrap();
    let mut req = aes("A256GCM", false, &ct2);
    req.iv = Some(&iv2);
    req.aad = Some(&aad);
    req.tag = Some(&tag2);
    assert_eq!(run(&req).unwrap().value.expose(), &pt);
    let mut bad_tag = tag2;
    bad_tag[0] ^= 1;
    req.tag = Some(&bad_tag);
    assert!(matches!(run(&req), Err(Error::BadParameter(_))));

    // CBC without padding zero-pads; CBCPAD is PKCS#7.
    let iv16 = [3u8; 16];
    let mut req = aes("A256CBC", true, &pt);
    req.iv = Some(&iv16);
    let out = run(&req).unwrap();
    let mut padded = pt.clone();
    padded.resize(48, 0);
    let mut c = openssl::symm::Crypter::new(
        Cipher::aes_256_cbc(),
        openssl::symm::Mode::Encrypt,
        &k,
        Some(&iv16),
    )
    .unwrap();
    c.pad(false);
    let mut want = vec![0u8; 64];
    let n = c.update(&padded, &mut want).unwrap();
    want.truncate(n);
    assert_eq!(out.value.expose(), &want);
    let mut req = aes("A256CBCPAD", true, &pt);
    req.iv = Some(&iv16);
    let out = run(&req).unwrap();
    assert_eq!(
        out.value.expose(),
        &encrypt(Cipher::aes_256_cbc(), &k, Some(&iv16), &pt).unwrap()
    );
    let ct = out.value.expose().clone();
    let mut req = aes("A256CBCPAD", false, &ct);
    req.iv = Some(&iv16);
    assert_eq!(run(&req).unwrap().value.expose(), &pt);

    // Key wrap (RFC 3394) of a caller's key, and back.
    let cek = [0x5au8; 32];
    let out = run(&aes("A256KW", true, &cek)).unwrap();
    let wrap_key = openssl::aes::AesKey::new_encrypt(&k).unwrap();
    let mut want = vec![0u8; 40];
    openssl::aes::wrap_key(&wrap_key, None, &mut want, &cek).unwrap();
    assert_eq!(out.value.expose(), &want);
    assert_eq!(
        run(&aes("A256KW", false, &want)).unwrap().value.expose(),
        &cek.to_vec()
    );
    let mut broken = want.clone();
    broken[5] ^= 1;
    assert!(run(&aes("A256KW", false, &broken)).is_err());

    // The value never leaves the token.
    let ctx = Pkcs11::new(MODULE).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|t| t.label().trim() == "aes")
                .unwrap_or(false)
        })
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    // (The backend's context shares the login.)
    let _ = session.login(UserType::User, Some(&AuthPin::new(PIN.into())));
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"pool/aes".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(found[0], &[AttributeType::Value])
        .unwrap_or_default();
    assert!(
        !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the AES key's value was readable"
    );
}

/// A generated oct-HSM key's backup goes back into the same token and is
/// refused by another (its wrapping key differs).
#[test]
fn symmetric_keys_back_up_to_their_own_hsm_only() {
    let _dir = tokens(&["aesa", "aesb"]);
    let (a, b) = (open("aesa"), open("aesb"));
    let (reference, public) = a.generate(&spec(KeyType::Oct, Some(128), None)).unwrap();
    assert_eq!(public.bits, Some(128));
    let pt = [7u8; 32];
    let ct = with(b"g", &reference, |k| a.aes(k, &aes("A128KW", true, &pt))).unwrap();
    let wrapped = with(b"g", &reference, |k| a.export(k)).unwrap();
    let back = a.import_backup(&wrapped, &public, "pool/restored").unwrap();
    let again = with(b"r", &back, |k| {
        a.aes(k, &aes("A128KW", false, ct.value.expose()))
    })
    .unwrap();
    assert_eq!(again.value.expose(), &pt.to_vec());
    assert!(matches!(
        b.import_backup(&wrapped, &public, "pool/foreign"),
        Err(Error::BadParameter(_))
    ));
}

#[test]
fn concurrent_imports_of_one_backup_each_make_their_own_object() {
    let _dir = tokens(&["imports"]);
    let hsm = Arc::new(open("imports"));
    let (reference, public) = hsm.generate(&spec(KeyType::Rsa, Some(2048), None)).unwrap();
    let wrapped = with(b"i", &reference, |k| hsm.export(k)).unwrap();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (hsm, wrapped, public) = (&hsm, &wrapped, &public);
                scope.spawn(move || hsm.import_backup(wrapped, public, &format!("v/k{i}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refs: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every import succeeds"))
        .collect();
    let distinct: std::collections::BTreeSet<_> = refs.iter().map(|r| r.expose().clone()).collect();
    assert_eq!(distinct.len(), 6, "each import is its own token object");
    let software = SoftwareKeys::new();
    let d = vec![1u8; 32];
    for r in &refs {
        let sig = with(b"i", r, |k| hsm.sign(k, SignAlgorithm::Rs(256), &d)).unwrap();
        assert!(software
            .verify(&public, SignAlgorithm::Rs(256), &d, &sig)
            .unwrap());
    }
}

/// SoftHSM2 breaks the creation of a token object that a search of the
/// token runs into (CKR_GENERAL_ERROR from the unwrap of a valid backup,
/// reported to the user as a foreign backup). Restores, generations and
/// destructions race here with exports (which search for the wrapping key)
/// and first uses of keys (which search for the key's object); every call
/// must succeed. Before the token's object set had a lock, each run of this
/// test saw several failed restores.
#[test]
fn token_writes_racing_searches_all_succeed() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let _dir = tokens(&["searches"]);
    let hsm = open("searches");
    let (reference, public) = hsm.generate(&spec(KeyType::Ec, None, None)).unwrap();
    let wrapped = with(b"s", &reference, |k| hsm.export(k)).unwrap();
    let stop = AtomicBool::new(false);
    let fresh = AtomicUsize::new(0);
    let mut failures: Vec<String> = Vec::new();
    std::thread::scope(|scope| {
        let searchers: Vec<_> = (0..3)
            .map(|n| {
                let (hsm, reference, stop, fresh) = (&hsm, &reference, &stop, &fresh);
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    // Bounded: the writers below end in seconds.
                    for _ in 0..5_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let r = if n == 0 {
                            with(b"s", reference, |k| hsm.export(k)).map(|_| ())
                        } else {
                            // A new cache identity: the handle is searched for.
                            let id = format!("fresh-{}", fresh.fetch_add(1, Ordering::Relaxed));
                            with(id.as_bytes(), reference, |k| {
                                hsm.sign(k, SignAlgorithm::Es(256), &[1u8; 32])
                            })
                            .map(|_| ())
                        };
                        if let Err(e) = r {
                            failed.push(format!("search side: {e:?}"));
                        }
                    }
                    failed
                })
            })
            .collect();
        for round in 0..4 {
            let results: Vec<_> = std::thread::scope(|scope| {
                let mut writers: Vec<_> = (0..8)
                    .map(|i| {
                        let (hsm, wrapped, public) = (&hsm, &wrapped, &public);
                        scope.spawn(move || {
                            hsm.import_backup(wrapped, public, &format!("r/{round}/{i}"))
                                .map(|r| hsm.destroy(r.expose()))
                                .and_then(|d| d)
                        })
                    })
                    .collect();
                for kty in [KeyType::Ec, KeyType::Rsa] {
                    let hsm = &hsm;
                    writers.push(scope.spawn(move || {
                        hsm.generate(&spec(kty, None, None))
                            .and_then(|(r, _)| hsm.destroy(r.expose()))
                    }));
                }
                writers.into_iter().map(|h| h.join().unwrap()).collect()
            });
            failures.extend(
                results
                    .into_iter()
                    .filter_map(|r| r.err())
                    .map(|e| format!("write side: {e:?}")),
            );
        }
        stop.store(true, Ordering::Relaxed);
        for s in searchers {
            failures.extend(s.join().unwrap());
        }
    });
    assert!(failures.is_empty(), "{failures:#?}");
}
