//! `homelab backup run`, `status` and `drill` against a real kopia filesystem repository.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{HttpStandIn, Lab, pinned, require, stderr, stdout};
use rusqlite::Connection;

const ACCOUNTS: i64 = 2000;
const OPENING_BALANCE: i64 = 1000;

fn bank(path: &Path) {
    let db = Connection::open(path).expect("open bank");
    db.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, memo TEXT);
         CREATE TABLE meta (transfers INTEGER NOT NULL);
         INSERT INTO meta VALUES (0);",
    )
    .expect("schema");
    let tx = db.unchecked_transaction().expect("tx");
    for id in 1..=ACCOUNTS {
        tx.execute(
            "INSERT INTO accounts VALUES (?1, ?2, ?3)",
            rusqlite::params![id, OPENING_BALANCE, "x".repeat(200)],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

fn total(path: &Path) -> i64 {
    let db = Connection::open(path).expect("open copy");
    db.query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
        .expect("sum")
}

fn transfers(path: &Path) -> i64 {
    let db = Connection::open(path).expect("open db");
    db.query_row("SELECT transfers FROM meta", [], |r| r.get(0))
        .expect("transfers")
}

#[test]
fn sqlite_capture_under_a_busy_writer_restores_consistent() {
    if !require(&["kopia", "python3"]) {
        return;
    }
    let lab = Lab::new();
    let vault = lab.source_dir("vaultwarden");
    std::fs::create_dir_all(vault.join("attachments")).expect("dir");
    std::fs::write(vault.join("attachments/a.bin"), b"attachment").expect("file");
    std::fs::create_dir_all(vault.join("icon_cache")).expect("dir");
    std::fs::write(vault.join("icon_cache/x.png"), b"icon").expect("file");
    bank(&vault.join("db.sqlite3"));
    let etc = lab.source_dir("nixos");
    std::fs::write(etc.join("flake.nix"), "{ }\n").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"vaultwarden\"\npath = \"{}\"\nexclude = [\"/icon_cache/\"]\n\
             [source.sqlite]\ndatabases = [\"db.sqlite3\"]\n\n\
             [[source]]\nname = \"nixos\"\npath = \"{}\"\n",
            vault.display(),
            etc.display()
        ),
    );

    let stop = lab.path("stop");
    let stats = lab.path("stats.json");
    let writer = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/bank_writer.py"
        ))
        .arg(vault.join("db.sqlite3"))
        .arg(&stop)
        .arg(&stats)
        .arg("no-checkpoint")
        .stdout(Stdio::null())
        .spawn()
        .expect("writer starts");
    let writer = common::Guard(writer);
    let ready = lab.path("stop.ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "writer never got going");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut runs = Vec::new();
    let mut committed_before_last_run = 0;
    for i in 0..3 {
        committed_before_last_run = transfers(&vault.join("db.sqlite3"));
        let out = lab.backup(&config, &["run", "--json"]);
        assert_eq!(out.status.code(), Some(0), "run must succeed");
        assert_eq!(
            stderr(&out).contains("retention policy updated"),
            i == 0,
            "the retention policy is written once, then left alone"
        );
        runs.push(serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("report JSON"));
    }
    std::fs::write(&stop, b"").expect("stop writer");
    let mut writer = writer;
    assert!(writer.0.wait().expect("writer exits").success());
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stats).expect("stats")).expect("stats JSON");
    assert_eq!(stats["failures"], 0, "the writer must never fail");
    assert!(stats["writes"].as_u64().expect("writes") > 100);

    for run in &runs {
        assert_eq!(run["ok"], true);
        for source in run["sources"].as_array().expect("sources") {
            assert_eq!(source["ok"], true, "{source}");
        }
    }
    // Live db files are replaced by the staged copy, the excluded cache is absent, and staging
    // is cleaned away after each run.
    assert!(
        !vault.join(".homelab-backup").exists(),
        "staging must be removed"
    );
    let snapshots = lab.snapshots(&vault);
    assert_eq!(snapshots.len(), 3);
    let pins: Vec<bool> = snapshots.iter().map(pinned).collect();
    assert_eq!(
        pins,
        [false, false, true],
        "only the newest good snapshot is pinned"
    );
    let last_id = runs[2]["sources"][0]["snapshot_id"].as_str().expect("id");
    assert_eq!(
        snapshots[2]["id"], last_id,
        "report names the pinned snapshot"
    );
    assert_eq!(
        snapshots[2]["tags"]["tag:homelab-run"],
        runs[2]["run_id"].as_str().expect("run id")
    );
    let listing = lab.kopia(&["ls", "-r", last_id]);
    let listing = stdout(&listing);
    assert!(listing.contains(".homelab-backup/db.sqlite3"), "{listing}");
    assert!(listing.contains("attachments/a.bin"), "{listing}");
    assert!(
        !listing.lines().any(|l| l.trim() == "db.sqlite3"),
        "live db must be ignored: {listing}"
    );
    assert!(!listing.contains("icon_cache"), "{listing}");

    let restored = lab.path("restored");
    let out = lab.backup(
        &config,
        &["drill", "--json", "--keep", &restored.to_string_lossy()],
    );
    assert_eq!(out.status.code(), Some(0));
    let drill: serde_json::Value = serde_json::from_slice(&out.stdout).expect("drill JSON");
    assert_eq!(drill["ok"], true);
    let copy = restored.join("vaultwarden/.homelab-backup/db.sqlite3");
    assert_eq!(
        total(&copy),
        ACCOUNTS * OPENING_BALANCE,
        "money was created or destroyed"
    );
    // The writer never checkpoints: only a copy that reads through the WAL sees its transfers.
    assert!(committed_before_last_run > 0);
    assert!(
        transfers(&copy) >= committed_before_last_run,
        "the copy misses transfers committed before the capture began: {} < {committed_before_last_run}",
        transfers(&copy)
    );
    let checks = drill["sources"][0]["checks"].to_string();
    assert!(checks.contains("integrity_check ok"), "{checks}");

    let out = lab.backup(&config, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["ok"], true);
    assert_eq!(status["sources"][0]["last_good_snapshot"], last_id);

    let metrics =
        std::fs::read_to_string(lab.path("metrics/homelab_backup.prom")).expect("metrics");
    assert!(
        metrics.contains("homelab_backup_last_run_success{source=\"vaultwarden\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("homelab_backup_last_success_timestamp_seconds{source=\"nixos\"}"),
        "{metrics}"
    );
}

#[test]
fn failed_dump_leaves_no_snapshot_spares_other_sources_and_notifies_stand_ins() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let matrix = HttpStandIn::start();
    std::fs::write(lab.path("matrix-token"), "syt_bot_token\n").expect("token");
    let files = lab.source_dir("files");
    std::fs::write(files.join("a.txt"), "a").expect("file");
    let immich = lab.source_dir("immich");
    std::fs::write(immich.join("photo.jpg"), "jpeg").expect("file");
    let empty = lab.source_dir("empty");
    let sources = |dump: &str| {
        format!(
            "[notify]\nwebhook-file = \"{url}\"\n\n\
             [notify.matrix]\nhomeserver = \"{homeserver}\"\nroom = \"!backups:aza.network\"\n\
             access-token-file = \"{token}\"\n\n\
             [[source]]\nname = \"files\"\npath = \"{files}\"\n\n\
             [[source]]\nname = \"immich\"\npath = \"{immich}\"\n\
             [source.dump]\nfile = \"immich.sql\"\ncommand = {dump}\n\
             complete-marker = \"-- dump complete\"\n\n\
             [[source]]\nname = \"empty\"\npath = \"{empty}\"\n\
             [source.dump]\nfile = \"nothing.sql\"\ncommand = [\"true\"]\n",
            url = hook
                .url_file(&lab.path("webhook"), "/ntfy/azalab")
                .display(),
            homeserver = matrix.url(""),
            token = lab.path("matrix-token").display(),
            files = files.display(),
            immich = immich.display(),
            empty = empty.display(),
        )
    };
    let config = lab.write_config(
        "bad.toml",
        &sources(
            r#"["sh", "-c", "echo 'CREATE TABLE half;'; echo 'connection lost' >&2; exit 1"]"#,
        ),
    );
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1), "a failed source fails the run");
    let report = stdout(&out);
    assert!(report.contains("ok    files"), "{report}");
    assert!(report.contains("FAIL  immich"), "{report}");
    assert!(
        report.contains("connection lost"),
        "stderr of the dump is reported: {report}"
    );
    assert!(report.contains("FAIL  empty"), "{report}");
    assert!(report.contains("wrote nothing"), "{report}");
    assert_eq!(lab.snapshots(&files).len(), 1);
    assert!(
        lab.snapshots(&immich).is_empty(),
        "no snapshot from a failed dump"
    );
    assert!(
        lab.snapshots(&empty).is_empty(),
        "no snapshot from an empty dump"
    );
    assert!(!immich.join(".homelab-backup").exists());

    let sent = hook.received();
    assert_eq!(sent.len(), 1, "one notification per failed run: {sent:?}");
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].path, "/ntfy/azalab");
    assert!(
        sent[0].body.contains("immich: dump capture failed"),
        "{}",
        sent[0].body
    );
    assert!(
        sent[0].body.contains("empty: dump capture failed"),
        "{}",
        sent[0].body
    );

    // A dump that exits 0 but stops early lacks its closing line: still a failure.
    let truncated = lab.write_config(
        "truncated.toml",
        &sources(r#"["sh", "-c", "echo 'CREATE TABLE half;'"]"#),
    );
    let out = lab.backup(&truncated, &["run", "--source", "immich"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("incomplete"), "{}", stdout(&out));
    assert!(lab.snapshots(&immich).is_empty());

    let fixed = lab.write_config(
        "fixed.toml",
        &sources(r#"["sh", "-c", "echo 'CREATE TABLE whole;'; echo '-- dump complete'"]"#),
    );
    let out = lab.backup(&fixed, &["run", "--source", "immich", "--source", "files"]);
    assert_eq!(out.status.code(), Some(0), "the next run succeeds");
    assert_eq!(lab.snapshots(&immich).len(), 1);
    let out = lab.backup(&fixed, &["drill", "--source", "immich"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("immich.sql"), "{}", stdout(&out));
}

#[test]
fn retention_never_takes_the_last_good_snapshot() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("data");
    std::fs::write(data.join("v"), "1").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[retention]\nkeep-latest = 1\nkeep-daily = 0\nkeep-weekly = 0\nkeep-monthly = 0\n\n\
             [[source]]\nname = \"data\"\npath = \"{}\"\n",
            data.display()
        ),
    );
    let out = lab.backup(&config, &["run", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let good = report["sources"][0]["snapshot_id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Snapshots that are not ours to vouch for (made by hand, or a capture that kopia saved with
    // errors) trigger kopia's retention, keep-latest 1: without the pin the good one would go.
    std::fs::write(data.join("v"), "2").expect("file");
    for _ in 0..2 {
        let out = lab.kopia(&["snapshot", "create", &data.to_string_lossy()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let ids: Vec<String> = lab
        .snapshots(&data)
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(
        ids.contains(&good),
        "the pinned last good snapshot survived retention: {ids:?}"
    );
    assert_eq!(
        ids.len(),
        2,
        "retention still removed the unpinned one: {ids:?}"
    );

    // The next good run moves the pin; the run after it lets retention take the old good one.
    // (Pinning and unpinning rewrite a manifest under a new ID: compare start times.)
    let start_of = |id: &str| {
        lab.snapshots(&data)
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["startTime"].clone())
            .expect("snapshot present")
    };
    let good_start = start_of(&good);
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(0));
    let snapshots = lab.snapshots(&data);
    let pinned_starts: Vec<&serde_json::Value> = snapshots
        .iter()
        .filter(|s| pinned(s))
        .map(|s| &s["startTime"])
        .collect();
    assert_eq!(pinned_starts.len(), 1, "{snapshots:?}");
    assert_ne!(
        pinned_starts[0], &good_start,
        "the pin moved to the new snapshot"
    );
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(0));
    let snapshots = lab.snapshots(&data);
    assert!(
        snapshots.iter().all(|s| s["startTime"] != good_start),
        "the old good snapshot, no longer pinned, fell to retention: {snapshots:?}"
    );
    assert_eq!(
        snapshots.len(),
        2,
        "the newest plus the previous good one: {snapshots:?}"
    );
}

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
