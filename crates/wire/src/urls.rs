//! Object ids and links. Ids are absolute URLs under the vault's URL, shaped
//! `{vault}/{collection}/{name}[/{version}]` as the SDKs' id parsers expect.

use crate::paging::encode_skiptoken;

/// Builds ids and links for one vault.
#[derive(Debug, Clone)]
pub struct VaultUrls {
    base: String,
}

impl VaultUrls {
    /// `vault_url` such as `https://dev.vault.localhost:8443` (no trailing slash).
    pub fn new(vault_url: &str) -> Self {
        Self {
            base: vault_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The vault URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{vault}/{collection}/{name}/{version}`
    pub fn versioned(&self, collection: &str, name: &str, version: &str) -> String {
        format!("{}/{collection}/{name}/{version}", self.base)
    }

    /// `{vault}/{collection}/{name}`
    pub fn unversioned(&self, collection: &str, name: &str) -> String {
        format!("{}/{collection}/{name}", self.base)
    }

    /// An absolute `nextLink` for `path` (e.g. `/secrets`).
    pub fn next_link(
        &self,
        path: &str,
        api_version: &str,
        cursor: &str,
        maxresults: Option<u32>,
    ) -> String {
        let mut link = format!(
            "{}{path}?api-version={api_version}&$skiptoken={}",
            self.base,
            encode_skiptoken(cursor)
        );
        if let Some(m) = maxresults {
            link.push_str(&format!("&maxresults={m}"));
        }
        link
    }
}
