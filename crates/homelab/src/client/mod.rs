//! `homelab client …`: the owner's MacBook backs up to the Kopia repository server in the
//! cluster, through the Cloudflare Tunnel's tcp route opened with `cloudflared access tcp`.
//! macOS-only parts (Keychain, launchd, battery, notifications) are in `macos`; the rest builds
//! and is tested on Linux.

mod backup;
pub mod config;
mod macos;
mod setup;
mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::env_vars;
use crate::exit::ExitStatus;
use crate::process::{Background, Cancel};
use config::ClientConfig;

/// launchd label of the daily agent.
pub const AGENT_LABEL: &str = "network.aza.homelab-client-backup";

#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// Write the configuration, store the server password, connect through the tunnel, set the
    /// sources' policies and install the daily launchd agent. Idempotent.
    Setup(setup::SetupCmd),
    /// Open the tunnel, snapshot the sources through the Kopia server, close the tunnel.
    Backup(backup::BackupCmd),
    /// Last snapshot per source against the schedule, and whether the agent is loaded.
    Status(status::StatusCmd),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Client configuration file (default ~/.config/homelab/client.toml).
    #[arg(long, env = env_vars::HOMELAB_CLIENT_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.config {
            Some(path) => Ok(path.clone()),
            None => Ok(home()?.join(".config/homelab/client.toml")),
        }
    }
}

pub fn run(cmd: ClientCmd) -> ExitStatus {
    let result = match &cmd {
        ClientCmd::Setup(c) => setup::run(c),
        ClientCmd::Backup(c) => backup::run(c),
        ClientCmd::Status(c) => status::run(c),
    };
    match result {
        Ok(status) => status,
        Err(err) => {
            tracing::error!("homelab client failed: {err:#}");
            macos::notify("homelab backup failed", &format!("{err:#}"));
            ExitStatus::Failure
        }
    }
}

/// Loads the configuration; a bad one is reported with file:line and exit 2.
fn load(arg: &ConfigArg) -> Result<(PathBuf, ClientConfig), ExitStatus> {
    let path = arg.path().map_err(|err| {
        eprintln!("error: {err:#}");
        ExitStatus::Error
    })?;
    if !path.exists() {
        eprintln!(
            "error: no client configuration at {}: run `homelab client setup --fingerprint <SHA256> \
             --password-stdin --service-token-id <ID> --service-token-secret-stdin` first \
             (macbook/README.md)",
            path.display()
        );
        return Err(ExitStatus::Error);
    }
    match ClientConfig::load(&path) {
        Ok(config) => Ok((path, config)),
        Err(err) => {
            err.report();
            Err(ExitStatus::Error)
        }
    }
}

pub fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// The tunnel to the Kopia server: `cloudflared access tcp` on the configured loopback port,
/// authenticated to Cloudflare Access with the stored service token (never a browser: the
/// daily run has no person in front of it), stopped when dropped (on success, error and signal;
/// on Linux also when we are killed).
struct Tunnel {
    _child: Background,
    url: String,
}

/// How much of cloudflared's log a failure shows.
const LOG_TAIL_LINES: usize = 10;

impl Tunnel {
    fn open(config: &ClientConfig, state_dir: &Path, cancel: &Cancel) -> anyhow::Result<Self> {
        let port = *config.local_port.get_ref();
        std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
            format!("local-port {port} is taken by another program; choose another in the config")
        })?;
        let account = config.user.get_ref();
        let token = (
            macos::read_secret(macos::KeychainItem::AccessId, account, state_dir)?,
            macos::read_secret(macos::KeychainItem::AccessSecret, account, state_dir)?,
        );
        let (Some(id), Some(secret)) = token else {
            anyhow::bail!(
                "no Cloudflare Access service token is stored, and without one cloudflared would \
                 wait for a browser login: run `homelab client setup --service-token-id <ID> \
                 --service-token-secret-stdin` (docs: macbook/README.md)"
            );
        };
        let program =
            std::env::var_os(env_vars::HOMELAB_CLOUDFLARED).unwrap_or_else(|| "cloudflared".into());
        let mut command = std::process::Command::new(program);
        // The token goes through cloudflared's environment (its flags' EnvVars), never argv,
        // where any process could read it.
        command
            .args(["access", "tcp", "--hostname"])
            .arg(config.server_hostname.get_ref())
            .arg("--url")
            .arg(format!("127.0.0.1:{port}"))
            .env(env_vars::TUNNEL_SERVICE_TOKEN_ID, id.trim())
            .env(env_vars::TUNNEL_SERVICE_TOKEN_SECRET, secret.trim());
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let log_path = state_dir.join("cloudflared.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut child =
            Background::spawn(&mut command, Some(log)).context("cannot start cloudflared")?;
        tracing::info!(pid = child.id(), port, "tunnel starting");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Some(status) = child.exited() {
                anyhow::bail!(
                    "cloudflared exited ({status}) before the tunnel opened; it said:\n{}",
                    log_tail(&log_path)
                );
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the tunnel did not open within 30 s; cloudflared said:\n{}",
                    log_tail(&log_path)
                );
            }
            if !cancel.sleep(Duration::from_millis(100)) {
                anyhow::bail!("stopped: {}", cancel.reason());
            }
        }
        Ok(Self {
            _child: child,
            url: format!("https://127.0.0.1:{port}"),
        })
    }
}

/// The last lines of cloudflared's log, control characters escaped.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .rev()
        .take(LOG_TAIL_LINES)
        .map(|line| line.escape_debug().to_string())
        .collect();
    if lines.is_empty() {
        return "  (nothing)".to_owned();
    }
    lines
        .into_iter()
        .rev()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
