//! The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636), for
//! public clients on the user's own machine: `az login` and
//! `InteractiveBrowserCredential` open Keyhaven's sign-in page in a browser,
//! the page redirects to the client's loopback listener with a code, and the
//! client redeems the code once, proving with its PKCE verifier that it is the
//! client that asked. Codes live in memory on the node that issued them for
//! five minutes, like device codes.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::directory::SignedIn;

/// How long a code may be redeemed.
pub const AUTH_CODE_LIFETIME_SECS: i64 = 300;

/// Why a code was not redeemed (all are `invalid_grant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemError {
    /// Unknown, already redeemed, or issued to another client.
    Unknown,
    /// Past its lifetime.
    Expired,
    /// The redirect URI differs from the one the code was issued for.
    RedirectMismatch,
    /// The PKCE verifier does not match the challenge.
    VerifierMismatch,
}

/// A redeemed code: who signed in, the scope asked for, and the nonce to put
/// into the id token.
#[derive(Debug)]
pub struct Redeemed {
    /// Who signed in.
    pub who: SignedIn,
    /// The scope of the authorization request.
    pub scope: String,
    /// The authorization request's nonce.
    pub nonce: Option<String>,
}

/// What the authorization request asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The public client.
    pub client_id: String,
    /// Its loopback redirect URI.
    pub redirect_uri: String,
    /// The S256 PKCE challenge.
    pub code_challenge: String,
    /// Requested scopes.
    pub scope: String,
    /// The OpenID nonce, if any.
    pub nonce: Option<String>,
}

#[derive(Debug)]
struct Pending {
    request: Request,
    expires: i64,
    who: SignedIn,
}

/// Outstanding authorization codes.
#[derive(Debug, Default)]
pub struct AuthCodes {
    pending: Mutex<HashMap<String, Pending>>,
}

impl AuthCodes {
    /// No codes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a code for `who`, who signed in for `request`.
    pub fn issue(&self, request: Request, who: SignedIn, now: i64) -> Option<String> {
        let mut map = self.pending.lock().ok()?;
        if !crate::device::make_room(&mut map, |p| p.expires, now) {
            return None;
        }
        let code = crate::device::random_code()?;
        map.insert(
            code.clone(),
            Pending {
                request,
                expires: now + AUTH_CODE_LIFETIME_SECS,
                who,
            },
        );
        Some(code)
    }

    /// Redeems a code. Any attempt consumes it, right or wrong, so a stolen
    /// code is good for one guess at most.
    pub fn redeem(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: &str,
        now: i64,
    ) -> Result<Redeemed, RedeemError> {
        let p = self
            .pending
            .lock()
            .map_err(|_| RedeemError::Unknown)?
            .remove(code)
            .ok_or(RedeemError::Unknown)?;
        if p.request.client_id != client_id {
            return Err(RedeemError::Unknown);
        }
        if p.expires <= now {
            return Err(RedeemError::Expired);
        }
        if p.request.redirect_uri != redirect_uri {
            return Err(RedeemError::RedirectMismatch);
        }
        if !pkce_matches(verifier, &p.request.code_challenge) {
            return Err(RedeemError::VerifierMismatch);
        }
        Ok(Redeemed {
            who: p.who,
            scope: p.request.scope,
            nonce: p.request.nonce,
        })
    }
}

/// Whether `verifier` (43–128 unreserved characters) hashes to `challenge`
/// under S256; compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let Ok(digest) =
        openssl::hash::hash(openssl::hash::MessageDigest::sha256(), verifier.as_bytes())
    else {
        return false;
    };
    let computed = URL_SAFE_NO_PAD.encode(digest);
    computed.len() == challenge.len()
        && openssl::memcmp::eq(computed.as_bytes(), challenge.as_bytes())
}

/// Whether a PKCE challenge is well formed (S256: 43 base64url characters).
pub fn challenge_well_formed(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Whether `uri` is a loopback redirect a public client on the user's machine
/// listens on: `http://localhost`, `http://127.0.0.1` or `http://[::1]`, any
/// port and path, no user info, query or fragment (RFC 8252 §7.3).
pub fn loopback_redirect(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("http://") else {
        return false;
    };
    if uri.len() > 512
        || rest.contains(['?', '#', '@', '\\'])
        || rest.chars().any(char::is_whitespace)
    {
        return false;
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, port)) if port.is_empty() || port.starts_with(':') => {
                return h == "::1" && port_ok(port.trim_start_matches(':'), port.is_empty());
            }
            _ => return false,
        },
        None => authority,
    };
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    (name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1")
        && port.is_none_or(|p| port_ok(p, false))
}

fn port_ok(port: &str, absent: bool) -> bool {
    absent || (!port.is_empty() && port.len() <= 5 && port.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    // RFC 7636 appendix B.
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn who() -> SignedIn {
        crate::testing::user()
    }

    fn request() -> Request {
        Request {
            client_id: "cli".into(),
            redirect_uri: "http://localhost:4000".into(),
            code_challenge: CHALLENGE.into(),
            scope: "s".into(),
            nonce: Some("n".into()),
        }
    }

    #[test]
    fn rfc7636_example_verifies() {
        assert!(challenge_well_formed(CHALLENGE));
        assert!(pkce_matches(VERIFIER, CHALLENGE));
        assert!(!pkce_matches(&VERIFIER.replace('d', "e"), CHALLENGE));
        assert!(!pkce_matches("short", CHALLENGE));
    }

    #[test]
    fn a_code_is_redeemed_once_by_its_client_with_its_verifier() {
        let c = AuthCodes::new();
        let code = c.issue(request(), who(), 100).unwrap();
        let r = c
            .redeem(&code, "cli", "http://localhost:4000", VERIFIER, 101)
            .unwrap();
        assert_eq!((r.scope.as_str(), r.nonce.as_deref()), ("s", Some("n")));
        assert_eq!(
            c.redeem(&code, "cli", "http://localhost:4000", VERIFIER, 101)
                .unwrap_err(),
            RedeemError::Unknown
        );
    }

    #[test]
    fn every_wrong_attempt_burns_the_code() {
        let c = AuthCodes::new();
        for (client, redirect, verifier, now, want) in [
            (
                "other",
                "http://localhost:4000",
                VERIFIER,
                101,
                RedeemError::Unknown,
            ),
            (
                "cli",
                "http://localhost:4001",
                VERIFIER,
                101,
                RedeemError::RedirectMismatch,
            ),
            (
                "cli",
                "http://localhost:4000",
                &"a".repeat(43),
                101,
                RedeemError::VerifierMismatch,
            ),
            (
                "cli",
                "http://localhost:4000",
                VERIFIER,
                100 + AUTH_CODE_LIFETIME_SECS,
                RedeemError::Expired,
            ),
        ] {
            let code = c.issue(request(), who(), 100).unwrap();
            assert_eq!(
                c.redeem(&code, client, redirect, verifier, now)
                    .unwrap_err(),
                want
            );
            assert_eq!(
                c.redeem(&code, "cli", "http://localhost:4000", VERIFIER, 101)
                    .unwrap_err(),
                RedeemError::Unknown
            );
        }
    }

    #[test]
    fn only_loopback_redirects() {
        for ok in [
            "http://localhost",
            "http://localhost:8400",
            "http://localhost:8400/",
            "http://127.0.0.1:1/cb",
            "http://[::1]:5000",
            "http://LOCALHOST:65535",
        ] {
            assert!(loopback_redirect(ok), "{ok}");
        }
        for bad in [
            "https://localhost:8400",
            "http://localhost.evil.example",
            "http://evil.example/localhost",
            "http://localhost@evil.example",
            "http://localhost:8400?x=1",
            "http://localhost:8400#f",
            "http://localhost:0",
            "http://localhost:99999",
            "http://localhost:",
            "http://[::2]:80",
            "http://127.0.0.2",
            "javascript:alert(1)",
            "",
        ] {
            assert!(!loopback_redirect(bad), "{bad}");
        }
    }
}
