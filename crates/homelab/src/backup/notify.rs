//! Failure notifications: a plain POST to a webhook (ntfy topic, healthchecks `/fail` URL) and/or
//! a message to a Matrix room. A notification that fails is a warning; it never hides the
//! failure it was reporting.

use std::time::Duration;

use super::config::BackupConfig;

const TIMEOUT: Duration = Duration::from_secs(15);

pub fn failure(config: &BackupConfig, job: &str, detail: &str) {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown host".into());
    let text = format!("homelab {job} failed on {host}:\n{detail}");
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(true)
        .build()
        .new_agent();
    if let Some(file) = &config.notify.webhook_file {
        let sent = read_url(file).and_then(|url| {
            agent
                .post(&url)
                .header("Title", &format!("homelab {job} failed"))
                .header("Priority", "high")
                .send(text.as_bytes())
                .map_err(anyhow::Error::from)
        });
        if let Err(err) = sent {
            tracing::warn!("could not notify the webhook: {err:#}");
        }
    }
    if let Some(matrix) = &config.notify.matrix
        && let Err(err) = send_matrix(&agent, matrix, &text)
    {
        tracing::warn!("could not notify the Matrix room: {err:#}");
    }
}

/// The webhook URL from its file, first line, which must be http(s).
fn read_url(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|err| {
        anyhow::anyhow!("cannot read notify.webhook-file {}: {err}", file.display())
    })?;
    let url = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(
        url.starts_with("https://") || url.starts_with("http://"),
        "{}: expected an http:// or https:// URL",
        file.display()
    );
    Ok(url)
}

fn send_matrix(
    agent: &ureq::Agent,
    matrix: &super::config::Matrix,
    text: &str,
) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&matrix.access_token_file)?;
    let txn = format!(
        "homelab-{}-{}",
        std::process::id(),
        super::state::unix_now()
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
}
