//! The workload file (`holdfast.toml`): repositories, criticality classes, data sources.
//!
//! Parsing is strict (unknown keys are errors, so a typo cannot silently drop a setting) and
//! every error names the file, line and column, and how to fix it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Duration;
use holdfast_core::retention::KeepPolicy;
use serde::Deserialize;
use toml::Spanned;

use crate::duration;
pub use crate::service_config::{NotifyConfig, ServiceConfig, WebhookConfig};
pub use crate::sources::raw::{Recipe, Strategy};
use crate::sources::{self, AsSource, Conn, RawSource, Source, SourceError};

/// A problem with the workload file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error(
        "cannot read workload file {path}: {source} (give one with --config or HOLDFAST_CONFIG)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Syntax or type error, or a value that makes no sense.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A repository where recovery points go.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RepositoryConfig {
    /// A local directory (object storage URLs arrive with the object-storage backend).
    pub url: String,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Command printing the password.
    #[serde(default)]
    pub password_command: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// How critical a class is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// Losing it stops the business.
    Critical,
    /// Important.
    High,
    /// Useful.
    Medium,
    /// Can be lost or rebuilt.
    Low,
}

/// A criticality class.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClassConfig {
    /// How critical; defaults from the class name when it is one of the four words, else medium.
    #[serde(default)]
    pub criticality: Option<Criticality>,
    /// Recovery point objective.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub rpo: Option<Duration>,
    /// Recovery time objective.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub rto: Option<Duration>,
    /// Retention.
    #[serde(default)]
    pub keep: Option<KeepPolicy>,
    /// Other repositories that must hold a copy.
    #[serde(default)]
    pub copies: Vec<Spanned<String>>,
    /// How often to prove restores.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub drill_every: Option<Duration>,
    /// Which recovery point a scheduled drill restores: `latest` (default) or `random`.
    #[serde(default)]
    pub drill_point: Option<DrillPoint>,
    /// A random drill picks among the recovery points of this recent past only (AWS restore
    /// testing's selection window); default: all.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub drill_within: Option<Duration>,
    /// Under `holdfast serve`: a backup that cannot start within this long after it fell due
    /// is recorded as expired (default: it starts whenever a slot is free).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub start_window: Option<Duration>,
    /// Under `holdfast serve`: a backup still running this long after it started is stopped
    /// and recorded as failed (default: no limit).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub complete_window: Option<Duration>,
}

/// Which recovery point a scheduled drill restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillPoint {
    /// The newest.
    Latest,
    /// A random one (AWS restore testing's "random within a window").
    Random,
}

/// One data source: what every kind has, and its kind's driver with the kind's own typed
/// configuration (see [`crate::sources`]).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique name.
    pub name: Spanned<String>,
    /// Criticality class.
    pub class: Option<Spanned<String>>,
    /// Backup or reproduce.
    pub strategy: Option<Strategy>,
    /// Repository (default: the only one).
    pub repository: Option<Spanned<String>>,
    /// Recipe for `reproduce`.
    pub reproduce: Option<Recipe>,
    /// Why a backup is not needed (for `reproduce`).
    pub why_not_backup: Option<String>,
    /// Tags for its snapshots.
    pub tags: Vec<String>,
    /// Command run before the backup (freeze, flush); failing fails the job.
    pub pre: Option<String>,
    /// Command run after the backup, whatever happened.
    pub post: Option<String>,
    /// Limit for each hook.
    pub hook_timeout: Option<Duration>,
    /// The source is one thing reached from several hosts (a database cluster protected from
    /// either node): recovery points, jobs and drills of any host count for it. By default a
    /// recovery point belongs to the host that made it and the source it names.
    pub shared: bool,
    /// Discovered locations this source protects, by identity (`tcp:6379`, a socket path, a
    /// data directory), for what discovery cannot match by itself, such as a `command` source
    /// running `redis-cli --rdb -`.
    pub covers: Vec<String>,
    driver: Arc<dyn Source>,
}

impl SourceConfig {
    /// The source's name.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
    /// The class name, if any.
    pub fn class_name(&self) -> Option<&str> {
        self.class.as_ref().map(|c| c.get_ref().as_str())
    }
    /// Whether a recovery point (or job or drill record) made on `host` for `source` belongs
    /// to this source when seen from host `me`: the source name must match, and the host too,
    /// unless the source is `shared`.
    pub fn owns(&self, source: Option<&str>, host: &str, me: &str) -> bool {
        source == Some(self.name()) && (self.shared || host == me)
    }
    /// Whether a snapshot is one of this source's log batches (continuous protection) that
    /// counts for host `me`: the same ownership as [`SourceConfig::owns`].
    pub fn owns_log(&self, s: &holdfast_core::snapshot::Snapshot, me: &str) -> bool {
        s.log
            .as_ref()
            .is_some_and(|l| self.owns(Some(&l.source), &s.hostname, me))
    }
    /// Its kind's driver.
    pub fn driver(&self) -> &dyn Source {
        &*self.driver
    }
    /// Its kind, as written in the workload file.
    pub fn kind(&self) -> &'static str {
        self.driver.kind()
    }
    /// Every path it reads.
    pub fn all_paths(&self) -> Vec<PathBuf> {
        self.driver.paths().to_vec()
    }
    /// Whether a restore of it is a file restore (a `path` source).
    pub fn restores_files(&self) -> bool {
        self.driver.copies_files()
    }

    fn from_raw(r: RawSource, driver: Arc<dyn Source>) -> SourceConfig {
        SourceConfig {
            name: r.name,
            class: r.class,
            strategy: r.strategy,
            repository: r.repository,
            reproduce: r.reproduce,
            why_not_backup: r.why_not_backup,
            tags: r.tags,
            pre: r.pre,
            post: r.post,
            hook_timeout: r.hook_timeout,
            shared: r.shared,
            covers: r.covers,
            driver,
        }
    }
}

impl AsSource for SourceConfig {
    fn as_source(&self) -> &dyn Source {
        self.driver()
    }
}

impl Conn {
    /// The settings a source's driver connects with (for a restore into the source's own
    /// server).
    pub fn of(s: &SourceConfig) -> Result<Conn, SourceError> {
        s.driver().conn()
    }
}

/// Where `discover` looks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DiscoverConfig {
    /// Directories to search for data (SQLite files, large data directories).
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    /// Paths known to hold nothing worth protecting.
    #[serde(default)]
    pub ignore: Vec<PathBuf>,
    /// Discovered locations deliberately left unprotected, each with its reason.
    #[serde(default)]
    pub accept: Vec<Accept>,
}

/// A discovered location left unprotected on purpose (`[[discover.accept]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Accept {
    /// What `discover` printed as its location: an absolute path (everything under it is
    /// accepted), `tcp:PORT` or a socket path.
    pub location: Spanned<String>,
    /// Why it needs no protection (shown by `discover`, `plan` and `status`).
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    repository: BTreeMap<String, RepositoryConfig>,
    #[serde(default)]
    class: BTreeMap<String, ClassConfig>,
    #[serde(default)]
    source: Vec<RawSource>,
    #[serde(default)]
    discover: DiscoverConfig,
    #[serde(default)]
    service: ServiceConfig,
}

/// A parsed and validated workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The file it came from.
    pub path: PathBuf,
    /// Repositories by name.
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// Classes by name.
    pub classes: BTreeMap<String, ClassConfig>,
    /// Sources in file order.
    pub sources: Vec<SourceConfig>,
    /// Discovery settings.
    pub discover: DiscoverConfig,
    /// How `holdfast serve` runs this workload.
    pub service: ServiceConfig,
    text: String,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

impl Workload {
    /// Read and validate a workload file.
    pub fn load(path: &Path) -> Result<Workload, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Self::parse(&abs, &text)
    }

    /// Parse and validate workload text.
    pub fn parse(path: &Path, text: &str) -> Result<Workload, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let mut w = Workload {
            path: path.to_path_buf(),
            repositories: raw.repository,
            classes: raw.class,
            sources: Vec::new(),
            discover: raw.discover,
            service: raw.service,
            text: text.to_string(),
        };
        // Relative paths are relative to the workload file's directory.
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        w.sources = w.build_sources(raw.source, &base)?;
        w.validate()?;
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        w.discover.roots.iter_mut().for_each(fix);
        w.discover.ignore.iter_mut().for_each(fix);
        if let Err(message) = w.service.validate() {
            let at = text.find("[service").unwrap_or(0);
            return w.err_at(at..at, message);
        }
        for p in [
            &mut w.service.token_file,
            &mut w.service.tls_cert,
            &mut w.service.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        for h in &mut w.service.notify.webhook {
            if let Some(p) = &mut h.token_file {
                fix(p);
            }
        }
        Ok(w)
    }

    /// Check what every source has, then let each kind build its driver (errors at the
    /// source's name, or at its `kind` for a kind that does not exist).
    fn build_sources(
        &self,
        raw: Vec<RawSource>,
        base: &Path,
    ) -> Result<Vec<SourceConfig>, ConfigError> {
        for s in &raw {
            let k = s.kind.get_ref();
            if sources::builder(k).is_none() {
                let known: Vec<String> = sources::KINDS
                    .iter()
                    .map(|(k, _)| format!("`{k}`"))
                    .collect();
                return self.err_at(
                    s.kind.span(),
                    format!(
                        "unknown variant `{k}`, expected one of {}",
                        known.join(", ")
                    ),
                );
            }
        }
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for s in raw {
            self.validate_common(&s, &mut names)?;
            let build = sources::builder(s.kind.get_ref()).expect("checked above");
            let driver = match build(&s, base) {
                Ok(d) => d,
                Err(m) => return self.err_at(s.name.span(), m),
            };
            out.push(SourceConfig::from_raw(s, driver));
        }
        Ok(out)
    }

    fn err_at<T>(&self, span: std::ops::Range<usize>, message: String) -> Result<T, ConfigError> {
        let (line, column) = line_col(&self.text, span.start);
        Err(ConfigError::Invalid {
            path: self.path.clone(),
            line,
            column,
            message,
        })
    }

    fn validate_common(
        &self,
        s: &RawSource,
        names: &mut HashSet<String>,
    ) -> Result<(), ConfigError> {
        let n = s.name.get_ref();
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return self.err_at(
                s.name.span(),
                format!("source name {n:?} must be letters, digits, '-', '_' or '.'"),
            );
        }
        if !names.insert(n.clone()) {
            return self.err_at(
                s.name.span(),
                format!("source name {n:?} is used twice: names must be unique"),
            );
        }
        if let Some(c) = &s.class {
            if !self.classes.contains_key(c.get_ref()) {
                let known: Vec<_> = self.classes.keys().cloned().collect();
                return self.err_at(c.span(), format!("source {n:?} names class {:?}, which is not defined: add [class.{}] or use one of {known:?}", c.get_ref(), c.get_ref()));
            }
        }
        if let Some(r) = &s.repository {
            if !self.repositories.contains_key(r.get_ref()) {
                return self.err_at(r.span(), format!("source {n:?} names repository {:?}, which is not defined: add [repository.{}]", r.get_ref(), r.get_ref()));
            }
        } else if s.strategy == Some(Strategy::Backup) && self.repositories.len() != 1 {
            return self.err_at(s.name.span(), format!(
                "source {n:?} is backed up but names no repository, and there are {} repositories: add repository = \"...\"",
                self.repositories.len()
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (cname, c) in &self.classes {
            for copy in &c.copies {
                if !self.repositories.contains_key(copy.get_ref()) {
                    return self.err_at(
                        copy.span(),
                        format!(
                            "class {cname:?} wants a copy in repository {:?}, which is not defined",
                            copy.get_ref()
                        ),
                    );
                }
            }
        }
        for a in &self.discover.accept {
            let l = a.location.get_ref();
            if !(l.starts_with('/') || l.starts_with("tcp:")) {
                return self.err_at(a.location.span(), format!("accepted location {l:?} must be an absolute path or tcp:PORT, as `holdfast discover` prints it"));
            }
            if a.reason.trim().is_empty() {
                return self.err_at(a.location.span(), format!("accepted location {l:?} needs a reason = \"...\" (why nothing protects it)"));
            }
        }
        for (rname, r) in &self.repositories {
            if r.url.is_empty() {
                return Err(ConfigError::Invalid {
                    path: self.path.clone(),
                    line: 1,
                    column: 1,
                    message: format!("repository {rname:?} has an empty url"),
                });
            }
        }
        Ok(())
    }

    /// A source by name.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name() == name)
    }

    /// The class of a source.
    pub fn class_of(&self, s: &SourceConfig) -> Option<(&str, &ClassConfig)> {
        let n = s.class_name()?;
        self.classes.get_key_value(n).map(|(k, v)| (k.as_str(), v))
    }

    /// The repository a source's recovery points go to.
    pub fn repository_of(&self, s: &SourceConfig) -> Option<(&str, &RepositoryConfig)> {
        match &s.repository {
            Some(r) => self
                .repositories
                .get_key_value(r.get_ref())
                .map(|(k, v)| (k.as_str(), v)),
            None if self.repositories.len() == 1 => self
                .repositories
                .iter()
                .next()
                .map(|(k, v)| (k.as_str(), v)),
            None => None,
        }
    }

    /// Resolve relative repository URLs and password files against the workload file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

impl ClassConfig {
    /// The class's criticality: explicit, or from its name, or medium.
    pub fn criticality(&self, name: &str) -> Criticality {
        self.criticality.unwrap_or(match name {
            "critical" => Criticality::Critical,
            "high" => Criticality::High,
            "low" => Criticality::Low,
            _ => Criticality::Medium,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[repository.local]
url = "/var/backups/holdfast"
password-file = "/etc/holdfast/key"

[class.critical]
rpo = "15m"
rto = "1h"
keep = { last = 10, daily = 14 }
drill-every = "7d"

[[source]]
name = "orders-db"
kind = "path"
path = "/srv/orders"
class = "critical"
strategy = "backup"

[[source]]
name = "thumbs"
kind = "path"
path = "/srv/thumbs"
class = "critical"
strategy = "reproduce"
reproduce = { from = "orders-db", command = "regen", verify = "test -s x" }
why-not-backup = "derived"
"#;

    fn parse(t: &str) -> Result<Workload, ConfigError> {
        Workload::parse(Path::new("w.toml"), t)
    }

    #[test]
    fn parses_the_documented_shape() {
        let w = parse(GOOD).unwrap();
        assert_eq!(w.sources.len(), 2);
        let s = w.source("orders-db").unwrap();
        assert_eq!(w.class_of(s).unwrap().1.rpo, Some(Duration::minutes(15)));
        assert_eq!(w.repository_of(s).unwrap().0, "local");
        assert_eq!(
            w.class_of(s).unwrap().1.keep.as_ref().unwrap().daily,
            Some(14)
        );
        let w = parse(&GOOD.replace(
            "keep = { last = 10, daily = 14 }",
            "keep = { within = \"7d\" }",
        ))
        .unwrap();
        assert_eq!(
            w.classes["critical"].keep.as_ref().unwrap().within,
            Some(Duration::days(7))
        );
        let e = parse(&GOOD.replace(
            "keep = { last = 10, daily = 14 }",
            "keep = { within = \"soon\" }",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            (
                GOOD.replace(
                    "class = \"critical\"\nstrategy = \"backup\"",
                    "class = \"gold\"\nstrategy = \"backup\"",
                ),
                16,
                "class \"gold\"",
            ),
            (
                GOOD.replace("rpo = \"15m\"", "rpo = \"soon\""),
                7,
                "not a duration",
            ),
            (
                GOOD.replace("drill-every", "drill-evry"),
                10,
                "unknown field",
            ),
            (
                GOOD.replace("name = \"thumbs\"", "name = \"orders-db\""),
                20,
                "used twice",
            ),
            (
                GOOD.replace("path = \"/srv/orders\"", "path = \"\""),
                13,
                "path is empty",
            ),
            (
                GOOD.replace(
                    "kind = \"path\"\npath = \"/srv/orders\"",
                    "kind = \"tape\"\npath = \"/srv/orders\"",
                ),
                14,
                "unknown variant",
            ),
        ];
        for (text, line, needle) in cases {
            let e = parse(&text).unwrap_err();
            let msg = e.to_string();
            match e {
                ConfigError::Invalid { line: l, .. } => assert_eq!(l, line, "{msg}"),
                _ => panic!("{msg}"),
            }
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.starts_with("w.toml:"), "{msg}");
        }
    }

    #[test]
    fn the_commented_example_and_the_demo_parse() {
        for (name, text) in [
            (
                "examples/holdfast.toml",
                include_str!("../../../examples/holdfast.toml"),
            ),
            (
                "examples/demo/holdfast.toml",
                include_str!("../../../examples/demo/holdfast.toml"),
            ),
        ] {
            let w = Workload::parse(Path::new(name), text).unwrap_or_else(|e| panic!("{e}"));
            assert!(!w.sources.is_empty(), "{name}");
        }
    }

    #[test]
    fn unknown_kind_reads_as_serdes_own_error() {
        // The kinds were a serde enum; the registry must report an unknown one identically.
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[allow(dead_code)]
        enum Kind {
            Path,
            Sqlite,
            Postgres,
            Mysql,
            Command,
            S3,
            Volume,
            Journal,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct One {
            kind: Kind,
        }
        let text = "\n\nkind   = \"tape\"\n";
        let e = toml::from_str::<One>(text).unwrap_err();
        let (line, column) = line_col(text, e.span().unwrap().start);
        let want = format!("w.toml:{line}:{column}: {}", e.message().trim());
        let got = parse(&format!("[[source]]\nname = \"x\"\n{}", text.trim_start()))
            .unwrap_err()
            .to_string();
        // Same message, same column; the line is that of the kind in each text.
        assert_eq!(
            got.split_once(": ").unwrap().1,
            want.split_once(": ").unwrap().1
        );
        assert!(
            got.starts_with(&format!("w.toml:3:{column}:")),
            "{got} vs {want}"
        );
    }

    #[test]
    fn kind_settings_errors_name_the_source() {
        let src = |body: &str| {
            format!("[repository.r]\nurl = \"/r\"\n\n[[source]]\nname = \"s\"\n{body}\n")
        };
        let cases = [
            ("kind = \"command\"", "of kind command needs command = "),
            (
                "kind = \"path\"\npath = \"/a\"\nmode = \"physical\"",
                "mode \"physical\" is only for database sources",
            ),
            (
                "kind = \"postgres\"\nmode = \"fast\"",
                "mode \"fast\" is only for database sources",
            ),
            (
                "kind = \"sqlite\"",
                "source \"s\" of kind Sqlite needs path = ",
            ),
            ("kind = \"path\"", "source \"s\" of kind Path needs path = "),
            (
                "kind = \"mysql\"\nmode = \"logical\"",
                "not one of a mysql source's",
            ),
        ];
        for (body, needle) in cases {
            let e = parse(&src(body)).unwrap_err().to_string();
            assert!(e.starts_with("w.toml:5:8: "), "{body}: {e}");
            assert!(e.contains(needle), "{body}: {e}");
        }
        // A bucket source without its bucket, or in a build without object storage.
        let e = parse(&src("kind = \"s3\"")).unwrap_err().to_string();
        assert!(e.starts_with("w.toml:5:8: "), "{e}");
        assert!(
            e.contains("needs bucket") || e.contains("built with the \"s3\" feature"),
            "{e}"
        );
        let w = parse(&src("kind = \"postgres\"\nmode = \"physical\"")).unwrap();
        assert_eq!(w.sources[0].kind(), "postgres");
        let w = parse(&src("kind = \"path\"\npath = \"rel/dir\"")).unwrap();
        assert_eq!(w.sources[0].all_paths(), vec![PathBuf::from("rel/dir")]);
        let w = Workload::parse(
            Path::new("/etc/w.toml"),
            &src("kind = \"path\"\npath = \"rel\""),
        )
        .unwrap();
        assert_eq!(w.sources[0].all_paths(), vec![PathBuf::from("/etc/rel")]);
    }

    #[test]
    fn criticality_defaults_from_name() {
        let w = parse(GOOD).unwrap();
        assert_eq!(
            w.classes["critical"].criticality("critical"),
            Criticality::Critical
        );
        assert_eq!(
            w.classes["critical"].criticality("bronze"),
            Criticality::Medium
        );
    }
}
