//! What the S3 requests holdfast signs itself share: the SigV4 signer, the credential and the
//! bucket's path-style address. OpenDAL signs its own requests; these are the ones it has no
//! call for (Object Lock, versions, tagging) and the quick-ACK reads (`fastget`).

use reqsign::{AwsCredential, AwsV4Signer};

/// Signs requests to one bucket of one endpoint.
pub(crate) struct Signing {
    signer: AwsV4Signer,
    cred: AwsCredential,
    /// `endpoint/bucket` (path style, as OpenDAL addresses it); `endpoint` for requests on no
    /// bucket (an empty bucket name).
    pub(crate) base: String,
}

impl Signing {
    /// A signer for `bucket` at `endpoint` in `region`, with a static key pair.
    pub(crate) fn new(
        endpoint: &str,
        region: &str,
        bucket: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Signing {
        Signing {
            signer: AwsV4Signer::new("s3", region),
            cred: AwsCredential {
                access_key_id: access_key_id.into(),
                secret_access_key: secret_access_key.into(),
                ..Default::default()
            },
            base: format!("{}/{}", endpoint.trim_end_matches('/'), bucket),
        }
    }

    // reqsign's `SignableRequest` trait is not exported, so a caller cannot be generic over
    // it: one method per request type holdfast sends.

    /// Sign a hyper request in place (its headers); the error says why it could not be.
    pub(crate) fn sign_http<T>(&self, req: &mut hyper::Request<T>) -> Result<(), String> {
        self.signer
            .sign(req, &self.cred)
            .map_err(|e| format!("signing: {e}"))
    }

    /// Sign a reqwest request in place (its headers); the error says why it could not be.
    pub(crate) fn sign_reqwest(&self, req: &mut reqwest::Request) -> Result<(), String> {
        self.signer
            .sign(req, &self.cred)
            .map_err(|e| format!("signing: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_path_style_and_a_request_gets_a_sigv4_header() {
        let s = Signing::new("http://127.0.0.1:3900/", "garage", "bkt", "GK1", "secret");
        assert_eq!(s.base, "http://127.0.0.1:3900/bkt");
        let mut req = hyper::Request::get(format!("{}/key", s.base))
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .body(())
            .unwrap();
        s.sign_http(&mut req).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=GK1/") && auth.contains("/garage/s3/"),
            "{auth}"
        );
    }
}
