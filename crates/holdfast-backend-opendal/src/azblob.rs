//! holdfast repositories in Azure Blob Storage containers: `azblob://CONTAINER/PREFIX`.
//!
//! A Put Blob is atomic (a reader sees the whole blob or none) and durable when it returns, as
//! an S3 PUT, so the same object layout and guarantees hold. Azure has no Object Lock in the
//! S3 sense here (its immutability policies are set on the container by the account owner),
//! so [`holdfast_storage::Storage::object_lock`] answers "none".

use opendal::Operator;

use crate::{parse_url, ObjectStorage};

/// Where and how to reach a container.
#[derive(Debug, Clone, Default)]
pub struct AzblobConfig {
    /// Container.
    pub container: String,
    /// Blob name prefix (the repository's "directory").
    pub prefix: String,
    /// Blob service endpoint, e.g. `https://ACCOUNT.blob.core.windows.net` (the default) or an
    /// emulator's `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    /// Storage account name.
    pub account: Option<String>,
    /// Storage account key.
    pub key: Option<String>,
    /// The environment variable prefix the credentials come from, for error messages.
    pub env_prefix: String,
}

impl AzblobConfig {
    /// Parse `azblob://CONTAINER/PREFIX`. The account, key and endpoint come from
    /// `AZURE_STORAGE_ACCOUNT`, `AZURE_STORAGE_KEY` and `AZURE_STORAGE_ENDPOINT` (Azure's own
    /// names), or with `env=P` from `P_ACCOUNT`, `P_KEY`, `P_ENDPOINT`; `endpoint=URL` in the
    /// query overrides. Secrets never go in the URL.
    pub fn from_url(url: &str) -> Result<AzblobConfig, String> {
        let (container, prefix, params) = parse_url(url, "azblob", &["endpoint", "env"])?;
        let env_prefix = params
            .get("env")
            .cloned()
            .unwrap_or_else(|| "AZURE_STORAGE".into());
        let env = |k: &str| {
            std::env::var(format!("{env_prefix}_{k}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        Ok(AzblobConfig {
            container,
            prefix,
            endpoint: params.get("endpoint").cloned().or_else(|| env("ENDPOINT")),
            account: env("ACCOUNT"),
            key: env("KEY"),
            env_prefix,
        })
    }
}

impl ObjectStorage {
    /// Connect to a container (lazily: nothing is sent until the first call).
    pub fn azblob(c: &AzblobConfig) -> Result<ObjectStorage, String> {
        let location = format!("azblob://{}/{}", c.container, c.prefix);
        let (Some(account), Some(key)) = (&c.account, &c.key) else {
            return Err(format!(
                "no credentials for {location}: set {p}_ACCOUNT and {p}_KEY",
                p = c.env_prefix
            ));
        };
        let endpoint = c
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
        let b = opendal::services::Azblob::default()
            .container(&c.container)
            .root(&format!("/{}", c.prefix))
            .endpoint(&endpoint)
            .account_name(account)
            .account_key(key);
        let op = Operator::new(b)
            .map_err(|e| format!("configuring {location}: {e}"))?
            .finish();
        ObjectStorage::with_layers(op, location, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = AzblobConfig::from_url(
            "azblob://backups/host-a/?endpoint=http://127.0.0.1:10000/devstoreaccount1&env=HOLDFAST_NO_SUCH",
        )
        .unwrap();
        assert_eq!(
            (c.container.as_str(), c.prefix.as_str()),
            ("backups", "host-a")
        );
        assert_eq!(
            c.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert!(c.account.is_none() && c.key.is_none());
        let e = ObjectStorage::azblob(&c).unwrap_err();
        assert!(e.contains("HOLDFAST_NO_SUCH_ACCOUNT"), "{e}");
        assert!(AzblobConfig::from_url("azblob:///p").is_err());
        assert!(AzblobConfig::from_url("azblob://c/p?key=secret").is_err());
        assert!(AzblobConfig::from_url("s3://c/p").is_err());
    }
}
