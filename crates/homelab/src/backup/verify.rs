//! `homelab backup verify`: reads every snapshot's directory tree and downloads a random share of
//! its files from the repository itself (the local cache is dropped first). With `--offsite`
//! the same is done against the R2 mirror, opened directly and read-only: it proves the mirror
//! can be restored from without the local repository.

use clap::Args;

use super::config::BackupConfig;
use super::offsite::{Mirror, read_credentials};
use super::{ConfigArg, Job, Session, repository_password};
use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct VerifyCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Share of files to download and check, 0 to 100 (default: verify.files-percent).
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    pub percent: Option<f64>,
    /// Verify the R2 mirror (read-only, straight from the bucket) instead of the local
    /// repository.
    #[arg(long)]
    pub offsite: bool,
}

fn percent(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a number from 0 to 100, got {value}")),
    }
}

pub fn run(config: &BackupConfig, cmd: &VerifyCmd) -> anyhow::Result<ExitStatus> {
    let percent = cmd
        .percent
        .unwrap_or(*config.verify.files_percent.get_ref());
    let (what, result) = if cmd.offsite {
        let Some(offsite) = &config.offsite else {
            eprintln!("error: --offsite: the configuration has no [offsite] table");
            return Ok(ExitStatus::Error);
        };
        let credentials = match read_credentials(&offsite.credentials_file) {
            Ok(credentials) => credentials,
            Err(err) => {
                eprintln!("error: {err:#}");
                return Ok(ExitStatus::Error);
            }
        };
        // The lock keeps a sync from writing to the mirror while it is read.
        let job = Job::begin(
            config,
            Some("backup verify --offsite"),
            config.time_limit.verify,
        )?;
        let mirror = Mirror::open(
            config,
            offsite,
            &credentials,
            repository_password(config)?,
            job.cancel.clone(),
        )?;
        let target = format!("the mirror s3://{}", credentials.bucket);
        (target, mirror.kopia.verify(percent))
    } else {
        let session = Session::open(config, Some("backup verify"), config.time_limit.verify)?;
        session.kopia.clear_cache()?;
        (
            "the local repository".to_owned(),
            session.kopia.verify(percent),
        )
    };
    match result {
        Ok(summary) => {
            println!(
                "verified every snapshot in {what}, {percent}% of files downloaded\n{summary}"
            );
            Ok(ExitStatus::Success)
        }
        Err(err) => {
            tracing::error!("verification of {what} failed: {err}");
            crate::notify::failure(
                &config.notify,
                "backup verify",
                &format!("{what} did not verify: {err}"),
            );
            Ok(ExitStatus::Failure)
        }
    }
}
