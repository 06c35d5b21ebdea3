//! `homelab backup run`: what a run captures, and what it refuses to call good — SQLite under a
//! busy writer, locked, corrupt or emptied; dumps (a real PostgreSQL); kopia saving errors;
//! excludes; retention; the metrics file. Real kopia, SQLite, PostgreSQL.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    HttpStandIn, Lab, Postgres, is_root, notifications, notify_table, pinned, require, spawn_run,
    status_json, stderr, stdout, wait_for_process,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
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

/// homelab and kopia copied into the lab and run as `nobody` (when we are root), so that a
/// folder with mode 000 is really unreadable to them.
fn run_unprivileged(lab: &Lab, config: &Path) -> std::process::Output {
    let bin = lab.path("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    for (from, name) in [
        (PathBuf::from(env!("CARGO_BIN_EXE_homelab")), "homelab"),
        (common::which("kopia").expect("kopia"), "kopia"),
    ] {
        std::fs::copy(&from, bin.join(name)).expect("copy binary");
    }
    let mut command = if is_root() {
        let status = Command::new("chown")
            .args(["-R", "nobody"])
            .arg(lab.dir.path())
            .status()
            .expect("chown");
        assert!(status.success());
        let mut command = Command::new("runuser");
        command
            .args(["-u", "nobody", "--"])
            .arg(bin.join("homelab"));
        command
    } else {
        Command::new(bin.join("homelab"))
    };
    let out = command
        .args(["backup", "run", "--config"])
        .arg(config)
        .env("HOMELAB_KOPIA", bin.join("kopia"))
        .env("HOME", lab.dir.path())
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("homelab runs");
    common::report("unprivileged backup run", &out);
    out
}

/// The clean snapshots of `source` and which of them carry the last-good pin.
fn pinned_ids(lab: &Lab, source: &Path) -> Vec<String> {
    lab.snapshots(source)
        .iter()
        .filter(|s| pinned(s))
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
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
fn postgres_dump_is_captured_drilled_and_loads_into_a_fresh_cluster() {
    if !require(&["kopia", "initdb", "pg_ctl", "pg_dumpall", "psql"]) {
        return;
    }
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE immich");
    pg.psql(
        "immich",
        "CREATE TABLE assets (id serial PRIMARY KEY, path text NOT NULL);
         INSERT INTO assets (path) SELECT 'upload/' || g || '.jpg' FROM generate_series(1, 1234) g;
         CREATE TABLE albums (id serial PRIMARY KEY, name text);
         INSERT INTO albums (name) VALUES ('holiday'), ('family');",
    );

    let lab = Lab::new();
    let immich = lab.source_dir("immich");
    std::fs::create_dir_all(immich.join("library/admin")).expect("dir");
    std::fs::write(immich.join("library/admin/a.jpg"), "jpeg").expect("file");
    std::fs::create_dir_all(immich.join("postgres")).expect("dir");
    std::fs::write(immich.join("postgres/PG_VERSION"), "15").expect("live data dir");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"immich\"\npath = \"{}\"\nexclude = [\"/postgres/\"]\n\
             [source.dump]\nfile = \"immich.sql\"\n\
             command = [\"pg_dumpall\", \"-h\", \"127.0.0.1\", \"-p\", \"{}\", \"-U\", \"postgres\", \"--clean\", \"--if-exists\"]\n\
             complete-marker = \"-- PostgreSQL database cluster dump complete\"\n",
            immich.display(),
            pg.port
        ),
    );
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(0));

    let restored = lab.path("drill");
    let out = lab.backup(&config, &["drill", "--keep", &restored.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("immich.sql"), "{}", stdout(&out));
    let dump = restored.join("immich/.homelab-backup/immich.sql");
    assert!(restored.join("immich/library/admin/a.jpg").exists());
    assert!(
        !restored.join("immich/postgres").exists(),
        "live database files are not snapshotted"
    );

    let fresh = Postgres::start();
    let errors = fresh.psql_file(&dump);
    let unexpected: Vec<&String> = errors
        .iter()
        .filter(|e| {
            !e.contains("current user cannot be dropped")
                && !e.contains("role \"postgres\" already exists")
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "loading the dump failed: {unexpected:?}"
    );
    assert_eq!(fresh.psql("immich", "SELECT count(*) FROM assets"), "1234");
    assert_eq!(fresh.psql("immich", "SELECT count(*) FROM albums"), "2");
    assert_eq!(
        fresh.psql("immich", "SELECT path FROM assets WHERE id = 1234"),
        "upload/1234.jpg"
    );
}

#[test]
fn a_database_held_in_an_exclusive_transaction_fails_its_source_and_keeps_the_previous_pin() {
    a_locked_database_fails_its_source(false);
}

#[test]
fn a_wal_database_held_with_exclusive_locking_mode_fails_its_source_and_keeps_the_previous_pin() {
    a_locked_database_fails_its_source(true);
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

#[test]
fn excludes_cannot_hide_the_staged_captures() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("app");
    std::fs::write(data.join(".hidden"), "excluded").expect("file");
    std::fs::write(data.join("keep.txt"), "kept").expect("file");
    std::fs::create_dir_all(data.join("sub")).expect("dir");
    rusqlite::Connection::open(data.join("sub/app.db"))
        .and_then(|db| db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);"))
        .expect("db");
    // Every one of these rules would match something in .homelab-backup/ on its own.
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"app\"\npath = \"{}\"\n\
             exclude = [\".*\", \"*.sql\", \"*.db\", \"/*/\"]\n\
             [source.sqlite]\ndatabases = [\"*/app.db\"]\n\
             [source.dump]\nfile = \"app.sql\"\ncommand = [\"echo\", \"dump\"]\n",
            data.display()
        ),
    );
    let out = lab.backup(&config, &["run", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = report["sources"][0]["snapshot_id"].as_str().expect("id");
    let listing = stdout(&lab.kopia(&["ls", "-r", id]));
    assert!(listing.contains(".homelab-backup/sub/app.db"), "{listing}");
    assert!(listing.contains(".homelab-backup/app.sql"), "{listing}");
    assert!(listing.contains("keep.txt"), "{listing}");
    assert!(!listing.contains(".hidden"), "{listing}");
    assert!(
        !listing.lines().any(|l| l.trim() == "sub/app.db"),
        "{listing}"
    );
    assert_eq!(lab.backup(&config, &["drill"]).status.code(), Some(0));
    // Written once; a second run finds the rules in place.
    let out = lab.backup(&config, &["run"]);
    assert!(
        !stderr(&out).contains("ignore rules updated"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_snapshot_kopia_saved_with_errors_is_discarded_and_the_last_good_kept() {
    if !require(&["kopia"]) || (is_root() && !require(&["runuser", "chown"])) {
        return;
    }
    let lab = Lab::new();
    let good = lab.source_dir("good");
    std::fs::write(good.join("f"), "fine").expect("file");
    let flaky = lab.source_dir("flaky");
    std::fs::create_dir_all(flaky.join("locked")).expect("dir");
    std::fs::write(flaky.join("locked/secret"), "data").expect("file");
    std::fs::write(flaky.join("readable"), "data").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"good\"\npath = \"{}\"\n\n[[source]]\nname = \"flaky\"\npath = \"{}\"\n",
            good.display(),
            flaky.display()
        ),
    );
    assert_eq!(run_unprivileged(&lab, &config).status.code(), Some(0));

    std::fs::set_permissions(flaky.join("locked"), std::fs::Permissions::from_mode(0o000))
        .expect("chmod");
    let out = run_unprivileged(&lab, &config);
    std::fs::set_permissions(flaky.join("locked"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod back");
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("ok    good"), "{report}");
    assert!(report.contains("FAIL  flaky"), "{report}");
    assert!(
        report.contains("has errors"),
        "kopia saved it with errors: {report}"
    );
    assert!(
        stderr(&out).contains("discarded a failed source's snapshot"),
        "{}",
        stderr(&out)
    );

    let flaky_snapshots = lab.snapshots(&flaky);
    assert_eq!(
        flaky_snapshots.len(),
        1,
        "only the first, good snapshot: {flaky_snapshots:?}"
    );
    assert!(pinned(&flaky_snapshots[0]));
    assert_eq!(flaky_snapshots[0]["rootEntry"]["summ"]["numFailed"], 0);
    assert_eq!(lab.snapshots(&good).len(), 2);
}

#[test]
fn kopia_dying_mid_batch_fails_only_the_unfinished_source() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let small = lab.source_dir("a-small");
    std::fs::write(small.join("f"), "small").expect("file");
    let big = lab.source_dir("b-big");
    std::fs::write(big.join("f"), "first").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"small\"\npath = \"{}\"\n\n[[source]]\nname = \"big\"\npath = \"{}\"\n",
            small.display(),
            big.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let big_before = lab.snapshots(&big);

    common::random_file(&big.join("blob"), 600 << 20);
    std::fs::write(small.join("f"), "changed").expect("file");
    let run = spawn_run(&lab, &config);
    let kopia = wait_for_process(
        &["snapshot", "create", &big.to_string_lossy()],
        Duration::from_secs(60),
    );
    // Let the small source (first in the batch) finish, then kill kopia inside the big one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.snapshots(&small).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the small source never got its snapshot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(kopia), Signal::SIGKILL).expect("kill kopia");
    let out = run.wait_with_output().expect("run ends");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("ok    small"), "{report}");
    assert!(report.contains("FAIL  big"), "{report}");
    let big_after = lab.snapshots(&big);
    assert_eq!(
        big_after.len(),
        big_before.len(),
        "no snapshot for the unfinished source"
    );
    assert!(
        big_after.iter().any(pinned),
        "its last good snapshot is still pinned"
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
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
fn a_missing_repository_is_created_only_when_the_config_says_so() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("data");
    std::fs::write(data.join("f"), "x").expect("file");
    let text = lab
        .config_text(
            "",
            &format!(
                "[[source]]\nname = \"data\"\npath = \"{}\"\n",
                data.display()
            ),
        )
        .replace("create = true", "create = false");
    let config = lab.path("backup.toml");
    std::fs::write(&config, text).expect("config");
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no Kopia repository at"),
        "{}",
        stderr(&out)
    );
    assert!(
        !lab.path("repo").join("kopia.repository.f").exists(),
        "nothing was created"
    );
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
