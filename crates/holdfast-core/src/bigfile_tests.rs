//! Tests of the big-file pipeline (backup) and of split restores, on real files and a real
//! repository in a directory.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::backup::{backup, content_ids, BackupOptions, BackupOutcome};
use crate::id::Id;
use crate::keys::KdfParams;
use crate::progress::{NoProgress, Progress};
use crate::repo::{ChunkerParams, InitOptions, Repository};
use crate::restore::{restore, RestoreOptions};
use crate::snapshot;

/// Test seams of the pipeline's reader: which files went through it, and read errors injected
/// at an offset of a named file.
pub(crate) mod seam {
    use std::io::{self, Read};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// Files read through the pipeline.
    pub(crate) static PIPELINED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    /// `(file, offset)`: reading that file fails once the offset is reached.
    pub(crate) static READ_FAULTS: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

    struct Failing<R> {
        inner: R,
        pos: u64,
        fail_at: u64,
    }

    impl<R: Read> Read for Failing<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.fail_at {
                return Err(io::Error::other("injected read error (test seam)"));
            }
            let room = ((self.fail_at - self.pos) as usize).min(buf.len());
            let n = self.inner.read(&mut buf[..room])?;
            self.pos += n as u64;
            Ok(n)
        }
    }

    /// The reader for `path`, failing where a test asked it to.
    pub(crate) fn wrap<'a, R: Read + 'a>(path: &Path, r: R) -> Box<dyn Read + 'a> {
        PIPELINED.lock().unwrap().push(path.to_path_buf());
        let fault = READ_FAULTS
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, at)| *at);
        match fault {
            Some(fail_at) => Box::new(Failing {
                inner: r,
                pos: 0,
                fail_at,
            }),
            None => Box::new(r),
        }
    }

    /// Whether `path` was read through the pipeline.
    pub(crate) fn pipelined(path: &Path) -> bool {
        PIPELINED.lock().unwrap().iter().any(|p| p == path)
    }
}

/// Small chunks (16/64/256 KiB), so a few MiB are a big file of many chunks; 1 MiB packs, so a
/// big file spans several packs (and restores in several parts).
fn init(dir: &Path) -> Repository {
    let storage = Arc::new(holdfast_backend_local::LocalStorage::new(dir.join("repo")));
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        chunker: ChunkerParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        },
        pack_size: 1 << 20,
        ..Default::default()
    };
    Repository::init(storage, b"pw", &opts).unwrap()
}

/// `n` incompressible bytes (xorshift), different for each seed.
fn random(seed: u64, n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Compressible text.
fn text(n: usize) -> Vec<u8> {
    let words = ["alpha ", "beta ", "gamma\n", "delta ", "epsilon "];
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0usize;
    while out.len() < n {
        out.extend_from_slice(words[(i * 7 + i / 5) % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// An image-like file: random, a repeated random block, a zero run, text, a zero tail.
fn image() -> Vec<u8> {
    let block = random(2, 1 << 20);
    let mut v = random(1, 2 << 20);
    v.extend_from_slice(&block);
    v.extend(vec![0u8; 3 << 20]);
    v.extend_from_slice(&block);
    v.extend(text(1 << 20));
    v.extend(vec![0u8; 1 << 20]);
    v
}

fn run(repo: &Repository, src: &Path, progress: &dyn Progress) -> BackupOutcome {
    backup(
        repo,
        &BackupOptions {
            paths: vec![src.to_path_buf()],
            threads: 2,
            ..Default::default()
        },
        progress,
    )
    .unwrap()
}

fn restore_latest(repo: &Repository, target: &Path) {
    let (index, _) = repo.load_index().unwrap();
    let (all, _) = snapshot::load_all(repo).unwrap();
    let r = restore(
        repo,
        &index,
        all.last().unwrap(),
        &RestoreOptions {
            target: target.to_path_buf(),
            threads: 4,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

/// The node of `name` in the latest snapshot of `src`.
fn stored_node(repo: &Repository, name: &str) -> crate::tree::Node {
    let (index, _) = repo.load_index().unwrap();
    let (all, _) = snapshot::load_all(repo).unwrap();
    let root = crate::browse::load_tree(repo, &index, &all.last().unwrap().snapshot.tree).unwrap();
    let dir = crate::browse::load_tree(repo, &index, &root.nodes[0].subtree.unwrap()).unwrap();
    dir.get(name.as_bytes()).unwrap().clone()
}

/// The content ids of `name` in the latest snapshot of `src`.
fn stored_content(repo: &Repository, name: &str) -> Vec<Id> {
    stored_node(repo, name).content
}

#[test]
fn a_big_file_goes_through_the_pipeline_and_restores_identical_with_holes() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("disk.img");
    let want = image();
    fs::write(&big, &want).unwrap();
    fs::write(src.join("small"), b"a small file").unwrap();
    let repo = init(d.path());
    let out = run(&repo, &src, &NoProgress);
    assert!(seam::pipelined(&big), "the big file was not pipelined");
    assert!(out.snapshot.complete, "{:?}", out.snapshot.errors);
    // In file order, cut exactly as the one-thread chunker (restore drills) cuts it.
    let content = stored_content(&repo, "disk.img");
    assert_eq!(content, content_ids(&repo, &big).unwrap());
    assert!(content.len() > 40, "{} chunks", content.len());
    // Repeated chunks (the block twice, the zero runs) were stored once, though many of them
    // were in flight at the same time: data blobs = distinct chunks, plus two trees (the small
    // file is inline in its tree).
    let distinct: HashSet<&Id> = content.iter().collect();
    assert!(
        distinct.len() + 5 < content.len(),
        "the file repeats chunks"
    );
    assert_eq!(out.snapshot.summary.blobs_added, distinct.len() as u64 + 2);
    assert!(stored_node(&repo, "small").inline.is_some());
    let target = d.path().join("out");
    restore_latest(&repo, &target);
    let got = target.join("src/disk.img");
    assert!(fs::read(&got).unwrap() == want, "restored content differs");
    // The zero runs (4 MiB) are holes: fewer blocks than the file's non-zero bytes plus a
    // little (file-system metadata).
    let allocated = fs::metadata(&got).unwrap().blocks() * 512;
    let nonzero = (want.len() - (4 << 20)) as u64;
    assert!(
        allocated <= nonzero + (256 << 10),
        "{allocated} bytes allocated for {nonzero} non-zero bytes: holes were written"
    );
    // The restore split it into parts (several runs over 1 MiB packs).
    let (index, _) = repo.load_index().unwrap();
    let job = crate::restore::FileJob {
        path: got.clone(),
        node: stored_node(&repo, "disk.img"),
    };
    let parts = crate::restore_big::split(job, &index)
        .ok()
        .expect("split into parts");
    assert!(parts.len() >= 2, "{} parts", parts.len());
}

/// A file's restore reads: about one per pack, though the pool packs neighbouring chunks out
/// of order (a read also takes a blob just before it).
fn assert_few_reads(repo: &Repository, dir: &Path, name: &str) {
    let (index, _) = repo.load_index().unwrap();
    let node = stored_node(repo, name);
    let packs: HashSet<Id> = node
        .content
        .iter()
        .map(|id| index.get(id).unwrap().0)
        .collect();
    let job = crate::restore::FileJob {
        path: dir.join(name),
        node,
    };
    let chunks = job.node.content.len();
    let parts = crate::restore_big::split(job, &index)
        .ok()
        .expect("split into parts");
    assert!(
        parts.len() >= 2 && parts.len() <= 3 * packs.len(),
        "{} reads for {} chunks over {} packs",
        parts.len(),
        chunks,
        packs.len()
    );
}

#[test]
fn an_incremental_after_scattered_changes_reads_once_and_stores_only_changed_chunks() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("db");
    let size = 8 << 20;
    fs::write(&big, random(7, size)).unwrap();
    let repo = init(d.path());
    let first = run(&repo, &src, &NoProgress);
    assert!(first.snapshot.complete);
    assert_few_reads(&repo, &src, "db");
    let before: HashSet<Id> = stored_content(&repo, "db").into_iter().collect();
    // 1% of it, in 8 places spread over the file.
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    for i in 0..8u64 {
        let at = i * (size as u64 / 8) + 12_345;
        f.write_all_at(&random(100 + i, 10_000), at).unwrap();
    }
    drop(f);
    let second = run(&repo, &src, &NoProgress);
    let s = &second.snapshot.summary;
    assert!(second.snapshot.complete);
    assert_eq!(s.files_changed, 1, "{s:?}");
    assert_eq!(s.bytes_read, size as u64, "read once");
    let after = stored_content(&repo, "db");
    assert_eq!(after, content_ids(&repo, &big).unwrap());
    let new: HashSet<&Id> = after.iter().filter(|id| !before.contains(id)).collect();
    // Exactly the chunks that are new were stored (plus two trees), and they are few.
    assert_eq!(s.blobs_added, new.len() as u64 + 2, "{s:?}");
    assert!(
        (8..=24).contains(&new.len()),
        "{} new chunks of {}",
        new.len(),
        after.len()
    );
    assert!(
        s.bytes_added < 24 * (256 << 10),
        "{} bytes added",
        s.bytes_added
    );
    let target = d.path().join("out");
    restore_latest(&repo, &target);
    assert!(fs::read(target.join("src/db")).unwrap() == fs::read(&big).unwrap());
}

#[test]
fn a_read_error_in_the_middle_of_a_big_file_is_reported_and_the_snapshot_is_incomplete() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("failing.img");
    fs::write(&big, random(3, 6 << 20)).unwrap();
    fs::write(src.join("fine"), b"fine").unwrap();
    seam::READ_FAULTS
        .lock()
        .unwrap()
        .push((big.clone(), 3 << 20));
    let repo = init(d.path());
    let out = run(&repo, &src, &NoProgress);
    assert!(seam::pipelined(&big));
    let s = &out.snapshot;
    assert!(!s.complete, "a backup missing a file is not complete");
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert!(
        s.errors[0].contains("failing.img")
            && s.errors[0].contains("cannot be read")
            && s.errors[0].contains("injected read error"),
        "{:?}",
        s.errors
    );
    // The file is not in the snapshot (no partial content recorded); the other one is.
    let (index, _) = repo.load_index().unwrap();
    let root = crate::browse::load_tree(&repo, &index, &s.tree).unwrap();
    let dir = crate::browse::load_tree(&repo, &index, &root.nodes[0].subtree.unwrap()).unwrap();
    assert!(dir.get(b"failing.img").is_none());
    assert!(dir.get(b"fine").is_some());
}

#[test]
fn a_repository_failure_during_a_big_file_fails_the_backup() {
    use holdfast_storage::{Faults, Faulty, Injected, ObjectKind};
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random(4, 6 << 20)).unwrap();
    let repo = init(d.path());
    let faulty = Arc::new(Faulty::new(repo.storage().clone()));
    faulty.arm(
        Faults::new()
            .fail_nth_put_of(ObjectKind::Pack, 2)
            .error(Injected::NoSpace),
    );
    let repo = Repository::open(faulty.clone(), b"pw").unwrap();
    let e = backup(
        &repo,
        &BackupOptions {
            paths: vec![src.clone()],
            threads: 2,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no space"), "{e}");
    assert_eq!(faulty.counts().injected, 1);
    assert!(snapshot::load_all(&repo).unwrap().0.is_empty());
}

/// Changes the file under the reader from the progress callback (called by the reader as it
/// hands over each chunk): once, or on every call.
struct Changer {
    path: PathBuf,
    every_time: bool,
    changes: AtomicU64,
    done: AtomicBool,
}

impl Progress for Changer {
    fn inc(&self, _files: u64, bytes: u64) {
        if bytes == 0 || (!self.every_time && self.done.swap(true, Ordering::SeqCst)) {
            return;
        }
        let n = self.changes.fetch_add(1, Ordering::SeqCst);
        if self.every_time {
            // Grow it by a byte: its size differs before and after every read.
            let f = fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .unwrap();
            f.write_all_at(&[n as u8], 0).unwrap();
        } else {
            fs::write(&self.path, random(99, (5 << 20) + 1)).unwrap();
        }
    }
}

#[test]
fn a_big_file_changed_once_during_the_pipelined_read_is_read_again_and_stored_whole() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("live.db");
    fs::write(&big, random(5, 5 << 20)).unwrap();
    let repo = init(d.path());
    let p = Changer {
        path: big.clone(),
        every_time: false,
        changes: AtomicU64::new(0),
        done: AtomicBool::new(false),
    };
    let out = run(&repo, &src, &p);
    assert_eq!(p.changes.load(Ordering::SeqCst), 1);
    assert!(seam::pipelined(&big));
    let s = &out.snapshot;
    assert!(s.complete, "{:?}", s.changed_while_read);
    assert_eq!(s.summary.files_changed_while_read, 0);
    let target = d.path().join("out");
    restore_latest(&repo, &target);
    assert!(
        fs::read(target.join("src/live.db")).unwrap() == random(99, (5 << 20) + 1),
        "the re-read content was not stored"
    );
}

#[test]
fn a_big_file_changing_during_every_pipelined_read_is_stored_and_marked() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("busy.db");
    fs::write(&big, random(6, 4 << 20)).unwrap();
    let repo = init(d.path());
    let p = Changer {
        path: big.clone(),
        every_time: true,
        changes: AtomicU64::new(0),
        done: AtomicBool::new(false),
    };
    let out = run(&repo, &src, &p);
    let s = &out.snapshot;
    assert!(!s.complete);
    assert_eq!(s.summary.files_changed_while_read, 1);
    assert_eq!(s.changed_while_read.len(), 1);
    assert!(s.changed_while_read[0].contains("busy.db"));
    // Read twice (RE_READS = 1), both times whole.
    assert!(s.summary.bytes_read >= 2 * (4 << 20), "{:?}", s.summary);
    assert!(stored_content(&repo, "busy.db").len() > 10);
}

#[test]
fn a_damaged_pack_fails_only_the_big_file_it_touches_naming_the_byte() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random(8, 6 << 20)).unwrap();
    fs::write(src.join("other"), b"other").unwrap();
    let repo = init(d.path());
    run(&repo, &src, &NoProgress);
    // Flip a byte in the middle of the pack that holds the big file's 40th chunk.
    let content = stored_content(&repo, "big");
    let (index, _) = repo.load_index().unwrap();
    let (pack, loc) = index.get(&content[40]).unwrap();
    let path = fs::read_dir(d.path().join("repo/data"))
        .unwrap()
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect()
            } else {
                vec![p]
            }
        })
        .find(|p| p.file_name().unwrap().to_string_lossy() == pack.to_hex())
        .expect("the pack file");
    let mut bytes = fs::read(&path).unwrap();
    bytes[loc.offset as usize + loc.length as usize / 2] ^= 0x55;
    fs::write(&path, bytes).unwrap();
    let (all, _) = snapshot::load_all(&repo).unwrap();
    let target = d.path().join("out");
    let r = restore(
        &repo,
        &index,
        all.last().unwrap(),
        &RestoreOptions {
            target: target.clone(),
            threads: 4,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let at: u64 = content[..40]
        .iter()
        .map(|id| index.get(id).unwrap().1.raw_len as u64)
        .sum();
    assert!(
        r.errors[0].contains("big: content lost from byte")
            && r.errors[0].contains(&format!("byte {at}:")),
        "{:?} (the chunk starts at {at})",
        r.errors
    );
    assert_eq!(r.files, 1, "only the other file is restored");
    assert_eq!(fs::read(target.join("src/other")).unwrap(), b"other");
}
