//! The `homelab` command: host backups, offsite sync, restore drills and checks for azalab-0.

pub mod backup;
mod bootstrap;
pub mod check;
mod cli;
mod client;
mod clock;
mod env_vars;
mod exit;
mod files;
mod kopia;
mod logging;
mod notify;
mod process;
mod status;
mod strict_toml;

use std::process::ExitCode;

use clap::Parser;

pub use cli::Cli;
pub use exit::ExitStatus;

/// Parses the command line, runs the command and turns its outcome into the process exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitStatus::Error.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    logging::init(cli.verbose);
    let status = match cli.command {
        cli::Command::Backup(cmd) => backup::run(cmd),
        cli::Command::Bootstrap(cmd) => bootstrap::run(&cmd),
        cli::Command::Check(cmd) => check::run(&cmd),
        cli::Command::Client(cmd) => client::run(cmd),
        cli::Command::Status(cmd) => status::run(&cmd),
    };
    status.into()
}
