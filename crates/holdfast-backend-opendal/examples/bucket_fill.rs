//! Fill, change or empty a bucket prefix for the bucket-source benchmark (bench/bucket.sh).
//!
//! usage: bucket_fill fill PREFIX SMALL LARGE   SMALL objects of 200..3200 bytes in 1000
//!                                              directories, LARGE objects of 20 MiB
//!        bucket_fill change PREFIX SMALL       rewrite every 100th small object (1%)
//!        bucket_fill delete PREFIX SMALL       delete every 1000th small object
//!
//! The bucket and credentials come from AWS_ENDPOINT_URL, AWS_REGION, HOLDFAST_TEST_BUCKET,
//! AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (what scripts/garage-cluster.sh writes).

use holdfast_backend_opendal::bucket::{Bucket, ObjectMeta};
use holdfast_backend_opendal::S3Config;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name}"))
}

/// Deterministic bytes: `len` of them from `seed` (xorshift), compressible by half.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 2 == 0 {
                x as u8
            } else {
                b'a' + (i % 7) as u8
            }
        })
        .collect()
}

fn key(prefix: &str, i: u64) -> String {
    format!("{prefix}d{:03}/o{i:07}", i % 1000)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, prefix, small) = match &args[..] {
        [m, p, s, ..] => (m.as_str(), p.as_str(), s.parse::<u64>().expect("SMALL")),
        _ => panic!("usage: bucket_fill fill|change|delete PREFIX SMALL [LARGE]"),
    };
    let b = Bucket::connect(&S3Config {
        bucket: env("HOLDFAST_TEST_BUCKET"),
        prefix: String::new(),
        endpoint: Some(env("AWS_ENDPOINT_URL")),
        region: Some(env("AWS_REGION")),
        access_key_id: Some(env("AWS_ACCESS_KEY_ID")),
        secret_access_key: Some(env("AWS_SECRET_ACCESS_KEY")),
        env_prefix: "AWS".into(),
    })
    .expect("connect");
    let ids: Vec<u64> = match mode {
        "fill" => (0..small).collect(),
        "change" => (0..small).step_by(100).collect(),
        "delete" => {
            for i in (7..small).step_by(1000) {
                b.delete(&key(prefix, i)).expect("delete");
            }
            return;
        }
        _ => panic!("mode: fill, change or delete"),
    };
    let salt = if mode == "change" { 1 << 40 } else { 0 };
    for part in ids.chunks(2000) {
        let objects = part
            .iter()
            .map(|&i| {
                let len = 200 + (i as usize * 37) % 3000;
                (key(prefix, i), ObjectMeta::default(), bytes(i + salt, len))
            })
            .collect();
        for r in b.put_all(objects, 32) {
            r.expect("put");
        }
    }
    if mode == "fill" {
        let large: u64 = args.get(3).map_or(0, |s| s.parse().expect("LARGE"));
        for j in 0..large {
            let data = bytes(1 << 50 | j, 20 << 20);
            let meta = ObjectMeta {
                content_type: Some("application/octet-stream".into()),
                ..Default::default()
            };
            b.put(&format!("{prefix}large/l{j}"), &meta, &mut |send| {
                send(data.clone())
            })
            .expect("put large");
        }
    }
}
