//! The buckets an S3 endpoint holds for a key (`ListBuckets`, `GET /`), for `discover`:
//! OpenDAL has no call for it, so the request is signed with reqsign and sent with reqwest,
//! like the Object Lock requests ([`crate::lock`]).

use serde::Deserialize;

use crate::lock::LockClient;
use crate::S3Config;

/// Longest answer read (a `ListBuckets` answer names at most a few thousand buckets).
const MAX_ANSWER: usize = 16 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAllMyBucketsResult {
    buckets: Buckets,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Buckets {
    #[serde(default)]
    bucket: Vec<NamedBucket>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NamedBucket {
    name: String,
}

/// The names of the buckets the endpoint of `c` lists for its key, sorted.
pub fn list_buckets(c: &S3Config) -> Result<Vec<String>, String> {
    let endpoint = c
        .endpoint
        .clone()
        .unwrap_or_else(|| "https://s3.amazonaws.com".into());
    let (Some(key_id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) else {
        return Err(format!(
            "no credentials for {endpoint}: set {p}_ACCESS_KEY_ID and {p}_SECRET_ACCESS_KEY",
            p = c.env_prefix
        ));
    };
    let region = c.region.as_deref().unwrap_or("us-east-1");
    let client = LockClient::new(&endpoint, region, "", "", key_id, secret, &endpoint)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the I/O runtime: {e}"))?;
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let (status, body) = rt
        .block_on(client.send(reqwest::Method::GET, &url, None, "list buckets"))
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(client.refused("list buckets", status, &body).to_string());
    }
    parse(&body)
}

fn parse(body: &[u8]) -> Result<Vec<String>, String> {
    if body.len() > MAX_ANSWER {
        return Err(format!(
            "the bucket listing is {} bytes, more than the {MAX_ANSWER} read",
            body.len()
        ));
    }
    let r: ListAllMyBucketsResult = quick_xml::de::from_reader(body)
        .map_err(|e| format!("the bucket listing is not S3's ListAllMyBucketsResult: {e}"))?;
    let mut names: Vec<String> = r.buckets.bucket.into_iter().map(|b| b.name).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_parsed_and_garbage_is_refused() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Owner><ID>holdfast</ID><DisplayName>holdfast</DisplayName></Owner>
  <Buckets>
    <Bucket><Name>shop-media</Name><CreationDate>2026-12-01T10:00:00.000Z</CreationDate></Bucket>
    <Bucket><Name>backups</Name><CreationDate>2026-12-01T10:00:00.000Z</CreationDate></Bucket>
  </Buckets>
</ListAllMyBucketsResult>"#;
        assert_eq!(parse(xml).unwrap(), vec!["backups", "shop-media"]);
        let empty = br#"<ListAllMyBucketsResult><Owner><ID>x</ID></Owner><Buckets></Buckets></ListAllMyBucketsResult>"#;
        assert!(parse(empty).unwrap().is_empty());
        assert!(parse(b"<Error><Code>AccessDenied</Code></Error>")
            .unwrap_err()
            .contains("not S3's ListAllMyBucketsResult"));
    }
}
