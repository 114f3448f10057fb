//! The api-version parser with arbitrary text.
#![no_main]

use keyhaven_wire::api_version::ApiVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ApiVersion::parse(Some(s));
    }
});
