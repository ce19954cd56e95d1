//! Restoring a journal source's recovery point: its pieces written in order as one export
//! file, each piece re-parsed and its count checked against its record; converted into a
//! journal file by systemd-journal-remote; counted back by `journalctl --file` (drills).

use std::fs;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::Repository;

use super::journal::{io_err, pieces_dir, stderr_of, JournalError, Reading};
use super::journal_export::{Entries, Rule};
use super::journal_pieces::{self, Piece, PieceReader};
use super::SourceError;

/// Where systemd-journal-remote is (it lives outside `PATH` on Debian).
fn journal_remote() -> PathBuf {
    let in_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("systemd-journal-remote"))
            .find(|p| p.is_file())
    });
    in_path
        .or_else(|| {
            ["/usr/lib/systemd", "/lib/systemd"]
                .iter()
                .map(|d| Path::new(d).join("systemd-journal-remote"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("systemd-journal-remote"))
}

/// What writing a snapshot's export file did.
pub(super) struct Written {
    pub(super) entries: u64,
    pub(super) bytes: u64,
    pub(super) pieces: u64,
    pub(super) gaps: Vec<String>,
}

/// Write every piece of `snap`, in order, into `out` (created beside it and renamed into
/// place), checking each piece's entry count and size against its record.
pub(super) fn write_export(
    repo: &Repository,
    snap: &SnapshotEntry,
    out: &Path,
) -> Result<Written, SourceError> {
    let (index, _) = repo.load_index()?;
    let pieces: Vec<Piece> = match pieces_dir(repo, &index, &snap.snapshot.tree)? {
        Some(d) => journal_pieces::load(repo, &index, &d)?,
        None => Vec::new(),
    };
    let tmp = with_suffix(out, ".holdfast-restoring");
    let f = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut done = Written {
        entries: 0,
        bytes: 0,
        pieces: 0,
        gaps: Vec::new(),
    };
    let r = (|| -> Result<(), SourceError> {
        for p in &pieces {
            let mut e = Entries::new(PieceReader::new(repo, &index, &p.node), Rule::All);
            io::copy(&mut e, &mut w).map_err(|e| {
                let from_repo = e.kind() == io::ErrorKind::InvalidData
                    || e.get_ref().is_some_and(|i| i.is::<holdfast_core::Error>());
                if from_repo {
                    JournalError::Repo(p.meta.seq, e.to_string())
                } else {
                    io_err("writing", &tmp)(e)
                }
            })?;
            let c = &e.counted;
            if c.entries != p.meta.entries || c.bytes != p.meta.bytes || c.dropped != 0 {
                return Err(JournalError::Count {
                    seq: p.meta.seq,
                    got: c.entries,
                    bytes: c.bytes,
                    want: p.meta.entries,
                    want_bytes: p.meta.bytes,
                }
                .into());
            }
            done.entries += c.entries;
            done.bytes += c.bytes;
            done.pieces += 1;
            if let Some(g) = &p.meta.gap_before {
                done.gaps.push(format!("before piece {}: {g}", p.meta.seq));
            }
        }
        let f = w
            .into_inner()
            .map_err(|e| io_err("writing", &tmp)(e.into_error()))?;
        f.sync_all().map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, out).map_err(io_err("renaming the restored export to", out))?;
        Ok(())
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map(|()| done)
}

pub(super) fn with_suffix(p: &Path, s: &str) -> PathBuf {
    let mut o = p.as_os_str().to_owned();
    o.push(s);
    PathBuf::from(o)
}

/// Convert an export file into a journal file with systemd-journal-remote.
pub(super) fn to_journal(export: &Path, out: &Path) -> Result<(), JournalError> {
    let tool = journal_remote();
    let o = Command::new(&tool)
        .arg(format!("--output={}", out.display()))
        .arg(export)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| JournalError::Spawn {
            tool: "systemd-journal-remote".into(),
            package: "systemd-journal-remote",
            source,
        })?;
    if !o.status.success() {
        return Err(JournalError::Failed {
            tool: tool.display().to_string(),
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Convert an export file into journal files in the new directory `dir`: `dir/NAME`, and the
/// archived files `NAME-stem@….journal` systemd-journal-remote rotates out when a file is
/// full. The files written, sorted.
pub(super) fn to_journal_files(
    export: &Path,
    dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>, JournalError> {
    fs::create_dir(dir).map_err(io_err("creating", dir))?;
    to_journal(export, &dir.join(name))?;
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err("reading", dir))?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Entries `journalctl --directory` counts in the journal files of `dir` (one JSON line each).
pub(super) fn count_entries(dir: &Path) -> Result<u64, JournalError> {
    let mut child = Command::new("journalctl")
        .args(["--no-pager", "--quiet", "--output=json"])
        .arg(format!("--directory={}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| JournalError::Spawn {
            tool: "journalctl".into(),
            package: "systemd",
            source,
        })?;
    let err = stderr_of(&mut child);
    let mut out = io::BufReader::new(child.stdout.take().expect("piped"));
    let mut n = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        if io::BufRead::read_until(&mut out, b'\n', &mut line).map_err(JournalError::Read)? == 0 {
            break;
        }
        if line.first() == Some(&b'{') {
            n += 1;
        }
    }
    Reading {
        child,
        err,
        tool: "journalctl --directory".into(),
    }
    .finish(false)?;
    Ok(n)
}

/// Refuse a target that holds data, unless `replace`.
pub(super) fn check_target(path: &Path, replace: bool) -> Result<(), JournalError> {
    let Ok(m) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let why = if m.is_dir() {
        fs::read_dir(path)
            .map_err(io_err("reading", path))?
            .next()
            .is_some()
            .then(|| "is a directory that is not empty".to_string())
    } else {
        (m.len() > 0).then(|| format!("exists and holds {} bytes", m.len()))
    };
    match why {
        Some(why) if !replace => Err(JournalError::NotEmpty {
            path: path.to_path_buf(),
            why,
        }),
        _ => Ok(()),
    }
}

/// Convert `export` into the journal file `file` (and the archived files systemd-journal-remote
/// rotates out beside it, `STEM@….journal`), written in a directory beside it and moved into
/// place; how many archived files there are. An existing file of those names is refused
/// unless `replace`.
pub(super) fn restore_journal_files(
    export: &Path,
    file: &Path,
    replace: bool,
) -> Result<usize, JournalError> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restored.journal".into());
    let tmp = parent.join(format!(".{name}.holdfast-restoring"));
    let _ = fs::remove_dir_all(&tmp);
    let r = (|| {
        let files = to_journal_files(export, &tmp, &name)?;
        let moves: Vec<(PathBuf, PathBuf)> = files
            .iter()
            .filter_map(|f| Some((f.clone(), parent.join(f.file_name()?))))
            .collect();
        if let Some((_, to)) = moves.iter().find(|(_, to)| to.exists() && to != file) {
            check_target(to, replace)?;
        }
        for (from, to) in &moves {
            fs::rename(from, to).map_err(io_err("moving the restored journal to", to))?;
        }
        Ok(moves.len().saturating_sub(1))
    })();
    let _ = fs::remove_dir_all(&tmp);
    r
}
