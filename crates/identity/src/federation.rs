//! Workload identity federation: tokens from external OIDC issuers (a
//! Kubernetes cluster, a CI system) exchanged for Keyhaven tokens. An issuer
//! is trusted only if the deployment's configuration lists it with its JWKS;
//! an application accepts it only through a federated identity credential
//! whose issuer, subject and audience all match.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use openssl::sign::Verifier;
use serde::Deserialize;

use crate::credentials::FederatedCredential;
use crate::token::CLOCK_SKEW_SECS;

/// Longest external assertion accepted (bytes).
const MAX_ASSERTION_LEN: usize = 16 * 1024;

/// Why a federated assertion was refused (each maps to an AADSTS code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FederationFailure {
    /// The issuer is not trusted by the deployment or the application (700211).
    Issuer,
    /// No federated credential has this subject (700213).
    Subject,
    /// The audience matches no federated credential's audiences (700212).
    Audience,
    /// Outside its validity window (700024).
    Lifetime,
    /// Bad signature, unknown key, or malformed (700027).
    Signature,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    issuers: Vec<IssuerConfig>,
}

#[derive(Deserialize)]
struct IssuerConfig {
    issuer: String,
    #[serde(default)]
    jwks: Option<Jwks>,
    #[serde(default)]
    jwks_file: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

struct TrustedKey {
    kid: Option<String>,
    alg: Alg,
    key: PKey<Public>,
}

struct TrustedIssuer {
    issuer: String,
    keys: Vec<TrustedKey>,
}

/// The external issuers this deployment trusts.
#[derive(Default)]
pub struct TrustedIssuers {
    issuers: Vec<TrustedIssuer>,
}

impl std::fmt::Debug for TrustedIssuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.issuers.iter().map(|i| &i.issuer))
            .finish()
    }
}

impl TrustedIssuers {
    /// Parses the federation configuration (`{"issuers":[{"issuer", "jwks"|"jwks_file"}]}`).
    pub fn from_config(json: &[u8]) -> Result<Self, String> {
        let cfg: ConfigFile =
            serde_json::from_slice(json).map_err(|e| format!("federation config: {e}"))?;
        let mut issuers = Vec::new();
        for i in cfg.issuers {
            let jwks = match (i.jwks, i.jwks_file) {
                (Some(j), _) => j,
                (None, Some(path)) => {
                    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
                    serde_json::from_slice(&bytes).map_err(|e| format!("{path}: {e}"))?
                }
                (None, None) => return Err(format!("issuer {}: give jwks or jwks_file", i.issuer)),
            };
            let mut keys = Vec::new();
            for k in jwks.keys {
                keys.push(
                    parse_jwk(&k).ok_or_else(|| {
                        format!("issuer {}: unsupported or malformed key", i.issuer)
                    })?,
                );
            }
            issuers.push(TrustedIssuer {
                issuer: i.issuer.trim_end_matches('/').to_owned(),
                keys,
            });
        }
        Ok(Self { issuers })
    }

    /// Number of trusted issuers.
    pub fn len(&self) -> usize {
        self.issuers.len()
    }

    /// True if none are trusted.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies an external assertion against the application's federated
    /// credentials.
    pub fn verify(
        &self,
        assertion: &str,
        fics: &[FederatedCredential],
        now: i64,
    ) -> Result<(), FederationFailure> {
        use FederationFailure as F;
        if assertion.len() > MAX_ASSERTION_LEN {
            return Err(F::Signature);
        }
        let mut parts = assertion.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(F::Signature);
        };
        let header: Header = decode(h).ok_or(F::Signature)?;
        let claims: Claims = decode(p).ok_or(F::Signature)?;
        let iss = claims.iss.trim_end_matches('/');
        let trusted = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or(F::Issuer)?;
        let for_issuer: Vec<&FederatedCredential> = fics
            .iter()
            .filter(|f| f.issuer.trim_end_matches('/') == iss)
            .collect();
        if for_issuer.is_empty() {
            return Err(F::Issuer);
        }
        let alg = match header.alg.as_str() {
            "RS256" => Alg::Rs256,
            "ES256" => Alg::Es256,
            _ => return Err(F::Signature),
        };
        let key = trusted
            .keys
            .iter()
            .find(|k| k.alg == alg && (header.kid.is_none() || k.kid == header.kid))
            .ok_or(F::Signature)?;
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| F::Signature)?;
        let sig = match alg {
            Alg::Rs256 => sig,
            Alg::Es256 => raw_to_der(&sig).ok_or(F::Signature)?,
        };
        let mut v = Verifier::new(MessageDigest::sha256(), &key.key).map_err(|_| F::Signature)?;
        v.update(format!("{h}.{p}").as_bytes())
            .map_err(|_| F::Signature)?;
        if !v.verify(&sig).unwrap_or(false) {
            return Err(F::Signature);
        }
        let exp = claims.exp.map(|e| e as i64).ok_or(F::Lifetime)?;
        if now > exp + CLOCK_SKEW_SECS
            || claims.nbf.is_some_and(|n| now + CLOCK_SKEW_SECS < n as i64)
        {
            return Err(F::Lifetime);
        }
        let by_subject: Vec<&&FederatedCredential> = for_issuer
            .iter()
            .filter(|f| f.subject == claims.sub)
            .collect();
        if by_subject.is_empty() {
            return Err(F::Subject);
        }
        let auds: Vec<&str> = match &claims.aud {
            serde_json::Value::String(a) => vec![a.as_str()],
            serde_json::Value::Array(v) => v.iter().filter_map(|a| a.as_str()).collect(),
            _ => Vec::new(),
        };
        if by_subject
            .iter()
            .any(|f| f.audiences.iter().any(|a| auds.contains(&a.as_str())))
        {
            Ok(())
        } else {
            Err(F::Audience)
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    aud: serde_json::Value,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

/// Peeks at an assertion's `iss` without verifying anything (to route it).
pub fn unverified_issuer(assertion: &str) -> Option<String> {
    let p = assertion.split('.').nth(1)?;
    decode::<Claims>(p).map(|c| c.iss)
}

fn decode<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?).ok()
}

fn b64(s: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.as_deref()?.trim_end_matches('='))
        .ok()
}

fn parse_jwk(k: &Jwk) -> Option<TrustedKey> {
    match k.kty.as_str() {
        "RSA" => {
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(&b64(&k.n)?).ok()?,
                BigNum::from_slice(&b64(&k.e)?).ok()?,
            )
            .ok()?;
            Some(TrustedKey {
                kid: k.kid.clone(),
                alg: Alg::Rs256,
                key: PKey::from_rsa(rsa).ok()?,
            })
        }
        "EC" if k.crv.as_deref() == Some("P-256") => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).ok()?;
            let x = BigNum::from_slice(&b64(&k.x)?).ok()?;
            let y = BigNum::from_slice(&b64(&k.y)?).ok()?;
            let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y).ok()?;
            Some(TrustedKey {
                kid: k.kid.clone(),
                alg: Alg::Es256,
                key: PKey::from_ec_key(ec).ok()?,
            })
        }
        _ => None,
    }
}

/// JOSE ES256 signatures are raw `r || s`; OpenSSL wants DER.
fn raw_to_der(sig: &[u8]) -> Option<Vec<u8>> {
    if sig.len() != 64 {
        return None;
    }
    let (r, s) = sig.split_at(32);
    EcdsaSig::from_private_components(BigNum::from_slice(r).ok()?, BigNum::from_slice(s).ok()?)
        .ok()?
        .to_der()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::Private;
    use openssl::sign::Signer;
    use serde_json::json;

    fn issuer_with_rsa() -> (PKey<Private>, TrustedIssuers) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let rsa = key.rsa().unwrap();
        let cfg = json!({"issuers": [{"issuer": "https://ci.example.test", "jwks": {"keys": [{
            "kty": "RSA", "kid": "k1",
            "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()), "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec())
        }]}}]});
        (
            key,
            TrustedIssuers::from_config(cfg.to_string().as_bytes()).unwrap(),
        )
    }

    fn sign(key: &PKey<Private>, claims: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "k1"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
        s.update(input.as_bytes()).unwrap();
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(s.sign_to_vec().unwrap())
        )
    }

    fn fic() -> FederatedCredential {
        FederatedCredential {
            id: "1".into(),
            name: "ci".into(),
            issuer: "https://ci.example.test".into(),
            subject: "repo:main".into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
            description: None,
        }
    }

    #[test]
    fn federated_assertions_must_match_issuer_subject_audience_and_time() {
        let (key, trusted) = issuer_with_rsa();
        let good = json!({"iss": "https://ci.example.test", "sub": "repo:main", "aud": "api://AzureADTokenExchange", "exp": 2000, "nbf": 1000});
        let fics = [fic()];
        assert_eq!(
            trusted.verify(&sign(&key, good.clone()), &fics, 1500),
            Ok(())
        );
        let mut c = good.clone();
        c["sub"] = json!("repo:other");
        assert_eq!(
            trusted.verify(&sign(&key, c), &fics, 1500),
            Err(FederationFailure::Subject)
        );
        let mut c = good.clone();
        c["aud"] = json!("other");
        assert_eq!(
            trusted.verify(&sign(&key, c), &fics, 1500),
            Err(FederationFailure::Audience)
        );
        let mut c = good.clone();
        c["iss"] = json!("https://evil.example.test");
        assert_eq!(
            trusted.verify(&sign(&key, c), &fics, 1500),
            Err(FederationFailure::Issuer)
        );
        assert_eq!(
            trusted.verify(&sign(&key, good.clone()), &fics, 9000),
            Err(FederationFailure::Lifetime)
        );
        assert_eq!(
            trusted.verify(&sign(&key, good.clone()), &[], 1500),
            Err(FederationFailure::Issuer)
        );
        let other = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        assert_eq!(
            trusted.verify(&sign(&other, good), &fics, 1500),
            Err(FederationFailure::Signature)
        );
    }
}
