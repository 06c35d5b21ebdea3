//! The status configuration (`/etc/homelab/status.toml`, written by the NixOS module from
//! homelab.toml): what to look at and where. A part whose table is absent is not checked.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::strict_toml::{
    ConfigError, Invalid, invalid, load_toml, require_absolute, require_http_url,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StatusConfig {
    /// What `--notify` remembers between runs (which alerts went out, and when).
    pub state_dir: Spanned<PathBuf>,
    /// A second place for that memory on another file system (a tmpfs under /run), so that a
    /// full disk does not make the same alert go out every five minutes.
    pub runtime_dir: Option<Spanned<PathBuf>>,
    /// A check that changed state is not announced again sooner than this after its last
    /// message (a flapping check).
    #[serde(default = "defaults::repeat_after", with = "humantime_serde")]
    pub repeat_after: Duration,
    pub host: Option<Host>,
    pub cluster: Option<Cluster>,
    pub tunnel: Option<Tunnel>,
    pub backup: Option<Backup>,
    /// Kopia clients that back up into the host's repository through the Kopia server.
    #[serde(default, rename = "client")]
    pub clients: Vec<Client>,
    #[serde(default)]
    pub notify: crate::notify::Settings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Host {
    /// sops-nix's age key: without it no secret decrypts at the next activation.
    pub age_key_file: PathBuf,
    /// Timers that must be active (a masked or stopped timer fails nothing by itself).
    #[serde(default)]
    pub timers: Vec<String>,
    #[serde(default, rename = "disk")]
    pub disks: Vec<Disk>,
    /// The system profile (`system-<generation>-link`) and the running system.
    pub system_profile: PathBuf,
    pub current_system: PathBuf,
    /// The revision of this repository the running system was built from.
    pub revision_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Disk {
    pub path: Spanned<PathBuf>,
    /// Free space (as available to unprivileged users) below this share is a warning.
    pub warn_free_percent: Spanned<f64>,
    /// … and below this one a failure.
    pub fail_free_percent: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Cluster {
    /// The kubeconfig `kubectl` uses to reach the k3s API.
    pub kubeconfig: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tunnel {
    /// cloudflared's metrics server, `http://127.0.0.1:PORT` (the unit's TUNNEL_METRICS).
    pub metrics_url: Spanned<String>,
    /// HA connections cloudflared keeps to Cloudflare's edge when all is well (4 by default).
    #[serde(default = "defaults::connections")]
    pub expected_connections: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Backup {
    /// The `homelab backup` configuration: its status is reported as `backup status` shows it.
    pub config: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Client {
    /// The client's Kopia identity, `user@host`, as its snapshots are recorded.
    pub name: Spanned<String>,
    /// Its newest snapshot older than this is a failure.
    #[serde(with = "humantime_serde")]
    pub rpo: Duration,
}

mod defaults {
    use std::time::Duration;

    pub fn repeat_after() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn connections() -> u32 {
        4
    }
}

impl StatusConfig {
    pub fn load(file: &std::path::Path) -> Result<Self, Box<ConfigError>> {
        load_toml(file, Self::validate)
    }

    fn validate(&self) -> Result<(), Invalid> {
        require_absolute("state-dir", &self.state_dir)?;
        if let Some(dir) = &self.runtime_dir {
            require_absolute("runtime-dir", dir)?;
        }
        if let Some(host) = &self.host {
            for (i, disk) in host.disks.iter().enumerate() {
                require_absolute(&format!("host.disk[{i}].path"), &disk.path)?;
                for (key, value) in [
                    ("warn-free-percent", &disk.warn_free_percent),
                    ("fail-free-percent", &disk.fail_free_percent),
                ] {
                    if !(0.0..=100.0).contains(value.get_ref()) {
                        return Err(invalid(
                            &format!("host.disk[{i}].{key}"),
                            value,
                            "a percentage from 0 to 100",
                        ));
                    }
                }
                if disk.fail_free_percent.get_ref() > disk.warn_free_percent.get_ref() {
                    return Err(invalid(
                        &format!("host.disk[{i}].fail-free-percent"),
                        &disk.fail_free_percent,
                        "at most warn-free-percent (failing is worse than warning)",
                    ));
                }
            }
        }
        if let Some(tunnel) = &self.tunnel {
            require_http_url("tunnel.metrics-url", &tunnel.metrics_url)?;
        }
        if let Some(matrix) = &self.notify.matrix {
            require_http_url("notify.matrix.homeserver", &matrix.homeserver)?;
        }
        for (i, client) in self.clients.iter().enumerate() {
            let name = client.name.get_ref();
            let well_formed = name
                .split_once('@')
                .is_some_and(|(u, h)| !u.is_empty() && !h.is_empty() && !h.contains('@'));
            if !well_formed {
                return Err(invalid(
                    &format!("client[{i}].name"),
                    &client.name,
                    "user@host, as the client's snapshots are recorded",
                ));
            }
            if self.backup.is_none() {
                return Err(invalid(
                    &format!("client[{i}].name"),
                    &client.name,
                    "a [backup] table too: clients are looked up in its repository",
                ));
            }
        }
        Ok(())
    }
}
