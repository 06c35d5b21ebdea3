//! `homelab backup sync`: maintenance, then a mirror of the repository to R2 with
//! `sync-to s3 --must-exist`, under the job lock so the mirror never sees a half-written or
//! half-pruned repository. Remote blobs are never deleted: a local mistake cannot reach R2.

use std::time::Duration;

use clap::Args;

use super::config::{BackupConfig, Offsite};
use super::mirror_audit;
use super::offsite::{Credentials, Mirror, permanent};
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
    let (offsite, credentials) = match super::offsite::target(config) {
        Ok(target) => target,
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
    let mut problems: Vec<String> = maintenance.into_iter().collect();
    let mut differs = Vec::new();
    let mut repaired = Vec::new();
    let mut whole = false;
    // The mirror heals or shouts: compared with the local repository after every sync.
    let healed = result
        .as_ref()
        .map(|()| heal(config, &session, offsite, &credentials, cmd.init));
    match healed {
        Err(err) => problems.push(err.clone()),
        Ok(Ok(replaced)) => {
            if !replaced.is_empty() {
                println!(
                    "repaired the mirror: {} damaged blob(s) deleted from the bucket and uploaded again: {}",
                    replaced.len(),
                    replaced.join(", ")
                );
            }
            println!(
                "synced to s3://{} at {}; every local blob is in the mirror with its size",
                credentials.bucket, credentials.endpoint
            );
            repaired = replaced;
            whole = true;
        }
        Ok(Err(unhealed)) => {
            problems.push(unhealed.message);
            differs = unhealed.differs;
        }
    }
    if let Err(err) = record(config, whole, &repaired, &differs) {
        problems.push(format!("{err:#}"));
    }
    if problems.is_empty() {
        return Ok(ExitStatus::Success);
    }
    let detail = problems.join("\n");
    tracing::error!("sync job failed: {detail}");
    let outcome = if whole {
        "the mirror itself is complete"
    } else if result.is_ok() {
        "sync-to completed, but the mirror is not known to match the local repository (see above)"
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

/// What a repair could not fix.
struct Unhealed {
    message: String,
    /// The blobs that still differ (empty when the comparison itself could not be made).
    differs: Vec<String>,
}

impl From<anyhow::Error> for Unhealed {
    fn from(err: anyhow::Error) -> Self {
        Self {
            message: format!("the mirror could not be compared with the local repository: {err:#}"),
            differs: Vec::new(),
        }
    }
}

impl From<crate::kopia::KopiaError> for Unhealed {
    fn from(err: crate::kopia::KopiaError) -> Self {
        anyhow::Error::from(err).into()
    }
}

/// Compares the mirror with the local repository (IDs and sizes); replaces the copies of the
/// wrong size and those `verify --offsite` found damaged, syncs again, and checks once more.
/// Returns the blobs it replaced.
fn heal(
    config: &BackupConfig,
    session: &Session,
    offsite: &Offsite,
    credentials: &Credentials,
    init: bool,
) -> Result<Vec<String>, Unhealed> {
    let known_damaged = State::load(config.state_dir.get_ref()).mirror_damaged;
    let local = session.kopia.blobs()?;
    let password = super::repository_password(config)?;
    let open = || {
        Mirror::open(
            config,
            offsite,
            credentials,
            password.clone(),
            session.cancel.clone(),
        )
    };
    let listed = open()?.kopia.blobs()?;
    let difference = mirror_audit::compare(&local, &listed);
    let (replace, refused) = mirror_audit::to_replace(&difference, &known_damaged, &listed);
    if !replace.is_empty() {
        tracing::warn!(blobs = ?replace, "deleting damaged copies from the mirror to upload them again");
        let repair = Mirror::open_for_repair(
            config,
            offsite,
            credentials,
            password.clone(),
            session.cancel.clone(),
        )?;
        for chunk in replace.chunks(100) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            repair.kopia.delete_blobs(&ids).map_err(|err| Unhealed {
                message: format!(
                    "the mirror still differs from the local repository in {} blob(s), whose \
                     damaged copies could not be deleted from the bucket: {}\n{err}",
                    replace.len(),
                    replace.join(", ")
                ),
                differs: replace.clone(),
            })?;
        }
    }
    if !replace.is_empty() || !difference.missing.is_empty() {
        sync_with_retries(session, offsite, credentials, init).map_err(|err| Unhealed {
            message: format!("the repair's sync failed: {err}"),
            differs: replace.clone(),
        })?;
    }
    // A fresh client: nothing it reads can come from a cache filled before the repair.
    let mirror = open()?;
    let after = mirror_audit::compare(&local, &mirror.kopia.blobs()?);
    let mut differs = after.describe();
    differs.extend(refused.iter().map(|id| {
        format!("{id} (differs; a repair never deletes it: compare the bucket's copy by hand)")
    }));
    let recheck: Vec<String> = replace
        .iter()
        .filter(|id| known_damaged.contains(id))
        .cloned()
        .collect();
    for id in mirror_audit::damaged(&session.kopia, &mirror.kopia, &recheck)? {
        differs.push(format!("{id} (bytes still differ after the repair)"));
    }
    if differs.is_empty() {
        Ok(replace)
    } else {
        Err(Unhealed {
            message: format!(
                "the mirror still differs from the local repository in {} blob(s): {}",
                differs.len(),
                differs.join(", ")
            ),
            differs,
        })
    }
}

/// Remembers the outcome: `last-sync` moves only when a sync completed and the mirror matches,
/// so `status` shows the last mirror that is whole; what still differs is named there.
fn record(
    config: &BackupConfig,
    whole: bool,
    repaired: &[String],
    differs: &[String],
) -> anyhow::Result<()> {
    let state_dir = config.state_dir.get_ref();
    let mut state = State::load(state_dir);
    state.last_sync_ok = Some(whole);
    if whole {
        state.last_sync = Some(unix_now());
    }
    state.mirror_damaged.retain(|id| !repaired.contains(id));
    state.mirror_differs = differs.to_vec();
    super::metrics::publish(config, &state, "sync")
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
