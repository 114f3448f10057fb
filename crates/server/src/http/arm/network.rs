//! `Microsoft.Network` on the management plane: virtual networks with their
//! subnets and service endpoints, and private endpoints bound to vaults.
//! Stored as ARM resources in Keyhaven's own shape (`keyhaven_core::network`);
//! every change bumps the authorization generation, so every node's data
//! plane sees it on its next request.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use keyhaven_core::network::{
    split_subnet_id, Ipv4Net, PrivateEndpoint, Subnet, VirtualNetwork, PRIVATE_ENDPOINT_TYPE,
    VNET_TYPE,
};
use keyhaven_core::ResourceRecord;
use serde_json::{json, Value};

use super::common::RG;
use super::common::{domain_failure, parse_body, ArmFailure, Ctx};
use super::resource::{authorize, id_of, load, not_found, upsert, valid_name, Envelope, Put};
use crate::http::response::json as reply;
use crate::state::AppState;
use axum::{routing, Router};

type Where = Path<(String, String, String)>;

fn bad(msg: impl Into<String>) -> ArmFailure {
    ArmFailure::new(StatusCode::BAD_REQUEST, "InvalidRequestFormat", msg.into())
}

// ---- virtual networks ----

/// The value at a JSON pointer, or null.
fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

fn vnet_from(props: &Value) -> Result<VirtualNetwork, ArmFailure> {
    let prefixes = at(props, "/addressSpace/addressPrefixes")
        .as_array()
        .ok_or_else(|| bad("properties.addressSpace.addressPrefixes is required."))?
        .iter()
        .map(|p| {
            p.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad("Address prefixes are strings."))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let subnets = at(props, "/subnets")
        .as_array()
        .map(|list| {
            list.iter()
                .map(|s| {
                    let name = at(s, "/name")
                        .as_str()
                        .ok_or_else(|| bad("Every subnet needs a name."))?;
                    let prefix = at(s, "/properties/addressPrefix")
                        .as_str()
                        .ok_or_else(|| bad("Every subnet needs properties.addressPrefix."))?;
                    let endpoints = at(s, "/properties/serviceEndpoints")
                        .as_array()
                        .map(|e| {
                            e.iter()
                                .filter_map(|x| at(x, "/service").as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok(Subnet {
                        name: name.to_owned(),
                        address_prefix: prefix.to_owned(),
                        service_endpoints: endpoints,
                    })
                })
                .collect::<Result<Vec<_>, ArmFailure>>()
        })
        .transpose()?
        .unwrap_or_default();
    let vnet = VirtualNetwork {
        address_prefixes: prefixes,
        subnets,
    };
    vnet.validate().map_err(|e| bad(e.to_string()))?;
    Ok(vnet)
}

fn subnet_json(vnet_id: &str, s: &Subnet) -> Value {
    json!({
        "id": format!("{vnet_id}/subnets/{}", s.name),
        "name": s.name,
        "type": "Microsoft.Network/virtualNetworks/subnets",
        "properties": {
            "addressPrefix": s.address_prefix,
            "serviceEndpoints": s.service_endpoints.iter().map(|e| json!({
                "service": e, "locations": ["*"], "provisioningState": "Succeeded"
            })).collect::<Vec<_>>(),
            "provisioningState": "Succeeded",
        }
    })
}

fn vnet_json(r: &ResourceRecord) -> Value {
    let v: VirtualNetwork = serde_json::from_str(&r.properties).unwrap_or(VirtualNetwork {
        address_prefixes: Vec::new(),
        subnets: Vec::new(),
    });
    json!({
        "id": r.id,
        "name": r.name,
        "type": VNET_TYPE,
        "location": r.location,
        "tags": serde_json::from_str::<Value>(&r.tags).unwrap_or_else(|_| json!({})),
        "properties": {
            "provisioningState": "Succeeded",
            "addressSpace": {"addressPrefixes": v.address_prefixes},
            "subnets": v.subnets.iter().map(|s| subnet_json(&r.id, s)).collect::<Vec<_>>(),
        }
    })
}

/// `PUT …/Microsoft.Network/virtualNetworks/{name}`.
pub async fn put_vnet(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, VNET_TYPE, &name);
    authorize(&st, &ctx, &id, "Microsoft.Network/virtualNetworks/write").await?;
    super::groups::require_group(&st, &sub, &rg).await?;
    if !valid_name(&name) {
        return Err(bad("The virtual network name is invalid."));
    }
    let env: Envelope = parse_body(req.into_body()).await?;
    let vnet = vnet_from(&env.properties)?;
    let props = serde_json::to_string(&vnet).map_err(|_| bad("Unserializable network."))?;
    let put = Put::tracked(id, VNET_TYPE, (&sub, &rg, &name), &env, props);
    let (rec, status) = upsert(&st, put).await?;
    Ok(reply(status, &vnet_json(&rec)))
}

/// `GET …/virtualNetworks/{name}`.
pub async fn get_vnet(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, VNET_TYPE, &name);
    authorize(&st, &ctx, &id, "Microsoft.Network/virtualNetworks/read").await?;
    let r = load(&st, &id, VNET_TYPE)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(reply(StatusCode::OK, &vnet_json(&r)))
}

/// `GET …/virtualNetworks/{name}/subnets/{subnet}`.
pub async fn get_subnet(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name, subnet)): Path<(String, String, String, String)>,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, VNET_TYPE, &name);
    authorize(
        &st,
        &ctx,
        &id,
        "Microsoft.Network/virtualNetworks/subnets/read",
    )
    .await?;
    let r = load(&st, &id, VNET_TYPE)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let v: VirtualNetwork = serde_json::from_str(&r.properties).map_err(|_| not_found(&id))?;
    let s = v
        .subnets
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(&subnet))
        .ok_or_else(|| not_found(&format!("{id}/subnets/{subnet}")))?;
    Ok(reply(StatusCode::OK, &subnet_json(&r.id, s)))
}

/// `DELETE …/virtualNetworks/{name}`: refused while a private endpoint uses it.
pub async fn delete_vnet(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, VNET_TYPE, &name);
    authorize(&st, &ctx, &id, "Microsoft.Network/virtualNetworks/delete").await?;
    let network = st.network().await.map_err(domain_failure)?;
    let prefix = format!("{}/subnets/", id.to_ascii_lowercase());
    if keyhaven_core::network::NetworkView::private_endpoints(&*network)
        .iter()
        .any(|pe| pe.subnet_id.to_ascii_lowercase().starts_with(&prefix))
    {
        return Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InUseSubnetCannotBeDeleted",
            "A private endpoint uses a subnet of this virtual network.",
        ));
    }
    super::resource::remove(&st, &id).await
}

// ---- private endpoints ----

fn pe_json(st: &AppState, r: &ResourceRecord, vault_names: &[String]) -> Value {
    let pe: Option<PrivateEndpoint> = serde_json::from_str(&r.properties).ok();
    let (subnet, ip, vaults) = pe
        .map(|p| (p.subnet_id, p.private_ip, p.vault_ids))
        .unwrap_or_default();
    json!({
        "id": r.id,
        "name": r.name,
        "type": PRIVATE_ENDPOINT_TYPE,
        "location": r.location,
        "tags": serde_json::from_str::<Value>(&r.tags).unwrap_or_else(|_| json!({})),
        "properties": {
            "provisioningState": "Succeeded",
            "subnet": {"id": subnet},
            "privateLinkServiceConnections": vaults.iter().enumerate().map(|(i, v)| json!({
                "id": format!("{}/privateLinkServiceConnections/connection{i}", r.id),
                "name": format!("connection{i}"),
                "properties": {
                    "privateLinkServiceId": v,
                    "groupIds": ["vault"],
                    "privateLinkServiceConnectionState": {
                        "status": "Approved", "description": "Auto-Approved", "actionsRequired": "None"
                    },
                    "provisioningState": "Succeeded",
                }
            })).collect::<Vec<_>>(),
            "ipConfigurations": [{
                "name": "default",
                "properties": {"groupId": "vault", "memberName": "default", "privateIPAddress": ip}
            }],
            "customDnsConfigs": vault_names.iter().map(|n| json!({
                "fqdn": st.endpoints.vault_url(n).trim_start_matches("https://").split(':').next().unwrap_or_default(),
                "ipAddresses": [ip],
            })).collect::<Vec<_>>(),
        }
    })
}

fn vault_names_of(ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| id.rsplit('/').next().map(str::to_ascii_lowercase))
        .collect()
}

/// `PUT …/Microsoft.Network/privateEndpoints/{name}`. Keyhaven cannot give a
/// host an address, so the endpoint's address is the caller's
/// (`ipConfigurations[0].properties.privateIPAddress`, inside the subnet); the
/// deployment must accept connections on it (`--extra-listen`).
pub async fn put_private_endpoint(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, PRIVATE_ENDPOINT_TYPE, &name);
    authorize(&st, &ctx, &id, "Microsoft.Network/privateEndpoints/write").await?;
    super::groups::require_group(&st, &sub, &rg).await?;
    if !valid_name(&name) {
        return Err(bad("The private endpoint name is invalid."));
    }
    let env: Envelope = parse_body(req.into_body()).await?;
    let p = &env.properties;
    let subnet_id = at(p, "/subnet/id")
        .as_str()
        .ok_or_else(|| bad("properties.subnet.id is required."))?
        .to_owned();
    let network = st.network().await.map_err(domain_failure)?;
    let subnet = keyhaven_core::network::NetworkView::subnet(&*network, &subnet_id)
        .ok_or_else(|| bad(format!("Subnet '{subnet_id}' does not exist.")))?;
    if split_subnet_id(&subnet_id).is_none() {
        return Err(bad("properties.subnet.id is not a subnet id."));
    }
    let ip = at(p, "/ipConfigurations/0/properties/privateIPAddress")
        .as_str()
        .ok_or_else(|| {
            bad("ipConfigurations[0].properties.privateIPAddress is required: Keyhaven serves a private endpoint on an address the deployment listens on.")
        })?
        .to_owned();
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| bad("privateIPAddress is not an address."))?;
    let net = Ipv4Net::parse(&subnet.address_prefix).map_err(|e| bad(e.to_string()))?;
    if !net.contains(addr) {
        return Err(bad("privateIPAddress is not inside the subnet."));
    }
    let mut vault_ids = Vec::new();
    for c in at(p, "/privateLinkServiceConnections")
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            at(p, "/manualPrivateLinkServiceConnections")
                .as_array()
                .into_iter()
                .flatten(),
        )
    {
        let target = at(c, "/properties/privateLinkServiceId")
            .as_str()
            .ok_or_else(|| bad("Each connection needs properties.privateLinkServiceId."))?;
        let vname = target
            .rsplit('/')
            .next()
            .and_then(|n| n.parse::<keyhaven_core::VaultName>().ok())
            .ok_or_else(|| bad("privateLinkServiceId is not a vault id."))?;
        let v = st
            .vault(&vname)
            .await
            .map_err(domain_failure)?
            .filter(|v| v.resource_id().eq_ignore_ascii_case(target))
            .ok_or_else(|| bad(format!("Vault '{target}' does not exist.")))?;
        vault_ids.push(v.resource_id());
    }
    if vault_ids.is_empty() {
        return Err(bad("A private endpoint connects to at least one vault."));
    }
    let pe = PrivateEndpoint {
        id: String::new(),
        subnet_id,
        private_ip: addr.to_string(),
        vault_ids,
    };
    let props = serde_json::to_string(&pe).map_err(|_| bad("Unserializable endpoint."))?;
    let put = Put::tracked(id, PRIVATE_ENDPOINT_TYPE, (&sub, &rg, &name), &env, props);
    let (rec, status) = upsert(&st, put).await?;
    Ok(reply(
        status,
        &pe_json(&st, &rec, &vault_names_of(&pe.vault_ids)),
    ))
}

/// `GET …/privateEndpoints/{name}`.
pub async fn get_private_endpoint(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, PRIVATE_ENDPOINT_TYPE, &name);
    authorize(&st, &ctx, &id, "Microsoft.Network/privateEndpoints/read").await?;
    let r = load(&st, &id, PRIVATE_ENDPOINT_TYPE)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let ids = serde_json::from_str::<PrivateEndpoint>(&r.properties)
        .map(|p| p.vault_ids)
        .unwrap_or_default();
    Ok(reply(
        StatusCode::OK,
        &pe_json(&st, &r, &vault_names_of(&ids)),
    ))
}

/// `DELETE …/privateEndpoints/{name}`.
pub async fn delete_private_endpoint(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let id = id_of(&sub, &rg, PRIVATE_ENDPOINT_TYPE, &name);
    authorize(&st, &ctx, &id, "Microsoft.Network/privateEndpoints/delete").await?;
    super::resource::remove(&st, &id).await
}

/// The vault's `privateEndpointConnections`, from the endpoints naming it.
pub fn connections_of(network: &crate::state::NetworkSnapshot, vault_id: &str) -> Vec<Value> {
    keyhaven_core::network::NetworkView::private_endpoints(network)
        .iter()
        .filter(|pe| pe.vault_ids.iter().any(|v| v.eq_ignore_ascii_case(vault_id)))
        .map(|pe| {
            json!({
                "id": format!(
                    "{vault_id}/privateEndpointConnections/{}",
                    pe.id.rsplit('/').next().unwrap_or_default()
                ),
                "properties": {
                    "privateEndpoint": {"id": pe.id},
                    "privateLinkServiceConnectionState": {
                        "status": "Approved", "description": "Auto-Approved", "actionsRequired": "None"
                    },
                    "provisioningState": "Succeeded",
                }
            })
        })
        .collect()
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{RG}/Microsoft.Network/virtualNetworks/{{name}}"),
            routing::put(put_vnet).get(get_vnet).delete(delete_vnet),
        )
        .route(
            &format!("{RG}/Microsoft.Network/virtualNetworks/{{name}}/subnets/{{subnet}}"),
            routing::get(get_subnet),
        )
        .route(
            &format!("{RG}/Microsoft.Network/privateEndpoints/{{name}}"),
            routing::put(put_private_endpoint)
                .get(get_private_endpoint)
                .delete(delete_private_endpoint),
        )
}
