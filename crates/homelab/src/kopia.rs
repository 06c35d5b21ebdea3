//! Driving the kopia CLI. Every call disables auto-maintenance and progress output; maintenance
//! is run explicitly, under our lock. kopia's JSON is read leniently: a kopia upgrade that adds
//! fields must not break a backup.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::env_vars;
use crate::process::{self, Cancel, Finished, ProcessError};

/// File kopia writes at the root of a filesystem repository.
const FORMAT_BLOB: &str = "kopia.repository.f";

#[derive(Debug, thiserror::Error)]
pub enum KopiaError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("`kopia {command}` failed:\n{stderr}")]
    Failed { command: String, stderr: String },
    #[error("`kopia {command}` printed JSON we cannot read: {source}")]
    Json {
        command: String,
        source: serde_json::Error,
    },
    #[error("no Kopia repository at {0} (set repository.create = true to create one)")]
    NoRepository(PathBuf),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A snapshot manifest as `snapshot list --json` and `snapshot create --json` print it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub id: String,
    pub source: SourceInfo,
    #[serde(default)]
    pub start_time: String,
    #[serde(default)]
    pub end_time: String,
    #[serde(default)]
    pub root_entry: Option<RootEntry>,
    /// Set on checkpoints and on snapshots cut short.
    #[serde(default)]
    pub incomplete: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub pins: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub host: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootEntry {
    #[serde(default)]
    pub summ: Option<DirSummary>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirSummary {
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub symlinks: u64,
    #[serde(default)]
    pub num_failed: u64,
    #[serde(default)]
    pub num_ignored_errors: u64,
}

impl Manifest {
    pub fn summary(&self) -> DirSummary {
        self.root_entry
            .as_ref()
            .and_then(|r| r.summ.clone())
            .unwrap_or_default()
    }

    /// Complete, without errors, not even ignored ones: the only kind of snapshot we call good.
    pub fn is_clean(&self) -> bool {
        let summary = self.summary();
        self.incomplete.as_deref().is_none_or(str::is_empty)
            && summary.num_failed == 0
            && summary.num_ignored_errors == 0
    }

    pub fn is_pinned(&self, pin: &str) -> bool {
        self.pins.iter().any(|p| p == pin)
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(&format!("tag:{key}")).map(String::as_str)
    }

    pub fn start(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.start_time).ok()
    }

    pub fn end(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.end_time).ok()
    }
}

/// A stored blob as `blob list --json` prints it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Blob {
    pub id: String,
    #[serde(default)]
    pub length: u64,
}

/// One defined policy as `policy list --json` prints it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub target: SourceInfo,
    #[serde(default)]
    pub retention: PolicyRetention,
    #[serde(default)]
    pub files: PolicyFiles,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRetention {
    pub keep_latest: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_annual: Option<u32>,
}

impl PolicyRetention {
    /// As `policy set` flags; an unset value inherits.
    fn flags(&self) -> Vec<String> {
        [
            ("keep-latest", self.keep_latest),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-annual", self.keep_annual),
        ]
        .into_iter()
        .map(|(name, value)| {
            format!(
                "--{name}={}",
                value.map_or("inherit".into(), |v| v.to_string())
            )
        })
        .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PolicyFiles {
    #[serde(default)]
    pub ignore: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MaintenanceInfo {
    #[serde(default)]
    schedule: MaintenanceSchedule,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MaintenanceSchedule {
    #[serde(default)]
    next_full_maintenance: Option<String>,
}

/// Where the S3 mirror is and how to log in; the keys reach kopia through its environment.
pub struct S3Target<'a> {
    pub endpoint: &'a str,
    pub tls: bool,
    pub bucket: &'a str,
    pub region: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub parallel: u32,
    /// Refuse a bucket without this repository's format blob; false only for the first sync.
    pub must_exist: bool,
}

/// A kopia client with its own config file, cache and logs under the job's state directory.
#[derive(Clone)]
pub struct Kopia {
    program: OsString,
    dir: PathBuf,
    password: String,
    cancel: Cancel,
    timeout: Option<Duration>,
}

/// How long a cleanup call may take: cleanup runs while systemd waits to stop us.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

impl Kopia {
    pub fn new(dir: PathBuf, password: String, cancel: Cancel) -> Self {
        let program =
            std::env::var_os(env_vars::HOMELAB_KOPIA).unwrap_or_else(|| OsString::from("kopia"));
        Self {
            program,
            dir,
            password,
            cancel,
            timeout: None,
        }
    }

    /// A client for cleanup after a failure or a signal: not cancelled by the signal that may
    /// already have arrived, but bounded in time.
    pub fn for_cleanup(&self) -> Self {
        Self {
            cancel: Cancel::default(),
            timeout: Some(CLEANUP_TIMEOUT),
            ..self.clone()
        }
    }

    /// Creates the client's folder; returns its cache folder for `--cache-directory`.
    fn prepare_dir(&self) -> Result<String, KopiaError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| KopiaError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(self.dir.join("cache").to_string_lossy().into_owned())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("repository.config")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .args(["--no-progress", "--no-auto-maintenance"])
            .env(env_vars::KOPIA_CONFIG_PATH, self.config_path())
            .env(env_vars::KOPIA_PASSWORD, &self.password)
            .env(env_vars::KOPIA_LOG_DIR, self.dir.join("logs"))
            .env(env_vars::KOPIA_CHECK_FOR_UPDATES, "false")
            // kopia prints some times (maintenance schedule) in local time; we read RFC 3339 UTC.
            .env("TZ", "UTC")
            .env("KOPIA_PERSIST_CREDENTIALS_ON_CONNECT", "false")
            .env_remove(env_vars::AWS_ACCESS_KEY_ID)
            .env_remove(env_vars::AWS_SECRET_ACCESS_KEY);
        command
    }

    fn finish(&self, args: &[&str], mut command: Command) -> Result<Finished, KopiaError> {
        let done = process::run(&mut command, &self.cancel, self.timeout, true)?;
        if done.status.success() {
            Ok(done)
        } else {
            Err(KopiaError::Failed {
                command: args.join(" "),
                stderr: done.stderr_tail(),
            })
        }
    }

    /// Runs kopia with the S3 keys in its environment (never in argv).
    fn run_with_s3_keys(&self, args: &[&str], target: &S3Target<'_>) -> Result<(), KopiaError> {
        let mut command = self.command(args);
        command
            .env(env_vars::AWS_ACCESS_KEY_ID, target.access_key_id)
            .env(env_vars::AWS_SECRET_ACCESS_KEY, target.secret_access_key);
        self.finish(args, command).map(drop)
    }

    fn run(&self, args: &[&str]) -> Result<Finished, KopiaError> {
        self.finish(args, self.command(args))
    }

    fn run_json<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T, KopiaError> {
        let done = self.run(args)?;
        serde_json::from_slice(&done.stdout).map_err(|source| KopiaError::Json {
            command: args.join(" "),
            source,
        })
    }

    /// Connects this client to the filesystem repository, creating it only when allowed.
    /// A client that is already connected is left as it is.
    pub fn connect(&self, repository: &Path, create: bool) -> Result<(), KopiaError> {
        match self.connected_to() {
            Some(path) if path == repository => return Ok(()),
            // Connected elsewhere (the config changed): start over rather than write there.
            Some(_) => {
                let _ = std::fs::remove_file(self.config_path());
            }
            None => {}
        }
        let cache = self.prepare_dir()?;
        let path = repository.to_string_lossy();
        if repository.join(FORMAT_BLOB).exists() {
            tracing::info!(repository = %path, "connecting to the Kopia repository");
            self.run(&[
                "repository",
                "connect",
                "filesystem",
                "--path",
                &path,
                "--cache-directory",
                &cache,
            ])?;
        } else if create {
            tracing::info!(repository = %path, "creating the Kopia repository");
            self.run(&[
                "repository",
                "create",
                "filesystem",
                "--path",
                &path,
                "--cache-directory",
                &cache,
            ])?;
        } else {
            return Err(KopiaError::NoRepository(repository.to_owned()));
        }
        // Maintenance runs only from this client, under the backup lock.
        self.run(&["maintenance", "set", "--owner=me"])?;
        Ok(())
    }

    /// The repository path in the client config, read without starting kopia.
    fn connected_to(&self) -> Option<PathBuf> {
        #[derive(Deserialize)]
        struct ClientConfig {
            storage: Storage,
        }
        #[derive(Deserialize)]
        struct Storage {
            config: StorageConfig,
        }
        #[derive(Deserialize)]
        struct StorageConfig {
            path: PathBuf,
        }
        let text = std::fs::read(self.config_path()).ok()?;
        let config: ClientConfig = serde_json::from_slice(&text).ok()?;
        Some(config.storage.config.path)
    }

    /// Every defined policy; the global one has an empty target path.
    pub fn policies(&self) -> Result<Vec<Policy>, KopiaError> {
        self.run_json(&["policy", "list", "--json"])
    }

    pub fn set_global_retention(&self, wanted: &PolicyRetention) -> Result<(), KopiaError> {
        let flags = wanted.flags();
        let mut all = vec!["policy", "set", "--global"];
        all.extend(flags.iter().map(String::as_str));
        self.run(&all).map(drop)
    }

    /// Makes each path's own policy exactly `{files: {ignore: rules}}`, rules in the given order
    /// (negations must come last). `policy set --add-ignore` would sort them.
    pub fn set_ignore_rules(&self, rules: &[(&Path, Vec<String>)]) -> Result<(), KopiaError> {
        let policies: serde_json::Map<String, serde_json::Value> = rules
            .iter()
            .map(|(path, rules)| {
                let policy = serde_json::json!({ "files": { "ignore": rules } });
                (path.to_string_lossy().into_owned(), policy)
            })
            .collect();
        let mut file =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|source| KopiaError::Io {
                path: self.dir.clone(),
                source,
            })?;
        let path = file.path().to_owned();
        serde_json::to_writer(&mut file, &policies)
            .map_err(std::io::Error::from)
            .map_err(|source| KopiaError::Io {
                path: path.clone(),
                source,
            })?;
        let path = path.to_string_lossy().into_owned();
        self.run(&["policy", "import", "--from-file", &path])
            .map(drop)
    }

    /// Snapshots `paths` in one kopia process (its start-up costs as much as an unchanged
    /// source's snapshot), committing each source as it finishes. Returns the manifests kopia
    /// printed, one per source that got one, and the failure if kopia exited non-zero: kopia
    /// carries on after a failed source and saves snapshots with fatal errors before it reports
    /// them, so callers judge each manifest with [`Manifest::is_clean`].
    pub fn snapshot_create(
        &self,
        paths: &[&Path],
        tags: &[(&str, &str)],
        pin: Option<&str>,
        description: &str,
        timeout: Option<Duration>,
    ) -> (Vec<Manifest>, Result<(), KopiaError>) {
        let paths: Vec<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let pin = pin.map(|pin| format!("--pin={pin}"));
        let mut args = vec!["snapshot", "create"];
        args.extend(paths.iter().map(String::as_str));
        args.extend([
            "--json",
            "--flush-per-source",
            "--no-send-snapshot-report",
            "--description",
            description,
        ]);
        args.extend(pin.as_deref());
        for tag in &tags {
            args.extend(["--tags", tag]);
        }
        let done = match process::run(&mut self.command(&args), &self.cancel, timeout, true) {
            Ok(done) => done,
            Err(err) => return (Vec::new(), Err(err.into())),
        };
        let manifests = done
            .stdout_text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let status = if done.status.success() {
            Ok(())
        } else {
            Err(KopiaError::Failed {
                command: args.join(" "),
                stderr: done.stderr_tail(),
            })
        };
        (manifests, status)
    }

    /// Every snapshot of `path` made by this client, incomplete ones included, oldest first.
    pub fn snapshots(&self, path: &Path) -> Result<Vec<Manifest>, KopiaError> {
        let path = path.to_string_lossy();
        self.run_json(&["snapshot", "list", &path, "--json", "--incomplete"])
    }

    /// Every snapshot of every source of this client, incomplete ones included.
    pub fn all_snapshots(&self) -> Result<Vec<Manifest>, KopiaError> {
        self.run_json(&["snapshot", "list", "--json", "--incomplete"])
    }

    /// The repository's unique ID (hex), as `repository status` prints it.
    pub fn unique_id(&self) -> Result<String, KopiaError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Status {
            #[serde(rename = "uniqueIDHex")]
            unique_id_hex: String,
        }
        let status: Status = self.run_json(&["repository", "status", "--json"])?;
        Ok(status.unique_id_hex)
    }

    /// Every snapshot in the repository, whichever user and host made it (a rebuilt host has
    /// another name than the one that wrote the mirror).
    pub fn snapshots_of_every_client(&self) -> Result<Vec<Manifest>, KopiaError> {
        self.run_json(&["snapshot", "list", "--all", "--json", "--incomplete"])
    }

    /// Every blob in the repository's storage, with its size (a listing: nothing downloaded).
    pub fn blobs(&self) -> Result<Vec<Blob>, KopiaError> {
        self.run_json(&["blob", "list", "--json"])
    }

    /// The raw bytes of one blob, as stored.
    pub fn blob_bytes(&self, id: &str) -> Result<Vec<u8>, KopiaError> {
        self.run(&["blob", "show", id]).map(|done| done.stdout)
    }

    /// Deletes blobs from storage (kopia calls this dangerous: only damaged mirror copies,
    /// which the next `sync-to` uploads again from the local repository).
    pub fn delete_blobs(&self, ids: &[&str]) -> Result<(), KopiaError> {
        let mut args = vec!["blob", "delete", "--dangerous-commands=enabled"];
        args.extend(ids);
        self.run(&args).map(drop)
    }

    /// Checks that every file of the snapshot is backed by packs that exist (no download).
    pub fn verify_snapshot(&self, id: &str) -> Result<(), KopiaError> {
        self.run(&["snapshot", "verify", id, "--verify-files-percent=0"])
            .map(drop)
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<(), KopiaError> {
        self.run(&["snapshot", "delete", id, "--delete"]).map(drop)
    }

    pub fn pin(&self, id: &str, pin: &str) -> Result<(), KopiaError> {
        self.run(&["snapshot", "pin", id, &format!("--add={pin}")])
            .map(drop)
    }

    pub fn unpin(&self, ids: &[&str], pin: &str) -> Result<(), KopiaError> {
        let remove = format!("--remove={pin}");
        let mut args = vec!["snapshot", "pin"];
        args.extend(ids);
        args.push(&remove);
        self.run(&args).map(drop)
    }

    /// Quick maintenance, or full maintenance once kopia's schedule says it is due.
    pub fn maintenance(&self) -> Result<bool, KopiaError> {
        let info: MaintenanceInfo = self.run_json(&["maintenance", "info", "--json"])?;
        let full_due = info
            .schedule
            .next_full_maintenance
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_none_or(|next| next <= SystemTime::now());
        if full_due {
            self.run(&["maintenance", "run", "--full"])?;
        } else {
            self.run(&["maintenance", "run"])?;
        }
        Ok(full_due)
    }

    /// Drops the local cache so that the next reads come from the repository itself.
    pub fn clear_cache(&self) -> Result<(), KopiaError> {
        self.run(&["cache", "clear"]).map(drop)
    }

    /// Checks every snapshot's tree and downloads `files_percent` % of the files.
    pub fn verify(&self, files_percent: f64) -> Result<String, KopiaError> {
        let percent = format!("--verify-files-percent={files_percent}");
        let done = self.run(&["snapshot", "verify", &percent])?;
        Ok(done.stderr_tail())
    }

    pub fn restore(&self, id: &str, target: &Path) -> Result<(), KopiaError> {
        let target = target.to_string_lossy();
        self.run(&["snapshot", "restore", id, &target]).map(drop)
    }

    /// Connects this client straight to the S3 mirror, read-only unless `repair` (deleting a
    /// damaged blob needs a writable connection). The keys reach kopia through its
    /// environment; kopia then keeps them in its client config (see `offsite::Mirror`).
    pub fn connect_s3(&self, target: &S3Target<'_>, repair: bool) -> Result<(), KopiaError> {
        let cache = self.prepare_dir()?;
        let mut args = vec![
            "repository",
            "connect",
            "s3",
            "--bucket",
            target.bucket,
            "--endpoint",
            target.endpoint,
            "--region",
            target.region,
            "--cache-directory",
            &cache,
        ];
        if !repair {
            args.push("--readonly");
        }
        if !target.tls {
            args.push("--disable-tls");
        }
        self.run_with_s3_keys(&args, target)
    }

    /// Connects this client to a Kopia repository server as `user@host`, accepting only the
    /// certificate with this SHA-256. The password is the server account's.
    pub fn connect_server(
        &self,
        url: &str,
        fingerprint: &str,
        user: &str,
        host: &str,
    ) -> Result<(), KopiaError> {
        let cache = self.prepare_dir()?;
        let _ = std::fs::remove_file(self.config_path());
        self.run(&[
            "repository",
            "connect",
            "server",
            "--url",
            url,
            "--server-cert-fingerprint",
            fingerprint,
            "--override-username",
            user,
            "--override-hostname",
            host,
            "--cache-directory",
            &cache,
        ])
        .map(drop)
    }

    /// Sets a source's own policy: extra ignore rules (added, never removed here) and retention.
    pub fn set_source_policy(
        &self,
        path: &Path,
        ignore: &[String],
        retention: &PolicyRetention,
    ) -> Result<(), KopiaError> {
        let path = path.to_string_lossy();
        let mut args: Vec<String> = vec!["policy".into(), "set".into(), path.into_owned()];
        args.extend(retention.flags());
        for rule in ignore {
            args.push(format!("--add-ignore={rule}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).map(drop)
    }

    /// Mirrors the repository to S3. Never deletes remote blobs; kopia refuses a bucket holding
    /// another repository, and with `must_exist` one holding none.
    pub fn sync_to_s3(&self, target: &S3Target<'_>) -> Result<(), KopiaError> {
        let parallel = format!("--parallel={}", target.parallel);
        let mut args = vec![
            "repository",
            "sync-to",
            "s3",
            "--bucket",
            target.bucket,
            "--endpoint",
            target.endpoint,
            "--region",
            target.region,
            &parallel,
        ];
        if target.must_exist {
            args.push("--must-exist");
        }
        if !target.tls {
            args.push("--disable-tls");
        }
        self.run_with_s3_keys(&args, target)
    }
}
