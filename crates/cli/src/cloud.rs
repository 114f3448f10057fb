//! `keyhaven cloud`: the Azure CLI commands that point `az` at this
//! deployment. Azure CLI learns a cloud's endpoints from ARM's metadata
//! document (`GET /metadata/endpoints`, which Keyhaven serves on its
//! management endpoint), so registering needs only the ARM URL. MSAL's
//! instance discovery asks login.microsoftonline.com to vouch for an unknown
//! authority host; Keyhaven's authority is not known there (and an
//! air-gapped machine cannot ask), so it is turned off.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::client::BootstrapFile;

/// What `bootstrap.json` tells about the endpoints.
struct Deployment {
    management_url: String,
    graph_url: String,
    vault_host_suffix: String,
    authority_host: String,
    ca_cert: PathBuf,
    tenant_id: String,
    client_id: String,
    bootstrap: PathBuf,
}

impl Deployment {
    fn read(path: &Path) -> Result<Self> {
        let b = BootstrapFile::read(path)?;
        let field = |k: &str| b.field(k);
        let ca = PathBuf::from(field("ca_cert")?);
        let management_url = field("management_url")?.trim_end_matches('/').to_owned();
        Ok(Self {
            graph_url: crate::client::graph_url_of(&management_url),
            vault_host_suffix: field("vault_host_suffix")?,
            management_url,
            authority_host: field("authority_host")?,
            ca_cert: std::fs::canonicalize(&ca).unwrap_or(ca),
            tenant_id: field("tenant_id")?,
            client_id: field("client_id")?,
            bootstrap: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
        })
    }

    /// The commands that register and select the cloud, as argument lists.
    /// With `discover`, `az` reads the endpoints from ARM's metadata; without,
    /// every endpoint is given on the command line.
    fn setup(&self, name: &str, update: bool, discover: bool) -> Vec<Vec<String>> {
        let s = |x: &str| x.to_owned();
        let mut register = vec![
            s("cloud"),
            s(if update { "update" } else { "register" }),
            s("--name"),
            s(name),
            s("--endpoint-resource-manager"),
            self.management_url.clone(),
        ];
        if !discover {
            let audience = format!("{}/", self.management_url);
            let graph = format!("{}/", self.graph_url);
            register.extend([
                s("--skip-endpoint-discovery"),
                s("--endpoint-management"),
                audience.clone(),
                s("--endpoint-active-directory"),
                self.authority_host.clone(),
                s("--endpoint-active-directory-resource-id"),
                audience,
                s("--endpoint-microsoft-graph-resource-id"),
                graph.clone(),
                s("--endpoint-active-directory-graph-resource-id"),
                graph,
                s("--suffix-keyvault-dns"),
                format!(".{}", self.vault_host_suffix),
            ]);
        }
        vec![
            register,
            vec![s("cloud"), s("set"), s("--name"), s(name)],
            vec![s("config"), s("set"), s("core.instance_discovery=false")],
        ]
    }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn line(args: &[String]) -> String {
    std::iter::once("az".to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints (or, with `run`, runs through `az`) the commands.
pub fn cloud(bootstrap: &Path, name: &str, run: bool, discover: bool, az: &Path) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("--name must be letters, digits and hyphens");
    }
    let d = Deployment::read(bootstrap)?;
    let ca = d.ca_cert.display().to_string();
    if !run {
        println!("# Point the Azure CLI at Keyhaven ({}).", d.management_url);
        println!("# az must trust Keyhaven's CA in every shell that uses it:");
        println!("export REQUESTS_CA_BUNDLE={}", shell_quote(&ca));
        for cmd in d.setup(name, false, discover) {
            println!("{}", line(&cmd));
        }
        println!("# Then sign in, as the bootstrap service principal:");
        println!(
            "az login --service-principal --username {} --password \"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"client_secret\"])' {})\" --tenant {}",
            d.client_id,
            shell_quote(&d.bootstrap.display().to_string()),
            d.tenant_id
        );
        println!(
            "# or as a user, in the browser: az login --tenant {0}   (or: az login --use-device-code --tenant {0})",
            d.tenant_id
        );
        println!(
            "# (az login -u/-p also works when {} is reachable on port 443).",
            d.authority_host
        );
        return Ok(());
    }
    let exists = Command::new(az)
        .args(["cloud", "show", "--name", name, "--output", "none"])
        .env("REQUESTS_CA_BUNDLE", &d.ca_cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", az.display()))?
        .success();
    for cmd in d.setup(name, exists, discover) {
        eprintln!("+ {}", line(&cmd));
        let status = Command::new(az)
            .args(&cmd)
            .env("REQUESTS_CA_BUNDLE", &d.ca_cert)
            .status()
            .with_context(|| format!("running {}", az.display()))?;
        if !status.success() {
            bail!("`{}` failed ({status})", line(&cmd));
        }
    }
    println!("export REQUESTS_CA_BUNDLE={}", shell_quote(&ca));
    Ok(())
}
