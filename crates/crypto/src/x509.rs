//! X.509 with OpenSSL: self-signed certificates from a policy, reading a
//! certificate's validity and thumbprint, and packaging a certificate chain
//! (with its private key when exportable) as PKCS#12 or PEM. Private keys come
//! from the same handle cache as key operations.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keyhaven_core::certificate::{
    CertificateBackend, CertificateInfo, CertificatePolicy, SecretFormat, Upload, X509Request,
};
use keyhaven_core::key::{Curve, KeyType, SealedPrivate};
use keyhaven_core::{Error, Result, Sensitive};
use openssl::asn1::{Asn1Object, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{
    X509Builder, X509Extension, X509Name, X509NameBuilder, X509NameRef, X509ReqBuilder, X509,
};

use crate::SoftwareKeys;

/// OID of the Microsoft UPN otherName.
const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";

fn x509_err<T>(_: T) -> Error {
    Error::Integrity
}

/// Parses `CN=a, O=b, …` into an X.509 name (a 400 for anything else).
pub fn parse_subject(subject: &str) -> Result<X509Name> {
    let bad = || {
        Error::BadParameter(format!(
            "The subject '{}' is not a valid distinguished name (for example CN=example.com, O=Contoso).",
            subject.chars().take(64).collect::<String>()
        ))
    };
    let mut b = X509NameBuilder::new().map_err(x509_err)?;
    for part in subject
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = part.split_once('=').ok_or_else(bad)?;
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        if v.is_empty() || v.len() > 256 {
            return Err(bad());
        }
        let field = match k.to_ascii_uppercase().as_str() {
            "CN" => "CN",
            "O" => "O",
            "OU" => "OU",
            "C" => "C",
            "L" => "L",
            "ST" | "S" => "ST",
            "E" | "EMAIL" | "EMAILADDRESS" => "emailAddress",
            "DC" => "DC",
            "STREET" => "street",
            "SERIALNUMBER" => "serialNumber",
            "T" | "TITLE" => "title",
            "G" | "GN" | "GIVENNAME" => "GN",
            "SN" | "SURNAME" => "SN",
            _ => return Err(bad()),
        };
        b.append_entry_by_text(field, v).map_err(|_| bad())?;
    }
    Ok(b.build())
}

use keyhaven_core::clock::{civil_from_days, days_from_civil};

/// `t` plus `months` calendar months (the day clamped to the month's end).
pub fn add_months(t: i64, months: u32) -> i64 {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + i64::from(months);
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let last =
        days_from_civil(ny + i64::from(nm == 12), nm % 12 + 1, 1) - days_from_civil(ny, nm, 1);
    days_from_civil(ny, nm, d.min(last)) * 86_400 + secs
}

fn signing_digest(policy: &CertificatePolicy) -> MessageDigest {
    match (policy.kty, policy.curve) {
        (KeyType::Ec, Some(Curve::P384)) => MessageDigest::sha384(),
        (KeyType::Ec, Some(Curve::P521)) => MessageDigest::sha512(),
        _ => MessageDigest::sha256(),
    }
}

/// DER of a UTF8String (for the UPN otherName).
fn utf8_string_der(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = vec![0x0c];
    let len = bytes.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(be.len() - skip).unwrap_or(0));
        out.extend(be.iter().skip(skip));
    }
    out.extend_from_slice(bytes);
    out
}

/// Builds and signs a certificate for `pkey`: self-signed, or by `issuer`
/// (its certificate and key; validity clamped to the issuer's).
fn build_certificate(
    req: &X509Request<'_>,
    pkey: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> Result<Vec<u8>> {
    let p = req.policy;
    let name = subject_of(p)?;
    let mut b = X509Builder::new().map_err(x509_err)?;
    b.set_version(2).map_err(x509_err)?;
    let mut serial = BigNum::new().map_err(x509_err)?;
    serial
        .rand(127, MsbOption::MAYBE_ZERO, false)
        .map_err(x509_err)?;
    let serial = serial.to_asn1_integer().map_err(x509_err)?;
    b.set_serial_number(&serial).map_err(x509_err)?;
    b.set_subject_name(&name).map_err(x509_err)?;
    match issuer {
        Some((ca, _)) => b.set_issuer_name(ca.subject_name()),
        None => b.set_issuer_name(&name),
    }
    .map_err(x509_err)?;
    b.set_pubkey(pkey).map_err(x509_err)?;
    let mut not_after = add_months(req.not_before, p.validity_months);
    if let Some((ca, _)) = issuer {
        not_after = not_after.min(unix_of(ca.not_after())?);
    }
    let (start, end) = (
        Asn1Time::from_unix(req.not_before).map_err(x509_err)?,
        Asn1Time::from_unix(not_after).map_err(x509_err)?,
    );
    b.set_not_before(&start).map_err(x509_err)?;
    b.set_not_after(&end).map_err(x509_err)?;
    for ext in policy_extensions(p, &b.x509v3_context(issuer.map(|(c, _)| &**c), None))? {
        b.append_extension(ext).map_err(x509_err)?;
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .map_err(x509_err)?;
    b.append_extension(ski).map_err(x509_err)?;
    if let Some((ca, _)) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(ca), None))
            .map_err(x509_err)?;
        b.append_extension(aki).map_err(x509_err)?;
    }
    let signer = issuer.map_or(pkey, |(_, k)| k);
    let digest = match signer.id() {
        openssl::pkey::Id::EC => match signer.bits() {
            384 => MessageDigest::sha384(),
            521 => MessageDigest::sha512(),
            _ => MessageDigest::sha256(),
        },
        _ => MessageDigest::sha256(),
    };
    b.sign(signer, digest).map_err(x509_err)?;
    b.build().to_der().map_err(x509_err)
}

/// The policy's extensions: basic constraints, key usage, EKU, SANs.
fn policy_extensions(
    p: &CertificatePolicy,
    ctx: &openssl::x509::X509v3Context<'_>,
) -> Result<Vec<X509Extension>> {
    let mut out = Vec::new();
    let is_ca = p.key_usage.iter().any(|u| u == "keyCertSign");
    let mut bc = BasicConstraints::new();
    bc.critical();
    if is_ca {
        bc.ca();
    }
    out.push(bc.build().map_err(x509_err)?);
    if !p.key_usage.is_empty() {
        let mut ku = KeyUsage::new();
        ku.critical();
        for u in &p.key_usage {
            match u.as_str() {
                "digitalSignature" => ku.digital_signature(),
                "nonRepudiation" => ku.non_repudiation(),
                "keyEncipherment" => ku.key_encipherment(),
                "dataEncipherment" => ku.data_encipherment(),
                "keyAgreement" => ku.key_agreement(),
                "keyCertSign" => ku.key_cert_sign(),
                "cRLSign" => ku.crl_sign(),
                "encipherOnly" => ku.encipher_only(),
                "decipherOnly" => ku.decipher_only(),
                _ => &mut ku,
            };
        }
        out.push(ku.build().map_err(x509_err)?);
    }
    if !p.ekus.is_empty() {
        let mut eku = ExtendedKeyUsage::new();
        for oid in &p.ekus {
            eku.other(oid);
        }
        out.push(eku.build().map_err(x509_err)?);
    }
    if p.has_sans() {
        let mut san = SubjectAlternativeName::new();
        for ip in &p.ip_addresses {
            san.ip(ip);
        }
        for u in &p.uris {
            san.uri(u);
        }
        for d in &p.dns_names {
            san.dns(d);
        }
        for e in &p.emails {
            san.email(e);
        }
        for u in &p.upns {
            san.other_name2(
                Asn1Object::from_str(UPN_OID).map_err(x509_err)?,
                &utf8_string_der(u),
            );
        }
        out.push(san.build(ctx).map_err(|_| {
            Error::BadParameter("The subject alternative names are invalid.".into())
        })?);
    }
    Ok(out)
}

fn subject_of(p: &CertificatePolicy) -> Result<X509Name> {
    if p.subject.trim().is_empty() {
        Ok(X509NameBuilder::new().map_err(x509_err)?.build())
    } else {
        parse_subject(&p.subject)
    }
}

/// `CN=a, O=b` from an X.509 name, in its order.
fn name_string(n: &X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let key = match e.object().nid().short_name().unwrap_or("") {
                "emailAddress" => "E",
                k => k,
            };
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a PFX. What Windows and older tools export encrypts the
/// certificate bag with RC2-40 and the key bag with 3DES under a SHA-1 MAC
/// (Azure reads these); OpenSSL 3 opens RC2 only through its legacy
/// provider, loaded on the first file that needs it. The default provider
/// stays the fallback, so nothing else changes what it uses.
fn parse_pfx(
    bytes: &[u8],
    password: &str,
) -> std::result::Result<openssl::pkcs12::ParsedPkcs12_2, openssl::error::ErrorStack> {
    let parse = || Pkcs12::from_der(bytes).and_then(|p| p.parse2(password));
    match parse() {
        Err(e) if legacy_provider() => parse().map_err(|_| e),
        other => other,
    }
}

/// Loads OpenSSL's legacy provider for legacy PKCS#12 files; true once it
/// is loaded. The server calls it at start so that every node reads the
/// same files; a PFX that needs it loads it too, for other callers.
pub fn legacy_provider() -> bool {
    static LEGACY: std::sync::OnceLock<Option<openssl::provider::Provider>> =
        std::sync::OnceLock::new();
    LEGACY
        .get_or_init(|| openssl::provider::Provider::try_load(None, "legacy", true).ok())
        .is_some()
}

/// An IP address SAN's octets (4 or 16) as an address.
fn ip_of(octets: &[u8]) -> Option<std::net::IpAddr> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(octets)
            .ok()
            .map(std::net::IpAddr::from),
        _ => None,
    }
}

fn bad_upload() -> Error {
    Error::BadParameter(
        "The certificate could not be read: the content is not a valid PFX or PEM, or the password is wrong."
            .into(),
    )
}

/// Orders `certs` with the certificate of `key` first; none matching is a 400.
fn leaf_first(key: &PKey<Private>, certs: Vec<X509>) -> Result<(Vec<Vec<u8>>, usize)> {
    let pos = certs
        .iter()
        .position(|c| c.public_key().is_ok_and(|p| p.public_eq(key)))
        .ok_or_else(|| {
            Error::BadParameter("No certificate in the upload matches its private key.".into())
        })?;
    let mut ordered = Vec::with_capacity(certs.len());
    if let Some(leaf) = certs.get(pos) {
        ordered.push(leaf.to_der().map_err(x509_err)?);
    }
    for (i, c) in certs.iter().enumerate() {
        if i != pos {
            ordered.push(c.to_der().map_err(x509_err)?);
        }
    }
    Ok((ordered, pos))
}

fn unix_of(t: &openssl::asn1::Asn1TimeRef) -> Result<i64> {
    let epoch = Asn1Time::from_unix(0).map_err(x509_err)?;
    let diff = epoch.diff(t).map_err(x509_err)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

impl CertificateBackend for SoftwareKeys {
    fn self_signed(&self, req: &X509Request<'_>, key: &SealedPrivate<'_>) -> Result<Vec<u8>> {
        let handle = self.handle(key)?;
        build_certificate(req, &handle.pkey, None)
    }

    fn issue(
        &self,
        req: &X509Request<'_>,
        subject: &SealedPrivate<'_>,
        ca_key: &SealedPrivate<'_>,
        ca_der: &[u8],
    ) -> Result<Vec<u8>> {
        let (subject, ca_key) = (self.handle(subject)?, self.handle(ca_key)?);
        let ca = X509::from_der(ca_der).map_err(x509_err)?;
        let ca_public = ca.public_key().map_err(x509_err)?;
        if !ca_public.public_eq(&ca_key.pkey) {
            return Err(Error::Integrity);
        }
        build_certificate(req, &subject.pkey, Some((&ca, &ca_key.pkey)))
    }

    fn inspect(&self, der: &[u8]) -> Result<CertificateInfo> {
        let cert = X509::from_der(der)
            .map_err(|_| Error::BadParameter("The certificate could not be parsed.".into()))?;
        let public = crate::keys::public_of(&cert.public_key().map_err(|_| {
            Error::BadParameter("The certificate's public key is not supported.".into())
        })?)?;
        let (mut dns_names, mut emails) = (Vec::new(), Vec::new());
        let (mut ip_addresses, mut uris) = (Vec::new(), Vec::new());
        if let Some(sans) = cert.subject_alt_names() {
            for n in &sans {
                if let Some(d) = n.dnsname() {
                    dns_names.push(d.to_owned());
                } else if let Some(e) = n.email() {
                    emails.push(e.to_owned());
                } else if let Some(u) = n.uri() {
                    uris.push(u.to_owned());
                } else if let Some(ip) = n.ipaddress().and_then(ip_of) {
                    ip_addresses.push(ip.to_string());
                }
            }
        }
        Ok(CertificateInfo {
            not_before: unix_of(cert.not_before())?,
            not_after: unix_of(cert.not_after())?,
            thumbprint: cert
                .digest(MessageDigest::sha1())
                .map_err(x509_err)?
                .to_vec(),
            public,
            subject: name_string(cert.subject_name()),
            dns_names,
            emails,
            ip_addresses,
            uris,
        })
    }

    fn read_upload(
        &self,
        format: SecretFormat,
        bytes: &[u8],
        password: Option<&str>,
    ) -> Result<Upload> {
        // OpenSSL takes the password as a C string: one with a NUL byte
        // would panic inside the `openssl` crate, so it is refused here.
        if password.is_some_and(|p| p.contains('\0')) {
            return Err(bad_upload());
        }
        let (pkey, certs) = match format {
            SecretFormat::Pem => {
                let certs = X509::stack_from_pem(bytes).map_err(|_| bad_upload())?;
                let pkey = match password {
                    Some(p) => PKey::private_key_from_pem_passphrase(bytes, p.as_bytes()),
                    None => PKey::private_key_from_pem(bytes),
                }
                .map_err(|_| {
                    Error::BadParameter(
                        "The PEM holds no readable private key (PKCS#8, RSA or EC).".into(),
                    )
                })?;
                (pkey, certs)
            }
            SecretFormat::Pkcs12 => {
                let parsed = parse_pfx(bytes, password.unwrap_or("")).map_err(|_| bad_upload())?;
                let pkey = parsed
                    .pkey
                    .ok_or_else(|| Error::BadParameter("The PFX holds no private key.".into()))?;
                let mut certs: Vec<X509> = parsed.cert.into_iter().collect();
                if let Some(ca) = parsed.ca {
                    certs.extend(ca);
                }
                (pkey, certs)
            }
        };
        if certs.is_empty() {
            return Err(Error::BadParameter(
                "The upload holds no certificate.".into(),
            ));
        }
        let (chain, leaf_index) = leaf_first(&pkey, certs)?;
        Ok(Upload {
            private: Sensitive::new(pkey.private_key_to_pkcs8().map_err(x509_err)?),
            public: crate::keys::public_of(&pkey)?,
            chain,
            leaf_index,
        })
    }

    fn csr(&self, policy: &CertificatePolicy, key: &SealedPrivate<'_>) -> Result<Vec<u8>> {
        let handle = self.handle(key)?;
        let mut b = X509ReqBuilder::new().map_err(x509_err)?;
        b.set_version(0).map_err(x509_err)?;
        let subject = subject_of(policy)?;
        b.set_subject_name(&subject).map_err(x509_err)?;
        b.set_pubkey(&handle.pkey).map_err(x509_err)?;
        let exts = policy_extensions(policy, &b.x509v3_context(None))?;
        let mut stack = Stack::new().map_err(x509_err)?;
        for e in exts {
            stack.push(e).map_err(x509_err)?;
        }
        b.add_extensions(&stack).map_err(x509_err)?;
        b.sign(&handle.pkey, signing_digest(policy))
            .map_err(x509_err)?;
        b.build().to_der().map_err(x509_err)
    }

    fn package(
        &self,
        format: SecretFormat,
        key: Option<&SealedPrivate<'_>>,
        chain: &[Vec<u8>],
    ) -> Result<Sensitive<Vec<u8>>> {
        let certs = chain
            .iter()
            .map(|c| X509::from_der(c).map_err(x509_err))
            .collect::<Result<Vec<_>>>()?;
        let handle = key.map(|k| self.handle(k)).transpose()?;
        match format {
            SecretFormat::Pem => {
                let mut out = Vec::new();
                if let Some(h) = &handle {
                    let pem = Sensitive::new(h.pkey.private_key_to_pem_pkcs8().map_err(x509_err)?);
                    out.extend_from_slice(pem.expose());
                }
                for c in &certs {
                    out.extend(c.to_pem().map_err(x509_err)?);
                }
                Ok(Sensitive::new(out))
            }
            SecretFormat::Pkcs12 => {
                let mut b = Pkcs12::builder();
                if let Some(h) = &handle {
                    b.pkey(&h.pkey);
                }
                let mut rest = certs.iter();
                if let Some(leaf) = rest.next() {
                    b.cert(leaf);
                }
                let mut ca = Stack::new().map_err(x509_err)?;
                for c in rest {
                    ca.push(c.clone()).map_err(x509_err)?;
                }
                b.ca(ca);
                let der =
                    Sensitive::new(b.build2("").map_err(x509_err)?.to_der().map_err(x509_err)?);
                Ok(Sensitive::new(STANDARD.encode(der.expose()).into_bytes()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months() {
        let jan31 = days_from_civil(2026, 1, 31) * 86_400 + 3600;
        assert_eq!(
            add_months(jan31, 1),
            days_from_civil(2026, 2, 28) * 86_400 + 3600
        );
        assert_eq!(
            add_months(jan31, 12),
            days_from_civil(2027, 1, 31) * 86_400 + 3600
        );
        assert_eq!(
            add_months(jan31, 13),
            days_from_civil(2027, 2, 28) * 86_400 + 3600
        );
        let feb29 = days_from_civil(2024, 2, 29) * 86_400;
        assert_eq!(add_months(feb29, 12), days_from_civil(2025, 2, 28) * 86_400);
        assert_eq!(
            civil_from_days(days_from_civil(2000, 12, 31)),
            (2000, 12, 31)
        );
    }

    #[test]
    fn a_legacy_rc2_pfx_is_read() {
        // openssl pkcs12 -export -legacy: pbeWithSHA1And40BitRC2-CBC
        // certificate bag, 3DES key bag, SHA-1 MAC.
        let pfx = include_bytes!("../testdata/legacy-rc2.pfx");
        let upload = SoftwareKeys::default()
            .read_upload(SecretFormat::Pkcs12, pfx, Some("legacy-pass"))
            .expect("a legacy PFX is read");
        assert_eq!(upload.chain.len(), 1);
        let cert = X509::from_der(&upload.chain[0]).unwrap();
        assert_eq!(name_string(cert.subject_name()), "CN=legacy-pfx.example");
        // The wrong password is still refused.
        assert!(SoftwareKeys::default()
            .read_upload(SecretFormat::Pkcs12, pfx, Some("wrong"))
            .is_err());
    }

    /// Found by the `certificates` fuzz target: a password with a NUL byte
    /// panicked in the `openssl` crate (`CString::new(..).unwrap()`).
    #[test]
    fn a_password_with_a_nul_byte_is_refused_not_a_panic() {
        let pfx = include_bytes!("../testdata/legacy-rc2.pfx");
        let keys = SoftwareKeys::default();
        for format in [SecretFormat::Pkcs12, SecretFormat::Pem] {
            assert!(keys.read_upload(format, pfx, Some("a\0b")).is_err());
        }
    }

    #[test]
    fn subjects_parse_or_are_refused() {
        assert!(parse_subject("CN=example.com, O=Contoso, C=US").is_ok());
        assert!(parse_subject("E=a@b.c;OU=x").is_ok());
        for bad in ["example.com", "CN=", "XX=1", "CN=a,=b"] {
            assert!(parse_subject(bad).is_err(), "{bad}");
        }
    }
}
