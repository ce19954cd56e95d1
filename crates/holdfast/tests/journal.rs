//! `kind = "journal"` sources on real journal files: written by systemd-journal-remote from
//! an export stream (this machine runs no journald), read back by the real journalctl through
//! the CLI. Incremental runs read only the new entries; the newest recovery point restores the
//! whole journal, each entry once and in order; a replaced journal is a loud warning and no
//! plain success; restore refuses a non-empty target; drills convert and count; discover names
//! a journal directory until a source reads that very directory. Needs systemd-journal-remote
//! (scripts/test.sh installs it): every test fails, rather than passes, without it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Std, Stdio};

use serde_json::Value;

const BOOT: &str = "0123456789abcdef0123456789abcdef";

fn journal_remote() -> PathBuf {
    ["/usr/lib/systemd", "/lib/systemd"]
        .iter()
        .map(|d| Path::new(d).join("systemd-journal-remote"))
        .find(|p| p.is_file())
        .expect("systemd-journal-remote is missing: install the Debian package systemd-journal-remote (scripts/test.sh does)")
}

/// Export-format entries `from..from+n`; every third has a binary field (a newline in it).
fn entries(from: u64, n: u64, tag: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..from + n {
        write!(
            out,
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={BOOT}\nSYSLOG_IDENTIFIER=test\n_TRANSPORT=journal\n_SYSTEMD_UNIT={}.service\nMESSAGE={tag} entry {i}\n",
            1_700_000_000_000_000 + i * 1000,
            1000 + i,
            if i % 2 == 0 { "web" } else { "db" }
        )
        .unwrap();
        if i % 3 == 0 {
            out.extend_from_slice(b"DETAIL\n");
            let data = format!("line one {i}\nline two");
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// Append entries to `dir/system.journal` with systemd-journal-remote.
fn append(dir: &Path, from: u64, n: u64, tag: &str) {
    append_to(&dir.join("system.journal"), from, n, tag)
}

/// Append entries to the journal file `file` with systemd-journal-remote.
fn append_to(file: &Path, from: u64, n: u64, tag: &str) {
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut c = Std::new(journal_remote())
        .arg(format!("--output={}", file.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(&entries(from, n, tag))
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The journal as journalctl exports it now.
fn export_of(dir: &Path) -> Vec<u8> {
    let o = Std::new("journalctl")
        .arg(format!("--directory={}", dir.display()))
        .args(["-q", "--no-pager", "-o", "export"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// The MESSAGE of every entry of an export stream, in order.
fn messages(export: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(export)
        .lines()
        .filter_map(|l| l.strip_prefix("MESSAGE=").map(str::to_string))
        .collect()
}

fn expect(tag_ranges: &[(&str, u64, u64)]) -> Vec<String> {
    tag_ranges
        .iter()
        .flat_map(|(t, a, n)| (*a..*a + *n).map(move |i| format!("{t} entry {i}")))
        .collect()
}

mod support;
use support::scratch::Scratch as W;

impl W {
    /// The fixture with `sources`, once systemd-journal-remote is known to be there.
    fn with(sources: &str) -> W {
        journal_remote();
        let w = W::new();
        w.sources(sources);
        w
    }
    fn journal(&self, name: &str, dir: &Path, extra: &str) -> String {
        format!(
            "[[source]]\nname = \"{name}\"\nkind = \"journal\"\ndirectory = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\n{extra}\n",
            dir.display()
        )
    }
    /// protect one source, due (each run 20 minutes after the last); its backup job and the
    /// exit code.
    fn protect(&self, source: &str) -> (Value, i32) {
        self.protect_as(source, None)
    }
    /// The snapshots, oldest first.
    fn snapshots(&self) -> Vec<Value> {
        let v = self.json(&["--repo", "repo", "snapshots"], 0);
        v.as_array().unwrap().clone()
    }
    fn newest_summary(&self) -> Value {
        let s = self.snapshots();
        let last = s.last().unwrap();
        last.get("summary")
            .unwrap_or(&last["snapshot"]["summary"])
            .clone()
    }
    /// Restore the source into `target`; its bytes.
    fn restored(&self, source: &str, target: &str) -> Vec<u8> {
        let t = self.path(target);
        let _ = fs::remove_file(&t);
        self.run(
            &[
                "restore",
                "--source",
                source,
                "--target",
                t.to_str().unwrap(),
            ],
            0,
        );
        fs::read(&t).unwrap()
    }
}

/// Bytes of the last `n` entries of an export stream (entries end with an empty line; the
/// test's binary fields hold no empty line).
fn tail_bytes(export: &[u8], n: usize) -> u64 {
    let text = String::from_utf8_lossy(export);
    let parts: Vec<&str> = text.split_inclusive("\n\n").collect();
    parts[parts.len() - n..]
        .iter()
        .map(|p| p.len() as u64)
        .sum()
}

#[test]
fn journal_incremental_restore_refuse_and_drill() {
    let w = W::with("");
    let jdir = w.path("journal");
    append(&jdir, 1, 50, "a");
    w.sources(&w.journal(
        "sys",
        &jdir,
        "verify = \"journalctl --file \\\"$HOLDFAST_DRILL_JOURNAL\\\" -q -o cat | grep -qx 'a entry 57'\"",
    ));
    w.run(&["--repo", "repo", "init"], 0);

    let (job, _) = w.protect("sys");
    assert_eq!(job["state"], "completed", "{job}");
    let s1 = w.newest_summary();
    assert_eq!(s1["files_new"], 1, "{s1}");
    assert_eq!(s1["bytes_read"], export_of(&jdir).len() as u64, "{s1}");

    // Seven more entries: the next run reads only those, and keeps the first piece unread.
    append(&jdir, 51, 7, "a");
    let (job, _) = w.protect("sys");
    assert_eq!(job["state"], "completed", "{job}");
    let s2 = w.newest_summary();
    let all = export_of(&jdir);
    assert_eq!(s2["files_new"], 1, "{s2}");
    assert_eq!(s2["files_unmodified"], 1, "{s2}");
    assert_eq!(
        s2["bytes_read"],
        tail_bytes(&all, 7),
        "only new entries: {s2}"
    );
    assert_eq!(s2["total_bytes"], all.len() as u64, "{s2}");

    // No new entries: a recovery point all the same, reading nothing, adding no piece.
    let before = w.snapshots().len();
    let (job, _) = w.protect("sys");
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(w.snapshots().len(), before + 1);
    let s3 = w.newest_summary();
    assert_eq!(
        (
            s3["bytes_read"].as_u64(),
            s3["files_new"].as_u64(),
            s3["files_unmodified"].as_u64()
        ),
        (Some(0), Some(0), Some(2)),
        "{s3}"
    );

    // The newest point restores the whole journal: the same bytes journalctl exports, so
    // every entry once, in order, nothing doubled at the piece boundary.
    let got = w.restored("sys", "out.export");
    assert_eq!(messages(&got), expect(&[("a", 1, 57)]));
    assert!(got == all, "the restored export is journalctl's export");

    // A non-empty target is refused without --replace, then replaced.
    let t = w.path("out.export");
    fs::write(&t, b"precious").unwrap();
    let (_, err) = w.run(
        &[
            "restore",
            "--source",
            "sys",
            "--target",
            t.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("--replace"), "{err}");
    assert_eq!(fs::read(&t).unwrap(), b"precious");
    let full = w.path("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    let (_, err) = w.run(
        &[
            "restore",
            "--source",
            "sys",
            "--target",
            full.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("not empty"), "{err}");
    w.run(
        &[
            "restore",
            "--source",
            "sys",
            "--target",
            t.to_str().unwrap(),
            "--replace",
        ],
        0,
    );
    assert!(fs::read(&t).unwrap() == all);

    // A `.journal` target: converted by systemd-journal-remote, readable by journalctl.
    let jf = w.path("restored.journal");
    w.run(
        &[
            "restore",
            "--source",
            "sys",
            "--target",
            jf.to_str().unwrap(),
        ],
        0,
    );
    let o = Std::new("journalctl")
        .arg(format!("--file={}", jf.display()))
        .args(["-q", "--no-pager", "-o", "export"])
        .output()
        .unwrap();
    assert_eq!(messages(&o.stdout), expect(&[("a", 1, 57)]));

    // The drill converts and counts, and runs verify.
    let d = w.json(&["drill", "sys"], 0);
    let said = d.to_string();
    assert!(said.contains("counts 57 entries, as recorded"), "{said}");
    assert!(said.contains("verify: ok"), "{said}");
    w.sources(&w.journal("sys", &jdir, "verify = \"false\""));
    let o = w.cmd(&["--json", "drill", "sys"]).output().unwrap();
    assert_ne!(o.status.code(), Some(0), "a failing verify fails the drill");

    // A corrupted piece fails the drill.
    w.sources(&w.journal("sys", &jdir, ""));
    let mut packs = Vec::new();
    let mut stack = vec![w.path("repo/data")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                packs.push(p)
            }
        }
    }
    assert!(!packs.is_empty());
    for p in packs {
        let mut b = fs::read(&p).unwrap();
        let i = b.len() / 3;
        b[i] ^= 0x55;
        fs::write(&p, b).unwrap();
    }
    let o = w.cmd(&["--json", "drill", "sys"]).output().unwrap();
    assert_ne!(
        o.status.code(),
        Some(0),
        "a corrupted piece must fail the drill: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn journal_replaced_is_a_loud_warning_never_plain_success() {
    let w = W::with("");
    let jdir = w.path("journal");
    append(&jdir, 1, 10, "old");
    w.sources(&w.journal("sys", &jdir, ""));
    w.run(&["--repo", "repo", "init"], 0);
    assert_eq!(w.protect("sys").0["state"], "completed");
    w.json(&["drill", "sys"], 0);
    // A plain run after the drill: the workload is compliant, protect exits 0.
    append(&jdir, 11, 2, "old");
    let (job, code) = w.protect("sys");
    assert_eq!(
        (job["state"].as_str(), code),
        (Some("completed"), 0),
        "{job}"
    );

    // The journal is replaced (a new journal: its sequence numbers start again).
    fs::remove_file(jdir.join("system.journal")).unwrap();
    append(&jdir, 100, 5, "new");
    let (job, code) = w.protect("sys");
    assert_eq!(job["state"], "completed_with_warnings", "{job}");
    assert_eq!(
        code, 3,
        "a backup that may have lost entries is not plain success"
    );
    let said = job["messages"].to_string();
    assert!(said.contains("ENTRIES MAY HAVE BEEN LOST"), "{said}");
    let snaps = w.snapshots();
    let last = snaps.last().unwrap();
    assert!(
        last.to_string().contains("ENTRIES MAY HAVE BEEN LOST"),
        "the snapshot records the warning: {last}"
    );
    let got = w.restored("sys", "a.export");
    assert_eq!(messages(&got), expect(&[("old", 1, 12), ("new", 100, 5)]));
    let (out, _) = w.run(
        &[
            "restore",
            "--source",
            "sys",
            "--target",
            w.path("b.export").to_str().unwrap(),
        ],
        0,
    );
    assert!(
        out.contains("ENTRIES MAY HAVE BEEN LOST"),
        "restore repeats it: {out}"
    );

    // The next run continues from the new journal's cursor, plainly.
    append(&jdir, 105, 2, "new");
    let (job, code) = w.protect("sys");
    assert_eq!(
        (job["state"].as_str(), code),
        (Some("completed"), 0),
        "{job}"
    );
    assert_eq!(
        w.newest_summary()["bytes_read"],
        tail_bytes(&export_of(&jdir), 2)
    );
    let got = w.restored("sys", "c.export");
    assert_eq!(messages(&got), expect(&[("old", 1, 12), ("new", 100, 7)]));
    let d = w.json(&["drill", "sys"], 0);
    assert!(d.to_string().contains("counts 19 entries"), "{d}");
}

#[test]
fn discover_names_a_journal_until_a_source_reads_that_directory() {
    let w = W::with("");
    let root = w.path("root");
    let app = root.join("app/journal");
    let other = root.join("other/journal");
    append(&app, 1, 3, "app");
    append(&other, 1, 3, "other");
    let find = |w: &W| -> (Value, Value) {
        let o = w
            .cmd(&[
                "--json",
                "discover",
                "--no-host",
                "--root",
                root.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        let at = |d: &Path| {
            let d = fs::canonicalize(d).unwrap().display().to_string();
            v.as_array()
                .unwrap_or_else(|| panic!("{v}"))
                .iter()
                .find(|f| f["kind"] == "journal" && f["location"] == d)
                .cloned()
                .unwrap_or_else(|| panic!("{d} not found: {v}"))
        };
        (at(&app), at(&other))
    };
    // A journal source of another directory covers only that one.
    w.sources(&w.journal("other", &other, ""));
    let (a, o) = find(&w);
    assert!(a["protected_by"].is_null(), "{a}");
    assert_eq!(o["protected_by"], "other", "{o}");
    // --suggest gives a journal source of that directory.
    let o = w
        .cmd(&[
            "discover",
            "--no-host",
            "--suggest",
            "--root",
            root.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    let canon = fs::canonicalize(&app).unwrap();
    assert!(
        said.contains("kind = \"journal\"")
            && said.contains(&format!("directory = \"{}\"", canon.display())),
        "{said}"
    );
    // Named through a symbolic link: the same directory, so covered.
    std::os::unix::fs::symlink(&app, w.path("app-link")).unwrap();
    w.sources(&format!(
        "{}{}",
        w.journal("other", &other, ""),
        w.journal("app", &w.path("app-link"), "")
    ));
    let (a, _) = find(&w);
    assert_eq!(a["protected_by"], "app", "{a}");
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn tohex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A recovery point whose newest piece records one entry more than it holds (written with the
/// repository's key, as a buggy or malicious writer would): the drill must fail, and a restore
/// must refuse it, naming the piece.
#[test]
fn journal_drill_fails_on_a_forged_entry_count() {
    use holdfast_core::built::{backup_built, BuiltOptions, BuiltTree};
    let w = W::with("");
    let jdir = w.path("journal");
    append(&jdir, 1, 20, "a");
    w.sources(&w.journal("sys", &jdir, ""));
    w.run(&["--repo", "repo", "init"], 0);
    assert_eq!(w.protect("sys").0["state"], "completed");
    append(&jdir, 21, 4, "a");
    assert_eq!(w.protect("sys").0["state"], "completed");
    w.json(&["drill", "sys"], 0);

    let storage: std::sync::Arc<dyn holdfast_storage::Storage> =
        std::sync::Arc::new(holdfast_backend_local::LocalStorage::new(w.path("repo")));
    let repo = holdfast_core::Repository::open(storage, b"pw").unwrap();
    let (all, _) = holdfast_core::snapshot::load_all(&repo).unwrap();
    let newest = all
        .iter()
        .filter(|e| e.snapshot.source.as_deref() == Some("sys"))
        .max_by_key(|e| e.snapshot.time)
        .unwrap()
        .snapshot
        .clone();
    let opts = BuiltOptions {
        label: newest.paths[0].clone(),
        source: Some("sys".into()),
        tags: Vec::new(),
        time: Some(chrono::Utc::now() + chrono::Duration::days(1)),
    };
    backup_built(&repo, &opts, &holdfast_core::progress::NoProgress, |tw| {
        let top = holdfast_core::browse::load_tree(&repo, tw.index(), &newest.tree)?;
        let mut dir = top.nodes[0].clone();
        let mut pieces =
            holdfast_core::browse::load_tree(&repo, tw.index(), &dir.subtree.unwrap())?.nodes;
        let last = pieces.last_mut().unwrap();
        let x = &mut last.xattrs[0];
        let mut meta: Value = serde_json::from_slice(&unhex(&x.value)).unwrap();
        meta["entries"] = (meta["entries"].as_u64().unwrap() + 1).into();
        x.value = tohex(&serde_json::to_vec(&meta).unwrap());
        dir.subtree = Some(tw.store_tree(pieces)?);
        let root = tw.store_tree(vec![dir])?;
        Ok(BuiltTree {
            root,
            summary: Default::default(),
            notes: Vec::new(),
        })
    })
    .unwrap();

    let o = w.cmd(&["--json", "drill", "sys"]).output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_ne!(o.status.code(), Some(0), "{said}");
    assert!(
        said.contains("piece 2 holds 4 entries") && said.contains("records 5 entries"),
        "{said}"
    );
    let t = w.path("forged.export");
    let (_, err) = w.run(
        &[
            "restore",
            "--source",
            "sys",
            "--target",
            t.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("piece 2 holds 4 entries"), "{err}");
    assert!(!t.exists(), "a refused restore leaves no target");
}

#[test]
fn journal_units_filter_keeps_only_those_units_entries() {
    let w = W::with("");
    let jdir = w.path("journal");
    append(&jdir, 1, 10, "u");
    w.sources(&w.journal("web", &jdir, "units = [\"web.service\"]"));
    w.run(&["--repo", "repo", "init"], 0);
    assert_eq!(w.protect("web").0["state"], "completed");
    append(&jdir, 11, 4, "u");
    assert_eq!(w.protect("web").0["state"], "completed");
    let got = w.restored("web", "web.export");
    let want: Vec<String> = (1..15)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("u entry {i}"))
        .collect();
    assert_eq!(messages(&got), want);
    let snaps = w.snapshots();
    assert!(
        snaps.last().unwrap().to_string().contains("journal:")
            && snaps
                .last()
                .unwrap()
                .to_string()
                .contains("?units=web.service"),
        "{snaps:?}"
    );
}

/// The file holding the previous cursor is vacuumed away while a newer file remains: the
/// warning, the newer entries stored once, and the next run plain again.
#[test]
fn journal_vacuumed_cursor_warns_and_keeps_the_newer_file_once() {
    let w = W::with("");
    let jdir = w.path("journal");
    append_to(&jdir.join("old.journal"), 1, 8, "v");
    w.sources(&w.journal("sys", &jdir, ""));
    w.run(&["--repo", "repo", "init"], 0);
    assert_eq!(w.protect("sys").0["state"], "completed");
    append_to(&jdir.join("new.journal"), 9, 5, "v");
    fs::remove_file(jdir.join("old.journal")).unwrap();
    let (job, code) = w.protect("sys");
    assert_eq!(job["state"], "completed_with_warnings", "{job}");
    assert_ne!(code, 0, "{job}");
    assert!(
        job["messages"]
            .to_string()
            .contains("ENTRIES MAY HAVE BEEN LOST"),
        "{job}"
    );
    let got = w.restored("sys", "v.export");
    assert_eq!(messages(&got), expect(&[("v", 1, 13)]));
    append_to(&jdir.join("new.journal"), 14, 1, "v");
    assert_eq!(w.protect("sys").0["state"], "completed");
    let got = w.restored("sys", "v2.export");
    assert_eq!(messages(&got), expect(&[("v", 1, 14)]));
}

/// A journal too large for one journal file: systemd-journal-remote rotates full files out
/// while converting, so the drill counts every file it wrote, and a `.journal` restore leaves
/// them all beside the target (a count of the active file alone was 26,240 of 201,000).
#[test]
fn journal_larger_than_one_journal_file_drills_and_restores_every_file() {
    let w = W::with("");
    let jdir = w.path("journal");
    let n = 200_000;
    append(&jdir, 1, n, "big");
    w.sources(&w.journal("sys", &jdir, ""));
    w.run(&["--repo", "repo", "init"], 0);
    assert_eq!(w.protect("sys").0["state"], "completed");
    let d = w.json(&["drill", "sys"], 0);
    assert!(
        d.to_string()
            .contains(&format!("counts {n} entries, as recorded")),
        "{d}"
    );
    let out = w.path("out");
    fs::create_dir_all(&out).unwrap();
    let target = out.join("big.journal");
    let (said, _) = w.run(
        &[
            "restore",
            "--source",
            "sys",
            "--target",
            target.to_str().unwrap(),
        ],
        0,
    );
    let files: Vec<PathBuf> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() > 1, "journal-remote rotated: {files:?}\n{said}");
    assert!(said.contains("rotated"), "{said}");
    let o = Std::new("journalctl")
        .arg(format!("--directory={}", out.display()))
        .args(["-q", "--no-pager", "-o", "json"])
        .output()
        .unwrap();
    let count = o
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"{"))
        .count();
    assert_eq!(count as u64, n);
}

/// A second host with a journal source of the same name and directory on the same repository
/// starts its own chain: it never continues from the first host's cursor, nor carries the
/// first host's entries into its recovery points.
#[test]
fn a_second_host_starts_its_own_journal_chain() {
    let w = W::with("");
    let jdir = w.path("journal");
    append(&jdir, 1, 10, "hosta");
    w.sources(&w.journal("sys", &jdir, ""));
    w.run(&["--repo", "repo", "init"], 0);
    let protect_as = |host: &str| w.protect_as("sys", Some(host)).0;
    assert_eq!(protect_as("host-a")["state"], "completed");
    // Host b's journal, at the same path, holds other entries.
    fs::remove_file(jdir.join("system.journal")).unwrap();
    append(&jdir, 1, 4, "hostb");
    let job = protect_as("host-b");
    assert_eq!(
        job["state"], "completed",
        "a fresh chain, no lost cursor: {job}"
    );
    assert!(!job["messages"].to_string().contains("LOST"), "{job}");
    let t = w.path("b.export");
    let o = w
        .cmd(&[
            "restore",
            "--source",
            "sys",
            "--target",
            t.to_str().unwrap(),
        ])
        .env("HOLDFAST_HOSTNAME", "host-b")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(messages(&fs::read(&t).unwrap()), expect(&[("hostb", 1, 4)]));
}
