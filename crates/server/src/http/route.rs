//! Step 3 of the pipeline: which plane a request is for, from its Host
//! (HTTP/1.1) or authority (HTTP/2). Ports are ignored: a load balancer may
//! publish another one.

use axum::extract::Request;

use crate::config::Endpoints;

/// The planes Keyhaven serves.
#[derive(Debug, PartialEq, Eq)]
pub enum Plane {
    /// `{vault}.vault.{domain}`: the data plane of one vault (name unchecked).
    Data(String),
    /// `{pool}.managedhsm.{domain}`: the data plane of one Managed HSM pool.
    ManagedHsm(String),
    /// `login.{domain}`: the token issuer.
    Login,
    /// `management.{domain}`: ARM.
    Management,
    /// `graph.{domain}`: the Microsoft Graph subset.
    Graph,
    /// `portal.{domain}`: the web console.
    Portal,
    /// `loganalytics.{domain}`: the Log Analytics query API.
    Logs,
    /// Anything else.
    Unknown(String),
}

/// Resolves the plane of `req`.
pub fn plane(req: &Request, endpoints: &Endpoints) -> Plane {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    plane_of_host(host, endpoints)
}

/// Resolves the plane of a `host[:port]` string.
pub fn plane_of_host(host: &str, endpoints: &Endpoints) -> Plane {
    let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    let domain = endpoints.domain();
    if let Some(vault) = name
        .strip_suffix(&endpoints.vault_parent())
        .and_then(|p| p.strip_suffix('.'))
    {
        if !vault.is_empty() && !vault.contains('.') {
            return Plane::Data(vault.to_owned());
        }
    }
    if let Some(pool) = name
        .strip_suffix(&endpoints.hsm_parent())
        .and_then(|p| p.strip_suffix('.'))
    {
        if !pool.is_empty() && !pool.contains('.') {
            return Plane::ManagedHsm(pool.to_owned());
        }
    }
    if name == format!("login.{domain}") {
        Plane::Login
    } else if name == format!("management.{domain}") {
        Plane::Management
    } else if name == format!("graph.{domain}") {
        Plane::Graph
    } else if name == format!("portal.{domain}") {
        Plane::Portal
    } else if name == format!("loganalytics.{domain}") {
        Plane::Logs
    } else {
        Plane::Unknown(name)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep through the closing bracket.
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_to_planes() {
        let e = Endpoints::new("localhost", 8443);
        assert_eq!(
            plane_of_host("dev.vault.localhost:8443", &e),
            Plane::Data("dev".into())
        );
        assert_eq!(
            plane_of_host("DEV.Vault.LocalHost", &e),
            Plane::Data("dev".into())
        );
        assert_eq!(
            plane_of_host("Pool1.managedhsm.localhost:8443", &e),
            Plane::ManagedHsm("pool1".into())
        );
        assert!(matches!(
            plane_of_host("managedhsm.localhost:8443", &e),
            Plane::Unknown(_)
        ));
        assert_eq!(plane_of_host("login.localhost:8443", &e), Plane::Login);
        assert_eq!(plane_of_host("management.localhost", &e), Plane::Management);
        assert_eq!(plane_of_host("graph.localhost:8443", &e), Plane::Graph);
        assert_eq!(plane_of_host("Portal.localhost:8443", &e), Plane::Portal);
        assert_eq!(
            plane_of_host("loganalytics.localhost:8443", &e),
            Plane::Logs
        );
        assert!(matches!(
            plane_of_host("vault.localhost:8443", &e),
            Plane::Unknown(_)
        ));
        assert!(matches!(
            plane_of_host("a.b.vault.localhost", &e),
            Plane::Unknown(_)
        ));
        assert!(matches!(
            plane_of_host("dev.vault.example.com", &e),
            Plane::Unknown(_)
        ));
        assert!(matches!(plane_of_host("[::1]:8443", &e), Plane::Unknown(_)));
        assert!(matches!(plane_of_host("", &e), Plane::Unknown(_)));
    }
}
