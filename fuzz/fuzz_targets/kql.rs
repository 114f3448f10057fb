//! The KQL parser (logs queries are caller text) with arbitrary text: it
//! answers a query or an error, and an error's position is inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Err(e) = keyhaven_kql::parse(s) {
            assert!(e.span.start <= s.len() && e.span.end <= s.len());
            let _ = e.line_pos(s);
        }
    }
});
