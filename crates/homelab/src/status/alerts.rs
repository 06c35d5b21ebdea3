//! `--notify` and `--summary`: messages only when something changes, never a stream.
//!
//! Each check's last announced state is remembered. A check that turns bad (fail or unknown)
//! is announced once; its recovery once. A check that turns bad again sooner than
//! `repeat-after` after its last message (flapping) is held back until that time has passed,
//! and announced then only if it is still bad. One run sends at most one message, listing every
//! change. A change is remembered as announced only once the message was delivered, so an
//! unreachable ntfy delays an alert instead of losing it.
//!
//! The memory is kept twice, in the state dir and in a runtime dir on another file system (a
//! tmpfs), the newer copy winning: with the disk full, the alert about it still goes out once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::StatusConfig;
use super::{Check, Level, one_line};
use crate::notify::{Heartbeat, Priority};

const STATE_FILE: &str = "alerts.json";
const LOCK_FILE: &str = "alerts.lock";
/// Another `--notify` run holding the lock longer than this is left to do the announcing.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// A recorded time further ahead than this means the clock went back: holds based on it end.
const CLOCK_SKEW_ALLOWANCE: u64 = 5 * 60;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct AlertState {
    /// When this copy was written: of the two copies, the newer is read.
    saved_at: u64,
    checks: BTreeMap<String, Tracked>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Tracked {
    level: Level,
    /// Since when the check has been bad, or good (unix time).
    since: u64,
    /// The owner was last told that this check is bad.
    announced_bad: bool,
    /// When the last message about this check went out.
    announced_at: Option<u64>,
}

enum Change<'a> {
    Failed(&'a Check),
    /// A check that is bad again within `repeat-after` of its last message, announced now that
    /// the time has passed.
    StillFailing(&'a Check),
    Recovered {
        id: String,
        since: u64,
        /// What it is now: ok, or only a warning.
        now: Level,
    },
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn notify(config: &StatusConfig, checks: &[Check], now: SystemTime) {
    let beat = Heartbeat::new(&config.notify, "status");
    let _lock = match lock(config.state_dir.get_ref()) {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => {
            tracing::warn!(
                "another `homelab status --notify` is announcing; leaving it to that run"
            );
            return;
        }
        Err(err) => {
            // A full or read-only disk must not silence the alerts: go on without the lock.
            tracing::warn!("{err:#}");
            None
        }
    };
    let dirs = state_dirs(config);
    let mut state = load(&dirs);
    let now = unix(now);
    let before = state.clone();
    let mut undelivered = false;
    let changes = decide(&mut state, checks, now, config.repeat_after.as_secs());
    if !changes.is_empty() {
        let (title, text, priority) = message(&changes, now);
        if !crate::notify::send(&config.notify, &title, &text, priority) {
            // Nothing is recorded as announced: the next run decides and sends again.
            tracing::warn!("the alert was not delivered; the next run sends it again");
            state = before;
            undelivered = true;
        }
    }
    state.saved_at = now;
    match save(&dirs, &state) {
        // The outside watcher hears when alerts cannot get out.
        Ok(()) if undelivered => {
            beat.failure("homelab status --notify could not deliver its alert (ntfy/Matrix)");
        }
        Ok(()) => beat.success("homelab status --notify ran"),
        Err(err) => {
            tracing::error!("{err:#}");
            beat.failure(&format!(
                "homelab status --notify cannot record its alerts: {err:#}"
            ));
        }
    }
}

/// Whether `id` lies under the check `prefix` (`cluster` covers `cluster/pods/immich`).
fn under(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Applies this run's checks to the remembered state; returns what to announce (and marks it
/// announced).
///
/// A check that is absent this run counts as ok, unless an unknown check covers it (a part, or
/// a list inside one, that could not be read says nothing about what it holds). Failing things
/// are reported one per id (a unit, a workload, a claim), so a second failure next to one
/// already announced is its own change.
fn decide<'a>(
    state: &mut AlertState,
    checks: &'a [Check],
    now: u64,
    repeat_after: u64,
) -> Vec<Change<'a>> {
    let mut changes = Vec::new();
    let silent: Vec<&str> = checks
        .iter()
        .filter(|c| c.level == Level::Unknown)
        .map(|c| c.id.as_str())
        .collect();
    let gone: Vec<String> = state
        .checks
        .keys()
        .filter(|id| !checks.iter().any(|c| &c.id == *id))
        .filter(|id| !silent.iter().any(|prefix| under(id, prefix)))
        .cloned()
        .collect();
    let held = |tracked: &Tracked| {
        tracked.announced_at.is_some_and(|at| {
            at <= now + CLOCK_SKEW_ALLOWANCE && now.saturating_sub(at) < repeat_after
        })
    };
    for id in gone {
        let Some(tracked) = state.checks.get_mut(&id) else {
            continue;
        };
        if tracked.announced_bad {
            changes.push(Change::Recovered {
                id: id.clone(),
                since: tracked.since,
                now: Level::Ok,
            });
            tracked.announced_bad = false;
            tracked.announced_at = Some(now);
        }
        tracked.level = Level::Ok;
    }
    for check in checks {
        let bad = check.level.is_bad();
        let tracked = state
            .checks
            .entry(check.id.clone())
            .or_insert_with(|| Tracked {
                level: Level::Ok,
                since: now,
                announced_bad: false,
                announced_at: None,
            });
        let bad_since = tracked.since;
        if tracked.level.is_bad() != bad {
            tracked.since = now;
        }
        tracked.level = check.level;
        if bad && !tracked.announced_bad {
            if !held(tracked) {
                changes.push(if tracked.announced_at.is_some() {
                    Change::StillFailing(check)
                } else {
                    Change::Failed(check)
                });
                tracked.announced_bad = true;
                tracked.announced_at = Some(now);
            }
        } else if !bad && tracked.announced_bad {
            changes.push(Change::Recovered {
                id: check.id.clone(),
                since: bad_since,
                now: check.level,
            });
            tracked.announced_bad = false;
            tracked.announced_at = Some(now);
        }
    }
    // Only what may still need a message, or hold one back, is worth remembering.
    state
        .checks
        .retain(|_, t| t.level.is_bad() || t.announced_bad || held(t));
    changes
}

fn message(changes: &[Change<'_>], now: u64) -> (String, String, Priority) {
    let host = crate::notify::host_name();
    let mut failing = Vec::new();
    let mut recovered = Vec::new();
    for change in changes {
        match change {
            Change::Failed(check) => failing.push(line(check, "")),
            Change::StillFailing(check) => {
                failing.push(line(check, " (again: it has been coming and going)"));
            }
            Change::Recovered {
                id,
                since,
                now: level,
            } => recovered.push(format!(
                "{:<7} {id} (was bad for {})",
                level.label(),
                super::ago(Duration::from_secs(now.saturating_sub(*since)))
            )),
        }
    }
    let mut text = String::new();
    if !failing.is_empty() {
        text.push_str(&failing.join("\n"));
    }
    if !recovered.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\nrecovered:\n");
        }
        text.push_str(&recovered.join("\n"));
    }
    text.push_str(&format!("\n\nfull status: sudo homelab status (on {host})"));
    if failing.is_empty() {
        (
            format!("{host}: recovered ({})", recovered.len()),
            text,
            Priority::Default,
        )
    } else {
        (
            format!("{host}: {} problem(s)", failing.len()),
            text,
            Priority::High,
        )
    }
}

fn line(check: &Check, note: &str) -> String {
    let more = check
        .more
        .as_ref()
        .map_or(String::new(), |m| format!("\n        more: {m}"));
    format!(
        "{:<7} {}: {}{note}{more}",
        check.level.label(),
        check.id,
        one_line(&check.message)
    )
}

/// The daily summary: proof that the alerting itself still works, and whatever is not ok.
pub fn summary(config: &StatusConfig, checks: &[Check]) {
    let host = crate::notify::host_name();
    let not_ok: Vec<String> = checks
        .iter()
        .filter(|c| c.level != Level::Ok)
        .map(|c| line(c, ""))
        .collect();
    let (title, text) = if not_ok.is_empty() {
        (
            format!("{host}: all ok"),
            format!("daily summary: all {} checks ok", checks.len()),
        )
    } else {
        (
            format!("{host}: {} of {} checks not ok", not_ok.len(), checks.len()),
            format!("daily summary:\n{}", not_ok.join("\n")),
        )
    };
    if !crate::notify::send(&config.notify, &title, &text, Priority::Default) {
        tracing::error!("the daily summary was not delivered");
    }
}

fn state_dirs(config: &StatusConfig) -> Vec<PathBuf> {
    std::iter::once(config.state_dir.get_ref().clone())
        .chain(config.runtime_dir.as_ref().map(|d| d.get_ref().clone()))
        .collect()
}

fn lock(dir: &Path) -> anyhow::Result<Option<File>> {
    std::fs::create_dir_all(dir)
        .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|err| anyhow::anyhow!("cannot open {}: {err}", path.display()))?;
    let until = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(err)) => {
                anyhow::bail!("cannot lock {}: {err}", path.display())
            }
        }
    }
}

/// The newer of the copies that read; none readable is a fresh start (which can only repeat an
/// alert, never swallow one).
fn load(dirs: &[PathBuf]) -> AlertState {
    dirs.iter()
        .filter_map(|dir| {
            let path = dir.join(STATE_FILE);
            let bytes = std::fs::read(&path).ok()?;
            serde_json::from_slice::<AlertState>(&bytes)
                .map_err(|err| tracing::warn!("ignoring unreadable {}: {err}", path.display()))
                .ok()
        })
        .max_by_key(|state| state.saved_at)
        .unwrap_or_default()
}

/// Writes every copy; fine when at least one was written.
fn save(dirs: &[PathBuf], state: &AlertState) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    let mut errors = Vec::new();
    for dir in dirs {
        if let Err(err) = crate::files::write_atomically(&dir.join(STATE_FILE), &json) {
            errors.push(format!("{err:#}"));
        }
    }
    if errors.len() == dirs.len() {
        anyhow::bail!(
            "cannot record which alerts went out (they will repeat): {}",
            errors.join("; ")
        );
    }
    for err in errors {
        tracing::warn!("{err}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{AlertState, Change, decide};
    use crate::status::{Check, Level};

    fn ids(changes: &[Change<'_>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Failed(c) => format!("fail {}", c.id),
                Change::StillFailing(c) => format!("again {}", c.id),
                Change::Recovered { id, .. } => format!("ok {id}"),
            })
            .collect()
    }

    #[test]
    fn a_flapping_check_is_held_back_then_announced_once_if_still_bad() {
        let mut state = AlertState::default();
        let bad = [Check::new("host/units", Level::Fail, "x failed")];
        let good = [Check::new("host/units", Level::Ok, "none")];
        let hour = 3600;
        assert_eq!(ids(&decide(&mut state, &bad, 0, hour)), ["fail host/units"]);
        assert!(decide(&mut state, &bad, 300, hour).is_empty());
        assert_eq!(
            ids(&decide(&mut state, &good, 600, hour)),
            ["ok host/units"]
        );
        assert!(decide(&mut state, &bad, 900, hour).is_empty(), "held");
        assert!(
            decide(&mut state, &bad, 1200, hour).is_empty(),
            "still held"
        );
        assert_eq!(
            ids(&decide(&mut state, &bad, 600 + hour, hour)),
            ["again host/units"]
        );
        assert!(decide(&mut state, &bad, 900 + hour, hour).is_empty());
    }

    #[test]
    fn a_clock_that_went_back_does_not_hold_alerts_forever() {
        let mut state = AlertState::default();
        let bad = [Check::new("host/units", Level::Fail, "x failed")];
        let good = [Check::new("host/units", Level::Ok, "none")];
        let far = 10_000_000;
        decide(&mut state, &bad, far, 3600);
        decide(&mut state, &good, far, 3600);
        assert_eq!(ids(&decide(&mut state, &bad, 1000, 3600)).len(), 1);
    }

    #[test]
    fn a_second_failure_beside_an_announced_one_is_its_own_alert() {
        let mut state = AlertState::default();
        let one = [Check::new("host/units/a.service", Level::Fail, "failed")];
        assert_eq!(
            ids(&decide(&mut state, &one, 0, 3600)),
            ["fail host/units/a.service"]
        );
        let two = [
            Check::new("host/units/a.service", Level::Fail, "failed"),
            Check::new("host/units/k3s.service", Level::Fail, "failed"),
        ];
        assert_eq!(
            ids(&decide(&mut state, &two, 300, 3600)),
            ["fail host/units/k3s.service"]
        );
    }

    #[test]
    fn a_list_that_cannot_be_read_neither_recovers_nor_repeats_its_members() {
        let mut state = AlertState::default();
        let failing = [Check::new(
            "cluster/HelmRelease/immich/immich",
            Level::Fail,
            "x",
        )];
        decide(&mut state, &failing, 0, 3600);
        let unreadable = [Check::new("cluster/HelmRelease", Level::Unknown, "timeout")];
        assert_eq!(
            ids(&decide(&mut state, &unreadable, 300, 3600)),
            ["fail cluster/HelmRelease"],
            "the list's own problem, and no recovery of what it holds"
        );
        assert_eq!(
            ids(&decide(&mut state, &failing, 600, 3600)),
            ["ok cluster/HelmRelease"],
            "the list is readable again; the member, still failing, is not announced twice"
        );
    }

    #[test]
    fn a_check_that_goes_and_comes_back_is_still_held_back() {
        let mut state = AlertState::default();
        let bad = [Check::new(
            "cluster/claims/libsql/data",
            Level::Fail,
            "Pending",
        )];
        decide(&mut state, &bad, 0, 3600);
        assert_eq!(
            ids(&decide(&mut state, &[], 300, 3600)),
            ["ok cluster/claims/libsql/data"]
        );
        assert!(decide(&mut state, &bad, 600, 3600).is_empty(), "held");
    }

    #[test]
    fn a_silent_part_keeps_its_checks_and_a_gone_check_recovers() {
        let mut state = AlertState::default();
        let pods = [Check::new("cluster/pods/immich", Level::Fail, "crash")];
        decide(&mut state, &pods, 0, 3600);
        let silent = [Check::new("cluster", Level::Unknown, "timeout")];
        assert_eq!(
            ids(&decide(&mut state, &silent, 300, 3600)),
            ["fail cluster"]
        );
        let back: [Check; 0] = [];
        let changes = ids(&decide(&mut state, &back, 600, 3600));
        assert!(changes.contains(&"ok cluster".to_owned()), "{changes:?}");
        assert!(
            changes.contains(&"ok cluster/pods/immich".to_owned()),
            "{changes:?}"
        );
    }
}
