//! The token validator with arbitrary tokens: it must answer Ok or Err, never
//! panic, whatever the header, claims or signature hold.
#![no_main]

use std::sync::OnceLock;

use keyhaven_identity::{SigningKey, TokenService};
use libfuzzer_sys::fuzz_target;

fn service() -> &'static TokenService {
    static S: OnceLock<TokenService> = OnceLock::new();
    S.get_or_init(|| {
        let key = SigningKey::generate().expect("a signing key");
        TokenService::with_keys(
            vec![key],
            "https://login.localhost:8443",
            "00000000-0000-0000-0000-000000000001",
        )
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let s = service();
        let _ = s.validate(token, "https://vault.localhost:8443", 1_800_000_000);
        let _ = s.validate_refresh(token, "04b07795-8ddb-461a-bbee-02f9e1bf7b46", 1_800_000_000);
        let _ = keyhaven_identity::federation::unverified_issuer(token);
    }
});
