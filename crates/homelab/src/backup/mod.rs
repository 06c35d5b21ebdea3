//! `homelab backup …`: Kopia snapshots of the host's data, made consistent first, checked,
//! drilled, and mirrored to R2.

mod capture;
mod check_config;
pub mod config;
mod drill;
mod lock;
mod metrics;
mod mirror_audit;
mod offsite;
mod recovery_kit;
pub(crate) mod restore;
mod run;
pub(crate) mod state;
pub(crate) mod status;
mod sync;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::env_vars;
use crate::exit::ExitStatus;
use crate::kopia::Kopia;
use crate::notify::Heartbeat;
use crate::process::Cancel;
use config::BackupConfig;

/// Folder inside each source where its captures are written; snapshotted with the source.
pub const STAGING_DIR: &str = ".homelab-backup";
/// Pin that keeps each source's newest good snapshot out of reach of retention.
pub const LAST_GOOD_PIN: &str = "homelab-last-good";
pub const RUN_TAG: &str = "homelab-run";
/// `status` only lists snapshots, but it too must end when the repository's disk hangs.
const STATUS_TIME_LIMIT: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Capture every source consistently and snapshot it into the Kopia repository.
    Run(run::RunCmd),
    /// Run repository maintenance, then mirror the repository to R2 (S3).
    Sync(sync::SyncCmd),
    /// Check snapshots and download a sample of their files.
    Verify(verify::VerifyCmd),
    /// Restore each source's last good snapshot into a temporary folder and check it.
    Drill(drill::DrillCmd),
    /// Last good snapshot per source and last successful sync, against the RPO.
    Status(status::StatusCmd),
    /// Restore one source from the local repository or the R2 mirror, beside or in place.
    Restore(restore::RestoreCmd),
    /// Write down what rebuilding this host from R2 needs (age key, passwords, R2 keys).
    RecoveryKit(recovery_kit::RecoveryKitCmd),
    /// Parse and validate a configuration file, then print what it declares.
    CheckConfig(check_config::CheckConfigCmd),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Backup configuration file (TOML).
    #[arg(long, env = env_vars::HOMELAB_BACKUP_CONFIG, value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(cmd: BackupCmd) -> ExitStatus {
    let path = match &cmd {
        BackupCmd::Run(c) => &c.config.config,
        BackupCmd::Sync(c) => &c.config.config,
        BackupCmd::Verify(c) => &c.config.config,
        BackupCmd::Drill(c) => &c.config.config,
        BackupCmd::Status(c) => &c.config.config,
        BackupCmd::Restore(c) => &c.config.config,
        BackupCmd::RecoveryKit(c) => &c.config.config,
        BackupCmd::CheckConfig(c) => &c.file,
    };
    let config = match BackupConfig::load(path) {
        Ok(config) => config,
        Err(err) => {
            err.report();
            return ExitStatus::Error;
        }
    };
    // Scheduled jobs ping their own heartbeat check: an outside service notices the pings
    // that stop coming (timer masked, clock wrong, host off), which no failure message can.
    let heartbeat = match &cmd {
        BackupCmd::Run(_) => Some("backup-run"),
        BackupCmd::Sync(_) => Some("backup-sync"),
        BackupCmd::Verify(c) if c.offsite => Some("backup-verify-offsite"),
        BackupCmd::Verify(_) => Some("backup-verify"),
        BackupCmd::Drill(_) => Some("backup-drill"),
        _ => None,
    }
    .map(|slug| Heartbeat::new(&config.notify, slug));
    if let Some(beat) = &heartbeat {
        beat.start();
    }
    let (job, result) = match &cmd {
        BackupCmd::Run(c) => ("backup run", run::run(&config, c)),
        BackupCmd::Sync(c) => ("backup sync", sync::run(&config, c)),
        BackupCmd::Verify(c) => ("backup verify", verify::run(&config, c)),
        BackupCmd::Drill(c) => ("backup drill", drill::run(&config, c)),
        BackupCmd::Status(c) => ("backup status", status::run(&config, c)),
        BackupCmd::Restore(c) => ("backup restore", restore::run(&config, c)),
        BackupCmd::RecoveryKit(c) => ("backup recovery-kit", recovery_kit::run(&config, c)),
        BackupCmd::CheckConfig(c) => return check_config::run(c, &config),
    };
    let (status, detail) = match result {
        Ok(status) => (status, String::new()),
        Err(err) => {
            tracing::error!("{job} failed: {err:#}");
            let detail = format!("{err:#}");
            crate::notify::failure(&config.notify, job, &detail);
            (ExitStatus::Failure, detail)
        }
    };
    if let Some(beat) = &heartbeat {
        match status {
            ExitStatus::Success => beat.success(&format!("homelab {job} succeeded")),
            _ => beat.failure(&format!(
                "homelab {job} failed on {}: {}",
                crate::notify::host_name(),
                if detail.is_empty() {
                    "see the job's log (journalctl -u homelab-…)"
                } else {
                    &detail
                }
            )),
        }
    }
    status
}

/// What every job needs before it touches a repository: the signal flag with the job's time
/// limit, and the job lock unless `job` is `None` (`status`).
pub(crate) struct Job {
    pub cancel: Cancel,
    _lock: Option<lock::JobLock>,
}

impl Job {
    pub fn begin(
        config: &BackupConfig,
        job: Option<&str>,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let cancel = Cancel::install()
            .context("cannot install signal handlers")?
            .with_time_limit(limit);
        let lock = match job {
            Some(job) => Some(lock::acquire(
                config.state_dir.get_ref(),
                job,
                config.lock_timeout,
                &cancel,
            )?),
            None => None,
        };
        Ok(Self {
            cancel,
            _lock: lock,
        })
    }
}

/// A job connected to the local repository.
pub(crate) struct Session {
    pub cancel: Cancel,
    pub kopia: Kopia,
    _job: Job,
}

impl Session {
    /// Begins the job (see [`Job::begin`]) and connects to the repository.
    pub fn open(config: &BackupConfig, job: Option<&str>, limit: Duration) -> anyhow::Result<Self> {
        let job = Job::begin(config, job, limit)?;
        let kopia = local_repository(config, &job.cancel)?;
        Ok(Self {
            cancel: job.cancel.clone(),
            kopia,
            _job: job,
        })
    }
}

/// A kopia client connected to the local repository (created only when configured).
pub(crate) fn local_repository(config: &BackupConfig, cancel: &Cancel) -> anyhow::Result<Kopia> {
    let kopia = Kopia::new(
        config.kopia_dir(),
        repository_password(config)?,
        cancel.clone(),
    );
    kopia.connect(config.repository.path.get_ref(), config.repository.create)?;
    Ok(kopia)
}

/// The repository password from its file, trailing newline removed; never empty.
pub(crate) fn repository_password(config: &BackupConfig) -> anyhow::Result<String> {
    let password_file = &config.repository.password_file;
    let password = std::fs::read_to_string(password_file).with_context(|| {
        format!(
            "cannot read repository.password-file {}",
            password_file.display()
        )
    })?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(
        !password.is_empty(),
        "repository.password-file {} is empty",
        password_file.display()
    );
    Ok(password)
}

/// The sources named with `--source`, or all of them. An unknown name is a usage error.
pub(crate) fn select_sources<'a>(
    config: &'a BackupConfig,
    names: &[String],
) -> Result<Vec<&'a config::Source>, ExitStatus> {
    if names.is_empty() {
        return Ok(config.sources.iter().collect());
    }
    let mut unique: Vec<&String> = Vec::new();
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
        .into_iter()
        .map(|name| {
            config.source(name).ok_or_else(|| {
                let known: Vec<&str> = config.sources.iter().map(|s| s.name()).collect();
                eprintln!(
                    "error: --source {name}: no such source (configured: {})",
                    known.join(", ")
                );
                ExitStatus::Error
            })
        })
        .collect()
}

/// Among `snapshots` (kopia's list, oldest first), those of the source at `path`.
pub(crate) fn of_source<'a, 'p>(
    snapshots: &'a [crate::kopia::Manifest],
    path: &'p std::path::Path,
) -> impl DoubleEndedIterator<Item = &'a crate::kopia::Manifest> + Clone + use<'a, 'p> {
    snapshots
        .iter()
        .filter(move |m| std::path::Path::new(&m.source.path) == path)
}

/// The snapshot that stands for the source at `path`: the pinned one, else the newest clean one.
pub(crate) fn last_good<'a>(
    snapshots: &'a [crate::kopia::Manifest],
    path: &std::path::Path,
) -> Option<&'a crate::kopia::Manifest> {
    let ours = of_source(snapshots, path);
    ours.clone()
        .rev()
        .find(|m| m.is_pinned(LAST_GOOD_PIN) && m.is_clean())
        .or_else(|| ours.rev().find(|m| m.is_clean()))
}
