//! Plain ARM resources kept as `ResourceRecord`s (virtual networks, private
//! endpoints, workspaces, event subscriptions, diagnostic settings): ids,
//! names, loading, and one create-or-replace that every kind's PUT uses.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;
use keyhaven_core::ResourceRecord;
use serde::Deserialize;
use serde_json::Value;

use super::common::{domain_failure, ArmFailure, Ctx};
use crate::http::response::status_only;
use crate::state::AppState;

/// A resource-group-scoped resource's id.
pub fn id_of(sub: &str, rg: &str, kind: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{kind}/{name}")
}

/// 404 `ResourceNotFound` for `id`.
pub fn not_found(id: &str) -> ArmFailure {
    ArmFailure::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{}' was not found.",
            id.chars().take(300).collect::<String>()
        ),
    )
}

/// True if `n` is a valid name for a network resource or workspace.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 80
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The caller may perform `action` on `id`, or 403.
pub async fn authorize(st: &AppState, ctx: &Ctx, id: &str, action: &str) -> Result<(), ArmFailure> {
    authorize_principal(st, &ctx.caller, id, action).await
}

/// `caller` may perform `action` on `id`, or 403.
pub async fn authorize_principal(
    st: &AppState,
    caller: &keyhaven_core::Principal,
    id: &str,
    action: &str,
) -> Result<(), ArmFailure> {
    st.authz
        .require_action(caller, id, action)
        .await
        .map_err(domain_failure)
}

/// The resource `id` if it exists and is of `kind`.
pub async fn load(
    st: &AppState,
    id: &str,
    kind: &str,
) -> Result<Option<ResourceRecord>, ArmFailure> {
    Ok(st
        .store
        .get_resource(id)
        .await
        .map_err(|e| domain_failure(e.into()))?
        .filter(|r| r.kind == kind))
}

/// The ARM envelope of a tracked resource's PUT body.
#[derive(Deserialize)]
pub struct Envelope {
    /// `location`.
    pub location: Option<String>,
    /// `tags`.
    pub tags: Option<BTreeMap<String, String>>,
    /// `properties`, checked by each kind.
    #[serde(default)]
    pub properties: Value,
}

/// Where a PUT resource is located.
pub enum Location<'a> {
    /// An extension resource (event subscription, diagnostic setting):
    /// always `global`.
    Global,
    /// A tracked resource: the body's `location`, required on create and
    /// kept from the existing resource when a replace leaves it out.
    Given(Option<&'a str>),
}

/// A create-or-replace of one resource.
pub struct Put<'a> {
    /// The resource id the request named.
    pub id: String,
    /// The resource type.
    pub kind: &'a str,
    /// Subscription, resource group and name as they are stored.
    pub place: (&'a str, &'a str, &'a str),
    /// Its location.
    pub location: Location<'a>,
    /// Its tags (a replace without tags clears them).
    pub tags: Option<&'a BTreeMap<String, String>>,
    /// The kind's properties, serialised.
    pub properties: String,
    /// The status of a PUT that created the resource: 201 for most kinds;
    /// diagnostic settings answer 200 either way, as Azure does.
    pub created_status: StatusCode,
}

impl<'a> Put<'a> {
    /// A tracked resource: location and tags from the body, 201 on create.
    pub fn tracked(
        id: String,
        kind: &'a str,
        place: (&'a str, &'a str, &'a str),
        env: &'a Envelope,
        properties: String,
    ) -> Self {
        Put {
            id,
            kind,
            place,
            location: Location::Given(env.location.as_deref()),
            tags: env.tags.as_ref(),
            properties,
            created_status: StatusCode::CREATED,
        }
    }

    /// An extension resource of a vault: `global`, no tags.
    pub fn extension(
        id: String,
        kind: &'a str,
        place: (&'a str, &'a str, &'a str),
        properties: String,
        created_status: StatusCode,
    ) -> Self {
        Put {
            id,
            kind,
            place,
            location: Location::Global,
            tags: None,
            properties,
            created_status,
        }
    }
}

/// Creates or replaces a resource. A replace keeps the resource's id and
/// name as first written (ARM names are case-insensitive) and its creation
/// time; its status is `created_status` when new, else 200.
pub async fn upsert(
    st: &AppState,
    put: Put<'_>,
) -> Result<(ResourceRecord, StatusCode), ArmFailure> {
    let existing = load(st, &put.id, put.kind).await?;
    let location = match put.location {
        Location::Global => "global".to_owned(),
        Location::Given(l) => location(l, existing.as_ref().map(|e| e.location.as_str()))?,
    };
    let (sub, rg, name) = put.place;
    let (rec, created) = put_document(
        st,
        existing.as_ref(),
        Document {
            id: put.id,
            kind: put.kind,
            subscription: sub,
            group: rg,
            name,
            location,
            tags: serde_json::to_string(&put.tags.cloned().unwrap_or_default())
                .unwrap_or_else(|_| "{}".into()),
            properties: put.properties,
        },
    )
    .await?;
    Ok((
        rec,
        if created {
            put.created_status
        } else {
            StatusCode::OK
        },
    ))
}

/// A tracked resource's location: the one given, or on a replace that
/// leaves it out the existing one; else 400 `LocationRequired`.
pub fn location(given: Option<&str>, existing: Option<&str>) -> Result<String, ArmFailure> {
    match (given.map(str::trim), existing) {
        (Some(l), _) if !l.is_empty() && l.len() <= 64 => Ok(l.to_owned()),
        (None, Some(e)) => Ok(e.to_owned()),
        _ => Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "LocationRequired",
            "The location property is required for this definition.",
        )),
    }
}

/// ARM's answer to a DELETE: 200 if something was deleted, 204 if there
/// was nothing to delete.
pub fn deleted(gone: bool) -> Response {
    status_only(if gone {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    })
}

/// Deletes resource `id` (any kind the caller already checked).
pub async fn remove(st: &AppState, id: &str) -> Result<Response, ArmFailure> {
    let gone = st
        .store
        .delete_resource(id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    Ok(deleted(gone))
}

/// A resource as stored: properties as Keyhaven keeps them.
pub struct Document<'a> {
    /// The id the request named.
    pub id: String,
    /// The resource type.
    pub kind: &'a str,
    /// Its subscription.
    pub subscription: &'a str,
    /// Its resource group (empty above one).
    pub group: &'a str,
    /// Its name as the request wrote it.
    pub name: &'a str,
    /// Its location (empty: none).
    pub location: String,
    /// Its tags (JSON).
    pub tags: String,
    /// Its properties, serialised.
    pub properties: String,
}

/// Creates or replaces a document, keeping an existing one's id, name and
/// creation time; true if it was created.
pub async fn put_document(
    st: &AppState,
    existing: Option<&ResourceRecord>,
    d: Document<'_>,
) -> Result<(ResourceRecord, bool), ArmFailure> {
    let now = st.clock.now();
    let rec = ResourceRecord {
        id: existing.map_or(d.id, |e| e.id.clone()),
        kind: d.kind.into(),
        subscription_id: d.subscription.into(),
        resource_group: d.group.into(),
        name: existing.map_or_else(|| d.name.to_owned(), |e| e.name.clone()),
        location: d.location,
        tags: d.tags,
        properties: d.properties,
        created: existing.map_or(now, |e| e.created),
        updated: now,
    };
    let created = st
        .store
        .put_resource(&rec)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    Ok((rec, created))
}
