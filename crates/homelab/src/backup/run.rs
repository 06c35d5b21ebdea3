//! `homelab backup run`: for each source, make its captures, snapshot it, and keep the newest
//! good snapshot pinned so that retention can never take it.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Instant, SystemTime};

use clap::Args;
use serde::Serialize;

use super::capture::{self, Capture, Context};
use super::config::{BackupConfig, Source};
use super::state::{State, unix_now};
use super::{ConfigArg, LAST_GOOD_PIN, RUN_TAG, SOURCE_TAG, STAGING_DIR, Session, metrics, notify};
use crate::exit::ExitStatus;
use crate::kopia::{Kopia, KopiaError, Manifest, Policy, PolicyRetention};
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
    duration_seconds: f64,
    error: Option<String>,
}

pub fn run(config: &BackupConfig, cmd: &RunCmd) -> anyhow::Result<ExitStatus> {
    let selected = match super::select_sources(config, &cmd.sources) {
        Ok(selected) => selected,
        Err(status) => return Ok(status),
    };
    let session = Session::open(config, Some("backup run"))?;
    let retention = &config.retention;
    let wanted = PolicyRetention {
        keep_latest: Some(retention.keep_latest),
        keep_hourly: Some(retention.keep_hourly),
        keep_daily: Some(retention.keep_daily),
        keep_weekly: Some(retention.keep_weekly),
        keep_monthly: Some(retention.keep_monthly),
        keep_annual: Some(retention.keep_annual),
    };
    // Two calls for the whole run, instead of several per source: kopia's start-up (opening
    // the repository) costs about as much as an unchanged source's snapshot.
    let policies = session.kopia.policies()?;
    let global = policies.iter().find(|p| p.target.path.is_empty());
    if global.map(|p| &p.retention) != Some(&wanted) {
        session.kopia.set_global_retention(&wanted)?;
        tracing::info!("retention policy updated");
    }
    let snapshots = session.kopia.all_snapshots()?;
    let known = Known {
        policies: &policies,
        snapshots: &snapshots,
    };
    let run_id = run_id(SystemTime::now());
    tracing::info!(run = %run_id, sources = selected.len(), "backup run starting");
    let progress = logging::interactive().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut reports = Vec::new();
    for source in selected {
        if let Some(bar) = &progress {
            bar.set_message(format!("{}: capturing and snapshotting", source.name()));
        }
        let report = if session.cancel.is_cancelled() {
            failed(
                source,
                Instant::now(),
                "not started: interrupted by a signal".into(),
            )
        } else {
            back_up(&session, source, &run_id, &known)
        };
        match &report.error {
            None => tracing::info!(source = %report.name, bytes = report.bytes, "source backed up"),
            Some(err) => tracing::error!(source = %report.name, "source failed: {err}"),
        }
        reports.push(report);
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let report = RunReport {
        ok: reports.iter().all(|r| r.ok),
        run_id,
        sources: reports,
    };
    record(config, &report)?;
    print(&report, cmd.json)?;
    if report.ok {
        Ok(ExitStatus::Success)
    } else {
        let detail: Vec<String> = report
            .sources
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
            .collect();
        notify::failure(config, "backup run", &detail.join("\n"));
        Ok(ExitStatus::Failure)
    }
}

/// `20261126T023000Z`: sortable, and usable as a kopia tag value.
fn run_id(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "")
}

/// What the repository held when the run started.
struct Known<'a> {
    policies: &'a [Policy],
    snapshots: &'a [Manifest],
}

fn back_up(session: &Session, source: &Source, run_id: &str, known: &Known<'_>) -> SourceReport {
    let started = Instant::now();
    match capture_and_snapshot(session, source, run_id, known) {
        Ok((manifest, warning)) => {
            let summary = manifest.summary();
            SourceReport {
                name: source.name().to_owned(),
                path: source.path().display().to_string(),
                ok: warning.is_none(),
                snapshot_id: Some(manifest.id),
                bytes: summary.size,
                files: summary.files,
                duration_seconds: started.elapsed().as_secs_f64(),
                error: warning,
            }
        }
        Err(err) => failed(source, started, err),
    }
}

fn failed(source: &Source, started: Instant, error: String) -> SourceReport {
    SourceReport {
        name: source.name().to_owned(),
        path: source.path().display().to_string(),
        ok: false,
        snapshot_id: None,
        bytes: 0,
        files: 0,
        duration_seconds: started.elapsed().as_secs_f64(),
        error: Some(error),
    }
}

/// The good snapshot and, when the snapshot is good but an after-step (restarting the app)
/// failed, that failure. `Err` means there is no new good snapshot.
fn capture_and_snapshot(
    session: &Session,
    source: &Source,
    run_id: &str,
    known: &Known<'_>,
) -> Result<(Manifest, Option<String>), String> {
    let kopia = &session.kopia;
    let path = source.path();
    if !path.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    let previous_pins = pin_last_good(kopia, path, known.snapshots).map_err(|e| e.to_string())?;
    let want = source.ignore_rules();
    let have = known
        .policies
        .iter()
        .find(|p| Path::new(&p.target.path) == path)
        .map(|p| p.files.ignore.clone())
        .unwrap_or_default();
    if !same_rules(&have, &want) {
        kopia
            .set_ignore_rules(path, &have, &want)
            .map_err(|e| e.to_string())?;
    }
    let staging = source.staging_dir();
    remove_staging(&staging)?;
    let captures = capture::for_source(source);
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
    let mut begun: Vec<&dyn Capture> = Vec::new();
    let mut outcome: Result<Manifest, String> = (|| {
        for capture in &captures {
            begun.push(capture.as_ref());
            capture
                .before(&cx)
                .map_err(|e| format!("{} capture failed: {e}", capture.kind()))?;
        }
        if session.cancel.is_cancelled() {
            return Err("interrupted by a signal".to_owned());
        }
        let tags = [(RUN_TAG, run_id), (SOURCE_TAG, source.name())];
        let description = format!("homelab backup run {run_id}");
        // Pinned from birth: kopia applies retention right after saving it. Should it turn out
        // not to be good it is deleted below, pin and all.
        kopia
            .snapshot_create(path, &tags, LAST_GOOD_PIN, &description)
            .map_err(|e| format!("kopia snapshot failed: {e}"))
    })();
    let mut after_errors = Vec::new();
    for capture in begun.iter().rev() {
        if let Err(err) = capture.after(&cx) {
            after_errors.push(format!("{} after-step failed: {err}", capture.kind()));
        }
    }
    if let Err(err) = remove_staging(&staging) {
        after_errors.push(err);
    }
    if let Ok(manifest) = &outcome
        && !manifest.is_clean()
    {
        outcome = Err(format!(
            "kopia snapshot {} is incomplete or has errors",
            manifest.id
        ));
    }
    match outcome {
        Ok(manifest) => {
            if !previous_pins.is_empty() {
                let ids: Vec<&str> = previous_pins.iter().map(String::as_str).collect();
                kopia
                    .unpin(&ids, LAST_GOOD_PIN)
                    .map_err(|e| format!("snapshot {} is good, but: {e}", manifest.id))?;
            }
            Ok((
                manifest,
                (!after_errors.is_empty()).then(|| after_errors.join("; ")),
            ))
        }
        Err(err) => {
            discard_run_snapshots(kopia, path, run_id);
            after_errors.insert(0, err);
            Err(after_errors.join("; "))
        }
    }
}

/// Before anything can run retention on this source, its newest good snapshot carries the pin
/// (repositories written before the pin existed get it here). Returns the IDs holding the pin.
fn pin_last_good(
    kopia: &Kopia,
    path: &Path,
    snapshots: &[Manifest],
) -> Result<Vec<String>, KopiaError> {
    let ours: Vec<&Manifest> = snapshots
        .iter()
        .filter(|m| Path::new(&m.source.path) == path)
        .collect();
    let pinned: Vec<String> = ours
        .iter()
        .filter(|m| m.pins.iter().any(|p| p == LAST_GOOD_PIN))
        .map(|m| m.id.clone())
        .collect();
    if !pinned.is_empty() {
        return Ok(pinned);
    }
    let Some(newest) = ours.iter().rev().find(|m| m.is_clean()) else {
        return Ok(Vec::new());
    };
    kopia.pin(&newest.id, LAST_GOOD_PIN)?;
    // Pinning rewrites the manifest under a new ID.
    Ok(kopia
        .snapshots(path)?
        .into_iter()
        .filter(|m| m.pins.iter().any(|p| p == LAST_GOOD_PIN))
        .map(|m| m.id)
        .collect())
}

fn same_rules(have: &[String], want: &[String]) -> bool {
    let mut have = have.to_vec();
    have.sort();
    have == want
}

/// Deletes whatever this run left for the source (kopia saves snapshots that had fatal errors),
/// so that no failed capture leaves a snapshot that looks good.
fn discard_run_snapshots(kopia: &Kopia, path: &Path, run_id: &str) {
    let snapshots = match kopia.snapshots(path) {
        Ok(snapshots) => snapshots,
        Err(err) => {
            tracing::warn!(
                "cannot list snapshots of {} to discard: {err}",
                path.display()
            );
            return;
        }
    };
    for manifest in snapshots.iter().filter(|m| m.tag(RUN_TAG) == Some(run_id)) {
        match kopia.delete_snapshot(&manifest.id) {
            Ok(()) => {
                tracing::warn!(snapshot = %manifest.id, "discarded the failed run's snapshot")
            }
            Err(err) => tracing::error!(snapshot = %manifest.id, "cannot discard: {err}"),
        }
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
    state.save(state_dir)?;
    metrics::write(config, &state)
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
        let t = UNIX_EPOCH + Duration::from_secs(1_795_660_200);
        assert_eq!(super::run_id(t), "20261126T023000Z");
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
    }
}
