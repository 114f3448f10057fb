//! The device authorization grant (RFC 8628): a device asks for a code, the
//! user approves it on Keyhaven's verification page by signing in, and the
//! device polls the token endpoint until then. Pending codes live in memory on
//! the node that issued them (scale-out moves them to the store).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::directory::SignedIn;

/// How long a code may be used.
pub const DEVICE_CODE_LIFETIME_SECS: i64 = 900;
/// How often the device should poll.
pub const POLL_INTERVAL_SECS: i64 = 2;
/// Most pending codes at once (of each flow); past this the expired ones are
/// dropped and new requests refused.
const MAX_PENDING: usize = 10_000;
/// Most pending codes one source address (an IPv6 /64) may hold, so that no
/// one source can use up the table without signing in.
pub const MAX_PENDING_PER_SOURCE: usize = 20;
// Letters and digits that cannot be mistaken for each other.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ23456789";

/// A new device authorization.
#[derive(Debug, Clone)]
pub struct Issued {
    /// What the device polls with.
    pub device_code: String,
    /// What the user types.
    pub user_code: String,
}

/// The state of a device code when polled.
#[derive(Debug)]
pub enum Poll {
    /// Not approved yet.
    Pending,
    /// Approved: who signed in, and the scope the device asked for.
    Approved(Box<SignedIn>, String),
    /// Expired.
    Expired,
    /// Unknown, or issued to another client.
    Unknown,
}

#[derive(Debug)]
struct Pending {
    user_code: String,
    client_id: String,
    scope: String,
    expires: i64,
    approved: Option<SignedIn>,
    /// The source prefix that asked for it.
    source: String,
}

/// Pending device authorizations.
#[derive(Debug, Default)]
pub struct DeviceCodes {
    pending: Mutex<HashMap<String, Pending>>,
}

impl DeviceCodes {
    /// No pending codes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a code for `client_id` asking for `scope`, requested from
    /// `source`; `None` when the table or the source's share of it is full.
    pub fn issue(
        &self,
        client_id: &str,
        scope: &str,
        now: i64,
        source: Option<std::net::IpAddr>,
    ) -> Option<Issued> {
        let mut map = self.pending.lock().ok()?;
        if !make_room(&mut map, |p| p.expires, now) {
            return None;
        }
        let source = crate::lockout::source_prefix(source);
        let held = map
            .values()
            .filter(|p| p.source == source && p.expires > now && p.approved.is_none())
            .count();
        if held >= MAX_PENDING_PER_SOURCE {
            return None;
        }
        let device_code = random_code()?;
        let mut letters = [0u8; 8];
        openssl::rand::rand_bytes(&mut letters).ok()?;
        let chars: Vec<char> = letters
            .iter()
            .map(|b| {
                char::from(
                    *USER_CODE_ALPHABET
                        .get(usize::from(*b) % USER_CODE_ALPHABET.len())
                        .unwrap_or(&b'X'),
                )
            })
            .collect();
        let user_code = format!(
            "{}-{}",
            chars.iter().take(4).collect::<String>(),
            chars.iter().skip(4).collect::<String>()
        );
        map.insert(
            device_code.clone(),
            Pending {
                user_code: user_code.clone(),
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                expires: now + DEVICE_CODE_LIFETIME_SECS,
                approved: None,
                source,
            },
        );
        Some(Issued {
            device_code,
            user_code,
        })
    }

    /// The client a live user code was issued to, and the scope it asks for.
    pub fn request_of(&self, user_code: &str, now: i64) -> Option<(String, String)> {
        let code = normalise(user_code);
        let map = self.pending.lock().ok()?;
        map.values()
            .find(|p| p.user_code == code && p.expires > now && p.approved.is_none())
            .map(|p| (p.client_id.clone(), p.scope.clone()))
    }

    /// Marks the user code approved by `who`; false if unknown or expired.
    pub fn approve(&self, user_code: &str, who: SignedIn, now: i64) -> bool {
        let code = normalise(user_code);
        let Ok(mut map) = self.pending.lock() else {
            return false;
        };
        match map
            .values_mut()
            .find(|p| p.user_code == code && p.expires > now && p.approved.is_none())
        {
            Some(p) => {
                p.approved = Some(who);
                true
            }
            None => false,
        }
    }

    /// Polls a device code. An approved code stays until [`Self::take`]
    /// consumes it, so the token endpoint can refuse (a locked user) without
    /// spending the approval.
    pub fn poll(&self, device_code: &str, client_id: &str, now: i64) -> Poll {
        let Ok(mut map) = self.pending.lock() else {
            return Poll::Unknown;
        };
        let Some(p) = map.get(device_code) else {
            return Poll::Unknown;
        };
        if p.client_id != client_id {
            return Poll::Unknown;
        }
        if p.expires <= now {
            map.remove(device_code);
            return Poll::Expired;
        }
        match &p.approved {
            None => Poll::Pending,
            Some(who) => Poll::Approved(Box::new(who.clone()), p.scope.clone()),
        }
    }

    /// Consumes an approved code; false if it was already taken (a second
    /// poll racing this one), so one approval issues one token.
    pub fn take(&self, device_code: &str) -> bool {
        let Ok(mut map) = self.pending.lock() else {
            return false;
        };
        if map.get(device_code).is_some_and(|p| p.approved.is_some()) {
            map.remove(device_code).is_some()
        } else {
            false
        }
    }
}

/// Drops expired entries when `map` is full; false if it stays full.
pub(crate) fn make_room<T>(
    map: &mut HashMap<String, T>,
    expires: impl Fn(&T) -> i64,
    now: i64,
) -> bool {
    if map.len() >= MAX_PENDING {
        map.retain(|_, p| expires(p) > now);
    }
    map.len() < MAX_PENDING
}

/// 256 random bits, base64url: a code that cannot be guessed.
pub(crate) fn random_code() -> Option<String> {
    let mut raw = [0u8; 32];
    openssl::rand::rand_bytes(&mut raw).ok()?;
    Some(URL_SAFE_NO_PAD.encode(raw))
}

fn normalise(user_code: &str) -> String {
    let clean: String = user_code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if clean.len() == 8 {
        format!("{}-{}", &clean[..4], &clean[4..])
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> SignedIn {
        crate::testing::user()
    }

    #[test]
    fn a_code_is_pending_until_approved_then_consumed() {
        let d = DeviceCodes::new();
        let i = d.issue("cli", "s", 100, None).unwrap();
        assert_eq!(i.user_code.len(), 9);
        assert!(matches!(d.poll(&i.device_code, "cli", 101), Poll::Pending));
        assert!(matches!(
            d.poll(&i.device_code, "other", 101),
            Poll::Unknown
        ));
        assert_eq!(
            d.request_of(&i.user_code.to_lowercase().replace('-', ""), 102),
            Some(("cli".to_owned(), "s".to_owned()))
        );
        assert!(d.approve(&i.user_code, who(), 102));
        assert!(!d.approve(&i.user_code, who(), 102), "approved once");
        assert!(matches!(
            d.poll(&i.device_code, "cli", 103),
            Poll::Approved(_, _)
        ));
        assert!(
            matches!(d.poll(&i.device_code, "cli", 103), Poll::Approved(_, _)),
            "polling does not consume"
        );
        assert!(d.take(&i.device_code));
        assert!(!d.take(&i.device_code), "one approval, one token");
        assert!(matches!(d.poll(&i.device_code, "cli", 104), Poll::Unknown));
    }

    /// Finding 11: 10,000 pending codes could be taken without signing in.
    #[test]
    fn one_source_holds_a_bounded_share_of_pending_codes() {
        let d = DeviceCodes::new();
        let ip: Option<std::net::IpAddr> = "192.0.2.5".parse().ok();
        for _ in 0..MAX_PENDING_PER_SOURCE {
            assert!(d.issue("cli", "s", 100, ip).is_some());
        }
        assert!(d.issue("cli", "s", 100, ip).is_none());
        assert!(d.issue("cli", "s", 100, "192.0.2.6".parse().ok()).is_some());
        assert!(
            d.issue("cli", "s", 100 + DEVICE_CODE_LIFETIME_SECS, ip)
                .is_some(),
            "expired codes no longer count"
        );
    }

    #[test]
    fn codes_expire() {
        let d = DeviceCodes::new();
        let i = d.issue("cli", "s", 100, None).unwrap();
        assert!(!d.approve(&i.user_code, who(), 100 + DEVICE_CODE_LIFETIME_SECS));
        assert!(matches!(
            d.poll(&i.device_code, "cli", 100 + DEVICE_CODE_LIFETIME_SECS),
            Poll::Expired
        ));
    }
}
