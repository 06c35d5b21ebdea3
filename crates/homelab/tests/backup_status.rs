//! `homelab backup status`: stale and missing sources, and a clock in the future.

mod common;

use common::{Lab, require, status_json, stderr, stdout};

#[test]
fn status_reports_stale_and_missing_sources() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let a = lab.source_dir("a");
    let b = lab.source_dir("b");
    std::fs::write(a.join("f"), "x").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"a\"\npath = \"{}\"\n\n[[source]]\nname = \"b\"\npath = \"{}\"\n",
            a.display(),
            b.display()
        ),
    );
    let out = lab.backup(&config, &["run", "--source", "a"]);
    assert_eq!(out.status.code(), Some(0));
    let out = lab.backup(&config, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1), "source b was never backed up");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["sources"][0]["stale"], false);
    assert_eq!(status["sources"][1]["stale"], true);
    assert_eq!(
        status["sources"][1]["last_good_snapshot"],
        serde_json::Value::Null
    );
}

#[test]
fn a_last_good_snapshot_dated_in_the_future_is_clock_skew_not_freshness() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("files");
    std::fs::write(data.join("a"), "a").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"files\"\npath = \"{}\"\n",
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(status_json(&lab, &config).0, Some(0));
    // A snapshot stamped by a clock a day ahead, as a host whose clock jumped would make.
    let out = lab.kopia(&[
        "snapshot",
        "create",
        &data.to_string_lossy(),
        "--start-time",
        "2099-01-01 00:00:00 UTC",
        "--end-time",
        "2099-01-01 00:00:10 UTC",
        "--pin",
        "homelab-last-good",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let (code, status) = status_json(&lab, &config);
    assert_eq!(code, Some(1), "{status}");
    assert_eq!(status["sources"][0]["clock_skew"], true);
    assert_eq!(status["sources"][0]["stale"], false);
    let out = lab.backup(&config, &["status"]);
    assert!(stdout(&out).contains("clock skew"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("0s ago"), "{}", stdout(&out));
}
