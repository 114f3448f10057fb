//! Conditional Access on the sign-in pages (browser authorization and the
//! device-code page): after the password, the policies are evaluated for
//! the resource asked for; a block ends the sign-in, a required second
//! factor opens a prompt for the code of the user's authenticator app, and
//! only then does the page issue its code or approve the device.

use std::net::IpAddr;

use http::StatusCode;
use keyhaven_identity::conditional_access::Decision;
use keyhaven_identity::mfa::CodeFailure;
use keyhaven_identity::token::Session;
use keyhaven_identity::SignedIn;

use axum::response::Response;

use crate::sign_in::Continuation;
use crate::state::AppState;

use super::authorize::{escape_html, form_page, sign_in_page};

const MFA_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyhaven sign-in</title>
<style>body{font-family:sans-serif;max-width:28em;margin:4em auto}label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em;font-size:1.3em;letter-spacing:.2em}button{margin-top:1em;padding:.5em 1.5em}.msg{padding:.6em;background:#eef}.who{color:#444}</style></head>
<body><h1>Verify your identity</h1><p class="who">{who}</p>{message}
<p>Your organization requires a second step to sign in to <strong>{resource}</strong>. Open your authenticator app and enter the code it shows for Keyhaven.</p>
<form method="post" action="{action}"><input type="hidden" name="mfa_ticket" value="{ticket}">
<label for="otc">Code</label><input id="otc" name="otc" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" autocomplete="one-time-code" autofocus required>
<button type="submit">Verify</button></form></body></html>"#;

/// What a sign-in page does next.
pub(super) enum Step {
    /// Go on: issue the code or approve the device, for this user.
    Continue(Box<SignedIn>, Continuation),
    /// Show this page.
    Page(Response),
}

fn refused(text: &str) -> Step {
    Step::Page(sign_in_page(
        StatusCode::BAD_REQUEST,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keyhaven sign-in</title></head><body><h1>You cannot sign in here</h1><p class=\"msg\">{}</p></body></html>",
            escape_html(text)
        ),
    ))
}

/// The code prompt. Its form's answer may redirect to where the sign-in
/// returns (an authorization request's redirect URI), so the page's policy
/// allows that as the password form's does.
fn prompt_page(
    who: &SignedIn,
    then: &Continuation,
    resource: &str,
    ticket: &str,
    action: &str,
    message: &str,
) -> Step {
    let body = MFA_PAGE
        .replace(
            "{who}",
            &escape_html(who.upn.as_deref().unwrap_or(&who.name)),
        )
        .replace("{resource}", &escape_html(resource))
        .replace("{ticket}", &escape_html(ticket))
        .replace("{action}", &escape_html(action))
        .replace("{message}", message);
    Step::Page(match then {
        Continuation::Authorize { request, .. } => {
            form_page(StatusCode::OK, body, &request.redirect_uri)
        }
        Continuation::Device { .. } => sign_in_page(StatusCode::OK, body),
    })
}

/// After a good password: evaluates Conditional Access for `audience` and
/// either goes on, refuses, or asks for the second factor.
pub(super) async fn after_password(
    st: &AppState,
    mut who: SignedIn,
    audience: &str,
    source: Option<IpAddr>,
    then: Continuation,
    action: &str,
) -> Step {
    let now = st.clock.now();
    who.session = Session {
        amr: vec!["pwd".into()],
        auth_time: now,
    };
    let client_id = who.principal.app_id.clone().unwrap_or_default();
    let outcome = match crate::sign_in::evaluate(st, &who, audience, &client_id, source, now).await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "conditional access could not be evaluated");
            return refused("The sign-in service is temporarily unavailable. Try again.");
        }
    };
    // Graph is where a user manages its authentication methods: a user
    // with an app gives its code there, so the token may change them.
    let decision = match outcome.decision {
        Decision::Allow
            if crate::sign_in::resource_app(st, audience)
                == keyhaven_identity::conditional_access::apps::GRAPH
                && crate::sign_in::has_method(st, &who.principal.object_id)
                    .await
                    .unwrap_or(false) =>
        {
            Decision::RequireMfa(Vec::new())
        }
        d => d,
    };
    match decision {
        Decision::Allow => Step::Continue(Box::new(who), then),
        Decision::Block(_) | Decision::Reauthenticate(_) => refused(
            "AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        ),
        Decision::RequireMfa(_) => {
            match crate::sign_in::has_method(st, &who.principal.object_id).await {
                Ok(true) => {}
                Ok(false) => return refused(
                    "AADSTS50079: Your organization requires multi-factor authentication for this resource, and you have no authenticator app registered. Register one (see Keyhaven's documentation: authentication methods) or ask an administrator.",
                ),
                Err(_) => {
                    return refused("The sign-in service is temporarily unavailable. Try again.")
                }
            }
            let Some(ticket) = st
                .sign_in_conditions
                .open_prompt(who.clone(), then.clone(), now)
            else {
                return refused("Too many sign-ins in progress; try again later.");
            };
            prompt_page(&who, &then, audience, &ticket, action, "")
        }
    }
}

/// A code typed on the prompt of `ticket`.
pub(super) async fn after_code(st: &AppState, ticket: &str, code: &str, action: &str) -> Step {
    let now = st.clock.now();
    let Some((mut who, then)) = st.sign_in_conditions.try_prompt(ticket, now) else {
        return refused("This sign-in has expired or had too many wrong codes. Start again.");
    };
    let resource = match &then {
        Continuation::Authorize { request, .. } => {
            super::audience_for(st, &request.scope).unwrap_or_default()
        }
        Continuation::Device { .. } => String::new(),
    };
    match crate::sign_in::check_code(st, &who.principal.object_id, code).await {
        Ok(()) => {
            st.sign_in_conditions.close_prompt(ticket);
            who.session.amr.push("mfa".into());
            Step::Continue(Box::new(who), then)
        }
        Err(CodeFailure::Wrong) => prompt_page(
            &who,
            &then,
            &resource,
            ticket,
            action,
            r#"<p class="msg">That code is not right, or was already used. Wait for a new code and try again.</p>"#,
        ),
        Err(CodeFailure::Locked(_)) => {
            st.sign_in_conditions.close_prompt(ticket);
            refused("AADSTS50053: Too many wrong codes. Your verification is locked for a few minutes; try again later.")
        }
        Err(CodeFailure::NotRegistered) => {
            st.sign_in_conditions.close_prompt(ticket);
            refused("AADSTS50079: You have no authenticator app registered.")
        }
        Err(CodeFailure::Unavailable) => {
            refused("The sign-in service is temporarily unavailable. Try again.")
        }
    }
}
