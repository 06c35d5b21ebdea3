use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::env_vars;

/// Logs go to stderr: with colour and time on a terminal, plain lines under systemd (journald adds
/// its own timestamps).
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "homelab=info",
        1 => "homelab=debug",
        _ => "homelab=trace",
    };
    let filter =
        EnvFilter::try_from_env(env_vars::HOMELAB_LOG).unwrap_or_else(|_| EnvFilter::new(default));
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_target(false);
    if std::env::var_os(env_vars::JOURNAL_STREAM).is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// Whether progress bars may be drawn.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os(env_vars::JOURNAL_STREAM).is_none()
}
