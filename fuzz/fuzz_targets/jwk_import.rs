//! JWK import: an arbitrary import body is decoded as the handler does and,
//! when it decodes, handed to the software key backend, which must refuse
//! or import it (RSA with CRT parameters, EC), never panic.
#![no_main]

use keyhaven_core::key::KeyBackend;
use keyhaven_crypto::SoftwareKeys;
use keyhaven_wire::key::KeyImportParameters;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_json::from_slice::<KeyImportParameters>(data) else {
        return;
    };
    if let Ok((jwk, ..)) = p.into_import() {
        let _ = SoftwareKeys::default().import(&jwk);
    }
});
