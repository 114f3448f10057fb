//! Portal sessions: who signed in, and the refresh token the portal holds for
//! them. A session lives in this node's memory only (a browser is sent back to
//! sign in when it reaches another node or after a restart), for at most
//! eight hours. The cookie carries a random 256-bit id; the map is keyed by
//! its SHA-256, so a memory dump of the map does not hand out cookies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyhaven_core::Sensitive;

/// How long a session lasts (absolute).
pub const SESSION_SECS: i64 = 8 * 3600;
/// How long a started sign-in may take.
const PENDING_SECS: i64 = 600;
/// Bounds on what one node keeps.
const MAX_SESSIONS: usize = 10_000;
const MAX_PENDING: usize = 10_000;
/// Sessions one user may hold at once.
const PER_USER: usize = 16;

/// A random URL-safe token of 32 bytes.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // A failing RNG leaves zeros; refuse to hand those out.
    if openssl::rand::rand_bytes(&mut b).is_err() {
        return String::new();
    }
    URL_SAFE_NO_PAD.encode(b)
}

fn digest(token: &str) -> Vec<u8> {
    openssl::sha::sha256(token.as_bytes()).to_vec()
}

/// A sign-in that went to the authorization endpoint and has not come back.
pub struct Pending {
    /// The PKCE verifier.
    pub verifier: Sensitive<String>,
    /// Where to go after signing in (a path of the portal).
    pub return_to: String,
    /// The SHA-256 of the sign-in cookie of the browser that started it: the
    /// callback completes only in that browser (no login CSRF).
    browser: Vec<u8>,
    created: i64,
}

/// The tokens of a session (behind an async lock: refresh tokens rotate, so
/// two refreshes must not race).
pub struct Tokens {
    /// The newest refresh token.
    pub refresh: Sensitive<String>,
    /// Access tokens by audience scope, with their expiry.
    pub access: HashMap<String, (Sensitive<String>, i64)>,
}

/// A signed-in user.
pub struct Session {
    /// Object id.
    pub oid: String,
    /// Display name.
    pub name: String,
    /// User principal name.
    pub upn: String,
    /// The token every state-changing request must echo.
    pub csrf: String,
    /// When it ends.
    pub expires: i64,
    /// Its tokens.
    pub tokens: tokio::sync::Mutex<Tokens>,
}

/// This node's portal sessions.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<Vec<u8>, Arc<Session>>>,
    pending: Mutex<HashMap<Vec<u8>, Pending>>,
}

impl Sessions {
    /// Records a started sign-in under its `state`, bound to the browser's
    /// sign-in cookie. When full, the oldest is dropped (a flood of sign-ins
    /// delays others' but cannot refuse them all).
    pub fn begin(
        &self,
        state: &str,
        browser: &str,
        verifier: String,
        return_to: String,
        now: i64,
    ) -> bool {
        let Ok(mut m) = self.pending.lock() else {
            return false;
        };
        m.retain(|_, p| p.created + PENDING_SECS > now);
        while m.len() >= MAX_PENDING {
            let Some(oldest) = m
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            m.remove(&oldest);
        }
        m.insert(
            digest(state),
            Pending {
                verifier: Sensitive::new(verifier),
                return_to,
                browser: digest(browser),
                created: now,
            },
        );
        true
    }

    /// Takes the sign-in started under `state` (once), if this is the
    /// browser that started it.
    pub fn finish(&self, state: &str, browser: &str, now: i64) -> Option<Pending> {
        let mut m = self.pending.lock().ok()?;
        let key = digest(state);
        // Another browser's attempt leaves it for the right one.
        let p = m.get(&key)?;
        if !openssl::memcmp::eq(&p.browser, &digest(browser)) {
            return None;
        }
        let p = m.remove(&key)?;
        (p.created + PENDING_SECS > now).then_some(p)
    }

    /// Opens a session; its cookie value, or `None` when full.
    pub fn open(&self, session: Session, now: i64) -> Option<String> {
        let cookie = random_token();
        if cookie.is_empty() || session.csrf.is_empty() {
            return None;
        }
        let mut m = self.live.lock().ok()?;
        m.retain(|_, s| s.expires > now);
        // One user holds a bounded number of sessions: the oldest goes.
        let mut mine: Vec<(Vec<u8>, i64)> = m
            .iter()
            .filter(|(_, s)| s.oid == session.oid)
            .map(|(k, s)| (k.clone(), s.expires))
            .collect();
        mine.sort_by_key(|(_, e)| *e);
        for (k, _) in mine.iter().take((mine.len() + 1).saturating_sub(PER_USER)) {
            m.remove(k);
        }
        if m.len() >= MAX_SESSIONS {
            return None;
        }
        m.insert(digest(&cookie), Arc::new(session));
        Some(cookie)
    }

    /// The live session of a cookie value.
    pub fn get(&self, cookie: &str, now: i64) -> Option<Arc<Session>> {
        let m = self.live.lock().ok()?;
        m.get(&digest(cookie))
            .filter(|s| s.expires > now)
            .map(Arc::clone)
    }

    /// Ends a session; the session, for revoking its tokens.
    pub fn close(&self, cookie: &str) -> Option<Arc<Session>> {
        self.live.lock().ok()?.remove(&digest(cookie))
    }

    /// Ends a session given by itself (its refresh failed for good).
    pub fn close_session(&self, session: &Arc<Session>) {
        if let Ok(mut m) = self.live.lock() {
            m.retain(|_, s| !Arc::ptr_eq(s, session));
        }
    }
}

impl Session {
    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, token: &str) -> bool {
        token.len() == self.csrf.len()
            && openssl::memcmp::eq(token.as_bytes(), self.csrf.as_bytes())
    }
}

/// The S256 challenge of a PKCE verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(openssl::sha::sha256(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: i64) -> Session {
        Session {
            oid: "o".into(),
            name: "n".into(),
            upn: "u".into(),
            csrf: random_token(),
            expires: now + SESSION_SECS,
            tokens: tokio::sync::Mutex::new(Tokens {
                refresh: Sensitive::new("r".into()),
                access: HashMap::new(),
            }),
        }
    }

    #[test]
    fn sessions_open_expire_and_close() {
        let s = Sessions::default();
        let cookie = s.open(session(100), 100).unwrap();
        assert!(s.get(&cookie, 101).is_some());
        assert!(s.get("another deployment's cookie", 101).is_none());
        assert!(s.get(&cookie, 100 + SESSION_SECS).is_none(), "expired");
        s.close(&cookie);
        assert!(s.get(&cookie, 101).is_none());
    }

    #[test]
    fn a_user_holds_a_bounded_number_of_sessions() {
        let s = Sessions::default();
        let cookies: Vec<_> = (0..PER_USER + 3)
            .map(|i| s.open(session(100 + i as i64), 100).unwrap())
            .collect();
        let live = cookies.iter().filter(|c| s.get(c, 101).is_some()).count();
        assert_eq!(live, PER_USER);
        assert!(s.get(&cookies[0], 101).is_none(), "the oldest went");
        assert!(s.get(cookies.last().unwrap(), 101).is_some());
    }

    #[test]
    fn a_sign_in_is_finished_once_by_the_browser_that_began_it() {
        let s = Sessions::default();
        assert!(s.begin("st", "mine", "v".into(), "/".into(), 10));
        assert!(s.finish("other", "mine", 11).is_none());
        assert!(s.finish("st", "mine", 11).is_some());
        assert!(s.finish("st", "mine", 11).is_none(), "once");
        assert!(s.begin("lured", "attacker", "v".into(), "/".into(), 10));
        assert!(
            s.finish("lured", "victim", 11).is_none(),
            "another browser cannot finish it"
        );
        assert!(s.begin("late", "mine", "v".into(), "/".into(), 10));
        assert!(
            s.finish("late", "mine", 10 + PENDING_SECS).is_none(),
            "too late"
        );
        let x = session(0);
        assert!(x.csrf_ok(&x.csrf.clone()));
        assert!(!x.csrf_ok(""));
        assert!(!x.csrf_ok(&x.csrf[1..]));
    }
}
