//! Faults a careful operator tries before trusting the backup tool, one test each, named for the
//! fault: a locked or corrupt database, a hung kopia, a frozen S3 server, a clock in the future,
//! wrong keys, a mirror missing its newest packs, an unwritable metrics file, failed drills.
//! Every one must end with exit 1 (or 2 for configuration), a notification, the lock free, and
//! the previous last good snapshot still pinned.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{HttpStandIn, Lab, S3_KEY_ID, S3_SECRET, S3Server, pinned, require, stderr, stdout};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rusqlite::Connection;

/// The clean snapshots of `source` and which of them carry the last-good pin.
fn pinned_ids(lab: &Lab, source: &Path) -> Vec<String> {
    lab.snapshots(source)
        .iter()
        .filter(|s| pinned(s))
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
}

fn status_json(lab: &Lab, config: &Path) -> (Option<i32>, serde_json::Value) {
    let out = lab.backup(config, &["status", "--json"]);
    let json = serde_json::from_slice(&out.stdout).expect("status JSON");
    (out.status.code(), json)
}

/// Notification texts the webhook stand-in received.
fn notifications(hook: &HttpStandIn) -> Vec<String> {
    hook.received().into_iter().map(|r| r.body).collect()
}

fn notify_table(lab: &Lab, hook: &HttpStandIn) -> String {
    format!(
        "[notify]\nwebhook-file = \"{}\"\n\n",
        hook.url_file(&lab.path("webhook"), "/ntfy/backups")
            .display()
    )
}

/// A Vaultwarden-shaped source: `db.sqlite3` with a table and an index, in `journal_mode`.
fn vault_source(lab: &Lab, journal_mode: &str, hook: &HttpStandIn) -> (PathBuf, PathBuf) {
    let data = lab.source_dir("vault");
    let db = Connection::open(data.join("db.sqlite3")).expect("db");
    db.pragma_update(None, "journal_mode", journal_mode)
        .expect("journal mode");
    db.execute_batch(
        "CREATE TABLE ciphers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE INDEX ciphers_name ON ciphers (name);",
    )
    .expect("schema");
    for i in 0..50 {
        db.execute(
            "INSERT INTO ciphers (name) VALUES (?1)",
            [format!("alpha-{i:06}")],
        )
        .expect("insert");
    }
    drop(db);
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "{}[[source]]\nname = \"vault\"\npath = \"{}\"\n\
             [source.sqlite]\ndatabases = [\"db.sqlite3\"]\nbusy-timeout = \"2s\"\n",
            notify_table(lab, hook),
            data.display()
        ),
    );
    (data, config)
}

/// Holds the database the way another program can: an open exclusive transaction in
/// rollback-journal mode, or `locking_mode=EXCLUSIVE` after a write in WAL mode. The lock is
/// this test process's, so for `homelab` it is another process's.
fn hold_exclusively(db: &Path, wal: bool) -> Connection {
    let holder = Connection::open(db).expect("holder");
    if wal {
        holder
            .execute_batch(
                "PRAGMA locking_mode = EXCLUSIVE;
                 INSERT INTO ciphers (name) VALUES ('held');",
            )
            .expect("exclusive WAL lock");
    } else {
        holder
            .execute_batch("BEGIN EXCLUSIVE; INSERT INTO ciphers (name) VALUES ('held');")
            .expect("exclusive transaction");
    }
    holder
}

fn a_locked_database_fails_its_source(wal: bool) {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let (data, config) = vault_source(&lab, if wal { "wal" } else { "delete" }, &hook);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let good = pinned_ids(&lab, &data);
    assert_eq!(good.len(), 1);

    let holder = hold_exclusively(&data.join("db.sqlite3"), wal);
    let out = lab.backup(&config, &["run", "--json"]);
    drop(holder);

    assert_eq!(
        out.status.code(),
        Some(1),
        "a locked database fails the run"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let source = &report["sources"][0];
    assert_eq!(source["ok"], false);
    assert!(source["snapshot_id"].is_null(), "{source}");
    let error = source["error"].as_str().expect("error");
    assert!(
        error.contains("kept the database locked for 2s"),
        "the reason is named: {error}"
    );
    assert_eq!(
        pinned_ids(&lab, &data),
        good,
        "the previous snapshot keeps the pin"
    );
    assert_eq!(
        lab.snapshots(&data).len(),
        1,
        "no snapshot of the failed capture is left"
    );
    assert!(
        notifications(&hook)
            .iter()
            .any(|n| n.contains("vault") && n.contains("locked")),
        "{:?}",
        notifications(&hook)
    );
    let (code, status) = status_json(&lab, &config);
    assert_eq!(code, Some(1), "status reports the failed source: {status}");
    assert_eq!(status["sources"][0]["name"], "vault");
    assert_eq!(status["sources"][0]["ok"], false);
    assert_eq!(status["sources"][0]["last_good_snapshot"], good[0].as_str());

    let out = lab.backup(&config, &["drill"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the kept snapshot still restores"
    );
    assert!(
        stdout(&out).contains("integrity_check ok, "),
        "{}",
        stdout(&out)
    );
    // With the lock gone the next run succeeds and moves the pin.
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_ne!(pinned_ids(&lab, &data), good);
    assert_eq!(status_json(&lab, &config).0, Some(0));
}

#[test]
fn a_database_held_in_an_exclusive_transaction_fails_its_source_and_keeps_the_previous_pin() {
    a_locked_database_fails_its_source(false);
}

#[test]
fn a_wal_database_held_with_exclusive_locking_mode_fails_its_source_and_keeps_the_previous_pin() {
    a_locked_database_fails_its_source(true);
}

/// Rewrites one row's text inside the table's own b-tree page, leaving the index pointing at
/// the old value: `quick_check` stays ok, `integrity_check` finds the index out of step.
fn corrupt_an_indexed_row(db_path: &Path) {
    let db = Connection::open(db_path).expect("db");
    let (root, page_size): (u64, u64) = db
        .query_row(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size())
             FROM sqlite_schema WHERE name = 'ciphers'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("table root page");
    drop(db);
    let mut bytes = std::fs::read(db_path).expect("read db");
    let page = ((root - 1) * page_size) as usize..(root * page_size) as usize;
    let needle = b"alpha-000042";
    let at = bytes[page.clone()]
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the row is in the table's root page")
        + page.start;
    bytes[at..at + 5].copy_from_slice(b"omega");
    std::fs::write(db_path, bytes).expect("write db");

    let db = Connection::open(db_path).expect("db");
    let quick: String = db
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .expect("quick_check");
    let full: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(quick, "ok", "the fixture must be invisible to quick_check");
    assert_ne!(full, "ok", "the fixture must be visible to integrity_check");
}

#[test]
fn index_corruption_in_the_live_database_fails_the_run_before_anything_is_pinned() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let (data, config) = vault_source(&lab, "delete", &hook);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let good = pinned_ids(&lab, &data);

    corrupt_an_indexed_row(&data.join("db.sqlite3"));
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("integrity_check reported"),
        "{}",
        stdout(&out)
    );
    assert_eq!(pinned_ids(&lab, &data), good, "the pin did not move");
    assert_eq!(lab.snapshots(&data).len(), 1);
    assert!(!notifications(&hook).is_empty());
}

#[test]
fn a_copy_that_is_not_a_database_fails_its_source() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let (data, config) = vault_source(&lab, "delete", &hook);
    std::fs::write(data.join("db.sqlite3"), vec![b'x'; 8192]).expect("garbage");
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("not a database"), "{}", stdout(&out));
    assert!(lab.snapshots(&data).is_empty());
}

/// Waits for `child` at most `within`; kills it and fails the test if it is still running.
fn wait_bounded(mut child: std::process::Child, within: Duration) -> (Output, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return (child.wait_with_output().expect("output"), started.elapsed());
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_kopia_stand_in_that_hangs_on_snapshot_create_is_stopped_at_the_time_limit() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let data = lab.source_dir("files");
    std::fs::write(data.join("a"), "a").expect("file");
    let stand_in = common::hanging_kopia(&lab, 7431);
    let sources = format!(
        "[time-limit]\nrun = \"10s\"\n\n{}[[source]]\nname = \"files\"\npath = \"{}\"\n",
        notify_table(&lab, &hook),
        data.display()
    );
    let config = lab.write_config_with_top("backup.toml", "lock-timeout = \"1s\"", &sources);

    let run = lab
        .homelab()
        .env("HOMELAB_KOPIA", &stand_in)
        .args(["backup", "run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("homelab starts");
    // Bound against a hang of the test itself: the limit plus kopia's SIGTERM grace.
    let (out, _took) = wait_bounded(run, Duration::from_secs(90));
    common::report("homelab backup run (hanging kopia)", &out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("time limit of 10s was reached"),
        "{}",
        stdout(&out)
    );
    assert!(
        common::pids_with(&["sleep 7431"]).is_empty(),
        "the hung child is gone"
    );
    assert!(
        notifications(&hook)
            .iter()
            .any(|n| n.contains("time limit of 10s")),
        "{:?}",
        notifications(&hook)
    );
    // The lock is free: a run with a 1 s lock timeout gets it at once and succeeds.
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_frozen_s3_server_is_given_up_at_the_sync_time_limit_and_status_keeps_the_last_complete_sync() {
    if !require(&["kopia", "rclone"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let s3 = S3Server::start(lab.path("s3"));
    std::fs::create_dir_all(s3.root.join("mirror")).expect("bucket");
    let data = lab.source_dir("data");
    common::random_file(&data.join("one"), 1 << 20);
    let credentials = lab.s3_credentials(&s3.endpoint(), "mirror", S3_KEY_ID, S3_SECRET);
    let sources = format!(
        "[time-limit]\nsync = \"8s\"\n\n\
         [offsite]\ncredentials-file = \"{}\"\nattempts = 3\nretry-delay = \"1s\"\n\n{}\
         [[source]]\nname = \"data\"\npath = \"{}\"\n",
        credentials.display(),
        notify_table(&lab, &hook),
        data.display()
    );
    let config = lab.write_config_with_top("backup.toml", "lock-timeout = \"1s\"", &sources);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(
        lab.backup(&config, &["sync", "--init"]).status.code(),
        Some(0)
    );
    let (_, before) = status_json(&lab, &config);
    let complete = before["sync"]["last_complete_time"].clone();
    assert!(complete.is_string(), "{before}");

    common::random_file(&data.join("two"), 2 << 20);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let frozen = Pid::from_raw(s3.pid());
    kill(frozen, Signal::SIGSTOP).expect("freeze the S3 server");
    let sync = lab
        .homelab()
        .args(["backup", "sync", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("homelab starts");
    let result = std::panic::catch_unwind(|| wait_bounded(sync, Duration::from_secs(90)));
    kill(frozen, Signal::SIGCONT).expect("thaw the S3 server");
    let (out, _took) = result.expect("sync ended");
    common::report("homelab backup sync (frozen S3)", &out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("time limit of 8s was reached"),
        "{}",
        stderr(&out)
    );
    assert!(
        notifications(&hook)
            .iter()
            .any(|n| n.contains("time limit") && n.contains("the mirror was not completed")),
        "{:?}",
        notifications(&hook)
    );
    let (code, after) = status_json(&lab, &config);
    assert_eq!(
        after["sync"]["last_complete_time"], complete,
        "status shows the last sync that completed"
    );
    assert_eq!(after["sync"]["last_attempt_ok"], false);
    assert_eq!(
        code,
        Some(0),
        "the last complete sync is still within its RPO"
    );
    // The lock is free and the thawed server takes the next sync.
    assert_eq!(lab.backup(&config, &["sync"]).status.code(), Some(0));
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

/// Blob names in the bucket folder the S3 server serves.
fn bucket_objects(bucket: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bucket)
        .expect("bucket")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn verify_offsite_passes_on_a_good_mirror_and_fails_when_its_newest_packs_are_missing() {
    if !require(&["kopia", "rclone"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let s3 = S3Server::start(lab.path("s3"));
    let bucket = s3.root.join("mirror");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let data = lab.source_dir("photos");
    common::random_file(&data.join("old.jpg"), 2 << 20);
    let credentials = lab.s3_credentials(&s3.endpoint(), "mirror", S3_KEY_ID, S3_SECRET);
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[offsite]\ncredentials-file = \"{}\"\n\n{}\
             [[source]]\nname = \"photos\"\npath = \"{}\"\n",
            credentials.display(),
            notify_table(&lab, &hook),
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(
        lab.backup(&config, &["sync", "--init"]).status.code(),
        Some(0)
    );
    let first_sync = bucket_objects(&bucket);
    let out = lab.backup(&config, &["verify", "--offsite", "--percent", "100"]);
    assert_eq!(out.status.code(), Some(0), "a good mirror verifies");
    assert!(stdout(&out).contains("s3://mirror"), "{}", stdout(&out));
    assert!(
        std::fs::read_dir(lab.path("state"))
            .expect("state dir")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("offsite-")),
        "the mirror's client config (it holds the S3 keys) is removed"
    );

    // A second sync cut off after the index and manifests but before the new packs: remove
    // the packs it added.
    // Another size: `random_file` derives its bytes from the size, and equal bytes deduplicate.
    common::random_file(&data.join("new.jpg"), 3 << 20);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(lab.backup(&config, &["sync"]).status.code(), Some(0));
    let new_packs: Vec<String> = bucket_objects(&bucket)
        .into_iter()
        .filter(|name| name.starts_with('p') && !first_sync.contains(name))
        .collect();
    assert!(
        !new_packs.is_empty(),
        "the second sync uploaded packs: {:?}",
        bucket_objects(&bucket)
    );
    for pack in &new_packs {
        std::fs::remove_file(bucket.join(pack)).expect("remove pack");
    }
    // Without the local repository: the mirror is opened straight from the bucket.
    std::fs::rename(lab.path("repo"), lab.path("repo-away")).expect("move the repository");
    let out = lab.backup(&config, &["verify", "--offsite", "--percent", "0"]);
    assert_eq!(out.status.code(), Some(1), "missing packs are found");
    assert!(
        stderr(&out).contains("verification of the mirror s3://mirror failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        notifications(&hook)
            .iter()
            .any(|n| n.contains("did not verify")),
        "{:?}",
        notifications(&hook)
    );
}

#[test]
fn wrong_s3_keys_fail_at_once_without_retries_and_name_the_cause() {
    if !require(&["kopia", "rclone"]) {
        return;
    }
    let lab = Lab::new();
    let s3 = S3Server::start(lab.path("s3"));
    std::fs::create_dir_all(s3.root.join("mirror")).expect("bucket");
    let data = lab.source_dir("data");
    std::fs::write(data.join("a"), "a").expect("file");
    let config_with = |name: &str, key: &str, secret: &str| {
        let credentials = lab.s3_credentials(&s3.endpoint(), "mirror", key, secret);
        lab.write_config(
            name,
            &format!(
                "[offsite]\ncredentials-file = \"{}\"\nattempts = 5\nretry-delay = \"1m\"\n\n\
                 [[source]]\nname = \"data\"\npath = \"{}\"\n",
                credentials.display(),
                data.display()
            ),
        )
    };
    let good = config_with("good.toml", S3_KEY_ID, S3_SECRET);
    assert_eq!(lab.backup(&good, &["run"]).status.code(), Some(0));
    assert_eq!(
        lab.backup(&good, &["sync", "--init"]).status.code(),
        Some(0)
    );

    for (name, key, secret, cause) in [
        (
            "wrong-secret.toml",
            S3_KEY_ID,
            "not-the-secret",
            "rejected the secret key",
        ),
        (
            "wrong-key.toml",
            "nobody",
            S3_SECRET,
            "does not know the access key ID",
        ),
    ] {
        let config = config_with(name, key, secret);
        // Retried like a network error, five attempts with waits from a minute would take
        // over fifteen minutes; this bound only guards against a hang.
        let out = lab.backup(&config, &["sync"]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(stderr(&out).contains(cause), "{name}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("retrying"),
            "{name}: {}",
            stderr(&out)
        );
        let out = lab.backup(&config, &["verify", "--offsite"]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(stderr(&out).contains(cause), "{name}: {}", stderr(&out));
    }
}

#[test]
fn an_unwritable_metrics_file_still_prints_the_report_and_notifies_what_was_backed_up() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let data = lab.source_dir("files");
    std::fs::write(data.join("a"), "a").expect("file");
    // The textfile folder is a file: nothing can be written in it.
    std::fs::write(lab.path("metrics"), "in the way").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "{}[[source]]\nname = \"files\"\npath = \"{}\"\n",
            notify_table(&lab, &hook),
            data.display()
        ),
    );
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("ok    files"), "{}", stdout(&out));
    let metrics_path = lab.path("metrics").join("homelab_backup.prom");
    let shown = metrics_path.display().to_string();
    assert!(stderr(&out).contains(&shown), "{}", stderr(&out));
    let sent = notifications(&hook);
    assert!(
        sent.iter()
            .any(|n| n.contains(&shown) && n.contains("files: snapshot")),
        "{sent:?}"
    );
    assert_eq!(
        pinned_ids(&lab, &data).len(),
        1,
        "the snapshot itself is good"
    );
}

#[test]
fn drill_results_are_kept_in_the_state_and_a_failed_drill_fails_status() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("files");
    common::random_file(&data.join("photo"), 3 << 20);
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"files\"\npath = \"{}\"\n",
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(lab.backup(&config, &["drill"]).status.code(), Some(0));
    let (code, status) = status_json(&lab, &config);
    assert_eq!(code, Some(0));
    assert_eq!(status["sources"][0]["last_drill_ok"], true);
    assert!(status["sources"][0]["last_drill_time"].is_string());
    let metrics = std::fs::read_to_string(lab.path("metrics/homelab_backup.prom")).expect("prom");
    assert!(
        metrics.contains("homelab_backup_last_drill_success{source=\"files\"} 1"),
        "{metrics}"
    );

    // Every data pack damaged (a filesystem repository keeps them in folders named after the
    // blob ID's first characters, `p…`): the restore cannot succeed.
    let mut stack: Vec<PathBuf> = std::fs::read_dir(lab.path("repo"))
        .expect("repo")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('p') && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    let mut damaged = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("repo").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.metadata().expect("meta").len() > 4096 {
                let mut bytes = std::fs::read(&path).expect("pack");
                let middle = bytes.len() / 2;
                for b in &mut bytes[middle..middle + 64] {
                    *b ^= 0xff;
                }
                std::fs::write(&path, bytes).expect("damage");
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0, "found data packs to damage");
    assert_eq!(lab.backup(&config, &["drill"]).status.code(), Some(1));
    let (code, status) = status_json(&lab, &config);
    assert_eq!(code, Some(1), "{status}");
    assert_eq!(status["sources"][0]["last_drill_ok"], false);
    let out = lab.backup(&config, &["status"]);
    assert!(
        stdout(&out).contains("the last drill failed"),
        "{}",
        stdout(&out)
    );
    let metrics = std::fs::read_to_string(lab.path("metrics/homelab_backup.prom")).expect("prom");
    assert!(
        metrics.contains("homelab_backup_last_drill_success{source=\"files\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_live_database_truncated_to_nothing_is_refused_rather_than_pinned_over_real_data() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let (data, config) = vault_source(&lab, "wal", &hook);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let good = pinned_ids(&lab, &data);
    // An empty file is a valid, empty SQLite database; as a copy of Vaultwarden's it would be
    // the loss of every password.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("db.sqlite3{suffix}")));
    }
    std::fs::write(data.join("db.sqlite3"), "").expect("empty db");
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("empty"), "{}", stdout(&out));
    assert_eq!(pinned_ids(&lab, &data), good);
}
