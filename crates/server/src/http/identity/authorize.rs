//! Browser sign-in at the authorization endpoint (authorization code with
//! PKCE, `query` or `form_post` responses).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use base64::Engine as _;
use http::StatusCode;
use keyhaven_core::Sensitive;
use keyhaven_identity::authcode::{self};
use keyhaven_identity::SignInFailure;
use keyhaven_wire::oauth::AuthorizeParams;

use std::net::IpAddr;

use crate::http::extract::read_body;
use crate::state::AppState;

use super::device::html_page;
use super::mfa_prompt;
use super::token::{guessed_wrong, Source};
use super::{audience_for, is_our_tenant};
use crate::sign_in::Continuation;

/// Signs a user in from a sign-in page's form (device verification or
/// authorization), with the password grant's lockout; on failure, the
/// sentence the page shows.
pub(super) async fn form_sign_in(
    st: &AppState,
    client_id: &str,
    username: &str,
    password: Sensitive<String>,
    source: Option<IpAddr>,
    now: i64,
) -> Result<keyhaven_identity::directory::SignedIn, &'static str> {
    if st.sign_in_limiter.admit(source, now).is_err() {
        return Err("Too many requests from this address. Try again later.");
    }
    if st.lockout.is_locked(username, source, now, true) {
        return Err("Too many failed sign-ins. Try again later.");
    }
    match st
        .directory
        .sign_in_with_password(client_id, username, password)
        .await
    {
        Ok(mut who) => {
            st.lockout.record_success(username, source);
            who.principal.app_id = Some(client_id.to_owned());
            Ok(who)
        }
        Err(f) => {
            if guessed_wrong(f) {
                st.lockout.record_failure(username, source, now);
            }
            Err(match f {
                SignInFailure::UserDisabled => "Your account is disabled.",
                _ => "The user name or password is incorrect.",
            })
        }
    }
}

// ---------------- authorization code (browser sign-in) ----------------

pub(super) const AUTHORIZE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyhaven sign-in</title>
<style>body{font-family:sans-serif;max-width:28em;margin:4em auto}label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em}button{margin-top:1em;padding:.5em 1.5em}.msg{padding:.6em;background:#eef}</style></head>
<body><h1>Sign in</h1>{message}
<form method="post" action="{action}">{hidden}
<label for="username">User name</label><input id="username" name="username" value="{hint}" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></body></html>"#;

pub(super) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML page that takes a password: never framed or cached; its form may
/// post only here, and the redirect after it only to a loopback listener.
pub(super) fn sign_in_page(status: StatusCode, body: String) -> Response {
    no_store(html_page(
        status,
        body,
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http://localhost:* http://127.0.0.1:* http://[::1]:*; frame-ancestors 'none'"),
    ))
}

/// The sign-in form of an authorization request: as `sign_in_page`, and
/// the redirect may also go to the portal's origin when that is where the
/// request returns (only the portal's client may name it).
pub(super) fn form_page(status: StatusCode, body: String, redirect_uri: &str) -> Response {
    let Some(origin) = redirect_uri
        .strip_prefix("https://")
        .and_then(|r| r.split('/').next())
    else {
        return sign_in_page(status, body);
    };
    let csp = format!("default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https://{origin} http://localhost:* http://127.0.0.1:* http://[::1]:*; frame-ancestors 'none'");
    match http::HeaderValue::from_str(&csp) {
        Ok(v) => no_store(html_page(status, body, v)),
        Err(_) => sign_in_page(status, body),
    }
}

pub(super) fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

pub(super) fn authorize_error(text: &str) -> Response {
    sign_in_page(
        StatusCode::BAD_REQUEST,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keyhaven sign-in</title></head><body><h1>Sign-in request refused</h1><p>{}</p></body></html>",
            escape_html(text)
        ),
    )
}

/// A checked authorization request.
pub(super) struct Authorize {
    request: authcode::Request,
    state: Option<String>,
    form_post: bool,
}

/// Checks an authorization request. Nothing is redirected until the client
/// and its redirect URI are known good, so a bad request is an error page.
pub(super) async fn check_authorize(
    st: &AppState,
    tenant: &str,
    p: &AuthorizeParams,
) -> Result<Authorize, Response> {
    if !is_our_tenant(st, tenant) {
        return Err(authorize_error(&format!(
            "AADSTS90002: Tenant '{}' not found.",
            tenant.chars().take(64).collect::<String>()
        )));
    }
    let Some(client_id) = p.client_id.as_deref() else {
        return Err(authorize_error(
            "AADSTS900144: The request must contain 'client_id'.",
        ));
    };
    match st.directory.is_public_client(client_id).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(authorize_error(
                "AADSTS7000218: Only public client applications sign users in here.",
            ))
        }
        Err(_) => {
            return Err(authorize_error(
                "AADSTS700016: The application was not found in the directory.",
            ))
        }
    }
    // The portal's client returns only to the portal's callback; other
    // public clients only to a loopback listener on the user's machine.
    let portal = client_id == keyhaven_identity::directory::PORTAL_APP_ID;
    let Some(redirect_uri) = p.redirect_uri.as_deref().filter(|r| {
        if portal {
            *r == st.endpoints.portal_callback()
        } else {
            authcode::loopback_redirect(r)
        }
    }) else {
        return Err(authorize_error(if portal {
            "AADSTS50011: The redirect URI does not match the portal's reply address."
        } else {
            "AADSTS50011: The redirect URI must be a loopback address (http://localhost:PORT) of the application on this machine."
        }));
    };
    if p.response_type.as_deref() != Some("code") {
        return Err(authorize_error(
            "AADSTS70007: Only response_type=code is supported.",
        ));
    }
    let Some(challenge) = p.code_challenge.as_deref().filter(|c| {
        authcode::challenge_well_formed(c) && p.code_challenge_method.as_deref() == Some("S256")
    }) else {
        return Err(authorize_error(
            "AADSTS9002325: Proof Key for Code Exchange (S256) is required.",
        ));
    };
    let Some(scope) = p.scope.as_deref().filter(|s| audience_for(st, s).is_some()) else {
        return Err(authorize_error(
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        ));
    };
    let form_post = match p.response_mode.as_deref() {
        None | Some("query") => false,
        Some("form_post") => true,
        Some(_) => {
            return Err(authorize_error(
                "AADSTS900144: response_mode must be query or form_post.",
            ))
        }
    };
    let bounded = |v: &Option<String>| v.as_deref().filter(|s| s.len() <= 1024).map(str::to_owned);
    Ok(Authorize {
        request: authcode::Request {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: challenge.to_owned(),
            scope: scope.to_owned(),
            nonce: bounded(&p.nonce),
        },
        state: bounded(&p.state),
        form_post,
    })
}

pub(super) fn authorize_form(tenant: &str, a: &Authorize, hint: &str, message: &str) -> String {
    let mut hidden = String::new();
    let mut field = |name: &str, value: &str| {
        hidden.push_str(&format!(
            r#"<input type="hidden" name="{name}" value="{}">"#,
            escape_html(value)
        ));
    };
    field("client_id", &a.request.client_id);
    field("response_type", "code");
    field("redirect_uri", &a.request.redirect_uri);
    field("scope", &a.request.scope);
    field("code_challenge", &a.request.code_challenge);
    field("code_challenge_method", "S256");
    if let Some(n) = &a.request.nonce {
        field("nonce", n);
    }
    if let Some(s) = &a.state {
        field("state", s);
    }
    if a.form_post {
        field("response_mode", "form_post");
    }
    AUTHORIZE_PAGE
        .replace(
            "{action}",
            &escape_html(&format!("/{tenant}/oauth2/v2.0/authorize")),
        )
        .replace("{hidden}", &hidden)
        .replace("{hint}", &escape_html(hint))
        .replace("{message}", message)
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: the sign-in page.
pub(super) async fn authorize_page(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let p: AuthorizeParams =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    match check_authorize(&st, &tenant, &p).await {
        Ok(a) => form_page(
            StatusCode::OK,
            authorize_form(&tenant, &a, p.login_hint.as_deref().unwrap_or(""), ""),
            &a.request.redirect_uri,
        ),
        Err(r) => r,
    }
}

/// `POST /{tenant}/oauth2/v2.0/authorize`: signs the user in and redirects to
/// the client's loopback listener with a code (or shows the form again).
pub(super) async fn authorize_login(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    Source(source): Source,
    body: Body,
) -> Response {
    let Ok(bytes) = read_body(body).await else {
        return authorize_error("The form is too large.");
    };
    let Ok(mut p) = serde_urlencoded::from_bytes::<AuthorizeParams>(&bytes) else {
        return authorize_error("The form could not be read.");
    };
    let action = format!("/{tenant}/oauth2/v2.0/authorize");
    if let Some(ticket) = p.mfa_ticket.as_deref() {
        if !is_our_tenant(&st, &tenant) {
            return authorize_error("AADSTS90002: Tenant not found.");
        }
        let step =
            mfa_prompt::after_code(&st, ticket, p.otc.as_deref().unwrap_or(""), &action).await;
        return continue_authorize(&st, step);
    }
    let a = match check_authorize(&st, &tenant, &p).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let password = p.password.take().map(Sensitive::new);
    let username = p.username.take().unwrap_or_default();
    let again = |text: &str| {
        form_page(
            StatusCode::OK,
            authorize_form(
                &tenant,
                &a,
                &username,
                &format!(r#"<p class="msg">{text}</p>"#),
            ),
            &a.request.redirect_uri,
        )
    };
    let Some(password) = password.filter(|_| !username.is_empty()) else {
        return again("Enter your user name and your password.");
    };
    let now = st.clock.now();
    let who = match form_sign_in(&st, &a.request.client_id, &username, password, source, now).await
    {
        Ok(who) => who,
        Err(text) => return again(text),
    };
    let audience = audience_for(&st, &a.request.scope).unwrap_or_default();
    let then = Continuation::Authorize {
        request: a.request,
        state: a.state,
        form_post: a.form_post,
    };
    let step = mfa_prompt::after_password(&st, who, &audience, source, then, &action).await;
    continue_authorize(&st, step)
}

/// Issues the authorization code of a sign-in that passed (or shows the
/// page a step asks for).
fn continue_authorize(st: &AppState, step: mfa_prompt::Step) -> Response {
    let (who, then) = match step {
        mfa_prompt::Step::Continue(who, then) => (*who, then),
        mfa_prompt::Step::Page(r) => return r,
    };
    let Continuation::Authorize {
        request,
        state,
        form_post,
    } = then
    else {
        return authorize_error("This sign-in was not started here.");
    };
    let now = st.clock.now();
    let redirect_uri = request.redirect_uri.clone();
    let Some(code) = st.auth_codes.issue(request, who, now) else {
        return authorize_error("Too many sign-ins in progress; try again later.");
    };
    let mut query = vec![("code", code.as_str())];
    if let Some(s) = state.as_deref() {
        query.push(("state", s));
    }
    if form_post {
        return form_post_page(&redirect_uri, &query);
    }
    let Ok(q) = serde_urlencoded::to_string(&query) else {
        return authorize_error("The response could not be built.");
    };
    let location = format!("{redirect_uri}?{q}");
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    match http::HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        Err(_) => return authorize_error("The response could not be built."),
    }
    no_store(r)
}

/// The inline script of the form_post page (allowed by its hash, nothing else).
pub(super) const FORM_POST_SCRIPT: &str = "document.forms[0].submit()";

/// `response_mode=form_post`: a page whose form posts the response to the
/// client's loopback listener at once (a button if scripts are off).
pub(super) fn form_post_page(redirect_uri: &str, fields: &[(&str, &str)]) -> Response {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{k}" value="{}">"#,
                escape_html(v)
            )
        })
        .collect();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keyhaven sign-in</title></head><body><p>Signed in. Returning to the application\u{2026}</p><form method=\"post\" action=\"{}\">{inputs}<noscript><button type=\"submit\">Continue</button></noscript></form><script>{FORM_POST_SCRIPT}</script></body></html>",
        escape_html(redirect_uri)
    );
    no_store(html_page(StatusCode::OK, body, FORM_POST_CSP.clone()))
}

/// The form_post page's policy: its one script, allowed by hash, may post only
/// to a loopback listener. Computed once.
pub(super) static FORM_POST_CSP: std::sync::LazyLock<http::HeaderValue> = std::sync::LazyLock::new(
    || {
        let hash = openssl::hash::hash(
            openssl::hash::MessageDigest::sha256(),
            FORM_POST_SCRIPT.as_bytes(),
        )
        .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
        .unwrap_or_default();
        http::HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'sha256-{hash}'; form-action http://localhost:* http://127.0.0.1:* http://[::1]:*; frame-ancestors 'none'"
    ))
    .unwrap_or_else(|_| http::HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"))
    },
);
