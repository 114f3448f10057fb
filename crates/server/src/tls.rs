//! TLS: a local CA and server certificate generated on first start (or the
//! user's own), served by rustls with TLS 1.2 and 1.3 only, ALPN h2 and
//! http/1.1. Private keys are written with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// Errors preparing TLS; paths are named, key material never.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] openssl::error::ErrorStack),
    /// The PEM files could not be used.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate clients should trust (generated mode only).
    pub ca_cert: Option<PathBuf>,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
}

/// Server certificate lifetime.
const SERVER_CERT_DAYS: u32 = 397;
/// CA lifetime.
const CA_DAYS: u32 = 3650;
/// Renew the server certificate this long before it expires.
const RENEW_BEFORE_DAYS: u32 = 30;

/// DNS names the generated certificate covers for `domain`.
pub fn server_names(domain: &str, extra_vaults: &[&str]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        domain.to_owned(),
        format!("*.vault.{domain}"),
        format!("*.managedhsm.{domain}"),
        format!("login.{domain}"),
        format!("management.{domain}"),
        format!("graph.{domain}"),
        format!("portal.{domain}"),
        format!("loganalytics.{domain}"),
    ];
    // Some clients (curl) refuse wildcards directly under `localhost`-like
    // names, so the bootstrap vault is also named explicitly.
    names.extend(extra_vaults.iter().map(|v| format!("{v}.vault.{domain}")));
    names.dedup();
    names
}

/// Makes sure a CA and a current server certificate exist under `dir`.
pub fn ensure_generated(dir: &Path, names: &[String]) -> Result<TlsFiles, TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    let names_path = dir.join("server.names");

    let (ca_cert, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        (
            X509::from_pem(&read(&ca_cert_path)?)?,
            PKey::private_key_from_pem(&read(&ca_key_path)?)?,
        )
    } else {
        let key = ec_key()?;
        let cert = make_ca(&key)?;
        write_private(&ca_key_path, &key.private_key_to_pem_pkcs8()?)?;
        write_public(&ca_cert_path, &cert.to_pem()?)?;
        (cert, key)
    };

    let wanted = names.join("\n");
    let current = fs::read_to_string(&names_path).unwrap_or_default();
    let fresh = cert_path.exists()
        && key_path.exists()
        && current == wanted
        && X509::from_pem(&read(&cert_path)?)
            .ok()
            .and_then(|c| {
                let horizon = Asn1Time::days_from_now(RENEW_BEFORE_DAYS).ok()?;
                Some(c.not_after() > horizon)
            })
            .unwrap_or(false);
    if !fresh {
        let key = ec_key()?;
        let cert = make_server(&key, &ca_cert, &ca_key, names)?;
        let mut chain = cert.to_pem()?;
        chain.extend_from_slice(&ca_cert.to_pem()?);
        write_private(&key_path, &key.private_key_to_pem_pkcs8()?)?;
        write_public(&cert_path, &chain)?;
        write_public(&names_path, wanted.as_bytes())?;
    }
    Ok(TlsFiles {
        ca_cert: Some(fs::canonicalize(&ca_cert_path).unwrap_or(ca_cert_path)),
        cert: cert_path,
        key: key_path,
    })
}

/// The oldest TLS version a deployment accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinTls {
    /// TLS 1.2 and 1.3 (the default, as Azure Key Vault).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl std::str::FromStr for MinTls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            _ => Err(format!("TLS minimum version must be 1.2 or 1.3, not {s}")),
        }
    }
}

/// The server certificate, re-read from its files on demand (SIGHUP, or a
/// change of the files' modification times), so a renewed certificate is
/// served without a restart. New handshakes use the new certificate;
/// established connections keep theirs.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: std::sync::RwLock<(
        Arc<rustls::sign::CertifiedKey>,
        Option<std::time::SystemTime>,
    )>,
}

fn load_certified(files: &TlsFiles) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let certs = rustls_pemfile::certs(&mut read(&files.cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Config(format!(
            "{}: no certificate found",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(&files.key)?.as_slice())
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            TlsError::Config(format!("{}: no private key found", files.key.display()))
        })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(certs, signer)))
}

fn modified(files: &TlsFiles) -> Option<std::time::SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(&files.cert).max(m(&files.key))
}

impl ReloadingCert {
    /// Loads the certificate and key.
    pub fn new(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        let key = load_certified(files)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: std::sync::RwLock::new((key, modified(files))),
        }))
    }

    /// Re-reads the files if they changed (or `force`); a broken new pair is
    /// reported and the current certificate kept.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let stamp = modified(&self.files);
        if !force && self.current.read().map(|c| c.1 == stamp).unwrap_or(false) {
            return Ok(false);
        }
        let key = load_certified(&self.files)?;
        if let Ok(mut c) = self.current.write() {
            *c = (key, stamp);
        }
        Ok(true)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c.0))
    }
}

/// Builds the rustls server configuration: TLS 1.2/1.3 (or 1.3 only) with
/// ring's suites (AEAD only: AES-GCM and ChaCha20-Poly1305, ECDHE), h2 +
/// http/1.1, serving the certificate `cert` resolves.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    min: MinTls,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinTls::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTls::Tls13 => &[&rustls::version::TLS13],
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn ec_key() -> Result<PKey<Private>, TlsError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn serial() -> Result<openssl::asn1::Asn1Integer, TlsError> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

fn make_ca(key: &PKey<Private>) -> Result<X509, TlsError> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Keyhaven")?;
    name.append_entry_by_nid(Nid::COMMONNAME, "Keyhaven Local CA")?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let sn = serial()?;
    b.set_serial_number(&sn)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*Asn1Time::days_from_now(CA_DAYS)?)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

fn make_server(
    key: &PKey<Private>,
    ca: &X509,
    ca_key: &PKey<Private>,
    names: &[String],
) -> Result<X509, TlsError> {
    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Keyhaven")?;
    subject.append_entry_by_nid(
        Nid::COMMONNAME,
        names.first().map(String::as_str).unwrap_or("localhost"),
    )?;
    let subject = subject.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let sn = serial()?;
    b.set_serial_number(&sn)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(ca.subject_name())?;
    b.set_pubkey(key)?;
    b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*Asn1Time::days_from_now(SERVER_CERT_DAYS)?)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_agreement()
            .build()?,
    )?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    for n in names {
        san.dns(n);
    }
    san.ip("127.0.0.1");
    san.ip("::1");
    let san = san.build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(san)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(aki)?;
    b.sign(ca_key, MessageDigest::sha256())?;
    Ok(b.build())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    write_mode(path, data, 0o600)
}

fn write_public(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    write_mode(path, data, 0o644)
}

fn write_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_material_is_reused_and_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("kh-tls-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let names = server_names("localhost", &["dev"]);
        let a = ensure_generated(&dir, &names).unwrap();
        let ca1 = fs::read(dir.join("ca.pem")).unwrap();
        let cert1 = fs::read(&a.cert).unwrap();
        for k in ["ca.key", "server.key"] {
            let mode = fs::metadata(dir.join(k)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{k}");
        }
        ensure_generated(&dir, &names).unwrap();
        assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca1);
        assert_eq!(fs::read(&a.cert).unwrap(), cert1);
        // A new domain re-issues the server certificate under the same CA.
        ensure_generated(&dir, &server_names("example.test", &[])).unwrap();
        assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca1);
        assert_ne!(fs::read(&a.cert).unwrap(), cert1);
        let cert = ReloadingCert::new(&a).unwrap();
        server_config(Arc::clone(&cert), MinTls::Tls13).unwrap();
        assert!(
            !cert.reload(false).unwrap(),
            "unchanged files are not re-read"
        );
        assert!(cert.reload(true).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
