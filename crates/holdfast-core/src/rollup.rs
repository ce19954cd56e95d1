//! Rolled-up records: compaction keeps `records/` small however long a repository has lived.
//!
//! Every job, drill and host report is first written as its own record (`records/<blake3>`, 64
//! hex). When a writer finds [`COMPACT_AT`] or more records that no rollup accounts for, it
//! folds the job, drill and host records into one **rollup** (`records/<seq:016x><blake3>`, 80 hex, so a rollup is told
//! from a record by its name), then deletes the records it folded. A rollup holds, per source
//! and host, what [`retain_jobs`] and [`retain_drills`] keep (the newest few of every job kind
//! and outcome, so last success, last failure, last missed run and the last drills with their
//! durations always survive), the names of the records it covers, the names of the records it
//! read and left alone (retention locks, Object Lock records, types it does not know) and the
//! rollups it supersedes.
//!
//! Concurrent writers need no lock: two compactions at once write two rollups that both stay
//! live (neither supersedes the other); readers take the union of every live rollup, with
//! entries deduplicated by the name of the record they came from, and the retention rule gives
//! the same result whether it is applied once or to parts and then to their union. A crash
//! between writing a rollup and deleting what it covers leaves records that a reader skips
//! (they are covered) and the next compaction deletes. A superseded rollup is deleted only by
//! the compaction after the one that superseded it, so a damaged newest rollup leaves its
//! predecessor live: the loss is one compaction's worth, and it is reported (a damaged record,
//! which also makes the retention lock unverifiable), never silently read as "nothing
//! happened".

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use holdfast_storage::{ObjectKind, PutMode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::records::{DrillRecord, HostReport, JobRecord, Record, AAD, KNOWN_TYPES};
use crate::repo::Repository;

/// Records not accounted for by a rollup that make a writer compact.
pub const COMPACT_AT: usize = 32;
/// Job records a rollup keeps per source, host, job kind and outcome.
pub const KEEP_JOBS: usize = 8;
/// Drill records a rollup keeps per source, host, drill kind and verdict.
pub const KEEP_DRILLS: usize = 16;
/// Host reports (heartbeats) a rollup keeps per host: the fleet view needs only the newest.
pub const KEEP_HOSTS: usize = 4;
/// The rollup format this holdfast writes and reads.
const VERSION: u32 = 1;
/// Listings read again when records vanish while they are read (a concurrent compaction).
const ATTEMPTS: usize = 5;

/// A job or drill record kept in a rollup, under the name of the record it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named<T> {
    /// Name of the original record (64 hex).
    pub name: String,
    /// The record.
    pub record: T,
}

/// One rollup object (encrypted JSON, associated data `holdfast record`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Always `rollup` (older holdfasts skip records of a type they do not know).
    #[serde(rename = "type")]
    pub kind: String,
    /// Format of this rollup.
    pub version: u32,
    /// One more than the highest sequence number the writer saw; also the name's first 16 hex.
    pub seq: u64,
    /// When it was written.
    pub written: DateTime<Utc>,
    /// Host that wrote it.
    pub host: String,
    /// Rollups whose content this one includes.
    pub supersedes: Vec<String>,
    /// Job and drill records whose content this one includes (kept or dropped by retention).
    pub covers: Vec<String>,
    /// Records read and left in place: retention locks, Object Lock records, unknown types.
    pub kept: Vec<String>,
    /// Jobs kept ([`retain_jobs`]).
    pub jobs: Vec<Named<JobRecord>>,
    /// Drills kept ([`retain_drills`]).
    pub drills: Vec<Named<DrillRecord>>,
    /// Host reports kept ([`retain_hosts`]); absent in rollups written before host reports
    /// (an earlier holdfast ignores the field, and its rollups simply hold none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<Named<HostReport>>,
}

/// Whether a name in `records/` is a rollup's (16 hex sequence number, then 64 hex).
pub fn is_rollup_name(name: &str) -> bool {
    name.len() == 80 && is_hex(name)
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_record_name(s: &str) -> bool {
    s.len() == 64 && is_hex(s)
}

/// The newest [`KEEP_JOBS`] jobs of every source, host, job kind and outcome, newest first.
/// Applying it to parts and then to their union gives what applying it once gives.
pub fn retain_jobs(v: impl IntoIterator<Item = Named<JobRecord>>) -> Vec<Named<JobRecord>> {
    retain(v, KEEP_JOBS, |j| {
        (
            j.source.clone(),
            j.host.clone(),
            j.job.clone(),
            format!("{:?}", j.state),
            j.started,
        )
    })
}

/// The newest [`KEEP_DRILLS`] drills of every source, host, drill kind and verdict, newest
/// first.
pub fn retain_drills(v: impl IntoIterator<Item = Named<DrillRecord>>) -> Vec<Named<DrillRecord>> {
    retain(v, KEEP_DRILLS, |d| {
        (
            d.source.clone(),
            d.host.clone(),
            d.kind.clone(),
            d.passed.to_string(),
            d.started,
        )
    })
}

/// The newest [`KEEP_HOSTS`] reports of every host, newest first: a year of heartbeats every
/// five minutes (100 000 records) leaves four per host.
pub fn retain_hosts(v: impl IntoIterator<Item = Named<HostReport>>) -> Vec<Named<HostReport>> {
    retain(v, KEEP_HOSTS, |h| {
        (
            h.host.clone(),
            String::new(),
            String::new(),
            String::new(),
            h.at,
        )
    })
}

type Key = (String, String, String, String, DateTime<Utc>);
/// Source, host, kind and outcome.
type Group = (String, String, String, String);
type Timed<T> = (DateTime<Utc>, Named<T>);

fn retain<T>(
    v: impl IntoIterator<Item = Named<T>>,
    keep: usize,
    key: impl Fn(&T) -> Key,
) -> Vec<Named<T>> {
    // Deduplicated by record name; ordered by group, then newest first (ties by name).
    let mut by: BTreeMap<Group, Vec<Timed<T>>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for n in v {
        if !seen.insert(n.name.clone()) {
            continue;
        }
        let (a, b, c, d, t) = key(&n.record);
        by.entry((a, b, c, d)).or_default().push((t, n));
    }
    let mut out = Vec::new();
    for (_, mut g) in by {
        g.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.name.cmp(&y.1.name)));
        out.extend(g.into_iter().take(keep).map(|(_, n)| n));
    }
    out
}

/// What one consistent read of `records/` found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every name listed.
    pub listed: HashSet<String>,
    /// Readable rollups, by name.
    pub rollups: BTreeMap<String, Rollup>,
    /// Readable rollups that no readable rollup supersedes.
    pub live: BTreeSet<String>,
    /// Records read (those no live rollup covers), by name.
    pub raw: Vec<(String, Record)>,
    /// Authentic records of a type this holdfast does not know.
    pub unknown: Vec<String>,
    /// Objects that cannot be read (`record NAME is damaged: ...`).
    pub unreadable: Vec<String>,
}

impl Loaded {
    /// Names the live rollups cover.
    pub fn covered(&self) -> HashSet<&str> {
        self.live_rollups()
            .flat_map(|r| r.covers.iter().map(String::as_str))
            .collect()
    }

    fn live_rollups(&self) -> impl Iterator<Item = &Rollup> {
        self.live.iter().filter_map(|n| self.rollups.get(n))
    }

    /// Every record: the live rollups' jobs and drills and the records read, each once.
    pub fn records(&self) -> Vec<Record> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in self.live_rollups() {
            for j in &r.jobs {
                if seen.insert(j.name.as_str()) {
                    out.push(Record::Job(j.record.clone()));
                }
            }
            for d in &r.drills {
                if seen.insert(d.name.as_str()) {
                    out.push(Record::Drill(d.record.clone()));
                }
            }
            for h in &r.hosts {
                if seen.insert(h.name.as_str()) {
                    out.push(Record::Host(h.record.clone()));
                }
            }
        }
        for (n, r) in &self.raw {
            if seen.insert(n.as_str()) {
                out.push(r.clone());
            }
        }
        out
    }
}

/// Read one rollup: bounded, named by its content, authenticated, of a version this holdfast
/// knows, its names well formed.
pub fn read_rollup(repo: &Repository, name: &str, size: Option<u64>) -> Result<Rollup> {
    if let Some(s) = size {
        crate::repo::check_object_len(ObjectKind::Record, name, s)?;
    }
    let raw = repo.storage().get(ObjectKind::Record, name)?;
    crate::repo::check_object_len(ObjectKind::Record, name, raw.len() as u64)?;
    let bad = |why: String| Error::corrupt(format!("record {name}"), why);
    if Id::of_bytes(&raw).to_hex() != name[16..] {
        return Err(bad("content does not match its name".into()));
    }
    let plain = repo
        .key()
        .decrypt(AAD, &raw)
        .map_err(|e| bad(e.to_string()))?;
    let r: Rollup = serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))?;
    if r.kind != "rollup" {
        return Err(bad(format!("named as a rollup but of type {:?}", r.kind)));
    }
    if r.version != VERSION {
        return Err(bad(format!(
            "a rollup of version {} (this holdfast reads version {VERSION}): upgrade holdfast",
            r.version
        )));
    }
    if format!("{:016x}", r.seq) != name[..16] {
        return Err(bad("its sequence number does not match its name".into()));
    }
    let names_ok = r.supersedes.iter().all(|n| is_rollup_name(n))
        && r.covers.iter().chain(&r.kept).all(|n| is_record_name(n))
        && r.jobs.iter().all(|j| is_record_name(&j.name))
        && r.drills.iter().all(|d| is_record_name(&d.name))
        && r.hosts.iter().all(|h| is_record_name(&h.name));
    if !names_ok {
        return Err(bad("it names an object that cannot be a record".into()));
    }
    if let Some(e) = r.hosts.iter().find_map(|h| h.record.check().err()) {
        return Err(bad(format!("a host report in it is out of bounds: {e}")));
    }
    Ok(r)
}

/// Read `records/` consistently: the rollups, then every record no live rollup covers. When an
/// object vanishes between the listing and its read (a concurrent compaction deleted it after
/// writing its rollup), the listing is read again.
pub fn load(repo: &Repository) -> Result<Loaded> {
    for _ in 0..ATTEMPTS {
        if let Some(l) = load_once(repo)? {
            return Ok(l);
        }
    }
    Err(Error::Refused(format!(
        "the records changed while they were read, {ATTEMPTS} times in a row (other hosts compacting them?); run again"
    )))
}

/// The highest rollup sequence number named in a listing (damaged rollups count: they are
/// reported as damaged already).
pub fn highest_seq(listing: &[holdfast_storage::ObjectInfo]) -> u64 {
    listing
        .iter()
        .filter(|o| is_rollup_name(&o.name))
        .filter_map(|o| u64::from_str_radix(&o.name[..16], 16).ok())
        .max()
        .unwrap_or(0)
}

/// A rollup holds the newest job and drill outcomes of every source, and a newer one replaces
/// it: so the highest sequence number only grows. This host remembers the highest it has seen;
/// if the store now holds none as high, rollups were deleted (or `records/` rolled back) on the
/// store, and status would report older outcomes (a passed drill instead of the failed one
/// after it). That is reported as an unreadable record, so the retention lock fails closed and
/// status raises an alarm, until the loss is accepted (`holdfast history --accept-loss`).
fn check_mark(repo: &Repository, listing: &[holdfast_storage::ObjectInfo], l: &mut Loaded) {
    let id = &repo.config().id;
    let seen = crate::localstate::load(id).rollup_seq;
    let have = highest_seq(listing);
    if seen > have {
        l.unreadable.push(format!(
            "record rollup number {seen} was seen by this host and is gone, and nothing newer replaced it: job and drill records were deleted or rolled back on the store, so the outcomes read now are older than the truth; restore records/ from a copy or the store's versions, or after investigating accept the loss with `holdfast history --accept-loss`"
        ));
    } else if have > seen {
        crate::localstate::raise(
            id,
            &crate::localstate::RepoState {
                rollup_seq: have,
                ..Default::default()
            },
        );
    }
}

fn load_once(repo: &Repository) -> Result<Option<Loaded>> {
    let listing = repo.storage().list(ObjectKind::Record)?;
    let mut l = Loaded {
        listed: listing.iter().map(|o| o.name.clone()).collect(),
        ..Default::default()
    };
    for o in listing.iter().filter(|o| is_rollup_name(&o.name)) {
        match read_rollup(repo, &o.name, Some(o.size)) {
            Ok(r) => {
                l.rollups.insert(o.name.clone(), r);
            }
            Err(e @ Error::Corrupt { .. }) => l.unreadable.push(e.to_string()),
            Err(Error::Storage(e)) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let superseded: HashSet<&String> = l.rollups.values().flat_map(|r| &r.supersedes).collect();
    l.live = l
        .rollups
        .keys()
        .filter(|n| !superseded.contains(n))
        .cloned()
        .collect();
    check_mark(repo, &listing, &mut l);
    let covered: HashSet<String> = l.covered().into_iter().map(String::from).collect();
    for o in &listing {
        if is_rollup_name(&o.name) || covered.contains(&o.name) {
            continue;
        }
        let v =
            repo.load_json_listed::<serde_json::Value>(ObjectKind::Record, &o.name, o.size, AAD);
        match v {
            Ok(v) => match serde_json::from_value::<Record>(v.clone()) {
                // Authentic but out of bounds: not read, left in place (like an unknown type);
                // its host then counts as not reporting, which fails the fleet view.
                Ok(Record::Host(h)) if h.check().is_err() => {
                    tracing::warn!("host report {} skipped: {}", o.name, h.check().unwrap_err());
                    l.unknown.push(o.name.clone());
                }
                Ok(r) => l.raw.push((o.name.clone(), r)),
                // Authentic, of a type a newer holdfast wrote: not ours to judge.
                Err(e) if !KNOWN_TYPES.contains(&v["type"].as_str().unwrap_or("")) => {
                    tracing::debug!("record {} of an unknown type skipped: {e}", o.name);
                    l.unknown.push(o.name.clone());
                }
                Err(e) => l
                    .unreadable
                    .push(format!("record {} is damaged: {e}", o.name)),
            },
            Err(e @ Error::Corrupt { .. }) => l.unreadable.push(e.to_string()),
            Err(Error::Storage(e)) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(l))
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compacted {
    /// Name of the rollup written.
    pub rollup: String,
    /// Records folded into it now.
    pub folded: usize,
    /// Objects deleted (folded records, records an earlier rollup covers, old rollups).
    pub deleted: usize,
}

/// Fold every job, drill and host record into a new rollup, then delete what it makes redundant.
/// `Ok(None)`: nothing to fold.
pub fn compact(repo: &Repository, now: DateTime<Utc>) -> Result<Option<Compacted>> {
    let l = load(repo)?;
    let mut jobs = Vec::new();
    let mut drills = Vec::new();
    let mut hosts = Vec::new();
    let mut kept: Vec<String> = l.unknown.clone();
    for (n, r) in &l.raw {
        match r {
            Record::Job(j) => jobs.push(Named {
                name: n.clone(),
                record: j.clone(),
            }),
            Record::Drill(d) => drills.push(Named {
                name: n.clone(),
                record: d.clone(),
            }),
            Record::Host(h) => hosts.push(Named {
                name: n.clone(),
                record: h.clone(),
            }),
            Record::RetentionLock(_) | Record::ObjectLocks(_) => kept.push(n.clone()),
        }
    }
    let folded: Vec<String> = jobs
        .iter()
        .map(|j| j.name.clone())
        .chain(drills.iter().map(|d| d.name.clone()))
        .chain(hosts.iter().map(|h| h.name.clone()))
        .collect();
    let stale: Vec<String> = l
        .covered()
        .into_iter()
        .filter(|n| l.listed.contains(*n))
        .map(String::from)
        .collect();
    let old: Vec<String> = l
        .rollups
        .keys()
        .filter(|n| !l.live.contains(*n))
        .cloned()
        .collect();
    if folded.is_empty() && stale.is_empty() && old.is_empty() && l.live.len() <= 1 {
        return Ok(None);
    }
    for r in l.live.iter().filter_map(|n| l.rollups.get(n)) {
        jobs.extend(r.jobs.iter().cloned());
        drills.extend(r.drills.iter().cloned());
        hosts.extend(r.hosts.iter().cloned());
    }
    let mut covers: Vec<String> = folded.iter().chain(&stale).cloned().collect();
    covers.sort();
    covers.dedup();
    kept.sort();
    let r = Rollup {
        kind: "rollup".into(),
        version: VERSION,
        seq: l.rollups.values().map(|r| r.seq + 1).max().unwrap_or(1),
        written: now,
        host: crate::util::hostname(),
        supersedes: l.live.iter().cloned().collect(),
        covers,
        kept,
        jobs: retain_jobs(jobs),
        drills: retain_drills(drills),
        hosts: retain_hosts(hosts),
    };
    let sealed = repo
        .key()
        .encrypt(AAD, &serde_json::to_vec(&r).expect("serializable"));
    let name = format!("{:016x}{}", r.seq, Id::of_bytes(&sealed).to_hex());
    repo.storage()
        .put(ObjectKind::Record, &name, &sealed, PutMode::CreateNew)?;
    // The rollup is durable before anything it makes redundant is deleted.
    repo.storage().flush()?;
    let mut deleted = 0;
    // The live rollups stay one more round: if the new one is ever damaged, they still stand.
    for n in folded.iter().chain(&stale).chain(&old) {
        match repo.storage().delete(ObjectKind::Record, n) {
            Ok(()) => deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(Compacted {
        rollup: name,
        folded: folded.len(),
        deleted,
    }))
}

/// Compact when [`COMPACT_AT`] or more records are not accounted for by a live rollup. Costs
/// one listing, plus reading the rollups when the listing alone cannot tell.
pub fn compact_if_due(repo: &Repository, now: DateTime<Utc>) -> Result<Option<Compacted>> {
    let listing = repo.storage().list(ObjectKind::Record)?;
    let records = listing.iter().filter(|o| !is_rollup_name(&o.name)).count();
    if records < COMPACT_AT {
        return Ok(None);
    }
    let mut rollups = BTreeMap::new();
    for o in listing.iter().filter(|o| is_rollup_name(&o.name)) {
        match read_rollup(repo, &o.name, Some(o.size)) {
            Ok(r) => {
                rollups.insert(o.name.clone(), r);
            }
            Err(Error::Storage(e)) if e.is_not_found() => {}
            // A damaged rollup accounts for nothing; compaction reads what it can.
            Err(Error::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let superseded: HashSet<&String> = rollups.values().flat_map(|r| &r.supersedes).collect();
    let accounted: HashSet<&String> = rollups
        .iter()
        .filter(|(n, _)| !superseded.contains(n))
        .flat_map(|(_, r)| r.covers.iter().chain(&r.kept))
        .collect();
    let open = listing
        .iter()
        .filter(|o| !is_rollup_name(&o.name) && !accounted.contains(&o.name))
        .count();
    if open < COMPACT_AT {
        return Ok(None);
    }
    compact(repo, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::JobState;
    use chrono::TimeZone;

    fn job(src: &str, host: &str, min: i64, state: JobState) -> JobRecord {
        JobRecord {
            source: src.into(),
            job: "backup".into(),
            started: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                + chrono::Duration::minutes(min),
            seconds: min as f64,
            state,
            snapshot: None,
            messages: vec![],
            host: host.into(),
        }
    }

    fn named(i: usize, j: JobRecord) -> Named<JobRecord> {
        Named {
            name: format!("{i:064x}"),
            record: j,
        }
    }

    #[test]
    fn retention_keeps_the_newest_of_every_outcome() {
        // 100 completed runs, one failure long ago, one missed run, another host's runs.
        let mut v: Vec<Named<JobRecord>> = (0..100)
            .map(|i| named(i, job("db", "a", 1000 + i as i64, JobState::Completed)))
            .collect();
        v.push(named(500, job("db", "a", 5, JobState::Failed)));
        v.push(named(501, job("db", "a", 6, JobState::Expired)));
        v.extend((0..20).map(|i| named(600 + i, job("db", "b", i as i64, JobState::Completed))));
        let got = retain_jobs(v.clone());
        let of = |host: &str, st: JobState| {
            got.iter()
                .filter(|n| n.record.host == host && n.record.state == st)
                .map(|n| n.record.started)
                .collect::<Vec<_>>()
        };
        let completed = of("a", JobState::Completed);
        assert_eq!(completed.len(), KEEP_JOBS);
        assert_eq!(
            completed[0],
            job("db", "a", 1099, JobState::Completed).started
        );
        assert_eq!(
            of("a", JobState::Failed).len(),
            1,
            "the last failure is kept"
        );
        assert_eq!(
            of("a", JobState::Expired).len(),
            1,
            "the last missed run is kept"
        );
        assert_eq!(of("b", JobState::Completed).len(), KEEP_JOBS);
        // Applying it to parts and then to the union equals applying it once, in any split.
        for split in [1, 7, 50, 110] {
            let (x, y) = v.split_at(split);
            let mut parts = retain_jobs(x.to_vec());
            parts.extend(retain_jobs(y.to_vec()));
            parts.extend(retain_jobs(x[..split / 2].to_vec()));
            assert_eq!(retain_jobs(parts), got, "split {split}");
        }
    }

    fn report(host: &str, min: i64) -> HostReport {
        HostReport {
            host: host.into(),
            at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(min),
            interval_seconds: 300,
            program: "holdfast test".into(),
            retired: None,
            sources: vec![],
        }
    }

    #[test]
    fn retention_keeps_the_newest_reports_of_every_host() {
        let mut v: Vec<Named<HostReport>> = (0..50)
            .map(|i| Named {
                name: format!("{i:064x}"),
                record: report("a", i),
            })
            .collect();
        v.push(Named {
            name: format!("{:064x}", 900),
            record: report("b", -1000),
        });
        let got = retain_hosts(v.clone());
        let a: Vec<i64> = got
            .iter()
            .filter(|n| n.record.host == "a")
            .map(|n| (n.record.at - report("a", 0).at).num_minutes())
            .collect();
        assert_eq!(a, vec![49, 48, 47, 46], "the newest {KEEP_HOSTS} of host a");
        assert_eq!(
            got.iter().filter(|n| n.record.host == "b").count(),
            1,
            "a host that reported long ago keeps its last report"
        );
        for split in [1, 13, 40] {
            let (x, y) = v.split_at(split);
            let mut parts = retain_hosts(x.to_vec());
            parts.extend(retain_hosts(y.to_vec()));
            assert_eq!(retain_hosts(parts), got, "split {split}");
        }
    }

    #[test]
    fn a_rollup_written_before_host_reports_reads() {
        let old = r#"{"type":"rollup","version":1,"seq":3,"written":"2026-01-01T00:00:00Z","host":"h","supersedes":[],"covers":[],"kept":[],"jobs":[],"drills":[]}"#;
        let r: Rollup = serde_json::from_str(old).unwrap();
        assert!(r.hosts.is_empty());
        // And an empty list is not written, so the rollup is what an earlier holdfast wrote.
        assert!(!serde_json::to_string(&r).unwrap().contains("hosts"));
    }

    #[test]
    fn rollup_names() {
        assert!(is_rollup_name(&format!("{:016x}{}", 3, "a".repeat(64))));
        assert!(!is_rollup_name(&"a".repeat(64)));
        assert!(!is_rollup_name(&"A".repeat(80)));
        assert!(!is_rollup_name(&"g".repeat(80)));
    }
}
