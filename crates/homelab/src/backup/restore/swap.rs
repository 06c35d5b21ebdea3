//! The in-place swap and its rollback, the riskiest part of a restore, on its own: stop the
//! app, set the live folder aside, put the restored one in its place, carry over what the
//! snapshot leaves out, start the app, load the dump. Before the set-aside a failure starts the
//! app again and leaves the live data as it was; after it, the error says where everything is
//! and how to roll back, step by step.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context as _;

use super::{Plan, discard_partial, set_owner_and_mode};
use crate::backup::STAGING_DIR;
use crate::backup::config::Source;
use crate::process::{self, Cancel};

/// What has been moved so far in an in-place swap, to say exactly how to undo it.
#[derive(Default)]
struct Moves {
    set_aside: bool,
    swapped: bool,
    kept: Vec<String>,
}

impl Moves {
    /// The commands that undo what was moved, in order.
    fn rollback(&self, path: &Path, set_aside: &Path) -> String {
        let mut steps = vec!["stop the app".to_owned()];
        for keep in self.kept.iter().rev() {
            steps.push(format!(
                "`mv {} {}`",
                path.join(keep).display(),
                set_aside.join(keep).display()
            ));
        }
        if self.swapped {
            steps.push(format!(
                "`mv {} {}.failed-restore`",
                path.display(),
                path.display()
            ));
        }
        if self.set_aside {
            steps.push(format!("`mv {} {}`", set_aside.display(), path.display()));
        }
        steps.push("start the app".to_owned());
        steps.join(", then ")
    }
}

/// Stop, set aside, swap, carry over, start, load, finish. Before the set-aside a failure
/// starts the app again, removes the partial restore and leaves the live data as it was; after
/// it, the error says where everything is and how to roll back, step by step.
pub(super) fn swap_in_place(
    source: &Source,
    plan: &Plan<'_>,
    set_aside: &Path,
) -> anyhow::Result<()> {
    let path = source.path();
    let timeout = source
        .restore
        .as_ref()
        .map_or(std::time::Duration::from_secs(600), |r| r.timeout);
    let stop = source.restore_stop().unwrap_or_default();
    let start = source.restore_start();
    // Start and load commands run to the end even after a signal: an app left stopped is worse.
    let never = Cancel::default();
    // Undoes a failure before anything live moved.
    let untouched = |what: String| -> anyhow::Error {
        let started = run_all(start, &never, timeout);
        discard_partial(plan);
        anyhow::anyhow!(
            "{what}; nothing live was touched; start commands: {}",
            started.map_or_else(|e| format!("failed too: {e:#}"), |()| "ran".to_owned())
        )
    };
    tracing::info!("stopping the app");
    if let Err(err) = run_all(stop, &never, timeout) {
        return Err(untouched(format!("stopping the app failed: {err:#}")));
    }
    let live_meta = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        // Rebuilding a host: there is nothing live to set aside.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(untouched(format!("cannot read {}: {err}", path.display()))),
    };
    let mut moves = Moves::default();
    if live_meta.is_some() {
        tracing::info!(from = %path.display(), to = %set_aside.display(), "setting the live data aside");
        if let Err(err) = std::fs::rename(path, set_aside) {
            return Err(untouched(format!(
                "cannot move {} aside to {}: {err}",
                path.display(),
                set_aside.display()
            )));
        }
        moves.set_aside = true;
    } else {
        tracing::info!(path = %path.display(), "nothing live here: nothing to set aside");
    }
    let failed = |moves: &Moves, what: String| -> anyhow::Error {
        let aside = if moves.set_aside {
            format!("the previous data is in {}", set_aside.display())
        } else {
            "there was no previous data".to_owned()
        };
        let restored = if moves.swapped {
            path.display().to_string()
        } else {
            plan.restore_to.display().to_string()
        };
        anyhow::anyhow!(
            "{what}\nstate: {aside}; the restored data is at {restored}; the app may be \
             stopped.\nto roll back: {}",
            moves.rollback(path, set_aside)
        )
    };
    if let Err(err) = std::fs::rename(&plan.restore_to, path) {
        return Err(failed(
            &moves,
            format!("cannot move the restored data to {}: {err}", path.display()),
        ));
    }
    moves.swapped = true;
    if let Some(meta) = &live_meta
        && let Err(err) = set_owner_and_mode(path, meta.uid(), meta.gid(), meta.mode() & 0o7777)
    {
        return Err(failed(&moves, format!("{err:#}")));
    }
    if let Some(restore) = &source.restore
        && moves.set_aside
    {
        for keep in restore.keep() {
            let from = set_aside.join(keep);
            let to = path.join(keep);
            if from.symlink_metadata().is_err() {
                continue;
            }
            let parent = to.parent().unwrap_or(path);
            if let Err(err) = std::fs::create_dir_all(parent) {
                return Err(failed(
                    &moves,
                    format!("cannot create {}: {err}", parent.display()),
                ));
            }
            tracing::info!(path = %to.display(), "carrying over what the snapshot leaves out");
            if let Err(err) = std::fs::rename(&from, &to) {
                return Err(failed(
                    &moves,
                    format!("cannot move {} to {}: {err}", from.display(), to.display()),
                ));
            }
            moves.kept.push(keep.clone());
        }
    }
    tracing::info!("starting the app");
    if let Err(err) = run_all(start, &never, timeout) {
        return Err(failed(&moves, format!("starting the app failed: {err:#}")));
    }
    if let (Some(dump), Some(restore)) = (&source.dump, &source.restore)
        && let Some(load) = &restore.load_dump
    {
        let file = path.join(STAGING_DIR).join(dump.file.get_ref());
        tracing::info!(dump = %file.display(), "loading the dump");
        if let Err(err) = load_dump(std::slice::from_ref(load.get_ref()), &file, &never, timeout) {
            return Err(failed(&moves, format!("loading the dump failed: {err:#}")));
        }
        if let Err(err) = run_all(restore.after_load(), &never, timeout) {
            return Err(failed(
                &moves,
                format!("the after-load commands failed: {err:#}"),
            ));
        }
    }
    // The captures were for the restore; the app's folder holds only the app's data again.
    match std::fs::remove_dir_all(path.join(STAGING_DIR)) {
        // A plain source never had captures.
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("cannot remove {}: {err}", path.join(STAGING_DIR).display());
        }
        _ => {}
    }
    Ok(())
}

fn run_all(
    commands: &[Vec<String>],
    cancel: &Cancel,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    Ok(process::run_commands(commands, None, cancel, timeout)?)
}

/// Runs the load command with the dump file on its standard input.
fn load_dump(
    load: &[Vec<String>],
    file: &Path,
    cancel: &Cancel,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let input = std::fs::File::open(file)
        .with_context(|| format!("cannot open the dump {}", file.display()))?;
    Ok(process::run_commands(load, Some(input), cancel, timeout)?)
}
