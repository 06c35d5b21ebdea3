//! Telling the owner: a plain POST to a webhook (an ntfy topic) and/or a message to a Matrix
//! room, and heartbeat pings (healthchecks.io's convention) that an outside service watches for.
//! Nothing here ever fails the job it reports on: a message or ping that cannot be delivered is
//! a warning in the log, and every request is bounded in time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A message that cannot be delivered within this is given up.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Pings are sent at the start and end of jobs: short, so that a hung heartbeat service delays
/// a job by seconds, not minutes.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// healthchecks.io keeps at most this much of a ping's body.
const PING_BODY_LIMIT: usize = 10_000;

/// Where messages go; each part is optional. Shared by the backup and status configurations.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// File holding the URL that receives a POST with the text (an ntfy topic): such URLs are
    /// secrets, so they come from sops-nix.
    pub webhook_file: Option<PathBuf>,
    pub matrix: Option<Matrix>,
    /// File holding a healthchecks.io ping URL prefix (`https://hc-ping.com/<ping-key>`): each
    /// job pings `<prefix>/<job>` on start (`/start`), success and failure (`/fail`).
    pub heartbeat_url_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Matrix {
    pub homeserver: Spanned<String>,
    /// Room ID (`!…:server`) the bot account has joined.
    pub room: String,
    pub access_token_file: PathBuf,
}

/// How loud a message is (ntfy's Priority header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    High,
    Default,
}

/// Sends `text` with `title` to every configured destination; returns whether at least one
/// accepted it (or none is configured).
pub fn send(settings: &Settings, title: &str, text: &str, priority: Priority) -> bool {
    let agent = agent(MESSAGE_TIMEOUT);
    let mut delivered = settings.webhook_file.is_none() && settings.matrix.is_none();
    if let Some(file) = &settings.webhook_file {
        let sent = read_url(file, "notify.webhook-file").and_then(|url| {
            agent
                .post(&url)
                .header("Title", title)
                .header(
                    "Priority",
                    match priority {
                        Priority::High => "high",
                        Priority::Default => "default",
                    },
                )
                .send(text.as_bytes())
                .map_err(anyhow::Error::from)
        });
        match sent {
            Ok(_) => delivered = true,
            Err(err) => tracing::warn!("could not notify the webhook: {err:#}"),
        }
    }
    if let Some(matrix) = &settings.matrix {
        match send_matrix(&agent, matrix, text) {
            Ok(()) => delivered = true,
            Err(err) => tracing::warn!("could not notify the Matrix room: {err:#}"),
        }
    }
    delivered
}

/// A job failed: a high-priority message naming the job and this host.
pub fn failure(settings: &Settings, job: &str, detail: &str) {
    let host = host_name();
    send(
        settings,
        &format!("homelab {job} failed"),
        &format!("homelab {job} failed on {host}:\n{detail}"),
        Priority::High,
    );
}

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown host".into())
}

/// The pings of one job under its own check (`<prefix>/<slug>`), so that each job's schedule is
/// watched on its own: a sync every 6 hours must not hide a daily run that stopped.
pub struct Heartbeat {
    url: Option<String>,
}

impl Heartbeat {
    /// No URL file configured means no pings; an unreadable one is a warning and no pings.
    pub fn new(settings: &Settings, slug: &str) -> Self {
        let url = settings.heartbeat_url_file.as_ref().and_then(|file| {
            read_url(file, "notify.heartbeat-url-file")
                .map(|prefix| format!("{}/{slug}", prefix.trim_end_matches('/')))
                .map_err(|err| tracing::warn!("no heartbeat: {err:#}"))
                .ok()
        });
        Self { url }
    }

    pub fn start(&self) {
        self.ping("/start", "");
    }

    pub fn success(&self, text: &str) {
        self.ping("", text);
    }

    pub fn failure(&self, text: &str) {
        self.ping("/fail", text);
    }

    fn ping(&self, suffix: &str, text: &str) {
        let Some(url) = &self.url else { return };
        let body = truncate(text, PING_BODY_LIMIT);
        if let Err(err) = agent(PING_TIMEOUT)
            .post(&format!("{url}{suffix}"))
            .send(body.as_bytes())
        {
            tracing::warn!("heartbeat ping {suffix:?} not delivered: {err}");
        }
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .build()
        .new_agent()
}

/// The last `limit` bytes at most, cut at a character boundary (the end of a log says most).
fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A URL from its file, first line, which must be http(s).
fn read_url(file: &Path, key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| anyhow::anyhow!("cannot read {key} {}: {err}", file.display()))?;
    let url = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(
        url.starts_with("https://") || url.starts_with("http://"),
        "{key} {}: expected an http:// or https:// URL on its first line",
        file.display()
    );
    Ok(url)
}

fn send_matrix(agent: &ureq::Agent, matrix: &Matrix, text: &str) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&matrix.access_token_file).map_err(|err| {
        anyhow::anyhow!(
            "cannot read notify.matrix.access-token-file {}: {err}",
            matrix.access_token_file.display()
        )
    })?;
    let txn = format!(
        "homelab-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let url = format!(
        "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
        matrix.homeserver.get_ref().trim_end_matches('/'),
        encode_path_segment(&matrix.room)
    );
    let body = serde_json::json!({ "msgtype": "m.text", "body": text });
    agent
        .put(&url)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .send_json(body)?;
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters (room IDs hold `!` and `:`).
fn encode_path_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn room_ids_are_encoded() {
        assert_eq!(
            super::encode_path_segment("!abc:aza.network"),
            "%21abc%3Aaza.network"
        );
    }

    #[test]
    fn ping_bodies_keep_the_end_at_a_character_boundary() {
        assert_eq!(super::truncate("abc", 5), "abc");
        assert_eq!(super::truncate("abcdef", 3), "def");
        assert_eq!(super::truncate("aé", 1), "");
        assert_eq!(super::truncate("aéb", 2), "b");
    }
}
