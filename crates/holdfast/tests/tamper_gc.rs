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

use serde_json::Value;
use tempfile::TempDir;

mod support;

use support::run::{self, path, write_random_files, Run};
use support::tamperfx::Fx;

const PASSWORD: &str = "tamper gc: correct horse battery staple";
/// A backup's heartbeat in these tests (the test seam `HOLDFAST_TEST_HEARTBEAT_MS`): a real
/// backup refreshes its record every minute, so within a long backup the heartbeat always
/// rewrites a record between a prune and the end of the backup. These tests compress that.
const HEARTBEAT_MS: &str = "100";
/// The running backup's new files (2 MiB each, in 1 MiB packs).
const B_FILES: usize = 8;

fn cmd(repo: &Path) -> std::process::Command {
    // This host's history high-water marks, per test.
    let state = repo.with_extension("state").display().to_string();
    run::cmd(
        repo,
        PASSWORD,
        &[
            ("HOLDFAST_TEST_HEARTBEAT_MS", HEARTBEAT_MS.to_string()),
            ("HOLDFAST_STATE_DIR", state),
        ],
    )
}

fn hf_env(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = cmd(repo);
    c.envs(env.iter().copied());
    run::run(c, args, Duration::from_secs(120))
}

fn hf(repo: &Path, args: &[&str]) -> Run {
    hf_env(repo, args, &[])
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

/// A repository with a snapshot A of 4 MiB, forgotten by the attack, and a running backup B
/// of A's files and 16 MiB more, suspended once it has stored a few packs of its own. B
/// deduplicates against A's packs and stores new ones: a prune that counts B dead deletes both.
struct Attack {
    t: TempDir,
    repo: PathBuf,
    src: PathBuf,
    b: Option<Child>,
    /// B's session record as first seen, and when it was written.
    early: Option<(Vec<u8>, SystemTime)>,
}

/// A session record's bytes and modification time, read consistently (`None` if there is no
/// record, or it was being replaced).
fn read_record(sessions: &Path) -> Option<(PathBuf, Vec<u8>, SystemTime)> {
    let name = names(sessions).into_iter().next()?;
    let p = sessions.join(name);
    let before = fs::metadata(&p).ok()?.modified().ok()?;
    let bytes = fs::read(&p).ok()?;
    let after = fs::metadata(&p).ok()?.modified().ok()?;
    (before == after).then_some((p, bytes, after))
}

impl Attack {
    /// Start B and suspend it once it stored 3 packs; with `gap`, also only once its heartbeat
    /// rewrote its record at least `gap` after the record was first seen.
    fn start(gap: Option<Duration>) -> Attack {
        let t = TempDir::new().unwrap();
        let repo = t.path().join("repo");
        let src = t.path().join("src");
        hf(&repo, &["init", "--pack-size-mib", "1"]).ok();
        write_random_files(&src, "a", 4, 1 << 20, 1);
        hf(&repo, &["backup", path(&src)]).ok();
        let after_a = packs(&repo);
        write_random_files(&src, "b", B_FILES, 2 << 20, 2);
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
            early: None,
        };
        let sessions = a.repo.join("sessions");
        wait_for("the backup to store 3 packs", || {
            assert!(
                a.b.as_mut().unwrap().try_wait().unwrap().is_none(),
                "the backup ended before it could be suspended"
            );
            if a.early.is_none() {
                a.early = read_record(&sessions).map(|(_, b, t)| (b, t));
            }
            let beat = match (gap, &a.early) {
                (None, _) => true,
                (Some(g), Some((_, first))) => mtime(&a.session()) >= *first + g,
                (Some(_), None) => false,
            };
            beat && packs(&a.repo) >= after_a + 3
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
        let p = hf_env(&self.repo, &["--json", "prune", "--max-unused", "0"], env).ok();
        p.json()
    }

    /// Resume B and wait for it.
    fn resume(&mut self) -> Run {
        let child = self.b.take().unwrap();
        signal(&child, libc::SIGCONT);
        Run::from_output(
            "the suspended backup".into(),
            child.wait_with_output().unwrap(),
        )
    }

    /// Either B failed with the named error, and a new backup restores exactly; or B recorded
    /// a snapshot that checks clean and restores exactly. Returns whether B failed.
    fn assert_acceptable(&self, b: &Run) -> bool {
        let failed = b.code != Some(0);
        eprintln!("{b}");
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
        } else {
            let c = hf(&self.repo, &["check", "--read-data"]);
            assert_eq!(
                c.code,
                Some(0),
                "a false green: the backup exited 0, but its repository does not check clean:\n{b}\n{c}"
            );
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
    let mut a = Attack::start(None);
    fs::remove_file(a.session()).unwrap();
    let p = a.forget_and_prune(&[]);
    // With no session left, prune deletes what B uses at once: the attack worked.
    assert!(p["waiting"].as_array().unwrap().is_empty(), "{p}");
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    let b = a.resume();
    assert!(
        a.assert_acceptable(&b),
        "the backup recorded over deleted packs:\n{b}"
    );
}

#[test]
fn session_rolled_back_to_an_older_heartbeat_fails_the_running_backup_by_name() {
    let mut a = Attack::start(Some(Duration::from_millis(500)));
    let (old, first) = a.early.clone().unwrap();
    let now_written = mtime(&a.session());
    let gap = now_written.duration_since(first).unwrap();
    assert!(gap >= Duration::from_millis(500));
    fs::write(a.session(), &old).unwrap();
    // A prune 15 minutes after the old heartbeat, when the record B really wrote would still
    // be live: only the rollback makes B look dead.
    let at = first + Duration::from_secs(15 * 60) + gap / 2;
    let at = chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339();
    let p = a.forget_and_prune(&[("HOLDFAST_NOW", &at)]);
    assert_eq!(p["stale_sessions_removed"], 1, "{p}");
    assert!(p["waiting"].as_array().unwrap().is_empty(), "{p}");
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    // B's heartbeat writes its record again long before it ends; it must still not record.
    let b = a.resume();
    assert!(
        a.assert_acceptable(&b),
        "the backup recorded over deleted packs:\n{b}"
    );
}

#[test]
fn session_flipped_holds_prune_back_and_the_backup_restores() {
    let mut a = Attack::start(None);
    let s = a.session();
    let name = s.file_name().unwrap().to_string_lossy().into_owned();
    let mut d = fs::read(&s).unwrap();
    d[40] ^= 0x10;
    fs::write(&s, d).unwrap();
    // check names it as holding back garbage collection.
    let c = hf(&a.repo, &["--json", "check"]).ok();
    let w = c.json()["warnings"].to_string();
    assert!(w.contains(&name) && w.contains("holds back"), "{c}");
    // Prune cannot tell it from a live writer: its plan waits, naming it.
    let p = a.forget_and_prune(&[]);
    assert_eq!(p["packs_deleted"], 0, "{p}");
    assert!(p["packs_condemned"].as_u64().unwrap() > 0, "{p}");
    assert!(p["waiting"].to_string().contains(&name), "{p}");
    let b = a.resume();
    assert!(!a.assert_acceptable(&b), "{b}");
    // The plan executes once B ended, sparing everything B's snapshot uses.
    let p = hf(&a.repo, &["--json", "prune", "--max-unused", "0"])
        .ok()
        .json();
    assert!(p["waiting"].as_array().unwrap().is_empty(), "{p}");
    assert!(names(&a.repo.join("gc")).is_empty(), "{p}");
    check_and_restore(&a.t, &a.repo, &a.src);
}

#[test]
fn session_of_an_ended_backup_put_back_is_dead_at_once() {
    let mut a = Attack::start(None);
    let (old, _) = a.early.clone().unwrap();
    let name = a.session().file_name().unwrap().to_owned();
    let b = a.resume().ok();
    assert!(
        names(&a.repo.join("sessions")).is_empty(),
        "the ended backup left its session:\n{b}"
    );
    // Garbage: B's own files, once a newer snapshot without them is the only one kept.
    for i in 0..B_FILES {
        fs::remove_file(a.src.join(format!("b{i}"))).unwrap();
    }
    hf(&a.repo, &["backup", path(&a.src)]).ok();
    fs::write(a.repo.join("sessions").join(&name), &old).unwrap();
    hf(&a.repo, &["forget", "--keep-last", "1"]).ok();
    let p = hf(&a.repo, &["--json", "prune", "--max-unused", "0"])
        .ok()
        .json();
    // Its process is gone on this host: it blocks nothing and is removed.
    assert!(p["waiting"].as_array().unwrap().is_empty(), "{p}");
    assert_eq!(p["stale_sessions_removed"], 1, "{p}");
    assert!(
        p["packs_deleted"].as_u64().unwrap() >= B_FILES as u64,
        "{p}"
    );
    assert!(names(&a.repo.join("sessions")).is_empty());
    let c = hf(&a.repo, &["--json", "check", "--read-data"]).ok();
    assert!(!c.json()["warnings"].to_string().contains("session"), "{c}");
    check_and_restore(&a.t, &a.repo, &a.src);
}

// ---------------------------------------------------------------------------------------------
// gc plan
// ---------------------------------------------------------------------------------------------

/// [`Fx`]'s repository (S1: `keep`, `first`; S2: `keep`, `second`) with S1 forgotten, and a
/// plan condemning `first`'s data that waits: a fresh unreadable session record counts as a
/// live writer.
struct PlanFx {
    fx: Fx,
}

/// `first`'s content in [`Fx`].
fn first() -> Vec<u8> {
    support::bytes(2, 200_000)
}

impl PlanFx {
    fn new() -> PlanFx {
        let fx = Fx::new();
        fx.ok(&["forget", "--keep-last", "1"]);
        let fx = PlanFx { fx };
        fx.plan_waits();
        fx
    }
    fn gc(&self) -> PathBuf {
        self.fx.at("gc")
    }
    fn src(&self) -> PathBuf {
        self.fx.src()
    }
    /// Prune while a writer seems to run: its plan waits.
    fn plan_waits(&self) {
        let before = names(&self.gc());
        let blocker = self.fx.at("sessions").join("ab".repeat(32));
        fs::write(&blocker, b"not a session record: counts as live").unwrap();
        let p = self.prune();
        assert!(p["packs_condemned"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["packs_deleted"], 0, "{p}");
        fs::remove_file(&blocker).unwrap();
        assert_eq!(names(&self.gc()).len(), before.len() + 1, "{p}");
    }
    fn prune(&self) -> Value {
        self.fx.ok(&["--json", "prune", "--max-unused", "0"]).json()
    }
    /// Back up `src`; returns the stored bytes it added.
    fn backup(&self) -> u64 {
        let b = self
            .fx
            .ok(&["--json", "backup", self.src().to_str().unwrap()]);
        b.json()["summary"]["bytes_added"].as_u64().unwrap()
    }
    fn pack_set(&self) -> std::collections::BTreeSet<String> {
        self.fx.names("data").into_iter().collect()
    }
    /// Every byte checks clean and the newest snapshot restores to `src` exactly, before and
    /// after a last prune, which leaves no plan.
    fn clean(&self) {
        for _ in 0..2 {
            self.fx.ok(&["check", "--read-data"]);
            let to = self.fx.dir.path().join("restored");
            let _ = fs::remove_dir_all(&to);
            self.fx
                .ok(&["restore", "latest", "--target", to.to_str().unwrap()]);
            support::assert_same_tree(&self.src(), &to.join("src"));
            let p = self.prune();
            assert!(names(&self.gc()).is_empty(), "{p}");
        }
    }
}

#[test]
fn gc_plan_delete_lets_a_backup_use_its_packs_and_prune_spares_them() {
    let fx = PlanFx::new();
    let plans = names(&fx.gc());
    fs::remove_file(fx.gc().join(&plans[0])).unwrap();
    // Without the plan, the condemned packs are fair game: `first` comes back and is
    // deduplicated against them (not stored again).
    fs::write(fx.src().join("first"), first()).unwrap();
    let added = fx.backup();
    assert!(added < 100_000, "first was stored again ({added} bytes)");
    let p = fx.prune();
    assert!(p["waiting"].as_array().unwrap().is_empty(), "{p}");
    fx.clean();
}

#[test]
fn gc_plan_rollback_brings_back_an_executed_plan_and_drops_a_waiting_one() {
    let fx = PlanFx::new();
    let saved = fx.fx.dir.path().join("saved-gc");
    let gc = fx.gc();
    fs::create_dir_all(&saved).unwrap();
    for n in names(&gc) {
        fs::copy(gc.join(&n), saved.join(&n)).unwrap();
    }
    let p = fx.prune();
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    // New garbage, condemned by a second plan that waits: `second`'s packs.
    let second = fs::read(fx.src().join("second")).unwrap();
    fs::remove_file(fx.src().join("second")).unwrap();
    fx.backup();
    fx.fx.ok(&["forget", "--keep-last", "1"]);
    fx.plan_waits();
    // Roll gc/ back: the executed plan is back, the waiting one gone.
    fs::remove_dir_all(&gc).unwrap();
    fs::create_dir_all(&gc).unwrap();
    for n in names(&saved) {
        fs::copy(saved.join(&n), gc.join(&n)).unwrap();
    }
    fs::write(fx.src().join("second"), &second).unwrap();
    let added = fx.backup();
    assert!(added < 100_000, "second was stored again ({added} bytes)");
    let p = fx.prune();
    assert!(p["waiting"].as_array().unwrap().is_empty(), "{p}");
    fx.clean();
}

#[test]
fn gc_plan_replayed_after_it_executed_does_not_delete_a_pack_used_again() {
    let fx = PlanFx::new();
    let gc = fx.gc();
    let plan = names(&gc).pop().unwrap();
    let plan_bytes = fs::read(gc.join(&plan)).unwrap();
    let before = fx.pack_set();
    let saved: Vec<(String, Vec<u8>)> = before
        .iter()
        .map(|p| (p.clone(), fs::read(fx.fx.at(p)).unwrap()))
        .collect();
    let p = fx.prune();
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    let after = fx.pack_set();
    // The attacker puts the deleted packs back (authentic, so a backup adopts them) and a
    // backup of `first` deduplicates against them again.
    let deleted: Vec<&String> = before.difference(&after).collect();
    for (p, d) in saved.iter().filter(|(p, _)| deleted.contains(&p)) {
        fs::write(fx.fx.at(p), d).unwrap();
    }
    fs::write(fx.src().join("first"), first()).unwrap();
    let added = fx.backup();
    assert!(added < 100_000, "first was stored again ({added} bytes)");
    // Then the old plan that condemned them is put back. Prune executes it (nothing is
    // waiting), but recomputes what is referenced first. (No repacking in this prune: a pack
    // that is partly used would be repacked, which moves the data, and hides the point.)
    fs::write(gc.join(&plan), &plan_bytes).unwrap();
    let p = fx.fx.ok(&["--json", "prune", "--max-unused", "100"]).json();
    assert!(p["waiting"].as_array().unwrap().is_empty(), "{p}");
    assert!(!gc.join(&plan).exists(), "{p}");
    let now = fx.pack_set();
    assert!(
        deleted.iter().any(|d| now.contains(*d)),
        "prune deleted every replayed pack again: {p}"
    );
    fx.clean();
}
