//! Certificate uploads and certificates: arbitrary bytes as a PFX (with a
//! password from the input), as PEM, and as a DER certificate to inspect.
#![no_main]

use keyhaven_core::certificate::{CertificateBackend, SecretFormat};
use keyhaven_crypto::SoftwareKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(*split).min(rest.len());
    let (password, bytes) = rest.split_at(at);
    let password = std::str::from_utf8(password).ok();
    let keys = SoftwareKeys::default();
    let _ = keys.read_upload(SecretFormat::Pkcs12, bytes, password);
    let _ = keys.read_upload(SecretFormat::Pem, bytes, password);
    let _ = keys.inspect(bytes);
});
