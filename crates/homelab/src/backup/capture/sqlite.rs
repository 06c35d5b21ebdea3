//! SQLite databases copied with the online backup API, in one step inside one read transaction:
//! in WAL mode writers carry on, and the copy is the database as of one commit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};

use super::{Capture, CaptureError, Context};
use crate::backup::config::SqliteCapture;

pub struct Sqlite<'a>(pub &'a SqliteCapture);

impl Capture for Sqlite<'_> {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn before(&self, cx: &Context<'_>) -> Result<(), CaptureError> {
        let databases = matches(cx.source, self.0.databases.get_ref())?;
        for relative in databases {
            if cx.cancel.is_cancelled() {
                return Err(CaptureError::Failed("interrupted by a signal".into()));
            }
            let live = cx.source.join(&relative);
            let copy = cx.staging.join(&relative);
            copy_database(&live, &copy).map_err(|err| {
                CaptureError::Failed(format!("SQLite copy of {} failed: {err}", live.display()))
            })?;
            tracing::info!(database = %live.display(), "copied SQLite database");
        }
        Ok(())
    }

    fn check_restored(&self, restored_staging: &Path) -> Result<Vec<String>, CaptureError> {
        let databases = matches(restored_staging, self.0.databases.get_ref())?;
        let mut checked = Vec::new();
        for relative in databases {
            let path = restored_staging.join(&relative);
            let result = integrity_check(&path).map_err(|err| {
                CaptureError::Failed(format!("cannot check {}: {err}", path.display()))
            })?;
            if result != "ok" {
                return Err(CaptureError::Failed(format!(
                    "integrity_check of {} reported: {result}",
                    path.display()
                )));
            }
            checked.push(format!("{}: integrity_check ok", relative.display()));
        }
        Ok(checked)
    }
}

/// Files under `root` matching the patterns, relative to `root`, sorted. No match is an error: a
/// database that disappeared must not pass silently.
fn matches(root: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, CaptureError> {
    let base = glob::Pattern::escape(&root.to_string_lossy());
    let mut found = Vec::new();
    for pattern in patterns {
        let full = format!("{base}/{pattern}");
        let paths = glob::glob(&full)
            .map_err(|err| CaptureError::Failed(format!("bad pattern {pattern}: {err}")))?;
        let before = found.len();
        for path in paths {
            let path = path.map_err(|err| CaptureError::Failed(err.to_string()))?;
            if path.is_file()
                && let Ok(relative) = path.strip_prefix(root)
            {
                found.push(relative.to_owned());
            }
        }
        if found.len() == before {
            return Err(CaptureError::Failed(format!(
                "no SQLite database matches {pattern} under {}",
                root.display()
            )));
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn copy_database(live: &Path, copy: &Path) -> Result<(), String> {
    if let Some(parent) = copy.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
    }
    online_copy(live, copy).map_err(|err| err.to_string())?;
    let copied = Connection::open(copy).map_err(|err| err.to_string())?;
    let check: String = copied
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|err| err.to_string())?;
    if check != "ok" {
        return Err(format!("quick_check of the copy reported: {check}"));
    }
    Ok(())
}

fn online_copy(live: &Path, copy: &Path) -> rusqlite::Result<()> {
    let source = Connection::open_with_flags(
        live,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(Duration::from_secs(30))?;
    let mut target = Connection::open(copy)?;
    {
        let backup = Backup::new(&source, &mut target)?;
        // All pages in one step: the copy cannot restart under a busy writer.
        backup.step(-1)?;
    }
    target.close().map_err(|(_, err)| err)
}

fn integrity_check(path: &Path) -> rusqlite::Result<String> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    db.query_row("PRAGMA integrity_check", [], |row| row.get(0))
}
