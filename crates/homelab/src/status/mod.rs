//! `homelab status`: the whole homelab on one screen — host, cluster, tunnel, backups and the
//! clients that back up into it — each line ok / warn / fail / unknown, what is wrong and the
//! command that shows more. Every part runs at once and is given the same deadline: a part that
//! has not answered by then (an API server that freezes, a disk that hangs) is shown as
//! unknown with that reason, so the whole answer always comes within ten seconds.
//! `--notify` turns changes into messages (alerts.rs); `--summary` sends the daily summary.

mod alerts;
mod backups;
mod cluster;
mod config;
mod host;
mod tunnel;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use serde::Serialize;

use crate::env_vars;
use crate::exit::ExitStatus;
use config::StatusConfig;

/// Each part gives up on what it waits for by then and reports why; the rest of the ten
/// seconds is for printing and for `--notify` (the messages have their own bounds).
const PART_DEADLINE: Duration = Duration::from_secs(8);
/// A part that has not reported this long after its deadline (stuck where it cannot be
/// interrupted, as in a hung `statvfs`) is reported unknown without it.
const STRAGGLER_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct StatusCmd {
    /// Status configuration file (TOML), written by the host's NixOS module.
    #[arg(
        long,
        env = env_vars::HOMELAB_STATUS_CONFIG,
        value_name = "FILE",
        default_value = "/etc/homelab/status.toml"
    )]
    pub config: PathBuf,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Send a message for every check that changed state since the last `--notify` run.
    #[arg(long)]
    pub notify: bool,
    /// Send the daily summary: "all ok", or what is not.
    #[arg(long)]
    pub summary: bool,
}

/// How a check stands. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
    /// The check could not be made (part unreachable, did not answer in time).
    Unknown,
}

impl Level {
    /// What alerts are sent for: a warning is shown and summarised, never pushed.
    pub fn is_bad(self) -> bool {
        matches!(self, Level::Fail | Level::Unknown)
    }

    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

/// One line of the status.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `<part>/<what>`, stable from run to run (alerts are kept per id).
    pub id: String,
    pub level: Level,
    pub message: String,
    /// The command that shows more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more: Option<String>,
}

impl Check {
    pub fn new(id: impl Into<String>, level: Level, message: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            level,
            message: message.into(),
            more: None,
        }
    }

    pub fn more(mut self, command: impl Into<String>) -> Self {
        self.more = Some(command.into());
        self
    }

    /// The part this check belongs to (`cluster` of `cluster/pods/immich`).
    pub fn part(&self) -> &str {
        self.id.split('/').next().unwrap_or(&self.id)
    }
}

#[derive(Debug, Serialize)]
struct Report {
    host: String,
    ok: bool,
    counts: Counts,
    checks: Vec<Check>,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    ok: usize,
    warn: usize,
    fail: usize,
    unknown: usize,
}

type Part = Box<dyn FnOnce(Instant) -> Vec<Check> + Send>;

pub fn run(cmd: &StatusCmd) -> ExitStatus {
    let config = match StatusConfig::load(&cmd.config) {
        Ok(config) => config,
        Err(err) => {
            err.report();
            return ExitStatus::Error;
        }
    };
    let checks = gather(&config, Instant::now() + PART_DEADLINE);
    let report = report(checks);
    if cmd.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(err) => {
                eprintln!("error: cannot render the status as JSON: {err}");
                return ExitStatus::Error;
            }
        }
    } else {
        print(&report);
    }
    if cmd.notify {
        alerts::notify(&config, &report.checks, SystemTime::now());
    }
    if cmd.summary {
        alerts::summary(&config, &report.checks);
    }
    if report.ok {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

/// Runs every configured part on its own thread and collects what has come back by `deadline`.
/// A part that has not answered is one unknown line; its thread (and any child it waits for,
/// which dies with us through its parent-death signal) is abandoned.
fn gather(config: &StatusConfig, deadline: Instant) -> Vec<Check> {
    // Each part: its name, the ids it answers for when it does not answer at all, the work.
    let mut parts: Vec<(&'static str, Vec<String>, Part)> = Vec::new();
    if let Some(host) = &config.host {
        let files = host.clone();
        let mut covers = vec!["host/age-key".to_owned(), "host/generation".to_owned()];
        covers.extend(
            host.disks
                .iter()
                .map(|d| format!("host/disk:{}", d.path.get_ref().display())),
        );
        parts.push(("host", covers, Box::new(move |_| host::files(&files))));
        let systemd = host.clone();
        parts.push((
            "host-systemd",
            host::SYSTEMD_IDS.map(str::to_owned).to_vec(),
            Box::new(move |deadline| host::systemd(&systemd, deadline)),
        ));
    }
    if let Some(cluster) = &config.cluster {
        let kubeconfig = cluster.kubeconfig.clone();
        parts.push((
            "cluster",
            vec!["cluster".to_owned()],
            Box::new(move |deadline| cluster::check(&kubeconfig, deadline)),
        ));
    }
    if let Some(tunnel) = &config.tunnel {
        let url = tunnel.metrics_url.get_ref().clone();
        let expected = tunnel.expected_connections;
        parts.push((
            "tunnel",
            vec!["tunnel".to_owned()],
            Box::new(move |deadline| tunnel::check(&url, expected, deadline)),
        ));
    }
    if let Some(backup) = &config.backup {
        let file = backup.config.clone();
        let clients: Vec<(String, Duration)> = config
            .clients
            .iter()
            .map(|c| (c.name.get_ref().clone(), c.rpo))
            .collect();
        // The clients are read from the backup repository, by the backup part.
        let mut covers = vec!["backup".to_owned()];
        if !clients.is_empty() {
            covers.push("client".to_owned());
        }
        parts.push((
            "backup",
            covers,
            Box::new(move |deadline| backups::check(&file, &clients, deadline)),
        ));
    }
    let (sender, receiver) = mpsc::channel();
    let mut waiting: Vec<&'static str> = Vec::new();
    let mut checks = Vec::new();
    let mut covers_of: Vec<(&'static str, Vec<String>)> = Vec::new();
    for (name, covers, part) in parts {
        covers_of.push((name, covers));
        let sender = sender.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("status-{name}"))
            .spawn(move || {
                let checks = part(deadline);
                let _ = sender.send((name, checks));
            });
        match spawned {
            Ok(_) => waiting.push(name),
            Err(err) => checks.push(Check::new(
                name,
                Level::Unknown,
                format!("cannot start a thread: {err}"),
            )),
        }
    }
    drop(sender);
    let collect_until = deadline + STRAGGLER_GRACE;
    while !waiting.is_empty() {
        let left = collect_until.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok((name, part_checks)) => {
                waiting.retain(|w| *w != name);
                checks.extend(part_checks);
            }
            Err(_) => break,
        }
    }
    for name in waiting {
        let reason = format!(
            "did not answer within {} s (hung disk, frozen server?)",
            (PART_DEADLINE + STRAGGLER_GRACE).as_secs()
        );
        for (part, covers) in &covers_of {
            if *part == name {
                checks.extend(
                    covers
                        .iter()
                        .map(|id| Check::new(id.clone(), Level::Unknown, reason.clone())),
                );
            }
        }
    }
    let order = |c: &Check| {
        ["host", "cluster", "tunnel", "backup", "client"]
            .iter()
            .position(|p| *p == c.part())
            .unwrap_or(usize::MAX)
    };
    checks.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.id.cmp(&b.id)));
    checks
}

fn report(checks: Vec<Check>) -> Report {
    let mut counts = Counts::default();
    for check in &checks {
        match check.level {
            Level::Ok => counts.ok += 1,
            Level::Warn => counts.warn += 1,
            Level::Fail => counts.fail += 1,
            Level::Unknown => counts.unknown += 1,
        }
    }
    Report {
        host: crate::notify::host_name(),
        ok: counts.fail == 0 && counts.unknown == 0,
        counts,
        checks,
    }
}

fn print(report: &Report) {
    let width = report
        .checks
        .iter()
        .map(|c| c.id.chars().count())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        println!(
            "{:<7} {:<width$}  {}",
            check.level.label(),
            check.id,
            one_line(&check.message)
        );
        if check.level != Level::Ok
            && let Some(more) = &check.more
        {
            println!("{:<7} {:<width$}  more: {more}", "", "");
        }
    }
    let c = &report.counts;
    println!(
        "{}: {} ok, {} warn, {} failed, {} unknown",
        report.host, c.ok, c.warn, c.fail, c.unknown
    );
}

/// Runs a part's program (output captured) for at most `left`; one still running then is
/// reported as `frozen`, in the owner's words.
pub fn run_within(
    command: &mut std::process::Command,
    left: Duration,
    frozen: &str,
) -> Result<crate::process::Finished, String> {
    crate::process::run(
        command,
        &crate::process::Cancel::default(),
        Some(left),
        true,
    )
    .map_err(|err| match err {
        crate::process::ProcessError::TimedOut { .. } => frozen.to_owned(),
        other => other.to_string(),
    })
}

/// Messages come from other programs (Flux, kubectl, kopia): never let them move the cursor
/// or break the one-line layout.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// "3h 12m" for a duration, to the minute (seconds when under a minute).
pub fn ago(duration: Duration) -> String {
    let secs = duration.as_secs();
    let rounded = if secs < 60 { secs } else { secs - secs % 60 };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn foreign_text_is_one_printable_line() {
        assert_eq!(
            super::one_line("a\x1b[31mred\x1b[0m\nnext\tline\u{7}"),
            "a [31mred [0m next line"
        );
    }
}
