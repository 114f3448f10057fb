//! Client assertions (RFC 7523): a JWT the client signs with the private key
//! of a certificate registered on its application. msal signs with PS256 and
//! names the certificate by `x5t#S256`; older clients use RS256 with `x5t`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use openssl::x509::X509;
use serde::Deserialize;

use crate::credentials::KeyCredential;
use crate::directory::{DirectoryError, SignInFailure};
use crate::token::CLOCK_SKEW_SECS;

/// Longest assertion accepted (bytes).
const MAX_ASSERTION_LEN: usize = 16 * 1024;
/// Longest lifetime an assertion may claim.
const MAX_ASSERTION_LIFETIME_SECS: i64 = 24 * 3600;

/// Builds a stored key credential from a DER certificate.
pub fn key_credential(
    der: &[u8],
    display_name: Option<String>,
) -> Result<KeyCredential, DirectoryError> {
    let bad = || {
        DirectoryError::BadRequest(
            "Invalid value specified for property 'key' of resource 'KeyCredential'.".into(),
        )
    };
    let cert = X509::from_der(der).map_err(|_| bad())?;
    cert.public_key().map_err(|_| bad())?;
    let sha1 = cert.digest(MessageDigest::sha1()).map_err(|_| bad())?;
    let sha256 = cert.digest(MessageDigest::sha256()).map_err(|_| bad())?;
    Ok(KeyCredential {
        key_id: uuid::Uuid::new_v4().to_string(),
        display_name,
        kind: "AsymmetricX509Cert".into(),
        usage: "Verify".into(),
        key: STANDARD.encode(der),
        x5t: URL_SAFE_NO_PAD.encode(sha1),
        x5t_s256: URL_SAFE_NO_PAD.encode(sha256),
        start: asn1_unix(cert.not_before()).ok_or_else(bad)?,
        end: asn1_unix(cert.not_after()).ok_or_else(bad)?,
    })
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    x5t: Option<String>,
    #[serde(rename = "x5t#S256", default)]
    x5t_s256: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    aud: serde_json::Value,
    iss: String,
    sub: String,
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    jti: Option<String>,
}

/// What a verified assertion carries for replay detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionId {
    /// Its `jti`.
    pub jti: String,
    /// Its expiry, Unix seconds.
    pub exp: i64,
}

/// Verifies a client assertion for `client_id`: signature by one of `keys`,
/// `iss` = `sub` = client id, `aud` one of `audiences` (token endpoint URLs),
/// the time window, and a `jti` (returned, for the caller's replay check).
pub fn verify_client_assertion(
    assertion: &str,
    client_id: &str,
    keys: &[KeyCredential],
    audiences: &[String],
    now: i64,
) -> Result<AssertionId, SignInFailure> {
    let invalid = SignInFailure::InvalidAssertion;
    if assertion.len() > MAX_ASSERTION_LEN {
        return Err(invalid);
    }
    let mut parts = assertion.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid);
    };
    let header: Header = decode(h).ok_or(invalid)?;
    // msal pads `x5t`; compare without padding.
    let s256 = header.x5t_s256.as_deref().map(|t| t.trim_end_matches('='));
    let sha1 = header.x5t.as_deref().map(|t| t.trim_end_matches('='));
    let key = keys
        .iter()
        .find(|k| s256 == Some(k.x5t_s256.as_str()) || sha1 == Some(k.x5t.as_str()))
        .ok_or(SignInFailure::UnknownCertificate)?;
    if now < key.start - CLOCK_SKEW_SECS || now > key.end + CLOCK_SKEW_SECS {
        return Err(SignInFailure::UnknownCertificate);
    }
    let der = STANDARD.decode(&key.key).map_err(|_| invalid)?;
    let public = X509::from_der(&der)
        .and_then(|c| c.public_key())
        .map_err(|_| invalid)?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid)?;
    let mut verifier = Verifier::new(MessageDigest::sha256(), &public).map_err(|_| invalid)?;
    match header.alg.as_str() {
        "RS256" => verifier
            .set_rsa_padding(Padding::PKCS1)
            .map_err(|_| invalid)?,
        "PS256" => {
            verifier
                .set_rsa_padding(Padding::PKCS1_PSS)
                .map_err(|_| invalid)?;
            verifier
                .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .map_err(|_| invalid)?;
        }
        _ => return Err(invalid),
    }
    verifier.update(h.as_bytes()).map_err(|_| invalid)?;
    verifier.update(b".").map_err(|_| invalid)?;
    verifier.update(p.as_bytes()).map_err(|_| invalid)?;
    if !verifier.verify(&sig).unwrap_or(false) {
        return Err(invalid);
    }
    let claims: Claims = decode(p).ok_or(invalid)?;
    let aud_ok = match &claims.aud {
        serde_json::Value::String(a) => audiences.iter().any(|x| x == a),
        serde_json::Value::Array(v) => v
            .iter()
            .any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a))),
        _ => false,
    };
    let exp = claims.exp as i64;
    let nbf = claims.nbf.map(|n| n as i64);
    if !aud_ok
        || claims.iss != client_id
        || claims.sub != client_id
        || now > exp + CLOCK_SKEW_SECS
        || exp - now > MAX_ASSERTION_LIFETIME_SECS
        || nbf.is_some_and(|n| now + CLOCK_SKEW_SECS < n)
    {
        return Err(invalid);
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(invalid)?;
    Ok(AssertionId { jti, exp })
}

fn decode<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::sign::Signer;
    use serde_json::json;

    fn cert() -> (PKey<openssl::pkey::Private>, Vec<u8>) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "client").unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::from_unix(1_000).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::from_unix(10_000_000).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (key, b.build().to_der().unwrap())
    }

    fn sign(
        key: &PKey<openssl::pkey::Private>,
        header: serde_json::Value,
        claims: serde_json::Value,
    ) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
        if header["alg"] == "PS256" {
            s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        }
        s.update(input.as_bytes()).unwrap();
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(s.sign_to_vec().unwrap())
        )
    }

    #[test]
    fn assertions_are_checked_for_key_signature_audience_and_time() {
        let (key, der) = cert();
        let kc = key_credential(&der, None).unwrap();
        assert_eq!(kc.start, 1_000);
        let aud = vec!["https://login/t/oauth2/v2.0/token".to_owned()];
        let claims = json!({"aud": aud[0], "iss": "app", "sub": "app", "exp": 5_000, "iat": 4_000, "jti": "x"});
        let ps = sign(
            &key,
            json!({"alg": "PS256", "x5t#S256": kc.x5t_s256}),
            claims.clone(),
        );
        assert_eq!(
            verify_client_assertion(&ps, "app", std::slice::from_ref(&kc), &aud, 4_500),
            Ok(AssertionId {
                jti: "x".into(),
                exp: 5_000
            })
        );
        let rs = sign(
            &key,
            json!({"alg": "RS256", "x5t": format!("{}=", kc.x5t)}),
            claims.clone(),
        );
        assert_eq!(
            verify_client_assertion(&rs, "app", std::slice::from_ref(&kc), &aud, 4_500)
                .map(|id| id.jti),
            Ok("x".to_owned())
        );

        assert_eq!(
            verify_client_assertion(&ps, "other", std::slice::from_ref(&kc), &aud, 4_500),
            Err(SignInFailure::InvalidAssertion)
        );
        assert_eq!(
            verify_client_assertion(
                &ps,
                "app",
                std::slice::from_ref(&kc),
                &["https://elsewhere".to_owned()],
                4_500
            ),
            Err(SignInFailure::InvalidAssertion)
        );
        assert_eq!(
            verify_client_assertion(&ps, "app", std::slice::from_ref(&kc), &aud, 6_000),
            Err(SignInFailure::InvalidAssertion)
        );
        assert_eq!(
            verify_client_assertion(&ps, "app", &[], &aud, 4_500),
            Err(SignInFailure::UnknownCertificate)
        );

        let (other_key, _) = cert();
        let forged = sign(
            &other_key,
            json!({"alg": "PS256", "x5t#S256": kc.x5t_s256}),
            claims,
        );
        assert_eq!(
            verify_client_assertion(&forged, "app", std::slice::from_ref(&kc), &aud, 4_500),
            Err(SignInFailure::InvalidAssertion)
        );
        assert!(key_credential(b"not a certificate", None).is_err());
    }
}
