//! The R2 mirror: its credentials file, how kopia reaches it, and which of its errors no retry
//! can fix. `sync` writes to it through the local repository; `verify --offsite` opens it
//! directly, read-only, with a throwaway kopia client, so the local repository is not needed.

use std::path::Path;

use anyhow::Context as _;

use super::config::{BackupConfig, Offsite};
use crate::env_vars;
use crate::kopia::{Kopia, KopiaError, S3Target};
use crate::process::Cancel;

/// The contents of the credentials file.
#[derive(Debug)]
pub struct Credentials {
    pub endpoint: String,
    pub tls: bool,
    pub bucket: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Credentials {
    /// The access key ID and secret (for the recovery kit).
    pub fn keys(&self) -> (&str, &str) {
        (&self.access_key_id, &self.secret_access_key)
    }

    pub fn target<'a>(&'a self, offsite: &'a Offsite, must_exist: bool) -> S3Target<'a> {
        S3Target {
            endpoint: &self.endpoint,
            tls: self.tls,
            bucket: &self.bucket,
            region: &offsite.region,
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            parallel: offsite.parallel,
            must_exist,
        }
    }
}

/// A read-only kopia client of the mirror, in a temporary folder under the state dir: kopia
/// keeps the S3 keys in its client config, so the folder is removed when this is dropped.
pub struct Mirror {
    pub kopia: Kopia,
    _dir: tempfile::TempDir,
}

impl Mirror {
    pub fn open(
        config: &BackupConfig,
        offsite: &Offsite,
        credentials: &Credentials,
        password: String,
        cancel: Cancel,
    ) -> anyhow::Result<Self> {
        Self::connect(config, offsite, credentials, password, cancel, false)
    }

    /// A writable client, for deleting damaged blobs only (sync repairs the mirror with it).
    pub fn open_for_repair(
        config: &BackupConfig,
        offsite: &Offsite,
        credentials: &Credentials,
        password: String,
        cancel: Cancel,
    ) -> anyhow::Result<Self> {
        Self::connect(config, offsite, credentials, password, cancel, true)
    }

    fn connect(
        config: &BackupConfig,
        offsite: &Offsite,
        credentials: &Credentials,
        password: String,
        cancel: Cancel,
        repair: bool,
    ) -> anyhow::Result<Self> {
        let state_dir = config.state_dir.get_ref();
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("offsite-")
            .tempdir_in(state_dir)
            .with_context(|| format!("cannot create a folder in {}", state_dir.display()))?;
        let kopia = Kopia::new(dir.path().to_owned(), password, cancel);
        let target = credentials.target(offsite, true);
        tracing::info!(bucket = %credentials.bucket, endpoint = %credentials.endpoint, repair, "connecting to the mirror");
        kopia
            .connect_s3(&target, repair)
            .map_err(|err| match permanent(&err) {
                Some(reason) => anyhow::anyhow!("{reason}\n{err}"),
                None => err.into(),
            })?;
        Ok(Self { kopia, _dir: dir })
    }
}

/// The `[offsite]` table and its credentials, for every job that needs the mirror: one place,
/// one message that says what to add.
pub fn target(config: &BackupConfig) -> anyhow::Result<(&Offsite, Credentials)> {
    let offsite = config.offsite.as_ref().context(
        "the configuration has no [offsite] table: add one with credentials-file = <the R2 \
         credentials env file> (docs/backup.example.toml)",
    )?;
    let credentials = read_credentials(&offsite.credentials_file)?;
    Ok((offsite, credentials))
}

/// Failures that retrying cannot fix, named for the operator: the bucket is not this
/// repository's mirror, or R2 refuses the keys.
pub fn permanent(err: &KopiaError) -> Option<&'static str> {
    let KopiaError::Failed { stderr, .. } = err else {
        return None;
    };
    let stderr = stderr.to_lowercase();
    let causes = [
        (
            "does not have a format blob",
            "the bucket holds no Kopia repository; refusing to write one into it (--must-exist)",
        ),
        (
            "incompatible data",
            "the bucket holds a different Kopia repository; refusing to mix them",
        ),
        (
            "access key id you provided does not exist",
            "R2 does not know the access key ID (AWS_ACCESS_KEY_ID in offsite.credentials-file)",
        ),
        (
            "invalidaccesskeyid",
            "R2 does not know the access key ID (AWS_ACCESS_KEY_ID in offsite.credentials-file)",
        ),
        (
            "signature we calculated does not match",
            "R2 rejected the secret key (AWS_SECRET_ACCESS_KEY in offsite.credentials-file)",
        ),
        (
            "signaturedoesnotmatch",
            "R2 rejected the secret key (AWS_SECRET_ACCESS_KEY in offsite.credentials-file)",
        ),
        (
            "access denied",
            "R2 denied access: the API token lacks read/write permission on the bucket",
        ),
        (
            "specified bucket does not exist",
            "the bucket does not exist (R2_BUCKET in offsite.credentials-file)",
        ),
        (
            "nosuchbucket",
            "the bucket does not exist (R2_BUCKET in offsite.credentials-file)",
        ),
    ];
    causes
        .into_iter()
        .find(|(needle, _)| stderr.contains(needle))
        .map(|(_, reason)| reason)
}

/// `KEY=value` lines (sops-nix writes such environment files); `#` starts a comment.
pub fn read_credentials(path: &Path) -> anyhow::Result<Credentials> {
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
