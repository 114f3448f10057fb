//! The admin subcommands' HTTP client: reads `bootstrap.json`, gets a token
//! with the bootstrap service principal's client secret, and calls Keyhaven's
//! Graph and ARM endpoints like any other client. It never opens the store.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// The connection details of `bootstrap.json` that the CLI uses.
pub struct Connection {
    agent: ureq::Agent,
    pub tenant_id: String,
    client_id: String,
    client_secret: String,
    pub authority_host: String,
    pub management_url: String,
    pub graph_url: String,
    pub subscription_id: String,
    pub resource_group: String,
}

/// The Graph endpoint of a deployment: `management.` becomes `graph.` (the
/// port stays).
pub fn graph_url_of(management_url: &str) -> String {
    management_url.replacen("://management.", "://graph.", 1)
}

/// A parsed `bootstrap.json`.
pub struct BootstrapFile {
    path: std::path::PathBuf,
    value: Value,
}

impl BootstrapFile {
    /// Reads and parses the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            value,
        })
    }

    /// A string field (an error naming the file if it is missing).
    pub fn field(&self, k: &str) -> Result<String> {
        self.value
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{} has no '{k}'", self.path.display()))
    }
}

impl Connection {
    /// Reads `bootstrap.json` and trusts the CA it names.
    pub fn from_bootstrap(path: &Path) -> Result<Self> {
        let b = BootstrapFile::read(path)?;
        let field = |k: &str| b.field(k);
        let ca = field("ca_cert")?;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&ca).with_context(|| format!("reading CA {ca}"))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.with_context(|| format!("parsing CA {ca}"))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .resolver(resolve)
            .timeout(std::time::Duration::from_secs(30))
            .build();
        let management_url = field("management_url")?;
        let graph_url = graph_url_of(&management_url);
        Ok(Self {
            agent,
            tenant_id: field("tenant_id")?,
            client_id: field("client_id")?,
            client_secret: field("client_secret")?,
            authority_host: field("authority_host")?,
            management_url,
            graph_url,
            subscription_id: field("subscription_id")?,
            resource_group: field("resource_group")?,
        })
    }

    /// A token for `resource` (e.g. the Graph or management URL).
    pub fn token(&self, resource: &str) -> Result<String> {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_host, self.tenant_id
        );
        let scope = format!("{resource}/.default");
        let resp = self.agent.post(&url).send_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("scope", &scope),
        ]);
        let body = json_of(resp)?;
        body.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the token endpoint returned no access_token"))
    }

    /// Sends a request with a bearer token; returns the JSON body (`Null` for none).
    pub fn call(
        &self,
        method: &str,
        url: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let req = self
            .agent
            .request(method, url)
            .set("Authorization", &format!("Bearer {token}"));
        let resp = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        json_of(resp)
    }
}

/// `*.localhost` is loopback (RFC 6761) even where the system resolver disagrees.
fn resolve(addr: &str) -> std::io::Result<Vec<SocketAddr>> {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "443"));
    let host = host.trim_end_matches('.');
    if host == "localhost" || host.ends_with(".localhost") {
        let port: u16 = port.parse().unwrap_or(443);
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
    }
    addr.to_socket_addrs().map(Iterator::collect)
}

fn json_of(resp: Result<ureq::Response, ureq::Error>) -> Result<Value> {
    match resp {
        Ok(r) => {
            let text = r.into_string()?;
            if text.trim().is_empty() {
                Ok(Value::Null)
            } else {
                Ok(serde_json::from_str(&text)?)
            }
        }
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v.get("error").map(|e| match e {
                        Value::String(s) => format!(
                            "{s}: {}",
                            v.get("error_description")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        ),
                        e => format!(
                            "{}: {}",
                            e.get("code").and_then(Value::as_str).unwrap_or("error"),
                            e.get("message").and_then(Value::as_str).unwrap_or("")
                        ),
                    })
                })
                .unwrap_or(text);
            bail!("HTTP {code}: {detail}")
        }
        Err(e) => Err(anyhow!("request failed: {e}")),
    }
}
