//! Undoing deletes on a versioned bucket (every bucket with S3 Object Lock keeps versions).
//!
//! Deleting an object there only adds a delete marker; the data stays as an older version, and
//! under Object Lock nobody can remove that version before its lock ends. So whatever deleted
//! recovery points (a compromised host, a wrong `forget`) can be undone: for every object of
//! the repository whose newest entry is a delete marker made at or after a given time, and
//! that has a real version underneath, remove the delete markers made since then; the object
//! is visible again, byte for byte. Nothing is overwritten and no version is removed.

use holdfast_storage::StorageError;
use serde::Deserialize;

use crate::lock::LockClient;

/// One entry of a ListObjectVersions answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    key: String,
    version_id: String,
    last_modified: String,
}

#[derive(Debug, Deserialize)]
enum Item {
    Version(Entry),
    DeleteMarker(Entry),
    IsTruncated(String),
    NextKeyMarker(String),
    NextVersionIdMarker(String),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct ListVersions {
    #[serde(rename = "$value", default)]
    items: Vec<Item>,
}

/// An object version or delete marker: key, version id, time (Unix seconds), is a marker.
pub(crate) type Version = (String, String, i64, bool);

impl LockClient {
    /// Every version and delete marker under the repository prefix, all pages.
    pub(crate) async fn list_versions(&self) -> Result<Vec<Version>, StorageError> {
        let op = "listing object versions";
        let prefix = match self.prefix.as_str() {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let (mut key_marker, mut version_marker) = (String::new(), String::new());
        let mut out = Vec::new();
        loop {
            let mut url = reqwest::Url::parse(&self.signing.base)
                .map_err(|e| self.remote(op, format!("bad endpoint: {e}"), false))?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("versions", "");
                q.append_pair("prefix", &prefix);
                if !key_marker.is_empty() {
                    q.append_pair("key-marker", &key_marker);
                    q.append_pair("version-id-marker", &version_marker);
                }
            }
            let (status, body) = self
                .send(reqwest::Method::GET, url.as_str(), None, op)
                .await?;
            if status != 200 {
                return Err(self.refused(op, status, &body));
            }
            let page: ListVersions = quick_xml::de::from_reader(&body[..])
                .map_err(|e| self.remote(op, format!("unreadable answer: {e}"), false))?;
            let mut truncated = false;
            let (mut next_key, mut next_version) = (String::new(), String::new());
            for item in page.items {
                match item {
                    Item::Version(e) | Item::DeleteMarker(e) if !e.key.starts_with(&prefix) => {}
                    Item::Version(e) => out.push(self.entry(e, false, op)?),
                    Item::DeleteMarker(e) => out.push(self.entry(e, true, op)?),
                    Item::IsTruncated(t) => truncated = t == "true",
                    Item::NextKeyMarker(k) => next_key = k,
                    Item::NextVersionIdMarker(v) => next_version = v,
                    Item::Other => {}
                }
            }
            if !truncated || next_key.is_empty() {
                return Ok(out);
            }
            (key_marker, version_marker) = (next_key, next_version);
        }
    }

    fn entry(&self, e: Entry, marker: bool, op: &str) -> Result<Version, StorageError> {
        let t = chrono::DateTime::parse_from_rfc3339(&e.last_modified)
            .map_err(|x| {
                self.remote(
                    op,
                    format!("unreadable time {:?}: {x}", e.last_modified),
                    false,
                )
            })?
            .timestamp();
        Ok((e.key, e.version_id, t, marker))
    }

    /// Remove the delete markers made at or after `since` (Unix seconds) from every object that
    /// has a real version under them; returns those objects' keys (relative to the prefix).
    /// With `dry_run`, only says which.
    pub(crate) async fn undelete(
        &self,
        since: i64,
        dry_run: bool,
    ) -> Result<Vec<String>, StorageError> {
        let versions = self.list_versions().await?;
        let plan = undelete_plan(&versions, since);
        let prefix_len = match self.prefix.as_str() {
            "" => 0,
            p => p.len() + 1,
        };
        let mut restored = Vec::new();
        for (key, markers) in plan {
            if !dry_run {
                for id in markers {
                    let op = format!("removing the delete marker of {key}");
                    let mut url = reqwest::Url::parse(&format!("{}/{key}", self.signing.base))
                        .map_err(|e| self.remote(&op, format!("bad key: {e}"), false))?;
                    url.query_pairs_mut().append_pair("versionId", &id);
                    let (status, body) = self
                        .send(reqwest::Method::DELETE, url.as_str(), None, &op)
                        .await?;
                    if !matches!(status, 200 | 204) {
                        return Err(self.refused(&op, status, &body));
                    }
                }
            }
            restored.push(key[prefix_len..].to_string());
        }
        Ok(restored)
    }
}

/// For each key whose newest entry is a delete marker made at or after `since` and which has a
/// real version, the delete markers to remove (those made since). Pure, tested with a table.
pub(crate) fn undelete_plan(versions: &[Version], since: i64) -> Vec<(String, Vec<String>)> {
    let mut by_key: std::collections::BTreeMap<&str, Vec<&Version>> = Default::default();
    for v in versions {
        by_key.entry(v.0.as_str()).or_default().push(v);
    }
    let mut plan = Vec::new();
    for (key, mut vs) in by_key {
        vs.sort_by_key(|v| std::cmp::Reverse(v.2));
        let newest_is_recent_marker = vs.first().is_some_and(|v| v.3 && v.2 >= since);
        let has_data = vs.iter().any(|v| !v.3);
        if newest_is_recent_marker && has_data {
            let markers = vs
                .iter()
                .filter(|v| v.3 && v.2 >= since)
                .map(|v| v.1.clone())
                .collect();
            plan.push((key.to_string(), markers));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, id: &str, t: i64, marker: bool) -> Version {
        (key.into(), id.into(), t, marker)
    }

    #[test]
    fn undelete_table() {
        let versions = vec![
            v("r/a", "a1", 100, false),
            v("r/a", "am", 200, true), // deleted after `since`: undo
            v("r/b", "b1", 100, false),
            v("r/b", "bm", 50, true), // a marker older than the data: b is live
            v("r/c", "c1", 10, false),
            v("r/c", "cm", 90, true), // deleted before `since` (a prune): leave
            v("r/d", "dm", 200, true), // only a marker, no data: nothing to bring back
            v("r/e", "e1", 100, false),
            v("r/e", "em1", 150, true),
            v("r/e", "e2", 160, false),
            v("r/e", "em2", 170, true), // two deletes since: both markers go
            v("r/f", "f1", 100, false), // never deleted
        ];
        let plan = undelete_plan(&versions, 120);
        assert_eq!(
            plan,
            vec![
                ("r/a".to_string(), vec!["am".to_string()]),
                (
                    "r/e".to_string(),
                    vec!["em2".to_string(), "em1".to_string()]
                ),
            ]
        );
        assert!(undelete_plan(&versions, 1000).is_empty());
    }

    #[test]
    fn parses_interleaved_versions_and_markers() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>r/</Prefix>
<KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>
<NextKeyMarker>r/b</NextKeyMarker><NextVersionIdMarker>x2</NextVersionIdMarker>
<DeleteMarker><Key>r/a</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest><LastModified>2026-11-26T03:00:00.000Z</LastModified><Owner><ID>o</ID></Owner></DeleteMarker>
<Version><Key>r/a</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><LastModified>2026-11-26T02:00:00.000Z</LastModified><ETag>"e"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Version>
<Version><Key>r/b</Key><VersionId>x2</VersionId><IsLatest>true</IsLatest><LastModified>2026-11-26T02:00:00.000Z</LastModified><ETag>"e"</ETag><Size>3</Size></Version>
</ListVersionsResult>"#;
        let page: ListVersions = quick_xml::de::from_str(xml).unwrap();
        let mut kinds = Vec::new();
        for i in page.items {
            match i {
                Item::Version(e) => kinds.push(format!("v {} {}", e.key, e.version_id)),
                Item::DeleteMarker(e) => kinds.push(format!("m {} {}", e.key, e.version_id)),
                Item::IsTruncated(t) => kinds.push(format!("t {t}")),
                Item::NextKeyMarker(k) => kinds.push(format!("k {k}")),
                Item::NextVersionIdMarker(k) => kinds.push(format!("n {k}")),
                Item::Other => {}
            }
        }
        assert_eq!(
            kinds,
            vec!["t true", "k r/b", "n x2", "m r/a m1", "v r/a v1", "v r/b x2"]
        );
    }
}
