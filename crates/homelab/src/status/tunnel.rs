//! The Cloudflare Tunnel, from cloudflared's own metrics server (loopback only): how many of
//! its connections to Cloudflare's edge are up. Every public hostname depends on them.
//!
//! `cloudflared_tunnel_ha_connections` is a gauge without labels that cloudflared raises when a
//! connection to the edge starts serving and lowers when it ends (cloudflare/cloudflared,
//! supervisor/metrics.go and supervisor/tunnel.go); cloudflared keeps 4 by default.

use std::time::{Duration, Instant};

use super::{Check, Level};

const METRIC: &str = "cloudflared_tunnel_ha_connections";
const ID: &str = "tunnel/connections";

pub fn check(metrics_url: &str, expected: u32, deadline: Instant) -> Vec<Check> {
    let url = format!("{}/metrics", metrics_url.trim_end_matches('/'));
    let more =
        "systemctl status 'cloudflared-tunnel-*'; journalctl -u 'cloudflared-tunnel-*' -n 50";
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(left))
        .http_status_as_error(true)
        .build()
        .new_agent();
    let body = agent
        .get(&url)
        .call()
        .and_then(|mut response| response.body_mut().read_to_string());
    let text = match body {
        Ok(text) => text,
        Err(err) => {
            return vec![
                Check::new(
                    ID,
                    Level::Unknown,
                    format!("cloudflared's metrics at {url} do not answer: {err} (is cloudflared running?)"),
                )
                .more(more),
            ];
        }
    };
    let Some(connections) = gauge(&text, METRIC) else {
        return vec![
            Check::new(
                ID,
                Level::Unknown,
                format!("{url} has no {METRIC} (is this cloudflared's metrics server?)"),
            )
            .more(more),
        ];
    };
    let count = connections.max(0.0).round() as u64;
    let check = if count == 0 {
        Check::new(
            ID,
            Level::Fail,
            "no connection to Cloudflare's edge: every public hostname is down",
        )
    } else if count < u64::from(expected) {
        Check::new(
            ID,
            Level::Warn,
            format!("{count} of {expected} edge connections up"),
        )
    } else {
        Check::new(ID, Level::Ok, format!("{count} edge connections up"))
    };
    vec![check.more(more)]
}

/// The value of an unlabelled sample in Prometheus' text format.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let metric = fields.next()?;
            (metric == name).then(|| fields.next()?.parse().ok())?
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gauge_is_read_and_lookalikes_are_not() {
        let text = "# HELP cloudflared_tunnel_ha_connections Number of active ha connections\n\
                    # TYPE cloudflared_tunnel_ha_connections gauge\n\
                    cloudflared_tunnel_ha_connections_total 9\n\
                    cloudflared_tunnel_ha_connections 3\n";
        assert_eq!(super::gauge(text, super::METRIC), Some(3.0));
        assert_eq!(super::gauge("x 1\n", super::METRIC), None);
    }
}
