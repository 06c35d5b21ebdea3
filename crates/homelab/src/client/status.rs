//! `homelab client status`: each source's last snapshot against the daily schedule, and whether
//! launchd has the agent. Reads only local state: it answers offline.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{AGENT_LABEL, ConfigArg, home, load, macos};
use crate::clock::unix_now;
use crate::exit::ExitStatus;
use crate::files::write_atomically;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClientState {
    #[serde(default)]
    pub sources: BTreeMap<String, SourceResult>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SourceResult {
    /// Unix time of the last good snapshot.
    pub last_snapshot: Option<u64>,
    pub snapshot_id: Option<String>,
    pub last_ok: bool,
}

impl ClientState {
    pub fn load(state_dir: &Path) -> Self {
        std::fs::read(state_dir.join("state.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        write_atomically(
            &state_dir.join("state.json"),
            &serde_json::to_vec_pretty(self)?,
        )
    }
}

#[derive(Debug, Args)]
pub struct StatusCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Status {
    ok: bool,
    agent_installed: bool,
    /// Whether launchd has it loaded; null where there is no launchd.
    agent_loaded: Option<bool>,
    sources: Vec<SourceStatus>,
}

#[derive(Debug, Serialize)]
struct SourceStatus {
    path: String,
    last_snapshot_id: Option<String>,
    age_seconds: Option<u64>,
    last_run_ok: Option<bool>,
    stale: bool,
}

pub fn run(cmd: &StatusCmd) -> anyhow::Result<ExitStatus> {
    let (_, config) = match load(&cmd.config) {
        Ok(loaded) => loaded,
        Err(status) => return Ok(status),
    };
    let home = home()?;
    let state = ClientState::load(&config.state_dir(&home));
    let now = unix_now();
    let sources: Vec<SourceStatus> = config
        .source_paths(&home)
        .iter()
        .map(|path| {
            let shown = path.display().to_string();
            let result = state.sources.get(&shown);
            let age = result
                .and_then(|r| r.last_snapshot)
                .map(|t| now.saturating_sub(t));
            SourceStatus {
                last_snapshot_id: result.and_then(|r| r.snapshot_id.clone()),
                age_seconds: age,
                last_run_ok: result.map(|r| r.last_ok),
                stale: age.is_none_or(|a| a > config.rpo.as_secs()),
                path: shown,
            }
        })
        .collect();
    let agent_installed = home
        .join(format!("Library/LaunchAgents/{AGENT_LABEL}.plist"))
        .exists();
    let agent_loaded = macos::agent_loaded(AGENT_LABEL);
    let status = Status {
        ok: sources
            .iter()
            .all(|s| !s.stale && s.last_run_ok != Some(false))
            && agent_installed
            && agent_loaded != Some(false),
        agent_installed,
        agent_loaded,
        sources,
    };
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        for s in &status.sources {
            let age = s.age_seconds.map_or("never".to_owned(), |a| {
                format!("{} ago", humantime::format_duration(Duration::from_secs(a)))
            });
            let verdict = if s.stale || s.last_run_ok == Some(false) {
                "FAIL"
            } else {
                "ok"
            };
            println!("  {verdict:<4} {:<40} last snapshot {age}", s.path);
        }
        let agent = match (status.agent_installed, status.agent_loaded) {
            (false, _) => "not installed (run homelab client setup)",
            (true, Some(true)) => "installed and loaded",
            (true, Some(false)) => "installed but NOT loaded (run homelab client setup)",
            (true, None) => "installed (no launchd here to ask)",
        };
        println!("  launchd agent: {agent}");
    }
    Ok(if status.ok {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
