//! The JSON bodies of the data-plane operations, parsed and converted to
//! the domain's inputs as the handlers do: the first byte picks the
//! operation, the rest is the body. Refusal is fine; a panic is not.
#![no_main]

use keyhaven_core::certificate::CertificatePolicy as Policy;
use keyhaven_wire::{certificate as c, key as k, secret as s};
use libfuzzer_sys::fuzz_target;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 10 {
        0 => {
            if let Some(p) = parse::<s::SecretSetParameters>(body) {
                let _ = keyhaven_core::secret::SecretInput::try_from(p);
            }
        }
        1 => {
            if let Some(p) = parse::<s::SecretUpdateParameters>(body) {
                let _ = keyhaven_core::secret::SecretUpdate::from(p);
            }
        }
        2 => {
            if let Some(p) = parse::<k::KeyCreateParameters>(body) {
                let _ = keyhaven_core::key::KeyInput::try_from(p);
            }
        }
        3 => {
            if let Some(p) = parse::<k::KeyImportParameters>(body) {
                let _ = p.into_import();
            }
        }
        4 => {
            let _ = parse::<k::KeyOperationsParameters>(body);
            let _ = parse::<k::KeySignParameters>(body);
            let _ = parse::<k::KeyVerifyParameters>(body);
        }
        5 => {
            if let Some(p) = parse::<k::KeyUpdateParameters>(body) {
                let _ = keyhaven_core::key::KeyUpdate::try_from(p);
            }
        }
        6 => {
            if let Some(p) = parse::<c::CertificatePolicy>(body) {
                let _ = Policy::merged(None, p.into());
            }
        }
        7 => {
            if let Some(p) = parse::<c::CertificateCreateParameters>(body) {
                let create = keyhaven_core::certificate::CertificateCreate::from(p);
                if let Some(policy) = create.policy {
                    let _ = Policy::merged(None, policy);
                }
            }
        }
        8 => {
            if let Some(p) = parse::<c::CertificateImportParameters>(body) {
                let _ = keyhaven_core::certificate::CertificateImport::try_from(p);
            }
        }
        _ => {
            if let Some(p) = parse::<c::CertificateMergeParameters>(body) {
                let _ = keyhaven_core::certificate::CertificateMerge::try_from(p);
            }
        }
    }
});
