//! `homelab backup sync`: maintenance, then a mirror of the repository to R2 with
//! `sync-to s3 --must-exist`, under the job lock so the mirror never sees a half-written or
//! half-pruned repository. Remote blobs are never deleted: a local mistake cannot reach R2.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::config::{BackupConfig, Offsite};
use super::state::{State, unix_now};
use super::{ConfigArg, Session, metrics, notify};
use crate::env_vars;
use crate::exit::ExitStatus;
use crate::kopia::{KopiaError, S3Target};

#[derive(Debug, Args)]
pub struct SyncCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// First sync only: write this repository into a bucket that holds none yet. Without it the
    /// bucket must already hold this repository (`--must-exist`); timers never pass it.
    #[arg(long)]
    pub init: bool,
}

/// The contents of the credentials file.
#[derive(Debug)]
struct Credentials {
    endpoint: String,
    tls: bool,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
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
    let session = Session::open(config, Some("backup sync"))?;
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
    let state_dir = config.state_dir.get_ref();
    let mut state = State::load(state_dir);
    state.last_sync_ok = Some(result.is_ok());
    if result.is_ok() {
        state.last_sync = Some(unix_now());
    }
    state.save(state_dir)?;
    metrics::write(config, &state)?;
    if result.is_ok() {
        println!(
            "synced to s3://{} at {}",
            credentials.bucket, credentials.endpoint
        );
    }
    let problems: Vec<String> = maintenance.into_iter().chain(result.err()).collect();
    if problems.is_empty() {
        return Ok(ExitStatus::Success);
    }
    let detail = problems.join("\n");
    tracing::error!("sync job failed: {detail}");
    notify::failure(config, "backup sync", &detail);
    Ok(ExitStatus::Failure)
}

fn sync_with_retries(
    session: &Session,
    offsite: &Offsite,
    credentials: &Credentials,
    init: bool,
) -> Result<(), String> {
    let target = S3Target {
        endpoint: &credentials.endpoint,
        tls: credentials.tls,
        bucket: &credentials.bucket,
        region: &offsite.region,
        access_key_id: &credentials.access_key_id,
        secret_access_key: &credentials.secret_access_key,
        parallel: offsite.parallel,
        must_exist: !init,
    };
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
        if attempt == attempts {
            return Err(format!("gave up after {attempts} attempts: {err}"));
        }
        tracing::warn!(
            attempt,
            "sync failed, retrying in {}: {err}",
            humantime::format_duration(delay)
        );
        if !session.cancel.sleep(delay) {
            return Err("interrupted by a signal".into());
        }
        delay = delay.saturating_mul(2).min(Duration::from_secs(3600));
    }
    unreachable!("attempts is at least 1")
}

/// Failures that retrying cannot fix: the bucket is not this repository's mirror.
fn permanent(err: &KopiaError) -> Option<&'static str> {
    let KopiaError::Failed { stderr, .. } = err else {
        return None;
    };
    if stderr.contains("does not have a format blob") {
        Some("the bucket holds no Kopia repository; refusing to write one into it (--must-exist)")
    } else if stderr.contains("incompatible data") {
        Some("the bucket holds a different Kopia repository; refusing to mix them")
    } else {
        None
    }
}

/// `KEY=value` lines (sops-nix writes such environment files); `#` starts a comment.
fn read_credentials(path: &Path) -> anyhow::Result<Credentials> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read offsite.credentials-file {}", path.display()))?;
    let mut values = std::collections::BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            anyhow::bail!("{}:{}: expected KEY=value", path.display(), n + 1);
        };
        let key = key.trim().trim_start_matches("export ").trim();
        let known = [
            env_vars::R2_ENDPOINT,
            env_vars::R2_BUCKET,
            env_vars::AWS_ACCESS_KEY_ID,
            env_vars::AWS_SECRET_ACCESS_KEY,
        ];
        if !known.contains(&key) {
            anyhow::bail!(
                "{}:{}: unknown key {key}, expected one of {}",
                path.display(),
                n + 1,
                known.join(", ")
            );
        }
        let value = value.trim().trim_matches('"').to_owned();
        values.insert(key.to_owned(), value);
    }
    let mut take = |key: &str| {
        values
            .remove(key)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("{}: {key} is missing or empty", path.display()))
    };
    let url = take(env_vars::R2_ENDPOINT)?;
    let (tls, endpoint) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        anyhow::bail!(
            "{}: {}: expected an https:// URL, got {url}",
            path.display(),
            env_vars::R2_ENDPOINT
        );
    };
    Ok(Credentials {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        tls,
        bucket: take(env_vars::R2_BUCKET)?,
        access_key_id: take(env_vars::AWS_ACCESS_KEY_ID)?,
        secret_access_key: take(env_vars::AWS_SECRET_ACCESS_KEY)?,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn credentials_file_is_strict() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "R2_ENDPOINT=https://acct.r2.cloudflarestorage.com/\nR2_BUCKET=b\nAWS_ACCESS_KEY_ID=id\nAWS_SECRET_ACCESS_KEY=secret").expect("write");
        let creds = super::read_credentials(file.path()).expect("valid");
        assert_eq!(creds.endpoint, "acct.r2.cloudflarestorage.com");
        assert!(creds.tls);

        let mut bad = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(bad, "R2_BUCKET=b\nR2_BUCKT=typo").expect("write");
        let err = super::read_credentials(bad.path()).expect_err("typo rejected");
        assert!(
            err.to_string().contains(":2: unknown key R2_BUCKT"),
            "{err}"
        );
    }
}
