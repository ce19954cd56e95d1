//! Tampering: an attacker with write access to the store but no password deletes, rolls back,
//! replays an old copy of, or flips a byte in, every kind of repository object. Each cell runs
//! the real `holdfast` binary on a real repository and asserts that the tampering ends in a
//! named error or a `check` finding, never in a successful command on wrong data.
//!
//! "Roll back" returns a kind's directory to an earlier state (what was added since is gone,
//! what was removed since is back); "replay" puts back one object that holdfast removed (or one
//! from another repository, for kinds that holdfast never removes). Every test has its own
//! state directory (`HOLDFAST_STATE_DIR`), which holds this host's history high-water mark.

use std::fs;

use serde_json::Value;

mod support;

use support::bytes;
use support::tamperfx::{flip, Fx};

fn edit_config(fx: &Fx, f: impl FnOnce(&mut Value)) {
    let p = fx.at("config");
    let mut c: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    f(&mut c);
    fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------------------------

#[test]
fn config_delete_is_named() {
    let fx = Fx::new();
    fs::remove_file(fx.at("config")).unwrap();
    fx.fails(&["snapshots"], 1, "key slots but no config object");
    fx.fails(
        &["backup", fx.src().to_str().unwrap()],
        1,
        "put the config back from a copy",
    );
}

#[test]
fn config_rollback_to_unauthenticated_format_1_is_refused() {
    let fx = Fx::new();
    // What the config looked like before format 2, with the attacker's chunker sizes.
    edit_config(&fx, |c| {
        c["version"] = 1.into();
        c.as_object_mut().unwrap().remove("mac");
        c.as_object_mut().unwrap().remove("inline_max");
        c["chunker"]["min"] = 64.into();
        c["chunker"]["avg"] = 256.into();
    });
    fx.fails(
        &["backup", fx.src().to_str().unwrap()],
        1,
        "has seen it authenticated",
    );
    fx.fails(&["check"], 1, "was tampered with");
}

#[test]
fn config_replayed_from_another_repository_does_not_open() {
    let fx = Fx::new();
    let other = fx.dir.path().join("other");
    let o = fx.run_in(&other, &["init"], &[]);
    assert_eq!(o.code, 0, "{o}");
    fs::copy(other.join("config"), fx.at("config")).unwrap();
    // The key slots are bound to the repository id: the password opens none.
    fx.fails(&["snapshots"], 12, "wrong password");
}

#[test]
fn config_edits_fail_the_mac_and_insane_values_are_refused_before_it() {
    let fx = Fx::new();
    let original = fs::read(fx.at("config")).unwrap();
    // The attack: small chunks (dedup lost, blob sizes leak file structure).
    edit_config(&fx, |c| {
        c["chunker"]["min"] = 64.into();
        c["chunker"]["avg"] = 256.into();
        c["chunker"]["max"] = 1024.into();
    });
    let o = fx.fails(
        &["backup", fx.src().to_str().unwrap()],
        1,
        "its MAC does not match",
    );
    assert!(o.stderr.contains("was tampered with"), "{o}");
    // Nothing was written with the attacker's settings.
    assert_eq!(fx.snapshots_raw(), 2);
    for (edit, needle) in [
        (
            Box::new(|c: &mut Value| c["compression"] = 100.into()) as Box<dyn Fn(&mut Value)>,
            "compression level 100",
        ),
        (
            Box::new(|c: &mut Value| c["cipher"] = "none".into()),
            "cipher \"none\"",
        ),
        (
            Box::new(|c: &mut Value| {
                let m = c["mac"].as_str().unwrap().to_string();
                let flipped = if m.starts_with('0') { "1" } else { "0" };
                c["mac"] = format!("{flipped}{}", &m[1..]).into();
            }),
            "its MAC does not match",
        ),
    ] {
        fs::write(fx.at("config"), &original).unwrap();
        edit_config(&fx, edit);
        fx.fails(&["snapshots"], 1, needle);
    }
    // A flipped byte anywhere in the file: not JSON, or a changed value.
    for offset in [5, 60, 120, 200] {
        let mut d = original.clone();
        d[offset] ^= 0x01;
        fs::write(fx.at("config"), &d).unwrap();
        let o = fx.run(&["snapshots"]);
        assert_ne!(o.code, 0, "flipped config byte {offset} was accepted: {o}");
    }
    fs::write(fx.at("config"), &original).unwrap();
    fx.ok(&["check"]);
}

impl Fx {
    fn snapshots_raw(&self) -> usize {
        fs::read_dir(self.at("snapshots")).unwrap().count()
    }
}

#[test]
fn format_1_repository_opens_warns_and_migrates() {
    let fx = Fx::new();
    // A repository as format 1 wrote it: no MAC, no history, and a host that never saw it.
    edit_config(&fx, |c| {
        c["version"] = 1.into();
        c.as_object_mut().unwrap().remove("mac");
        c.as_object_mut().unwrap().remove("inline_max");
    });
    fs::remove_dir_all(fx.at("history")).unwrap();
    fs::remove_dir_all(fx.dir.path().join("state")).unwrap();
    let o = fx.ok(&["snapshots"]);
    assert!(o.stderr.contains("run `holdfast migrate`"), "{o}");
    fx.check_warning("not authenticated");
    let o = fx.ok(&["--json", "migrate"]);
    let j = o.json();
    assert_eq!(j["config_migrated"], true, "{o}");
    assert_eq!(j["snapshots_recorded"], 2, "{o}");
    let c: Value = serde_json::from_slice(&fs::read(fx.at("config")).unwrap()).unwrap();
    assert_eq!(c["version"], 3);
    assert_eq!(c["inline_max"], 512);
    fx.ok(&["check"]);
    // Now a deleted snapshot of the migrated repository is found.
    let (newest, _) = fx.snapshots().pop().unwrap();
    fs::remove_file(fx.at("snapshots").join(&newest)).unwrap();
    fx.check_error("vanished outside forget");
}

// ---------------------------------------------------------------------------------------------
// key
// ---------------------------------------------------------------------------------------------

#[test]
fn key_delete_is_named_not_a_wrong_password() {
    let fx = Fx::new();
    for k in fx.names("keys") {
        fs::remove_file(fx.at(&k)).unwrap();
    }
    fx.fails(&["snapshots"], 1, "has no key slots");
}

#[test]
fn key_flip_is_named_malformed_or_fails_authentication() {
    let fx = Fx::new();
    let k = fx.names("keys").pop().unwrap();
    let raw = fs::read_to_string(fx.at(&k)).unwrap();
    let at = raw.find("\"wrapped\"").unwrap() + 20;
    // A flip that breaks the slot's structure is named as damage (exit 1)...
    flip(&fx.at(&k), at);
    let o = fx.run(&["snapshots"]);
    assert_eq!(o.code, 1, "{o}");
    let name = k.rsplit('/').next().unwrap();
    assert!(
        o.all().contains("malformed") && o.all().contains(name),
        "{o}"
    );
    // ...one that leaves it well formed can only fail authentication, which a wrong password
    // also does (exit 12); either way nothing opens.
    let mut text = raw.clone().into_bytes();
    text[at] = if text[at] == b'0' { b'1' } else { b'0' };
    fs::write(fx.at(&k), &text).unwrap();
    let o = fx.run(&["snapshots"]);
    assert_eq!(o.code, 12, "{o}\n{}", String::from_utf8_lossy(&text));
}

#[test]
fn key_replayed_after_removal_is_a_check_finding() {
    let fx = Fx::new();
    let o = fx.run_in(
        &fx.repo(),
        &["--json", "key", "add"],
        &[("HOLDFAST_NEW_PASSWORD", "revoked password")],
    );
    assert_eq!(o.code, 0, "{o}");
    let id = o.json()["key"].as_str().unwrap().to_string();
    let slot = fs::read(fx.at("keys").join(&id)).unwrap();
    fx.ok(&["key", "remove", &id]);
    fx.ok(&["check"]);
    fs::write(fx.at("keys").join(&id), slot).unwrap();
    fx.check_error("was removed but is back");
}

#[test]
fn key_rollback_after_password_change_is_a_check_finding() {
    let fx = Fx::new();
    let saved = fx.save("keys");
    let o = fx.run_in(
        &fx.repo(),
        &["key", "passwd"],
        &[("HOLDFAST_NEW_PASSWORD", "new password")],
    );
    assert_eq!(o.code, 0, "{o}");
    fx.roll_back("keys", &saved);
    // The old password opens again: check says so.
    fx.check_error("was removed but is back");
}

// ---------------------------------------------------------------------------------------------
// pack
// ---------------------------------------------------------------------------------------------

#[test]
fn pack_delete_is_a_check_error() {
    let fx = Fx::new();
    let p = fx.names("data").pop().unwrap();
    fs::remove_file(fx.at(&p)).unwrap();
    fx.check_error("is named by the index but missing");
}

#[test]
fn pack_rollback_is_a_check_error() {
    let fx = Fx::new();
    let saved = fx.save("data");
    fs::write(fx.src().join("third"), bytes(4, 200_000)).unwrap();
    fx.ok(&["backup", fx.src().to_str().unwrap()]);
    fx.roll_back("data", &saved);
    fx.check_error("is named by the index but missing");
}

#[test]
fn pack_replayed_after_prune_is_a_check_warning_and_loses_nothing() {
    let fx = Fx::new();
    let saved = fx.save("data");
    fx.forget_first_and_prune();
    assert!(fx.replay("data", &saved) > 0, "prune deleted no pack");
    fx.check_warning("is not indexed");
    // A backup may adopt it (it is authentic); the latest snapshot still restores.
    fx.ok(&["backup", fx.src().to_str().unwrap()]);
    let to = fx.dir.path().join("restored");
    fx.ok(&["restore", "latest", "--target", to.to_str().unwrap()]);
}

#[test]
fn pack_flip_is_a_check_error() {
    let fx = Fx::new();
    let p = fx.names("data").pop().unwrap();
    flip(&fx.at(&p), 100);
    fx.check_error("content does not match its name");
}

// ---------------------------------------------------------------------------------------------
// index
// ---------------------------------------------------------------------------------------------

#[test]
fn index_delete_is_a_check_error() {
    let fx = Fx::new();
    for i in fx.names("index") {
        fs::remove_file(fx.at(&i)).unwrap();
    }
    fx.check_error("missing from the repository index");
}

#[test]
fn index_rollback_is_a_check_error() {
    let fx = Fx::new();
    let saved = fx.save("index");
    fs::write(fx.src().join("third"), bytes(5, 200_000)).unwrap();
    fx.ok(&["backup", fx.src().to_str().unwrap()]);
    fx.roll_back("index", &saved);
    fx.check_error("missing from the repository index");
}

#[test]
fn index_replayed_after_prune_is_a_check_warning_and_its_entries_are_ignored() {
    let fx = Fx::new();
    let saved = fx.save("index");
    fx.forget_first_and_prune();
    assert!(
        fx.replay("index", &saved) > 0,
        "prune replaced no index file"
    );
    // It names the pruned packs; no snapshot needs them, so nothing is lost.
    fx.check_warning("is named by the index but missing");
    // A backup of the pruned file must store it again, not deduplicate against the entries of
    // a pack that is gone; its snapshot restores exactly.
    fs::write(fx.src().join("first"), bytes(2, 200_000)).unwrap();
    fx.ok(&["backup", fx.src().to_str().unwrap()]);
    fx.ok(&["check", "--read-data"]);
    let to = fx.dir.path().join("restored");
    fx.ok(&["restore", "latest", "--target", to.to_str().unwrap()]);
    assert_eq!(
        fs::read(to.join("src").join("first")).unwrap(),
        bytes(2, 200_000)
    );
    // Prune drops the stale entries: check is clean of them.
    fx.ok(&["prune", "--max-unused", "0"]);
    let o = fx.ok(&["--json", "check"]);
    assert!(
        !o.stdout.contains("is named by the index but missing"),
        "{o}"
    );
}

#[test]
fn index_flip_is_a_check_error() {
    let fx = Fx::new();
    let i = fx.names("index").pop().unwrap();
    flip(&fx.at(&i), 50);
    let j = fx.check_error("index");
    assert!(j["damaged"].to_string().contains("index"), "{j}");
}

// ---------------------------------------------------------------------------------------------
// snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_delete_of_the_newest_is_a_check_error() {
    let fx = Fx::new();
    let (newest, _) = fx.snapshots().pop().unwrap();
    fs::remove_file(fx.at("snapshots").join(&newest)).unwrap();
    let j = fx.check_error("vanished outside forget");
    assert_eq!(j["vanished"][0], newest.as_str(), "{j}");
    // And `history` says it too, with its own exit code.
    fx.fails(&["history"], 1, &newest[..8]);
}

#[test]
fn snapshot_rollback_with_its_history_is_a_check_error() {
    let fx = Fx::new();
    let (snaps, hist) = (fx.save("snapshots"), fx.save("history"));
    fs::write(fx.src().join("third"), bytes(6, 200_000)).unwrap();
    fx.ok(&["backup", fx.src().to_str().unwrap()]);
    // The attacker rolls both the snapshots and the history back: only this host's mark knows.
    fx.roll_back("snapshots", &snaps);
    fx.roll_back("history", &hist);
    fx.check_error("the history was rolled back");
    // After looking into it, the operator accepts it, and check is clean again.
    fx.ok(&["history", "--accept-loss"]);
    fx.ok(&["check"]);
}

#[test]
fn snapshot_replayed_after_forget_is_a_check_finding() {
    let fx = Fx::new();
    let saved = fx.save("snapshots");
    fx.forget_first_and_prune();
    assert_eq!(fx.replay("snapshots", &saved), 1);
    // Its data was pruned, so check fails on it, and names it as forgotten-and-back.
    let o = fx.run(&["--json", "check"]);
    assert_eq!(o.code, 1, "{o}");
    assert!(
        o.json()["warnings"]
            .to_string()
            .contains("forgotten but are present again"),
        "{o}"
    );
    // The next forget removes it again, whatever its policy keeps.
    fx.ok(&["forget", "--keep-last", "5"]);
    fx.ok(&["check"]);
}

#[test]
fn snapshot_flip_is_a_check_error() {
    let fx = Fx::new();
    let (newest, _) = fx.snapshots().pop().unwrap();
    flip(&fx.at("snapshots").join(&newest), 40);
    fx.check_error("is damaged");
}

// ---------------------------------------------------------------------------------------------
// record (retention lock)
// ---------------------------------------------------------------------------------------------

fn locked() -> Fx {
    let fx = Fx::new();
    fx.ok(&["retention-lock", "--min-age", "30d", "--compliance"]);
    fx
}

fn forget_refuses(fx: &Fx, needle: &str) {
    let before = fx.snapshots_raw();
    let o = fx.fails(
        &["forget", "--keep-last", "1"],
        1,
        "retention lock cannot be verified",
    );
    assert!(o.stderr.contains(needle), "{o}");
    assert_eq!(fx.snapshots_raw(), before, "forget removed snapshots: {o}");
}

#[test]
fn record_delete_of_the_lock_fails_closed() {
    let fx = locked();
    for r in fx.names("records") {
        fs::remove_file(fx.at(&r)).unwrap();
    }
    fx.fails(&["retention-lock"], 1, "no readable record holds it");
    forget_refuses(&fx, "--min-age 30d --compliance");
    fx.check_error("no readable record holds it");
    // Lowering is still refused: the history knows the lock.
    fx.fails(
        &["retention-lock", "--min-age", "1d"],
        1,
        "cannot be lowered",
    );
    // The fix named in the error works.
    fx.ok(&["retention-lock", "--min-age", "30d", "--compliance"]);
    let o = fx.ok(&["forget", "--keep-last", "1"]);
    assert!(o.stdout.contains("retention lock (compliance)"), "{o}");
}

#[test]
fn record_flip_fails_closed() {
    let fx = locked();
    let r = fx.names("records").pop().unwrap();
    flip(&fx.at(&r), 30);
    let name = r.trim_start_matches("records/");
    forget_refuses(&fx, name);
    fx.check_error(name);
}

#[test]
fn record_rollback_to_a_weaker_lock_fails_closed() {
    let fx = Fx::new();
    fx.ok(&["retention-lock", "--min-age", "10d"]);
    let saved = fx.save("records");
    fx.ok(&["retention-lock", "--min-age", "30d", "--compliance"]);
    fx.roll_back("records", &saved);
    forget_refuses(&fx, "30 days in compliance mode");
}

#[test]
fn record_replay_of_an_old_lock_does_not_weaken_it() {
    let fx = Fx::new();
    fx.ok(&["retention-lock", "--min-age", "1d"]);
    let saved = fx.save("records");
    fx.ok(&["retention-lock", "--min-age", "30d", "--compliance"]);
    for r in fs::read_dir(&saved).unwrap() {
        let r = r.unwrap();
        fs::copy(r.path(), fx.at("records").join(r.file_name())).unwrap();
    }
    let o = fx.ok(&["--json", "retention-lock"]);
    assert_eq!(o.json()["min_age_seconds"], 30 * 86_400, "{o}");
    let o = fx.ok(&["forget", "--keep-last", "1"]);
    assert!(o.stdout.contains("0 snapshot(s) removed"), "{o}");
}

// ---------------------------------------------------------------------------------------------
// history
// ---------------------------------------------------------------------------------------------

#[test]
fn history_delete_of_an_inner_entry_is_a_check_error() {
    let fx = Fx::new();
    let first = fx.names("history").into_iter().next().unwrap();
    fs::remove_file(fx.at(&first)).unwrap();
    fx.check_error("is missing: the history was cut");
}

#[test]
fn history_rollback_of_the_tail_is_a_check_error() {
    let fx = Fx::new();
    let last = fx.names("history").pop().unwrap();
    fs::remove_file(fx.at(&last)).unwrap();
    fx.check_error("the history was rolled back");
}

#[test]
fn history_replay_from_another_repository_is_damaged() {
    let fx = Fx::new();
    let other = fx.dir.path().join("other");
    assert_eq!(fx.run_in(&other, &["init"], &[]).code, 0);
    let src = fx.src();
    assert_eq!(
        fx.run_in(&other, &["backup", src.to_str().unwrap()], &[])
            .code,
        0
    );
    let e = fs::read_dir(other.join("history"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    fs::copy(e.path(), fx.at("history").join(e.file_name())).unwrap();
    fx.check_error("history entry");
}

#[test]
fn history_flip_is_a_check_error_and_blocks_forget() {
    let fx = Fx::new();
    let e = fx.names("history").pop().unwrap();
    flip(&fx.at(&e), 50);
    fx.check_error("content does not match its name");
    forget_refuses(&fx, "history");
}

// ---------------------------------------------------------------------------------------------
// gc plan and session
// ---------------------------------------------------------------------------------------------

#[test]
fn gc_plan_flip_is_a_named_error() {
    let fx = Fx::new();
    fx.ok(&["forget", "--keep-last", "1"]);
    // A plan that waits: an unreadable session counts as a live writer, so prune leaves its plan.
    let live = fx.at("sessions").join("ab".repeat(32));
    fs::write(&live, b"not an encrypted session: counts as live").unwrap();
    fx.ok(&["prune", "--max-unused", "0"]);
    let plans = fx.names("gc");
    assert!(
        !plans.is_empty(),
        "prune left no plan while a session looked live"
    );
    flip(&fx.at(&plans[0]), 40);
    // check names the damaged plan and the fix; a plan nobody can read condemns nothing anyone
    // can read, so backups go on (warning about it) and prune removes it.
    let o = fx.run(&["check"]);
    assert!(
        o.all().contains("gc plan")
            && o.all().contains("cannot be read")
            && o.all().contains("holdfast prune"),
        "{o}"
    );
    let o = fx.run(&["backup", fx.src().to_str().unwrap()]);
    assert!(o.code == 0 || o.code == 3, "{o}");
    assert!(
        o.all().contains("gc plan"),
        "the backup warns about it: {o}"
    );
    fs::remove_file(&live).unwrap();
    fx.ok(&["prune"]);
    assert!(
        !fx.names("gc").contains(&plans[0]),
        "prune removed the damaged plan"
    );
    fx.ok(&["check", "--read-data"]);
}
