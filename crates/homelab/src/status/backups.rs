//! The backups, as `homelab backup status` sees them (each source's last good snapshot and
//! drill, the last complete sync to R2), and the clients that back up into the same repository
//! through the Kopia server (the MacBook), each against its objective.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::{Check, Level, ago, one_line};
use crate::backup::config::BackupConfig;
use crate::backup::status::{evaluate, freshness, rfc3339, skew_problem};

pub fn check(file: &Path, clients: &[(String, Duration)], deadline: Instant) -> Vec<Check> {
    // Without the repository the clients cannot be seen either: both parts are unknown.
    let unknown = |reason: String, more: Option<&str>| {
        let mut checks = vec![Check::new("backup", Level::Unknown, reason.clone())];
        if !clients.is_empty() {
            checks.push(Check::new("client", Level::Unknown, reason));
        }
        if let Some(more) = more {
            checks = checks.into_iter().map(|c| c.more(more)).collect();
        }
        checks
    };
    let config = match BackupConfig::load(file) {
        Ok(config) => config,
        Err(err) => {
            return unknown(
                format!("the backup configuration does not load: {err}"),
                None,
            );
        }
    };
    // Whole seconds: the limit appears in the message when kopia does not answer in time.
    let left = Duration::from_secs(deadline.saturating_duration_since(Instant::now()).as_secs());
    // Its own flag, not the signal handlers a job installs: Ctrl-C must still end `status`.
    let cancel = crate::process::Cancel::default().with_time_limit(left);
    let listed = crate::backup::local_repository(&config, &cancel).and_then(|kopia| {
        let own = kopia.all_snapshots()?;
        let every = if clients.is_empty() {
            Vec::new()
        } else {
            kopia.snapshots_of_every_client()?
        };
        Ok((own, every))
    });
    let (own, every) = match listed {
        Ok(listed) => listed,
        Err(err) => {
            return unknown(
                format!(
                    "cannot list the snapshots in {}: {}",
                    config.repository.path.get_ref().display(),
                    one_line(&format!("{err:#}"))
                ),
                Some("homelab backup status --config /etc/homelab/backup.toml"),
            );
        }
    };
    let now = SystemTime::now();
    let status = evaluate(&config, &own, now);
    let more = "homelab backup status --config /etc/homelab/backup.toml";
    let mut checks: Vec<Check> = status
        .sources
        .iter()
        .map(|source| {
            let id = format!("backup/{}", source.name);
            if source.ok {
                let drill = match source.last_drill_ok {
                    Some(true) => ", drill ok",
                    _ => ", never drilled",
                };
                Check::new(
                    id,
                    Level::Ok,
                    format!(
                        "last good {}{}{drill}",
                        source.last_good_time.as_deref().unwrap_or("never"),
                        source.age_seconds.map_or(String::new(), |s| format!(
                            " ({} ago)",
                            ago(Duration::from_secs(s))
                        )),
                    ),
                )
            } else {
                Check::new(id, Level::Fail, source.problems.join("; ")).more(more)
            }
        })
        .collect();
    if let Some(sync) = &status.sync {
        checks.push(if sync.ok {
            Check::new(
                "backup/r2-sync",
                Level::Ok,
                format!(
                    "last complete sync {}{}",
                    sync.last_complete_time.as_deref().unwrap_or("never"),
                    sync.age_seconds.map_or(String::new(), |s| format!(
                        " ({} ago)",
                        ago(Duration::from_secs(s))
                    ))
                ),
            )
        } else {
            Check::new("backup/r2-sync", Level::Fail, sync.problems.join("; ")).more(more)
        });
    }
    for source in &status.sources {
        if !source.set_aside.is_empty() {
            let copies: Vec<&str> = source.set_aside.iter().map(|c| c.path.as_str()).collect();
            checks.push(
                Check::new(
                    format!("backup/{}/set-aside", source.name),
                    Level::Warn,
                    format!(
                        "an in-place restore set the previous data aside in {}: remove it once \
                         the restored data is known good",
                        copies.join(", ")
                    ),
                )
                .more(more),
            );
        }
    }
    if !status.unrecorded.is_empty() {
        checks.push(
            Check::new(
                "backup/unrecorded",
                Level::Fail,
                format!(
                    "the last {} could not save their outcome (state dir full or unwritable?)",
                    status
                        .unrecorded
                        .iter()
                        .map(|job| format!("`backup {job}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .more(more),
        );
    }
    for (name, rpo) in clients {
        checks.push(client(name, *rpo, &every, now));
    }
    checks
}

/// A client's newest clean snapshot of any of its folders against its objective.
fn client(name: &str, rpo: Duration, every: &[crate::kopia::Manifest], now: SystemTime) -> Check {
    let id = format!("client/{name}");
    let more =
        "kopia snapshot list --all (KOPIA_CONFIG_PATH=<backup state-dir>/kopia/repository.config)";
    let newest = every
        .iter()
        .filter(|m| format!("{}@{}", m.source.user_name, m.source.host) == name && m.is_clean())
        .filter_map(|m| m.end().or(m.start()))
        .max();
    let Some(time) = newest else {
        return Check::new(
            id,
            Level::Fail,
            format!("no complete snapshot from {name} in the repository"),
        )
        .more(more);
    };
    let fresh = freshness(Some(time), rpo, now);
    if let Some(ahead) = fresh.ahead {
        return Check::new(id, Level::Fail, skew_problem("newest snapshot", ahead)).more(more);
    }
    let age = fresh.age.unwrap_or_default();
    if fresh.stale {
        Check::new(
            id,
            Level::Fail,
            format!(
                "stale: the newest snapshot is {} old ({}), the objective is {}",
                ago(age),
                rfc3339(time),
                humantime::format_duration(rpo)
            ),
        )
        .more(more)
    } else {
        Check::new(
            id,
            Level::Ok,
            format!("newest snapshot {} ({} ago)", rfc3339(time), ago(age)),
        )
    }
}
