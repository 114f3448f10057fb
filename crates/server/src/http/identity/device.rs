//! The device-code flow: the device's request, and the two-step page where
//! a person signs in and confirms.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::StatusCode;
use keyhaven_core::Sensitive;
use keyhaven_identity::device::{DEVICE_CODE_LIFETIME_SECS, POLL_INTERVAL_SECS};
use keyhaven_wire::oauth::{DeviceCodeRequest, DeviceCodeResponse, DeviceLoginForm};

use crate::http::extract::read_body;
use crate::http::response::ok;
use crate::state::AppState;

use super::authorize::{escape_html, form_sign_in};
use super::mfa_prompt;
use super::token::{bad_request, sign_in_error, too_many, Source};
use super::{audience_for, is_our_tenant, oauth_error, tenant_not_found};
use crate::sign_in::Continuation;

pub(super) async fn device_code(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    Source(source): Source,
    body: Body,
) -> Response {
    if !is_our_tenant(&st, &tenant) {
        return tenant_not_found(&st, &tenant);
    }
    if let Err(wait) = st.sign_in_limiter.admit(source, st.clock.now()) {
        return too_many(&st, wait);
    }
    let Ok(bytes) = read_body(body).await else {
        return bad_request(
            &st,
            "invalid_request",
            900144,
            "The request body is too large.",
        );
    };
    let Ok(form) = serde_urlencoded::from_bytes::<DeviceCodeRequest>(&bytes) else {
        return bad_request(
            &st,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    };
    let Some(client_id) = form.client_id else {
        return bad_request(
            &st,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(scope) = form.scope.filter(|s| audience_for(&st, s).is_some()) else {
        return bad_request(
            &st,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        );
    };
    match st.directory.is_public_client(&client_id).await {
        Ok(true) => {}
        Ok(false) => {
            return bad_request(
                &st,
                "invalid_client",
                7000218,
                "The application must be a public client to use the device code flow.",
            );
        }
        Err(f) => return sign_in_error(&st, f, &client_id),
    }
    let Some(issued) = st
        .device_codes
        .issue(&client_id, &scope, st.clock.now(), source)
    else {
        return oauth_error(
            &st,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90033,
            "Too many pending device codes; try again later.",
        );
    };
    let verification_uri = format!("{}/device", st.tokens.authority());
    ok(&DeviceCodeResponse {
        message: format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the code {} to authenticate.",
            issued.user_code
        ),
        user_code: issued.user_code,
        device_code: issued.device_code,
        verification_uri,
        expires_in: DEVICE_CODE_LIFETIME_SECS,
        interval: POLL_INTERVAL_SECS,
    })
}

pub(super) const DEVICE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyhaven sign-in</title>
<style>body{font-family:sans-serif;max-width:28em;margin:4em auto}label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em}button{margin-top:1em;padding:.5em 1.5em}.msg{padding:.6em;background:#eef}</style></head>
<body><h1>Sign in to a device</h1>{message}
<form method="post" action="/device">
<label for="code">Code shown on the device</label><input id="code" name="code" autocomplete="off" required>
<button type="submit">Next</button></form></body></html>"#;

/// The second step: what is being approved, then the credentials.
pub(super) const DEVICE_CONFIRM_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyhaven sign-in</title>
<style>body{font-family:sans-serif;max-width:28em;margin:4em auto}label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em}button{margin-top:1em;padding:.5em 1.5em}.msg{padding:.6em;background:#eef}.ask{padding:.6em;border:1px solid #99a}</style></head>
<body><h1>Sign in to a device</h1>{message}
<p class="ask">The application <strong>{app}</strong> ({client}) on the device asks to act as you on <strong>{resource}</strong>. Sign in only if you started this on a device you trust.</p>
<form method="post" action="/device"><input type="hidden" name="code" value="{code}"><input type="hidden" name="confirm" value="yes">
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in and approve</button></form></body></html>"#;

/// An HTML page of the login plane, with its content security policy; never
/// framed.
pub(super) fn html_page(status: StatusCode, body: String, csp: http::HeaderValue) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", csp);
    r
}

pub(super) fn html(status: StatusCode, message: &str) -> Response {
    // The page takes a password: its form posts only here.
    html_page(
        status,
        DEVICE_PAGE.replace("{message}", message),
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    )
}

/// The page naming the application and resource a device code asks for.
pub(super) async fn device_confirm_page(
    st: &AppState,
    code: &str,
    client_id: &str,
    scope: &str,
) -> Response {
    let app = match st.store.application_by_app_id(client_id).await {
        Ok(Some(a)) => a.display_name,
        _ => "an unnamed application".to_owned(),
    };
    let resource = audience_for(st, scope).unwrap_or_else(|| scope.to_owned());
    html_page(
        StatusCode::OK,
        DEVICE_CONFIRM_PAGE
            .replace("{message}", "")
            .replace("{app}", &escape_html(&app))
            .replace("{client}", &escape_html(client_id))
            .replace("{resource}", &escape_html(&resource))
            .replace("{code}", &escape_html(code)),
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    )
}

pub(super) async fn device_page() -> Response {
    html(StatusCode::OK, "")
}

pub(super) async fn device_login(
    State(st): State<AppState>,
    Source(source): Source,
    body: Body,
) -> Response {
    let fail = |text: &str| {
        html(
            StatusCode::BAD_REQUEST,
            &format!(r#"<p class="msg">{text}</p>"#),
        )
    };
    // Before the code is looked up: user codes are short, so guessing them
    // is limited per source like sign-ins are.
    if st.sign_in_limiter.admit(source, st.clock.now()).is_err() {
        return fail("Too many requests from this address. Try again later.");
    }
    let Ok(bytes) = read_body(body).await else {
        return fail("The form is too large.");
    };
    let Ok(form) = serde_urlencoded::from_bytes::<DeviceLoginForm>(&bytes) else {
        return fail("The form could not be read.");
    };
    let password = form.password.map(Sensitive::new);
    if let Some(ticket) = form.mfa_ticket.as_deref() {
        let step =
            mfa_prompt::after_code(&st, ticket, form.otc.as_deref().unwrap_or(""), "/device").await;
        return finish_device(&st, step);
    }
    let Some(code) = form.code else {
        return fail("Enter the code shown on the device.");
    };
    let now = st.clock.now();
    let Some((client_id, scope)) = st.device_codes.request_of(&code, now) else {
        return fail(
            "That code is not valid or has expired. Check the code on the device and try again.",
        );
    };
    // First the page says which application asks for what; credentials
    // are taken only on the page that said it.
    let confirmed = form.confirm.as_deref() == Some("yes");
    let (true, Some(username), Some(password)) = (confirmed, form.username, password) else {
        return device_confirm_page(&st, &code, &client_id, &scope).await;
    };
    match form_sign_in(&st, &client_id, &username, password, source, now).await {
        Ok(who) => {
            let audience = audience_for(&st, &scope).unwrap_or_default();
            let then = Continuation::Device { code };
            let step =
                mfa_prompt::after_password(&st, who, &audience, source, then, "/device").await;
            finish_device(&st, step)
        }
        Err(text) => fail(text),
    }
}

/// Approves the device code of a sign-in that passed (or shows the page a
/// step asks for).
fn finish_device(st: &AppState, step: mfa_prompt::Step) -> Response {
    let (who, then) = match step {
        mfa_prompt::Step::Continue(who, then) => (*who, then),
        mfa_prompt::Step::Page(r) => return r,
    };
    let Continuation::Device { code } = then else {
        return html(
            StatusCode::BAD_REQUEST,
            r#"<p class="msg">This sign-in was not started here.</p>"#,
        );
    };
    if st.device_codes.approve(&code, who, st.clock.now()) {
        html(
            StatusCode::OK,
            r#"<p class="msg">You have signed in. You can close this window and return to the device.</p>"#,
        )
    } else {
        html(
            StatusCode::BAD_REQUEST,
            r#"<p class="msg">That code is not valid or has expired.</p>"#,
        )
    }
}
