//! Access tokens: RS256 JWTs with Entra-v2-style claims, minted by Keyhaven's
//! own issuer and validated on every request. Validation trusts nothing in the
//! token before its signature checks out: only `RS256` is accepted (no `none`,
//! no HMAC), the key id must be ours, then issuer, audience, tenant and the
//! time window (with a small skew) are checked.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyhaven_core::{Error, Principal, PrincipalKind, Sensitive};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
use serde::{Deserialize, Serialize};

/// Allowed clock skew when checking `nbf` and `exp`.
pub const CLOCK_SKEW_SECS: i64 = 120;
/// Lifetime of issued access tokens.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;
/// Largest token accepted (bytes); anything longer is malformed.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. Never includes the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// `alg` is not RS256 (includes `none` and HMAC).
    UnsupportedAlgorithm,
    /// Signature invalid or unknown key id.
    BadSignature,
    /// `iss` is not this issuer.
    WrongIssuer,
    /// `aud` is not the resource being called.
    WrongAudience {
        /// The audience the resource expects.
        expected: String,
    },
    /// `tid` is not this tenant.
    WrongTenant,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// Key generation or signing failed.
    Crypto,
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        let msg = match e {
            TokenError::Malformed => {
                "AKV10000: Request is missing a Bearer or PoP token, or the token is malformed."
                    .to_owned()
            }
            TokenError::UnsupportedAlgorithm => {
                "AKV10001: The token's signing algorithm is not supported.".to_owned()
            }
            TokenError::BadSignature => "AKV10001: The token's signature is invalid.".to_owned(),
            TokenError::WrongIssuer => "AKV10032: Invalid issuer.".to_owned(),
            TokenError::WrongAudience { expected } => {
                format!("AKV10022: Invalid audience. Expected {expected}.")
            }
            TokenError::WrongTenant => {
                "AKV10032: The token was issued for another tenant.".to_owned()
            }
            TokenError::Expired => "AKV10013: The token has expired.".to_owned(),
            TokenError::NotYetValid => "AKV10013: The token is not yet valid.".to_owned(),
            TokenError::Crypto => "AKV10001: The token could not be processed.".to_owned(),
        };
        Error::Unauthorized(msg)
    }
}

/// The issuer's RSA signing key.
pub struct SigningKey {
    private: PKey<Private>,
    public: PKey<Public>,
    kid: String,
    n: String,
    e: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new RSA-2048 key.
    pub fn generate() -> Result<Self, TokenError> {
        let rsa = Rsa::generate(2048).map_err(|_| TokenError::Crypto)?;
        Self::from_private(PKey::from_rsa(rsa).map_err(|_| TokenError::Crypto)?)
    }

    /// Loads a key from PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, TokenError> {
        Self::from_private(PKey::private_key_from_pkcs8(der).map_err(|_| TokenError::Crypto)?)
    }

    /// The key as PKCS#8 DER, for sealing into the store.
    pub fn to_pkcs8_der(&self) -> Result<Sensitive<Vec<u8>>, TokenError> {
        self.private
            .private_key_to_pkcs8()
            .map(Sensitive::new)
            .map_err(|_| TokenError::Crypto)
    }

    fn from_private(private: PKey<Private>) -> Result<Self, TokenError> {
        let rsa = private.rsa().map_err(|_| TokenError::Crypto)?;
        let n = rsa.n().to_vec();
        let e = rsa.e().to_vec();
        let public_der = private
            .public_key_to_der()
            .map_err(|_| TokenError::Crypto)?;
        let public = PKey::public_key_from_der(&public_der).map_err(|_| TokenError::Crypto)?;
        let digest = openssl::hash::hash(MessageDigest::sha256(), &public_der)
            .map_err(|_| TokenError::Crypto)?;
        let kid = URL_SAFE_NO_PAD.encode(digest.get(..20).unwrap_or(&digest));
        Ok(Self {
            private,
            public,
            kid,
            n: URL_SAFE_NO_PAD.encode(n),
            e: URL_SAFE_NO_PAD.encode(e),
        })
    }

    /// Key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Modulus and exponent, base64url, for the JWKS.
    pub fn public_components(&self) -> (&str, &str) {
        (&self.n, &self.e)
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// The `typ` claim of each kind of token Keyhaven issues, checked on every
/// validation so one kind can never pass as another.
const ACCESS_TYP: &str = "access";
const ID_TYP: &str = "id";

#[derive(Serialize, Deserialize)]
struct Claims {
    /// Always [`ACCESS_TYP`].
    #[serde(default)]
    typ: String,
    aud: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    azp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    azpacr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idtyp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xms_mirid: Option<String>,
    /// How the user authenticated (`pwd`, `mfa`), as Entra's v1 tokens say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    amr: Vec<String>,
    oid: String,
    sub: String,
    tid: String,
    uti: String,
    ver: String,
}

/// Most validated tokens remembered; past this the memory is cleared.
const CACHE_CAPACITY: usize = 10_000;

/// What a verified token established, remembered so that its RSA signature is
/// checked once, not on every request. Time and audience are re-checked on
/// every use.
#[derive(Debug, Clone)]
struct Verified {
    principal: Principal,
    aud: String,
    nbf: i64,
    exp: i64,
    /// `amr` has `mfa`.
    mfa: bool,
}

/// User claims added to tokens.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra<'a> {
    /// `upn` (users).
    pub upn: Option<&'a str>,
    /// `name`.
    pub name: Option<&'a str>,
    /// `groups`: transitive group object ids.
    pub groups: &'a [String],
    /// `azpacr`: how the client authenticated: `0` public, `1` secret, `2` certificate.
    pub azpacr: Option<&'a str>,
    /// `xms_mirid`: the ARM id of a managed identity.
    pub mirid: Option<&'a str>,
    /// `amr`: how the user authenticated (`pwd`, and `mfa` after a second
    /// factor).
    pub amr: &'a [String],
}

/// Lifetime of refresh tokens.
pub const REFRESH_LIFETIME_SECS: i64 = 90 * 86_400;
const REFRESH_TYP: &str = "refresh";
const REFRESH_AUDIENCE: &str = "urn:keyhaven:token-endpoint";

#[derive(Serialize, Deserialize)]
struct IdClaims {
    /// Always [`ID_TYP`].
    typ: String,
    aud: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    oid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preferred_username: Option<String>,
    sub: String,
    tid: String,
    ver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RefreshClaims {
    typ: String,
    aud: String,
    iss: String,
    iat: i64,
    exp: i64,
    oid: String,
    tid: String,
    azp: String,
    stamp: String,
    jti: String,
    /// The rotation family ([`crate::refresh`]).
    fid: String,
    /// How the session's user authenticated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    amr: Vec<String>,
    /// When the session's user last gave credentials (0: before this was
    /// recorded, taken as the token's `iat`).
    #[serde(default)]
    auth_time: i64,
}

/// What a sign-in session carries from one refresh to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// `amr` values (`pwd`, `mfa`).
    pub amr: Vec<String>,
    /// When the user last gave credentials (Unix s).
    pub auth_time: i64,
}

impl Session {
    /// Whether a second factor was given.
    pub fn mfa(&self) -> bool {
        self.amr.iter().any(|a| a == "mfa")
    }
}

/// What a valid refresh token says.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    /// The user's object id.
    pub object_id: String,
    /// The credential stamp it was issued under.
    pub stamp: String,
    /// Its family and id, for rotation.
    pub id: crate::refresh::RefreshId,
    /// The sign-in session it continues.
    pub session: Session,
}

/// The signing keys in use: the newest signs, all verify.
#[derive(Debug)]
struct KeySet {
    keys: Vec<Arc<SigningKey>>,
}

impl KeySet {
    fn current(&self) -> Option<&Arc<SigningKey>> {
        self.keys.last()
    }

    fn by_kid(&self, kid: Option<&str>) -> Option<&Arc<SigningKey>> {
        // A token without `kid` names no key: refused, not tried against
        // the newest.
        kid.and_then(|kid| self.keys.iter().find(|k| k.kid == kid))
    }
}

/// Issues and validates tokens for one tenant.
#[derive(Debug)]
pub struct TokenService {
    keys: RwLock<Arc<KeySet>>,
    authority: String,
    tenant_id: String,
    verified: RwLock<HashMap<String, Verified>>,
}

impl TokenService {
    /// A token service for `tenant_id` whose authority host is `authority`
    /// (e.g. `https://login.localhost:8443`).
    pub fn new(key: SigningKey, authority: &str, tenant_id: &str) -> Self {
        Self::with_keys(vec![key], authority, tenant_id)
    }

    /// A token service with several keys, oldest first; the last one signs.
    pub fn with_keys(keys: Vec<SigningKey>, authority: &str, tenant_id: &str) -> Self {
        Self {
            keys: RwLock::new(Arc::new(KeySet {
                keys: keys.into_iter().map(Arc::new).collect(),
            })),
            authority: authority.trim_end_matches('/').to_owned(),
            tenant_id: tenant_id.to_owned(),
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the key set (after a rotation here or on another node).
    /// Remembered validations are forgotten, so a dropped key stops working.
    pub fn replace_keys(&self, keys: Vec<SigningKey>) {
        if keys.is_empty() {
            return;
        }
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(KeySet {
                keys: keys.into_iter().map(Arc::new).collect(),
            });
        }
        if let Ok(mut v) = self.verified.write() {
            v.clear();
        }
    }

    /// Key ids in use, oldest first.
    pub fn kids(&self) -> Vec<String> {
        self.key_set().keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// All verification keys, oldest first (published in the JWKS).
    pub fn keys(&self) -> Vec<Arc<SigningKey>> {
        self.key_set().keys.clone()
    }

    fn key_set(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map(|k| Arc::clone(&k))
            .unwrap_or_else(|e| Arc::clone(&e.into_inner()))
    }

    /// The `iss` of issued tokens: `{authority}/{tenant}/v2.0`.
    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.authority, self.tenant_id)
    }

    /// The tenant.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The authority host URL.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The key that signs new tokens.
    pub fn current_key(&self) -> Option<Arc<SigningKey>> {
        self.key_set().current().cloned()
    }

    /// Mints an access token for `principal` and `audience`, valid from `now`.
    pub fn mint(
        &self,
        principal: &Principal,
        audience: &str,
        now: i64,
    ) -> Result<String, TokenError> {
        self.mint_with(principal, &Extra::default(), audience, now)
    }

    /// Mints an access token with user claims (`upn`, `name`, `groups`).
    pub fn mint_with(
        &self,
        principal: &Principal,
        extra: &Extra<'_>,
        audience: &str,
        now: i64,
    ) -> Result<String, TokenError> {
        let app = principal.app_id.clone();
        let user = principal.kind == PrincipalKind::User;
        let claims = Claims {
            typ: ACCESS_TYP.to_owned(),
            aud: audience.to_owned(),
            iss: self.issuer(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME_SECS,
            azp: app.clone(),
            azpacr: app.as_ref().map(|_| {
                extra
                    .azpacr
                    .unwrap_or(if user { "0" } else { "1" })
                    .to_owned()
            }),
            appid: app,
            idtyp: Some(if user { "user" } else { "app" }.to_owned()),
            upn: extra.upn.map(str::to_owned),
            name: extra.name.map(str::to_owned),
            groups: extra.groups.to_vec(),
            scp: user.then(|| "user_impersonation".to_owned()),
            xms_mirid: extra.mirid.map(str::to_owned),
            amr: extra.amr.to_vec(),
            oid: principal.object_id.clone(),
            sub: principal.object_id.clone(),
            tid: principal.tenant_id.clone(),
            uti: uuid::Uuid::new_v4().simple().to_string(),
            ver: "2.0".to_owned(),
        };
        self.sign(&claims)
    }

    /// An OpenID Connect id token for a user signed in through `client_id`.
    pub fn mint_id_token(
        &self,
        principal: &Principal,
        extra: &Extra<'_>,
        client_id: &str,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<String, TokenError> {
        self.sign(&IdClaims {
            typ: ID_TYP.to_owned(),
            aud: client_id.to_owned(),
            iss: self.issuer(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME_SECS,
            name: extra.name.map(str::to_owned),
            oid: principal.object_id.clone(),
            preferred_username: extra.upn.map(str::to_owned),
            sub: principal.object_id.clone(),
            tid: principal.tenant_id.clone(),
            ver: "2.0".to_owned(),
            nonce: nonce.map(str::to_owned),
        })
    }

    /// A refresh token: signed, bound to the principal and the client, usable
    /// only at the token endpoint (its audience is no resource).
    pub fn mint_refresh(
        &self,
        principal: &Principal,
        client_id: &str,
        credential_stamp: &str,
        id: &crate::refresh::RefreshId,
        session: &Session,
        now: i64,
    ) -> Result<String, TokenError> {
        self.sign(&RefreshClaims {
            typ: REFRESH_TYP.to_owned(),
            aud: REFRESH_AUDIENCE.to_owned(),
            iss: self.issuer(),
            iat: now,
            exp: now + REFRESH_LIFETIME_SECS,
            oid: principal.object_id.clone(),
            tid: principal.tenant_id.clone(),
            azp: client_id.to_owned(),
            stamp: credential_stamp.to_owned(),
            jti: id.jti.clone(),
            fid: id.family.clone(),
            amr: session.amr.clone(),
            auth_time: session.auth_time,
        })
    }

    /// Validates a refresh token presented by `client_id`; returns the object
    /// id it was issued to. The principal must then still be allowed in.
    pub fn validate_refresh(
        &self,
        token: &str,
        client_id: &str,
        now: i64,
    ) -> Result<RefreshGrant, TokenError> {
        let claims: RefreshClaims = self.verified_claims(token)?;
        if claims.typ != REFRESH_TYP || claims.aud != REFRESH_AUDIENCE {
            return Err(TokenError::WrongAudience {
                expected: REFRESH_AUDIENCE.to_owned(),
            });
        }
        if claims.iss != self.issuer() {
            return Err(TokenError::WrongIssuer);
        }
        if claims.tid != self.tenant_id || claims.azp != client_id {
            return Err(TokenError::WrongTenant);
        }
        if now > claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(RefreshGrant {
            object_id: claims.oid,
            stamp: claims.stamp,
            id: crate::refresh::RefreshId {
                family: claims.fid,
                jti: claims.jti,
            },
            session: Session {
                amr: claims.amr,
                auth_time: if claims.auth_time > 0 {
                    claims.auth_time
                } else {
                    claims.iat
                },
            },
        })
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let set = self.key_set();
        let key = set.current().ok_or(TokenError::Crypto)?;
        let header = Header {
            alg: "RS256".into(),
            typ: Some("JWT".into()),
            kid: Some(key.kid.clone()),
        };
        let h =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|_| TokenError::Crypto)?);
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| TokenError::Crypto)?);
        let signing_input = format!("{h}.{p}");
        let mut signer =
            Signer::new(MessageDigest::sha256(), &key.private).map_err(|_| TokenError::Crypto)?;
        signer
            .update(signing_input.as_bytes())
            .map_err(|_| TokenError::Crypto)?;
        let sig = signer.sign_to_vec().map_err(|_| TokenError::Crypto)?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// Validates `token` for `audience` at `now` and returns the caller.
    pub fn validate(&self, token: &str, audience: &str, now: i64) -> Result<Principal, TokenError> {
        let known = self
            .verified
            .read()
            .ok()
            .and_then(|m| m.get(token).cloned());
        let v = match known {
            Some(v) => v,
            None => {
                let v = self.verify(token)?;
                if let Ok(mut m) = self.verified.write() {
                    if m.len() >= CACHE_CAPACITY {
                        m.clear();
                    }
                    m.insert(token.to_owned(), v.clone());
                }
                v
            }
        };
        if v.aud != audience {
            return Err(TokenError::WrongAudience {
                expected: audience.to_owned(),
            });
        }
        if now > v.exp + CLOCK_SKEW_SECS {
            return Err(TokenError::Expired);
        }
        if now + CLOCK_SKEW_SECS < v.nbf {
            return Err(TokenError::NotYetValid);
        }
        Ok(v.principal)
    }

    /// Whether a token (already validated by the caller) says its user gave
    /// a second factor (`amr` has `mfa`). A token that does not verify says
    /// nothing.
    pub fn has_mfa(&self, token: &str) -> bool {
        // The validation just made remembered it: no second signature check.
        if let Some(v) = self
            .verified
            .read()
            .ok()
            .and_then(|m| m.get(token).cloned())
        {
            return v.mfa;
        }
        self.verify(token).is_ok_and(|v| v.mfa)
    }

    /// Checks everything about a token that does not depend on time or audience.
    fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let claims: Claims = self.verified_claims(token)?;
        if claims.typ != ACCESS_TYP {
            return Err(TokenError::Malformed);
        }
        if claims.iss != self.issuer() {
            return Err(TokenError::WrongIssuer);
        }
        if claims.tid != self.tenant_id {
            return Err(TokenError::WrongTenant);
        }
        let kind = match claims.idtyp.as_deref() {
            Some("user") => PrincipalKind::User,
            _ => PrincipalKind::ServicePrincipal,
        };
        Ok(Verified {
            principal: Principal {
                object_id: claims.oid,
                tenant_id: claims.tid,
                app_id: claims.appid.or(claims.azp),
                kind,
            },
            aud: claims.aud,
            nbf: claims.nbf,
            exp: claims.exp,
            mfa: claims.amr.iter().any(|a| a == "mfa"),
        })
    }

    /// Checks shape, algorithm, key id and signature, then decodes the claims.
    fn verified_claims<T: for<'de> Deserialize<'de>>(&self, token: &str) -> Result<T, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(h)?;
        if header.alg != "RS256" {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let set = self.key_set();
        let key = set
            .by_kid(header.kid.as_deref())
            .ok_or(TokenError::BadSignature)?;
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let mut verifier =
            Verifier::new(MessageDigest::sha256(), &key.public).map_err(|_| TokenError::Crypto)?;
        verifier
            .update(h.as_bytes())
            .map_err(|_| TokenError::Crypto)?;
        verifier.update(b".").map_err(|_| TokenError::Crypto)?;
        verifier
            .update(p.as_bytes())
            .map_err(|_| TokenError::Crypto)?;
        if !verifier.verify(&sig).unwrap_or(false) {
            return Err(TokenError::BadSignature);
        }
        decode_json(p)
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Test helpers: build forged or altered tokens to prove they are refused.
pub mod forge {
    use super::*;

    /// A token with arbitrary header and claims JSON and a given signature part.
    pub fn raw(header: &serde_json::Value, claims: &serde_json::Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    /// Decodes a token's claims without any checks (for building variants).
    pub fn claims_of(token: &str) -> Option<serde_json::Value> {
        let p = token.split('.').nth(1)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
    }

    /// An HS256 token over `claims` keyed with `secret`.
    pub fn hs256(claims: &serde_json::Value, secret: &[u8]) -> Option<String> {
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = PKey::hmac(secret).ok()?;
        let mut signer = Signer::new(MessageDigest::sha256(), &key).ok()?;
        signer.update(input.as_bytes()).ok()?;
        Some(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signer.sign_to_vec().ok()?)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AUD: &str = "https://vault.localhost:8443";

    fn svc() -> TokenService {
        TokenService::new(
            SigningKey::generate().unwrap(),
            "https://login.localhost:8443",
            "tenant-1",
        )
    }

    fn app() -> Principal {
        Principal {
            object_id: "oid-1".into(),
            tenant_id: "tenant-1".into(),
            app_id: Some("app-1".into()),
            kind: PrincipalKind::ServicePrincipal,
        }
    }

    #[test]
    fn minted_token_validates_for_its_audience() {
        let s = svc();
        let t = s.mint(&app(), AUD, 1000).unwrap();
        assert_eq!(s.validate(&t, AUD, 1000).unwrap(), app());
        let c = forge::claims_of(&t).unwrap();
        assert_eq!(c["iss"], "https://login.localhost:8443/tenant-1/v2.0");
        assert_eq!(c["ver"], "2.0");
    }

    /// Finding 12: one kind of token must never pass as another, and a token
    /// without `kid` is refused rather than checked against the newest key.
    #[test]
    fn token_kinds_do_not_cross_and_kid_is_required() {
        let s = svc();
        let id = s
            .mint_id_token(&app(), &Extra::default(), AUD, None, 1000)
            .unwrap();
        assert!(
            s.validate(&id, AUD, 1000).is_err(),
            "an id token is no access token"
        );
        let rt = s
            .mint_refresh(
                &app(),
                AUD,
                "",
                &crate::refresh::RefreshId::new_family(),
                &Session {
                    amr: vec!["pwd".into(), "mfa".into()],
                    auth_time: 900,
                },
                1000,
            )
            .unwrap();
        let g = s.validate_refresh(&rt, AUD, 1000).unwrap();
        assert!(g.session.mfa());
        assert_eq!(g.session.auth_time, 900);
        assert!(s.validate(&rt, REFRESH_AUDIENCE, 1000).is_err());
        let at = s.mint(&app(), AUD, 1000).unwrap();
        assert!(s.validate_refresh(&at, AUD, 1000).is_err());
        assert!(s.validate_refresh(&id, AUD, 1000).is_err());
        assert_eq!(forge::claims_of(&at).unwrap()["typ"], "access");

        // The same claims, signed by the right key, with no kid.
        let claims = forge::claims_of(&at).unwrap();
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let key = s.current_key().unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &key.private).unwrap();
        signer.update(format!("{h}.{p}").as_bytes()).unwrap();
        let sig = URL_SAFE_NO_PAD.encode(signer.sign_to_vec().unwrap());
        let no_kid = format!("{h}.{p}.{sig}");
        assert_eq!(
            s.validate(&no_kid, AUD, 1000).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn every_kind_of_bad_token_is_refused() {
        let s = svc();
        let t = s.mint(&app(), AUD, 1000).unwrap();
        assert_eq!(
            s.validate(&t, "https://management.localhost:8443", 1000)
                .unwrap_err(),
            TokenError::WrongAudience {
                expected: "https://management.localhost:8443".into()
            }
        );
        assert_eq!(
            s.validate(&t, AUD, 1000 + TOKEN_LIFETIME_SECS + CLOCK_SKEW_SECS + 1)
                .unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(
            s.validate(&t, AUD, 1000 - CLOCK_SKEW_SECS - 1).unwrap_err(),
            TokenError::NotYetValid
        );
        assert!(s
            .validate(&t, AUD, 1000 + TOKEN_LIFETIME_SECS + CLOCK_SKEW_SECS - 1)
            .is_ok());

        let mut claims = forge::claims_of(&t).unwrap();
        claims["oid"] = json!("someone-else");
        let sig = t.rsplit('.').next().unwrap();
        let tampered = forge::raw(&json!({"alg":"RS256","kid": s.kids()[0]}), &claims, sig);
        assert_eq!(
            s.validate(&tampered, AUD, 1000).unwrap_err(),
            TokenError::BadSignature
        );

        let none = forge::raw(&json!({"alg":"none"}), &forge::claims_of(&t).unwrap(), "");
        assert_eq!(
            s.validate(&none, AUD, 1000).unwrap_err(),
            TokenError::UnsupportedAlgorithm
        );

        let hs = forge::hs256(&forge::claims_of(&t).unwrap(), b"secret").unwrap();
        assert_eq!(
            s.validate(&hs, AUD, 1000).unwrap_err(),
            TokenError::UnsupportedAlgorithm
        );

        let other = TokenService::new(
            SigningKey::generate().unwrap(),
            "https://login.localhost:8443",
            "tenant-1",
        );
        let foreign = other.mint(&app(), AUD, 1000).unwrap();
        assert_eq!(
            s.validate(&foreign, AUD, 1000).unwrap_err(),
            TokenError::BadSignature
        );

        let wrong_iss = TokenService::new(
            SigningKey::from_pkcs8_der(s.current_key().unwrap().to_pkcs8_der().unwrap().expose())
                .unwrap(),
            "https://evil.example",
            "tenant-1",
        );
        let t2 = wrong_iss.mint(&app(), AUD, 1000).unwrap();
        assert_eq!(
            s.validate(&t2, AUD, 1000).unwrap_err(),
            TokenError::WrongIssuer
        );

        for garbage in ["", "a.b", "a.b.c.d", "!!!.###.$$$"] {
            assert!(s.validate(garbage, AUD, 1000).is_err());
        }
    }

    #[test]
    fn a_remembered_token_is_still_checked_for_time_and_audience() {
        let s = svc();
        let t = s.mint(&app(), AUD, 1000).unwrap();
        assert!(s.validate(&t, AUD, 1000).is_ok());
        assert!(s.validate(&t, AUD, 1001).is_ok());
        assert!(matches!(
            s.validate(&t, "https://other", 1001),
            Err(TokenError::WrongAudience { .. })
        ));
        assert_eq!(
            s.validate(&t, AUD, 1000 + TOKEN_LIFETIME_SECS + CLOCK_SKEW_SECS + 1)
                .unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(s.validate(&t, AUD, 0).unwrap_err(), TokenError::NotYetValid);
    }

    #[test]
    fn after_rotation_old_tokens_verify_until_their_key_is_dropped() {
        let first = SigningKey::generate().unwrap();
        let first_der = first.to_pkcs8_der().unwrap().expose().clone();
        let s = TokenService::new(first, "https://login.localhost:8443", "tenant-1");
        let old = s.mint(&app(), AUD, 1000).unwrap();
        let second = SigningKey::generate().unwrap();
        let second_kid = second.kid().to_owned();
        s.replace_keys(vec![
            SigningKey::from_pkcs8_der(&first_der).unwrap(),
            second,
        ]);
        let new = s.mint(&app(), AUD, 1000).unwrap();
        assert!(s.validate(&old, AUD, 1000).is_ok());
        assert!(s.validate(&new, AUD, 1000).is_ok());
        assert_eq!(s.current_key().unwrap().kid(), second_kid);
        assert_eq!(s.kids().len(), 2);
        // Dropping the first key invalidates tokens it signed, even remembered ones.
        let newest = s
            .keys()
            .last()
            .unwrap()
            .to_pkcs8_der()
            .unwrap()
            .expose()
            .clone();
        s.replace_keys(vec![SigningKey::from_pkcs8_der(&newest).unwrap()]);
        assert_eq!(
            s.validate(&old, AUD, 1000).unwrap_err(),
            TokenError::BadSignature
        );
        assert!(s.validate(&new, AUD, 1000).is_ok());
    }

    #[test]
    fn signing_key_round_trips_through_pkcs8() {
        let k = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8_der(k.to_pkcs8_der().unwrap().expose()).unwrap();
        assert_eq!(k.kid(), again.kid());
        assert!(!format!("{k:?}").contains(k.public_components().0));
    }
}
