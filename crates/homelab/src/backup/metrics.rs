//! The Prometheus textfile read by node-exporter's textfile collector, rewritten from the saved
//! state after every job so that no job erases another's numbers.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;

use anyhow::Context as _;

use super::config::BackupConfig;
use super::state::State;
use crate::files::write_atomically;

const FILE: &str = "homelab_backup.prom";

/// Saves a job's state and rewrites the metrics file from it. Tries both (they may sit on
/// different file systems) and reports every failure with its path.
pub fn publish(config: &BackupConfig, state: &State, job: &str) -> anyhow::Result<()> {
    let saved = state.save_for(config, job);
    let written = write(config, state);
    match (saved, written) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(err), Ok(())) | (Ok(()), Err(err)) => Err(err),
        (Err(saved), Err(written)) => Err(anyhow::anyhow!("{saved:#}; {written:#}")),
    }
}

fn write(config: &BackupConfig, state: &State) -> anyhow::Result<()> {
    let Some(dir) = &config.textfile_dir else {
        return Ok(());
    };
    let path = dir.get_ref().join(FILE);
    write_atomically(&path, render(state).as_bytes())
        .and_then(|()| {
            // node-exporter runs as its own user.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(anyhow::Error::from)
        })
        .with_context(|| format!("cannot write the metrics file {}", path.display()))
}

fn render(state: &State) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, help: &str, value: &dyn Fn(&super::state::SourceState) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (source, s) in &state.sources {
                if let Some(v) = value(s) {
                    let _ = writeln!(out, "{name}{{source=\"{source}\"}} {v}");
                }
            }
        };
    family(
        "homelab_backup_last_success_timestamp_seconds",
        "Unix time of the last good snapshot of the source.",
        &|s| s.last_success.map(|t| t as f64),
    );
    family(
        "homelab_backup_last_run_success",
        "1 when the last run captured and snapshotted the source, else 0.",
        &|s| Some(if s.last_attempt_ok { 1.0 } else { 0.0 }),
    );
    family(
        "homelab_backup_last_bytes",
        "Bytes in the last good snapshot of the source.",
        &|s| Some(s.bytes as f64),
    );
    family(
        "homelab_backup_last_duration_seconds",
        "Seconds the last good capture and snapshot of the source took.",
        &|s| Some(s.duration_seconds),
    );
    family(
        "homelab_backup_last_drill_timestamp_seconds",
        "Unix time of the last drill of the source.",
        &|s| s.last_drill.map(|t| t as f64),
    );
    family(
        "homelab_backup_last_drill_success",
        "1 when the last drill restored and checked the source, else 0.",
        &|s| s.last_drill_ok.map(|ok| if ok { 1.0 } else { 0.0 }),
    );
    let _ = writeln!(
        out,
        "# HELP homelab_backup_last_sync_timestamp_seconds Unix time of the last R2 sync that completed.\n\
         # TYPE homelab_backup_last_sync_timestamp_seconds gauge"
    );
    if let Some(t) = state.last_sync {
        let _ = writeln!(out, "homelab_backup_last_sync_timestamp_seconds {t}");
    }
    if let Some(ok) = state.last_sync_ok {
        let _ = writeln!(
            out,
            "# HELP homelab_backup_last_sync_success 1 when the last sync succeeded.\n\
             # TYPE homelab_backup_last_sync_success gauge\n\
             homelab_backup_last_sync_success {}",
            u8::from(ok)
        );
    }
    let _ = writeln!(
        out,
        "# HELP homelab_backup_mirror_damaged_blobs Mirror blobs found with other bytes than the local copy, not yet replaced.\n\
         # TYPE homelab_backup_mirror_damaged_blobs gauge\n\
         homelab_backup_mirror_damaged_blobs {}\n\
         # HELP homelab_backup_mirror_differing_blobs Blobs the mirror lacks or holds with another size after the last repair.\n\
         # TYPE homelab_backup_mirror_differing_blobs gauge\n\
         homelab_backup_mirror_differing_blobs {}",
        state.mirror_damaged.len(),
        state.mirror_differs.len()
    );
    out
}
