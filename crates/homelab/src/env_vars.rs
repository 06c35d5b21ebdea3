//! Every environment variable `homelab` reads or sets, in one place.

/// Path of the backup configuration file (`--config`).
pub const HOMELAB_BACKUP_CONFIG: &str = "HOMELAB_BACKUP_CONFIG";
/// Set by systemd when stderr goes to the journal: log plain lines without timestamps.
pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";
/// Overrides the log filter (`tracing_subscriber` syntax).
pub const HOMELAB_LOG: &str = "HOMELAB_LOG";

/// Path of the status configuration (`homelab status --config`).
pub const HOMELAB_STATUS_CONFIG: &str = "HOMELAB_STATUS_CONFIG";
/// Program name or path of systemctl (tests where systemd does not run point it at a stand-in).
pub const HOMELAB_SYSTEMCTL: &str = "HOMELAB_SYSTEMCTL";

/// Path of the MacBook's client configuration (`--config`).
pub const HOMELAB_CLIENT_CONFIG: &str = "HOMELAB_CLIENT_CONFIG";
/// Program name or path of cloudflared (tests point it at a stand-in).
pub const HOMELAB_CLOUDFLARED: &str = "HOMELAB_CLOUDFLARED";
/// The Cloudflare Access service token, read by `cloudflared access tcp` from its environment
/// (its `--service-token-id`/`--service-token-secret` flags' EnvVars, cmd/cloudflared/access).
pub const TUNNEL_SERVICE_TOKEN_ID: &str = "TUNNEL_SERVICE_TOKEN_ID";
pub const TUNNEL_SERVICE_TOKEN_SECRET: &str = "TUNNEL_SERVICE_TOKEN_SECRET";

/// Program name or path of the kopia binary.
pub const HOMELAB_KOPIA: &str = "HOMELAB_KOPIA";
pub const KOPIA_CONFIG_PATH: &str = "KOPIA_CONFIG_PATH";
pub const KOPIA_PASSWORD: &str = "KOPIA_PASSWORD";
pub const KOPIA_LOG_DIR: &str = "KOPIA_LOG_DIR";
pub const KOPIA_CHECK_FOR_UPDATES: &str = "KOPIA_CHECK_FOR_UPDATES";
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// Keys of the offsite credentials file (an environment file written by sops-nix).
pub const R2_ENDPOINT: &str = "R2_ENDPOINT";
pub const R2_BUCKET: &str = "R2_BUCKET";

/// The variable that overrides where a program is found, for the programs that have one.
pub fn program_override(program: &str) -> Option<&'static str> {
    match program {
        "kopia" => Some(HOMELAB_KOPIA),
        "cloudflared" => Some(HOMELAB_CLOUDFLARED),
        "systemctl" => Some(HOMELAB_SYSTEMCTL),
        _ => None,
    }
}
