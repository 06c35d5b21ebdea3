//! Consistent captures made before a source is snapshotted: one implementation per kind, picked
//! by the source's configuration.

mod dump;
mod quiesce;
mod sqlite;

use std::path::Path;

use crate::backup::config::Source;
use crate::process::{Cancel, ProcessError};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    Process(#[from] ProcessError),
    #[error("{0}")]
    Failed(String),
}

/// What a capture may touch: the live source, its staging folder, and the cancel flag.
pub struct Context<'a> {
    pub source: &'a Path,
    pub staging: &'a Path,
    pub cancel: &'a Cancel,
}

pub trait Capture {
    fn kind(&self) -> &'static str;

    /// Runs before the snapshot. An error fails the source: no snapshot is taken.
    fn before(&self, cx: &Context<'_>) -> Result<(), CaptureError>;

    /// Runs after the snapshot, or after a failure or a signal, once `before` was started.
    fn after(&self, _cx: &Context<'_>) -> Result<(), CaptureError> {
        Ok(())
    }

    /// Checks a restored copy of the source (the drill). Returns what was checked.
    fn check_restored(&self, _restored_staging: &Path) -> Result<Vec<String>, CaptureError> {
        Ok(Vec::new())
    }
}

/// The source's captures in the order they run: stop the app, copy databases, dump.
pub fn for_source(source: &Source) -> Vec<Box<dyn Capture + '_>> {
    let mut captures: Vec<Box<dyn Capture + '_>> = Vec::new();
    if let Some(config) = &source.quiesce {
        captures.push(Box::new(quiesce::Quiesce(config)));
    }
    if let Some(config) = &source.sqlite {
        captures.push(Box::new(sqlite::Sqlite(config)));
    }
    if let Some(config) = &source.dump {
        captures.push(Box::new(dump::Dump(config)));
    }
    captures
}
