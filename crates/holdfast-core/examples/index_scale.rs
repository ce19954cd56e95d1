//! The index at scale: writes a repository (local backend, under /dev/shm) whose index files
//! hold N synthetic blob entries in the real encrypted format, then times opening it and
//! loading the index, and counts the bytes the loaded index holds (a counting allocator).
//! The same files are also loaded into the previous in-memory index (a `HashMap` per blob,
//! reimplemented here) for comparison.
//!
//! `cargo run --release -p holdfast-core --example index_scale -- N [ENTRIES_PER_FILE]`
//! (N default 1000000; 16384 entries per index file: 8 packs of 2048 blobs, as a backup of
//! 8 KiB chunks into 16 MiB packs writes them).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use holdfast_backend_local::LocalStorage;
use holdfast_core::blob::BlobType;
use holdfast_core::index::{IdMode, IndexFile};
use holdfast_core::keys::KdfParams;
use holdfast_core::pack::PackEntry;
use holdfast_core::repo::InitOptions;
use holdfast_core::{Id, Repository};
use holdfast_storage::{ObjectKind, Storage};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let n = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(n, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let n = NOW.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(n, Ordering::Relaxed);
            } else {
                NOW.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

fn now() -> usize {
    NOW.load(Ordering::Relaxed)
}

fn reset_peak() -> usize {
    let n = now();
    PEAK.store(n, Ordering::Relaxed);
    n
}

/// CPU seconds this process has used (user + system, all threads).
fn cpu_s() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The in-memory index before this change, as it was (one `HashMap` entry per blob, one more
/// map for copies in other packs), for comparison.
#[derive(Default)]
struct OldIndex {
    packs: Vec<Id>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, OldLocation>,
    alternates: HashMap<Id, Vec<OldLocation>>,
}

#[allow(dead_code)]
#[derive(Clone, Copy)]
struct OldLocation {
    pack: u32,
    blob_type: BlobType,
    offset: u32,
    length: u32,
    raw_len: u32,
}

impl OldIndex {
    fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        let p = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            self.packs.len() as u32 - 1
        });
        self.blobs.reserve(entries.len());
        for e in entries {
            let loc = OldLocation {
                pack: p,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
            };
            match self.blobs.entry(e.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    if o.get().pack != p {
                        self.alternates.entry(e.id).or_default().push(loc);
                    }
                }
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(1_000_000, |a| a.parse().expect("N"));
    let per_file: usize = args
        .next()
        .map_or(16384, |a| a.parse().expect("entries per file"));
    let per_pack = 2048.min(per_file);
    let dir = std::path::PathBuf::from(format!(
        "/dev/shm/holdfast-index-scale-{}",
        std::process::id()
    ));
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    let repo = Repository::init(storage.clone(), b"pw", &opts).expect("init");

    let t = Instant::now();
    let mut written = 0;
    let mut files = 0;
    let mut seed = 0u64;
    while written < n {
        let in_file = per_file.min(n - written);
        let mut f = IndexFile::default();
        let mut left = in_file;
        while left > 0 {
            let k = per_pack.min(left);
            let mut entries = Vec::with_capacity(k);
            let mut offset = 0u32;
            for i in 0..k {
                seed += 1;
                let id = Id(*blake3::hash(&seed.to_le_bytes()).as_bytes());
                let raw_len = 8192;
                let length = 4000 + (seed % 4000) as u32;
                entries.push(PackEntry {
                    blob_type: if i % 64 == 0 {
                        BlobType::Tree
                    } else {
                        BlobType::Data
                    },
                    id,
                    offset,
                    length,
                    raw_len,
                });
                offset += length;
            }
            seed += 1;
            f.packs.push((
                Id(*blake3::hash(&(!seed).to_le_bytes()).as_bytes()),
                entries,
            ));
            left -= k;
        }
        repo.write_index_file(&f).expect("write index file");
        written += in_file;
        files += 1;
    }
    storage.flush().expect("flush");
    println!(
        "wrote {n} entries in {files} index files ({} MB) in {:.1} s",
        std::fs::read_dir(dir.join("index"))
            .map(|d| d
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>())
            .unwrap_or(0)
            / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    drop(repo);

    for mode in [IdMode::Compact, IdMode::Full] {
        let base = reset_peak();
        let rss0 = rss_kib();
        let cpu0 = cpu_s();
        let t = Instant::now();
        let repo = Repository::open(storage.clone(), b"pw").expect("open");
        let opened = t.elapsed();
        let (idx, _, damaged) = repo.load_index_files_as(mode).expect("load");
        let total = t.elapsed();
        let cpu = cpu_s() - cpu0;
        assert!(damaged.is_empty());
        assert_eq!(idx.len(), n);
        let held = now() - base;
        let peak = PEAK.load(Ordering::Relaxed) - base;
        println!(
            "{mode:?}: open {:.3} s, open + index load {:.3} s (CPU {cpu:.3} s); index holds {} B ({:.1} B/blob, entry arrays {:.1} B/blob), peak during load {:.1} B/blob, RSS +{} MB",
            opened.as_secs_f64(),
            total.as_secs_f64(),
            held,
            held as f64 / n as f64,
            idx.entry_bytes() as f64 / n as f64,
            peak as f64 / n as f64,
            (rss_kib().saturating_sub(rss0)) / 1024
        );
        drop(idx);
    }

    // The previous index: files read one by one into the HashMaps.
    let base = reset_peak();
    let cpu0 = cpu_s();
    let t = Instant::now();
    let repo = Repository::open(storage.clone(), b"pw").expect("open");
    let mut old = OldIndex::default();
    for o in storage.list(ObjectKind::Index).expect("list") {
        let f = repo.read_index_file(&o.name).expect("read");
        for (p, e) in &f.packs {
            old.add_pack(*p, e);
        }
    }
    let total = t.elapsed();
    assert_eq!(old.blobs.len(), n);
    let held = now() - base;
    let peak = PEAK.load(Ordering::Relaxed) - base;
    println!(
        "previous HashMap index: open + index load {:.3} s (CPU {:.3} s); holds {} B ({:.1} B/blob), peak during load {:.1} B/blob",
        total.as_secs_f64(),
        cpu_s() - cpu0,
        held,
        held as f64 / n as f64,
        peak as f64 / n as f64
    );
    drop(old);
    let _ = std::fs::remove_dir_all(&dir);
}
