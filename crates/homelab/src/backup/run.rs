//! `homelab backup run`: make each source's captures, snapshot the sources, and keep each
//! source's newest good snapshot pinned so that retention can never take it.
//!
//! Sources without a quiesce step are snapshotted together by one kopia process (kopia's
//! start-up costs about as much as an unchanged source's snapshot); a quiesced source gets a
//! kopia process of its own so that its app is down only for its own snapshot.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use clap::Args;
use serde::Serialize;

use super::capture::{self, Capture, Context};
use super::config::{BackupConfig, Source};
use super::state::State;
use super::{ConfigArg, LAST_GOOD_PIN, RUN_TAG, STAGING_DIR, Session, last_good, of_source};
use crate::clock::unix_now;
use crate::exit::ExitStatus;
use crate::kopia::{Kopia, KopiaError, Manifest, Policy};
use crate::logging;

#[derive(Debug, Args)]
pub struct RunCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Back up only this source (by name); repeat for several. Default: all.
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct RunReport {
    run_id: String,
    ok: bool,
    sources: Vec<SourceReport>,
}

#[derive(Debug, Serialize)]
struct SourceReport {
    name: String,
    path: String,
    ok: bool,
    snapshot_id: Option<String>,
    bytes: u64,
    files: u64,
    /// From the start of the source's captures to the end of its snapshot.
    duration_seconds: f64,
    error: Option<String>,
}

/// A source between its captures and its snapshot.
struct Pending<'a> {
    source: &'a Source,
    captures: Vec<Box<dyn Capture + 'a>>,
    /// How many captures were started: their after-steps must run.
    begun: usize,
    started: Instant,
    /// Snapshots holding the pin before this run; released once the new one is good.
    previous_pins: Vec<String>,
    error: Option<String>,
}

pub fn run(config: &BackupConfig, cmd: &RunCmd) -> anyhow::Result<ExitStatus> {
    let selected = match super::select_sources(config, &cmd.sources) {
        Ok(selected) => selected,
        Err(status) => return Ok(status),
    };
    let session = Session::open(config, Some("backup run"), config.time_limit.run)?;
    let policies = session.kopia.policies()?;
    ensure_retention(&session.kopia, config, &policies)?;
    ensure_ignore_rules(&session.kopia, &selected, &policies)?;
    let snapshots = session.kopia.all_snapshots()?;
    let run_id = run_id(SystemTime::now());
    tracing::info!(run = %run_id, sources = selected.len(), "backup run starting");
    let progress = logging::interactive().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let say = |message: String| {
        if let Some(bar) = &progress {
            bar.set_message(message);
        }
    };

    let (together, alone): (Vec<&Source>, Vec<&Source>) =
        selected.iter().partition(|s| s.quiesce.is_none());
    let mut reports = Vec::new();
    let mut batch = Vec::new();
    for source in together {
        say(format!("{}: capturing", source.name()));
        batch.push(prepare(&session, source, &snapshots));
    }
    say("snapshotting".to_owned());
    reports.extend(snapshot_and_finish(&session, batch, &run_id, None));
    for source in alone {
        say(format!(
            "{}: stopped, capturing and snapshotting",
            source.name()
        ));
        let pending = prepare(&session, source, &snapshots);
        let timeout = source.quiesce.as_ref().map(|q| q.snapshot_timeout);
        reports.extend(snapshot_and_finish(
            &session,
            vec![pending],
            &run_id,
            timeout,
        ));
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    settle_pins(&session.kopia.for_cleanup(), &reports, &run_id);
    let order: Vec<&str> = selected.iter().map(|s| s.name()).collect();
    reports.sort_by_key(|(r, _)| order.iter().position(|n| *n == r.name));
    let report = RunReport {
        ok: reports.iter().all(|(r, _)| r.ok),
        run_id,
        sources: reports.into_iter().map(|(r, _)| r).collect(),
    };
    for r in &report.sources {
        match &r.error {
            None => tracing::info!(source = %r.name, bytes = r.bytes, "source backed up"),
            Some(err) => tracing::error!(source = %r.name, "source failed: {err}"),
        }
    }
    // The report comes first: whatever happens to the state or metrics files, the operator
    // learns what was backed up.
    print(&report, cmd.json)?;
    let mut problems: Vec<String> = report
        .sources
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
        .collect();
    if let Err(err) = record(config, &report) {
        tracing::error!("{err:#}");
        problems.push(format!("{err:#}"));
    }
    if problems.is_empty() {
        return Ok(ExitStatus::Success);
    }
    let outcome: Vec<String> = report.sources.iter().map(outcome_line).collect();
    crate::notify::failure(
        &config.notify,
        "backup run",
        &format!(
            "{}\n\nthis run:\n{}",
            problems.join("\n"),
            outcome.join("\n")
        ),
    );
    Ok(ExitStatus::Failure)
}

/// One line per source for notifications: what this run did with it.
fn outcome_line(r: &SourceReport) -> String {
    match (&r.snapshot_id, &r.error) {
        (Some(id), _) => format!(
            "  {}: snapshot {id}, {} in {} files",
            r.name,
            human_bytes(r.bytes),
            r.files
        ),
        (None, _) => format!("  {}: no snapshot (previous last good kept)", r.name),
    }
}

/// `20261126T023000.123Z-4821`: sortable, usable as a kopia tag value, and unique even for two
/// runs started within the same second (the discard step deletes by this tag).
fn run_id(now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(now)
        .to_string()
        .replace(['-', ':'], "");
    format!("{stamp}-{}", std::process::id())
}

fn ensure_retention(
    kopia: &Kopia,
    config: &BackupConfig,
    policies: &[Policy],
) -> Result<(), KopiaError> {
    let wanted = config.retention.policy();
    let global = policies.iter().find(|p| p.target.path.is_empty());
    if global.map(|p| &p.retention) != Some(&wanted) {
        kopia.set_global_retention(&wanted)?;
        tracing::info!("retention policy updated");
    }
    Ok(())
}

/// Each source's own policy holds exactly its ignore rules; rewritten only where they differ.
fn ensure_ignore_rules(
    kopia: &Kopia,
    sources: &[&Source],
    policies: &[Policy],
) -> Result<(), KopiaError> {
    let stale: Vec<(&Path, Vec<String>)> = sources
        .iter()
        .map(|s| (s.path(), s.ignore_rules()))
        .filter(|(path, want)| {
            let have = policies
                .iter()
                .find(|p| Path::new(&p.target.path) == *path)
                .map(|p| p.files.ignore.as_slice())
                .unwrap_or_default();
            have != want.as_slice()
        })
        .collect();
    if !stale.is_empty() {
        kopia.set_ignore_rules(&stale)?;
        tracing::info!(sources = stale.len(), "ignore rules updated");
    }
    Ok(())
}

/// Pins, ignore rules, a fresh staging folder, then the captures that come before the snapshot.
fn prepare<'a>(session: &Session, source: &'a Source, snapshots: &[Manifest]) -> Pending<'a> {
    let mut pending = Pending {
        source,
        captures: capture::for_source(source),
        begun: 0,
        started: Instant::now(),
        previous_pins: Vec::new(),
        error: None,
    };
    if let Err(err) = prepare_steps(session, &mut pending, snapshots) {
        pending.error = Some(err);
    }
    pending
}

fn prepare_steps(
    session: &Session,
    pending: &mut Pending<'_>,
    snapshots: &[Manifest],
) -> Result<(), String> {
    let source = pending.source;
    let path = source.path();
    if !path.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    pending.previous_pins =
        pin_last_good(&session.kopia, path, snapshots).map_err(|e| e.to_string())?;
    let staging = source.staging_dir();
    remove_staging(&staging)?;
    if source.sqlite.is_some() || source.dump.is_some() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    }
    let cx = Context {
        source: path,
        staging: &staging,
        cancel: &session.cancel,
    };
    for capture in &pending.captures {
        if session.cancel.is_cancelled() {
            return Err(format!("stopped: {}", session.cancel.reason()));
        }
        pending.begun += 1;
        capture
            .before(&cx)
            .map_err(|e| format!("{} capture failed: {e}", capture.kind()))?;
    }
    Ok(())
}

/// One kopia process for every source whose captures succeeded, then each source's after-steps
/// (always), staging removal, and its report.
fn snapshot_and_finish(
    session: &Session,
    batch: Vec<Pending<'_>>,
    run_id: &str,
    timeout: Option<std::time::Duration>,
) -> Vec<(SourceReport, Vec<String>)> {
    let ready: Vec<&Path> = batch
        .iter()
        .filter(|p| p.error.is_none())
        .map(|p| p.source.path())
        .collect();
    let mut made: HashMap<PathBuf, Manifest> = HashMap::new();
    let mut failure = None;
    if !ready.is_empty() {
        if session.cancel.is_cancelled() {
            failure = Some(format!("stopped: {}", session.cancel.reason()));
        } else {
            // Pinned from birth: kopia applies retention right after saving a snapshot. One that
            // turns out not to be good is deleted afterwards, pin and all.
            let (manifests, status) = session.kopia.snapshot_create(
                &ready,
                &[(RUN_TAG, run_id)],
                Some(LAST_GOOD_PIN),
                &format!("homelab backup run {run_id}"),
                timeout,
            );
            made = manifests
                .into_iter()
                .map(|m| (PathBuf::from(&m.source.path), m))
                .collect();
            failure = status.err().map(|e| e.to_string());
        }
    }
    batch
        .into_iter()
        .map(|pending| {
            let snapshot = match (&pending.error, made.remove(pending.source.path())) {
                (Some(err), _) => Err(err.clone()),
                (None, Some(m)) if m.is_clean() => Ok(m),
                (None, Some(m)) => Err(format!(
                    "kopia snapshot {} is incomplete or has errors: {}",
                    m.id,
                    failure.as_deref().unwrap_or("no detail")
                )),
                (None, None) => Err(format!(
                    "kopia made no snapshot: {}",
                    failure.as_deref().unwrap_or("no detail")
                )),
            };
            finish(session, pending, snapshot)
        })
        .collect()
}

/// Runs the after-steps of the captures that began, newest first, even after a failure or a
/// signal; removes staging; reports. Returns the report and the pins to release.
fn finish(
    session: &Session,
    pending: Pending<'_>,
    snapshot: Result<Manifest, String>,
) -> (SourceReport, Vec<String>) {
    let source = pending.source;
    let staging = source.staging_dir();
    let cx = Context {
        source: source.path(),
        staging: &staging,
        cancel: &session.cancel,
    };
    let mut after_errors = Vec::new();
    for capture in pending.captures[..pending.begun].iter().rev() {
        if let Err(err) = capture.after(&cx) {
            after_errors.push(format!("{} after-step failed: {err}", capture.kind()));
        }
    }
    if let Err(err) = remove_staging(&staging) {
        after_errors.push(err);
    }
    let mut report = SourceReport {
        name: source.name().to_owned(),
        path: source.path().display().to_string(),
        ok: false,
        snapshot_id: None,
        bytes: 0,
        files: 0,
        duration_seconds: pending.started.elapsed().as_secs_f64(),
        error: None,
    };
    match snapshot {
        Ok(manifest) => {
            let summary = manifest.summary();
            report.snapshot_id = Some(manifest.id);
            report.bytes = summary.size;
            report.files = summary.files;
            // A good snapshot whose after-step (restarting the app) failed still stands, but
            // the run fails so that someone looks.
            report.ok = after_errors.is_empty();
            report.error = (!after_errors.is_empty()).then(|| after_errors.join("; "));
            (report, pending.previous_pins)
        }
        Err(err) => {
            after_errors.insert(0, err);
            report.error = Some(after_errors.join("; "));
            (report, Vec::new())
        }
    }
}

/// Releases the pins the new good snapshots replace (one kopia call), and deletes whatever the
/// run left for failed sources (kopia saves snapshots that had fatal errors), so that no failed
/// capture leaves a snapshot that looks good.
fn settle_pins(kopia: &Kopia, reports: &[(SourceReport, Vec<String>)], run_id: &str) {
    let release: Vec<&str> = reports
        .iter()
        .flat_map(|(_, pins)| pins.iter().map(String::as_str))
        .collect();
    if !release.is_empty()
        && let Err(err) = kopia.unpin(&release, LAST_GOOD_PIN)
    {
        // The new snapshots are good and pinned; the old ones merely stay pinned a while longer.
        tracing::warn!("cannot release older pins: {err}");
    }
    let failed: Vec<&Path> = reports
        .iter()
        .filter(|(r, _)| r.snapshot_id.is_none())
        .map(|(r, _)| Path::new(&r.path))
        .collect();
    if failed.is_empty() {
        return;
    }
    let left = match kopia.all_snapshots() {
        Ok(snapshots) => snapshots,
        Err(err) => {
            tracing::error!("cannot list snapshots to discard the failed ones: {err}");
            return;
        }
    };
    for manifest in left
        .iter()
        .filter(|m| m.tag(RUN_TAG) == Some(run_id) && failed.contains(&Path::new(&m.source.path)))
    {
        match kopia.delete_snapshot(&manifest.id) {
            Ok(()) => {
                tracing::warn!(snapshot = %manifest.id, path = %manifest.source.path, "discarded a failed source's snapshot")
            }
            Err(err) => tracing::error!(snapshot = %manifest.id, "cannot discard: {err}"),
        }
    }
}

/// Before anything can run retention on this source, its newest good snapshot carries the pin
/// (repositories written before the pin existed get it here). Returns every ID holding the pin,
/// good or not: all are released once this run's snapshot is good.
fn pin_last_good(
    kopia: &Kopia,
    path: &Path,
    snapshots: &[Manifest],
) -> Result<Vec<String>, KopiaError> {
    let pinned = |ours: &mut dyn Iterator<Item = &Manifest>| -> Vec<String> {
        ours.filter(|m| m.is_pinned(LAST_GOOD_PIN))
            .map(|m| m.id.clone())
            .collect()
    };
    match last_good(snapshots, path) {
        Some(good) if !good.is_pinned(LAST_GOOD_PIN) => {
            kopia.pin(&good.id, LAST_GOOD_PIN)?;
            // Pinning rewrites the manifest under a new ID.
            Ok(pinned(&mut kopia.snapshots(path)?.iter()))
        }
        _ => Ok(pinned(&mut of_source(snapshots, path))),
    }
}

fn remove_staging(staging: &Path) -> Result<(), String> {
    debug_assert!(staging.ends_with(STAGING_DIR));
    match std::fs::remove_dir_all(staging) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(format!("cannot remove {}: {err}", staging.display())),
    }
}

/// Saves the state and rewrites the metrics file; tries both, reports every failure.
fn record(config: &BackupConfig, report: &RunReport) -> anyhow::Result<()> {
    let state_dir = config.state_dir.get_ref();
    let mut state = State::load(state_dir);
    let now = unix_now();
    for r in &report.sources {
        let entry = state.sources.entry(r.name.clone()).or_default();
        entry.last_attempt_ok = r.ok;
        if r.snapshot_id.is_some() {
            entry.last_success = Some(now);
            entry.bytes = r.bytes;
            entry.files = r.files;
            entry.duration_seconds = r.duration_seconds;
        }
    }
    super::metrics::publish(config, &state, "run")
}

fn print(report: &RunReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!("backup run {}", report.run_id);
    for r in &report.sources {
        match (&r.snapshot_id, &r.error) {
            (Some(id), None) => println!(
                "  ok    {:<12} {:>12} {:>8} files {:>8.1}s  snapshot {id}",
                r.name,
                human_bytes(r.bytes),
                r.files,
                r.duration_seconds
            ),
            (Some(id), Some(err)) => {
                println!("  WARN  {:<12} snapshot {id} is good, but: {err}", r.name)
            }
            (None, err) => println!(
                "  FAIL  {:<12} {}",
                r.name,
                err.as_deref().unwrap_or("failed")
            ),
        }
    }
    Ok(())
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn run_ids_are_compact_utc_timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_660_200_123);
        let pid = std::process::id();
        assert_eq!(super::run_id(t), format!("20261126T023000.123Z-{pid}"));
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
    }
}
