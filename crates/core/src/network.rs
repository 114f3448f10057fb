//! Virtual networks, subnets and private endpoints (ARM resources of
//! `Microsoft.Network`), and the data-plane network decision that uses them:
//! the vault firewall (public access, IP rules, virtual-network rules) and
//! private endpoints, which admit their own vaults even when public access is
//! off — and only those vaults.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vault::VaultRecord;

/// The ARM type of virtual networks.
pub const VNET_TYPE: &str = "Microsoft.Network/virtualNetworks";
/// The ARM type of private endpoints.
pub const PRIVATE_ENDPOINT_TYPE: &str = "Microsoft.Network/privateEndpoints";
/// The service endpoint a subnet needs for a vault's virtual-network rule.
pub const KEYVAULT_SERVICE: &str = "Microsoft.KeyVault";

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    addr: u32,
    prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n` (or a bare address, /32).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::BadParameter(format!(
                "'{}' is not an IPv4 address prefix (a.b.c.d/n).",
                s.chars().take(64).collect::<String>()
            ))
        };
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 || p.starts_with('+') {
            return Err(bad());
        }
        Ok(Self {
            addr: u32::from(addr) & Self::mask(prefix),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    /// Whether `ip` (IPv4 or IPv4-mapped IPv6) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => m,
                None => return false,
            },
        };
        u32::from(v4) & Self::mask(self.prefix) == self.addr
    }

    /// Whether `other` lies entirely inside this network.
    pub fn covers(&self, other: &Self) -> bool {
        other.prefix >= self.prefix && other.addr & Self::mask(self.prefix) == self.addr
    }
}

/// A subnet of a virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Name.
    pub name: String,
    /// `a.b.c.d/n`.
    pub address_prefix: String,
    /// Service endpoints enabled on the subnet (`Microsoft.KeyVault`, …).
    #[serde(default)]
    pub service_endpoints: Vec<String>,
}

/// A virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualNetwork {
    /// Address space.
    pub address_prefixes: Vec<String>,
    /// Subnets.
    #[serde(default)]
    pub subnets: Vec<Subnet>,
}

impl VirtualNetwork {
    /// Checks prefixes, subnet names and that subnets lie in the address
    /// space without overlapping.
    pub fn validate(&self) -> Result<()> {
        if self.address_prefixes.is_empty() {
            return Err(Error::BadParameter(
                "addressSpace.addressPrefixes needs at least one prefix.".into(),
            ));
        }
        let space = self
            .address_prefixes
            .iter()
            .map(|p| Ipv4Net::parse(p))
            .collect::<Result<Vec<_>>>()?;
        let mut seen: Vec<Ipv4Net> = Vec::new();
        for s in &self.subnets {
            if s.name.is_empty()
                || s.name.len() > 80
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(Error::BadParameter("A subnet name is invalid.".into()));
            }
            let net = Ipv4Net::parse(&s.address_prefix)?;
            if !space.iter().any(|sp| sp.covers(&net)) {
                return Err(Error::BadParameter(format!(
                    "Subnet '{}' is not inside the virtual network's address space.",
                    s.name
                )));
            }
            if seen.iter().any(|o| o.covers(&net) || net.covers(o)) {
                return Err(Error::BadParameter(format!(
                    "Subnet '{}' overlaps another subnet.",
                    s.name
                )));
            }
            seen.push(net);
        }
        Ok(())
    }
}

/// A private endpoint: an address in a subnet through which its vaults are
/// reachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateEndpoint {
    /// The endpoint's own ARM id (filled in when read, not stored).
    #[serde(default, skip_serializing)]
    pub id: String,
    /// The subnet's id.
    pub subnet_id: String,
    /// The private address (Keyhaven must accept connections on it).
    pub private_ip: String,
    /// Vault resource ids it connects to.
    pub vault_ids: Vec<String>,
}

/// How a request reached the data plane.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The local address the connection was accepted on.
    pub local: Option<IpAddr>,
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy
/// and `forwarded_for` (the `X-Forwarded-For` header) names hops — then the
/// nearest hop that is not itself a trusted proxy. An unparsable entry stops
/// the walk at the last trustworthy address.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, proxies: &[Ipv4Net]) -> IpAddr {
    let trusted = |ip: IpAddr| proxies.iter().any(|p| p.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',').map(str::trim) {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusted(ip) {
            break;
        }
    }
    client
}

/// The network's verdict on a data-plane request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted.
    Allow,
    /// Refused, with the reason for logs.
    Deny(&'static str),
    /// Refused by the firewall, but the vault lets trusted services bypass
    /// it (`bypass: AzureServices`): admitted if the caller's token names one.
    DenyUnlessTrusted(&'static str),
}

fn refuse(vault: &VaultRecord, why: &'static str) -> Verdict {
    let bypass = vault
        .properties
        .network_acls
        .as_ref()
        .is_some_and(|a| a.bypass.eq_ignore_ascii_case("AzureServices"));
    if bypass {
        Verdict::DenyUnlessTrusted(why)
    } else {
        Verdict::Deny(why)
    }
}

/// Where the decision looks up subnets and private endpoints.
pub trait NetworkView {
    /// The subnet with this id (case-insensitive), if its network exists.
    fn subnet(&self, id: &str) -> Option<Subnet>;
    /// Every private endpoint.
    fn private_endpoints(&self) -> &[PrivateEndpoint];
}

/// Decides a data-plane request to `vault`:
/// 1. arriving on a private endpoint's address: admitted only for the vaults
///    the endpoint connects to, whatever the firewall says;
/// 2. public access disabled: refused;
/// 3. no rules or `defaultAction: Allow`: admitted;
/// 4. `Deny`: admitted if an IP rule contains the peer, or a virtual-network
///    rule's subnet does (with the `Microsoft.KeyVault` service endpoint,
///    unless the rule ignores a missing one).
pub fn decide(vault: &VaultRecord, at: Arrival, net: &dyn NetworkView) -> Verdict {
    if let Some(local) = at.local {
        let via = net
            .private_endpoints()
            .iter()
            .filter(|pe| pe.private_ip.parse::<IpAddr>().is_ok_and(|ip| ip == local))
            .collect::<Vec<_>>();
        if !via.is_empty() {
            let id = vault.resource_id();
            return if via
                .iter()
                .any(|pe| pe.vault_ids.iter().any(|v| v.eq_ignore_ascii_case(&id)))
            {
                Verdict::Allow
            } else {
                Verdict::Deny("the private endpoint does not connect to this vault")
            };
        }
    }
    let p = &vault.properties;
    if p.public_network_access
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("disabled"))
    {
        return refuse(vault, "public network access is disabled");
    }
    let Some(acls) = &p.network_acls else {
        return Verdict::Allow;
    };
    if acls.default_action.eq_ignore_ascii_case("allow") || acls.ip_allowed(at.peer) {
        return Verdict::Allow;
    }
    let in_subnet = acls.virtual_network_rules.iter().any(|rule| {
        net.subnet(&rule.id).is_some_and(|s| {
            let endpoint = s
                .service_endpoints
                .iter()
                .any(|e| e.eq_ignore_ascii_case(KEYVAULT_SERVICE));
            (endpoint || rule.ignore_missing_vnet_service_endpoint == Some(true))
                && Ipv4Net::parse(&s.address_prefix).is_ok_and(|n| n.contains(at.peer))
        })
    });
    if in_subnet {
        Verdict::Allow
    } else {
        refuse(vault, "the client address matches no network rule")
    }
}

/// Splits a subnet id into (virtual network id, subnet name).
pub fn split_subnet_id(id: &str) -> Option<(String, String)> {
    let lower = id.to_ascii_lowercase();
    let at = lower.find("/subnets/")?;
    let (vnet, rest) = id.split_at(at);
    let name = rest.get("/subnets/".len()..)?;
    (!name.is_empty() && !name.contains('/')).then(|| (vnet.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::VaultProperties;
    use crate::vault_admin::{IpRule, NetworkAcls, VirtualNetworkRule};

    struct View(Vec<(String, Subnet)>, Vec<PrivateEndpoint>);

    impl NetworkView for View {
        fn subnet(&self, id: &str) -> Option<Subnet> {
            self.0
                .iter()
                .find(|(i, _)| i.eq_ignore_ascii_case(id))
                .map(|(_, s)| s.clone())
        }
        fn private_endpoints(&self) -> &[PrivateEndpoint] {
            &self.1
        }
    }

    fn vault(name: &str, props: VaultProperties) -> VaultRecord {
        VaultRecord {
            id: "id".into(),
            name: name.parse().unwrap_or_else(|_| unreachable!()),
            tenant_id: "t".into(),
            subscription_id: "s".into(),
            resource_group: "g".into(),
            sku: "standard".into(),
            retention_days: 90,
            purge_protection: false,
            wrapped_key: Vec::new(),
            created: 0,
            properties: props,
            rev: 0,
        }
    }

    fn at(peer: &str, local: &str) -> Arrival {
        Arrival {
            peer: peer.parse().unwrap_or_else(|_| unreachable!()),
            local: Some(local.parse().unwrap_or_else(|_| unreachable!())),
        }
    }

    #[test]
    fn subnets_endpoints_and_public_access_decide_as_azure() {
        const A: &str = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/a";
        const B: &str = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/b";
        let view = View(
            vec![
                (
                    A.into(),
                    Subnet {
                        name: "a".into(),
                        address_prefix: "198.51.100.0/25".into(),
                        service_endpoints: vec![KEYVAULT_SERVICE.into()],
                    },
                ),
                (
                    B.into(),
                    Subnet {
                        name: "b".into(),
                        address_prefix: "198.51.100.128/25".into(),
                        service_endpoints: vec![],
                    },
                ),
            ],
            vec![PrivateEndpoint {
                id: "pe".into(),
                subnet_id: A.into(),
                private_ip: "198.51.100.5".into(),
                vault_ids: vec![
                    "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/locked"
                        .into(),
                ],
            }],
        );
        let rules = |ignore: Option<bool>| VaultProperties {
            network_acls: Some(NetworkAcls {
                bypass: "None".into(),
                default_action: "Deny".into(),
                ip_rules: vec![IpRule {
                    value: "203.0.113.10".into(),
                }],
                virtual_network_rules: vec![
                    VirtualNetworkRule {
                        id: A.to_lowercase(),
                        ignore_missing_vnet_service_endpoint: None,
                    },
                    VirtualNetworkRule {
                        id: B.into(),
                        ignore_missing_vnet_service_endpoint: ignore,
                    },
                ],
            }),
            ..VaultProperties::default()
        };
        let v = vault("locked", rules(None));
        let host = "198.51.100.1";
        let mut bypassing = rules(None);
        if let Some(a) = bypassing.network_acls.as_mut() {
            a.bypass = "AzureServices".into();
        }
        assert!(matches!(
            decide(&vault("locked", bypassing), at("203.0.113.99", host), &view),
            Verdict::DenyUnlessTrusted(_)
        ));
        assert_eq!(decide(&v, at("198.51.100.10", host), &view), Verdict::Allow);
        assert!(matches!(
            decide(&v, at("198.51.100.130", host), &view),
            Verdict::Deny(_)
        ));
        assert_eq!(
            decide(
                &vault("locked", rules(Some(true))),
                at("198.51.100.130", host),
                &view
            ),
            Verdict::Allow
        );
        assert_eq!(decide(&v, at("203.0.113.10", host), &view), Verdict::Allow);
        assert!(matches!(
            decide(&v, at("203.0.113.11", host), &view),
            Verdict::Deny(_)
        ));

        let mut off = rules(None);
        off.public_network_access = Some("Disabled".into());
        let v = vault("locked", off.clone());
        assert!(matches!(
            decide(&v, at("198.51.100.10", host), &view),
            Verdict::Deny(_)
        ));
        assert_eq!(
            decide(&v, at("198.51.100.10", "198.51.100.5"), &view),
            Verdict::Allow
        );
        let other = vault("other", VaultProperties::default());
        assert!(matches!(
            decide(&other, at("198.51.100.10", "198.51.100.5"), &view),
            Verdict::Deny(_)
        ));
        assert_eq!(
            decide(&other, at("198.51.100.10", host), &view),
            Verdict::Allow
        );
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|_| unreachable!());
        let proxies = [Ipv4Net::parse("192.0.2.0/28").unwrap_or_else(|_| unreachable!())];
        let xff = Some("203.0.113.9, 198.51.100.3, 192.0.2.2");
        assert_eq!(
            client_address(ip("198.51.100.77"), xff, &proxies),
            ip("198.51.100.77")
        );
        assert_eq!(
            client_address(ip("192.0.2.1"), xff, &proxies),
            ip("198.51.100.3")
        );
        assert_eq!(
            client_address(ip("192.0.2.1"), None, &proxies),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_address(ip("192.0.2.1"), Some("junk, 192.0.2.3"), &proxies),
            ip("192.0.2.3")
        );
        assert_eq!(
            client_address(ip("192.0.2.1"), Some("203.0.113.1"), &[]),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn networks_validate_their_subnets() {
        let net = |subs: &[(&str, &str)]| VirtualNetwork {
            address_prefixes: vec!["198.51.100.0/24".into()],
            subnets: subs
                .iter()
                .map(|(n, p)| Subnet {
                    name: (*n).into(),
                    address_prefix: (*p).into(),
                    service_endpoints: vec![],
                })
                .collect(),
        };
        assert!(net(&[("a", "198.51.100.0/25"), ("b", "198.51.100.128/25")])
            .validate()
            .is_ok());
        assert!(net(&[("a", "198.51.100.0/25"), ("b", "198.51.100.64/26")])
            .validate()
            .is_err());
        assert!(net(&[("a", "192.0.2.0/25")]).validate().is_err());
        assert!(net(&[("a b", "198.51.100.0/25")]).validate().is_err());
        assert_eq!(
            split_subnet_id("/x/virtualNetworks/v/subnets/a"),
            Some(("/x/virtualNetworks/v".into(), "a".into()))
        );
        assert!(split_subnet_id("/x/virtualNetworks/v").is_none());
    }
}
