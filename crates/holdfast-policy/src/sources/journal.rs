//! `kind = "journal"`: the systemd journal, read with `journalctl -o export` incrementally by
//! cursor. Each run stores a snapshot whose tree is the previous snapshot's pieces (reused by
//! content id, not read again) plus one new piece holding the entries after the previous
//! piece's last cursor ([`super::journal_pieces`]), so the newest recovery point alone holds
//! the whole journal since the source began. Restored as one export file (the pieces in
//! order), or as a journal file written by `systemd-journal-remote`. See docs/DESIGN.md,
//! "Journal source".

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use chrono::DateTime;
use holdfast_core::built::{backup_built, BuiltOptions, BuiltTree, TreeWriter};
use holdfast_core::index::Index;
use holdfast_core::progress::Progress;
use holdfast_core::snapshot::Summary;
use holdfast_core::tree::{FileTime, Node, NodeKind};
use holdfast_core::{Id, Repository};

use super::journal_export::{seqnum, Counted, Entries, Rule};
use super::journal_pieces::{self, piece_name, PieceMeta};
use super::journal_restore::{
    check_target, count_entries, restore_journal_files, to_journal_files, with_suffix, write_export,
};
use super::{
    Backed, BackupJob, DrillJob, DrillOutcome, RawSource, RestoreJob, Source, SourceError,
};
use crate::found::Found;
use crate::hooks::run_hook;

/// The journal directories journalctl reads by default (the local machine's, under these).
pub const SYSTEM_DIRS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

/// Configuration of a journal source.
#[derive(Debug, Clone)]
pub struct JournalSource {
    /// The journal directory (`journalctl --directory`); `None`: the system journal.
    pub directory: Option<PathBuf>,
    /// Only these units' entries (`journalctl --unit`), if any.
    pub units: Vec<String>,
    /// Command that checks a restored journal in a drill (`$HOLDFAST_DRILL_JOURNAL`, the active
    /// file; `$HOLDFAST_DRILL_JOURNAL_DIR`, every file; `$HOLDFAST_DRILL_EXPORT`).
    pub verify: Option<String>,
}

/// Why a journal source failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A tool could not be started.
    #[error("running {tool}: {source}: install systemd's {tool} (Debian: package {package})")]
    Spawn {
        /// The tool.
        tool: String,
        /// Its package.
        package: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A tool failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        /// The command.
        tool: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// journalctl's output could not be read.
    #[error("reading journalctl's export output: {0}; nothing was recorded")]
    Read(#[source] io::Error),
    /// No target given.
    #[error("restoring a journal needs --target FILE (an export file), FILE.journal (a journal file, written by systemd-journal-remote) or an existing directory")]
    NoTarget,
    /// The target holds data.
    #[error("{} {why}: restore elsewhere, or pass --replace to overwrite it", path.display())]
    NotEmpty {
        /// The target.
        path: PathBuf,
        /// What is there.
        why: String,
    },
    /// Local I/O.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A piece does not hold what its record says.
    #[error("piece {seq} holds {got} entries in {bytes} bytes, the recovery point records {want} entries in {want_bytes} bytes: the repository is damaged or forged; run `holdfast check` and restore another recovery point")]
    Count {
        /// The piece.
        seq: u64,
        /// Entries read.
        got: u64,
        /// Bytes read.
        bytes: u64,
        /// Entries recorded.
        want: u64,
        /// Bytes recorded.
        want_bytes: u64,
    },
    /// A piece could not be read back.
    #[error("reading piece {0} of the recovery point: {1}: run `holdfast check`, and restore another recovery point")]
    Repo(u64, String),
    /// The previous recovery point's pieces are no longer all stored.
    #[error("piece {0} of the previous recovery point is no longer stored (pruned or damaged): run `holdfast check`; nothing was recorded")]
    Pruned(u64),
}

impl From<JournalError> for SourceError {
    fn from(e: JournalError) -> Self {
        SourceError::new("journal", e)
    }
}

pub(super) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Build from the workload file.
pub fn build(r: &RawSource, base: &Path) -> Result<Arc<dyn Source>, String> {
    let n = r.name();
    r.no_mode()?;
    if r.path.is_some() || !r.paths.is_empty() {
        return Err(format!(
            "source {n:?} of kind journal reads a journal directory: give directory = \"/var/log/journal\" (or nothing, for the system journal), not path"
        ));
    }
    if r.units.iter().any(|u| u.is_empty()) {
        return Err(format!("source {n:?}: units holds an empty name"));
    }
    let directory = r
        .directory
        .clone()
        .map(|p| if p.is_relative() { base.join(p) } else { p });
    if directory.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
        return Err(format!("source {n:?}: directory is empty"));
    }
    Ok(Arc::new(JournalSource {
        directory,
        units: r.units.clone(),
        verify: r.verify.clone(),
    }))
}

/// Read a child's standard error in the background (bounded), so it never blocks.
pub(super) fn stderr_of(child: &mut Child) -> std::thread::JoinHandle<String> {
    let err = child.stderr.take();
    std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut e) = err {
            let _ = (&mut e).take(64 << 10).read_to_end(&mut s);
            let _ = io::copy(&mut e, &mut io::sink());
        }
        String::from_utf8_lossy(&s).trim().to_string()
    })
}

fn micros(t: Option<u64>) -> String {
    t.and_then(|t| DateTime::from_timestamp_micros(t as i64))
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "an unknown time".into())
}

/// One run of journalctl feeding a piece.
pub(super) struct Reading {
    pub(super) child: Child,
    pub(super) err: std::thread::JoinHandle<String>,
    pub(super) tool: String,
}

impl Reading {
    pub(super) fn finish(self, killed: bool) -> Result<String, JournalError> {
        let mut child = self.child;
        if killed {
            let _ = child.kill();
        }
        let status = child.wait().map_err(|source| JournalError::Spawn {
            tool: self.tool.clone(),
            package: "systemd",
            source,
        })?;
        let stderr = self.err.join().unwrap_or_default();
        if !killed && !status.success() {
            return Err(JournalError::Failed {
                tool: self.tool,
                status: status.to_string(),
                stderr,
            });
        }
        Ok(stderr)
    }
}

/// The new piece a run read, if it read any entry.
struct NewPiece {
    content: Vec<Id>,
    size: u64,
    counted: Counted,
}

impl JournalSource {
    /// The snapshots' `paths`: the directory and the unit filter, so that a change of either
    /// starts a new chain of pieces rather than continuing another's cursor.
    fn label(&self) -> String {
        let dir = match &self.directory {
            Some(d) => d.display().to_string(),
            None => "system".into(),
        };
        if self.units.is_empty() {
            format!("journal:{dir}")
        } else {
            format!("journal:{dir}?units={}", self.units.join(","))
        }
    }

    fn journalctl(&self, cursor: Option<&str>) -> Result<(Reading, impl Read), JournalError> {
        let mut c = Command::new("journalctl");
        c.args(["--no-pager", "--quiet", "--output=export"]);
        if let Some(d) = &self.directory {
            c.arg(format!("--directory={}", d.display()));
        }
        for u in &self.units {
            c.arg(format!("--unit={u}"));
        }
        if let Some(cur) = cursor {
            c.arg(format!("--cursor={cur}"));
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|source| JournalError::Spawn {
            tool: "journalctl".into(),
            package: "systemd",
            source,
        })?;
        let out = child.stdout.take().expect("piped");
        let err = stderr_of(&mut child);
        Ok((
            Reading {
                child,
                err,
                tool: "journalctl".into(),
            },
            out,
        ))
    }

    /// Store the entries `rule` keeps as piece `seq`; `None` when there are none.
    fn store(
        &self,
        w: &mut TreeWriter,
        seq: u64,
        mut e: Entries<impl Read>,
        progress: &dyn Progress,
    ) -> Result<Option<NewPiece>, SourceError> {
        let (content, size) = w.store_file(&piece_name(seq), &mut e, progress)?;
        if e.counted.entries == 0 {
            return Ok(None);
        }
        Ok(Some(NewPiece {
            content,
            size,
            counted: e.counted,
        }))
    }

    /// Run journalctl (from `cursor`) and store what `rule` keeps as piece `seq`; `Err` with
    /// what journalctl said when a [`Rule::After`] cursor does not start the stream. journalctl
    /// is stopped whatever fails.
    fn read_with(
        &self,
        cursor: Option<&str>,
        rule: Rule,
        w: &mut TreeWriter,
        seq: u64,
        progress: &dyn Progress,
    ) -> Result<Result<Option<NewPiece>, String>, SourceError> {
        let (run, out) = self.journalctl(cursor)?;
        let mut e = Entries::new(out, rule);
        match e.start() {
            Ok(true) => {}
            Ok(false) => {
                drop(e);
                return Ok(Err(run.finish(true)?));
            }
            Err(err) => {
                drop(e);
                let _ = run.finish(true);
                return Err(JournalError::Read(err).into());
            }
        }
        match self.store(w, seq, e, progress) {
            Ok(p) => {
                run.finish(false)?;
                Ok(Ok(p))
            }
            Err(err) => {
                let _ = run.finish(true);
                Err(err)
            }
        }
    }

    /// Read the entries after `last` (all, when there is no previous piece); the new piece and
    /// a warning when entries may have been lost.
    fn read_new(
        &self,
        w: &mut TreeWriter,
        seq: u64,
        last: Option<&PieceMeta>,
        progress: &dyn Progress,
    ) -> Result<(Option<NewPiece>, Option<String>), SourceError> {
        let mut rule = Rule::All;
        let mut gap = None;
        if let Some(l) = last {
            let after = Rule::After(l.last_cursor.clone());
            match self.read_with(Some(&l.last_cursor), after, w, seq, progress)? {
                Ok(piece) => return Ok((piece, None)),
                Err(said) => gap = Some((l.clone(), said)),
            }
            if let Some((s, i)) = seqnum(&l.last_cursor) {
                rule = Rule::NotUpTo(s.to_string(), i);
            }
        }
        // Only a `Rule::After` stream can miss its start.
        let piece = self
            .read_with(None, rule, w, seq, progress)?
            .unwrap_or(None);
        let warning = gap.map(|(l, said)| {
            let now_first = piece
                .as_ref()
                .map(|p| micros(p.counted.first.realtime))
                .unwrap_or_else(|| "now (the journal holds no later entry)".into());
            let skipped = piece.as_ref().map(|p| p.counted.dropped).unwrap_or(0);
            format!(
                "ENTRIES MAY HAVE BEEN LOST: the previous recovery point's last entry (at {}, cursor {}) is no longer in the journal {} (vacuumed or rotated away, or the journal was replaced{}): the whole journal was read again, and entries written between {} and {now_first} that it no longer holds are not in this or any recovery point{}",
                micros(l.last_realtime),
                l.last_cursor,
                self.directory.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "of this host".into()),
                if said.is_empty() { String::new() } else { format!("; journalctl said: {said}") },
                micros(l.last_realtime),
                if skipped > 0 { format!("; {skipped} entries still there that were stored before were skipped") } else { String::new() },
            )
        });
        Ok((piece, warning))
    }

    fn build_tree(
        &self,
        job: &BackupJob,
        w: &mut TreeWriter,
        prev: Option<Id>,
    ) -> Result<BuiltTree, SourceError> {
        let pieces = match prev {
            Some(root) => match pieces_dir(job.repo, w.index(), &root)? {
                Some(d) => journal_pieces::load(job.repo, w.index(), &d)?,
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        if let Some(p) = pieces.iter().find(|p| !w.reusable(&p.node.content)) {
            return Err(JournalError::Pruned(p.meta.seq).into());
        }
        let seq = pieces.len() as u64 + 1;
        let (new, warning) = self.read_new(w, seq, pieces.last().map(|p| &p.meta), job.progress)?;
        let time_ns = job.time.timestamp_nanos_opt().unwrap_or(0);
        let mut summary = Summary {
            files_unmodified: pieces.len() as u64,
            total_bytes: pieces.iter().map(|p| p.node.size).sum(),
            dirs: 1,
            ..Summary::default()
        };
        let mut nodes: Vec<Node> = pieces.into_iter().map(|p| p.node).collect();
        if let Some(n) = new {
            let meta = PieceMeta {
                seq,
                entries: n.counted.entries,
                bytes: n.size,
                first_cursor: n.counted.first.cursor.clone().unwrap_or_default(),
                last_cursor: n.counted.last.cursor.clone().unwrap_or_default(),
                first_realtime: n.counted.first.realtime,
                last_realtime: n.counted.last.realtime,
                gap_before: warning.clone(),
            };
            if !super::journal_export::valid_cursor(&meta.last_cursor)
                || !super::journal_export::valid_cursor(&meta.first_cursor)
            {
                return Err(JournalError::Read(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an entry has no __CURSOR field: the next run could not continue after it",
                ))
                .into());
            }
            let mtime = n
                .counted
                .last
                .realtime
                .map(|t| FileTime::from_nanos(t as i64 * 1000))
                .unwrap_or(FileTime::from_nanos(time_ns));
            let mut node = file_node(&piece_name(seq), NodeKind::File, mtime);
            node.size = n.size;
            node.content = n.content;
            node.xattrs = vec![meta.xattr()];
            summary.files_new = 1;
            summary.bytes_read = n.size;
            summary.total_bytes += n.size;
            nodes.push(node);
        }
        let dir = w.store_tree(nodes)?;
        let mut top = file_node(job.name, NodeKind::Dir, FileTime::from_nanos(time_ns));
        top.subtree = Some(dir);
        let root = w.store_tree(vec![top])?;
        Ok(BuiltTree {
            root,
            summary,
            notes: warning.into_iter().collect(),
        })
    }
}

fn file_node(name: &str, kind: NodeKind, mtime: FileTime) -> Node {
    let mode = if kind == NodeKind::Dir { 0o755 } else { 0o640 };
    holdfast_core::built::node(name, kind, mode, mtime)
}

/// The tree of a snapshot's pieces (`NAME/` at its root; exactly one entry there).
pub(super) fn pieces_dir(
    repo: &Repository,
    index: &Index,
    root: &Id,
) -> Result<Option<Id>, SourceError> {
    let top = holdfast_core::browse::load_tree(repo, index, root)?;
    match top.nodes.as_slice() {
        [] => Ok(None),
        [n] if n.kind == NodeKind::Dir && n.subtree.is_some() => Ok(n.subtree),
        _ => Err(journal_pieces::BadPieces(
            "its root holds something else than one directory of pieces".into(),
        )
        .into()),
    }
}

impl Source for JournalSource {
    fn kind(&self) -> &'static str {
        "journal"
    }

    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError> {
        let label = self.label();
        let prev = holdfast_core::built::previous_root(job.repo, job.name, &label)?;
        let opts = BuiltOptions {
            label,
            source: Some(job.name.to_string()),
            tags: job.tags.to_vec(),
            time: Some(job.time),
        };
        let mut failed: Option<SourceError> = None;
        let built = backup_built(job.repo, &opts, job.progress, |w| {
            self.build_tree(job, w, prev).map_err(|e| {
                let m = e.to_string();
                failed = Some(e);
                holdfast_core::Error::Refused(m)
            })
        });
        let (id, snap) = built.map_err(|e| failed.take().unwrap_or(SourceError::from(e)))?;
        tracing::info!(
            bytes_read = snap.summary.bytes_read,
            pieces = snap.summary.files_new + snap.summary.files_unmodified,
            "journal source {}: backup done",
            job.name
        );
        Ok(Backed {
            snapshot: Some(id),
            skipped: snap.warnings,
        })
    }

    /// `into`: an export file, a `.journal` file (written by systemd-journal-remote), or a
    /// directory (`SOURCE.export` in it).
    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError> {
        let target = Path::new(job.into.ok_or(JournalError::NoTarget)?);
        let name = job.snap.snapshot.source.as_deref().unwrap_or("journal");
        let (file, journal) = if target.is_dir() {
            check_target(target, job.replace)?;
            (target.join(format!("{name}.export")), false)
        } else {
            check_target(target, job.replace)?;
            (
                target.to_path_buf(),
                target.extension().is_some_and(|e| e == "journal"),
            )
        };
        let mut done = Vec::new();
        let export = if journal {
            with_suffix(&file, ".holdfast-export")
        } else {
            file.clone()
        };
        let w = write_export(job.repo, job.snap, &export)?;
        let mut archived = 0;
        if journal {
            let r = restore_journal_files(&export, &file, job.replace);
            let _ = fs::remove_file(&export);
            archived = r?;
        }
        let how = if !journal {
            " (export format: systemd-journal-remote -o OUT.journal FILE converts it)".to_string()
        } else if archived == 0 {
            " (a journal file, written by systemd-journal-remote: read it with journalctl --file)"
                .to_string()
        } else {
            let stem = file.file_stem().unwrap_or_default().to_string_lossy();
            format!(
                " (a journal file written by systemd-journal-remote, which rotated {archived} full files out beside it as {stem}@….journal: read them all with journalctl --file '{}/{stem}*.journal')",
                file.parent().unwrap_or(Path::new(".")).display()
            )
        };
        done.push(format!(
            "restored {} entries ({} bytes, {} pieces) of snapshot {} into {}{how}",
            w.entries,
            w.bytes,
            w.pieces,
            job.snap.id.short(),
            file.display(),
        ));
        for g in w.gaps {
            done.push(format!("warning: the recovery point records {g}"));
        }
        Ok(done)
    }

    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError> {
        let export = job.scratch.join("journal.export");
        let dir = job.scratch.join("journal");
        let file = dir.join("restored.journal");
        let mut messages = Vec::new();
        let (mut ok, mut entries, mut bytes) = (true, 0, 0);
        match write_export(job.repo, job.snap, &export) {
            Ok(w) => {
                messages.push(format!(
                    "restored {} entries ({} bytes) from {} pieces of snapshot {}, each piece's count and size as recorded",
                    w.entries, w.bytes, w.pieces, job.snap.id.short()
                ));
                (entries, bytes) = (w.entries, w.bytes);
            }
            Err(e) => {
                messages.push(e.to_string());
                ok = false;
            }
        }
        if ok {
            let counted = to_journal_files(&export, &dir, "restored.journal")
                .and_then(|files| Ok((files.len(), count_entries(&dir)?)));
            match counted {
                Ok((files, n)) if n == entries => messages.push(format!(
                    "systemd-journal-remote wrote {files} journal files in which journalctl counts {n} entries, as recorded"
                )),
                Ok((_, n)) => {
                    ok = false;
                    messages.push(format!(
                        "journalctl counts {n} entries in the converted journal, the recovery point records {entries}"
                    ));
                }
                Err(e) => {
                    ok = false;
                    messages.push(e.to_string());
                }
            }
        }
        if ok {
            if let Some(v) = &self.verify {
                let (vok, out) = run_hook(
                    v,
                    job.timeout,
                    &[
                        ("HOLDFAST_DRILL_JOURNAL", &file),
                        ("HOLDFAST_DRILL_JOURNAL_DIR", &dir),
                        ("HOLDFAST_DRILL_EXPORT", &export),
                    ],
                );
                messages.push(format!("verify: {}", if vok { "ok".into() } else { out }));
                ok = vok;
            }
        }
        Ok(DrillOutcome {
            passed: ok,
            messages,
            files: 1,
            bytes,
        })
    }

    fn covers(&self, f: &Found) -> bool {
        if f.kind != "journal" {
            return false;
        }
        let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let found = canon(Path::new(&f.location));
        let is_machine = found.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit())
        });
        let dirs: Vec<PathBuf> = match &self.directory {
            Some(d) => vec![canon(d)],
            None => SYSTEM_DIRS.iter().map(|d| canon(Path::new(d))).collect(),
        };
        // journalctl --directory also reads the machine-id directories right under it.
        dirs.iter()
            .any(|d| *d == found || (is_machine && found.parent() == Some(d.as_path())))
    }

    fn preflight(&self) -> Vec<String> {
        let mut out = Vec::new();
        if Command::new("journalctl")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            out.push("journalctl is not installed (Debian: package systemd)".into());
        }
        if let Some(d) = &self.directory {
            if !d.is_dir() {
                out.push(format!("{}: not a journal directory", d.display()));
            }
        }
        out
    }

    fn describe(&self) -> String {
        let units = if self.units.is_empty() {
            String::new()
        } else {
            format!(" (units {})", self.units.join(", "))
        };
        match &self.directory {
            Some(d) => format!(
                "the systemd journal in {}{units} (journalctl -o export, incremental by cursor)",
                d.display()
            ),
            None => {
                format!("the system journal{units} (journalctl -o export, incremental by cursor)")
            }
        }
    }
}
