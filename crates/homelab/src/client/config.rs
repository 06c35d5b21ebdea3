//! The MacBook's client configuration: one TOML file, strict, every error located.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::backup::config::Retention;
use crate::strict_toml::{ConfigError, Invalid, invalid, load_toml};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientConfig {
    /// The tunnel's tcp hostname of the Kopia server.
    pub server_hostname: Spanned<String>,
    /// Loopback port `cloudflared access tcp` listens on; kopia connects to it.
    #[serde(default = "defaults::local_port")]
    pub local_port: Spanned<u16>,
    /// SHA-256 of the server's certificate (64 hex digits): anything else is refused.
    pub server_fingerprint: Spanned<String>,
    /// The Kopia server account, `user@host`.
    pub user: Spanned<String>,
    /// Folders to back up; `~/` is the home folder.
    #[serde(default = "defaults::sources")]
    pub sources: Spanned<Vec<String>>,
    /// Kopia ignore patterns applied to every source.
    #[serde(default = "defaults::exclude")]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub retention: Retention,
    /// Daily time of the launchd agent, `HH:MM` local time.
    #[serde(default = "defaults::schedule")]
    pub schedule: Spanned<String>,
    /// On battery below this charge the run is skipped.
    #[serde(default = "defaults::min_battery_percent")]
    pub min_battery_percent: Spanned<u8>,
    /// A source whose last good snapshot is older than this is stale: `client status` fails
    /// and every run shows a notification until a snapshot succeeds. The host's `homelab
    /// status` holds the laptop to the same objective (homelab.toml `[[status.client]]`).
    #[serde(default = "defaults::rpo", with = "humantime_serde")]
    pub rpo: Duration,
    /// The longest a run may take; the tunnel and kopia are stopped after it.
    #[serde(default = "defaults::time_limit", with = "humantime_serde")]
    pub time_limit: Duration,
    /// kopia's client config and the state; default `~/.local/state/homelab-client`.
    pub state_dir: Option<PathBuf>,
}

mod defaults {
    use std::time::Duration;

    use toml::Spanned;

    pub fn local_port() -> Spanned<u16> {
        Spanned::new(0..0, 51515)
    }
    pub fn sources() -> Spanned<Vec<String>> {
        Spanned::new(
            0..0,
            ["~/Documents", "~/Pictures", "~/Desktop"]
                .map(str::to_owned)
                .to_vec(),
        )
    }
    pub fn exclude() -> Vec<String> {
        [
            "Library/Caches/",
            ".cache/",
            "node_modules/",
            ".DS_Store",
            ".Trash/",
        ]
        .map(str::to_owned)
        .to_vec()
    }
    pub fn schedule() -> Spanned<String> {
        Spanned::new(0..0, "12:30".to_owned())
    }
    pub fn min_battery_percent() -> Spanned<u8> {
        Spanned::new(0..0, 30)
    }
    pub fn time_limit() -> Duration {
        Duration::from_secs(4 * 3600)
    }
    pub fn rpo() -> Duration {
        Duration::from_secs(3 * 24 * 3600)
    }
}

impl ClientConfig {
    pub fn load(file: &Path) -> Result<Self, Box<ConfigError>> {
        load_toml(file, Self::validate)
    }

    fn validate(&self) -> Result<(), Invalid> {
        let fingerprint = self.server_fingerprint.get_ref();
        if fingerprint.len() != 64 || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(
                "server-fingerprint",
                &self.server_fingerprint,
                "the certificate's SHA-256 as 64 hex digits (the server prints it as SERVER CERT SHA256)",
            ));
        }
        let user = self.user.get_ref();
        let well_formed = user
            .split_once('@')
            .is_some_and(|(u, h)| !u.is_empty() && !h.is_empty() && !h.contains('@'));
        if !well_formed {
            return Err(invalid(
                "user",
                &self.user,
                "user@host, as the server account is named",
            ));
        }
        if *self.local_port.get_ref() == 0 {
            return Err(invalid(
                "local-port",
                &self.local_port,
                "a port from 1 to 65535",
            ));
        }
        if self.schedule_time().is_none() {
            return Err(invalid(
                "schedule",
                &self.schedule,
                "a daily time as HH:MM, e.g. \"12:30\"",
            ));
        }
        if *self.min_battery_percent.get_ref() > 100 {
            return Err(invalid(
                "min-battery-percent",
                &self.min_battery_percent,
                "a percentage from 0 to 100",
            ));
        }
        let sources = self.sources.get_ref();
        if sources.is_empty()
            || sources
                .iter()
                .any(|s| !s.starts_with('/') && !s.starts_with("~/"))
        {
            return Err(invalid(
                "sources",
                &self.sources,
                "at least one folder, each absolute or starting with ~/",
            ));
        }
        if self.rpo.is_zero() {
            return Err((
                "rpo".into(),
                0..0,
                "expected an objective longer than zero".into(),
            ));
        }
        if self.time_limit.is_zero() {
            return Err((
                "time-limit".into(),
                0..0,
                "expected a time limit longer than zero".into(),
            ));
        }
        Ok(())
    }

    /// The schedule as (hour, minute).
    pub fn schedule_time(&self) -> Option<(u8, u8)> {
        let (hour, minute) = self.schedule.get_ref().split_once(':')?;
        let (hour, minute) = (hour.parse::<u8>().ok()?, minute.parse::<u8>().ok()?);
        (hour < 24 && minute < 60 && self.schedule.get_ref().len() == 5).then_some((hour, minute))
    }

    /// The account's user and host parts.
    pub fn user_and_host(&self) -> (&str, &str) {
        self.user
            .get_ref()
            .split_once('@')
            .unwrap_or((self.user.get_ref(), ""))
    }

    /// Each source with `~/` expanded.
    pub fn source_paths(&self, home: &Path) -> Vec<PathBuf> {
        self.sources
            .get_ref()
            .iter()
            .map(|s| match s.strip_prefix("~/") {
                Some(rest) => home.join(rest),
                None => PathBuf::from(s),
            })
            .collect()
    }

    pub fn state_dir(&self, home: &Path) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| home.join(".local/state/homelab-client"))
    }
}

/// The text `client setup` writes when there is no configuration yet.
pub fn render_new(hostname: &str, fingerprint: &str, user: &str) -> String {
    format!(
        "# homelab client configuration (docs: macbook/README.md). `homelab client setup` wrote it;\n\
         # edit freely, then run setup again.\n\n\
         # The Kopia server's tcp hostname, opened with `cloudflared access tcp`.\n\
         server-hostname = \"{hostname}\"\n\
         local-port = 51515\n\
         # SHA-256 of the server's certificate: a server with another one is refused.\n\
         server-fingerprint = \"{fingerprint}\"\n\
         # The Kopia server account (KOPIA_CLIENT_USER in the cluster's kopia Secret).\n\
         user = \"{user}\"\n\n\
         sources = [\"~/Documents\", \"~/Pictures\", \"~/Desktop\"]\n\
         exclude = [\"Library/Caches/\", \".cache/\", \"node_modules/\", \".DS_Store\", \".Trash/\"]\n\
         # Daily, local time; a missed run starts when the laptop next wakes or logs in.\n\
         schedule = \"12:30\"\n\
         min-battery-percent = 30\n\
         time-limit = \"4h\"\n\n\
         [retention]\nkeep-latest = 10\nkeep-daily = 14\nkeep-weekly = 8\nkeep-monthly = 12\n"
    )
}
