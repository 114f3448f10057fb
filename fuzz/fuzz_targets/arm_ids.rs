//! ARM resource ids and scopes as the authorization and network code read
//! them, and role-assignment conditions: arbitrary text must be refused or
//! matched, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mid = (0..=s.len() / 2)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    let (a, b) = s.split_at(mid);
    let _ = keyhaven_core::network::split_subnet_id(s);
    let _ = keyhaven_core::network::Ipv4Net::parse(s);
    let _ = keyhaven_identity::rbac::scope_covers(a, b);
    let _ = keyhaven_identity::rbac::matches(a, b);
    let _ = keyhaven_identity::condition::validate(s);
});
