//! The PKCS#11 token's own speed, for `scripts/bench-keys` (target `mhsm`):
//! RSA-2048 signatures (`CKM_RSA_PKCS` over a SHA-256 DigestInfo) and
//! AES-256-GCM encryptions (random 12-byte IV, 32-byte input) in a tight
//! loop of C_Sign / C_Encrypt calls, one logged-in session per thread, no
//! HTTP, no TLS: the floor a managed HSM's requests are measured against.
//!
//! Usage: p11_speed MODULE TOKEN-LABEL PIN-FILE THREADS SECONDS
//! Prints `P11_RESULT op=rsa-sign ops=N seconds=S rate=R` and the same for
//! `op=aes-gcm-encrypt`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

/// DER prefix of a SHA-256 DigestInfo.
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(
        args.len(),
        6,
        "usage: p11_speed MODULE TOKEN-LABEL PIN-FILE THREADS SECONDS"
    );
    let pin = std::fs::read_to_string(&args[3]).unwrap().trim().to_owned();
    let threads: usize = args[4].parse().unwrap();
    let seconds: u64 = args[5].parse().unwrap();
    let ctx = Pkcs11::new(&args[1]).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|t| t.label().trim() == args[2])
                .unwrap_or(false)
        })
        .expect("no token with that label");
    for (op, label) in [("rsa-sign", "rsa"), ("aes-gcm-encrypt", "aes")] {
        // Each thread times its own loop (key generation is not counted);
        // the rate is the sum of the threads' rates.
        let results: Vec<(u64, f64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (ctx, pin) = (&ctx, &pin);
                    scope.spawn(move || {
                        let session = ctx.open_rw_session(slot).unwrap();
                        let _ =
                            session.login(UserType::User, Some(&AuthPin::new(pin.clone().into())));
                        let mut n = 0u64;
                        if label == "rsa" {
                            let (_, private) = session
                                .generate_key_pair(
                                    &Mechanism::RsaPkcsKeyPairGen,
                                    &[
                                        Attribute::Token(false),
                                        Attribute::ModulusBits(2048.into()),
                                        Attribute::PublicExponent(vec![1, 0, 1]),
                                        Attribute::Verify(true),
                                    ],
                                    &[
                                        Attribute::Token(false),
                                        Attribute::Sign(true),
                                        Attribute::Sensitive(true),
                                    ],
                                )
                                .unwrap();
                            let mut info = SHA256_PREFIX.to_vec();
                            info.extend([7u8; 32]);
                            let started = Instant::now();
                            let deadline = started + Duration::from_secs(seconds);
                            while Instant::now() < deadline {
                                info[20] = info[20].wrapping_add(1);
                                session.sign(&Mechanism::RsaPkcs, private, &info).unwrap();
                                n += 1;
                            }
                            (n, started.elapsed().as_secs_f64())
                        } else {
                            let key = session
                                .generate_key(
                                    &Mechanism::AesKeyGen,
                                    &[
                                        Attribute::Class(ObjectClass::SECRET_KEY),
                                        Attribute::KeyType(KeyType::AES),
                                        Attribute::Token(false),
                                        Attribute::ValueLen(32.into()),
                                        Attribute::Encrypt(true),
                                        Attribute::Sensitive(true),
                                    ],
                                )
                                .unwrap();
                            let data = [9u8; 32];
                            let started = Instant::now();
                            let deadline = started + Duration::from_secs(seconds);
                            while Instant::now() < deadline {
                                let mut iv = [0u8; 12];
                                openssl::rand::rand_bytes(&mut iv).unwrap();
                                let params = GcmParams::new(&mut iv, &[], 128.into()).unwrap();
                                session
                                    .encrypt(&Mechanism::AesGcm(params), key, &data)
                                    .unwrap();
                                n += 1;
                            }
                            (n, started.elapsed().as_secs_f64())
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: u64 = results.iter().map(|(n, _)| n).sum();
        let rate: f64 = results.iter().map(|(n, s)| *n as f64 / s).sum();
        println!("P11_RESULT op={op} ops={total} seconds={seconds} rate={rate:.1}");
    }
}
