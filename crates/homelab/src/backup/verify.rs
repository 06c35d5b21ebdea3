//! `homelab backup verify`: reads every snapshot's directory tree and downloads a random share of
//! its files from the repository itself (the local cache is dropped first). With `--offsite`
//! the same is done against the R2 mirror, opened directly and read-only: it proves the mirror
//! can be restored from without the local repository.

use clap::Args;

use super::config::BackupConfig;
use super::mirror_audit;
use super::offsite::Mirror;
use super::state::State;
use super::{ConfigArg, Job, Session, repository_password};
use crate::clock::unix_now;
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
        let (offsite, credentials) = match super::offsite::target(config) {
            Ok(target) => target,
            Err(err) => {
                eprintln!("error: --offsite: {err:#}");
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
        let verified = mirror.kopia.verify(percent);
        if verified.is_ok() {
            match read_share(config, &job.cancel, &mirror.kopia) {
                Ok(None) => println!(
                    "no local repository here: the mirror's packs were not compared with one"
                ),
                Ok(Some(share)) if share.damaged.is_empty() => println!(
                    "read share {} of {} of the mirror's packs ({} packs) byte for byte: all equal \
                     to the local copies",
                    share.index + 1,
                    share.of,
                    share.read
                ),
                Ok(Some(share)) => {
                    let detail = format!(
                        "{} of the mirror's packs differ from the local copies (share {} of {}): \
                         {}; the next `homelab backup sync` deletes and uploads them again",
                        share.damaged.len(),
                        share.index + 1,
                        share.of,
                        share.damaged.join(", ")
                    );
                    tracing::error!("{detail}");
                    crate::notify::failure(&config.notify, "backup verify --offsite", &detail);
                    return Ok(ExitStatus::Failure);
                }
                Err(err) => {
                    let detail = format!(
                        "the mirror's packs could not be compared with the local copies: {err:#}"
                    );
                    tracing::error!("{detail}");
                    crate::notify::failure(&config.notify, "backup verify --offsite", &detail);
                    return Ok(ExitStatus::Failure);
                }
            }
        }
        (target, verified)
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

/// One share of the mirror's packs read back and compared.
struct ShareRead {
    index: usize,
    of: usize,
    read: usize,
    damaged: Vec<String>,
}

/// Reads the next share of the packs from the mirror and compares each with the local copy;
/// records the share's time and any damage (which the next sync repairs). `None` where there
/// is no local repository to compare with (a host being rebuilt).
fn read_share(
    config: &BackupConfig,
    cancel: &crate::process::Cancel,
    mirror: &crate::kopia::Kopia,
) -> anyhow::Result<Option<ShareRead>> {
    if !config
        .repository
        .path
        .get_ref()
        .join("kopia.repository.f")
        .exists()
    {
        return Ok(None);
    }
    let local = super::local_repository(config, cancel)?;
    let shares = *config.verify.offsite_pack_shares.get_ref();
    let of = shares as usize;
    let mut state = State::load(config.state_dir.get_ref());
    let index = state.mirror_next_share % of;
    let ids: Vec<String> = local
        .blobs()?
        .into_iter()
        .map(|b| b.id)
        .filter(|id| mirror_audit::is_pack(id) && mirror_audit::share_of(id, shares) == index)
        .collect();
    let damaged = mirror_audit::damaged(&local, mirror, &ids)?;
    state.mirror_share_read.resize(of, None);
    state.mirror_share_read[index] = Some(unix_now());
    state.mirror_next_share = (index + 1) % of;
    for id in &damaged {
        if !state.mirror_damaged.contains(id) {
            state.mirror_damaged.push(id.clone());
        }
    }
    super::metrics::publish(config, &state, "verify-offsite")?;
    Ok(Some(ShareRead {
        index,
        of,
        read: ids.len(),
        damaged,
    }))
}
