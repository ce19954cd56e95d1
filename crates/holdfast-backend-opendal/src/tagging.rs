//! Object tags (`GetObjectTagging`, `PutObjectTagging`) of a bucket source's objects.
//!
//! OpenDAL (0.50) has no tagging calls, so the two requests are signed with reqsign and sent
//! with reqwest, like the Object Lock requests ([`crate::lock`]). A store that does not
//! implement tagging (Garage answers 501 Not Implemented) is remembered as such for the rest of
//! the connection: its objects have no tags to lose, and [`Bucket::tagging`] says so.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::bucket::Bucket;

/// An object's tags, by key.
pub type Tags = BTreeMap<String, String>;

/// Longest tagging answer read (S3 allows 10 tags of at most 128 + 256 characters).
const MAX_ANSWER: usize = 1 << 20;
/// Most tags accepted on one object (S3 allows 10; other stores more).
pub const MAX_TAGS: usize = 1000;

/// Whether the store implements object tagging, as far as this connection has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tagging {
    /// Not asked yet.
    Unknown,
    /// The store answered a tagging request.
    Supported,
    /// The store answered that it does not implement tagging.
    Unsupported,
}

/// What a tag read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagRead {
    /// The object's tags (possibly none).
    Tags(Tags),
    /// The object (or that version) is gone.
    Gone,
    /// The store does not implement tagging.
    Unsupported,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TaggingDoc {
    #[serde(default)]
    tag_set: TagSet,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct TagSet {
    #[serde(default)]
    tag: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3Error {
    code: Option<String>,
}

/// Characters of a key sent as they are in a URL path (AWS's URI encoding: unreserved
/// characters, and `/` between the key's parts).
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// [`Bucket::tagging`] before any answer (the field's initial value).
pub(crate) const UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

impl Bucket {
    /// Whether this store implements object tagging, as far as seen so far.
    pub fn tagging(&self) -> Tagging {
        match self.tagging.load(Ordering::Relaxed) {
            SUPPORTED => Tagging::Supported,
            UNSUPPORTED => Tagging::Unsupported,
            _ => Tagging::Unknown,
        }
    }

    fn tags_url(&self, key: &str, version: Option<&str>) -> String {
        let mut url = format!(
            "{}/{}?tagging",
            self.signed.signing.base,
            utf8_percent_encode(key.trim_start_matches('/'), KEY_SET)
        );
        if let Some(v) = version {
            url.push_str("&versionId=");
            url.extend(utf8_percent_encode(v, NON_ALPHANUMERIC));
        }
        url
    }

    /// The tags of an object (of one version, when given).
    pub(crate) async fn read_tags(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<TagRead, String> {
        if self.tagging.load(Ordering::Relaxed) == UNSUPPORTED {
            return Ok(TagRead::Unsupported);
        }
        let op = format!("reading the tags of {}/{key}", self.location);
        let url = self.tags_url(key, version);
        let (status, body) = self
            .signed
            .send(reqwest::Method::GET, &url, None, &op)
            .await
            .map_err(|e| e.to_string())?;
        match status {
            200 => {}
            404 => return Ok(TagRead::Gone),
            _ if unimplemented(status, &body) => {
                self.tagging.store(UNSUPPORTED, Ordering::Relaxed);
                return Ok(TagRead::Unsupported);
            }
            _ => return Err(format!("{op}: {}", refusal(status, &body))),
        }
        let tags = parse(&body).map_err(|e| format!("{op}: {e}"))?;
        self.tagging.store(SUPPORTED, Ordering::Relaxed);
        Ok(TagRead::Tags(tags))
    }

    /// The tags of many objects (current versions), up to `parallel` requests at once, in the
    /// order of `keys`.
    pub fn tags_all(&self, keys: &[String], parallel: usize) -> Vec<Result<TagRead, String>> {
        use futures_util::stream::{self, StreamExt};
        self.rt.block_on(
            stream::iter(keys)
                .map(|key| self.read_tags(key, None))
                .buffered(parallel.max(1))
                .collect(),
        )
    }

    /// The tags of an object (of one version, when given).
    pub fn tags(&self, key: &str, version: Option<&str>) -> Result<TagRead, String> {
        self.rt.block_on(self.read_tags(key, version))
    }

    /// Set an object's tags (replacing any it has). `Ok(false)` when the store does not
    /// implement tagging, so the tags were not set.
    pub fn put_tags(&self, key: &str, tags: &Tags) -> Result<bool, String> {
        self.rt.block_on(self.write_tags(key, tags))
    }

    pub(crate) async fn write_tags(&self, key: &str, tags: &Tags) -> Result<bool, String> {
        if self.tagging.load(Ordering::Relaxed) == UNSUPPORTED {
            return Ok(false);
        }
        let op = format!("setting the tags of {}/{key}", self.location);
        let body = encode(tags);
        let url = self.tags_url(key, None);
        let (status, answer) = self
            .signed
            .send(reqwest::Method::PUT, &url, Some(body.as_bytes()), &op)
            .await
            .map_err(|e| e.to_string())?;
        match status {
            200 | 204 => {
                self.tagging.store(SUPPORTED, Ordering::Relaxed);
                Ok(true)
            }
            _ if unimplemented(status, &answer) => {
                self.tagging.store(UNSUPPORTED, Ordering::Relaxed);
                Ok(false)
            }
            _ => Err(format!("{op}: {}", refusal(status, &answer))),
        }
    }
}

fn code(body: &[u8]) -> String {
    quick_xml::de::from_reader::<_, S3Error>(body)
        .ok()
        .and_then(|e| e.code)
        .unwrap_or_default()
}

/// The store answered that it has no such call.
fn unimplemented(status: u16, body: &[u8]) -> bool {
    status == 501 || code(body) == "NotImplemented"
}

fn refusal(status: u16, body: &[u8]) -> String {
    match (status, code(body)) {
        (403, c) => format!(
            "refused ({c}): these credentials lack s3:GetObjectTagging / s3:PutObjectTagging; grant them, or set `tags = false` on the source"
        ),
        (s, c) => format!("HTTP {s} {c}"),
    }
}

/// Parse a `Tagging` answer, bounded.
pub(crate) fn parse(body: &[u8]) -> Result<Tags, String> {
    if body.len() > MAX_ANSWER {
        return Err(format!(
            "the answer is {} bytes, more than the {MAX_ANSWER} read",
            body.len()
        ));
    }
    if !String::from_utf8_lossy(body).contains("Tagging") {
        return Err(
            "the answer is not S3's Tagging document (does the store ignore `?tagging`?)".into(),
        );
    }
    let t: TaggingDoc = quick_xml::de::from_reader(body)
        .map_err(|e| format!("the answer is not S3's Tagging document: {e}"))?;
    if t.tag_set.tag.len() > MAX_TAGS {
        return Err(format!(
            "{} tags, more than the {MAX_TAGS} accepted",
            t.tag_set.tag.len()
        ));
    }
    let mut out = Tags::new();
    for tag in t.tag_set.tag {
        if out.insert(tag.key.clone(), tag.value).is_some() {
            return Err(format!("the tag {:?} is given twice", tag.key));
        }
    }
    Ok(out)
}

/// A `Tagging` document for `PutObjectTagging`.
pub(crate) fn encode(tags: &Tags) -> String {
    use quick_xml::escape::escape;
    let mut s = String::from("<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>");
    for (k, v) in tags {
        s.push_str(&format!(
            "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
            escape(k.as_str()),
            escape(v.as_str())
        ));
    }
    s.push_str("</TagSet></Tagging>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_documents_round_trip_and_garbage_is_refused() {
        let tags: Tags = [
            ("class".to_string(), "gold & <silver>".to_string()),
            ("empty".to_string(), String::new()),
            ("ünïcode key".to_string(), "\"quoted\" 'v'".to_string()),
        ]
        .into();
        assert_eq!(parse(encode(&tags).as_bytes()).unwrap(), tags);
        let none = br#"<?xml version="1.0" encoding="UTF-8"?><Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><TagSet/></Tagging>"#;
        assert!(parse(none).unwrap().is_empty());
        for (bad, why) in [
            (&b"hello, an object's own bytes"[..], "not S3's Tagging"),
            (b"<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>", "not S3's Tagging"),
            (
                b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag><Tag><Key>a</Key><Value>2</Value></Tag></TagSet></Tagging>",
                "given twice",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let many: Tags = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(parse(encode(&many).as_bytes())
            .unwrap_err()
            .contains("more than"));
        let huge = vec![b' '; MAX_ANSWER + 1];
        assert!(parse(&huge).unwrap_err().contains("bytes"));
    }

    #[test]
    fn keys_are_encoded_as_aws_signs_them() {
        let s = utf8_percent_encode("a dir/ü+b~c.txt", KEY_SET).to_string();
        assert_eq!(s, "a%20dir/%C3%BC%2Bb~c.txt");
    }

    #[test]
    fn unimplemented_answers_are_recognised() {
        assert!(unimplemented(501, b""));
        assert!(unimplemented(
            400,
            b"<Error><Code>NotImplemented</Code></Error>"
        ));
        assert!(!unimplemented(
            400,
            b"<Error><Code>InvalidArgument</Code></Error>"
        ));
        assert!(refusal(403, b"<Error><Code>AccessDenied</Code></Error>").contains("tags = false"));
    }
}
