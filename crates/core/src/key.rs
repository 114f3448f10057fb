//! Keys: the versioned-object core plus a sealed private key and public
//! metadata (the public JWK and `key_ops`). Private material never leaves the
//! `KeyBackend`; the service checks Azure's rules (key type and algorithm,
//! digest length, `key_ops`, enabled, nbf/exp) before asking it to operate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, Operation};
use crate::error::{Error, Result};
use crate::ids::{ObjectName, Version};
use crate::object::{
    validate_tags, Attributes, AttributesPatch, DeletedInfo, ObjectKind, Page, VersionRecord,
};
use crate::sensitive::Sensitive;
use crate::service::VaultService;
use crate::vault::VaultRecord;

const KIND: ObjectKind = ObjectKind::Key;

/// Key types this version supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// RSA.
    #[serde(rename = "RSA")]
    Rsa,
    /// Elliptic curve.
    #[serde(rename = "EC")]
    Ec,
    /// Symmetric (AES), in a managed HSM only (`oct-HSM`).
    #[serde(rename = "oct")]
    Oct,
}

impl KeyType {
    /// Parses Azure's `kty` where only software keys are possible.
    pub fn parse(s: &str) -> Result<Self> {
        match Self::parse_protected(s)? {
            (kty, false) => Ok(kty),
            (_, true) => Err(Error::BadParameter(format!(
                "Key type {s} is not supported here: HSM-protected keys are created as keys of a premium vault."
            ))),
        }
    }

    /// Parses Azure's `kty`, software or HSM-protected: `(type, hsm)`.
    pub fn parse_protected(s: &str) -> Result<(Self, bool)> {
        match s {
            "RSA" => Ok((Self::Rsa, false)),
            "EC" => Ok((Self::Ec, false)),
            "RSA-HSM" => Ok((Self::Rsa, true)),
            "EC-HSM" => Ok((Self::Ec, true)),
            // Symmetric keys exist only inside an HSM (and only in a managed
            // HSM pool: the service refuses them in a vault).
            "oct" | "oct-HSM" => Ok((Self::Oct, true)),
            _ => Err(Error::BadParameter(format!(
                "The key type '{}' is invalid. Supported types: RSA, EC.",
                s.chars().take(20).collect::<String>()
            ))),
        }
    }

    /// Azure's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::Ec => "EC",
            Self::Oct => "oct",
        }
    }

    /// Azure's name, with the `-HSM` suffix for HSM-protected keys.
    pub fn as_protected_str(self, hsm: bool) -> &'static str {
        match (self, hsm) {
            (Self::Rsa, false) => "RSA",
            (Self::Ec, false) => "EC",
            (Self::Rsa, true) => "RSA-HSM",
            (Self::Ec, true) => "EC-HSM",
            (Self::Oct, _) => "oct-HSM",
        }
    }
}

/// Elliptic curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    /// NIST P-256.
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384.
    #[serde(rename = "P-384")]
    P384,
    /// NIST P-521.
    #[serde(rename = "P-521")]
    P521,
    /// secp256k1.
    #[serde(rename = "P-256K")]
    P256K,
}

impl Curve {
    /// Parses Azure's `crv`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "P-256" => Ok(Self::P256),
            "P-384" => Ok(Self::P384),
            "P-521" => Ok(Self::P521),
            "P-256K" | "SECP256K1" => Ok(Self::P256K),
            _ => Err(Error::BadParameter(format!(
                "The curve '{}' is invalid. Supported curves: P-256, P-384, P-521, P-256K.",
                s.chars().take(20).collect::<String>()
            ))),
        }
    }

    /// Azure's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
            Self::P256K => "P-256K",
        }
    }

    /// The curve's size in bits, as Azure reports a certificate policy's
    /// `key_size` for EC keys.
    pub fn bits(self) -> u32 {
        match self {
            Self::P256 | Self::P256K => 256,
            Self::P384 => 384,
            Self::P521 => 521,
        }
    }

    /// Bytes of one coordinate (and of r and s in a signature).
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::P256 | Self::P256K => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
}

/// Signature algorithms over a caller-supplied digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256/384/512.
    Rs(u16),
    /// RSASSA-PSS with SHA-256/384/512, salt = hash length.
    Ps(u16),
    /// ECDSA on P-256/384/521 (raw r||s).
    Es(u16),
    /// ECDSA on secp256k1 with SHA-256.
    Es256K,
}

impl SignAlgorithm {
    /// Parses Azure's `alg`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "RS256" => Self::Rs(256),
            "RS384" => Self::Rs(384),
            "RS512" => Self::Rs(512),
            "PS256" => Self::Ps(256),
            "PS384" => Self::Ps(384),
            "PS512" => Self::Ps(512),
            "ES256" => Self::Es(256),
            "ES384" => Self::Es(384),
            "ES512" => Self::Es(512),
            "ES256K" => Self::Es256K,
            _ => {
                return Err(Error::BadParameter(format!(
                    "The algorithm '{}' is not a valid signature algorithm.",
                    s.chars().take(20).collect::<String>()
                )))
            }
        })
    }

    /// The digest length this algorithm takes, in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Rs(bits) | Self::Ps(bits) | Self::Es(bits) => usize::from(bits) / 8,
            Self::Es256K => 32,
        }
    }

    /// Checks the algorithm fits the key.
    pub fn check_key(self, public: &PublicKey) -> Result<()> {
        let ok = matches!(
            (self, public.kty, public.crv),
            (Self::Rs(_) | Self::Ps(_), KeyType::Rsa, _)
                | (Self::Es(256), KeyType::Ec, Some(Curve::P256))
                | (Self::Es(384), KeyType::Ec, Some(Curve::P384))
                | (Self::Es(512), KeyType::Ec, Some(Curve::P521))
                | (Self::Es256K, KeyType::Ec, Some(Curve::P256K))
        );
        if ok {
            Ok(())
        } else {
            Err(Error::BadParameter(
                "The algorithm is not valid for this key type or curve.".into(),
            ))
        }
    }
}

/// Encryption and key-wrap algorithms for RSA keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherAlgorithm {
    /// RSAES-PKCS1-v1_5.
    Rsa15,
    /// RSAES-OAEP with SHA-1.
    RsaOaep,
    /// RSAES-OAEP with SHA-256.
    RsaOaep256,
}

impl CipherAlgorithm {
    /// Parses Azure's `alg`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "RSA1_5" => Ok(Self::Rsa15),
            "RSA-OAEP" => Ok(Self::RsaOaep),
            "RSA-OAEP-256" => Ok(Self::RsaOaep256),
            _ => Err(Error::BadParameter(format!(
                "The algorithm '{}' is not a valid encryption algorithm.",
                s.chars().take(20).collect::<String>()
            ))),
        }
    }

    /// Bytes of padding overhead for a plaintext under this algorithm.
    pub fn overhead(self) -> usize {
        match self {
            Self::Rsa15 => 11,
            Self::RsaOaep => 42,
            Self::RsaOaep256 => 66,
        }
    }
}

/// An encryption, decryption, wrap or unwrap request.
#[derive(Debug, Clone, Copy)]
pub struct CipherRequest<'a> {
    /// Key wrapping (`wrapKey`/`unwrapKey`) rather than `encrypt`/`decrypt`.
    pub wrap: bool,
    /// Algorithm.
    pub alg: CipherAlgorithm,
    /// Plaintext (encrypt, wrap) or ciphertext (decrypt, unwrap).
    pub data: &'a [u8],
}

/// AES modes of an `oct-HSM` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AesMode {
    /// GCM (the service makes the 12-byte IV; 16-byte tag).
    Gcm,
    /// CBC without padding (plaintext zero-padded to the block, as Azure does).
    Cbc,
    /// CBC with PKCS#7 padding.
    CbcPad,
    /// AES key wrap (RFC 3394), for `wrapKey`/`unwrapKey`.
    Kw,
}

/// An AES algorithm: `A{128,192,256}{GCM,CBC,CBCPAD,KW}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AesAlgorithm {
    /// Key size the algorithm needs, in bits.
    pub bits: u32,
    /// Mode.
    pub mode: AesMode,
}

impl AesAlgorithm {
    /// Parses Azure's `alg`; `None` if it names no AES algorithm.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix('A')?;
        let (bits, mode) = rest.split_at_checked(3)?;
        let bits = match bits {
            "128" => 128,
            "192" => 192,
            "256" => 256,
            _ => return None,
        };
        let mode = match mode {
            "GCM" => AesMode::Gcm,
            "CBC" => AesMode::Cbc,
            "CBCPAD" => AesMode::CbcPad,
            "KW" => AesMode::Kw,
            _ => return None,
        };
        Some(Self { bits, mode })
    }
}

/// A symmetric operation's input.
#[derive(Debug, Clone, Copy)]
pub struct AesRequest<'a> {
    /// Encrypt/wrap (true) or decrypt/unwrap (false).
    pub encrypt: bool,
    /// Algorithm.
    pub alg: AesAlgorithm,
    /// Plaintext or ciphertext.
    pub data: &'a [u8],
    /// IV (CBC both ways; GCM decrypt).
    pub iv: Option<&'a [u8]>,
    /// Additional authenticated data (GCM).
    pub aad: Option<&'a [u8]>,
    /// Authentication tag (GCM decrypt).
    pub tag: Option<&'a [u8]>,
}

/// A symmetric operation's result.
#[derive(Debug)]
pub struct AesOutput {
    /// Ciphertext or plaintext.
    pub value: Sensitive<Vec<u8>>,
    /// The IV used (encrypt: GCM's generated one, CBC's given one).
    pub iv: Option<Vec<u8>>,
    /// GCM's tag (encrypt).
    pub tag: Option<Vec<u8>>,
}

/// The public half of a key, as stored in the version's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// Key type.
    pub kty: KeyType,
    /// RSA modulus (big-endian).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64opt")]
    pub n: Option<Vec<u8>>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64opt")]
    pub e: Option<Vec<u8>>,
    /// Curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<Curve>,
    /// EC x coordinate (fixed width).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64opt")]
    pub x: Option<Vec<u8>>,
    /// EC y coordinate (fixed width).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64opt")]
    pub y: Option<Vec<u8>>,
    /// Key size in bits of a symmetric key (which has no public half).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u32>,
}

mod b64opt {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&URL_SAFE_NO_PAD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| URL_SAFE_NO_PAD.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What a key version stores besides its sealed private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// The public key.
    pub public: PublicKey,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// HSM-protected (`RSA-HSM`, `EC-HSM`): the sealed payload names an
    /// object inside the HSM instead of holding key material.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hsm: bool,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Key type.
    pub kty: KeyType,
    /// RSA modulus bits.
    pub size: Option<u32>,
    /// RSA public exponent.
    pub exponent: Option<u32>,
    /// EC curve.
    pub curve: Option<Curve>,
    /// Generate inside the HSM (`-HSM` key types).
    pub hsm: bool,
    /// What an HSM object is labelled (`vault/name`), for operators; set by the service.
    pub label: String,
}

/// The key-operation port: software (OpenSSL) today, PKCS#11 for the premium tier.
pub trait KeyBackend: Send + Sync {
    /// Generates a key; returns the private key (opaque to core) and its public half.
    fn generate(&self, spec: &KeySpec) -> Result<(Sensitive<Vec<u8>>, PublicKey)>;
    /// Signs `digest` with the private key.
    fn sign(&self, key: &SealedPrivate<'_>, alg: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>>;
    /// Verifies a signature with the public key.
    fn verify(
        &self,
        public: &PublicKey,
        alg: SignAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool>;
    /// Encrypts with the public key.
    fn encrypt(
        &self,
        public: &PublicKey,
        alg: CipherAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>>;
    /// Decrypts with the private key. For RSA1_5 a padding failure must not
    /// be observable (no error): implicit rejection.
    fn decrypt(
        &self,
        key: &SealedPrivate<'_>,
        alg: CipherAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Sensitive<Vec<u8>>>;
    /// Takes in a caller's private key; returns it in the backend's own form
    /// and its public half. Inconsistent parameters are a 400.
    fn import(&self, key: &PrivateJwk) -> Result<(Sensitive<Vec<u8>>, PublicKey)>;

    /// Whether an HSM is attached (premium vaults can hold `-HSM` keys).
    fn hardware(&self) -> bool {
        false
    }
    /// Takes a caller's private key into the HSM (`"Hsm": true` imports).
    fn import_hardware(
        &self,
        _key: &PrivateJwk,
        _label: &str,
    ) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        Err(no_hsm())
    }
    /// An HSM key for a backup: wrapped by the HSM's own backup key, so only
    /// that HSM (or one sharing the wrapping key) can take it back.
    fn export_hardware(&self, _key: &SealedPrivate<'_>) -> Result<Vec<u8>> {
        Err(no_hsm())
    }
    /// Takes a wrapped HSM key from a backup back into the HSM.
    fn import_hardware_backup(
        &self,
        _wrapped: &[u8],
        _public: &PublicKey,
        _label: &str,
    ) -> Result<Sensitive<Vec<u8>>> {
        Err(no_hsm())
    }
    /// An AES operation with a symmetric HSM key.
    fn aes(&self, _key: &SealedPrivate<'_>, _request: &AesRequest<'_>) -> Result<AesOutput> {
        Err(no_hsm())
    }
    /// Destroys the HSM object an opened HSM payload names (after a purge).
    fn destroy_hardware(&self, _private: &[u8]) -> Result<()> {
        Ok(())
    }
}

fn no_hsm() -> Error {
    Error::BadParameter(
        "This Keyhaven deployment has no HSM configured: HSM-protected keys (RSA-HSM, EC-HSM) need one (see `--pkcs11-module`)."
            .into(),
    )
}

/// A key version's private material as a backend receives it: an identity
/// naming exactly this sealed material, so the backend can keep a decrypted,
/// parsed handle, and a way to open the material when it has none. A sign
/// with a warm handle neither decrypts nor parses.
pub struct SealedPrivate<'a> {
    /// Unique to this sealed material: its associated data (vault, kind,
    /// name, version) plus the sealed payload's random head and tag.
    pub id: &'a [u8],
    /// Decrypts the material (called only on a handle-cache miss).
    pub open: &'a dyn Fn() -> Result<Sensitive<Vec<u8>>>,
    /// The material is a reference to an HSM object.
    pub hsm: bool,
}

impl std::fmt::Debug for SealedPrivate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedPrivate")
    }
}

/// The cache identity of sealed key material: the associated data it is bound
/// to, plus the first and last 32 bytes of the sealed payload (which hold the
/// random nonce and the authentication tag), so a re-sealed or restored
/// payload never hits a handle made from other material.
pub(crate) fn sealed_id(aad: &[u8], payload: &[u8]) -> Vec<u8> {
    let edge = payload.len().min(32);
    let mut id = Vec::with_capacity(aad.len() + 2 * edge + 1);
    id.extend_from_slice(aad);
    id.push(0);
    id.extend(payload.iter().take(edge));
    id.extend(payload.iter().skip(payload.len() - edge));
    id
}

/// A private JSON Web Key as a caller imports it (RSA with CRT parameters, or EC).
#[derive(Debug)]
pub struct PrivateJwk {
    /// Key type.
    pub kty: KeyType,
    /// RSA modulus.
    pub n: Option<Vec<u8>>,
    /// RSA public exponent.
    pub e: Option<Vec<u8>>,
    /// Private exponent (RSA) or scalar (EC).
    pub d: Option<Sensitive<Vec<u8>>>,
    /// RSA prime p.
    pub p: Option<Sensitive<Vec<u8>>>,
    /// RSA prime q.
    pub q: Option<Sensitive<Vec<u8>>>,
    /// RSA d mod (p-1).
    pub dp: Option<Sensitive<Vec<u8>>>,
    /// RSA d mod (q-1).
    pub dq: Option<Sensitive<Vec<u8>>>,
    /// RSA q^-1 mod p.
    pub qi: Option<Sensitive<Vec<u8>>>,
    /// EC curve.
    pub crv: Option<Curve>,
    /// EC x.
    pub x: Option<Vec<u8>>,
    /// EC y.
    pub y: Option<Vec<u8>>,
    /// Symmetric key value (`oct`).
    pub k: Option<Sensitive<Vec<u8>>>,
}

/// Changes to a key version; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct KeyUpdate {
    /// Attributes.
    pub attributes: AttributesPatch,
    /// Tags (replaced as a whole).
    pub tags: Option<BTreeMap<String, String>>,
    /// Permitted operations (replaced as a whole).
    pub key_ops: Option<Vec<String>>,
}

/// A signature to verify.
#[derive(Debug, Clone, Copy)]
pub struct SignatureCheck<'a> {
    /// Algorithm.
    pub alg: SignAlgorithm,
    /// The digest that was signed.
    pub digest: &'a [u8],
    /// The signature.
    pub signature: &'a [u8],
}

/// What a caller sends to create a key.
#[derive(Debug)]
pub struct KeyInput {
    /// Spec.
    pub spec: KeySpec,
    /// Requested operations (`None` = all applicable to the type).
    pub key_ops: Option<Vec<String>>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Attributes.
    pub attributes: AttributesPatch,
}

/// A key version (public parts only).
#[derive(Debug)]
pub struct KeyBundle {
    /// The version's properties.
    pub record: VersionRecord,
    /// The public key and permitted operations.
    pub meta: KeyMeta,
}

/// A soft-deleted key.
#[derive(Debug)]
pub struct DeletedKey {
    /// Latest version.
    pub record: VersionRecord,
    /// Its metadata.
    pub meta: KeyMeta,
    /// Deletion bookkeeping.
    pub info: DeletedInfo,
}

const RSA_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
];
const EC_OPS: &[&str] = &["sign", "verify"];
const OCT_OPS: &[&str] = &["encrypt", "decrypt", "wrapKey", "unwrapKey"];

fn default_ops(kty: KeyType) -> Vec<String> {
    let ops = match kty {
        KeyType::Rsa => RSA_OPS,
        KeyType::Ec => EC_OPS,
        KeyType::Oct => OCT_OPS,
    };
    ops.iter().map(|s| (*s).to_owned()).collect()
}

fn validate_ops(ops: &[String]) -> Result<()> {
    const ALL: &[&str] = &[
        "encrypt",
        "decrypt",
        "sign",
        "verify",
        "wrapKey",
        "unwrapKey",
        "import",
        "export",
    ];
    for op in ops {
        if !ALL.contains(&op.as_str()) {
            return Err(Error::BadParameter(format!(
                "The key operation '{}' is invalid.",
                op.chars().take(20).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// What to generate to replace `public` with a key of the same shape.
fn spec_of(public: &PublicKey) -> Result<KeySpec> {
    match public.kty {
        KeyType::Rsa => {
            let n = public.n.as_deref().ok_or(Error::Integrity)?;
            let e = public.e.as_deref().ok_or(Error::Integrity)?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            let exponent = e
                .iter()
                .skip_while(|b| **b == 0)
                .try_fold(0u32, |acc, b| {
                    acc.checked_mul(256).map(|a| a + u32::from(*b))
                })
                .ok_or(Error::Integrity)?;
            Ok(KeySpec {
                kty: KeyType::Rsa,
                size: Some(u32::try_from(significant * 8).map_err(|_| Error::Integrity)?),
                exponent: Some(exponent),
                curve: None,
                hsm: false,
                label: String::new(),
            })
        }
        KeyType::Ec => Ok(KeySpec {
            kty: KeyType::Ec,
            size: None,
            exponent: None,
            curve: Some(public.crv.ok_or(Error::Integrity)?),
            hsm: false,
            label: String::new(),
        }),
        KeyType::Oct => Ok(KeySpec {
            kty: KeyType::Oct,
            size: Some(public.bits.ok_or(Error::Integrity)?),
            exponent: None,
            curve: None,
            hsm: true,
            label: String::new(),
        }),
    }
}

/// Refuses a symmetric key outside a managed HSM pool.
fn check_container(vault: &VaultRecord, kty: KeyType) -> Result<()> {
    if kty == KeyType::Oct && !vault.is_managed_hsm() {
        return Err(Error::BadParameter(
            "Key type oct-HSM (symmetric keys) is only available in a Managed HSM, not in a vault."
                .into(),
        ));
    }
    Ok(())
}

/// Parses stored metadata.
pub fn meta_of(rec: &VersionRecord) -> Result<KeyMeta> {
    serde_json::from_str(&rec.meta).map_err(|_| Error::Integrity)
}

impl VaultService {
    /// Creates a key (a new version).
    pub async fn create_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        mut input: KeyInput,
    ) -> Result<KeyBundle> {
        auth.require_on(vault, Operation::KeyCreate, name)?;
        self.refuse_managed(vault, KIND, name, "create").await?;
        check_container(vault, input.spec.kty)?;
        // A managed HSM holds HSM keys only: `RSA` there is `RSA-HSM`.
        if input.spec.hsm || vault.is_managed_hsm() {
            input.spec.hsm = true;
            self.check_hardware(vault)?;
            input.spec.label = hardware_label(vault, name);
        }
        match (input.spec.kty, input.spec.size, input.spec.curve) {
            (KeyType::Rsa, Some(s), _) if ![2048, 3072, 4096].contains(&s) => {
                return Err(Error::BadParameter(
                    "RSA key size must be 2048, 3072 or 4096.".into(),
                ))
            }
            (KeyType::Rsa, _, Some(_)) => {
                return Err(Error::BadParameter(
                    "A curve is not valid for RSA keys.".into(),
                ))
            }
            (KeyType::Ec, Some(_), _) => {
                return Err(Error::BadParameter(
                    "key_size is not valid for EC keys.".into(),
                ))
            }
            (KeyType::Oct, Some(s), _) if ![128, 192, 256].contains(&s) => {
                return Err(Error::BadParameter(
                    "The key size of an oct-HSM key must be 128, 192 or 256.".into(),
                ))
            }
            (KeyType::Oct, _, Some(_)) => {
                return Err(Error::BadParameter(
                    "A curve is not valid for oct-HSM keys.".into(),
                ))
            }
            (KeyType::Oct, None, _) => input.spec.size = Some(256),
            _ => {}
        }
        let ops = input.key_ops.unwrap_or_else(|| default_ops(input.spec.kty));
        validate_ops(&ops)?;
        let tags = input.tags.unwrap_or_default();
        validate_tags(&tags)?;
        let (private, public) = self.keys.generate(&input.spec)?;
        self.store_key_version(
            vault,
            name,
            private,
            KeyMeta {
                public,
                key_ops: ops,
                hsm: input.spec.hsm,
            },
            tags,
            &input.attributes,
        )
        .await
    }

    /// Gets a key version (public parts only).
    pub async fn get_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
    ) -> Result<KeyBundle> {
        auth.require_on(vault, Operation::KeyGet, name)?;
        let record = self.live_version(vault, KIND, name, version).await?;
        let meta = meta_of(&record)?;
        Ok(KeyBundle { record, meta })
    }

    /// Lists keys.
    pub async fn list_keys(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<VersionRecord>> {
        self.list_objects(auth, vault, KIND, Operation::KeyList, cursor, limit)
            .await
    }

    /// Lists the versions of a key.
    pub async fn list_key_versions(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<VersionRecord>> {
        self.list_object_versions(
            auth,
            vault,
            KIND,
            Operation::KeyListVersions,
            name,
            (cursor, limit),
        )
        .await
    }

    /// Soft-deletes a key with all its versions.
    pub async fn delete_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<DeletedKey> {
        auth.require_on(vault, Operation::KeyDelete, name)?;
        self.refuse_managed(vault, KIND, name, "delete").await?;
        let (record, info) = self
            .delete_object(auth, vault, &[KIND], Operation::KeyDelete, name)
            .await?;
        let meta = meta_of(&record)?;
        Ok(DeletedKey { record, meta, info })
    }

    /// Reads a deleted key.
    pub async fn get_deleted_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<DeletedKey> {
        let (record, info) = self
            .get_deleted_object(auth, vault, KIND, Operation::KeyGetDeleted, name)
            .await?;
        let meta = meta_of(&record)?;
        Ok(DeletedKey { record, meta, info })
    }

    /// Lists deleted keys.
    pub async fn list_deleted_keys(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<(VersionRecord, DeletedInfo)>> {
        self.list_deleted_objects(auth, vault, KIND, Operation::KeyListDeleted, cursor, limit)
            .await
    }

    /// Recovers a deleted key.
    pub async fn recover_deleted_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<KeyBundle> {
        auth.require_on(vault, Operation::KeyRecover, name)?;
        self.refuse_managed(vault, KIND, name, "recover").await?;
        let record = self
            .recover_object(auth, vault, &[KIND], Operation::KeyRecover, name)
            .await?;
        let meta = meta_of(&record)?;
        Ok(KeyBundle { record, meta })
    }

    /// Purges a deleted key.
    pub async fn purge_deleted_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<()> {
        auth.require_on(vault, Operation::KeyPurge, name)?;
        self.refuse_managed(vault, KIND, name, "purge").await?;
        let doomed = self.hardware_refs(vault, name, true).await?;
        self.purge_object(auth, vault, &[KIND], Operation::KeyPurge, name)
            .await?;
        self.destroy_hardware(&doomed);
        Ok(())
    }

    /// Signs a digest with a key version; returns the version used and the signature.
    pub async fn sign(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
        alg: SignAlgorithm,
        digest: &[u8],
    ) -> Result<(VersionRecord, Vec<u8>)> {
        auth.require_on(vault, Operation::KeySign, name)?;
        let record = self.live_version(vault, KIND, name, version).await?;
        let meta = meta_of(&record)?;
        self.check_usable(&record, &meta, "sign")?;
        alg.check_key(&meta.public)?;
        check_digest(alg, digest)?;
        let sig = self.with_private(vault, &record, meta.hsm, |key| {
            self.keys.sign(key, alg, digest)
        })?;
        Ok((record, sig))
    }

    /// Verifies a signature with a key version.
    pub async fn verify(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
        check: SignatureCheck<'_>,
    ) -> Result<bool> {
        let SignatureCheck {
            alg,
            digest,
            signature,
        } = check;
        auth.require_on(vault, Operation::KeyVerify, name)?;
        let record = self.live_version(vault, KIND, name, version).await?;
        let meta = meta_of(&record)?;
        self.check_usable(&record, &meta, "verify")?;
        alg.check_key(&meta.public)?;
        check_digest(alg, digest)?;
        self.keys.verify(&meta.public, alg, digest, signature)
    }

    /// An AES operation with an `oct-HSM` key version: encrypt/decrypt
    /// (GCM, CBC, CBCPAD) or, with `wrap`, wrapKey/unwrapKey (KW), with
    /// Azure's rules on IVs, tags and lengths checked before the HSM is asked.
    pub async fn symmetric(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        (name, version): (&ObjectName, Option<&Version>),
        wrap: bool,
        request: AesRequest<'_>,
    ) -> Result<(VersionRecord, AesOutput)> {
        let (operation, op) = match (wrap, request.encrypt) {
            (false, true) => (Operation::KeyEncrypt, "encrypt"),
            (false, false) => (Operation::KeyDecrypt, "decrypt"),
            (true, true) => (Operation::KeyWrap, "wrapKey"),
            (true, false) => (Operation::KeyUnwrap, "unwrapKey"),
        };
        auth.require_on(vault, operation, name)?;
        let record = self.live_version(vault, KIND, name, version).await?;
        let meta = meta_of(&record)?;
        self.check_usable(&record, &meta, op)?;
        let bad = |m: &str| Err(Error::BadParameter(m.to_owned()));
        if meta.public.kty != KeyType::Oct {
            return bad(
                "The algorithm is not valid for this key type: AES algorithms need an oct-HSM key.",
            );
        }
        let AesRequest {
            encrypt,
            alg,
            data,
            iv,
            tag,
            ..
        } = request;
        if meta.public.bits != Some(alg.bits) {
            return bad("The algorithm's key size does not match the key's.");
        }
        if wrap != (alg.mode == AesMode::Kw) {
            return bad("A*KW algorithms are for wrapKey and unwrapKey; A*GCM, A*CBC and A*CBCPAD for encrypt and decrypt.");
        }
        if data.is_empty() {
            return bad("The value is empty.");
        }
        match alg.mode {
            AesMode::Gcm if encrypt && iv.is_some() => {
                return bad("The service generates the IV for GCM encryption; send none.")
            }
            AesMode::Gcm if !encrypt && (iv.map(<[u8]>::len) != Some(12) || tag.map(<[u8]>::len) != Some(16)) => {
                return bad("GCM decryption needs the 12-byte iv and the 16-byte tag that encryption returned.")
            }
            AesMode::Cbc | AesMode::CbcPad if iv.map(<[u8]>::len) != Some(16) => {
                return bad("CBC needs a 16-byte iv.")
            }
            AesMode::Cbc | AesMode::CbcPad if !encrypt && !data.len().is_multiple_of(16) => {
                return bad("The ciphertext is not a whole number of 16-byte blocks.")
            }
            AesMode::Kw if !data.len().is_multiple_of(8) || data.len() < if encrypt { 16 } else { 24 } => {
                return bad("AES key wrap takes a key of at least 16 bytes in 8-byte steps (RFC 3394).")
            }
            _ => {}
        }
        let out = self.with_private(vault, &record, true, |key| self.keys.aes(key, &request))?;
        Ok((record, out))
    }

    /// Encrypts (`wrap` = false) or wraps (`wrap` = true) with a key version.
    pub async fn encrypt(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
        request: CipherRequest<'_>,
    ) -> Result<(VersionRecord, Vec<u8>)> {
        let CipherRequest {
            wrap,
            alg,
            data: plaintext,
        } = request;
        let (operation, op) = if wrap {
            (Operation::KeyWrap, "wrapKey")
        } else {
            (Operation::KeyEncrypt, "encrypt")
        };
        auth.require_on(vault, operation, name)?;
        let record = self.live_version(vault, KIND, name, version).await?;
        let meta = meta_of(&record)?;
        self.check_usable(&record, &meta, op)?;
        let modulus = match (meta.public.kty, &meta.public.n) {
            (KeyType::Rsa, Some(n)) => n.len(),
            _ => {
                return Err(Error::BadParameter(
                    "The algorithm is not valid for this key type.".into(),
                ))
            }
        };
        if plaintext.len() + alg.overhead() > modulus {
            return Err(Error::BadParameter(format!(
                "The plaintext is too long: at most {} bytes for this key and algorithm.",
                modulus.saturating_sub(alg.overhead())
            )));
        }
        let ct = self.keys.encrypt(&meta.public, alg, plaintext)?;
        Ok((record, ct))
    }

    /// Decrypts (`unwrap` = false) or unwraps (`unwrap` = true) with a key version.
    pub async fn decrypt(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
        request: CipherRequest<'_>,
    ) -> Result<(VersionRecord, Sensitive<Vec<u8>>)> {
        let CipherRequest {
            wrap: unwrap,
            alg,
            data: ciphertext,
        } = request;
        let (operation, op) = if unwrap {
            (Operation::KeyUnwrap, "unwrapKey")
        } else {
            (Operation::KeyDecrypt, "decrypt")
        };
        auth.require_on(vault, operation, name)?;
        let record = self.live_version(vault, KIND, name, version).await?;
        let meta = meta_of(&record)?;
        self.check_usable(&record, &meta, op)?;
        match (meta.public.kty, &meta.public.n) {
            (KeyType::Rsa, Some(n)) if n.len() == ciphertext.len() => {}
            (KeyType::Rsa, Some(_)) => {
                return Err(Error::BadParameter(
                    "The ciphertext length does not match the key size.".into(),
                ))
            }
            _ => {
                return Err(Error::BadParameter(
                    "The algorithm is not valid for this key type.".into(),
                ))
            }
        }
        let pt = self.with_private(vault, &record, meta.hsm, |key| {
            self.keys.decrypt(key, alg, ciphertext)
        })?;
        Ok((record, pt))
    }

    /// Hands a version's sealed private material to `f`, to be opened by the
    /// backend only if it holds no handle for it yet.
    pub(crate) fn with_private<T>(
        &self,
        vault: &VaultRecord,
        record: &VersionRecord,
        hsm: bool,
        f: impl FnOnce(&SealedPrivate<'_>) -> Result<T>,
    ) -> Result<T> {
        let aad = Self::payload_aad(vault, KIND, &record.name, &record.version);
        let id = sealed_id(&aad, &record.payload);
        let open = || self.barrier.open(vault, &aad, &record.payload);
        f(&SealedPrivate {
            id: &id,
            open: &open,
            hsm,
        })
    }

    /// Refuses `-HSM` keys unless the vault is premium (or a managed HSM)
    /// and an HSM is attached.
    pub(crate) fn check_hardware(&self, vault: &VaultRecord) -> Result<()> {
        if !vault.sku.eq_ignore_ascii_case("premium") && !vault.is_managed_hsm() {
            return Err(Error::HardwareNotAllowed);
        }
        if !self.keys.hardware() {
            return Err(no_hsm());
        }
        Ok(())
    }

    /// The opened HSM references of a key's versions (live, or soft-deleted
    /// when `deleted`), to destroy once the store has forgotten them.
    pub(crate) async fn hardware_refs(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        deleted: bool,
    ) -> Result<Vec<Sensitive<Vec<u8>>>> {
        if !self.keys.hardware() {
            return Ok(Vec::new());
        }
        let mut refs = Vec::new();
        for rec in self.versions_of(vault, KIND, name, deleted).await? {
            if meta_of(&rec).is_ok_and(|m| m.hsm) {
                let aad = Self::payload_aad(vault, KIND, &rec.name, &rec.version);
                refs.push(self.barrier.open(vault, &aad, &rec.payload)?);
            }
        }
        Ok(refs)
    }

    /// Destroys HSM objects whose store records are gone. A failure leaves an
    /// orphaned HSM object (logged by the backend), never a lost live key.
    pub(crate) fn destroy_hardware(&self, refs: &[Sensitive<Vec<u8>>]) {
        for r in refs {
            let _ = self.keys.destroy_hardware(r.expose());
        }
    }

    /// After the write that was to record new HSM objects: a write that
    /// failed for certain (rolled back) leaves them unreferenced, so they are
    /// destroyed. `Unavailable` may hide a commit whose answer was lost: the
    /// objects are then kept (an orphan, logged, never a lost live key).
    pub(crate) fn undo_hardware_unless_committed<T>(
        &self,
        outcome: &Result<T>,
        made: &[Sensitive<Vec<u8>>],
    ) {
        match outcome {
            Ok(_) => {}
            Err(Error::Unavailable(_)) if !made.is_empty() => tracing::warn!(
                objects = made.len(),
                "a write of new HSM objects may not have committed; they are kept and may be orphaned in the token"
            ),
            Err(_) => self.destroy_hardware(made),
        }
    }

    /// Updates a key version's attributes, tags and operations.
    pub async fn update_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
        update: KeyUpdate,
    ) -> Result<KeyBundle> {
        auth.require_on(vault, Operation::KeyUpdate, name)?;
        if let Some(tags) = &update.tags {
            validate_tags(tags)?;
        }
        if let Some(ops) = &update.key_ops {
            validate_ops(ops)?;
        }
        let now = self.clock.now();
        let record = self
            .modify_version(vault, KIND, name, version, |record| {
                record.attributes.apply(&update.attributes, now);
                if let (Some(nbf), Some(exp)) = (record.attributes.nbf, record.attributes.exp) {
                    if exp < nbf {
                        return Err(Error::BadParameter(
                            "The expiration time (exp) must be later than nbf.".into(),
                        ));
                    }
                }
                if let Some(tags) = &update.tags {
                    record.tags = tags.clone();
                }
                if let Some(ops) = &update.key_ops {
                    let mut meta = meta_of(record)?;
                    meta.key_ops = ops.clone();
                    record.meta = serde_json::to_string(&meta).map_err(|_| Error::Integrity)?;
                }
                Ok(())
            })
            .await?;
        let meta = meta_of(&record)?;
        Ok(KeyBundle { record, meta })
    }

    /// Rotates a key now: a new version with fresh material of the same type,
    /// size or curve and public exponent, carrying over `key_ops` and tags;
    /// its `exp` follows the rotation policy's `expiryTime`.
    pub async fn rotate_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<KeyBundle> {
        auth.require_on(vault, Operation::KeyRotate, name)?;
        self.refuse_managed(vault, KIND, name, "rotate").await?;
        let current = self.live_version(vault, KIND, name, None).await?;
        self.rotate_unchecked(vault, name, &current).await
    }

    /// A new version with fresh material like `current`'s, with `attributes`.
    pub(crate) async fn rotate_from(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        current: &VersionRecord,
        attributes: &AttributesPatch,
    ) -> Result<KeyBundle> {
        let meta = meta_of(current)?;
        let mut spec = spec_of(&meta.public)?;
        if meta.hsm {
            spec.hsm = true;
            spec.label = hardware_label(vault, name);
        }
        let (private, public) = self.keys.generate(&spec)?;
        self.store_key_version(
            vault,
            name,
            private,
            KeyMeta {
                public,
                key_ops: meta.key_ops,
                hsm: meta.hsm,
            },
            current.tags.clone(),
            attributes,
        )
        .await
    }

    /// Backs up every version of a key (private material included, sealed
    /// under the master key) into an opaque blob.
    pub async fn backup_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Vec<u8>> {
        self.backup_object(auth, vault, KIND, Operation::KeyBackup, name)
            .await
    }

    /// Restores a key backup blob into `vault`; refused if the name exists.
    pub async fn restore_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        blob: &[u8],
    ) -> Result<KeyBundle> {
        let record = self
            .restore_object(auth, vault, KIND, Operation::KeyRestore, blob)
            .await?;
        let meta = meta_of(&record)?;
        Ok(KeyBundle { record, meta })
    }

    /// Imports a caller's key as a new version.
    pub async fn import_key(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        key: PrivateJwk,
        ops: Option<Vec<String>>,
        rest: (Option<BTreeMap<String, String>>, AttributesPatch, bool),
    ) -> Result<KeyBundle> {
        auth.require_on(vault, Operation::KeyImport, name)?;
        self.refuse_managed(vault, KIND, name, "import").await?;
        let (tags, attributes, hsm) = rest;
        check_container(vault, key.kty)?;
        let hsm = hsm || vault.is_managed_hsm() || key.kty == KeyType::Oct;
        if hsm {
            self.check_hardware(vault)?;
        }
        let ops = ops.unwrap_or_else(|| default_ops(key.kty));
        validate_ops(&ops)?;
        let tags = tags.unwrap_or_default();
        validate_tags(&tags)?;
        let (private, public) = if hsm {
            self.keys
                .import_hardware(&key, &hardware_label(vault, name))?
        } else {
            self.keys.import(&key)?
        };
        self.store_key_version(
            vault,
            name,
            private,
            KeyMeta {
                public,
                key_ops: ops,
                hsm,
            },
            tags,
            &attributes,
        )
        .await
    }

    async fn store_key_version(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        private: Sensitive<Vec<u8>>,
        meta: KeyMeta,
        tags: BTreeMap<String, String>,
        attributes: &AttributesPatch,
    ) -> Result<KeyBundle> {
        let version = Version::random();
        let aad = Self::payload_aad(vault, KIND, name, &version);
        // An HSM key's payload names a token object made for this version:
        // it is destroyed again if the version is not stored for certain.
        let made: &[Sensitive<Vec<u8>>] = if meta.hsm {
            std::slice::from_ref(&private)
        } else {
            &[]
        };
        let stored = async {
            let payload = self.barrier.seal(vault, &aad, private.expose())?;
            let record = VersionRecord {
                kind: KIND,
                name: name.clone(),
                version,
                attributes: Attributes::new(self.clock.now(), attributes),
                tags,
                content_type: None,
                managed: false,
                payload,
                meta: serde_json::to_string(&meta).map_err(|_| Error::Integrity)?,
            };
            let rotation = match &self.gate {
                Some(_) => self.next_rotation(vault, name, &record).await?,
                None => None,
            };
            let approved = self
                .gate_check(vault, KIND, name, || {
                    crate::governance::views::key(name, &record.attributes, &meta, rotation)
                })
                .await?;
            let written = self
                .put_new_version(
                    vault,
                    record,
                    crate::events::EventType::KeyNewVersionCreated,
                )
                .await?;
            if let Some(a) = approved {
                a.committed().await;
            }
            Ok(written)
        }
        .await;
        self.undo_hardware_unless_committed(&stored, made);
        Ok(KeyBundle {
            record: stored?,
            meta,
        })
    }

    fn check_usable(&self, record: &VersionRecord, meta: &KeyMeta, op: &'static str) -> Result<()> {
        if !record.attributes.enabled {
            return Err(Error::Disabled {
                kind: KIND,
                operation: op,
            });
        }
        let now = self.clock.now();
        if record.attributes.nbf.is_some_and(|n| now < n)
            || record.attributes.exp.is_some_and(|e| now >= e)
        {
            return Err(Error::NotInValidityPeriod {
                kind: KIND,
                operation: op,
            });
        }
        if !meta.key_ops.iter().any(|o| o == op) {
            return Err(Error::OperationNotPermitted { operation: op });
        }
        Ok(())
    }
}

/// The label an HSM object of this key carries (for operators listing the token).
pub(crate) fn hardware_label(vault: &VaultRecord, name: &ObjectName) -> String {
    format!("{}/{}", vault.name, name.key())
}

fn check_digest(alg: SignAlgorithm, digest: &[u8]) -> Result<()> {
    if digest.len() == alg.digest_len() {
        Ok(())
    } else {
        Err(Error::BadParameter(format!(
            "Invalid digest length {} for the algorithm: {} bytes are required.",
            digest.len(),
            alg.digest_len()
        )))
    }
}
