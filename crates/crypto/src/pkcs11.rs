//! The premium tier's key backend: `RSA-HSM` and `EC-HSM` keys generated,
//! held and used inside a PKCS#11 token (SoftHSM2 in the tests, any PKCS#11
//! HSM in production).
//!
//! A private key is a token object that is `CKA_SENSITIVE` (its value cannot
//! be read) and `CKA_WRAP_WITH_TRUSTED` (it can be wrapped only by a key the
//! token's security officer marked trusted). The one trusted key is the
//! deployment's backup wrapping key, created inside the token by `keyhaven
//! hsm init` and itself unextractable; a key backup carries the private key
//! wrapped by it, so only this HSM, or one sharing that wrapping key, can take
//! it back. What Keyhaven stores for an HSM key is a reference (the object's
//! random `CKA_ID`), sealed like any payload. Public-key operations (verify,
//! encrypt, wrap) use the public key, which is public.
//!
//! Sessions are pooled; a session or login the token has dropped is re-opened
//! and the operation retried once. Object handles are cached by the identity
//! of the sealed reference and looked up again when the token rejects one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, KeyType as P11KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyhaven_core::key::{
    AesMode, AesOutput, AesRequest, CipherAlgorithm, Curve, KeyBackend, KeySpec, KeyType,
    PrivateJwk, PublicKey, SealedPrivate, SignAlgorithm,
};
use keyhaven_core::{Error, Result, Sensitive};

use crate::SoftwareKeys;

/// Label of the token's backup wrapping key.
pub const WRAP_LABEL: &str = "keyhaven-backup-wrap";
/// Prefix of a stored HSM reference (followed by the object's `CKA_ID`).
const MAGIC: &[u8] = b"keyhaven-pkcs11-v1:";
/// Idle sessions kept open.
const IDLE_SESSIONS: usize = 16;
/// Most object handles cached.
const HANDLE_CACHE: usize = 4096;

/// Where the HSM is and how to log in.
pub struct HsmConfig {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: std::path::PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN.
    pub pin: Sensitive<String>,
}

impl std::fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

/// Sealed-reference identity → (`CKA_ID`, private key handle).
type HandleCache = HashMap<Vec<u8>, (Vec<u8>, ObjectHandle)>;

/// Keys inside a PKCS#11 token.
pub struct Pkcs11Keys {
    ctx: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    idle: Mutex<Vec<Session>>,
    /// The token's set of objects. Written (exclusively) by every call
    /// that makes or destroys a token object, read by every search.
    /// SoftHSM2's file object store breaks a creation that a search runs
    /// into: the search refreshes every object from disk, the one being
    /// made included, and the creation fails with CKR_GENERAL_ERROR (or
    /// CKR_TEMPLATE_INCONSISTENT). Operations with a known handle (sign,
    /// decrypt, wrap) take no part: most requests never wait on it.
    objects: RwLock<()>,
    handles: RwLock<HandleCache>,
    software: SoftwareKeys,
}

impl std::fmt::Debug for Pkcs11Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pkcs11Keys")
    }
}

fn hsm_err(e: P11Error) -> Error {
    Error::Unavailable(format!("HSM: {e}"))
}

/// The token or our login on it went away: worth a new session and a retry.
fn lost(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn,
            _
        )
    )
}

/// The token no longer knows an object handle.
fn stale(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _)
    )
}

/// The module's one context in this process: PKCS#11 is initialised once per
/// process, and a second context's finalisation would pull the module out
/// from under the first, so contexts are shared and live until exit.
fn load(module: &Path) -> std::result::Result<Pkcs11, String> {
    static LOADED: std::sync::OnceLock<Mutex<HashMap<std::path::PathBuf, Pkcs11>>> =
        std::sync::OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .map_err(|_| "PKCS#11 module registry poisoned".to_owned())?;
    if let Some(ctx) = loaded.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module)
        .map_err(|e| format!("cannot load PKCS#11 module {}: {e}", module.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("cannot initialise PKCS#11 module: {e}")),
    }
    loaded.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

fn find_slot(ctx: &Pkcs11, label: &str) -> std::result::Result<Slot, String> {
    for slot in ctx
        .get_slots_with_token()
        .map_err(|e| format!("cannot list PKCS#11 slots: {e}"))?
    {
        if let Ok(info) = ctx.get_token_info(slot) {
            if info.label().trim_end() == label {
                return Ok(slot);
            }
        }
    }
    Err(format!("no PKCS#11 token is labelled '{label}'"))
}

fn login(session: &Session, user: UserType, pin: &AuthPin) -> std::result::Result<(), P11Error> {
    match session.login(user, Some(pin)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn wrap_key_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(WRAP_LABEL.as_bytes().to_vec()),
    ]
}

/// Creates the token's backup wrapping key (AES-256, trusted, unextractable)
/// as the security officer; `Ok(false)` if it is already there.
pub fn init_backup_key(
    module: &Path,
    token_label: &str,
    so_pin: &Sensitive<String>,
) -> std::result::Result<bool, String> {
    let ctx = load(module)?;
    let slot = find_slot(&ctx, token_label)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| format!("cannot open a session: {e}"))?;
    if !session
        .find_objects(&wrap_key_template())
        .map_err(|e| format!("cannot search the token: {e}"))?
        .is_empty()
    {
        return Ok(false);
    }
    let pin = AuthPin::new(so_pin.expose().as_str().into());
    login(&session, UserType::So, &pin)
        .map_err(|e| format!("security officer login failed: {e}"))?;
    let made = session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Trusted(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::ValueLen(32.into()),
            Attribute::Label(WRAP_LABEL.as_bytes().to_vec()),
        ],
    );
    let _ = session.logout();
    made.map_err(|e| format!("cannot create the backup wrapping key: {e}"))?;
    Ok(true)
}

/// `CKA_EC_PARAMS`: the DER OID of a named curve.
fn ec_params(curve: Curve) -> Vec<u8> {
    match curve {
        Curve::P256 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        Curve::P384 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        Curve::P521 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        Curve::P256K => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
    }
}

/// `x, y` of a `CKA_EC_POINT` (a DER OCTET STRING around `04 || x || y`, or
/// the bare point as some tokens give it).
fn ec_point(raw: &[u8], curve: Curve) -> Result<(Vec<u8>, Vec<u8>)> {
    let n = curve.coordinate_len();
    let point = if raw.len() == 1 + 2 * n {
        raw
    } else {
        match raw {
            [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
            [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
            _ => return Err(Error::Integrity),
        }
    };
    match point {
        [0x04, xy @ ..] if xy.len() == 2 * n => {
            let (x, y) = xy.split_at(n);
            Ok((x.to_vec(), y.to_vec()))
        }
        _ => Err(Error::Integrity),
    }
}

/// PKCS#1 v1.5 DigestInfo prefix for RS256/384/512.
fn digest_info(bits: u16, digest: &[u8]) -> Vec<u8> {
    let prefix: &[u8] = match bits {
        384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        _ => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
    };
    [prefix, digest].concat()
}

fn sha_for(bits: u16) -> (MechanismType, PkcsMgfType) {
    match bits {
        384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
        _ => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    }
}

/// The message of a PKCS#1 v1.5 encryption block `00 02 PS 00 M` (PS at
/// least 8 non-zero bytes), scanning every byte whatever it finds.
fn mgf1(md: openssl::hash::MessageDigest, seed: &[u8], len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len + md.size());
    let mut counter: u32 = 0;
    while out.len() < len {
        let block = openssl::hash::hash(md, &[seed, &counter.to_be_bytes()].concat())
            .map_err(|_| Error::Integrity)?;
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

/// EME-OAEP decoding (RFC 8017 7.1.2, empty label) of the raw RSA output
/// `em`, for tokens without CKM_RSA_PKCS_OAEP for this hash. Every check is
/// made before any is acted on.
fn oaep_decode(md: openssl::hash::MessageDigest, em: &[u8]) -> Result<Option<Vec<u8>>> {
    let h = md.size();
    if em.len() < 2 * h + 2 {
        return Ok(None);
    }
    let (y, rest) = em.split_at(1);
    let (masked_seed, masked_db) = rest.split_at(h);
    let seed_mask = mgf1(md, masked_db, h)?;
    let seed: Vec<u8> = masked_seed
        .iter()
        .zip(&seed_mask)
        .map(|(a, b)| a ^ b)
        .collect();
    let db_mask = mgf1(md, &seed, masked_db.len())?;
    let db: Vec<u8> = masked_db.iter().zip(&db_mask).map(|(a, b)| a ^ b).collect();
    let l_hash = openssl::hash::hash(md, b"").map_err(|_| Error::Integrity)?;
    let (l_hash2, ps_m) = db.split_at(h);
    let mut good = y.first() == Some(&0);
    good &= openssl::memcmp::eq(&l_hash, l_hash2);
    let mut one = 0usize;
    let mut found = false;
    let mut junk = false;
    for (i, b) in ps_m.iter().enumerate() {
        let hit = *b == 1 && !found;
        junk |= !found && *b != 0 && *b != 1;
        one = if hit { i } else { one };
        found |= hit;
    }
    good &= found && !junk;
    Ok(good
        .then(|| ps_m.get(one + 1..).map(<[u8]>::to_vec))
        .flatten())
}

fn reference(id: &[u8]) -> Sensitive<Vec<u8>> {
    Sensitive::new([MAGIC, id].concat())
}

fn cka_id(reference: &[u8]) -> Result<&[u8]> {
    reference.strip_prefix(MAGIC).ok_or(Error::Integrity)
}

fn new_id() -> Result<Vec<u8>> {
    let mut id = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut id).map_err(|_| Error::Integrity)?;
    Ok(id)
}

/// What every private key Keyhaven puts into the token carries.
fn private_flags(kty: KeyType, id: &[u8], label: &str) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Sign(true),
        Attribute::Derive(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if kty == KeyType::Rsa {
        t.push(Attribute::Decrypt(true));
    }
    t
}

/// What every symmetric (`oct-HSM`) key Keyhaven puts into the token
/// carries: an AES secret key, sensitive, wrappable only by the trusted
/// backup key, usable for encrypt/decrypt and wrap/unwrap of caller data.
fn secret_flags(id: &[u8], label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(P11KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Sign(false),
        Attribute::Derive(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// The key classes a stored reference can name.
const KEY_CLASSES: [ObjectClass; 2] = [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY];

impl Pkcs11Keys {
    /// Opens the token and logs in; refuses a token without the backup
    /// wrapping key (`keyhaven hsm init` makes it).
    pub fn open(cfg: &HsmConfig) -> std::result::Result<Self, String> {
        let ctx = load(&cfg.module)?;
        let slot = find_slot(&ctx, &cfg.token_label)?;
        let keys = Self {
            ctx,
            slot,
            pin: AuthPin::new(cfg.pin.expose().as_str().into()),
            idle: Mutex::new(Vec::new()),
            objects: RwLock::new(()),
            handles: RwLock::new(HashMap::new()),
            software: SoftwareKeys::new(),
        };
        let session = keys
            .open_session()
            .map_err(|e| format!("cannot log in to token '{}': {e}", cfg.token_label))?;
        let wrap = session
            .find_objects(&wrap_key_template())
            .map_err(|e| format!("cannot search the token: {e}"))?;
        if wrap.is_empty() {
            return Err(format!(
                "token '{}' has no Keyhaven backup wrapping key; create it once with `keyhaven hsm init` (needs the security officer PIN)",
                cfg.token_label
            ));
        }
        keys.checkin(session);
        Ok(keys)
    }

    fn open_session(&self) -> std::result::Result<Session, P11Error> {
        let session = self.ctx.open_rw_session(self.slot)?;
        login(&session, UserType::User, &self.pin)?;
        Ok(session)
    }

    fn checkout(&self) -> std::result::Result<Session, P11Error> {
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        match pooled {
            Some(s) => Ok(s),
            None => self.open_session(),
        }
    }

    fn checkin(&self, session: Session) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < IDLE_SESSIONS {
                idle.push(session);
            }
        }
    }

    /// Runs `f` on a pooled session; if the token dropped the session or our
    /// login, every pooled session goes, and `f` runs once more on a new one.
    fn with_session<T>(
        &self,
        f: impl Fn(&Session) -> std::result::Result<T, P11Error>,
    ) -> std::result::Result<T, P11Error> {
        let session = self.checkout()?;
        match f(&session) {
            Ok(v) => {
                self.checkin(session);
                Ok(v)
            }
            Err(e) if lost(&e) => {
                drop(session);
                if let Ok(mut idle) = self.idle.lock() {
                    idle.clear();
                }
                let session = self.open_session()?;
                let r = f(&session);
                if r.is_ok() {
                    self.checkin(session);
                }
                r
            }
            Err(e) => {
                self.checkin(session);
                Err(e)
            }
        }
    }

    /// Holds the token's object set for a creation or destruction: no
    /// search and no other creation runs meanwhile (see `objects`).
    /// Key generation holds it too, for as long as the token takes
    /// (SoftHSM2 makes the objects only at the end, but a caller cannot
    /// tell when), so generations run one at a time.
    fn objects_for_write(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.objects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`Self::with_session`] for a call that creates or destroys a token
    /// object.
    fn with_write_session<T>(
        &self,
        f: impl Fn(&Session) -> std::result::Result<T, P11Error>,
    ) -> std::result::Result<T, P11Error> {
        off_the_runtime(|| {
            let _objects = self.objects_for_write();
            self.with_session(f)
        })
    }

    /// [`Self::with_session`] for a search of the token's objects.
    fn with_search_session<T>(
        &self,
        f: impl Fn(&Session) -> std::result::Result<T, P11Error>,
    ) -> std::result::Result<T, P11Error> {
        off_the_runtime(|| {
            let _objects = self
                .objects
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.with_session(f)
        })
    }

    /// The private (or secret) key object with this `CKA_ID`.
    fn find_private(&self, id: &[u8]) -> Result<ObjectHandle> {
        let find = |s: &Session| -> std::result::Result<Vec<ObjectHandle>, P11Error> {
            for class in KEY_CLASSES {
                let found =
                    s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
                if !found.is_empty() {
                    return Ok(found);
                }
            }
            Ok(Vec::new())
        };
        let found = self
            .with_search_session(|s| {
                let found = find(s)?;
                if !found.is_empty() {
                    return Ok(found);
                }
                // Private objects are invisible to a session the token has
                // logged out (an HSM restart): log in again and look once more.
                login(s, UserType::User, &self.pin)?;
                find(s)
            })
            .map_err(hsm_err)?;
        found.first().copied().ok_or_else(|| {
            Error::Unavailable("HSM: the key object is missing from the token".into())
        })
    }

    fn wrapping_key(&self) -> Result<ObjectHandle> {
        let found = self
            .with_search_session(|s| s.find_objects(&wrap_key_template()))
            .map_err(hsm_err)?;
        Self::first_wrapping_key(found)
    }

    fn first_wrapping_key(found: Vec<ObjectHandle>) -> Result<ObjectHandle> {
        found
            .first()
            .copied()
            .ok_or_else(|| Error::Unavailable("HSM: the backup wrapping key is missing".into()))
    }

    /// Runs `f` with the key's object handle (cached; found again once if the
    /// token no longer knows the cached one).
    fn with_key<T>(
        &self,
        key: &SealedPrivate<'_>,
        f: impl Fn(&Session, ObjectHandle) -> std::result::Result<T, P11Error>,
    ) -> Result<T> {
        self.with_key_raw(key, f)?.map_err(hsm_err)
    }

    /// [`Self::with_key`] handing back the operation's own PKCS#11 error.
    fn with_key_raw<T>(
        &self,
        key: &SealedPrivate<'_>,
        f: impl Fn(&Session, ObjectHandle) -> std::result::Result<T, P11Error>,
    ) -> Result<std::result::Result<T, P11Error>> {
        let cached = self
            .handles
            .read()
            .ok()
            .and_then(|m| m.get(key.id).map(|(_, h)| *h));
        let handle = match cached {
            Some(h) => h,
            None => self.resolve(key)?,
        };
        match self.with_session(|s| f(s, handle)) {
            Err(e) if stale(&e) => {
                let handle = self.resolve(key)?;
                Ok(self.with_session(|s| f(s, handle)))
            }
            r => Ok(r),
        }
    }

    fn resolve(&self, key: &SealedPrivate<'_>) -> Result<ObjectHandle> {
        let reference = (key.open)()?;
        let id = cka_id(reference.expose())?.to_vec();
        let handle = self.find_private(&id)?;
        if let Ok(mut m) = self.handles.write() {
            if m.len() >= HANDLE_CACHE {
                m.clear();
            }
            m.insert(key.id.to_vec(), (id, handle));
        }
        Ok(handle)
    }

    /// Generates a key pair in the token; the public half is a session object
    /// destroyed once read.
    pub fn generate(&self, spec: &KeySpec) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        let id = new_id()?;
        if spec.kty == KeyType::Oct {
            let bits = spec.size.unwrap_or(256);
            let mut template = secret_flags(&id, &spec.label);
            template.push(Attribute::ValueLen(u64::from(bits / 8).into()));
            self.with_write_session(|s| s.generate_key(&Mechanism::AesKeyGen, &template))
                .map_err(hsm_err)?;
            return Ok((reference(&id), symmetric_public(bits)));
        }
        let (mechanism, mut public_template) = match spec.kty {
            KeyType::Rsa => {
                let e = spec.exponent.unwrap_or(65_537);
                if e < 3 || e & 1 == 0 {
                    return Err(Error::BadParameter(
                        "The public exponent must be an odd number of at least 3.".into(),
                    ));
                }
                let e: Vec<u8> = e
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|b| *b == 0)
                    .collect();
                (
                    Mechanism::RsaPkcsKeyPairGen,
                    vec![
                        Attribute::ModulusBits(u64::from(spec.size.unwrap_or(2048)).into()),
                        Attribute::PublicExponent(e),
                        Attribute::Encrypt(true),
                    ],
                )
            }
            KeyType::Ec => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(ec_params(
                    spec.curve.unwrap_or(Curve::P256),
                ))],
            ),
            KeyType::Oct => return Err(Error::Integrity),
        };
        public_template.extend([
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Verify(true),
        ]);
        let private_template = private_flags(spec.kty, &id, &spec.label);
        let kty = spec.kty;
        let curve = spec.curve.unwrap_or(Curve::P256);
        let public = self
            .with_write_session(|s| {
                let (pub_h, _) =
                    s.generate_key_pair(&mechanism, &public_template, &private_template)?;
                let wanted = match kty {
                    KeyType::Rsa => vec![AttributeType::Modulus, AttributeType::PublicExponent],
                    _ => vec![AttributeType::EcPoint],
                };
                let attrs = s.get_attributes(pub_h, &wanted);
                let _ = s.destroy_object(pub_h);
                attrs
            })
            .map_err(hsm_err)?;
        let mut out = PublicKey {
            kty,
            n: None,
            e: None,
            crv: None,
            x: None,
            y: None,
            bits: None,
        };
        for a in public {
            match a {
                Attribute::Modulus(n) => out.n = Some(n),
                Attribute::PublicExponent(e) => out.e = Some(e),
                Attribute::EcPoint(p) => {
                    let (x, y) = ec_point(&p, curve)?;
                    out.crv = Some(curve);
                    out.x = Some(x);
                    out.y = Some(y);
                }
                _ => {}
            }
        }
        let complete = match kty {
            KeyType::Rsa => out.n.is_some() && out.e.is_some(),
            _ => out.x.is_some(),
        };
        if !complete {
            return Err(Error::Integrity);
        }
        Ok((reference(&id), out))
    }

    /// Signs a digest inside the token (JOSE output: ECDSA as `r || s`).
    pub fn sign(
        &self,
        key: &SealedPrivate<'_>,
        alg: SignAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>> {
        let (mechanism, data) = sign_mechanism(alg, digest);
        self.with_key(key, |s, h| s.sign(&mechanism, h, &data))
    }

    /// Decrypts inside the token. RSA1_5 runs the raw RSA operation in the
    /// token and checks the padding here, so a bad padding yields bytes
    /// derived from the key's own output (implicit rejection), never an error.
    pub fn decrypt(
        &self,
        key: &SealedPrivate<'_>,
        alg: CipherAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Sensitive<Vec<u8>>> {
        let oaep = |hash: MechanismType, mgf: PkcsMgfType| {
            Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
        };
        let bad = || Error::BadParameter("The ciphertext could not be decrypted.".into());
        let undecryptable = |e: &P11Error| {
            matches!(
                e,
                P11Error::Pkcs11(
                    RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::DataInvalid
                        | RvError::DataLenRange
                        | RvError::GeneralError,
                    _
                )
            )
        };
        let mechanism = match alg {
            CipherAlgorithm::Rsa15 => Mechanism::RsaX509,
            CipherAlgorithm::RsaOaep => oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            CipherAlgorithm::RsaOaep256 => oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        let out = match self.with_key_raw(key, |s, h| s.decrypt(&mechanism, h, ciphertext))? {
            Ok(v) => Sensitive::new(v),
            // A token without OAEP for this hash (SoftHSM2 has SHA-1 only):
            // raw RSA in the token, OAEP decoding here.
            Err(P11Error::Pkcs11(
                RvError::ArgumentsBad | RvError::MechanismParamInvalid | RvError::MechanismInvalid,
                _,
            )) if alg != CipherAlgorithm::Rsa15 => {
                let md = match alg {
                    CipherAlgorithm::RsaOaep => openssl::hash::MessageDigest::sha1(),
                    _ => openssl::hash::MessageDigest::sha256(),
                };
                let raw = Sensitive::new(
                    self.with_key(key, |s, h| s.decrypt(&Mechanism::RsaX509, h, ciphertext))?,
                );
                return oaep_decode(md, raw.expose())?
                    .map(Sensitive::new)
                    .ok_or_else(bad);
            }
            // Raw RSA refuses only out-of-range input (value >= n, wrong
            // length): public conditions, refused like any bad ciphertext.
            Err(e) if undecryptable(&e) => return Err(bad()),
            Err(e) => return Err(hsm_err(e)),
        };
        if alg != CipherAlgorithm::Rsa15 {
            return Ok(out);
        }
        // The private exponent never leaves the token, so the rejection
        // secret comes from the token's own output: the raw RSA result,
        // which only the key's holder can compute for this ciphertext.
        // A token may drop the leading zero bytes of the raw result: the
        // block is the ciphertext's (the modulus's) length, whatever it says.
        let mut block =
            zeroize::Zeroizing::new(vec![
                0u8;
                ciphertext.len().saturating_sub(out.expose().len())
            ]);
        block.extend_from_slice(out.expose());
        let raw = block.as_slice();
        let seed = zeroize::Zeroizing::new(openssl::sha::sha256(
            &[b"keyhaven-hsm-rsa1_5".as_slice(), raw].concat(),
        ));
        crate::rsa1_5::decode(&seed, ciphertext, raw).map(Sensitive::new)
    }

    /// Puts a caller's private key into the token (`"Hsm": true` imports):
    /// checked by the software backend first, then created as a sensitive
    /// token object.
    pub fn import(&self, key: &PrivateJwk, label: &str) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        let id = new_id()?;
        if key.kty == KeyType::Oct {
            let k = key
                .k
                .as_ref()
                .ok_or_else(|| Error::BadParameter("An oct key needs its value (k).".into()))?;
            let bits = match k.expose().len() {
                16 => 128,
                24 => 192,
                32 => 256,
                _ => {
                    return Err(Error::BadParameter(
                        "An oct-HSM key must be 128, 192 or 256 bits.".into(),
                    ))
                }
            };
            let mut template = secret_flags(&id, label);
            template.push(Attribute::Value(k.expose().clone()));
            let made = self.with_write_session(|s| s.create_object(&template));
            for a in &mut template {
                if let Attribute::Value(v) = a {
                    zeroize::Zeroize::zeroize(v);
                }
            }
            made.map_err(hsm_err)?;
            return Ok((reference(&id), symmetric_public(bits)));
        }
        let (_, public) = self.software.import(key)?;
        let secret = |v: &Option<Sensitive<Vec<u8>>>| {
            v.as_ref().map(|x| x.expose().clone()).unwrap_or_default()
        };
        let mut template = private_flags(key.kty, &id, label);
        match key.kty {
            KeyType::Rsa => template.extend([
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(P11KeyType::RSA),
                Attribute::Modulus(public.n.clone().unwrap_or_default()),
                Attribute::PublicExponent(public.e.clone().unwrap_or_default()),
                Attribute::PrivateExponent(secret(&key.d)),
                Attribute::Prime1(secret(&key.p)),
                Attribute::Prime2(secret(&key.q)),
                Attribute::Exponent1(secret(&key.dp)),
                Attribute::Exponent2(secret(&key.dq)),
                Attribute::Coefficient(secret(&key.qi)),
            ]),
            KeyType::Ec => {
                let curve = public.crv.ok_or(Error::Integrity)?;
                template.extend([
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(P11KeyType::EC),
                    Attribute::EcParams(ec_params(curve)),
                    Attribute::Value(secret(&key.d)),
                ]);
            }
            KeyType::Oct => return Err(Error::Integrity),
        }
        let made = self.with_write_session(|s| s.create_object(&template));
        for a in &mut template {
            if let Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v)
            | Attribute::Value(v) = a
            {
                zeroize::Zeroize::zeroize(v);
            }
        }
        made.map_err(hsm_err)?;
        Ok((reference(&id), public))
    }

    /// The key wrapped by the token's backup wrapping key (AES key wrap with
    /// padding, RFC 5649).
    pub fn export(&self, key: &SealedPrivate<'_>) -> Result<Vec<u8>> {
        let wrap = self.wrapping_key()?;
        self.with_key(key, |s, h| s.wrap_key(&Mechanism::AesKeyWrapPad, wrap, h))
    }

    /// Unwraps a backed-up key into the token as a new object and checks it
    /// against the public key it was backed up with.
    pub fn import_backup(
        &self,
        wrapped: &[u8],
        public: &PublicKey,
        label: &str,
    ) -> Result<Sensitive<Vec<u8>>> {
        off_the_runtime(|| self.import_backup_locked(wrapped, public, label))
    }

    fn import_backup_locked(
        &self,
        wrapped: &[u8],
        public: &PublicKey,
        label: &str,
    ) -> Result<Sensitive<Vec<u8>>> {
        let foreign = || {
            Error::BadParameter(
                "The backup holds an HSM-protected key that only the HSM it was taken from (or one sharing its backup wrapping key) can restore."
                    .into(),
            )
        };
        let id = new_id()?;
        // The search for the wrapping key, the unwrap and the probe that
        // proves it are one token write: nothing searches the token while
        // the new object is made (see `objects`), and the probe signs with
        // the unwrapped handle rather than searching for it. Not reentrant:
        // the calls below use plain sessions.
        let _objects = self.objects_for_write();
        let wrap = Self::first_wrapping_key(
            self.with_session(|s| s.find_objects(&wrap_key_template()))
                .map_err(hsm_err)?,
        )?;
        if public.kty == KeyType::Oct {
            // RFC 5649's integrity check refuses a blob wrapped by any other
            // key: no probe is needed (nor possible without a public half).
            let template = secret_flags(&id, label);
            return match self
                .with_session(|s| s.unwrap_key(&Mechanism::AesKeyWrapPad, wrap, wrapped, &template))
            {
                Ok(_) => Ok(reference(&id)),
                Err(e) if lost(&e) => Err(hsm_err(e)),
                Err(_) => Err(foreign()),
            };
        }
        let mut template = private_flags(public.kty, &id, label);
        template.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(match public.kty {
                KeyType::Rsa => P11KeyType::RSA,
                _ => P11KeyType::EC,
            }),
        ]);
        let handle = match self
            .with_session(|s| s.unwrap_key(&Mechanism::AesKeyWrapPad, wrap, wrapped, &template))
        {
            Ok(h) => h,
            Err(e) if lost(&e) => return Err(hsm_err(e)),
            Err(_) => return Err(foreign()),
        };
        // The unwrapped key must be the backed-up one: sign and verify.
        let (alg, digest) = match (public.kty, public.crv) {
            (KeyType::Rsa, _) => (SignAlgorithm::Ps(256), vec![7u8; 32]),
            (KeyType::Ec, Some(Curve::P384)) => (SignAlgorithm::Es(384), vec![7u8; 48]),
            (KeyType::Ec, Some(Curve::P521)) => (SignAlgorithm::Es(512), vec![7u8; 64]),
            (KeyType::Ec, Some(Curve::P256K)) => (SignAlgorithm::Es256K, vec![7u8; 32]),
            _ => (SignAlgorithm::Es(256), vec![7u8; 32]),
        };
        let (mechanism, data) = sign_mechanism(alg, &digest);
        // An HSM failure of the probe is reported as one, not as a foreign
        // backup.
        let checked = self
            .with_session(|s| s.sign(&mechanism, handle, &data))
            .map_err(hsm_err)
            .map(|sig| {
                self.software
                    .verify(public, alg, &digest, &sig)
                    .unwrap_or(false)
            });
        match checked {
            Ok(true) => Ok(reference(&id)),
            Ok(false) => {
                let _ = self.with_session(|s| s.destroy_object(handle));
                Err(foreign())
            }
            Err(e) => {
                let _ = self.with_session(|s| s.destroy_object(handle));
                Err(e)
            }
        }
    }

    /// Destroys the token object a stored reference names (no-op if gone).
    pub fn destroy(&self, reference: &[u8]) -> Result<()> {
        let id = cka_id(reference)?.to_vec();
        if let Ok(mut m) = self.handles.write() {
            m.retain(|_, (cached, _)| *cached != id);
        }
        self.with_write_session(|s| {
            for class in KEY_CLASSES {
                for h in s.find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())])? {
                    s.destroy_object(h)?;
                }
            }
            Ok(())
        })
        .map_err(hsm_err)
    }

    /// An AES operation with a symmetric key inside the token. GCM makes a
    /// random 12-byte IV and returns the 16-byte tag apart; CBC (no
    /// padding) zero-pads the plaintext to the block, as Azure's managed HSM
    /// does; KW wraps the caller's bytes as a session object that the token
    /// wraps (RFC 3394) and destroys, and unwraps into a session object that
    /// is read and destroyed.
    pub fn aes(&self, key: &SealedPrivate<'_>, req: &AesRequest<'_>) -> Result<AesOutput> {
        let bad_input = || {
            Error::BadParameter("The data could not be processed with this key: check the ciphertext, iv, tag and aad.".into())
        };
        let iv16 = |iv: Option<&[u8]>| -> Result<[u8; 16]> {
            iv.and_then(|v| <[u8; 16]>::try_from(v).ok())
                .ok_or_else(|| Error::BadParameter("CBC needs a 16-byte iv.".into()))
        };
        match req.alg.mode {
            AesMode::Gcm => {
                let aad = req.aad.unwrap_or_default();
                if req.encrypt {
                    let mut iv = [0u8; 12];
                    openssl::rand::rand_bytes(&mut iv).map_err(|_| Error::Integrity)?;
                    let mut out = self.with_key(key, |s, h| {
                        let mut iv = iv;
                        let params =
                            cryptoki::mechanism::aead::GcmParams::new(&mut iv, aad, 128.into())?;
                        s.encrypt(&Mechanism::AesGcm(params), h, req.data)
                    })?;
                    let tag = out.split_off(out.len().saturating_sub(16));
                    Ok(AesOutput {
                        value: Sensitive::new(out),
                        iv: Some(iv.to_vec()),
                        tag: Some(tag),
                    })
                } else {
                    let mut iv: Vec<u8> = req.iv.unwrap_or_default().to_vec();
                    let input = [req.data, req.tag.unwrap_or_default()].concat();
                    let r = self.with_key_raw(key, |s, h| {
                        let mut iv = iv.clone();
                        let params =
                            cryptoki::mechanism::aead::GcmParams::new(&mut iv, aad, 128.into())?;
                        s.decrypt(&Mechanism::AesGcm(params), h, &input)
                    })?;
                    iv.clear();
                    match r {
                        Ok(pt) => Ok(AesOutput {
                            value: Sensitive::new(pt),
                            iv: None,
                            tag: None,
                        }),
                        Err(e) if lost(&e) => Err(hsm_err(e)),
                        Err(_) => Err(bad_input()),
                    }
                }
            }
            AesMode::Cbc | AesMode::CbcPad => {
                let iv = iv16(req.iv)?;
                let mechanism = if req.alg.mode == AesMode::Cbc {
                    Mechanism::AesCbc(iv)
                } else {
                    Mechanism::AesCbcPad(iv)
                };
                let mut data = req.data.to_vec();
                if req.encrypt && req.alg.mode == AesMode::Cbc && !data.len().is_multiple_of(16) {
                    data.resize(data.len() + 16 - data.len() % 16, 0);
                }
                let r = self.with_key_raw(key, |s, h| {
                    if req.encrypt {
                        s.encrypt(&mechanism, h, &data)
                    } else {
                        s.decrypt(&mechanism, h, &data)
                    }
                })?;
                zeroize::Zeroize::zeroize(&mut data);
                match r {
                    Ok(v) => Ok(AesOutput {
                        value: Sensitive::new(v),
                        iv: req.encrypt.then(|| iv.to_vec()),
                        tag: None,
                    }),
                    Err(e) if lost(&e) => Err(hsm_err(e)),
                    Err(_) => Err(bad_input()),
                }
            }
            AesMode::Kw => {
                let r = self.with_key_raw(key, |s, h| {
                    if req.encrypt {
                        let mut template = vec![
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(P11KeyType::GENERIC_SECRET),
                            Attribute::Token(false),
                            Attribute::Sensitive(false),
                            Attribute::Extractable(true),
                            Attribute::Value(req.data.to_vec()),
                        ];
                        let made = s.create_object(&template);
                        for a in &mut template {
                            if let Attribute::Value(v) = a {
                                zeroize::Zeroize::zeroize(v);
                            }
                        }
                        let obj = made?;
                        let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, h, obj);
                        let _ = s.destroy_object(obj);
                        wrapped
                    } else {
                        let template = [
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(P11KeyType::GENERIC_SECRET),
                            Attribute::Token(false),
                            Attribute::Sensitive(false),
                            Attribute::Extractable(true),
                        ];
                        let obj = s.unwrap_key(&Mechanism::AesKeyWrap, h, req.data, &template)?;
                        let value = s.get_attributes(obj, &[AttributeType::Value]);
                        let _ = s.destroy_object(obj);
                        let mut out = Vec::new();
                        for a in value? {
                            if let Attribute::Value(v) = a {
                                out = v;
                            }
                        }
                        Ok(out)
                    }
                })?;
                match r {
                    Ok(v) if !v.is_empty() => Ok(AesOutput {
                        value: Sensitive::new(v),
                        iv: None,
                        tag: None,
                    }),
                    Err(e) if lost(&e) => Err(hsm_err(e)),
                    _ => Err(bad_input()),
                }
            }
        }
    }

    /// Logs every session out, as a restarted HSM would (tests use it to
    /// prove the backend logs in again).
    pub fn drop_login(&self) {
        let _ = self.with_session(|s| s.logout());
    }

    /// Sessions currently idle in the pool.
    pub fn idle_sessions(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

/// Runs `f`, which may wait for the token's object lock or hold it through
/// a key generation (seconds for RSA-4096), without holding up the async
/// tasks queued on the calling worker thread: on a multi-threaded tokio
/// runtime the worker is handed over first (`block_in_place`). HSM calls are
/// made from request handlers; otherwise, a few requests waiting behind a
/// generation would hold every worker and stall the node, software vaults
/// included. Elsewhere (no runtime, a blocking-pool thread, a
/// current-thread runtime, where `block_in_place` is not allowed) `f` runs
/// as is.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The PKCS#11 mechanism and input for a JOSE signature over `digest`.
fn sign_mechanism(alg: SignAlgorithm, digest: &[u8]) -> (Mechanism<'static>, Vec<u8>) {
    match alg {
        SignAlgorithm::Rs(bits) => (Mechanism::RsaPkcs, digest_info(bits, digest)),
        SignAlgorithm::Ps(bits) => {
            let (hash_alg, mgf) = sha_for(bits);
            (
                Mechanism::RsaPkcsPss(PkcsPssParams {
                    hash_alg,
                    mgf,
                    s_len: (digest.len() as u64).into(),
                }),
                digest.to_vec(),
            )
        }
        SignAlgorithm::Es(_) | SignAlgorithm::Es256K => (Mechanism::Ecdsa, digest.to_vec()),
    }
}

/// The key port as the server uses it: software keys, and HSM keys when a
/// token is configured. Routed by the key (`SealedPrivate::hsm`) or the
/// spec (`KeySpec::hsm`); public-key operations are the same for both.
pub struct KeyRouter {
    software: std::sync::Arc<SoftwareKeys>,
    hsm: Option<std::sync::Arc<Pkcs11Keys>>,
}

impl std::fmt::Debug for KeyRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRouter")
            .field("hsm", &self.hsm.is_some())
            .finish()
    }
}

impl KeyRouter {
    /// Software keys plus, optionally, an HSM.
    pub fn new(
        software: std::sync::Arc<SoftwareKeys>,
        hsm: Option<std::sync::Arc<Pkcs11Keys>>,
    ) -> Self {
        Self { software, hsm }
    }

    fn hsm(&self) -> Result<&Pkcs11Keys> {
        self.hsm.as_deref().ok_or_else(|| {
            Error::Unavailable("an HSM-protected key is used but no HSM is configured".into())
        })
    }
}

/// What a symmetric key's version stores in place of a public key.
fn symmetric_public(bits: u32) -> PublicKey {
    PublicKey {
        kty: KeyType::Oct,
        n: None,
        e: None,
        crv: None,
        x: None,
        y: None,
        bits: Some(bits),
    }
}

impl KeyBackend for KeyRouter {
    fn generate(&self, spec: &KeySpec) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        if spec.hsm {
            self.hsm()?.generate(spec)
        } else {
            self.software.generate(spec)
        }
    }

    fn sign(&self, key: &SealedPrivate<'_>, alg: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        if key.hsm {
            self.hsm()?.sign(key, alg, digest)
        } else {
            self.software.sign(key, alg, digest)
        }
    }

    fn verify(
        &self,
        public: &PublicKey,
        alg: SignAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        self.software.verify(public, alg, digest, signature)
    }

    fn encrypt(
        &self,
        public: &PublicKey,
        alg: CipherAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.software.encrypt(public, alg, plaintext)
    }

    fn decrypt(
        &self,
        key: &SealedPrivate<'_>,
        alg: CipherAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Sensitive<Vec<u8>>> {
        if key.hsm {
            self.hsm()?.decrypt(key, alg, ciphertext)
        } else {
            self.software.decrypt(key, alg, ciphertext)
        }
    }

    fn import(&self, key: &PrivateJwk) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        self.software.import(key)
    }

    fn hardware(&self) -> bool {
        self.hsm.is_some()
    }

    fn import_hardware(
        &self,
        key: &PrivateJwk,
        label: &str,
    ) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        self.hsm()?.import(key, label)
    }

    fn export_hardware(&self, key: &SealedPrivate<'_>) -> Result<Vec<u8>> {
        self.hsm()?.export(key)
    }

    fn import_hardware_backup(
        &self,
        wrapped: &[u8],
        public: &PublicKey,
        label: &str,
    ) -> Result<Sensitive<Vec<u8>>> {
        self.hsm()?.import_backup(wrapped, public, label)
    }

    fn aes(&self, key: &SealedPrivate<'_>, request: &AesRequest<'_>) -> Result<AesOutput> {
        self.hsm()?.aes(key, request)
    }

    fn destroy_hardware(&self, private: &[u8]) -> Result<()> {
        match &self.hsm {
            Some(h) => h.destroy(private),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_parse_wrapped_and_bare() {
        let mut bare = vec![4u8];
        bare.extend([1u8; 32]);
        bare.extend([2u8; 32]);
        let mut wrapped = vec![4u8, 65];
        wrapped.extend(&bare);
        for p in [&bare, &wrapped] {
            let (x, y) = ec_point(p, Curve::P256).unwrap();
            assert_eq!((x, y), (vec![1u8; 32], vec![2u8; 32]));
        }
        assert!(ec_point(&[4, 3, 4, 1, 2], Curve::P256).is_err());
    }

    /// A task blocked in an HSM call (here: waiting for a message) does not
    /// hold up the tasks queued behind it on its worker: with one worker,
    /// the task that sends the message still runs. Without the hand-over
    /// this would wait the full 10 s and fail.
    #[test]
    fn a_blocked_hsm_call_leaves_the_worker_to_other_tasks() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let blocked = tokio::spawn(async move {
                off_the_runtime(|| rx.recv_timeout(std::time::Duration::from_secs(10)))
            });
            // Let the blocked task take the worker first.
            tokio::task::yield_now().await;
            let sender = tokio::spawn(async move { tx.send(()) });
            (blocked.await.unwrap(), sender.await.unwrap())
        });
        assert!(got.0.is_ok(), "the sending task never ran");
        assert!(got.1.is_ok());
        // Outside a runtime, and on a current-thread runtime (where
        // block_in_place would panic), the call simply runs.
        assert_eq!(off_the_runtime(|| 7), 7);
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(current.block_on(async { off_the_runtime(|| 8) }), 8);
    }
}
