//! Graph applications and their password, key and federated credentials.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::Extension;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keyhaven_core::directory::ApplicationRecord;
use keyhaven_identity::credentials::FederatedCredential;
use keyhaven_identity::directory::{credentials_of, ApplicationAttrs, NewKeyCredential};
use keyhaven_wire::graph::{
    self as g, AddPassword, ApplicationInput, Collection, FederatedIdentityCredential,
    KeyCredentialOut, PasswordCredentialOut, RemovePassword,
};
use keyhaven_wire::oauth::iso8601;

use super::{body, created, ok, Ctx, GraphFailure, GraphResult, C};
use crate::http::response::no_content;
use crate::state::AppState;

pub(super) fn app_out(
    a: &ApplicationRecord,
    odata: BTreeMap<&'static str, String>,
) -> g::Application {
    let creds = credentials_of(a);
    g::Application {
        odata,
        id: a.object_id.clone(),
        app_id: a.app_id.clone(),
        display_name: a.display_name.clone(),
        sign_in_audience: "AzureADMyOrg",
        public_client: ApplicationAttrs::of(a).public_client,
        password_credentials: creds
            .passwords
            .iter()
            .map(|p| PasswordCredentialOut {
                key_id: p.key_id.clone(),
                display_name: p.display_name.clone(),
                hint: p.hint.clone(),
                start: iso8601(p.start),
                end: p.end.map(iso8601),
                secret_text: None,
                custom_key_identifier: None,
            })
            .collect(),
        key_credentials: creds
            .keys
            .iter()
            .map(|k| KeyCredentialOut {
                key_id: k.key_id.clone(),
                display_name: k.display_name.clone(),
                kind: k.kind.clone(),
                usage: k.usage.clone(),
                start: iso8601(k.start),
                end: iso8601(k.end),
                custom_key_identifier: base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&k.x5t)
                    .map(|b| STANDARD.encode(b))
                    .unwrap_or_default(),
                key: None,
            })
            .collect(),
        created: iso8601(a.created),
    }
}

pub(super) async fn list_applications(
    State(st): State<AppState>,
    Extension(ctx): C,
) -> GraphResult {
    let (cursor, top) = ctx.page()?;
    let page = st
        .directory
        .applications(cursor.as_deref(), top)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&Collection {
        context: format!("{}/$metadata#applications", ctx.base),
        value: page
            .items
            .iter()
            .map(|a| app_out(a, BTreeMap::new()))
            .collect::<Vec<_>>(),
        next_link: ctx.next_link("/applications", page.next.as_ref(), top),
    })
}

pub(super) async fn create_application(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    let b: ApplicationInput = body(&ctx, req).await?;
    let name = b
        .display_name
        .ok_or_else(|| ctx.bad("Property 'displayName' is required."))?;
    let mut app = st
        .directory
        .create_application(&ctx.caller, &name)
        .await
        .map_err(|e| ctx.fail(e))?;
    if let Some(keys) = b.key_credentials {
        app = set_keys(&st, &ctx, &app.object_id, keys).await?;
    }
    created(&app_out(&app, ctx.context("applications/$entity")))
}

pub(super) async fn get_application(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let app = st
        .directory
        .application(&id)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&app_out(&app, ctx.context("applications/$entity")))
}

pub(super) async fn set_keys(
    st: &AppState,
    ctx: &Ctx,
    id: &str,
    keys: Vec<g::KeyCredentialIn>,
) -> Result<ApplicationRecord, GraphFailure> {
    let mut parsed = Vec::with_capacity(keys.len());
    for k in keys {
        if k.kind.as_deref().is_some_and(|t| t != "AsymmetricX509Cert")
            || k.usage.as_deref().is_some_and(|u| u != "Verify")
        {
            return Err(ctx.bad("Only keyCredentials of type 'AsymmetricX509Cert' with usage 'Verify' are supported."));
        }
        let der = k
            .key
            .as_deref()
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .ok_or_else(|| {
                ctx.bad("Invalid value specified for property 'key' of resource 'KeyCredential'.")
            })?;
        parsed.push(NewKeyCredential {
            der,
            display_name: k.display_name,
        });
    }
    st.directory
        .set_key_credentials(&ctx.caller, id, parsed)
        .await
        .map_err(|e| ctx.fail(e))
}

pub(super) async fn update_application(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: ApplicationInput = body(&ctx, req).await?;
    if let Some(name) = b.display_name {
        st.directory
            .rename_application(&ctx.caller, &id, &name)
            .await
            .map_err(|e| ctx.fail(e))?;
    }
    if let Some(keys) = b.key_credentials {
        set_keys(&st, &ctx, &id, keys).await?;
    }
    Ok(no_content())
}

pub(super) async fn delete_application(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    st.directory
        .delete_application(&ctx.caller, &id)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

pub(super) async fn add_password(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: AddPassword = body(&ctx, req).await?;
    let wanted = b.password_credential.unwrap_or_default();
    let end = match wanted.end.as_deref() {
        Some(e) => Some(
            g::parse_iso8601(e)
                .ok_or_else(|| ctx.bad("Invalid value specified for property 'endDateTime'."))?,
        ),
        None => Some(ctx.now + 2 * 365 * 86_400),
    };
    let (cred, secret) = st
        .directory
        .add_password(&ctx.caller, &id, wanted.display_name, end)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&PasswordCredentialOut {
        key_id: cred.key_id,
        display_name: cred.display_name,
        hint: cred.hint,
        start: iso8601(cred.start),
        end: cred.end.map(iso8601),
        secret_text: Some(secret.expose().clone()),
        custom_key_identifier: None,
    })
}

pub(super) async fn remove_password(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: RemovePassword = body(&ctx, req).await?;
    let key_id = b
        .key_id
        .ok_or_else(|| ctx.bad("Property 'keyId' is required."))?;
    st.directory
        .remove_password(&ctx.caller, &id, &key_id)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

pub(super) async fn list_federated(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let app = st
        .directory
        .application(&id)
        .await
        .map_err(|e| ctx.fail(e))?;
    let value: Vec<FederatedIdentityCredential> = credentials_of(&app)
        .federated
        .into_iter()
        .map(|f| FederatedIdentityCredential {
            id: f.id,
            name: f.name,
            issuer: f.issuer,
            subject: f.subject,
            audiences: f.audiences,
            description: f.description,
        })
        .collect();
    ok(&Collection {
        context: format!(
            "{}/$metadata#applications('{id}')/federatedIdentityCredentials",
            ctx.base
        ),
        value,
        next_link: None,
    })
}

pub(super) async fn add_federated(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: FederatedIdentityCredential = body(&ctx, req).await?;
    let f = st
        .directory
        .add_federated(
            &ctx.caller,
            &id,
            FederatedCredential {
                id: String::new(),
                name: b.name,
                issuer: b.issuer,
                subject: b.subject,
                audiences: b.audiences,
                description: b.description,
            },
        )
        .await
        .map_err(|e| ctx.fail(e))?;
    created(&FederatedIdentityCredential {
        id: f.id,
        name: f.name,
        issuer: f.issuer,
        subject: f.subject,
        audiences: f.audiences,
        description: f.description,
    })
}
