//! `homelab backup recovery-kit`: everything needed to rebuild the host from the R2 mirror when
//! the host is gone, written down once, to be printed or kept off the host. Without it the
//! mirror cannot be opened: the repository password and the R2 keys are SOPS secrets encrypted
//! to the host's age key, which dies with the disk.
//!
//! Each kit's fingerprint (a SHA-256 of what it holds) is remembered in the state dir, so that
//! `--check` (run at every NixOS activation) can say when a key changed and a new kit is due.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use sha2::{Digest, Sha256};

use super::config::BackupConfig;
use super::offsite::read_credentials;
use super::{ConfigArg, Session, repository_password};
use crate::exit::ExitStatus;

/// In the state dir: the fingerprint of the newest kit written.
const FINGERPRINT_FILE: &str = "recovery-kit.sha256";

#[derive(Debug, Args)]
pub struct RecoveryKitCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Write the kit to this new file, readable by its owner only.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["stdout", "check"])]
    pub output: Option<PathBuf>,
    /// Print the kit on standard output instead (it holds every key: mind the terminal).
    #[arg(long, conflicts_with = "output")]
    pub stdout: bool,
    /// Only say whether the newest kit still matches the keys (exit 1 when a new one is due).
    #[arg(long, conflicts_with_all = ["output", "stdout"])]
    pub check: bool,
    /// With --check on a host rebuilt from a kit: that kit's fingerprint (its KIT FINGERPRINT
    /// line). When it matches the keys this host runs with, it is recorded as the newest kit.
    #[arg(long, value_name = "HEX", requires = "check")]
    pub kit_fingerprint: Option<String>,
}

/// The "Rebuilding" section of docs/disaster-recovery.md: the kit prints the guide's own steps,
/// so the two cannot disagree (and the rehearsal runs the guide's commands).
fn rebuild_steps() -> &'static str {
    const GUIDE: &str = include_str!("../../../../docs/disaster-recovery.md");
    let start = GUIDE.find("## Rebuilding").unwrap_or(0);
    let rest = &GUIDE[start..];
    let end = rest[1..].find("\n## ").map_or(rest.len(), |i| i + 1);
    rest[..end].trim_end()
}

/// A value as one single-quoted shell word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// What a kit holds.
struct Kit {
    hostname: String,
    age_key: String,
    age_key_file: PathBuf,
    password: String,
    unique_id: Option<String>,
    credentials: Option<String>,
    /// The credentials parsed: endpoint as kopia's `--endpoint` takes it, TLS, bucket, keys.
    mirror: Option<super::offsite::Credentials>,
    source_repository: String,
}

impl Kit {
    /// The secrets alone decide whether a kit is still good; the repository ID and the time
    /// do not change them.
    fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.age_key.as_str(),
            self.password.as_str(),
            self.credentials.as_deref().unwrap_or(""),
            self.source_repository.as_str(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        format!("{:x}", hash.finalize())
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let _ = writeln!(
            out,
            "HOMELAB RECOVERY KIT for {}, written {now}\n\
             Keep it off this host: printed, or in a password manager that does not run here\n\
             (Vaultwarden runs on this host). Whoever holds it can read every backup.\n\
             Make a new one after every change of the age key, the repository password or the\n\
             R2 keys (`homelab backup recovery-kit --check` says when).\n",
            self.hostname
        );
        let _ = writeln!(
            out,
            "== AGE KEY: the host's (and owner's) key. Put back at {}: it decrypts the host \
             secrets, which hold Flux's own key (flux/age-key) and so need not be written here, \
             and every *.sops.yaml ==\n{}\n",
            self.age_key_file.display(),
            self.age_key.trim_end()
        );
        let _ = writeln!(out, "== KOPIA REPOSITORY PASSWORD ==\n{}\n", self.password);
        let _ = writeln!(
            out,
            "== KOPIA REPOSITORY UNIQUE ID ==\n{}\n",
            self.unique_id
                .as_deref()
                .unwrap_or("(unknown: the local repository could not be opened)")
        );
        let _ = writeln!(
            out,
            "== R2 MIRROR (offsite credentials file) ==\n{}\n",
            self.credentials
                .as_deref()
                .map_or("(no [offsite] table in the configuration)", str::trim_end)
        );
        let _ = writeln!(out, "== SOURCE REPOSITORY ==\n{}\n", self.source_repository);
        let _ = writeln!(out, "== KIT FINGERPRINT ==\n{}\n", self.fingerprint());
        let _ = writeln!(
            out,
            "== FOR THE COMMANDS OF THE GUIDE (paste into the root shell, step 5) =="
        );
        let _ = writeln!(out, "export KOPIA_PASSWORD={}", shell_quote(&self.password));
        if let Some(mirror) = &self.mirror {
            let _ = writeln!(out, "export R2_BUCKET={}", shell_quote(&mirror.bucket));
            // kopia's --endpoint takes a host, never a URL ("Endpoint url cannot have fully
            // qualified paths"): the scheme becomes the TLS flag.
            let _ = writeln!(
                out,
                "export R2_ENDPOINT_HOST={}",
                shell_quote(&mirror.endpoint)
            );
            if !mirror.tls {
                let _ = writeln!(out, "export R2_DISABLE_TLS=--disable-tls");
            }
            let (key_id, secret) = mirror.keys();
            let _ = writeln!(out, "export AWS_ACCESS_KEY_ID={}", shell_quote(key_id));
            let _ = writeln!(out, "export AWS_SECRET_ACCESS_KEY={}", shell_quote(secret));
        }
        let _ = writeln!(
            out,
            "export KIT_FINGERPRINT={}\n",
            shell_quote(&self.fingerprint())
        );
        let _ = writeln!(
            out,
            "== REBUILD FROM NOTHING (docs/disaster-recovery.md; the AGE KEY goes to {}) ==\n{}",
            self.age_key_file.display(),
            rebuild_steps()
        );
        out
    }
}

pub fn run(config: &BackupConfig, cmd: &RecoveryKitCmd) -> anyhow::Result<ExitStatus> {
    if cmd.check {
        // Runs inside every NixOS activation: a reminder, never a notification or a delay.
        return Ok(write_or_check(config, cmd).unwrap_or_else(|err| {
            println!("cannot check the recovery kit: {err:#}");
            ExitStatus::Failure
        }));
    }
    write_or_check(config, cmd)
}

fn write_or_check(config: &BackupConfig, cmd: &RecoveryKitCmd) -> anyhow::Result<ExitStatus> {
    let Some(facts) = &config.recovery_kit else {
        eprintln!(
            "error: the configuration has no [recovery-kit] table (age-key-file, \
             source-repository)"
        );
        return Ok(ExitStatus::Error);
    };
    let age_key = std::fs::read_to_string(&facts.age_key_file).with_context(|| {
        format!(
            "cannot read recovery-kit.age-key-file {}",
            facts.age_key_file.display()
        )
    })?;
    anyhow::ensure!(
        age_key.contains("AGE-SECRET-KEY-"),
        "{} holds no age secret key",
        facts.age_key_file.display()
    );
    let (credentials, mirror) = match &config.offsite {
        Some(offsite) => {
            // Parsed first, so that a broken file is found now, not on the day it is needed.
            let mirror = read_credentials(&offsite.credentials_file)?;
            (
                Some(
                    std::fs::read_to_string(&offsite.credentials_file).with_context(|| {
                        format!("cannot read {}", offsite.credentials_file.display())
                    })?,
                ),
                Some(mirror),
            )
        }
        None => (None, None),
    };
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "this host".into());
    let mut kit = Kit {
        hostname,
        age_key,
        age_key_file: facts.age_key_file.clone(),
        password: repository_password(config)?,
        unique_id: None,
        credentials,
        mirror,
        source_repository: facts.source_repository.clone(),
    };
    let marker = config.state_dir.get_ref().join(FINGERPRINT_FILE);
    if let Some(given) = &cmd.kit_fingerprint {
        if given.trim() != kit.fingerprint() {
            println!(
                "the kit's fingerprint {} does not match the keys this host runs with: make a \
                 new kit (homelab backup recovery-kit --output FILE) and store it off the host",
                given.trim()
            );
            return Ok(ExitStatus::Failure);
        }
        crate::files::write_atomically(&marker, format!("{}\n", kit.fingerprint()).as_bytes())?;
        println!("this host runs with the keys of the kit it was rebuilt from; recorded");
        return Ok(ExitStatus::Success);
    }
    if cmd.check {
        let written = std::fs::read_to_string(&marker).ok();
        return Ok(match written {
            Some(seen) if seen.trim() == kit.fingerprint() => {
                println!("the newest recovery kit matches the current keys");
                ExitStatus::Success
            }
            Some(_) => {
                println!(
                    "a key changed since the newest recovery kit was written: make a new one \
                     (homelab backup recovery-kit --output FILE) and store it off the host"
                );
                ExitStatus::Failure
            }
            None => {
                println!(
                    "no recovery kit was ever written on this host: without one, a dead disk \
                     means the R2 mirror cannot be opened. Make it now: homelab backup \
                     recovery-kit --output FILE, and store it off the host"
                );
                ExitStatus::Failure
            }
        });
    }
    match Session::open(config, None, super::STATUS_TIME_LIMIT)
        .and_then(|session| Ok(session.kopia.unique_id()?))
    {
        Ok(id) => kit.unique_id = Some(id),
        Err(err) => tracing::warn!("cannot read the repository's unique ID: {err:#}"),
    }
    let text = kit.render();
    match &cmd.output {
        Some(path) => {
            write_private(path, text.as_bytes())?;
            eprintln!(
                "wrote the recovery kit to {} (mode 0600); store it off this host, then delete it here",
                path.display()
            );
        }
        None => print!("{text}"),
    }
    crate::files::write_atomically(&marker, format!("{}\n", kit.fingerprint()).as_bytes())?;
    Ok(ExitStatus::Success)
}

/// Creates `path` (which must not exist) with mode 0600 from the start: the kit never sits on
/// disk readable by others, not even for a moment.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    // The mode above is final (umask can only remove bits), and a FAT stick would refuse a
    // chmod anyway.
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = std::fs::remove_file(path);
        return Err(err).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
