//! `homelab backup sync`: maintenance, then a mirror of the repository to R2 with
//! `sync-to s3 --must-exist`, under the job lock so the mirror never sees a half-written or
//! half-pruned repository. Remote blobs are never deleted: a local mistake cannot reach R2.

use std::time::Duration;

use clap::Args;

use super::config::{BackupConfig, Offsite};
use super::offsite::{Credentials, permanent, read_credentials};
use super::state::State;
use super::{ConfigArg, Session};
use crate::clock::unix_now;
use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct SyncCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// First sync only: write this repository into a bucket that holds none yet. Without it the
    /// bucket must already hold this repository (`--must-exist`); timers never pass it.
    #[arg(long)]
    pub init: bool,
}

pub fn run(config: &BackupConfig, cmd: &SyncCmd) -> anyhow::Result<ExitStatus> {
    let Some(offsite) = &config.offsite else {
        eprintln!("error: the configuration has no [offsite] table: nothing to sync to");
        return Ok(ExitStatus::Error);
    };
    let credentials = match read_credentials(&offsite.credentials_file) {
        Ok(credentials) => credentials,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitStatus::Error);
        }
    };
    let session = Session::open(config, Some("backup sync"), config.time_limit.sync)?;
    // A failed maintenance fails the job but does not stop the mirror: a mirror of the
    // repository as it is beats none, and sync-to never deletes anything remote.
    let maintenance = match session.kopia.maintenance() {
        Ok(full) => {
            tracing::info!(full, "maintenance finished");
            None
        }
        Err(err) => {
            tracing::error!("maintenance failed: {err}");
            Some(format!("maintenance failed: {err}"))
        }
    };
    let result = sync_with_retries(&session, offsite, &credentials, cmd.init);
    if result.is_ok() {
        println!(
            "synced to s3://{} at {}",
            credentials.bucket, credentials.endpoint
        );
    }
    let synced = result.is_ok();
    let mut problems: Vec<String> = maintenance.into_iter().chain(result.err()).collect();
    if let Err(err) = record(config, synced) {
        problems.push(format!("{err:#}"));
    }
    if problems.is_empty() {
        return Ok(ExitStatus::Success);
    }
    let detail = problems.join("\n");
    tracing::error!("sync job failed: {detail}");
    let outcome = if synced {
        "the mirror itself is complete"
    } else {
        "the mirror was not completed; it may list snapshots whose data is missing until the next complete sync"
    };
    crate::notify::failure(
        &config.notify,
        "backup sync",
        &format!("{detail}\n\n{outcome}"),
    );
    Ok(ExitStatus::Failure)
}

/// Remembers the outcome: `last-sync` moves only when a sync completed, so `status` shows the
/// last mirror that is whole.
fn record(config: &BackupConfig, synced: bool) -> anyhow::Result<()> {
    let state_dir = config.state_dir.get_ref();
    let mut state = State::load(state_dir);
    state.last_sync_ok = Some(synced);
    if synced {
        state.last_sync = Some(unix_now());
    }
    state.publish(config)
}

fn sync_with_retries(
    session: &Session,
    offsite: &Offsite,
    credentials: &Credentials,
    init: bool,
) -> Result<(), String> {
    let target = credentials.target(offsite, !init);
    let attempts = *offsite.attempts.get_ref();
    let mut delay = offsite.retry_delay;
    for attempt in 1..=attempts {
        let err = match session.kopia.sync_to_s3(&target) {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if let Some(reason) = permanent(&err) {
            return Err(format!("{reason}\n{err}"));
        }
        if session.cancel.is_cancelled() {
            return Err(err.to_string());
        }
        if attempt == attempts {
            return Err(format!("gave up after {attempts} attempts: {err}"));
        }
        tracing::warn!(
            attempt,
            "sync failed, retrying in {}: {err}",
            humantime::format_duration(delay)
        );
        if !session.cancel.sleep(delay) {
            return Err(format!("stopped: {}\n{err}", session.cancel.reason()));
        }
        delay = delay.saturating_mul(2).min(Duration::from_secs(3600));
    }
    unreachable!("attempts is at least 1")
}
