//! `homelab client backup`: skip when offline or low on battery; otherwise open the tunnel,
//! snapshot every source through the Kopia server, and always close the tunnel.

use std::net::ToSocketAddrs as _;

use clap::Args;

use super::macos::KeychainItem;
use super::status::{ClientState, SourceResult};
use super::{ConfigArg, Tunnel, home, load, macos};
use crate::clock::unix_now;
use crate::exit::ExitStatus;
use crate::kopia::Kopia;
use crate::process::Cancel;

#[derive(Debug, Args)]
pub struct BackupCmd {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(cmd: &BackupCmd) -> anyhow::Result<ExitStatus> {
    let (_, config) = match load(&cmd.config) {
        Ok(loaded) => loaded,
        Err(status) => return Ok(status),
    };
    let home = home()?;
    let state_dir = config.state_dir(&home);
    let outcome = back_up(&config, &home, &state_dir);
    // Whatever happened today (skipped, failed, or good), a laptop whose last good snapshot is
    // older than its objective says so on its screen: nobody reads the agent's log.
    warn_if_stale(&config, &home, &state_dir);
    outcome
}

fn back_up(
    config: &super::config::ClientConfig,
    home: &std::path::Path,
    state_dir: &std::path::Path,
) -> anyhow::Result<ExitStatus> {
    let min = *config.min_battery_percent.get_ref();
    if let Some(percent) = macos::battery_percent()
        && percent < min
    {
        println!("skipped: on battery at {percent}% (below min-battery-percent {min})");
        return Ok(ExitStatus::Success);
    }
    let hostname = config.server_hostname.get_ref();
    if (hostname.as_str(), 443).to_socket_addrs().is_err() {
        println!("skipped: offline (cannot resolve {hostname})");
        return Ok(ExitStatus::Success);
    }
    let Some(password) = macos::read_secret(
        KeychainItem::ServerPassword,
        config.user.get_ref(),
        state_dir,
    )?
    else {
        eprintln!("error: no server password is stored: run `homelab client setup` first");
        return Ok(ExitStatus::Error);
    };
    if !state_dir.join("kopia/repository.config").exists() {
        eprintln!("error: not connected to the Kopia server: run `homelab client setup` first");
        return Ok(ExitStatus::Error);
    }
    let cancel = Cancel::install()?.with_time_limit(config.time_limit);
    let sources = config.source_paths(home);
    let (present, missing): (Vec<_>, Vec<_>) = sources.iter().partition(|p| p.is_dir());
    let tunnel = Tunnel::open(config, state_dir, &cancel)?;
    let kopia = Kopia::new(state_dir.join("kopia"), password, cancel);
    let run_id = unix_now().to_string();
    let paths: Vec<&std::path::Path> = present.iter().map(|p| p.as_path()).collect();
    let (made, outcome) = kopia.snapshot_create(
        &paths,
        &[("homelab-client", &run_id)],
        None,
        "homelab client backup",
        None,
    );
    drop(tunnel);
    let mut state = ClientState::load(state_dir);
    let mut failures = Vec::new();
    for path in &sources {
        let shown = path.display().to_string();
        let manifest = made
            .iter()
            .find(|m| std::path::Path::new(&m.source.path) == path.as_path());
        let result = match manifest {
            Some(m) if m.is_clean() => {
                println!("  ok    {shown}  snapshot {}", m.id);
                SourceResult {
                    last_snapshot: Some(unix_now()),
                    snapshot_id: Some(m.id.clone()),
                    last_ok: true,
                }
            }
            other => {
                let why = if missing.contains(&path) {
                    "the folder does not exist".to_owned()
                } else if let Some(m) = other {
                    format!("snapshot {} is incomplete or has errors", m.id)
                } else {
                    outcome
                        .as_ref()
                        .err()
                        .map_or("no snapshot".to_owned(), |e| e.to_string())
                };
                println!("  FAIL  {shown}  {why}");
                failures.push(format!("{shown}: {why}"));
                let previous = state.sources.remove(&shown).unwrap_or_default();
                SourceResult {
                    last_ok: false,
                    ..previous
                }
            }
        };
        state.sources.insert(shown, result);
    }
    state.save(state_dir)?;
    if failures.is_empty() {
        Ok(ExitStatus::Success)
    } else {
        tracing::error!("backup failed: {}", failures.join("; "));
        macos::notify("homelab backup failed", &failures.join("\n"));
        Ok(ExitStatus::Failure)
    }
}

/// A notification (and a log line) when the oldest of the sources' last good snapshots is
/// older than `rpo`.
fn warn_if_stale(
    config: &super::config::ClientConfig,
    home: &std::path::Path,
    state_dir: &std::path::Path,
) {
    let state = ClientState::load(state_dir);
    let now = unix_now();
    let stale: Vec<String> = config
        .source_paths(home)
        .iter()
        .filter_map(|path| {
            let shown = path.display().to_string();
            let last = state.sources.get(&shown).and_then(|r| r.last_snapshot);
            match last {
                Some(t) if now.saturating_sub(t) <= config.rpo.as_secs() => None,
                Some(t) => Some(format!(
                    "{shown}: last good snapshot {} ago",
                    humantime::format_duration(std::time::Duration::from_secs(
                        now.saturating_sub(t) / 60 * 60
                    ))
                )),
                None => Some(format!("{shown}: no good snapshot yet")),
            }
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    let text = format!(
        "{}\n(objective: {}; see `homelab client status`)",
        stale.join("\n"),
        humantime::format_duration(config.rpo)
    );
    tracing::warn!("backups are older than their objective: {text}");
    macos::notify("homelab: backups are out of date", &text);
}
