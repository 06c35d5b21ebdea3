//! SQLite databases copied with the online backup API, in one step inside one read transaction:
//! in WAL mode writers carry on, and the copy is the database as of one commit. A copy counts
//! only when the backup reached its end (`StepResult::Done`), is not empty when the live
//! database is not, and passes a full `integrity_check`: a locked or corrupt database fails its
//! source, and the previous snapshot stays the last good one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{Capture, CaptureError, Context};
use crate::backup::config::SqliteCapture;
use crate::process::Cancel;

/// How long one backup step waits on a lock before we look at the clock and the cancel flag.
const STEP_WAIT: Duration = Duration::from_millis(250);

pub struct Sqlite<'a>(pub &'a SqliteCapture);

impl Capture for Sqlite<'_> {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn before(&self, cx: &Context<'_>) -> Result<(), CaptureError> {
        let databases = matches(cx.source, self.0.databases.get_ref())?;
        for relative in databases {
            if cx.cancel.is_cancelled() {
                return Err(CaptureError::Failed(format!(
                    "stopped: {}",
                    cx.cancel.reason()
                )));
            }
            let live = cx.source.join(&relative);
            let copy = cx.staging.join(&relative);
            let pages =
                copy_database(&live, &copy, self.0.busy_timeout, cx.cancel).map_err(|err| {
                    CaptureError::Failed(format!("SQLite copy of {} failed: {err}", live.display()))
                })?;
            tracing::info!(database = %live.display(), pages, "copied SQLite database, integrity_check ok");
        }
        Ok(())
    }

    fn check_restored(&self, restored_staging: &Path) -> Result<Vec<String>, CaptureError> {
        let databases = matches(restored_staging, self.0.databases.get_ref())?;
        let mut checked = Vec::new();
        for relative in databases {
            let path = restored_staging.join(&relative);
            let copied = check_copy(&path)
                .map_err(|err| CaptureError::Failed(format!("{}: {err}", path.display())))?;
            // Capture refuses empty copies; an empty one here is a snapshot made before that
            // rule, and restoring it would lose everything.
            if copied.is_empty() {
                return Err(CaptureError::Failed(format!(
                    "{} is an empty database (no tables)",
                    path.display()
                )));
            }
            checked.push(format!(
                "{}: integrity_check ok, {} pages, {} schema objects",
                relative.display(),
                copied.pages,
                copied.schema_objects
            ));
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

/// Copies `live` to `copy` and checks the copy; returns its page count.
fn copy_database(
    live: &Path,
    copy: &Path,
    busy_timeout: Duration,
    cancel: &Cancel,
) -> Result<u64, String> {
    if let Some(parent) = copy.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
    }
    online_copy(live, copy, busy_timeout, cancel)?;
    let copied = check_copy(copy)?;
    // An empty copy must never become the last good snapshot of an app's database, whether
    // the copy failed silently or the live file lost its contents.
    if copied.is_empty() {
        let live_bytes = std::fs::metadata(live).map(|m| m.len()).unwrap_or(0);
        return Err(if live_bytes > 0 {
            format!("the copy is empty although the live database has {live_bytes} bytes")
        } else {
            "the live database is empty (no tables): refusing to replace the last good \
             snapshot with an empty copy (remove it from sqlite.databases if that is intended)"
                .to_owned()
        });
    }
    Ok(copied.pages)
}

/// The whole database in one backup step. Another process's lock (an open write transaction,
/// `locking_mode=EXCLUSIVE`) makes the step return `Busy` or `Locked` as a value, not an error:
/// retried until `busy_timeout`, then a failure. Only `Done` is a complete copy.
fn online_copy(
    live: &Path,
    copy: &Path,
    busy_timeout: Duration,
    cancel: &Cancel,
) -> Result<(), String> {
    let source = Connection::open_with_flags(
        live,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| err.to_string())?;
    source
        .busy_timeout(STEP_WAIT)
        .map_err(|err| err.to_string())?;
    let mut target = Connection::open(copy).map_err(|err| err.to_string())?;
    let started = Instant::now();
    loop {
        let step = {
            let backup = Backup::new(&source, &mut target).map_err(|err| err.to_string())?;
            // All pages in one step: the copy cannot restart under a busy writer.
            backup.step(-1).map_err(|err| err.to_string())?
        };
        match step {
            StepResult::Done => break,
            StepResult::Busy | StepResult::Locked => {
                if started.elapsed() >= busy_timeout {
                    return Err(format!(
                        "another process kept the database locked for {}; no copy was made",
                        humantime::format_duration(busy_timeout)
                    ));
                }
                if !cancel.sleep(STEP_WAIT) {
                    return Err(format!("stopped: {}", cancel.reason()));
                }
            }
            // Not expected from a step over all pages; never taken for a complete copy.
            other => return Err(format!("the online backup stopped early ({other:?})")),
        }
    }
    target.close().map_err(|(_, err)| err.to_string())
}

/// What a checked copy holds.
struct Copied {
    pages: u64,
    /// Tables, indexes, views and triggers.
    schema_objects: u64,
}

impl Copied {
    fn is_empty(&self) -> bool {
        self.pages == 0 || self.schema_objects == 0
    }
}

/// A full `integrity_check` (it finds index corruption that `quick_check` misses) of a copy,
/// then its size. A file that is not a database fails here.
fn check_copy(path: &Path) -> Result<Copied, String> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|err| err.to_string())?;
    let mut statement = db
        .prepare("PRAGMA integrity_check(20)")
        .map_err(|err| err.to_string())?;
    let findings: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|err| err.to_string())?;
    if findings != ["ok"] {
        return Err(format!("integrity_check reported: {}", findings.join("; ")));
    }
    let count = |sql: &str| -> Result<u64, String> {
        db.query_row(sql, [], |row| row.get(0))
            .map_err(|err| err.to_string())
    };
    Ok(Copied {
        pages: count("PRAGMA page_count")?,
        schema_objects: count("SELECT count(*) FROM sqlite_schema")?,
    })
}
