//! Reads from a real Garage cluster (three nodes, replication factor 3, on loopback, started by
//! `scripts/garage-cluster.sh`) through the repository backend. Requires `garage`
//! (scripts/test.sh installs it); set HOLDFAST_SKIP_S3=1 to opt out explicitly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holdfast_backend_opendal::{ObjectStorage, S3Config};
use holdfast_storage::{ObjectKind, PutMode, Storage, StorageError};

/// A cluster for this test process; stopped and removed on drop (and by the script's watchdog
/// when the process dies).
struct Garage {
    dir: PathBuf,
    env: HashMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/garage-cluster.sh")
}

impl Garage {
    fn up() -> Garage {
        let dir =
            std::env::temp_dir().join(format!("holdfast-garage-quickack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let o = std::process::Command::new("bash")
            .arg(script())
            .arg("up")
            .arg(&dir)
            .env("GARAGE_OWNER_PID", std::process::id().to_string())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "starting Garage failed (install it with `cargo install garage`, as scripts/test.sh does, or set HOLDFAST_SKIP_S3=1 to opt out): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let env = std::fs::read_to_string(dir.join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        Garage { dir, env }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A GET's response body must not wait for the client's delayed ACK. Garage (like any server
/// with Nagle's algorithm on) holds the body's last segment until the header is ACKed, and a
/// Linux client delays that ACK by up to 40 ms: every read then cost about 40 ms however
/// small, which bound restore by request latency. Sequential small ranged reads through the
/// repository backend must take well under that.
#[test]
fn s3_small_reads_do_not_wait_for_delayed_acks() {
    if std::env::var("HOLDFAST_SKIP_S3").is_ok_and(|v| v == "1") {
        eprintln!("HOLDFAST_SKIP_S3=1: object-storage tests opted out");
        return;
    }
    let c = Garage::up();
    let cfg = S3Config {
        bucket: c.env["HOLDFAST_TEST_BUCKET"].clone(),
        // Characters that need percent-encoding in the key: the signature must still match.
        prefix: "quick ack+1".into(),
        endpoint: Some(c.env["AWS_ENDPOINT_URL"].clone()),
        region: Some(c.env["AWS_REGION"].clone()),
        access_key_id: Some(c.env["AWS_ACCESS_KEY_ID"].clone()),
        secret_access_key: Some(c.env["AWS_SECRET_ACCESS_KEY"].clone()),
        env_prefix: "AWS".into(),
    };
    let s = ObjectStorage::s3(&cfg).unwrap();
    let data = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>();
    let name = "ab".repeat(32);
    s.put(ObjectKind::Pack, &name, &data, PutMode::Overwrite)
        .unwrap();
    assert_eq!(s.get(ObjectKind::Pack, &name).unwrap(), data);
    let mut took = Vec::new();
    for i in 0..41u64 {
        let (off, len) = (i * 20_011 % 1_000_000, 10_000 + i * 37);
        let t = Instant::now();
        let got = s.get_range(ObjectKind::Pack, &name, off, len).unwrap();
        took.push(t.elapsed());
        assert_eq!(
            got,
            data[off as usize..(off + len) as usize],
            "range {off}+{len}"
        );
    }
    took.sort();
    let median = took[took.len() / 2];
    eprintln!(
        "small ranged reads: median {median:?}, slowest {:?}",
        took[took.len() - 1]
    );
    assert!(
        median < Duration::from_millis(25),
        "a 10 kB ranged read takes {median:?} (median of 41): the response waits for a delayed ACK"
    );
    // Errors keep their meaning: a missing object, and a range past the end.
    let e = s.get(ObjectKind::Pack, &"cd".repeat(32)).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = s
        .get_range(ObjectKind::Pack, &name, (1 << 20) - 10, 100)
        .unwrap_err();
    assert!(matches!(e, StorageError::ShortRead { .. }), "{e}");
    let e = s
        .get_range(ObjectKind::Pack, &name, 2 << 20, 100)
        .unwrap_err();
    assert!(matches!(e, StorageError::ShortRead { .. }), "{e}");
}
