//! object-lock: the store's own immutability (S3 Object Lock) on recovery points.

use anyhow::Result;
use holdfast_core::objlock;
use holdfast_core::snapshot;

use super::{open, print_json, storage_for};
use crate::cli::Global;
use crate::exit;

fn date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Show the bucket's Object Lock; with `extend`, lock what young recovery points need; with
/// `verify`, ask the store object by object (exit 4 if anything is locked too briefly).
pub fn object_lock(g: &Global, extend: bool, verify: bool) -> Result<u8> {
    let repo = open(g)?;
    let bucket = repo.storage().object_lock()?;
    let policy = objlock::bucket_policy(&repo)?;
    let now = super::now()?;
    let mut out = serde_json::json!({
        "location": repo.storage().location(),
        "supported": bucket.is_some(),
        "enabled": bucket.as_ref().is_some_and(|b| b.enabled),
        "mode": policy.map(|p| p.mode.as_str()),
        "window_days": policy.map(|p| p.window / 86_400),
    });
    let Some(policy) = policy else {
        if g.json {
            print_json(&out)?;
        } else if bucket.is_none() {
            outln!(
                "{}: the store has no object lock; recovery points are protected only by holdfast's retention lock and the store's access control",
                repo.storage().location()
            );
        } else {
            outln!(
                "{}: Object Lock is not enabled on this bucket (it can only be enabled when the bucket is created)",
                repo.storage().location()
            );
        }
        return Ok(if extend || verify {
            exit::ERROR
        } else {
            exit::OK
        });
    };
    let mut code = exit::OK;
    if !g.json {
        outln!(
            "{}: Object Lock {} mode, each recovery point locked for {} days after it is taken",
            repo.storage().location(),
            policy.mode.as_str(),
            policy.window / 86_400
        );
    }
    if extend {
        let r = objlock::extend_if_locked(&repo, now)?.unwrap_or_default();
        if !g.json {
            outln!(
                "{} objects needed by young recovery points; {} extended now{}",
                r.needed,
                r.extended,
                r.locked_until
                    .map(|u| format!("; locked until {} at the latest", date(u)))
                    .unwrap_or_default()
            );
        }
        out["extend"] = serde_json::to_value(&r)?;
    }
    if verify {
        let (snaps, _) = snapshot::load_all(&repo)?;
        let young: Vec<_> = snaps
            .iter()
            .filter(|s| s.snapshot.time.timestamp() + policy.window > now.timestamp())
            .collect();
        let short = objlock::verify(&repo, &young, policy.window)?;
        if !g.json {
            for s in &short {
                outln!(
                    "SHORT  {} {}: must stay until {}, locked {}",
                    s.kind,
                    s.name,
                    date(s.needed),
                    s.locked_until
                        .map(|u| format!("until {}", date(u)))
                        .unwrap_or_else(|| "not at all".into())
                );
            }
            outln!(
                "verified with the store: {} recovery point(s) younger than {} days, {} object(s) locked too briefly{}",
                young.len(),
                policy.window / 86_400,
                short.len(),
                if short.is_empty() { "" } else { ": run `holdfast object-lock --extend`" }
            );
        }
        out["verified_snapshots"] = young.len().into();
        out["short"] = serde_json::to_value(&short)?;
        if !short.is_empty() {
            code = exit::NONCOMPLIANT;
        }
    }
    if g.json {
        print_json(&out)?;
    }
    Ok(code)
}

/// Undo the deletes made since `time` on a versioned bucket (see `Storage::undelete`). Needs no
/// password and no intact repository: it works on the bucket's object versions.
pub fn undelete(g: &Global, time: &str, dry_run: bool) -> Result<u8> {
    let now = super::now()?;
    let since = match chrono::DateTime::parse_from_rfc3339(time) {
        Ok(t) => t.timestamp(),
        Err(_) => (now - super::maintain::parse_duration(time)?).timestamp(),
    };
    let storage = storage_for(g)?;
    let back = storage.undelete(since, dry_run)?;
    if g.json {
        print_json(&serde_json::json!({
            "since": date(since), "dry_run": dry_run, "objects": back,
        }))?;
    } else {
        for o in &back {
            outln!("{} {o}", if dry_run { "would restore" } else { "restored" });
        }
        outln!(
            "{} object(s) deleted since {} {}{}",
            back.len(),
            date(since),
            if dry_run {
                "would come back"
            } else {
                "are back"
            },
            if dry_run || back.is_empty() {
                ""
            } else {
                "; run `holdfast check --read-data` next"
            }
        );
    }
    Ok(exit::OK)
}
