//! Users' second factor: software OATH (TOTP) methods kept in the user's
//! attributes, their registration (a new secret, confirmed by a first code),
//! and the check of a code at sign-in. Every change is a compare-and-set on
//! the user, so two nodes checking the same code at once accept it once, and
//! wrong codes are counted across nodes: after [`MAX_FAILURES`] in a row the
//! user's codes are refused for [`LOCK_SECS`]. The secret is stored sealed;
//! the caller seals and opens it (this crate holds no key).

use keyhaven_core::directory::PrincipalRecord;
use keyhaven_core::{PrincipalKind, Sensitive};
use serde::{Deserialize, Serialize};

use crate::directory::{DirResult, Directory, DirectoryError, PrincipalAttrs};
use crate::totp;

/// Wrong codes in a row before codes are refused for a while.
pub const MAX_FAILURES: u32 = 5;
/// How long codes are refused after that.
pub const LOCK_SECS: i64 = 300;
/// Most methods a user keeps.
pub const MAX_METHODS: usize = 5;
/// How long a registration waits for its first code.
pub const PENDING_SECS: i64 = 600;

/// A user's methods and failure count (the `mfa` member of its attributes).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MfaState {
    /// Registered (and pending) methods.
    #[serde(default)]
    pub methods: Vec<TotpMethod>,
    /// Wrong codes in a row.
    #[serde(default)]
    pub failures: u32,
    /// Until when codes are refused (Unix s).
    #[serde(default)]
    pub locked_until: i64,
    /// Locks in a row (each one twice as long as the one before), until a
    /// right code.
    #[serde(default)]
    pub locks: u32,
}

/// How long the `n`th lock in a row lasts: 5 minutes, doubling, at most a day.
pub fn lock_secs(n: u32) -> i64 {
    (LOCK_SECS << n.min(9)).min(86_400)
}

/// One software OATH method.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TotpMethod {
    /// Its id (a GUID).
    pub id: String,
    /// The secret, sealed by the caller (base64).
    pub sealed: String,
    /// When it was registered.
    pub created: i64,
    /// The last time step a code was accepted for.
    #[serde(default)]
    pub last_step: Option<i64>,
    /// False until the first code confirms it.
    #[serde(default)]
    pub verified: bool,
}

/// Why a code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeFailure {
    /// The user has no confirmed method.
    NotRegistered,
    /// Wrong, replayed or out of its time window.
    Wrong,
    /// Too many wrong codes: refused until this time.
    Locked(i64),
    /// The store failed.
    Unavailable,
}

/// Opens a sealed method secret (`None` if it does not open).
pub type Open<'a> = &'a (dyn Fn(&str, &str) -> Option<Sensitive<Vec<u8>>> + Send + Sync);

/// A user's state (none for other principals or unreadable attributes).
pub fn state_of(p: &PrincipalRecord) -> MfaState {
    PrincipalAttrs::of(p).mfa.unwrap_or_default()
}

fn set_state(p: &mut PrincipalRecord, state: MfaState) -> DirResult<()> {
    let mut attrs: serde_json::Value = if p.attrs.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&p.attrs).map_err(|_| {
            DirectoryError::BadRequest("The principal's attributes cannot be read.".into())
        })?
    };
    let obj = attrs.as_object_mut().ok_or_else(|| {
        DirectoryError::BadRequest("The principal's attributes cannot be read.".into())
    })?;
    if state == MfaState::default() {
        obj.remove("mfa");
    } else {
        obj.insert(
            "mfa".into(),
            serde_json::to_value(&state)
                .map_err(|_| DirectoryError::BadRequest("unserializable".into()))?,
        );
    }
    p.attrs = attrs.to_string();
    Ok(())
}

fn user(p: &PrincipalRecord) -> DirResult<()> {
    if p.kind == PrincipalKind::User.as_str() {
        Ok(())
    } else {
        Err(DirectoryError::BadRequest(
            "Authentication methods belong to users.".into(),
        ))
    }
}

/// Starts a registration: a new secret, sealed by `seal(method id, secret)`,
/// kept unconfirmed until a first code. An earlier unconfirmed one is
/// replaced. Returns the method id and the secret (shown to the user once).
pub async fn begin(
    dir: &Directory,
    user_id: &str,
    seal: &(dyn Fn(&str, &[u8]) -> Option<String> + Send + Sync),
    now: i64,
) -> DirResult<(String, Sensitive<Vec<u8>>)> {
    let secret = totp::new_secret()
        .map_err(|_| DirectoryError::BadRequest("The random generator failed.".into()))?;
    let id = uuid::Uuid::new_v4().to_string();
    let sealed = seal(&id, secret.expose())
        .ok_or_else(|| DirectoryError::BadRequest("The method could not be sealed.".into()))?;
    dir.modify_principal(user_id, |p| {
        user(p)?;
        let mut st = state_of(p);
        st.methods.retain(|m| m.verified);
        if st.methods.len() >= MAX_METHODS {
            return Err(DirectoryError::BadRequest(format!(
                "A user keeps at most {MAX_METHODS} authenticator apps; delete one first."
            )));
        }
        st.methods.push(TotpMethod {
            id: id.clone(),
            sealed: sealed.clone(),
            created: now,
            last_step: None,
            verified: false,
        });
        set_state(p, st)?;
        Ok(true)
    })
    .await?;
    Ok((id, secret))
}

/// Confirms a pending registration with its first code (counted like a
/// sign-in code: wrong ones lock).
pub async fn confirm(
    dir: &Directory,
    user_id: &str,
    method_id: &str,
    code: &str,
    open: Open<'_>,
    now: i64,
) -> DirResult<Result<(), CodeFailure>> {
    check(dir, user_id, code, open, now, Some(method_id)).await
}

/// Checks a sign-in code against the user's confirmed methods.
pub async fn verify(
    dir: &Directory,
    user_id: &str,
    code: &str,
    open: Open<'_>,
    now: i64,
) -> Result<(), CodeFailure> {
    match check(dir, user_id, code, open, now, None).await {
        Ok(r) => r,
        Err(DirectoryError::Store(_) | DirectoryError::Conflict(_)) => {
            Err(CodeFailure::Unavailable)
        }
        Err(_) => Err(CodeFailure::NotRegistered),
    }
}

async fn check(
    dir: &Directory,
    user_id: &str,
    code: &str,
    open: Open<'_>,
    now: i64,
    pending: Option<&str>,
) -> DirResult<Result<(), CodeFailure>> {
    let mut outcome = Err(CodeFailure::Wrong);
    dir.modify_principal(user_id, |p| {
        user(p)?;
        let mut st = state_of(p);
        if st.locked_until > now {
            outcome = Err(CodeFailure::Locked(st.locked_until));
            return Ok(false);
        }
        let candidates: Vec<usize> = st
            .methods
            .iter()
            .enumerate()
            .filter(|(_, m)| match pending {
                Some(id) => m.id == id && !m.verified && now - m.created <= PENDING_SECS,
                None => m.verified,
            })
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            if pending.is_some() {
                return Err(DirectoryError::NotFound(
                    "No pending registration with that id; start again.".into(),
                ));
            }
            outcome = Err(CodeFailure::NotRegistered);
            return Ok(false);
        }
        let mut accepted = None;
        for i in candidates {
            let Some(m) = st.methods.get(i) else { continue };
            let Some(secret) = open(&m.id, &m.sealed) else {
                continue;
            };
            if let Some(step) = totp::verify(secret.expose(), code, now, m.last_step) {
                accepted = Some((i, step));
                break;
            }
        }
        match accepted.and_then(|(i, step)| st.methods.get_mut(i).map(|m| (m, step))) {
            Some((m, step)) => {
                m.last_step = Some(step);
                m.verified = true;
                // Confirming a new app proves nothing about the user's
                // existing ones: only a sign-in code clears the count.
                if pending.is_none() {
                    st.failures = 0;
                    st.locks = 0;
                }
                outcome = Ok(());
            }
            None => {
                st.failures += 1;
                if st.failures >= MAX_FAILURES {
                    st.failures = 0;
                    st.locked_until = now + lock_secs(st.locks);
                    st.locks = st.locks.saturating_add(1);
                    outcome = Err(CodeFailure::Locked(st.locked_until));
                } else {
                    outcome = Err(CodeFailure::Wrong);
                }
            }
        }
        set_state(p, st)?;
        Ok(true)
    })
    .await?;
    Ok(outcome)
}

/// The user's confirmed methods.
pub async fn list(dir: &Directory, user_id: &str) -> DirResult<Vec<TotpMethod>> {
    let p = dir.user(user_id).await?;
    Ok(state_of(&p)
        .methods
        .into_iter()
        .filter(|m| m.verified)
        .collect())
}

/// Whether the user has a confirmed method.
pub fn registered(p: &PrincipalRecord) -> bool {
    state_of(p).methods.iter().any(|m| m.verified)
}

/// Whether a second factor given at `auth_time` still stands: some method
/// confirmed then is still registered (an administrator's reset, or the
/// deletion of the app used, ends it).
pub fn still_stands(p: &PrincipalRecord, auth_time: i64) -> bool {
    state_of(p)
        .methods
        .iter()
        .any(|m| m.verified && m.created <= auth_time)
}

/// Deletes one method; false if there was none with that id.
pub async fn delete(dir: &Directory, user_id: &str, method_id: &str) -> DirResult<bool> {
    let mut found = false;
    dir.modify_principal(user_id, |p| {
        user(p)?;
        let mut st = state_of(p);
        let before = st.methods.len();
        st.methods.retain(|m| m.id != method_id);
        found = st.methods.len() != before;
        if !found {
            return Ok(false);
        }
        set_state(p, st)?;
        Ok(true)
    })
    .await?;
    Ok(found)
}
