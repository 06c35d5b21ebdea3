use clap::{Parser, Subcommand};

use crate::backup::BackupCmd;
use crate::bootstrap::BootstrapCmd;
use crate::check::CheckCmd;
use crate::client::ClientCmd;
use crate::status::StatusCmd;

/// Automation for the azalab-0 homelab.
#[derive(Debug, Parser)]
#[command(name = "homelab", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Host backups: app-consistent Kopia snapshots, verification, restore drills, R2 mirror.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Install Flux on the local k3s and point it at this repository (idempotent, every boot).
    Bootstrap(BootstrapCmd),
    /// Check the whole repository offline (Flux tree, secrets, tunnel, backups) before a push.
    Check(CheckCmd),
    /// The MacBook: back up to the Kopia server in the cluster through the Cloudflare Tunnel.
    #[command(subcommand)]
    Client(ClientCmd),
    /// The whole homelab on one screen: host, cluster, tunnel, backups, clients; alerts on change.
    Status(StatusCmd),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
