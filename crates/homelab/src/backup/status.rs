//! `homelab backup status`: the newest good snapshot of each source, its last drill, and the
//! last sync that completed, each against its objective. Takes no lock: it must answer while a
//! run is busy. Exit 1 when anything is stale, the last run or drill of a source failed, or a
//! time lies in the future.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Serialize;

use super::config::BackupConfig;
use super::state::State;
use super::{ConfigArg, Session, last_good};
use crate::exit::ExitStatus;

/// How far in the future a recorded time may lie before it is a clock problem: more than
/// ordinary drift between the host's clock and the one that stamped it.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Args)]
pub struct StatusCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub ok: bool,
    pub sources: Vec<SourceStatus>,
    pub sync: Option<SyncStatus>,
    /// Jobs whose last outcome could not be saved: what the state shows for them is older.
    pub unrecorded: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SourceStatus {
    pub name: String,
    path: String,
    pub ok: bool,
    last_good_snapshot: Option<String>,
    pub last_good_time: Option<String>,
    pub age_seconds: Option<u64>,
    rpo_seconds: u64,
    stale: bool,
    /// The last good snapshot's time lies in the future: its age means nothing.
    clock_skew: bool,
    last_drill_time: Option<String>,
    pub last_drill_ok: Option<bool>,
    /// Copies an in-place restore set aside (`<path>.before-restore-*`): the data that was
    /// live before it, kept until the owner removes it.
    pub set_aside: Vec<SetAside>,
    /// What is wrong, in words; empty when ok.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SetAside {
    pub path: String,
    pub age_seconds: Option<u64>,
    /// Filled in by `backup status` only (walking a copy of Immich's library takes time).
    pub bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SyncStatus {
    pub ok: bool,
    /// The last sync that completed: an interrupted one may have left the mirror listing
    /// snapshots whose data is not there yet.
    pub last_complete_time: Option<String>,
    last_attempt_ok: Option<bool>,
    pub age_seconds: Option<u64>,
    rpo_seconds: u64,
    stale: bool,
    clock_skew: bool,
    /// Mirror blobs found damaged by `verify --offsite`, not yet replaced by a sync.
    damaged_blobs: Vec<String>,
    /// Blobs the mirror lacks or holds with another size after the last sync's repair.
    differing_blobs: Vec<String>,
    /// How many shares of the packs were read back from the mirror within one cycle.
    pack_shares_read: usize,
    pack_shares: usize,
    pub problems: Vec<String>,
}

/// A recorded time measured against now and an objective.
pub(crate) struct Freshness {
    pub age: Option<Duration>,
    pub stale: bool,
    pub ahead: Option<Duration>,
}

pub(crate) fn freshness(
    time: Option<SystemTime>,
    objective: Duration,
    now: SystemTime,
) -> Freshness {
    let Some(time) = time else {
        return Freshness {
            age: None,
            stale: true,
            ahead: None,
        };
    };
    match now.duration_since(time) {
        Ok(age) => Freshness {
            age: Some(age),
            stale: age > objective,
            ahead: None,
        },
        Err(ahead) => {
            let ahead = ahead.duration();
            Freshness {
                age: Some(Duration::ZERO),
                stale: false,
                ahead: (ahead > CLOCK_SKEW_ALLOWANCE).then_some(ahead),
            }
        }
    }
}

pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn from_unix(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

pub(crate) fn skew_problem(what: &str, ahead: Duration) -> String {
    format!(
        "clock skew: the {what} is {} in the future (check the host's clock and time sync)",
        humantime::format_duration(Duration::from_secs(ahead.as_secs()))
    )
}

pub fn run(config: &BackupConfig, cmd: &StatusCmd) -> anyhow::Result<ExitStatus> {
    let session = Session::open(config, None, super::STATUS_TIME_LIMIT)?;
    let mut status = evaluate(config, &session.kopia.all_snapshots()?, SystemTime::now());
    for source in &mut status.sources {
        for copy in &mut source.set_aside {
            copy.bytes = Some(tree_bytes(Path::new(&copy.path)));
        }
    }
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print(&status);
    }
    Ok(if status.ok {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// Each source and the mirror against their objectives, from kopia's snapshot list (this
/// client's) and the recorded state.
pub(crate) fn evaluate(
    config: &BackupConfig,
    snapshots: &[crate::kopia::Manifest],
    now: SystemTime,
) -> Status {
    let state = State::load(config.state_dir.get_ref());
    let mut sources = Vec::new();
    for source in &config.sources {
        let good = last_good(snapshots, source.path());
        let time = good.and_then(|m| m.end().or(m.start()));
        let fresh = freshness(time, config.rpo, now);
        let recorded = state.sources.get(source.name());
        let drill_time = recorded.and_then(|s| s.last_drill).map(from_unix);
        let drill_ok = recorded.and_then(|s| s.last_drill_ok);
        let mut problems = Vec::new();
        match (time, fresh.age) {
            (None, _) => problems.push("no good snapshot".to_owned()),
            (Some(_), Some(age)) if fresh.stale => problems.push(format!(
                "stale: the last good snapshot is {} old, the objective is {}",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(config.rpo)
            )),
            _ => {}
        }
        if let Some(ahead) = fresh.ahead {
            problems.push(skew_problem("last good snapshot", ahead));
        }
        if recorded.is_some_and(|s| !s.last_attempt_ok) {
            problems.push("the last run of this source failed (see that run's log)".to_owned());
        }
        if drill_ok == Some(false) {
            problems.push("the last drill failed".to_owned());
        }
        let set_aside = super::restore::set_aside_copies(source.path())
            .into_iter()
            .map(|path| SetAside {
                age_seconds: std::fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .map(|d| d.as_secs()),
                path: path.display().to_string(),
                bytes: None,
            })
            .collect();
        sources.push(SourceStatus {
            name: source.name().to_owned(),
            path: source.path().display().to_string(),
            ok: problems.is_empty(),
            last_good_snapshot: good.map(|m| m.id.clone()),
            last_good_time: time.map(rfc3339),
            age_seconds: fresh.age.map(|a| a.as_secs()),
            rpo_seconds: config.rpo.as_secs(),
            stale: fresh.stale,
            clock_skew: fresh.ahead.is_some(),
            last_drill_time: drill_time.map(rfc3339),
            last_drill_ok: drill_ok,
            set_aside,
            problems,
        });
    }
    let sync = config.offsite.as_ref().map(|offsite| {
        let time = state.last_sync.map(from_unix);
        let fresh = freshness(time, offsite.rpo, now);
        let mut problems = Vec::new();
        if fresh.stale {
            problems.push(match fresh.age {
                None => "no sync has completed yet".to_owned(),
                Some(age) => format!(
                    "stale: the last complete sync is {} old, the objective is {}",
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    humantime::format_duration(offsite.rpo)
                ),
            });
        }
        if let Some(ahead) = fresh.ahead {
            problems.push(skew_problem("last complete sync", ahead));
        }
        if !state.mirror_damaged.is_empty() {
            problems.push(format!(
                "{} mirror blob(s) hold other bytes than the local copies (found by verify \
                 --offsite): {}; the next sync replaces them",
                state.mirror_damaged.len(),
                state.mirror_damaged.join(", ")
            ));
        }
        if !state.mirror_differs.is_empty() {
            problems.push(format!(
                "the mirror still differs from the local repository after the last sync's repair: {}",
                state.mirror_differs.join(", ")
            ));
        }
        let shares = *config.verify.offsite_pack_shares.get_ref() as usize;
        // A share counts when it was read within one cycle of weekly runs, a day of slack.
        let cycle = (shares as u64 * 7 + 1) * 86_400;
        let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let pack_shares_read = state
            .mirror_share_read
            .iter()
            .take(shares)
            .filter(|t| t.is_some_and(|t| now_unix.saturating_sub(t) <= cycle))
            .count();
        SyncStatus {
            ok: problems.is_empty(),
            last_complete_time: time.map(rfc3339),
            last_attempt_ok: state.last_sync_ok,
            age_seconds: fresh.age.map(|a| a.as_secs()),
            rpo_seconds: offsite.rpo.as_secs(),
            stale: fresh.stale,
            clock_skew: fresh.ahead.is_some(),
            damaged_blobs: state.mirror_damaged.clone(),
            differing_blobs: state.mirror_differs.clone(),
            pack_shares_read,
            pack_shares: shares,
            problems,
        }
    });
    let unrecorded = super::state::unrecorded(config.state_dir.get_ref());
    Status {
        ok: sources.iter().all(|s| s.ok)
            && sync.as_ref().is_none_or(|s| s.ok)
            && unrecorded.is_empty(),
        sources,
        sync,
        unrecorded,
    }
}

/// Bytes of the regular files under `path`, symlinks not followed.
fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| tree_bytes(&e.path())).sum())
        .unwrap_or(0)
}

fn print(status: &Status) {
    let verdict = |ok: bool| if ok { "ok" } else { "FAIL" };
    let ago = |age: Option<u64>| {
        age.map_or("never".to_owned(), |s| {
            format!("{} ago", humantime::format_duration(Duration::from_secs(s)))
        })
    };
    for s in &status.sources {
        let drill = match (&s.last_drill_time, s.last_drill_ok) {
            (Some(time), Some(true)) => format!("drill ok {time}"),
            (Some(time), _) => format!("drill FAILED {time}"),
            (None, _) => "never drilled".to_owned(),
        };
        println!(
            "  {:<4} {:<12} last good {:<22} {:<16} {drill}",
            verdict(s.ok),
            s.name,
            s.last_good_time.as_deref().unwrap_or("never"),
            if s.clock_skew {
                "IN THE FUTURE".to_owned()
            } else {
                ago(s.age_seconds)
            },
        );
        for problem in &s.problems {
            println!("         {problem}");
        }
        for copy in &s.set_aside {
            println!(
                "         set aside by an in-place restore: {} ({}, {}); remove it once the \
                 restored data is known good",
                copy.path,
                copy.bytes.map_or("?".to_owned(), human_size),
                copy.age_seconds
                    .map_or("age unknown".to_owned(), |a| format!(
                        "{} old",
                        humantime::format_duration(Duration::from_secs(a / 60 * 60))
                    )),
            );
        }
    }
    for job in &status.unrecorded {
        println!(
            "  FAIL the last `backup {job}` could not save its outcome (state dir full or \
             unwritable?): what this status shows for it is older; run it again"
        );
    }
    if let Some(sync) = &status.sync {
        let attempt = match sync.last_attempt_ok {
            Some(false) => "; the last attempt failed",
            _ => "",
        };
        println!(
            "  {:<4} {:<12} last complete sync {:<22} {}{attempt}",
            verdict(sync.ok),
            "r2",
            sync.last_complete_time.as_deref().unwrap_or("never"),
            if sync.clock_skew {
                "IN THE FUTURE".to_owned()
            } else {
                ago(sync.age_seconds)
            },
        );
        println!(
            "  {:<4} {:<12} packs read back from the mirror within one cycle: {} of {} shares",
            "", "", sync.pack_shares_read, sync.pack_shares
        );
        for problem in &sync.problems {
            println!("         {problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::freshness;

    #[test]
    fn a_time_in_the_future_is_skew_not_freshness() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let ahead = freshness(Some(now + hour), hour, now);
        assert_eq!(ahead.ahead, Some(hour));
        let drift = freshness(Some(now + Duration::from_secs(60)), hour, now);
        assert_eq!(drift.ahead, None, "a minute of drift is tolerated");
        let old = freshness(Some(now - 2 * hour), hour, now);
        assert!(old.stale);
        assert!(freshness(None, hour, now).stale);
    }
}
