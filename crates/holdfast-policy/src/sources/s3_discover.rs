//! What an `s3` source shows `discover`: the buckets its endpoint lists for its key
//! (`ListBuckets`), each found as `s3://BUCKET?endpoint=URL` (the form `restore --target`
//! takes), covered only by an `s3` source of that bucket at that endpoint reading all of it.

use holdfast_backend_opendal::buckets::list_buckets;

use super::bucket::BucketSource;
use crate::found::Found;

/// The endpoint as a location names it (AWS when none is set).
fn endpoint_of(s: &BucketSource) -> String {
    s.s3.endpoint
        .clone()
        .unwrap_or_else(|| "https://s3.amazonaws.com".into())
        .trim_end_matches('/')
        .to_string()
}

/// The location of bucket `name` at `endpoint`.
pub(crate) fn location(name: &str, endpoint: &str) -> String {
    format!("s3://{name}?endpoint={endpoint}")
}

impl BucketSource {
    /// Whether it protects the discovered bucket `f`: the same bucket at the same endpoint,
    /// every key of it (a source of one prefix leaves the rest of the bucket unprotected).
    pub(crate) fn covers_bucket(&self, f: &Found) -> bool {
        f.kind == "bucket"
            && self.prefix.is_empty()
            && f.location == location(&self.s3.bucket, &endpoint_of(self))
    }

    /// The buckets of its endpoint, or one finding naming why they could not be listed (a
    /// bucket nobody knows of is the anti-pattern `discover` exists for: never silence).
    pub(crate) fn buckets_beside(&self) -> Vec<Found> {
        let endpoint = endpoint_of(self);
        match list_buckets(&self.s3) {
            Ok(names) => names
                .into_iter()
                .map(|n| {
                    let mut f = Found::new(
                        "bucket",
                        location(&n, &endpoint),
                        format!("a bucket at {endpoint}, listed with the credentials of {}_*", self.s3.env_prefix),
                    );
                    if n == self.s3.bucket && !self.prefix.is_empty() {
                        f.note = Some(format!(
                            "a source reads only its prefix {}: the rest of the bucket is not protected",
                            self.prefix
                        ));
                    }
                    f
                })
                .collect(),
            Err(e) => {
                let mut f = Found::new(
                    "bucket",
                    location("*", &endpoint),
                    format!("the buckets at {endpoint} could not be listed: {e} (grant s3:ListAllMyBuckets to these credentials, or declare each bucket as a source)"),
                );
                f.contains_mounts = true;
                vec![f]
            }
        }
    }
}
