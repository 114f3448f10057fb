//! Azure Blob storage as a managed HSM pool's backup destination: a folder
//! under a container, reached with the caller's SAS token (Put Blob / Get
//! Blob of the Blob service REST API, `x-ms-version: 2021-12-02`). Tested
//! against Azurite, Microsoft's Blob storage emulator.
//!
//! The container URL comes from a pool administrator, so where it may point
//! is the operator's call, as for the HTTP audit destination: only hosts on
//! `--backup-storage-allow` are reached, a connection goes only to public
//! addresses or addresses the list names, and plain `http` only to an IP
//! address the list names (an emulator on loopback). The SAS token is never
//! logged or repeated in an error.

use std::sync::Arc;
use std::time::Duration;

use keyhaven_core::managed_hsm::full_backup::BackupStorage;
use keyhaven_core::{Error, Result};

use crate::audit_ship::AllowList;

const API_VERSION: &str = "2021-12-02";
/// Largest blob read back (a key's backup is a few KB; a manifest of the
/// most keys a backup holds a few MB).
const MAX_BLOB: u64 = 64 * 1024 * 1024;

/// A folder of a Blob storage container.
pub struct BlobFolder {
    container: url::Url,
    folder: String,
    sas: String,
    allow: Arc<AllowList>,
}

impl std::fmt::Debug for BlobFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobFolder")
            .field("container", &self.container.as_str())
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

fn bad(msg: &str) -> Error {
    Error::BadParameter(msg.to_owned())
}

impl BlobFolder {
    /// Checks the container URL against the allow-list and keeps the SAS
    /// token (with or without its leading `?`).
    pub fn new(container: &str, folder: &str, sas: &str, allow: Arc<AllowList>) -> Result<Self> {
        let url = url::Url::parse(container.trim_end_matches('/'))
            .map_err(|_| bad("storageResourceUri must be a Blob storage container URL."))?;
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(bad(
                "storageResourceUri must be the container URL alone; the SAS token goes in 'token'.",
            ));
        }
        let ip_host = matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)));
        match url.scheme() {
            "https" => {}
            "http" if ip_host && allow.host_allowed(&url) => {}
            _ => return Err(bad("storageResourceUri must be an https URL.")),
        }
        if !allow.host_allowed(&url) {
            return Err(bad(
                "The storage account's host is not on the operator's allow-list (keyhaven serve --backup-storage-allow).",
            ));
        }
        if url.path_segments().is_none_or(|mut s| s.all(str::is_empty)) {
            return Err(bad("storageResourceUri must name a container."));
        }
        let sas = sas.trim().trim_start_matches('?').to_owned();
        if sas.is_empty() || sas.contains(['#', ' ', '\n']) {
            return Err(bad(
                "A SAS token ('token') is needed to reach the container.",
            ));
        }
        // The SDK splits a folder URL after its first path segment, so with a
        // path-style account URL (an emulator's) the folder arrives as
        // `container/folder`: up to two plain segments.
        let segments: Vec<&str> = folder.split('/').collect();
        if folder.len() > 200
            || segments.len() > 2
            || !segments.iter().all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
        {
            return Err(bad("The backup folder name is not valid."));
        }
        Ok(Self {
            container: url,
            folder: folder.to_owned(),
            sas,
            allow,
        })
    }

    /// The folder's URL (what a backup reports as its result).
    pub fn folder_url(&self) -> String {
        format!(
            "{}/{}",
            self.container.as_str().trim_end_matches('/'),
            self.folder
        )
    }

    fn blob_url(&self, name: &str) -> String {
        format!("{}/{name}?{}", self.folder_url(), self.sas)
    }

    fn agent(&self) -> ureq::Agent {
        self.allow.agent(Duration::from_secs(60))
    }
}

/// What a failed storage call tells the caller (never the URL or token).
fn storage_error(what: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::Status(403, _) => Error::BadParameter(format!(
            "The storage account refused to {what} (403): check the SAS token's permissions and expiry."
        )),
        ureq::Error::Status(404, _) => Error::BadParameter(format!(
            "The storage account has no such container or backup (404) to {what}."
        )),
        ureq::Error::Status(_, _) => {
            Error::Unavailable(format!("The storage account could not {what}."))
        }
        ureq::Error::Transport(_) => {
            Error::Unavailable(format!("The storage account could not be reached to {what}."))
        }
    }
}

#[async_trait::async_trait]
impl BackupStorage for BlobFolder {
    async fn put(&self, name: &str, data: Vec<u8>) -> Result<()> {
        let url = self.blob_url(name);
        let agent = self.agent();
        tokio::task::spawn_blocking(move || {
            agent
                .put(&url)
                .set("x-ms-version", API_VERSION)
                .set("x-ms-blob-type", "BlockBlob")
                // A folder is written once: a blob already there (another
                // backup in the same folder) is refused, not overwritten.
                .set("If-None-Match", "*")
                .set("Content-Type", "application/octet-stream")
                .send_bytes(&data)
                .map(|_| ())
                .map_err(|e| storage_error("write the backup", e))
        })
        .await
        .map_err(|_| Error::Integrity)?
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        let url = self.blob_url(name);
        let agent = self.agent();
        tokio::task::spawn_blocking(move || {
            let resp = agent
                .get(&url)
                .set("x-ms-version", API_VERSION)
                .call()
                .map_err(|e| storage_error("read the backup", e))?;
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(resp.into_reader(), MAX_BLOB),
                &mut out,
            )
            .map_err(|_| Error::Unavailable("The backup could not be read whole.".into()))?;
            Ok(out)
        })
        .await
        .map_err(|_| Error::Integrity)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> Arc<AllowList> {
        Arc::new(
            AllowList::parse(&entries.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    }

    #[test]
    fn only_allowed_containers_are_reached() {
        let a = allow(&["127.0.0.1", "*.blob.core.windows.net"]);
        let ok = BlobFolder::new(
            "https://acct.blob.core.windows.net/backups",
            "mhsm-x-1",
            "?sv=1&sig=abc",
            Arc::clone(&a),
        );
        assert_eq!(
            ok.map(|f| f.folder_url()).ok().as_deref(),
            Some("https://acct.blob.core.windows.net/backups/mhsm-x-1")
        );
        assert!(BlobFolder::new(
            "http://127.0.0.1:10000/devstoreaccount1/c",
            "f",
            "sig=x",
            Arc::clone(&a)
        )
        .is_ok());
        for (url, folder, sas) in [
            ("https://evil.example/backups", "f", "sig=x"),
            ("http://acct.blob.core.windows.net/backups", "f", "sig=x"),
            ("https://acct.blob.core.windows.net/", "f", "sig=x"),
            ("https://acct.blob.core.windows.net/c?sig=x", "f", "sig=x"),
            ("https://acct.blob.core.windows.net/c", "../x", "sig=x"),
            ("https://acct.blob.core.windows.net/c", "a/b/c", "sig=x"),
            ("https://acct.blob.core.windows.net/c", "a//b", "sig=x"),
            ("https://acct.blob.core.windows.net/c", "f", ""),
            ("http://127.0.0.2:10000/a/c", "f", "sig=x"),
        ] {
            assert!(
                BlobFolder::new(url, folder, sas, Arc::clone(&a)).is_err(),
                "{url} {folder}"
            );
        }
        let debug = format!(
            "{:?}",
            BlobFolder::new("https://acct.blob.core.windows.net/c", "f", "sig=SECRET", a)
        );
        assert!(!debug.contains("SECRET"), "{debug}");
    }
}

/// The grants managed HSM pools' identities hold on storage, as the
/// operator configures them (`--backup-storage-identity FILE`: one `pool
/// container-URL SAS-token` per line): what `useManagedIdentity: true`
/// reaches storage with — only the named pool's. The tokens are held in
/// memory only and never shown.
#[derive(Default)]
pub struct StorageIdentity {
    grants: Vec<(String, String, zeroize::Zeroizing<String>)>,
}

impl std::fmt::Debug for StorageIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageIdentity")
            .field("containers", &self.grants.len())
            .finish()
    }
}

impl StorageIdentity {
    /// Parses the file's text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut grants = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(pool), Some(url), Some(sas), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "line {}: expected `pool container-URL SAS-token`",
                    n + 1
                ));
            };
            let url = url.trim_end_matches('/').to_ascii_lowercase();
            if url::Url::parse(&url).is_err() {
                return Err(format!("line {}: not a URL", n + 1));
            }
            grants.push((
                pool.to_ascii_lowercase(),
                url,
                zeroize::Zeroizing::new(sas.to_owned()),
            ));
        }
        Ok(Self { grants })
    }

    /// The SAS token granted to `pool`'s identity for `container` (exactly
    /// that container URL).
    pub fn sas_for(&self, pool: &str, container: &str) -> Option<&str> {
        let want = container.trim_end_matches('/').to_ascii_lowercase();
        self.grants
            .iter()
            .find(|(p, url, _)| p.eq_ignore_ascii_case(pool) && *url == want)
            .map(|(_, _, sas)| sas.as_str())
    }
}

#[cfg(test)]
mod identity_tests {
    use super::StorageIdentity;

    #[test]
    fn a_grant_belongs_to_one_pool_and_one_container() {
        let g = StorageIdentity::parse(
            "# pool container sas\npool1 https://acct.blob.core.windows.net/c1/ sv=1&sig=A\n",
        )
        .unwrap();
        assert_eq!(
            g.sas_for("POOL1", "https://acct.blob.core.windows.net/c1"),
            Some("sv=1&sig=A")
        );
        assert_eq!(
            g.sas_for("pool2", "https://acct.blob.core.windows.net/c1"),
            None
        );
        assert_eq!(
            g.sas_for("pool1", "https://acct.blob.core.windows.net/c2"),
            None
        );
        assert!(StorageIdentity::parse("https://acct.blob.core.windows.net/c1 sig=A").is_err());
        assert!(!format!("{g:?}").contains("sig=A"));
    }
}
