//! A holdfast repository in a local directory.
//!
//! Layout: `config` at the root, one directory per [`ObjectKind`], packs fanned out into
//! `data/00` .. `data/ff`, and `tmp/` for objects being written. A put writes `tmp/<random>`,
//! fsyncs it, and then renames it into place ([`PutMode::Overwrite`]) or hard-links it
//! ([`PutMode::CreateNew`], which fails if the name is taken), so a crash never leaves a partial
//! object under a final name. [`Storage::flush`] fsyncs every directory changed since the last
//! flush, which makes the renames and deletes durable. Files are created `0600` and directories
//! `0700` ([`FILE_MODE`], [`DIR_MODE`]): only the repository's owner can read the key slots.

#![warn(missing_docs)]

use holdfast_storage::{ObjectInfo, ObjectKind, PutMode, Result, Storage, StorageError};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A repository directory on a local file system.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    dirty: Mutex<HashSet<PathBuf>>,
    /// Open packs, for ranged reads without an open per blob.
    readers: Mutex<std::collections::HashMap<String, std::sync::Arc<File>>>,
}

/// Packs kept open for ranged reads.
const OPEN_PACKS: usize = 64;

impl LocalStorage {
    /// A backend rooted at `root`. Nothing is touched until the first call.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            root: root.into(),
            dirty: Mutex::new(HashSet::new()),
            readers: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir_of(&self, kind: ObjectKind, name: &str) -> PathBuf {
        let mut p = self.root.join(kind.dir());
        if kind.fanned_out() && name.len() >= 2 {
            p.push(&name[..2]);
        }
        p
    }

    fn path_of(&self, kind: ObjectKind, name: &str) -> PathBuf {
        if kind == ObjectKind::Config {
            return self.root.join("config");
        }
        self.dir_of(kind, name).join(name)
    }

    fn loc(&self, p: &Path) -> String {
        p.display().to_string()
    }

    fn mark_dirty(&self, dir: PathBuf) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir);
    }

    fn not_found(&self, kind: ObjectKind, name: &str) -> StorageError {
        StorageError::NotFound {
            kind,
            name: name.to_string(),
            location: self.location(),
        }
    }

    fn open_read(&self, kind: ObjectKind, name: &str) -> Result<(File, PathBuf)> {
        validate_name(kind, name, &self.location())?;
        let path = self.path_of(kind, name);
        match File::open(&path) {
            Ok(f) => Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(kind, name)),
            Err(e) => Err(StorageError::from_io("opening", self.loc(&path), e)),
        }
    }
}

/// Names are lowercase hex (or `config`): refuse anything that could escape the directory.
fn validate_name(kind: ObjectKind, name: &str, location: &str) -> Result<()> {
    let ok = if kind == ObjectKind::Config {
        name == "config"
    } else {
        !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if ok {
        Ok(())
    } else {
        Err(StorageError::Io {
            op: format!("naming {kind} object {name:?}"),
            location: location.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a valid object name"),
        })
    }
}

/// Mode of every object file: readable by its owner only, so no other local user can copy the
/// key slots for offline guessing (restic does the same).
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory of a repository.
pub const DIR_MODE: u32 = 0o700;

/// Create a directory with [`DIR_MODE`] (an existing one is left as it is).
fn private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        r => r,
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        let loc = self.location();
        if self.root.join("config").exists() {
            return Err(StorageError::AlreadyExists {
                kind: ObjectKind::Config,
                name: "config".into(),
                location: loc,
            });
        }
        if self.root.exists() {
            let non_empty = fs::read_dir(&self.root)
                .map_err(|e| StorageError::from_io("reading directory", &loc, e))?
                .next()
                .is_some();
            if non_empty {
                return Err(StorageError::Io {
                    op: "creating a repository in".into(),
                    location: loc,
                    source: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the directory is not empty and holds no holdfast repository; choose an empty or new directory",
                    ),
                });
            }
        }
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| StorageError::from_io("creating", &loc, e))?;
        }
        private_dir(&self.root).map_err(|e| StorageError::from_io("creating", &loc, e))?;
        for kind in ObjectKind::ALL {
            if kind == ObjectKind::Config {
                continue;
            }
            let d = self.root.join(kind.dir());
            private_dir(&d).map_err(|e| StorageError::from_io("creating", self.loc(&d), e))?;
            if kind.fanned_out() {
                for i in 0..=255u8 {
                    let sub = d.join(hex::encode([i]));
                    private_dir(&sub)
                        .map_err(|e| StorageError::from_io("creating", self.loc(&sub), e))?;
                }
            }
            self.mark_dirty(d);
        }
        private_dir(&self.root.join("tmp"))
            .map_err(|e| StorageError::from_io("creating", &loc, e))?;
        self.mark_dirty(self.root.clone());
        if let Some(parent) = self.root.parent() {
            self.mark_dirty(parent.to_path_buf());
        }
        Ok(())
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8], mode: PutMode) -> Result<()> {
        validate_name(kind, name, &self.location())?;
        let dest = self.path_of(kind, name);
        let tmp_dir = self.root.join("tmp");
        let tmp = tmp_dir.join(format!("{}.tmp", hex::encode(rand::random::<[u8; 12]>())));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            if e.kind() == io::ErrorKind::NotFound && !self.root.join("config").exists() {
                return Err(self.not_found(ObjectKind::Config, "config"));
            }
            return Err(StorageError::from_io("writing", self.loc(&dest), e));
        }
        let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        let link = || match mode {
            PutMode::Overwrite => fs::rename(&tmp, &dest),
            PutMode::CreateNew => fs::hard_link(&tmp, &dest),
        };
        let mut result = link();
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            // A kind added after this repository was created (`history/`): make its directory.
            if fs::create_dir(&dir).is_ok() {
                if let Some(parent) = dir.parent() {
                    self.mark_dirty(parent.to_path_buf());
                }
            }
            result = link();
        }
        if mode == PutMode::CreateNew {
            let _ = fs::remove_file(&tmp);
        }
        match result {
            Ok(()) => {
                self.mark_dirty(dir);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Err(StorageError::AlreadyExists {
                        kind,
                        name: name.to_string(),
                        location: self.location(),
                    })
                } else {
                    Err(StorageError::from_io("storing", self.loc(&dest), e))
                }
            }
        }
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        let (mut f, path) = self.open_read(kind, name)?;
        let mut buf = Vec::with_capacity(f.metadata().map(|m| m.len() as usize).unwrap_or(0));
        f.read_to_end(&mut buf)
            .map_err(|e| StorageError::from_io("reading", self.loc(&path), e))?;
        Ok(buf)
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let cached = if kind == ObjectKind::Pack {
            self.readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned()
        } else {
            None
        };
        let (f, path) = match cached {
            Some(f) => (f, self.path_of(kind, name)),
            None => {
                let (f, path) = self.open_read(kind, name)?;
                let f = std::sync::Arc::new(f);
                if kind == ObjectKind::Pack {
                    let mut r = self.readers.lock().unwrap_or_else(|e| e.into_inner());
                    if r.len() >= OPEN_PACKS {
                        r.clear();
                    }
                    r.insert(name.to_string(), f.clone());
                }
                (f, path)
            }
        };
        let mut buf = vec![0u8; len as usize];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(StorageError::ShortRead {
                kind,
                name: name.to_string(),
                offset,
                end: offset + len,
                size: f.metadata().map(|m| m.len()).unwrap_or(0),
            }),
            Err(e) => Err(StorageError::from_io("reading", self.loc(&path), e)),
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        if kind == ObjectKind::Config {
            let p = self.root.join("config");
            return match fs::metadata(&p) {
                Ok(m) => Ok(vec![ObjectInfo {
                    name: "config".into(),
                    size: m.len(),
                }]),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
                Err(e) => Err(StorageError::from_io("reading", self.loc(&p), e)),
            };
        }
        let base = self.root.join(kind.dir());
        let dirs: Vec<PathBuf> = if kind.fanned_out() {
            (0..=255u8).map(|i| base.join(hex::encode([i]))).collect()
        } else {
            vec![base]
        };
        let mut out = Vec::new();
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::from_io("listing", self.loc(&d), e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| StorageError::from_io("listing", self.loc(&d), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if validate_name(kind, &name, "").is_err() {
                    continue; // stray files are not objects
                }
                let size = entry
                    .metadata()
                    .map_err(|e| StorageError::from_io("listing", self.loc(&d), e))?
                    .len();
                out.push(ObjectInfo { name, size });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn exists_many(&self, kind: ObjectKind, names: &[String]) -> Result<Vec<bool>> {
        names
            .iter()
            .map(|n| {
                validate_name(kind, n, &self.location())?;
                let p = self.path_of(kind, n);
                match fs::symlink_metadata(&p) {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(StorageError::from_io("checking", self.loc(&p), e)),
                }
            })
            .collect()
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        validate_name(kind, name, &self.location())?;
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let p = self.path_of(kind, name);
        match fs::remove_file(&p) {
            Ok(()) => {
                if let Some(d) = p.parent() {
                    self.mark_dirty(d.to_path_buf());
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::from_io("deleting", self.loc(&p), e)),
        }
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let p = self.path_of(kind, name);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.modified().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound {
                kind,
                name: name.into(),
                location: self.loc(&p),
            }),
            Err(e) => Err(StorageError::from_io(
                "reading metadata of",
                self.loc(&p),
                e,
            )),
        }
    }

    fn stale_temporaries(
        &self,
        max_age: std::time::Duration,
        remove: bool,
    ) -> Result<(usize, u64)> {
        self.old_tmp(max_age, remove)
    }

    fn flush(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = {
            let mut g = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            g.drain().collect()
        };
        for d in &dirs {
            if let Err(e) = fsync_dir(d) {
                // Keep the directory dirty so a retried flush syncs it again.
                self.mark_dirty(d.clone());
                return Err(StorageError::from_io("syncing", self.loc(d), e));
            }
        }
        Ok(())
    }
}

impl LocalStorage {
    /// Remove temporary files older than `max_age` left by writers that crashed; returns how
    /// many.
    pub fn sweep_tmp(&self, max_age: std::time::Duration) -> Result<usize> {
        Ok(self.old_tmp(max_age, true)?.0)
    }

    fn old_tmp(&self, max_age: std::time::Duration, remove: bool) -> Result<(usize, u64)> {
        let d = self.root.join("tmp");
        let (mut n, mut bytes) = (0, 0);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(StorageError::from_io("listing", self.loc(&d), e)),
        };
        for entry in rd.flatten() {
            let Ok(m) = entry.metadata() else { continue };
            let old = m
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= max_age);
            if !old || !m.is_file() {
                continue;
            }
            if remove {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(StorageError::from_io(
                            "removing",
                            self.loc(&entry.path()),
                            e,
                        ))
                    }
                }
            }
            n += 1;
            bytes += m.len();
        }
        Ok((n, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, LocalStorage) {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(d.path().join("repo"));
        s.create().unwrap();
        (d, s)
    }

    #[test]
    fn put_get_list_delete() {
        let (_d, s) = repo();
        s.put(ObjectKind::Pack, "abcd", b"hello", PutMode::CreateNew)
            .unwrap();
        assert_eq!(s.get(ObjectKind::Pack, "abcd").unwrap(), b"hello");
        assert_eq!(s.get_range(ObjectKind::Pack, "abcd", 1, 3).unwrap(), b"ell");
        let l = s.list(ObjectKind::Pack).unwrap();
        assert_eq!(
            l,
            vec![ObjectInfo {
                name: "abcd".into(),
                size: 5
            }]
        );
        assert_eq!(
            s.exists_many(ObjectKind::Pack, &["abcd".into(), "ef".into()])
                .unwrap(),
            vec![true, false]
        );
        s.flush().unwrap();
        s.delete(ObjectKind::Pack, "abcd").unwrap();
        s.delete(ObjectKind::Pack, "abcd").unwrap();
        assert!(s.get(ObjectKind::Pack, "abcd").unwrap_err().is_not_found());
        assert!(std::fs::read_dir(s.root().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }

    /// The local backend keeps the contract the in-memory store is held to.
    #[test]
    fn keeps_the_storage_contract() {
        let d = tempfile::tempdir().unwrap();
        holdfast_storage::contract::check(&LocalStorage::new(d.path().join("repo")));
    }

    #[test]
    fn create_new_refuses_existing() {
        let (_d, s) = repo();
        s.put(ObjectKind::Key, "aa", b"1", PutMode::CreateNew)
            .unwrap();
        let e = s
            .put(ObjectKind::Key, "aa", b"2", PutMode::CreateNew)
            .unwrap_err();
        assert!(matches!(e, StorageError::AlreadyExists { .. }));
        assert_eq!(s.get(ObjectKind::Key, "aa").unwrap(), b"1");
        s.put(ObjectKind::Key, "aa", b"3", PutMode::Overwrite)
            .unwrap();
        assert_eq!(s.get(ObjectKind::Key, "aa").unwrap(), b"3");
    }

    #[test]
    fn rejects_path_escapes_and_short_reads() {
        let (_d, s) = repo();
        assert!(s.get(ObjectKind::Key, "../config").is_err());
        assert!(s
            .put(ObjectKind::Key, "AB", b"x", PutMode::CreateNew)
            .is_err());
        s.put(ObjectKind::Index, "01", b"xyz", PutMode::CreateNew)
            .unwrap();
        let e = s.get_range(ObjectKind::Index, "01", 2, 5).unwrap_err();
        assert!(matches!(e, StorageError::ShortRead { size: 3, .. }));
    }

    #[test]
    fn create_refuses_non_empty_foreign_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("something"), b"x").unwrap();
        let s = LocalStorage::new(d.path());
        let e = s.create().unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
    }

    /// Every directory the repository has and every object it stores is its owner's alone.
    #[test]
    fn files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (d, s) = repo();
        s.put(ObjectKind::Key, "aa", b"slot", PutMode::CreateNew)
            .unwrap();
        s.put(ObjectKind::Pack, "abcd", b"pack", PutMode::Overwrite)
            .unwrap();
        s.put(ObjectKind::Config, "config", b"{}", PutMode::CreateNew)
            .unwrap();
        let mut stack = vec![s.root().to_path_buf()];
        let (mut dirs, mut files) = (0, 0);
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                assert_eq!(mode, DIR_MODE, "{}", p.display());
                dirs += 1;
                for e in std::fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            } else {
                assert_eq!(mode, FILE_MODE, "{}", p.display());
                files += 1;
            }
        }
        assert_eq!(files, 3);
        assert!(dirs > 256, "{dirs}");
        // The directory above the repository is not made private.
        let parent = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_ne!(parent, 0, "{parent:o}");
    }
}
