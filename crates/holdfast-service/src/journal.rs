//! The local journal of running jobs (`<state dir>/service/running/<source>.<kind>.json`): one
//! file per job, written (and synced) before the child starts and removed after its outcome is
//! known. A file left behind means the service died during that job: the next start records
//! the job as failed in the repository, so no job goes unrecorded.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Source.
    pub source: String,
    /// `backup`, `drill`, `maintenance`.
    pub kind: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// The child's pid (0 before it started).
    pub pid: u32,
    /// The service's pid.
    pub service_pid: u32,
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// A journal entry too big or not JSON: removed, with a warning, rather than trusted.
const MAX_ENTRY: u64 = 64 << 10;

impl Journal {
    /// The journal under a state directory (created, mode 0700).
    pub fn open(state_dir: &Path) -> std::io::Result<Journal> {
        let dir = state_dir.join("service").join("running");
        fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        }
        Ok(Journal { dir })
    }

    fn path(&self, source: &str, kind: &str) -> PathBuf {
        self.dir.join(format!("{source}.{kind}.json"))
    }

    /// Record a job as running (durably: written, synced, renamed into place).
    pub fn begin(&self, e: &Entry) -> std::io::Result<()> {
        let p = self.path(&e.source, &e.kind);
        let tmp = p.with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(e).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &p)?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The job's outcome is recorded: forget it.
    pub fn end(&self, source: &str, kind: &str) {
        let _ = fs::remove_file(self.path(source, kind));
    }

    /// Entries left behind by a service that is gone (every entry, at start-up). Unreadable
    /// ones are returned as `Err(path, why)` so the caller can report them.
    pub fn leftovers(&self) -> Vec<Result<Entry, (PathBuf, String)>> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<_> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                if len > MAX_ENTRY {
                    return Err((p, format!("{len} bytes, more than a journal entry can be")));
                }
                match fs::read(&p).map(|b| serde_json::from_slice::<Entry>(&b)) {
                    Ok(Ok(e)) => Ok(e),
                    Ok(Err(e)) => Err((p, e.to_string())),
                    Err(e) => Err((p, e.to_string())),
                }
            })
            .collect();
        v.sort_by_key(|r| match r {
            Ok(e) => e.started,
            Err(_) => DateTime::<Utc>::MIN_UTC,
        });
        v
    }

    /// Remove an entry by path (an unreadable one).
    pub fn discard(&self, p: &Path) {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_end_and_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let e = Entry {
            source: "db".into(),
            kind: "backup".into(),
            started: Utc::now(),
            pid: 42,
            service_pid: 7,
        };
        j.begin(&e).unwrap();
        j.begin(&Entry {
            kind: "drill".into(),
            ..e.clone()
        })
        .unwrap();
        assert_eq!(j.leftovers().len(), 2);
        j.end("db", "drill");
        let left = j.leftovers();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].as_ref().unwrap(), &e);
        // A damaged entry is reported, not trusted.
        fs::write(d.path().join("service/running/x.backup.json"), b"{not json").unwrap();
        assert!(j.leftovers().iter().any(|r| r.is_err()));
    }
}
