//! The backup configuration file: one TOML file, every key known, every error located.
//!
//! The NixOS module writes this file from its options; `examples/backup.toml` in the crate shows
//! every key with its meaning.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub(crate) use crate::strict_toml::ConfigError;
use crate::strict_toml::{Invalid, invalid, load_toml, require_absolute, require_http_url};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupConfig {
    /// Holds the lock, kopia's client config and cache, and the job state.
    pub state_dir: Spanned<PathBuf>,
    /// How long a job waits for another to release the lock before giving up.
    #[serde(default = "defaults::lock_timeout", with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// A source whose last good snapshot is older than this is stale.
    #[serde(default = "defaults::rpo", with = "humantime_serde")]
    pub rpo: Duration,
    /// Directory of node-exporter's textfile collector; no metrics file when absent.
    pub textfile_dir: Option<Spanned<PathBuf>>,
    /// The longest each job may run before it stops its child processes and fails.
    #[serde(default)]
    pub time_limit: TimeLimits,
    pub repository: Repository,
    #[serde(default)]
    pub retention: Retention,
    pub offsite: Option<Offsite>,
    #[serde(default)]
    pub verify: Verify,
    #[serde(default)]
    pub notify: crate::notify::Settings,
    /// What `backup recovery-kit` writes down besides the repository's own secrets.
    pub recovery_kit: Option<RecoveryKitFacts>,
    #[serde(rename = "source")]
    pub sources: Vec<Source>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RecoveryKitFacts {
    /// sops-nix's age key: it decrypts every SOPS file, so a rebuilt host needs it back.
    pub age_key_file: PathBuf,
    /// The Git repository the host is built from.
    pub source_repository: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Repository {
    /// The Kopia filesystem repository.
    pub path: Spanned<PathBuf>,
    /// File whose content (trailing newline ignored) is the repository password.
    pub password_file: PathBuf,
    /// Create the repository when `path` holds none; otherwise a missing repository is an error.
    #[serde(default)]
    pub create: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    #[serde(default = "defaults::keep")]
    pub keep_latest: u32,
    #[serde(default)]
    pub keep_hourly: u32,
    #[serde(default = "defaults::keep")]
    pub keep_daily: u32,
    #[serde(default = "defaults::keep")]
    pub keep_weekly: u32,
    #[serde(default = "defaults::keep")]
    pub keep_monthly: u32,
    #[serde(default)]
    pub keep_annual: u32,
}

impl Retention {
    /// As kopia's policy holds it.
    pub fn policy(&self) -> crate::kopia::PolicyRetention {
        crate::kopia::PolicyRetention {
            keep_latest: Some(self.keep_latest),
            keep_hourly: Some(self.keep_hourly),
            keep_daily: Some(self.keep_daily),
            keep_weekly: Some(self.keep_weekly),
            keep_monthly: Some(self.keep_monthly),
            keep_annual: Some(self.keep_annual),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_latest: defaults::keep(),
            keep_hourly: 0,
            keep_daily: defaults::keep(),
            keep_weekly: defaults::keep(),
            keep_monthly: defaults::keep(),
            keep_annual: 0,
        }
    }
}

/// Whole-job limits, counted from the job's start (waiting for the lock included). When one
/// passes, the running child is stopped, cleanup runs (apps started, failed snapshots deleted),
/// the lock is released and the job exits 1 with a notification.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TimeLimits {
    #[serde(default = "defaults::run_limit", with = "humantime_serde")]
    pub run: Duration,
    #[serde(default = "defaults::sync_limit", with = "humantime_serde")]
    pub sync: Duration,
    #[serde(default = "defaults::verify_limit", with = "humantime_serde")]
    pub verify: Duration,
    #[serde(default = "defaults::drill_limit", with = "humantime_serde")]
    pub drill: Duration,
    /// Run by hand, possibly of Immich's whole library from R2: long by default.
    #[serde(default = "defaults::restore_limit", with = "humantime_serde")]
    pub restore: Duration,
}

impl Default for TimeLimits {
    fn default() -> Self {
        Self {
            run: defaults::run_limit(),
            sync: defaults::sync_limit(),
            verify: defaults::verify_limit(),
            drill: defaults::drill_limit(),
            restore: defaults::restore_limit(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Offsite {
    /// Environment file with R2_ENDPOINT, R2_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
    pub credentials_file: PathBuf,
    #[serde(default = "defaults::region")]
    pub region: String,
    /// Tries of `sync-to` before the sync fails.
    #[serde(default = "defaults::attempts")]
    pub attempts: Spanned<u32>,
    /// Wait before the second try; doubled before each later one.
    #[serde(default = "defaults::retry_delay", with = "humantime_serde")]
    pub retry_delay: Duration,
    #[serde(default = "defaults::parallel")]
    pub parallel: u32,
    /// The mirror is stale when the last successful sync is older than this.
    #[serde(default = "defaults::offsite_rpo", with = "humantime_serde")]
    pub rpo: Duration,
}

impl Offsite {
    fn validate(&self) -> Result<(), Invalid> {
        if *self.attempts.get_ref() == 0 {
            return Err(invalid("offsite.attempts", &self.attempts, "at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Verify {
    /// Share of files `backup verify` downloads and checks, 0 to 100.
    #[serde(default = "defaults::files_percent")]
    pub files_percent: Spanned<f64>,
    /// `verify --offsite` reads one of this many shares of the mirror's packs byte for byte
    /// against the local copies, in turn: every pack is read once per this many runs (weekly:
    /// every 4 weeks). 1 reads every pack every time.
    #[serde(default = "defaults::offsite_pack_shares")]
    pub offsite_pack_shares: Spanned<u32>,
}

impl Verify {
    fn validate(&self) -> Result<(), Invalid> {
        if !(0.0..=100.0).contains(self.files_percent.get_ref()) {
            return Err(invalid(
                "verify.files-percent",
                &self.files_percent,
                "a number from 0 to 100",
            ));
        }
        if *self.offsite_pack_shares.get_ref() == 0 {
            return Err(invalid(
                "verify.offsite-pack-shares",
                &self.offsite_pack_shares,
                "at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for Verify {
    fn default() -> Self {
        Self {
            files_percent: defaults::files_percent(),
            offsite_pack_shares: defaults::offsite_pack_shares(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Source {
    /// Short name used in tags, metrics and reports: lowercase letters, digits and dashes.
    pub name: Spanned<String>,
    /// Absolute path of the directory to snapshot.
    pub path: Spanned<PathBuf>,
    /// Kopia ignore patterns (gitignore syntax, `/` anchors at the source root).
    #[serde(default)]
    pub exclude: Vec<String>,
    pub quiesce: Option<QuiesceCapture>,
    pub sqlite: Option<SqliteCapture>,
    pub dump: Option<DumpCapture>,
    pub restore: Option<RestoreSteps>,
}

impl Source {
    /// `key("path")` is this source's dotted key for `path` (`source[2].path`).
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
        let name = self.name.get_ref();
        let well_formed = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !well_formed {
            return Err(invalid(
                &key("name"),
                &self.name,
                "lowercase letters, digits and dashes",
            ));
        }
        require_absolute(&key("path"), &self.path)?;
        if let Some(sqlite) = &self.sqlite {
            sqlite.validate(key)?;
        }
        if let Some(dump) = &self.dump {
            dump.validate(key)?;
        }
        if let Some(restore) = &self.restore {
            restore.validate(self, key)?;
        }
        if let Some(quiesce) = &self.quiesce {
            quiesce.validate(key)?;
        }
        Ok(())
    }
}

/// How `backup restore --in-place` replaces the live data: stop the app, swap the folders, carry
/// over what the snapshot leaves out, start, load the dump, finish.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestoreSteps {
    /// Stops the app (default: `quiesce.stop`). An empty list says there is nothing to stop.
    pub stop: Option<Spanned<Vec<Vec<String>>>>,
    /// Starts the app, or what loading the dump needs (default: `quiesce.start`).
    pub start: Option<Spanned<Vec<Vec<String>>>>,
    /// Paths relative to the source, excluded from its snapshots, that the live app keeps
    /// (Immich's Postgres data folder): moved from the set-aside folder into the restored one.
    pub keep: Option<Spanned<Vec<String>>>,
    /// Loads the dump, given on its standard input (`psql` through `kubectl exec -i`).
    pub load_dump: Option<Spanned<Vec<String>>>,
    /// Runs after the dump is loaded (start the rest of the app).
    pub after_load: Option<Spanned<Vec<Vec<String>>>>,
    /// Limit for each command (the dump load included).
    #[serde(default = "defaults::restore_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl RestoreSteps {
    fn validate(&self, source: &Source, key: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
        let lists = [
            ("restore.stop", self.stop.as_ref()),
            ("restore.start", self.start.as_ref()),
            ("restore.after-load", self.after_load.as_ref()),
        ];
        for (field, commands) in lists {
            if let Some(commands) = commands
                && commands.get_ref().iter().any(|c| not_a_command(c))
            {
                return Err(invalid(
                    &key(field),
                    commands,
                    "a list of commands, each a program and its arguments",
                ));
            }
        }
        if let Some(load) = &self.load_dump {
            if not_a_command(load.get_ref()) {
                return Err(invalid(
                    &key("restore.load-dump"),
                    load,
                    "a program and its arguments that reads the dump on stdin",
                ));
            }
            if source.dump.is_none() {
                return Err(invalid(
                    &key("restore.load-dump"),
                    load,
                    "a [source.dump] table beside it: there is no dump to load",
                ));
            }
        }
        let stops = self
            .stop
            .as_ref()
            .or(source.quiesce.as_ref().map(|q| &q.stop));
        let starts = self
            .start
            .as_ref()
            .or(source.quiesce.as_ref().map(|q| &q.start))
            .is_some_and(|c| !c.get_ref().is_empty())
            || !self.after_load().is_empty();
        if let Some(stops) = stops
            && !stops.get_ref().is_empty()
            && !starts
        {
            return Err(invalid(
                &key("restore.stop"),
                stops,
                "start (or after-load) commands beside it: what the restore stops must be \
                 started again",
            ));
        }
        if self.timeout.is_zero() {
            return Err((
                key("restore.timeout"),
                0..0,
                "expected a time limit longer than zero".to_owned(),
            ));
        }
        if let Some(keep) = &self.keep {
            let paths = keep.get_ref();
            let nested = paths.iter().enumerate().any(|(i, a)| {
                paths
                    .iter()
                    .enumerate()
                    .any(|(j, b)| i != j && Path::new(a).starts_with(b))
            });
            if nested {
                return Err(invalid(
                    &key("restore.keep"),
                    keep,
                    "paths none of which lies inside another",
                ));
            }
            let unclean = paths.iter().any(|k| {
                k.is_empty()
                    || k.starts_with('/')
                    || k.split('/').any(|part| part == ".." || part == ".")
            });
            if unclean {
                return Err(invalid(
                    &key("restore.keep"),
                    keep,
                    "paths relative to the source path, without `.` or `..`",
                ));
            }
        }
        Ok(())
    }
}

/// Copy SQLite databases with the online backup API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SqliteCapture {
    /// Glob patterns relative to the source path (`db.sqlite3`, `dbs/*/data`).
    pub databases: Spanned<Vec<String>>,
    /// How long to keep retrying while another process holds a lock that blocks the copy;
    /// after that the source fails (its previous snapshot stays the last good one).
    #[serde(default = "defaults::busy_timeout", with = "humantime_serde")]
    pub busy_timeout: Duration,
}

impl SqliteCapture {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
        let patterns = self.databases.get_ref();
        if patterns.is_empty() {
            return Err(invalid(
                &key("sqlite.databases"),
                &self.databases,
                "at least one pattern",
            ));
        }
        for pattern in patterns {
            if pattern.starts_with('/') || pattern.split('/').any(|part| part == "..") {
                return Err(invalid(
                    &key("sqlite.databases"),
                    &self.databases,
                    "patterns relative to the source path, without `..`",
                ));
            }
            if let Err(err) = glob::Pattern::new(pattern) {
                return Err(invalid(
                    &key("sqlite.databases"),
                    &self.databases,
                    &format!("valid glob patterns ({pattern}: {err})"),
                ));
            }
        }
        Ok(())
    }
}

/// Stream a command's stdout into a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DumpCapture {
    /// File name of the dump inside the staging folder.
    pub file: Spanned<String>,
    pub command: Spanned<Vec<String>>,
    /// Text found near the end of every complete dump (pg_dumpall closes with
    /// `-- PostgreSQL database cluster dump complete`), checked at capture and by the drill.
    pub complete_marker: Option<String>,
    #[serde(default = "defaults::dump_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl DumpCapture {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
        let file = self.file.get_ref();
        if file.is_empty() || file.contains('/') || file.starts_with('.') {
            return Err(invalid(
                &key("dump.file"),
                &self.file,
                "a plain file name such as `immich.sql`",
            ));
        }
        if not_a_command(self.command.get_ref()) {
            return Err(invalid(
                &key("dump.command"),
                &self.command,
                "a program and its arguments, e.g. [\"pg_dumpall\", \"--clean\"]",
            ));
        }
        Ok(())
    }
}

/// Stop the app before the snapshot and start it again after, whatever happened.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuiesceCapture {
    pub stop: Spanned<Vec<Vec<String>>>,
    pub start: Spanned<Vec<Vec<String>>>,
    /// Limit for each stop or start command.
    #[serde(default = "defaults::quiesce_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest the snapshot may keep the app stopped; kopia is stopped after it.
    #[serde(default = "defaults::snapshot_timeout", with = "humantime_serde")]
    pub snapshot_timeout: Duration,
}

impl QuiesceCapture {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
        for (field, commands) in [("stop", &self.stop), ("start", &self.start)] {
            if commands.get_ref().is_empty() || commands.get_ref().iter().any(|c| not_a_command(c))
            {
                return Err(invalid(
                    &key(&format!("quiesce.{field}")),
                    commands,
                    "a list of commands, each a program and its arguments",
                ));
            }
        }
        Ok(())
    }
}

/// An argv with no program in it.
fn not_a_command(argv: &[String]) -> bool {
    argv.first().is_none_or(|program| program.is_empty())
}

impl RestoreSteps {
    pub fn keep(&self) -> &[String] {
        self.keep.as_ref().map_or(&[], |k| k.get_ref().as_slice())
    }

    pub fn after_load(&self) -> &[Vec<String>] {
        self.after_load
            .as_ref()
            .map_or(&[], |c| c.get_ref().as_slice())
    }
}

mod defaults {
    use std::time::Duration;

    pub fn lock_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn rpo() -> Duration {
        Duration::from_secs(26 * 3600)
    }
    pub fn keep() -> u32 {
        10
    }
    pub fn region() -> String {
        "auto".to_owned()
    }
    pub fn attempts() -> toml::Spanned<u32> {
        toml::Spanned::new(0..0, 5)
    }
    pub fn retry_delay() -> Duration {
        Duration::from_secs(30)
    }
    pub fn parallel() -> u32 {
        4
    }
    pub fn offsite_rpo() -> Duration {
        Duration::from_secs(13 * 3600)
    }
    pub fn offsite_pack_shares() -> toml::Spanned<u32> {
        toml::Spanned::new(0..0, 4)
    }
    pub fn files_percent() -> toml::Spanned<f64> {
        toml::Spanned::new(0..0, 5.0)
    }
    pub fn dump_timeout() -> Duration {
        Duration::from_secs(2 * 3600)
    }
    pub fn quiesce_timeout() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub fn snapshot_timeout() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn restore_timeout() -> Duration {
        Duration::from_secs(2 * 3600)
    }
    pub fn busy_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn run_limit() -> Duration {
        Duration::from_secs(6 * 3600)
    }
    pub fn sync_limit() -> Duration {
        Duration::from_secs(5 * 3600)
    }
    pub fn verify_limit() -> Duration {
        Duration::from_secs(4 * 3600)
    }
    pub fn drill_limit() -> Duration {
        Duration::from_secs(6 * 3600)
    }
    pub fn restore_limit() -> Duration {
        Duration::from_secs(48 * 3600)
    }
}

impl BackupConfig {
    /// Reads, parses and validates the file at `file`.
    pub fn load(file: &Path) -> Result<Self, Box<ConfigError>> {
        load_toml(file, Self::validate)
    }

    /// The rules serde cannot express, each beside the type it is about; the first broken one
    /// is reported.
    fn validate(&self) -> Result<(), Invalid> {
        require_absolute("state-dir", &self.state_dir)?;
        require_absolute("repository.path", &self.repository.path)?;
        if let Some(dir) = &self.textfile_dir {
            require_absolute("textfile-dir", dir)?;
        }
        if let Some(offsite) = &self.offsite {
            offsite.validate()?;
        }
        self.verify.validate()?;
        if let Some(matrix) = &self.notify.matrix {
            require_http_url("notify.matrix.homeserver", &matrix.homeserver)?;
        }
        if self.sources.is_empty() {
            return Err((
                "source".into(),
                0..0,
                "expected at least one [[source]] table".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let key = |field: &str| format!("source[{i}].{field}");
            source.validate(&key)?;
            if !names.insert(source.name.get_ref().as_str()) {
                return Err(invalid(
                    &key("name"),
                    &source.name,
                    "a name no other source has",
                ));
            }
        }
        self.validate_layout()
    }

    /// No source inside another, the repository neither inside a source nor holding one, and
    /// no folder the jobs write to inside a source: each run would snapshot the repository (or
    /// kopia's cache) into itself and grow by the source's size. Near-linear in the number of
    /// sources.
    fn validate_layout(&self) -> Result<(), Invalid> {
        let source_key = |i: usize| format!("source[{i}].path");
        // In component order, whatever lies inside a path sorts right after it, before any
        // path outside it: comparing each path with the last one not inside another finds every
        // nesting.
        let mut order: Vec<usize> = (0..self.sources.len()).collect();
        order.sort_by(|&a, &b| self.sources[a].path().cmp(self.sources[b].path()));
        let mut outer: Option<usize> = None;
        for i in order {
            match outer {
                Some(o) if self.sources[i].path().starts_with(self.sources[o].path()) => {
                    let (first, later) = (o.min(i), o.max(i));
                    return Err(invalid(
                        &source_key(later),
                        &self.sources[later].path,
                        &format!(
                            "a path that neither contains nor lies inside {}",
                            source_key(first)
                        ),
                    ));
                }
                _ => outer = Some(i),
            }
        }
        let by_path: HashMap<&Path, usize> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path(), i))
            .collect();
        let containing_source = |dir: &Path| dir.ancestors().find_map(|a| by_path.get(a).copied());
        let written: [(&str, Option<&Spanned<PathBuf>>); 3] = [
            ("repository.path", Some(&self.repository.path)),
            ("state-dir", Some(&self.state_dir)),
            ("textfile-dir", self.textfile_dir.as_ref()),
        ];
        for (key, dir) in written {
            let Some(dir) = dir else { continue };
            if let Some(i) = containing_source(dir.get_ref()) {
                return Err(invalid(
                    key,
                    dir,
                    &format!(
                        "a folder outside every source ({} lies inside {} = {}, so each run \
                         would back it up into itself)",
                        dir.get_ref().display(),
                        source_key(i),
                        self.sources[i].path().display()
                    ),
                ));
            }
        }
        let repository = self.repository.path.get_ref();
        if let Some((i, source)) = self
            .sources
            .iter()
            .enumerate()
            .find(|(_, s)| s.path().starts_with(repository))
        {
            return Err(invalid(
                &source_key(i),
                &source.path,
                &format!(
                    "a path outside the repository {} (repository.path)",
                    repository.display()
                ),
            ));
        }
        Ok(())
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name.get_ref() == name)
    }

    pub fn kopia_dir(&self) -> PathBuf {
        self.state_dir.get_ref().join("kopia")
    }
}

impl Source {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    pub fn path(&self) -> &Path {
        self.path.get_ref()
    }

    /// The commands that stop the app for an in-place restore: `restore.stop`, else the
    /// quiesce stop commands; `None` when neither says how.
    pub fn restore_stop(&self) -> Option<&[Vec<String>]> {
        self.restore
            .as_ref()
            .and_then(|r| r.stop.as_ref())
            .or(self.quiesce.as_ref().map(|q| &q.stop))
            .map(|c| c.get_ref().as_slice())
    }

    /// The commands that start the app again after an in-place restore.
    pub fn restore_start(&self) -> &[Vec<String>] {
        self.restore
            .as_ref()
            .and_then(|r| r.start.as_ref())
            .or(self.quiesce.as_ref().map(|q| &q.start))
            .map_or(&[], |c| c.get_ref().as_slice())
    }

    /// Where this source's captures are written; snapshotted with the source.
    pub fn staging_dir(&self) -> PathBuf {
        self.path().join(super::STAGING_DIR)
    }

    /// Kopia ignore rules, in order: the configured excludes, the live files that captures
    /// replace, and last (kopia applies rules in order) the negations that keep the staging
    /// folder in whatever the rules before them match.
    pub fn ignore_rules(&self) -> Vec<String> {
        let mut rules = self.exclude.clone();
        if let Some(sqlite) = &self.sqlite {
            for pattern in sqlite.databases.get_ref() {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    rules.push(format!("/{pattern}{suffix}"));
                }
            }
        }
        if self.sqlite.is_some() || self.dump.is_some() {
            let staging = super::STAGING_DIR;
            rules.push(format!("!/{staging}/"));
            rules.push(format!("!/{staging}/**"));
        }
        rules
    }
}
