//! Heartbeat pings of the scheduled jobs (run, sync, verify, drill), with the HTTP recorder
//! standing in for healthchecks.io.

mod common;

use std::time::{Duration, Instant};

use common::{HttpStandIn, Lab, require, stderr};

/// The pings (method and path) the heartbeat stand-in received, in order.
fn pings(receiver: &HttpStandIn) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[test]
fn every_job_pings_its_heartbeat_on_start_and_on_success_or_failure() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("data");
    std::fs::write(data.join("f"), "x").expect("file");
    // healthchecks.io stands in as the HTTP recorder: ping URL prefix + one check per job.
    let receiver = HttpStandIn::start();
    let heartbeat = receiver.url_file(&lab.path("heartbeat-url"), "/ping-key");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[notify]\nheartbeat-url-file = \"{}\"\n\n[[source]]\nname = \"data\"\npath = \"{}\"\n",
            heartbeat.display(),
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(
        pings(&receiver),
        [
            "POST /ping-key/backup-run/start",
            "POST /ping-key/backup-run"
        ]
    );
    assert_eq!(lab.backup(&config, &["verify"]).status.code(), Some(0));
    assert_eq!(lab.backup(&config, &["drill"]).status.code(), Some(0));
    assert_eq!(
        pings(&receiver)[2..],
        [
            "POST /ping-key/backup-verify/start",
            "POST /ping-key/backup-verify",
            "POST /ping-key/backup-drill/start",
            "POST /ping-key/backup-drill",
        ]
    );
    // A job that fails: its check gets /fail, with what went wrong.
    assert_eq!(lab.backup(&config, &["sync"]).status.code(), Some(2));
    assert_eq!(
        pings(&receiver)[6..],
        [
            "POST /ping-key/backup-sync/start",
            "POST /ping-key/backup-sync/fail"
        ]
    );
    let failed = receiver.received().pop().expect("ping");
    assert!(
        failed.body.contains("homelab backup sync failed"),
        "{failed:?}"
    );
    // `status` is not a scheduled job: no ping.
    lab.backup(&config, &["status"]);
    assert_eq!(pings(&receiver).len(), 8);
}

#[test]
fn a_heartbeat_service_that_hangs_never_fails_the_backup() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("data");
    std::fs::write(data.join("f"), "x").expect("file");
    let frozen = common::FrozenServer::start();
    let heartbeat = lab.path("heartbeat-url");
    std::fs::write(
        &heartbeat,
        format!("http://127.0.0.1:{}/ping-key\n", frozen.port),
    )
    .expect("url");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[notify]\nheartbeat-url-file = \"{}\"\n\n[[source]]\nname = \"data\"\npath = \"{}\"\n",
            heartbeat.display(),
            data.display()
        ),
    );
    let started = Instant::now();
    let out = lab.backup(&config, &["run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the backup succeeds all the same"
    );
    assert!(
        stderr(&out).contains("heartbeat ping \"/start\" not delivered"),
        "{}",
        stderr(&out)
    );
    // Bounded: two pings of at most 5 s each (and a backup of one small file), never the
    // job's time limit.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(lab.snapshots(&data).len(), 1);
}
