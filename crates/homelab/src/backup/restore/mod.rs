//! `homelab backup restore`: one source's snapshot back onto disk, from the local repository or
//! straight from the R2 mirror, either beside the live data (`--target`) or in its place
//! (`--in-place`).
//!
//! In place, nothing is deleted: the snapshot is restored and checked next to the live folder
//! first (the app keeps running meanwhile), then the app is stopped, the live folder is renamed
//! to `<path>.before-restore-<time>`, the restored one takes its name, and the app is started.
//! Every step is logged; a failure says what state things are in and how to roll back.

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use super::config::{BackupConfig, Source};
use super::drill::check_tree;
use super::offsite::Mirror;
use super::{ConfigArg, Job, STAGING_DIR, last_good, local_repository, repository_password};
use crate::exit::ExitStatus;
use crate::kopia::{Kopia, Manifest};
use crate::process::Cancel;

mod swap;
use swap::swap_in_place;

#[derive(Debug, Args)]
pub struct RestoreCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The source to restore (by name).
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Snapshot ID (default: the source's last good snapshot; from the mirror, the newest one
    /// that verifies).
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Where the snapshot comes from.
    #[arg(long, value_enum, default_value_t = From::Local)]
    pub from: From,
    /// Restore into this new (or empty) folder and touch nothing live.
    #[arg(long, value_name = "DIR", required_unless_present = "in_place")]
    pub target: Option<PathBuf>,
    /// Replace the live data: stop the app, set the current folder aside, put the snapshot in
    /// its place, load dumps, start the app.
    #[arg(long, conflicts_with = "target")]
    pub in_place: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum From {
    /// The local Kopia repository.
    Local,
    /// The R2 mirror, read-only and directly (the local repository is not needed).
    Offsite,
}

/// What the restore will do, decided before anything is touched.
struct Plan<'a> {
    source: &'a Source,
    /// Where kopia restores to: the target, or a sibling of the live folder.
    restore_to: PathBuf,
    /// In place: the live folder's new name.
    set_aside: Option<PathBuf>,
}

pub fn run(config: &BackupConfig, cmd: &RestoreCmd) -> anyhow::Result<ExitStatus> {
    let Some(source) = config.source(&cmd.source) else {
        let known: Vec<&str> = config.sources.iter().map(|s| s.name()).collect();
        eprintln!(
            "error: --source {}: no such source (configured: {})",
            cmd.source,
            known.join(", ")
        );
        return Ok(ExitStatus::Error);
    };
    let plan = match plan(config, cmd, source) {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitStatus::Error);
        }
    };
    print!("{}", describe(config, cmd, &plan));
    if cmd.dry_run {
        println!("dry run: nothing was changed");
        return Ok(ExitStatus::Success);
    }
    match execute(config, cmd, &plan) {
        Ok(summary) => {
            println!("{summary}");
            Ok(ExitStatus::Success)
        }
        Err(err) => {
            let text = format!("{err:#}");
            eprintln!("error: restore of {} failed:\n{text}", source.name());
            crate::notify::failure(
                &config.notify,
                "backup restore",
                &format!("{}: {text}", source.name()),
            );
            Ok(ExitStatus::Failure)
        }
    }
}

/// Refuses what must never happen (exit 2): a target inside the repository or a live source, an
/// in-place restore of an app nobody said how to stop, a dump nobody said how to load.
fn plan<'a>(
    config: &BackupConfig,
    cmd: &RestoreCmd,
    source: &'a Source,
) -> anyhow::Result<Plan<'a>> {
    if cmd.from == From::Offsite {
        super::offsite::target(config).context("--from offsite")?;
    }
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    if cmd.in_place {
        if source.restore_stop().is_none() {
            bail!(
                "--in-place: source {} has no [source.restore] stop commands and no quiesce \
                 step, so its app cannot be stopped (write `stop = []` when nothing runs on it)",
                source.name()
            );
        }
        if source.dump.is_some()
            && source
                .restore
                .as_ref()
                .is_none_or(|r| r.load_dump.is_none())
        {
            bail!(
                "--in-place: source {} has a dump but no restore.load-dump command to load it",
                source.name()
            );
        }
        let path = source.path();
        let sibling = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{suffix}-{stamp}"));
            PathBuf::from(name)
        };
        return Ok(Plan {
            source,
            restore_to: sibling("restoring"),
            set_aside: Some(sibling("before-restore")),
        });
    }
    let target = cmd
        .target
        .as_ref()
        .context("give --target DIR or --in-place")?;
    let target = resolve(target).with_context(|| format!("--target {}", target.display()))?;
    let repository = resolve(config.repository.path.get_ref())?;
    if target.starts_with(&repository) || repository.starts_with(&target) {
        bail!(
            "--target {}: inside (or around) the repository {}",
            target.display(),
            repository.display()
        );
    }
    let mut live = None;
    for other in &config.sources {
        let path = resolve(other.path())?;
        if target.starts_with(&path) || path.starts_with(&target) {
            live = Some(other);
            break;
        }
    }
    if let Some(live) = live {
        bail!(
            "--target {}: overlaps the live source {} ({}); --target never touches live data, \
             use --in-place to replace it",
            target.display(),
            live.name(),
            live.path().display()
        );
    }
    let occupied = std::fs::read_dir(&target).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        bail!("--target {}: the folder is not empty", target.display());
    }
    Ok(Plan {
        source,
        restore_to: target,
        set_aside: None,
    })
}

/// `path` made absolute with symlinks resolved as far as it exists (the rest may not exist
/// yet), so that comparisons see where writes would really land. `.` and `..` are refused.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))?;
    if absolute
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        bail!("expected a path without `.` or `..`");
    }
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    while existing.symlink_metadata().is_err() {
        let (Some(name), Some(parent)) = (existing.file_name(), existing.parent()) else {
            break;
        };
        missing.push(name);
        existing = parent;
    }
    let mut resolved = existing
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", existing.display()))?;
    resolved.extend(missing.into_iter().rev());
    Ok(resolved)
}

fn describe(config: &BackupConfig, cmd: &RestoreCmd, plan: &Plan<'_>) -> String {
    let source = plan.source;
    let mut out = String::new();
    let from = match cmd.from {
        From::Local => format!(
            "the local repository {}",
            config.repository.path.get_ref().display()
        ),
        From::Offsite => "the R2 mirror (read-only)".to_owned(),
    };
    let which = cmd.snapshot.as_deref().map_or_else(
        || match cmd.from {
            From::Local => "the last good snapshot (or the newest that verifies)".to_owned(),
            From::Offsite => "the newest snapshot that verifies".to_owned(),
        },
        |id| format!("snapshot {id}"),
    );
    let _ = writeln!(
        out,
        "restore {} ({}) from {from}, {which}:",
        source.name(),
        source.path().display()
    );
    let commands = |list: &[Vec<String>]| -> String {
        if list.is_empty() {
            "nothing".to_owned()
        } else {
            list.iter()
                .map(|c| format!("`{}`", c.join(" ")))
                .collect::<Vec<_>>()
                .join(", then ")
        }
    };
    let mut step = 0;
    let mut say = |text: String| {
        step += 1;
        let _ = writeln!(out, "  {step}. {text}");
    };
    say(format!(
        "restore it into {} and check it (file count, SQLite integrity, dumps complete)",
        plan.restore_to.display()
    ));
    if let Some(sqlite) = &source.sqlite {
        say(format!(
            "put each captured SQLite copy ({}) in place of its live database, no -wal/-shm beside it",
            sqlite.databases.get_ref().join(", ")
        ));
    }
    let Some(set_aside) = &plan.set_aside else {
        say("leave everything live untouched".to_owned());
        return out;
    };
    say(format!(
        "stop the app: {}",
        commands(source.restore_stop().unwrap_or_default())
    ));
    if source.path().exists() {
        say(format!(
            "move {} aside to {} (nothing is deleted)",
            source.path().display(),
            set_aside.display()
        ));
    } else {
        say(format!(
            "nothing is at {}: nothing to set aside",
            source.path().display()
        ));
    }
    say(format!(
        "rename {} to {}, with the set-aside folder's owner and mode",
        plan.restore_to.display(),
        source.path().display()
    ));
    if let Some(restore) = &source.restore
        && !restore.keep().is_empty()
    {
        say(format!(
            "carry over from the set-aside folder what snapshots leave out: {}",
            restore.keep().join(", ")
        ));
    }
    say(format!("start: {}", commands(source.restore_start())));
    if let (Some(dump), Some(restore)) = (&source.dump, &source.restore)
        && let Some(load) = &restore.load_dump
    {
        say(format!(
            "load {} with `{}`, then {}",
            dump.file.get_ref(),
            load.get_ref().join(" "),
            commands(restore.after_load())
        ));
    }
    out
}

fn execute(config: &BackupConfig, cmd: &RestoreCmd, plan: &Plan<'_>) -> anyhow::Result<String> {
    let source = plan.source;
    // The job lock: no backup or sync runs while data is being put back.
    let job = Job::begin(config, Some("backup restore"), config.time_limit.restore)?;
    let (kopia, _mirror) = match cmd.from {
        From::Local => (local_repository(config, &job.cancel)?, None),
        From::Offsite => {
            let (offsite, credentials) = super::offsite::target(config)?;
            let mirror = Mirror::open(
                config,
                offsite,
                &credentials,
                repository_password(config)?,
                job.cancel.clone(),
            )?;
            (mirror.kopia.clone(), Some(mirror))
        }
    };
    let snapshots = match cmd.from {
        From::Local => kopia.all_snapshots()?,
        From::Offsite => kopia.snapshots_of_every_client()?,
    };
    let (manifest, skipped) = choose(&kopia, &job.cancel, &snapshots, source, cmd)?;
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!(
            "; newer snapshots skipped because their data is missing or damaged: {}",
            skipped.join(", ")
        )
    };
    if let Some(parent) = plan.restore_to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if plan.set_aside.is_some() {
        for removed in remove_interrupted(source.path()) {
            println!("{removed}");
        }
    }
    ensure_room(manifest, &plan.restore_to)?;
    tracing::info!(snapshot = %manifest.id, into = %plan.restore_to.display(), "restoring");
    // From here until the swap, a failure leaves the live data as it was: the partial restore
    // beside it is removed (in place) and the error says so.
    let prepared = kopia
        .restore(&manifest.id, &plan.restore_to)
        .context("kopia could not restore the snapshot")
        .and_then(|()| prepare_restored(source, manifest, plan));
    let (files, placed) = match prepared {
        Ok(done) => done,
        Err(err) => {
            discard_partial(plan);
            return Err(err.context("nothing live was touched"));
        }
    };
    let Some(set_aside) = &plan.set_aside else {
        return Ok(format!(
            "restored snapshot {} of {} into {} ({files} files, {placed} databases in place); \
             nothing live was touched{skipped}",
            manifest.id,
            source.name(),
            plan.restore_to.display(),
        ));
    };
    // A restore killed between setting the live data aside and the swap left no live data,
    // but the previous data is in its set-aside copy: name that, never "no previous data".
    let earlier = set_aside_copies(source.path());
    let previous = if source.path().exists() {
        format!("the previous data is in {}", set_aside.display())
    } else if let Some(copy) = earlier.last() {
        format!(
            "there was no live data; the previous data is in {}, set aside by an interrupted \
             restore",
            copy.display()
        )
    } else {
        "there was no previous data".to_owned()
    };
    swap_in_place(source, plan, set_aside)?;
    Ok(format!(
        "restored snapshot {} of {} in place ({files} files, {placed} databases); \
         {previous}{skipped}",
        manifest.id,
        source.name(),
    ))
}

/// Checks the restored tree like a drill, refuses `keep` paths the snapshot holds (they would
/// collide with the live ones carried over), and puts the SQLite copies in place. Returns the
/// file count and how many databases were placed.
fn prepare_restored(
    source: &Source,
    manifest: &Manifest,
    plan: &Plan<'_>,
) -> anyhow::Result<(u64, usize)> {
    let checked = check_tree(source, manifest, &plan.restore_to)?;
    if !checked.problems.is_empty() {
        bail!(
            "the restored snapshot {} does not check out: {}",
            manifest.id,
            checked.problems.join("; ")
        );
    }
    for check in &checked.checks {
        tracing::info!("check: {check}");
    }
    if let Some(restore) = &source.restore
        && let Some(held) = restore
            .keep()
            .iter()
            .find(|k| plan.restore_to.join(k).symlink_metadata().is_ok())
    {
        bail!(
            "restore.keep names {held}, but the snapshot holds it: exclude it from the source, \
             or remove it from keep"
        );
    }
    let live = plan.set_aside.is_some().then(|| source.path());
    let placed = place_sqlite_copies(source, &plan.restore_to, live).with_context(|| {
        format!(
            "putting the SQLite copies in place inside {} failed",
            plan.restore_to.display()
        )
    })?;
    Ok((checked.files, placed))
}

/// Refuses a restore the file system has no room for: running out of space on /srv would stop
/// the live apps, not only the restore. Keeps a margin of 5 % of the file system, at least
/// 1 GiB.
fn ensure_room(manifest: &Manifest, restore_to: &Path) -> anyhow::Result<()> {
    let parent = restore_to.parent().unwrap_or(restore_to);
    let stat = nix::sys::statvfs::statvfs(parent)
        .with_context(|| format!("cannot read the free space of {}", parent.display()))?;
    let fragment = stat.fragment_size() as u64;
    let available = stat.blocks_available() as u64 * fragment;
    let margin = (stat.blocks() as u64 * fragment / 20).max(1 << 30);
    let needed = manifest.summary().size;
    if needed.saturating_add(margin) > available {
        bail!(
            "the snapshot needs {} and {} must keep {} free, but only {} is available there; \
             nothing was touched (free space, or restore with --target elsewhere)",
            super::run::human_bytes(needed),
            parent.display(),
            super::run::human_bytes(margin),
            super::run::human_bytes(available)
        );
    }
    Ok(())
}

/// The snapshot to restore, and the newer ones skipped: the one asked for, else the last good
/// one, else (and always from the mirror) the newest clean one that passes `snapshot verify`.
/// After a sync that was cut off, the mirror may list snapshots whose packs never arrived: only
/// those (missing or damaged data) are skipped. Any other failure (the network, a signal, the
/// time limit) stops the restore rather than quietly taking an older snapshot.
fn choose<'a>(
    kopia: &Kopia,
    cancel: &Cancel,
    snapshots: &'a [Manifest],
    source: &Source,
    cmd: &RestoreCmd,
) -> anyhow::Result<(&'a Manifest, Vec<String>)> {
    let ours: Vec<&Manifest> = super::of_source(snapshots, source.path()).collect();
    if let Some(id) = &cmd.snapshot {
        let manifest = ours
            .iter()
            .find(|m| &m.id == id)
            .with_context(|| format!("no snapshot {id} of {}", source.path().display()))?;
        kopia
            .verify_snapshot(&manifest.id)
            .with_context(|| format!("snapshot {id} does not verify"))?;
        return Ok((manifest, Vec::new()));
    }
    let mut candidates: Vec<&Manifest> = Vec::new();
    if cmd.from == From::Local
        && let Some(good) = last_good(snapshots, source.path())
    {
        candidates.push(good);
    }
    candidates.extend(ours.iter().rev().filter(|m| m.is_clean()));
    candidates.dedup_by(|a, b| a.id == b.id);
    let mut skipped = Vec::new();
    for manifest in candidates {
        let err = match kopia.verify_snapshot(&manifest.id) {
            Ok(()) => {
                if !skipped.is_empty() {
                    tracing::warn!(
                        "restoring the newest snapshot that verifies, {} ({}); skipped: {}",
                        manifest.id,
                        manifest.start_time,
                        skipped.join(", ")
                    );
                }
                return Ok((manifest, skipped));
            }
            Err(err) => err,
        };
        if cancel.is_cancelled() {
            bail!("stopped: {}", cancel.reason());
        }
        if !data_missing_or_damaged(&err) {
            return Err(err).with_context(|| {
                format!(
                    "cannot verify snapshot {}; not falling back to an older one for a failure \
                     that is not missing data",
                    manifest.id
                )
            });
        }
        tracing::warn!(snapshot = %manifest.id, "does not verify, trying an older one: {err}");
        skipped.push(manifest.id.clone());
    }
    bail!(
        "no snapshot of {} verifies (tried {})",
        source.path().display(),
        if skipped.is_empty() {
            "none: there are no clean snapshots".to_owned()
        } else {
            skipped.join(", ")
        }
    )
}

/// `snapshot verify` failed because the snapshot's data is not there or not intact (as after a
/// sync that was cut off), not because the repository could not be reached.
fn data_missing_or_damaged(err: &crate::kopia::KopiaError) -> bool {
    let crate::kopia::KopiaError::Failed { stderr, .. } = err else {
        return false;
    };
    [
        "is backed by missing blob",
        "invalid checksum",
        "unable to decrypt",
        "blob not found",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

/// The siblings of `path` named `<name>.<suffix>-<time>`, oldest first (the stamps sort).
fn siblings(path: &Path, suffix: &str) -> Vec<PathBuf> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.{suffix}-", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(parent)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The copies earlier in-place restores set aside: the data that was live before each.
pub(crate) fn set_aside_copies(path: &Path) -> Vec<PathBuf> {
    siblings(path, "before-restore")
}

/// Partial restores an interrupted in-place restore left beside the source: removed (they are
/// ours, and the job lock keeps any other restore out), each one said.
fn remove_interrupted(path: &Path) -> Vec<String> {
    siblings(path, "restoring")
        .into_iter()
        .filter_map(|partial| match std::fs::remove_dir_all(&partial) {
            Ok(()) => Some(format!(
                "removed {}, left by an interrupted restore",
                partial.display()
            )),
            Err(err) => {
                tracing::warn!(
                    "cannot remove {}, left by an interrupted restore: {err}",
                    partial.display()
                );
                None
            }
        })
        .collect()
}

/// In place, the half-restored sibling folder is ours to remove; a `--target` is left for the
/// operator to look at.
fn discard_partial(plan: &Plan<'_>) {
    if plan.set_aside.is_some()
        && let Err(err) = std::fs::remove_dir_all(&plan.restore_to)
    {
        tracing::warn!(
            "cannot remove the partial restore {}: {err}",
            plan.restore_to.display()
        );
    }
}

/// Moves each captured SQLite copy from the staging folder to its database's place, removing
/// any `-wal`/`-shm`/`-journal` beside it (they would belong to another database). Each gets
/// the owner and mode of the live database it will replace (`live` is the live source, in
/// place), else the owner of the folder it lands in: an app running as its own user must be able
/// to write its database. Nothing is written through a symlink: every destination must resolve
/// inside `root`. Returns how many.
fn place_sqlite_copies(source: &Source, root: &Path, live: Option<&Path>) -> anyhow::Result<usize> {
    let Some(sqlite) = &source.sqlite else {
        return Ok(0);
    };
    let staging = root.join(STAGING_DIR);
    let real_root = root
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", root.display()))?;
    let base = glob::Pattern::escape(&staging.to_string_lossy());
    let mut placed = 0;
    for pattern in sqlite.databases.get_ref() {
        for copy in glob::glob(&format!("{base}/{pattern}"))?.flatten() {
            if !copy.is_file() {
                continue;
            }
            let relative = copy.strip_prefix(&staging)?.to_owned();
            let destination = root.join(&relative);
            let parent = destination.parent().unwrap_or(root);
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            let real_parent = parent
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", parent.display()))?;
            if !real_parent.starts_with(&real_root) {
                bail!(
                    "{} leads outside the restored tree (to {}) through a symlink; refusing to \
                     write there",
                    parent.display(),
                    real_parent.display()
                );
            }
            let name = destination.file_name().context("a database file name")?;
            let destination = real_parent.join(name);
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut side = destination.as_os_str().to_owned();
                side.push(suffix);
                let side = PathBuf::from(side);
                match std::fs::remove_file(&side) {
                    Ok(()) => {
                        tracing::info!(file = %side.display(), "removed a stale SQLite side file")
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(err)
                            .with_context(|| format!("cannot remove {}", side.display()));
                    }
                }
            }
            let owner = live
                .and_then(|live| std::fs::metadata(live.join(&relative)).ok())
                .map(|meta| (meta.uid(), meta.gid(), meta.mode() & 0o7777))
                .or_else(|| {
                    std::fs::metadata(&real_parent)
                        .ok()
                        .map(|meta| (meta.uid(), meta.gid(), 0o600))
                });
            std::fs::rename(&copy, &destination).with_context(|| {
                format!(
                    "cannot move {} to {}",
                    copy.display(),
                    destination.display()
                )
            })?;
            if let Some((uid, gid, mode)) = owner {
                set_owner_and_mode(&destination, uid, gid, mode)?;
            }
            tracing::info!(database = %destination.display(), "SQLite copy in place");
            placed += 1;
        }
    }
    Ok(placed)
}

fn set_owner_and_mode(path: &Path, uid: u32, gid: u32, mode: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot set the owner of {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}
