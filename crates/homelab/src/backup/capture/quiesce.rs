//! Stop an app for the length of its snapshot (Tuwunel's RocksDB has no safe live copy here),
//! and start it again afterwards whatever happened.

use super::{Capture, CaptureError, Context};
use crate::backup::config::QuiesceCapture;
use crate::process::{self, Cancel};

pub struct Quiesce<'a>(pub &'a QuiesceCapture);

impl Quiesce<'_> {
    fn run_all(&self, commands: &[Vec<String>], cancel: &Cancel) -> Result<(), CaptureError> {
        process::run_commands(commands, None, cancel, self.0.timeout)
            .map_err(|err| CaptureError::Failed(err.to_string()))
    }
}

impl Capture for Quiesce<'_> {
    fn kind(&self) -> &'static str {
        "quiesce"
    }

    fn before(&self, cx: &Context<'_>) -> Result<(), CaptureError> {
        tracing::info!(source = %cx.source.display(), "stopping the app");
        self.run_all(self.0.stop.get_ref(), cx.cancel)
    }

    fn after(&self, _cx: &Context<'_>) -> Result<(), CaptureError> {
        tracing::info!("starting the app again");
        // The start commands must run even while we are being terminated: a fresh, never
        // cancelled flag.
        self.run_all(self.0.start.get_ref(), &Cancel::default())
    }
}
