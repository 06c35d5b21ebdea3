//! `homelab backup drill`: restores each source's last good snapshot into a temporary folder and
//! checks what came back: file count and bytes against the snapshot, SQLite copies with
//! `PRAGMA integrity_check`, dumps present and complete.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::capture;
use super::config::{BackupConfig, Source};
use super::state::State;
use super::{ConfigArg, STAGING_DIR, Session, last_good};
use crate::clock::unix_now;
use crate::exit::ExitStatus;
use crate::kopia::Manifest;

#[derive(Debug, Args)]
pub struct DrillCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Drill only this source; repeat for several. Default: all.
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Restore into this new folder and keep it, instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct DrillReport {
    ok: bool,
    sources: Vec<SourceDrill>,
}

#[derive(Debug, Serialize)]
struct SourceDrill {
    name: String,
    ok: bool,
    snapshot_id: Option<String>,
    restored_to: Option<String>,
    files: u64,
    bytes: u64,
    checks: Vec<String>,
    error: Option<String>,
}

pub fn run(config: &BackupConfig, cmd: &DrillCmd) -> anyhow::Result<ExitStatus> {
    let selected = match super::select_sources(config, &cmd.sources) {
        Ok(selected) => selected,
        Err(status) => return Ok(status),
    };
    if let Some(keep) = &cmd.keep
        && keep.exists()
    {
        eprintln!(
            "error: --keep {}: the folder already exists",
            keep.display()
        );
        return Ok(ExitStatus::Error);
    }
    let session = Session::open(config, Some("backup drill"), config.time_limit.drill)?;
    let snapshots = session.kopia.all_snapshots()?;
    // A drill proves the repository, not kopia's local cache of it.
    session.kopia.clear_cache()?;
    // The temporary folder is removed on every way out, a signal included (the restore is stopped
    // through the cancel flag and this function returns normally).
    let temp;
    let root = match &cmd.keep {
        Some(keep) => {
            std::fs::create_dir_all(keep)
                .with_context(|| format!("cannot create {}", keep.display()))?;
            keep.clone()
        }
        None => {
            let state_dir = config.state_dir.get_ref();
            std::fs::create_dir_all(state_dir)?;
            temp = tempfile::Builder::new()
                .prefix("drill-")
                .tempdir_in(state_dir)
                .context("cannot create the drill folder")?;
            temp.path().to_owned()
        }
    };
    let mut results = Vec::new();
    for source in selected {
        let target = root.join(source.name());
        let result = match drill(&session, &snapshots, source, &target) {
            Ok(result) => result,
            Err(err) => SourceDrill {
                name: source.name().to_owned(),
                ok: false,
                snapshot_id: None,
                restored_to: None,
                files: 0,
                bytes: 0,
                checks: Vec::new(),
                error: Some(format!("{err:#}")),
            },
        };
        results.push(result);
    }
    let report = DrillReport {
        ok: results.iter().all(|r| r.ok),
        sources: results,
    };
    print(&report, cmd.json)?;
    let mut problems: Vec<String> = report
        .sources
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
        .collect();
    // The restores filled kopia's cache; it is not kept (the state dir may be short of room).
    if let Err(err) = session.kopia.for_cleanup().clear_cache() {
        tracing::warn!("cannot clear kopia's cache after the drill: {err}");
    }
    if let Err(err) = record(config, &report) {
        tracing::error!("{err:#}");
        problems.push(format!("{err:#}"));
    }
    if problems.is_empty() {
        Ok(ExitStatus::Success)
    } else {
        crate::notify::failure(&config.notify, "backup drill", &problems.join("\n"));
        Ok(ExitStatus::Failure)
    }
}

/// Each drilled source's outcome becomes part of the state: `status` and the metrics show it.
fn record(config: &BackupConfig, report: &DrillReport) -> anyhow::Result<()> {
    let mut state = State::load(config.state_dir.get_ref());
    let now = unix_now();
    for r in &report.sources {
        let entry = state.sources.entry(r.name.clone()).or_default();
        entry.last_drill = Some(now);
        entry.last_drill_ok = Some(r.ok);
    }
    super::metrics::publish(config, &state, "drill")
}

fn drill(
    session: &Session,
    snapshots: &[Manifest],
    source: &Source,
    target: &Path,
) -> anyhow::Result<SourceDrill> {
    let manifest = last_good(snapshots, source.path())
        .with_context(|| format!("no good snapshot of {}", source.path().display()))?;
    tracing::info!(source = source.name(), snapshot = %manifest.id, "restoring");
    session.kopia.restore(&manifest.id, target)?;
    let checked = check_tree(source, manifest, target)?;
    Ok(SourceDrill {
        name: source.name().to_owned(),
        ok: checked.problems.is_empty(),
        snapshot_id: Some(manifest.id.clone()),
        restored_to: Some(target.display().to_string()),
        files: checked.files,
        bytes: checked.bytes,
        error: (!checked.problems.is_empty()).then(|| checked.problems.join("; ")),
        checks: checked.checks,
    })
}

/// What checking a restored tree found.
pub(crate) struct TreeCheck {
    pub files: u64,
    pub bytes: u64,
    /// What passed, for the report.
    pub checks: Vec<String>,
    /// What did not; empty when the tree is good.
    pub problems: Vec<String>,
}

/// Checks a freshly restored snapshot at `root`: file count, bytes and symlinks equal the
/// snapshot's (names kopia could not keep apart show up here), and each capture's own check of
/// its files (SQLite integrity, dumps complete).
pub(crate) fn check_tree(
    source: &Source,
    manifest: &Manifest,
    root: &Path,
) -> anyhow::Result<TreeCheck> {
    let expected = manifest.summary();
    let found = tally(root)?;
    let mut checks = vec![format!(
        "{} files, {} bytes, {} symlinks as in the snapshot",
        found.files, found.bytes, found.symlinks
    )];
    let mut problems = Vec::new();
    if (found.files, found.bytes, found.symlinks)
        != (expected.files, expected.size, expected.symlinks)
    {
        problems.push(format!(
            "restored {} files / {} bytes / {} symlinks, the snapshot has {} / {} / {}",
            found.files,
            found.bytes,
            found.symlinks,
            expected.files,
            expected.size,
            expected.symlinks
        ));
        checks.clear();
    }
    let staging = root.join(STAGING_DIR);
    for capture in capture::for_source(source) {
        match capture.check_restored(&staging) {
            Ok(done) => checks.extend(done),
            Err(err) => problems.push(format!("{} check: {err}", capture.kind())),
        }
    }
    Ok(TreeCheck {
        files: found.files,
        bytes: found.bytes,
        checks,
        problems,
    })
}

#[derive(Debug, Default)]
struct Tally {
    files: u64,
    bytes: u64,
    symlinks: u64,
}

fn tally(root: &Path) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_symlink() {
                tally.symlinks += 1;
            } else if kind.is_file() {
                tally.files += 1;
                tally.bytes += entry.metadata()?.len();
            }
        }
    }
    Ok(tally)
}

fn print(report: &DrillReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for r in &report.sources {
        match &r.error {
            None => {
                println!(
                    "  ok    {:<12} snapshot {}",
                    r.name,
                    r.snapshot_id.as_deref().unwrap_or("?")
                );
                for check in &r.checks {
                    println!("          {check}");
                }
            }
            Some(err) => println!("  FAIL  {:<12} {err}", r.name),
        }
    }
    Ok(())
}
