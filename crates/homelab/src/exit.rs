use std::process::ExitCode;

/// The three outcomes every `homelab` command ends in; decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The job did everything it was asked to.
    Success,
    /// The job ran and failed (a source not captured, a sync that gave up, something stale).
    Failure,
    /// Usage or configuration error: nothing was attempted.
    Error,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => ExitCode::from(0),
            ExitStatus::Failure => ExitCode::from(1),
            ExitStatus::Error => ExitCode::from(2),
        }
    }
}
