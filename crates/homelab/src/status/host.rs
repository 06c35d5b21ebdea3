//! The host: failed systemd units, the homelab timers, free space, the age key, and which
//! system generation (and source revision) is running.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::config::{Disk, Host};
use super::{Check, Level, ago, one_line};
use crate::env_vars;

/// systemctl answers in milliseconds; this only bounds a hung manager.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the host's files say: the age key, the generation, free space.
pub fn files(host: &Host) -> Vec<Check> {
    let mut checks = vec![age_key(&host.age_key_file), generation(host)];
    checks.extend(host.disks.iter().map(disk));
    checks
}

/// What systemd says: failed units and the timers that must be active. On its own thread:
/// a hung systemd must not take the disk and key checks down with it.
pub fn systemd(host: &Host, deadline: Instant) -> Vec<Check> {
    let mut checks = failed_units(deadline);
    if !host.timers.is_empty() {
        checks.extend(timers(&host.timers, deadline));
    }
    checks
}

/// The ids the systemd part reports under, for when it does not answer at all.
pub const SYSTEMD_IDS: [&str; 2] = ["host/units", "host/timers"];

fn systemctl(args: &[&str], deadline: Instant) -> Result<crate::process::Finished, String> {
    let program =
        std::env::var_os(env_vars::HOMELAB_SYSTEMCTL).unwrap_or_else(|| "systemctl".into());
    let mut command = std::process::Command::new(program);
    command.args(args);
    let left = deadline
        .saturating_duration_since(Instant::now())
        .min(SYSTEMCTL_TIMEOUT);
    super::run_within(
        &mut command,
        left,
        "systemctl did not answer in time (systemd hung?)",
    )
}

/// One line per failed unit (a second failure is its own alert), or one ok line.
fn failed_units(deadline: Instant) -> Vec<Check> {
    const ID: &str = "host/units";
    let done = match systemctl(
        &[
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ],
        deadline,
    ) {
        Ok(done) if done.status.success() => done,
        Ok(done) => {
            return vec![Check::new(
                ID,
                Level::Unknown,
                format!(
                    "systemctl list-units failed ({}): {}",
                    done.status,
                    one_line(&done.stderr_tail())
                ),
            )];
        }
        Err(err) => return vec![Check::new(ID, Level::Unknown, err)],
    };
    let failed: Vec<String> = done
        .stdout_text()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(|unit| one_line(unit.trim_start_matches('●')))
        .filter(|unit| !unit.is_empty() && !unit.contains('/'))
        .collect();
    if failed.is_empty() {
        return vec![Check::new(ID, Level::Ok, "no failed units")];
    }
    failed
        .iter()
        .map(|unit| {
            Check::new(
                format!("{ID}/{unit}"),
                Level::Fail,
                format!("{unit} failed"),
            )
            .more(format!("journalctl -u {unit} -n 50"))
        })
        .collect()
}

/// `systemctl is-active` prints one state per unit, in order; a masked or stopped timer means a
/// job that silently stopped running. One line per timer that is not active, or one ok line.
fn timers(timers: &[String], deadline: Instant) -> Vec<Check> {
    const ID: &str = "host/timers";
    let mut args = vec!["is-active"];
    args.extend(timers.iter().map(String::as_str));
    let done = match systemctl(&args, deadline) {
        Ok(done) => done,
        Err(err) => return vec![Check::new(ID, Level::Unknown, err)],
    };
    let text = done.stdout_text();
    let states: Vec<&str> = text.lines().map(str::trim).collect();
    if states.len() != timers.len() {
        return vec![Check::new(
            ID,
            Level::Unknown,
            format!(
                "systemctl is-active answered {} lines for {} timers: {}",
                states.len(),
                timers.len(),
                one_line(&done.stderr_tail())
            ),
        )];
    }
    let inactive: Vec<Check> = timers
        .iter()
        .zip(&states)
        .filter(|(_, state)| **state != "active")
        .map(|(timer, state)| {
            Check::new(
                format!("{ID}/{timer}"),
                Level::Fail,
                format!("{timer} is {}: its job will not run", one_line(state)),
            )
            .more(format!("systemctl status {timer}"))
        })
        .collect();
    if inactive.is_empty() {
        vec![Check::new(
            ID,
            Level::Ok,
            format!("{} timers active", timers.len()),
        )]
    } else {
        inactive
    }
}

fn disk(disk: &Disk) -> Check {
    let path = disk.path.get_ref();
    let id = format!("host/disk:{}", path.display());
    let stat = match nix::sys::statvfs::statvfs(path.as_path()) {
        Ok(stat) => stat,
        Err(err) => {
            return Check::new(
                id,
                Level::Unknown,
                format!("cannot read {}: {err}", path.display()),
            );
        }
    };
    let fragment = stat.fragment_size() as f64;
    let total = stat.blocks() as f64 * fragment;
    let available = stat.blocks_available() as f64 * fragment;
    if total <= 0.0 {
        return Check::new(
            id,
            Level::Unknown,
            format!("{} reports a size of zero", path.display()),
        );
    }
    let free = 100.0 * available / total;
    let (warn, fail) = (
        *disk.warn_free_percent.get_ref(),
        *disk.fail_free_percent.get_ref(),
    );
    let level = if free < fail {
        Level::Fail
    } else if free < warn {
        Level::Warn
    } else {
        Level::Ok
    };
    Check::new(
        id,
        level,
        format!(
            "{free:.1}% free ({} of {}; warn below {warn}%, fail below {fail}%)",
            bytes(available),
            bytes(total)
        ),
    )
    .more(format!(
        "du -xh --max-depth=2 {} | sort -h | tail",
        path.display()
    ))
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Present and shaped like an age identity; its content is never shown.
fn age_key(file: &Path) -> Check {
    const ID: &str = "host/age-key";
    let more = "docs/disaster-recovery.md (the recovery kit carries the key)";
    match std::fs::read(file) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            if text
                .lines()
                .any(|line| line.trim().starts_with("AGE-SECRET-KEY-1"))
            {
                Check::new(
                    ID,
                    Level::Ok,
                    format!("{} holds an age key", file.display()),
                )
            } else {
                Check::new(
                    ID,
                    Level::Fail,
                    format!(
                        "{} holds no age key (no AGE-SECRET-KEY- line): no secret will decrypt",
                        file.display()
                    ),
                )
                .more(more)
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Check::new(
            ID,
            Level::Unknown,
            format!("cannot read {}: {err} (run as root)", file.display()),
        ),
        Err(err) => Check::new(
            ID,
            Level::Fail,
            format!(
                "cannot read {}: {err}: no secret will decrypt at the next activation",
                file.display()
            ),
        )
        .more(more),
    }
}

/// The generation the profile points at, when it was made, whether it is the one running, and
/// the repository revision the running system was built from.
fn generation(host: &Host) -> Check {
    const ID: &str = "host/generation";
    let profile = &host.system_profile;
    let link = match std::fs::read_link(profile) {
        Ok(link) => link,
        Err(err) => {
            return Check::new(
                ID,
                Level::Unknown,
                format!("cannot read {}: {err}", profile.display()),
            );
        }
    };
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let number = name
        .strip_prefix("system-")
        .and_then(|rest| rest.strip_suffix("-link"))
        .unwrap_or(&name)
        .to_owned();
    let built = std::fs::symlink_metadata(profile.with_file_name(&name))
        .and_then(|m| m.modified())
        .ok()
        .map(|time| match SystemTime::now().duration_since(time) {
            Ok(age) => format!(", built {} ago", ago(age)),
            Err(_) => ", built in the future (check the clock)".to_owned(),
        })
        .unwrap_or_default();
    let revision = std::fs::read_to_string(&host.revision_file)
        .map(|r| one_line(r.trim()))
        .unwrap_or_else(|err| format!("unknown ({}: {err})", host.revision_file.display()));
    let profile_target = std::fs::canonicalize(profile);
    let running = std::fs::canonicalize(&host.current_system);
    let message = format!("generation {number}{built}, source revision {revision}");
    match (profile_target, running) {
        (Ok(profile_target), Ok(running)) if profile_target != running => Check::new(
            ID,
            Level::Warn,
            format!(
                "{message}: built but not running (the running system is {}); switch or reboot",
                running.display()
            ),
        )
        .more("nixos-rebuild list-generations"),
        (_, Err(err)) => Check::new(
            ID,
            Level::Unknown,
            format!("cannot read {}: {err}", host.current_system.display()),
        ),
        _ => Check::new(ID, Level::Ok, message),
    }
}
