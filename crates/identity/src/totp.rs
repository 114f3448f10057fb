//! Time-based one-time passwords (RFC 6238 over RFC 4226): what an
//! authenticator app registered for multi-factor sign-in computes, and the
//! check of a code a user types. Azure's defaults: HMAC-SHA1, 6 digits,
//! 30-second steps. A code is accepted for the current step or one step
//! either side (clock skew), compared in constant time, and never twice:
//! the caller keeps the last step accepted and passes it back.

use keyhaven_core::Sensitive;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a generated secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;
/// Steps either side of now a code may be from.
const SKEW_STEPS: i64 = 1;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A new random secret.
pub fn new_secret() -> Result<Sensitive<Vec<u8>>, openssl::error::ErrorStack> {
    let mut b = vec![0u8; SECRET_BYTES];
    openssl::rand::rand_bytes(&mut b)?;
    Ok(Sensitive::new(b))
}

/// RFC 4648 base32 without padding (what authenticator apps take).
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for b in bytes {
        buf = (buf << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let i = ((buf >> bits) & 31) as usize;
            out.push(char::from(*BASE32.get(i).unwrap_or(&b'A')));
        }
    }
    if bits > 0 {
        let i = ((buf << (5 - bits)) & 31) as usize;
        out.push(char::from(*BASE32.get(i).unwrap_or(&b'A')));
    }
    out
}

/// Decodes base32 (case-insensitive, spaces and padding ignored).
pub fn from_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let up = c.to_ascii_uppercase() as u8;
        let v = BASE32.iter().position(|x| *x == up)? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buf >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The `otpauth://` URI an authenticator app scans (as a QR code).
pub fn provisioning_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                    char::from(b).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

/// The step a Unix time falls in.
pub fn step_of(now: i64) -> i64 {
    now.div_euclid(STEP_SECS)
}

/// The code of `step` (RFC 4226's dynamic truncation), as text of DIGITS digits.
pub fn code_at(secret: &[u8], step: i64) -> Option<String> {
    let key = PKey::hmac(secret).ok()?;
    let mut signer = Signer::new(MessageDigest::sha1(), &key).ok()?;
    signer.update(&step.to_be_bytes()).ok()?;
    let mac = signer.sign_to_vec().ok()?;
    let offset = usize::from(mac.last()? & 0x0f);
    let word: [u8; 4] = mac.get(offset..offset + 4)?.try_into().ok()?;
    let bin = u32::from_be_bytes(word) & 0x7fff_ffff;
    let n = bin % 10u32.pow(DIGITS);
    Some(format!("{n:0width$}", width = DIGITS as usize))
}

/// Checks a typed code at `now`: the step it matches, if it matches the
/// current step or one either side and that step is later than
/// `last_used` (a code is never accepted twice, nor an older one after a
/// newer). Every candidate is compared, in constant time.
pub fn verify(secret: &[u8], code: &str, now: i64, last_used: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = step_of(now);
    let mut found = None;
    for step in current - SKEW_STEPS..=current + SKEW_STEPS {
        let Some(expected) = code_at(secret, step) else {
            continue;
        };
        if openssl::memcmp::eq(expected.as_bytes(), code.as_bytes())
            && last_used.is_none_or(|l| step > l)
            && found.is_none()
        {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B, SHA1, 8 digits: the last 6 digits are the
    // 6-digit codes (dynamic truncation is the same number, mod 10^6).
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    const VECTORS: [(i64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn codes_match_rfc_6238() {
        for (t, eight) in VECTORS {
            let want = &eight[2..];
            assert_eq!(code_at(RFC_SECRET, step_of(t)).unwrap(), want, "t={t}");
        }
    }

    #[test]
    fn a_code_is_accepted_once_within_one_step_of_skew() {
        let t = 1_234_567_890;
        let code = code_at(RFC_SECRET, step_of(t)).unwrap();
        let used = verify(RFC_SECRET, &code, t, None).expect("current step");
        assert_eq!(used, step_of(t));
        // Replayed: refused.
        assert_eq!(verify(RFC_SECRET, &code, t, Some(used)), None);
        // A step late or early: accepted; two steps: refused.
        assert!(verify(RFC_SECRET, &code, t + STEP_SECS, None).is_some());
        assert!(verify(RFC_SECRET, &code, t - STEP_SECS, None).is_some());
        assert_eq!(verify(RFC_SECRET, &code, t + 2 * STEP_SECS, None), None);
        // An older code after a newer one was used: refused.
        let older = code_at(RFC_SECRET, step_of(t) - 1).unwrap();
        assert_eq!(verify(RFC_SECRET, &older, t, Some(used)), None);
        // Not six digits: refused without computing anything.
        assert_eq!(verify(RFC_SECRET, "12345", t, None), None);
        assert_eq!(verify(RFC_SECRET, "12a456", t, None), None);
        assert_eq!(verify(RFC_SECRET, " 1234567 ", t, None), None);
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(from_base32("mzxw 6ytb oi==").unwrap(), b"foobar");
        assert_eq!(from_base32("MZXW1"), None);
        let s = new_secret().unwrap();
        assert_eq!(s.expose().len(), SECRET_BYTES);
        assert_eq!(from_base32(&base32(s.expose())).unwrap(), *s.expose());
        let uri = provisioning_uri(b"foobar", "Keyhaven", "ana@keyhaven.test");
        assert_eq!(
            uri,
            "otpauth://totp/Keyhaven:ana@keyhaven.test?secret=MZXW6YTBOI&issuer=Keyhaven&algorithm=SHA1&digits=6&period=30"
        );
    }
}
