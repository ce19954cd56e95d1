//! Tampering with the garbage-collection records: writer sessions and gc plans. Each cell runs
//! the real `holdfast` binary on a real local repository; an attacker with write access to the
//! store (but no password) deletes, rolls back, replays or flips the record. The attack that
//! matters for a session is against a *running* backup: it is suspended (SIGSTOP) once it has
//! stored some packs, its session is tampered with, `forget` and `prune --max-unused 0` run,
//! and it is resumed. Acceptable: the backup fails with a named error and the repository checks
//! clean and a new backup restores byte for byte, or prune spared what the backup needs and its
//! snapshot restores byte for byte. Never: exit 0 with a snapshot that check or restore finds
//! broken.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use assert_cmd::cargo::CommandCargoExt;
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use tempfile::TempDir;

mod support;

const PASSWORD: &str = "tamper gc: correct horse battery staple";
/// A backup's heartbeat in these tests (the test seam `HOLDFAST_TEST_HEARTBEAT_MS`): a real
/// backup refreshes its record every minute, so within a long backup the heartbeat always
/// rewrites a record between a prune and the end of the backup. These tests compress that.
const HEARTBEAT_MS: &str = "100";

fn cmd(repo: &Path) -> std::process::Command {
    let mut c = std::process::Command::cargo_bin("holdfast").expect("holdfast binary");
    for v in [
        "HOLDFAST_REPOSITORY",
        "HOLDFAST_PASSWORD_FILE",
        "HOLDFAST_PASSWORD_COMMAND",
        "HOLDFAST_NOW",
        "HOLDFAST_LOG",
        "HOLDFAST_TEST_HEARTBEAT_MS",
    ] {
        c.env_remove(v);
    }
    c.env("HOLDFAST_PASSWORD", PASSWORD)
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .env("HOLDFAST_TEST_HEARTBEAT_MS", HEARTBEAT_MS)
        .arg("--repo")
        .arg(repo);
    c
}

/// What a command did.
struct Run {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- {} exited with {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{self}"))
    }
}

fn output(what: String, out: std::process::Output) -> Run {
    Run {
        what,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn hf_env(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = assert_cmd::Command::from_std(cmd(repo));
    c.timeout(Duration::from_secs(120))
        .envs(env.iter().copied())
        .args(args);
    output(
        format!("holdfast {}", args.join(" ")),
        c.output().expect("running holdfast"),
    )
}

fn hf(repo: &Path, args: &[&str]) -> Run {
    hf_env(repo, args, &[])
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test paths")
}

fn write_random_files(root: &Path, prefix: &str, files: usize, size: usize, seed: u64) {
    fs::create_dir_all(root).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..files {
        let mut v = vec![0u8; size];
        rng.fill_bytes(&mut v);
        fs::write(root.join(format!("{prefix}{i}")), v).unwrap();
    }
}

/// Files (relative names) under a repository directory.
fn names(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn packs(repo: &Path) -> usize {
    names(&repo.join("data")).len()
}

fn signal(child: &Child, sig: libc::c_int) {
    let r = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({}, {sig})", child.id());
}

/// Wait until `cond` holds (polling), or fail with `what`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

/// The repository checks clean with every byte read, and its newest snapshot restores to
/// exactly `src`.
fn check_and_restore(t: &TempDir, repo: &Path, src: &Path) {
    let hfc = |args: &[&str]| {
        let mut c = assert_cmd::Command::from_std(cmd(repo));
        c.args(args);
        c
    };
    support::check_and_restore_latest(&hfc, t.path(), src);
}

/// A repository with a snapshot A of 8 MiB, forgotten by the attack, and a running backup B
/// of A's files and 32 MiB more, suspended once it has stored a few packs of its own. B
/// deduplicates against A's packs and stores new ones: a prune that counts B dead deletes both.
struct Attack {
    t: TempDir,
    repo: PathBuf,
    src: PathBuf,
    b: Option<Child>,
}

impl Attack {
    fn start() -> Attack {
        let t = TempDir::new().unwrap();
        let repo = t.path().join("repo");
        let src = t.path().join("src");
        hf(&repo, &["init", "--pack-size-mib", "1"]).ok();
        write_random_files(&src, "a", 4, 2 << 20, 1);
        hf(&repo, &["backup", path(&src)]).ok();
        let after_a = packs(&repo);
        write_random_files(&src, "b", 16, 2 << 20, 2);
        let mut c = cmd(&repo);
        c.arg("backup")
            .arg(&src)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        let mut a = Attack {
            t,
            repo,
            src,
            b: Some(child),
        };
        wait_for("the backup to store 3 packs", || {
            assert!(
                a.b.as_mut().unwrap().try_wait().unwrap().is_none(),
                "the backup ended before it could be suspended"
            );
            packs(&a.repo) >= after_a + 3
        });
        signal(a.b.as_ref().unwrap(), libc::SIGSTOP);
        a
    }

    fn session(&self) -> PathBuf {
        let s = names(&self.repo.join("sessions"));
        assert_eq!(s.len(), 1, "one running backup, one session: {s:?}");
        self.repo.join("sessions").join(&s[0])
    }

    /// Forget A and prune with nothing to spare; returns prune's JSON report.
    fn forget_and_prune(&self, env: &[(&str, &str)]) -> Value {
        hf(&self.repo, &["forget", "--keep-last", "0"]).ok();
        let p = hf_env(
            &self.repo,
            &["--json", "prune", "--max-unused", "0"],
            env,
        )
        .ok();
        p.json()
    }

    /// Resume B and wait for it.
    fn resume(&mut self) -> Run {
        let child = self.b.take().unwrap();
        signal(&child, libc::SIGCONT);
        output("the suspended backup".into(), child.wait_with_output().unwrap())
    }

    /// Either B failed with the named error, and a new backup restores exactly; or B recorded
    /// a snapshot that checks clean and restores exactly. Returns whether B failed.
    fn assert_acceptable(&self, b: &Run) -> bool {
        let failed = b.code != Some(0);
        if failed {
            assert_eq!(b.code, Some(1), "{b}");
            assert!(
                b.stderr.contains("no snapshot was recorded")
                    && b.stderr.contains("Run the backup again"),
                "the backup failed without the named error:\n{b}"
            );
            let snaps = hf(&self.repo, &["--json", "snapshots"]).ok().json();
            assert_eq!(snaps.as_array().unwrap().len(), 0, "{snaps}");
            hf(&self.repo, &["check", "--read-data"]).ok();
            hf(&self.repo, &["backup", path(&self.src)]).ok();
        }
        check_and_restore(&self.t, &self.repo, &self.src);
        failed
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        if let Some(mut c) = self.b.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// session
// ---------------------------------------------------------------------------------------------

#[test]
fn session_delete_during_a_running_backup_fails_it_by_name() {
    let mut a = Attack::start();
    fs::remove_file(a.session()).unwrap();
    let p = a.forget_and_prune(&[]);
    // With no session left, prune deletes what B uses at once: the attack worked.
    assert!(p["waiting"].as_array().unwrap().is_empty(), "{p}");
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    let b = a.resume();
    assert!(a.assert_acceptable(&b), "the backup recorded over deleted packs:\n{b}");
}
