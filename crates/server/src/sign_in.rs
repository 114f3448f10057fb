//! Sign-in conditions at this node: the Conditional Access document (read
//! from the store on every evaluation, parsed again only when its bytes
//! change, so a policy written on any node applies to the next sign-in
//! everywhere), its evaluation for a token request, the sealing of users'
//! authenticator secrets, and the second-factor prompts the sign-in pages
//! have open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keyhaven_core::{Error, PrincipalKind, Sensitive};
use keyhaven_identity::conditional_access::{self as ca, apps, Document, Invalid, Outcome};
use keyhaven_identity::SignedIn;

use crate::state::AppState;

/// The setting holding the Conditional Access document (JSON).
pub const SETTING: &str = "conditional_access";
const CAS_ATTEMPTS: usize = 5;
/// How long a second-factor prompt stays open.
const PROMPT_SECS: i64 = 300;
/// Codes one prompt takes before it is closed.
const PROMPT_TRIES: u32 = 3;
/// Most prompts open on a node.
const MAX_PROMPTS: usize = 10_000;
/// Most prompts open for one user on a node.
const PROMPTS_PER_USER: usize = 5;

/// What a sign-in page does once the second factor is given.
#[derive(Debug, Clone)]
pub enum Continuation {
    /// Issue an authorization code for this request.
    Authorize {
        /// The checked authorization request.
        request: keyhaven_identity::authcode::Request,
        /// The client's `state`.
        state: Option<String>,
        /// Whether the response is a form post.
        form_post: bool,
    },
    /// Approve this device code.
    Device {
        /// The user code.
        code: String,
    },
}

/// An open second-factor prompt.
struct Prompt {
    who: SignedIn,
    then: Continuation,
    expires: i64,
    tries: u32,
}

/// This node's sign-in condition state.
#[derive(Default)]
pub struct SignInConditions {
    cached: Mutex<Option<(Vec<u8>, Arc<Document>)>>,
    methods_key: tokio::sync::OnceCell<Sensitive<Vec<u8>>>,
    prompts: Mutex<HashMap<String, Prompt>>,
}

impl SignInConditions {
    /// Opens a prompt for `who`; its ticket, or `None` when too many are open.
    pub fn open_prompt(&self, who: SignedIn, then: Continuation, now: i64) -> Option<String> {
        let mut prompts = self.prompts.lock().ok()?;
        if prompts.len() >= MAX_PROMPTS {
            prompts.retain(|_, p| p.expires > now);
            if prompts.len() >= MAX_PROMPTS {
                return None;
            }
        }
        // One user (whoever knows its password) holds a few at most, so it
        // cannot fill the node's prompts for everyone.
        let theirs = prompts
            .values()
            .filter(|p| p.expires > now && p.who.principal.object_id == who.principal.object_id)
            .count();
        if theirs >= PROMPTS_PER_USER {
            return None;
        }
        let mut raw = [0u8; 32];
        openssl::rand::rand_bytes(&mut raw).ok()?;
        let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        prompts.insert(
            ticket.clone(),
            Prompt {
                who,
                then,
                expires: now + PROMPT_SECS,
                tries: 0,
            },
        );
        Some(ticket)
    }

    /// The prompt of `ticket` for one more code: who and what next, counted
    /// as a try. `None` if unknown, expired or out of tries (then closed).
    pub fn try_prompt(&self, ticket: &str, now: i64) -> Option<(SignedIn, Continuation)> {
        let mut prompts = self.prompts.lock().ok()?;
        let p = prompts.get_mut(ticket)?;
        if p.expires <= now || p.tries >= PROMPT_TRIES {
            prompts.remove(ticket);
            return None;
        }
        p.tries += 1;
        Some((p.who.clone(), p.then.clone()))
    }

    /// Closes a prompt (its code was accepted, or the user is locked).
    pub fn close_prompt(&self, ticket: &str) {
        if let Ok(mut prompts) = self.prompts.lock() {
            prompts.remove(ticket);
        }
    }
}

/// The Conditional Access document as stored now (empty if none).
pub async fn document(st: &AppState) -> Result<Arc<Document>, Error> {
    let raw = st.store.get_setting(SETTING).await?.unwrap_or_default();
    let cond = &st.sign_in_conditions;
    if let Ok(c) = cond.cached.lock() {
        if let Some((bytes, doc)) = c.as_ref() {
            if *bytes == raw {
                return Ok(Arc::clone(doc));
            }
        }
    }
    let doc = if raw.is_empty() {
        Document::default()
    } else {
        serde_json::from_slice(&raw).map_err(|_| Error::Integrity)?
    };
    let doc = Arc::new(doc);
    if let Ok(mut c) = cond.cached.lock() {
        *c = Some((raw, Arc::clone(&doc)));
    }
    Ok(doc)
}

/// Changes the document with a compare-and-set (read again on a concurrent
/// change); `change` says what it made, or why the change is refused.
pub async fn update<T>(
    st: &AppState,
    mut change: impl FnMut(&mut Document) -> Result<T, Invalid>,
) -> Result<Result<T, Invalid>, Error> {
    for _ in 0..CAS_ATTEMPTS {
        let old = st.store.get_setting(SETTING).await?;
        let mut doc: Document = match &old {
            Some(raw) => serde_json::from_slice(raw).map_err(|_| Error::Integrity)?,
            None => Document::default(),
        };
        let made = match change(&mut doc) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let new = serde_json::to_vec(&doc).map_err(|_| Error::Integrity)?;
        let written = match &old {
            Some(raw) => st.store.replace_setting(SETTING, raw, &new).await?,
            None => st.store.put_setting_if_absent(SETTING, &new).await?,
        };
        if written {
            return Ok(Ok(made));
        }
    }
    Err(Error::Conflict(
        "Conditional Access changed concurrently; try again.".into(),
    ))
}

/// The application id of the resource a token is for.
pub fn resource_app(st: &AppState, audience: &str) -> &'static str {
    let e = &st.endpoints;
    if audience.eq_ignore_ascii_case(&e.vault_resource()) {
        apps::KEY_VAULT
    } else if audience.eq_ignore_ascii_case(&e.hsm_resource()) {
        apps::MANAGED_HSM
    } else if audience.eq_ignore_ascii_case(&e.graph_url()) {
        apps::GRAPH
    } else if audience.eq_ignore_ascii_case(&e.logs_url()) {
        apps::LOG_ANALYTICS
    } else {
        apps::ARM
    }
}

/// The client app type of a sign-in through `client_id`: the portal is a
/// browser application, every other public client (the Azure CLI, SDKs) a
/// desktop or mobile one, and a confidential client signs in as itself.
pub fn client_app_type(client_id: &str) -> &'static str {
    if client_id.eq_ignore_ascii_case(keyhaven_identity::directory::PORTAL_APP_ID) {
        "browser"
    } else {
        "mobileAppsAndDesktopClients"
    }
}

/// Evaluates Conditional Access for a sign-in about to get a token for
/// `audience`, as of `now` (when the request began: a password given in
/// this request is never older than the sign-in frequency).
pub async fn evaluate(
    st: &AppState,
    who: &SignedIn,
    audience: &str,
    client_id: &str,
    source: Option<IpAddr>,
    now: i64,
) -> Result<Outcome, Error> {
    let doc = document(st).await?;
    if doc.policies.is_empty() {
        return Ok(Outcome {
            decision: ca::Decision::Allow,
            applied: Vec::new(),
        });
    }
    let user = who.principal.kind == PrincipalKind::User;
    let roles = if user
        && doc.policies.iter().any(|p| {
            p.conditions
                .users
                .as_ref()
                .is_some_and(|u| !u.include_roles.is_empty() || !u.exclude_roles.is_empty())
        }) {
        let record = st
            .store
            .get_principal(&who.principal.object_id)
            .await?
            .ok_or(Error::Integrity)?;
        ca::role_template_ids(
            &keyhaven_identity::directory::PrincipalAttrs::of(&record).directory_roles,
        )
    } else {
        Vec::new()
    };
    let subject = if user {
        ca::Subject::User {
            object_id: &who.principal.object_id,
            groups: &who.groups,
            roles: &roles,
        }
    } else {
        ca::Subject::Workload {
            object_id: &who.principal.object_id,
        }
    };
    Ok(ca::evaluate(
        &doc,
        &ca::SignIn {
            subject,
            resource_app: resource_app(st, audience),
            client_app: client_id,
            client_app_type: client_app_type(client_id),
            ip: source,
            mfa: who.session.mfa(),
            auth_time: if who.session.auth_time > 0 {
                who.session.auth_time
            } else {
                now
            },
            now,
        },
    ))
}

/// The key sealing authenticator secrets (made on first use).
async fn methods_key(st: &AppState) -> Result<&Sensitive<Vec<u8>>, Error> {
    st.sign_in_conditions
        .methods_key
        .get_or_try_init(|| crate::methods_key::load_or_create(&st.store, &st.barrier))
        .await
}

fn method_aad(user_id: &str, method_id: &str) -> Vec<u8> {
    format!("totp:{user_id}:{method_id}").into_bytes()
}

/// A sealer and an opener of `user_id`'s method secrets, bound to the user
/// and the method (a sealed secret moved to another user does not open).
pub async fn method_crypto(
    st: &AppState,
    user_id: &str,
) -> Result<(MethodSeal, MethodOpen), Error> {
    let key = Arc::new(Sensitive::new(methods_key(st).await?.expose().clone()));
    let (k1, b1, u1) = (
        Arc::clone(&key),
        Arc::clone(&st.barrier),
        user_id.to_owned(),
    );
    let seal: MethodSeal = Box::new(move |id: &str, secret: &[u8]| {
        b1.seal_with(k1.expose(), &method_aad(&u1, id), secret)
            .ok()
            .map(|s| STANDARD.encode(s))
    });
    let (b2, u2) = (Arc::clone(&st.barrier), user_id.to_owned());
    let open: MethodOpen = Box::new(move |id: &str, sealed: &str| {
        let raw = STANDARD.decode(sealed).ok()?;
        b2.open_with(key.expose(), &method_aad(&u2, id), &raw).ok()
    });
    Ok((seal, open))
}

/// Seals a method secret.
pub type MethodSeal = Box<dyn Fn(&str, &[u8]) -> Option<String> + Send + Sync>;
/// Opens a method secret.
pub type MethodOpen = Box<dyn Fn(&str, &str) -> Option<Sensitive<Vec<u8>>> + Send + Sync>;

/// Checks a second-factor code of a user.
pub async fn check_code(
    st: &AppState,
    user_id: &str,
    code: &str,
) -> Result<(), keyhaven_identity::mfa::CodeFailure> {
    use keyhaven_identity::mfa::CodeFailure;
    let Ok((_, open)) = method_crypto(st, user_id).await else {
        return Err(CodeFailure::Unavailable);
    };
    keyhaven_identity::mfa::verify(&st.directory, user_id, code, &*open, st.clock.now()).await
}

/// Whether a user has a confirmed authenticator.
pub async fn has_method(st: &AppState, user_id: &str) -> Result<bool, Error> {
    Ok(st
        .store
        .get_principal(user_id)
        .await?
        .is_some_and(|p| keyhaven_identity::mfa::registered(&p)))
}

/// The sign-in audit properties of an evaluation, as Entra's sign-in logs
/// name them.
pub fn audit_properties(outcome: &Outcome) -> serde_json::Map<String, serde_json::Value> {
    let status = match &outcome.decision {
        ca::Decision::Allow if outcome.applied.iter().any(|a| a.result == "success") => "success",
        ca::Decision::Allow => "notApplied",
        _ => "failure",
    };
    let mut m = serde_json::Map::new();
    m.insert("conditionalAccessStatus".into(), status.into());
    m.insert(
        "appliedConditionalAccessPolicies".into(),
        serde_json::to_value(&outcome.applied).unwrap_or_default(),
    );
    m
}
