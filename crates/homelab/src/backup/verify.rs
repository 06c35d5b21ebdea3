//! `homelab backup verify`: reads every snapshot's directory tree and downloads a random share of
//! its files from the repository itself (the local cache is dropped first).

use clap::Args;

use super::config::BackupConfig;
use super::{ConfigArg, Session, notify};
use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct VerifyCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Share of files to download and check, 0 to 100 (default: verify.files-percent).
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    pub percent: Option<f64>,
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
    let session = Session::open(config, Some("backup verify"))?;
    session.kopia.clear_cache()?;
    match session.kopia.verify(percent) {
        Ok(summary) => {
            println!("verified all snapshots, {percent}% of files downloaded\n{summary}");
            Ok(ExitStatus::Success)
        }
        Err(err) => {
            tracing::error!("verification failed: {err}");
            notify::failure(config, "backup verify", &err.to_string());
            Ok(ExitStatus::Failure)
        }
    }
}
