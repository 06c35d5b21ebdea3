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
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use super::config::{BackupConfig, Source};
use super::drill::check_tree;
use super::offsite::{Mirror, read_credentials};
use super::{
    ConfigArg, Job, STAGING_DIR, last_good, local_repository, notify, repository_password,
};
use crate::exit::ExitStatus;
use crate::kopia::{Kopia, Manifest};
use crate::process::{self, Cancel};

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
            notify::failure(
                config,
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
        let offsite = config
            .offsite
            .as_ref()
            .context("--from offsite: the configuration has no [offsite] table")?;
        read_credentials(&offsite.credentials_file)?;
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
    let target = std::path::absolute(target)
        .with_context(|| format!("--target {}: cannot resolve", target.display()))?;
    let repository = config.repository.path.get_ref();
    if target.starts_with(repository) || repository.starts_with(&target) {
        bail!(
            "--target {}: inside (or around) the repository {}",
            target.display(),
            repository.display()
        );
    }
    if let Some(live) = config
        .sources
        .iter()
        .find(|s| target.starts_with(s.path()) || s.path().starts_with(&target))
    {
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
            let offsite = config.offsite.as_ref().context("no [offsite] table")?;
            let credentials = read_credentials(&offsite.credentials_file)?;
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
    let manifest = choose(&kopia, &snapshots, source, cmd)?;
    tracing::info!(snapshot = %manifest.id, into = %plan.restore_to.display(), "restoring");
    if let Some(parent) = plan.restore_to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if let Err(err) = kopia.restore(&manifest.id, &plan.restore_to) {
        discard_partial(plan);
        return Err(err).context("kopia could not restore the snapshot; nothing live was touched");
    }
    let checked = check_tree(source, manifest, &plan.restore_to)?;
    if !checked.problems.is_empty() {
        discard_partial(plan);
        bail!(
            "the restored snapshot {} does not check out: {}; nothing live was touched",
            manifest.id,
            checked.problems.join("; ")
        );
    }
    for check in &checked.checks {
        tracing::info!("check: {check}");
    }
    let placed = place_sqlite_copies(source, &plan.restore_to, plan.set_aside.as_deref())
        .with_context(|| {
            format!(
                "putting the SQLite copies in place inside {} failed; nothing live was touched",
                plan.restore_to.display()
            )
        })?;
    let Some(set_aside) = &plan.set_aside else {
        return Ok(format!(
            "restored snapshot {} of {} into {} ({} files, {} databases in place); nothing live \
             was touched",
            manifest.id,
            source.name(),
            plan.restore_to.display(),
            checked.files,
            placed
        ));
    };
    let previous = if set_aside_needed(source) {
        format!("the previous data is in {}", set_aside.display())
    } else {
        "there was no previous data".to_owned()
    };
    swap_in_place(source, plan, set_aside)?;
    Ok(format!(
        "restored snapshot {} of {} in place ({} files, {} databases); {previous}",
        manifest.id,
        source.name(),
        checked.files,
        placed,
    ))
}

/// The snapshot to restore: the one asked for, else the last good one, else (and always from
/// the mirror) the newest clean one that passes `snapshot verify`. After a sync that was cut
/// off, the mirror may list snapshots whose packs never arrived: those are skipped, loudly.
fn choose<'a>(
    kopia: &Kopia,
    snapshots: &'a [Manifest],
    source: &Source,
    cmd: &RestoreCmd,
) -> anyhow::Result<&'a Manifest> {
    let ours: Vec<&Manifest> = super::of_source(snapshots, source.path()).collect();
    if let Some(id) = &cmd.snapshot {
        let manifest = ours
            .iter()
            .find(|m| &m.id == id)
            .with_context(|| format!("no snapshot {id} of {}", source.path().display()))?;
        kopia
            .verify_snapshot(&manifest.id)
            .with_context(|| format!("snapshot {id} does not verify"))?;
        return Ok(manifest);
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
        match kopia.verify_snapshot(&manifest.id) {
            Ok(()) => {
                if !skipped.is_empty() {
                    tracing::warn!(
                        "restoring the newest snapshot that verifies, {} ({}); skipped: {}",
                        manifest.id,
                        manifest.start_time,
                        skipped.join(", ")
                    );
                }
                return Ok(manifest);
            }
            Err(err) => {
                tracing::warn!(snapshot = %manifest.id, "does not verify, trying an older one: {err}");
                skipped.push(manifest.id.clone());
            }
        }
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
/// any `-wal`/`-shm`/`-journal` beside it (they would belong to another database). In place,
/// each gets the owner and mode of the live database it replaces. Returns how many.
fn place_sqlite_copies(
    source: &Source,
    root: &Path,
    live_set_aside: Option<&Path>,
) -> anyhow::Result<usize> {
    let Some(sqlite) = &source.sqlite else {
        return Ok(0);
    };
    let staging = root.join(STAGING_DIR);
    let base = glob::Pattern::escape(&staging.to_string_lossy());
    let mut placed = 0;
    for pattern in sqlite.databases.get_ref() {
        for copy in glob::glob(&format!("{base}/{pattern}"))?.flatten() {
            if !copy.is_file() {
                continue;
            }
            let relative = copy.strip_prefix(&staging)?.to_owned();
            let destination = root.join(&relative);
            if let Some(parent) = destination.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut stale = destination.as_os_str().to_owned();
                stale.push(suffix);
                match std::fs::remove_file(&stale) {
                    Ok(()) => {
                        tracing::info!(file = %Path::new(&stale).display(), "removed a stale SQLite side file")
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(err).with_context(|| {
                            format!("cannot remove {}", Path::new(&stale).display())
                        });
                    }
                }
            }
            std::fs::rename(&copy, &destination).with_context(|| {
                format!(
                    "cannot move {} to {}",
                    copy.display(),
                    destination.display()
                )
            })?;
            if let Some(old) = live_set_aside.map(|dir| dir.join(&relative))
                && let Ok(meta) = std::fs::metadata(&old)
            {
                copy_owner_and_mode(&meta, &destination)?;
            }
            tracing::info!(database = %destination.display(), "SQLite copy in place");
            placed += 1;
        }
    }
    Ok(placed)
}

fn copy_owner_and_mode(from: &std::fs::Metadata, to: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::chown(to, Some(from.uid()), Some(from.gid()))
        .with_context(|| format!("cannot set the owner of {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(from.mode() & 0o7777))
        .with_context(|| format!("cannot set the mode of {}", to.display()))
}

fn set_aside_needed(source: &Source) -> bool {
    source.path().exists()
}

/// Stop, set aside, swap, carry over, start, load, finish. Before the set-aside a failure
/// starts the app again and leaves the live data as it was; after it, the error says where
/// everything is and how to roll back.
fn swap_in_place(source: &Source, plan: &Plan<'_>, set_aside: &Path) -> anyhow::Result<()> {
    let path = source.path();
    let timeout = source
        .restore
        .as_ref()
        .map_or(std::time::Duration::from_secs(600), |r| r.timeout);
    let stop = source.restore_stop().unwrap_or_default();
    let start = source.restore_start();
    // Start and load commands run to the end even after a signal: an app left stopped is worse.
    let never = Cancel::default();
    tracing::info!("stopping the app");
    if let Err(err) = run_all(stop, &never, timeout) {
        let started = run_all(start, &never, timeout);
        discard_partial(plan);
        bail!(
            "stopping the app failed: {err:#}; nothing live was touched (start commands: {})",
            started.map_or_else(|e| format!("failed too: {e:#}"), |()| "ran".to_owned())
        );
    }
    let live_meta = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        // Rebuilding a host: there is nothing live to set aside.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let rollback = format!(
        "to roll back: stop the app, `mv {path} {path}.failed-restore && mv {aside} {path}`, start \
         the app",
        path = path.display(),
        aside = set_aside.display()
    );
    if live_meta.is_some() {
        tracing::info!(from = %path.display(), to = %set_aside.display(), "setting the live data aside");
        std::fs::rename(path, set_aside).with_context(|| {
            let started = run_all(start, &never, timeout);
            format!(
                "cannot move {} aside; nothing live was changed; the app was started again ({})",
                path.display(),
                if started.is_ok() {
                    "ok"
                } else {
                    "that failed too"
                }
            )
        })?;
    } else {
        tracing::info!(path = %path.display(), "nothing live here: nothing to set aside");
    }
    let after_set_aside = |what: String| {
        format!(
            "{what}\nstate: the previous data is in {}, the restored data {}; {rollback}",
            set_aside.display(),
            if path.exists() {
                format!("is at {}", path.display())
            } else {
                format!("is at {}", plan.restore_to.display())
            }
        )
    };
    std::fs::rename(&plan.restore_to, path).with_context(|| {
        after_set_aside(format!(
            "cannot move the restored data to {}",
            path.display()
        ))
    })?;
    if let Some(meta) = &live_meta {
        copy_owner_and_mode(meta, path)
            .map_err(|err| anyhow::anyhow!(after_set_aside(format!("{err:#}"))))?;
    }
    if let Some(restore) = &source.restore {
        for keep in restore.keep() {
            let from = set_aside.join(keep);
            let to = path.join(keep);
            if !from.exists() {
                continue;
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).with_context(|| {
                    after_set_aside(format!("cannot create {}", parent.display()))
                })?;
            }
            tracing::info!(path = %to.display(), "carrying over what the snapshot leaves out");
            std::fs::rename(&from, &to).with_context(|| {
                after_set_aside(format!(
                    "cannot move {} to {}",
                    from.display(),
                    to.display()
                ))
            })?;
        }
    }
    tracing::info!("starting the app");
    run_all(start, &never, timeout).map_err(|err| {
        anyhow::anyhow!(after_set_aside(format!("starting the app failed: {err:#}")))
    })?;
    if let (Some(dump), Some(restore)) = (&source.dump, &source.restore)
        && let Some(load) = &restore.load_dump
    {
        let file = path.join(STAGING_DIR).join(dump.file.get_ref());
        tracing::info!(dump = %file.display(), "loading the dump");
        load_dump(load.get_ref(), &file, &never, timeout).map_err(|err| {
            anyhow::anyhow!(after_set_aside(format!("loading the dump failed: {err:#}")))
        })?;
        run_all(restore.after_load(), &never, timeout).map_err(|err| {
            anyhow::anyhow!(after_set_aside(format!(
                "the after-load commands failed: {err:#}"
            )))
        })?;
    }
    // The captures were for the restore; the app's folder holds only the app's data again.
    if let Err(err) = std::fs::remove_dir_all(path.join(STAGING_DIR)) {
        tracing::warn!("cannot remove {}: {err}", path.join(STAGING_DIR).display());
    }
    Ok(())
}

fn run_all(
    commands: &[Vec<String>],
    cancel: &Cancel,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    for argv in commands {
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        let done = process::run(&mut command, cancel, Some(timeout), true)?;
        if !done.status.success() {
            bail!(
                "`{}` failed ({}):\n{}",
                argv.join(" "),
                done.status,
                done.stderr_tail()
            );
        }
    }
    Ok(())
}

/// Runs `argv` with the dump file on its standard input.
fn load_dump(
    argv: &[String],
    file: &Path,
    cancel: &Cancel,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let input = std::fs::File::open(file)
        .with_context(|| format!("cannot open the dump {}", file.display()))?;
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    let done = process::run_with_stdin_file(&mut command, input, cancel, Some(timeout))?;
    if !done.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            argv.join(" "),
            done.status,
            done.stderr_tail()
        );
    }
    Ok(())
}
