//! A command's stdout streamed into a file in the staging folder (`pg_dumpall` through
//! `kubectl exec`). Good only when the command exited 0, wrote something, and, where the config
//! names a completion marker, has it in its last 4 KiB.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use super::{Capture, CaptureError, Context};
use crate::backup::config::DumpCapture;
use crate::process;

pub struct Dump<'a>(pub &'a DumpCapture);

impl Capture for Dump<'_> {
    fn kind(&self) -> &'static str {
        "dump"
    }

    fn before(&self, cx: &Context<'_>) -> Result<(), CaptureError> {
        let path = cx.staging.join(self.0.file.get_ref());
        let file = File::create(&path).map_err(|err| {
            CaptureError::Failed(format!("cannot create {}: {err}", path.display()))
        })?;
        let argv = self.0.command.get_ref();
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).stdout(file);
        let done = process::run(&mut command, cx.cancel, Some(self.0.timeout), false)?;
        if !done.status.success() {
            return Err(CaptureError::Failed(format!(
                "dump command `{}` failed ({}):\n{}",
                argv[0],
                done.status,
                done.stderr_tail()
            )));
        }
        let written = check_dump(&path, self.0.complete_marker.as_deref())?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|err| {
                CaptureError::Failed(format!("cannot sync {}: {err}", path.display()))
            })?;
        tracing::info!(file = %path.display(), bytes = written, "dump written");
        Ok(())
    }

    fn check_restored(&self, restored_staging: &Path) -> Result<Vec<String>, CaptureError> {
        let path = restored_staging.join(self.0.file.get_ref());
        let size = check_dump(&path, self.0.complete_marker.as_deref())?;
        Ok(vec![format!(
            "{}: {size} bytes, complete",
            self.0.file.get_ref()
        )])
    }
}

/// Non-empty and, when `marker` is given, holding it in its last 4 KiB.
fn check_dump(path: &Path, marker: Option<&str>) -> Result<u64, CaptureError> {
    let fail = |what: String| CaptureError::Failed(format!("dump {}: {what}", path.display()));
    let mut file = File::open(path).map_err(|err| fail(format!("cannot open: {err}")))?;
    let size = file
        .metadata()
        .map_err(|err| fail(format!("cannot stat: {err}")))?
        .len();
    if size == 0 {
        return Err(fail("the command wrote nothing".into()));
    }
    if let Some(marker) = marker {
        let window = (marker.len() as u64 + 4096).min(size);
        let mut end = Vec::new();
        file.seek(SeekFrom::End(-(window as i64)))
            .and_then(|_| file.read_to_end(&mut end))
            .map_err(|err| fail(format!("cannot read: {err}")))?;
        if !String::from_utf8_lossy(&end).contains(marker) {
            return Err(fail(format!(
                "{marker:?} is not at its end: it is incomplete"
            )));
        }
    }
    Ok(size)
}
