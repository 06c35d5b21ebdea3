//! `homelab backup check-config FILE`: parse and validate, then show what would be backed up.

use std::path::PathBuf;

use clap::Args;

use super::config::BackupConfig;
use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct CheckConfigCmd {
    /// The configuration file to check.
    pub file: PathBuf,
}

/// Prints what the (already loaded and validated) configuration declares.
pub fn run(cmd: &CheckConfigCmd, config: &BackupConfig) -> ExitStatus {
    println!("{}: ok", cmd.file.display());
    println!(
        "  repository {}",
        config.repository.path.get_ref().display()
    );
    for source in &config.sources {
        let mut captures = Vec::new();
        if source.quiesce.is_some() {
            captures.push("quiesce");
        }
        if source.sqlite.is_some() {
            captures.push("sqlite");
        }
        if source.dump.is_some() {
            captures.push("dump");
        }
        let captures = if captures.is_empty() {
            "files only".to_owned()
        } else {
            captures.join(" + ")
        };
        println!(
            "  source {:<12} {} ({captures}); ignores: {}",
            source.name(),
            source.path().display(),
            source.ignore_rules().join(" ")
        );
    }
    ExitStatus::Success
}
