//! `homelab backup restore` against real kopia, SQLite, PostgreSQL and the loopback S3 server:
//! beside the live data, in place (stop, set aside, swap, start, load the dump), from the mirror
//! with a fallback past snapshots whose packs never arrived, and the refusals.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{
    Lab, Postgres, S3_KEY_ID, S3_SECRET, S3Server, assert_same_files, file_tree, require, stderr,
    stdout,
};
use rusqlite::Connection;

fn rows(db: &Path) -> i64 {
    Connection::open(db)
        .and_then(|c| c.query_row("SELECT count(*) FROM ciphers", [], |r| r.get(0)))
        .expect("count rows")
}

fn integrity(db: &Path) -> String {
    Connection::open(db)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
        .expect("integrity_check")
}

/// A Vaultwarden-shaped source: a WAL-mode database with `n` rows and attachments.
fn vault(lab: &Lab, n: i64) -> PathBuf {
    let data = lab.source_dir("vaultwarden");
    std::fs::create_dir_all(data.join("attachments/abc")).expect("dir");
    std::fs::write(data.join("attachments/abc/file.bin"), b"attachment v1").expect("file");
    std::fs::write(data.join("config.json"), b"{\"domain\":\"https://vault\"}").expect("file");
    std::fs::create_dir_all(data.join("icon_cache")).expect("dir");
    std::fs::write(data.join("icon_cache/x.png"), b"icon").expect("file");
    let db = Connection::open(data.join("db.sqlite3")).expect("db");
    db.pragma_update(None, "journal_mode", "wal").expect("wal");
    db.execute_batch("CREATE TABLE ciphers (id INTEGER PRIMARY KEY, name TEXT)")
        .expect("schema");
    for i in 0..n {
        db.execute("INSERT INTO ciphers (name) VALUES (?1)", [format!("c{i}")])
            .expect("insert");
    }
    // The writer stays open: the live database keeps a -wal file beside it.
    std::mem::forget(db);
    data
}

fn vault_config(lab: &Lab, data: &Path, restore: &str) -> PathBuf {
    lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"vaultwarden\"\npath = \"{}\"\nexclude = [\"/icon_cache/\"]\n\
             [source.sqlite]\ndatabases = [\"db.sqlite3\"]\n{restore}",
            data.display()
        ),
    )
}

#[test]
fn restore_to_a_target_puts_each_database_in_place_and_touches_nothing_live() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = vault(&lab, 40);
    let config = vault_config(&lab, &data, "");
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let captured = file_tree(&data, &["icon_cache", "db.sqlite3"]);
    let live_before = file_tree(&data, &[]);

    let target = lab.path("restored");
    let out = lab.backup(
        &config,
        &[
            "restore",
            "--source",
            "vaultwarden",
            "--target",
            &target.to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("nothing live was touched"));
    assert_eq!(
        file_tree(&data, &[]),
        live_before,
        "the live source is untouched"
    );
    assert_eq!(
        file_tree(&target, &["db.sqlite3", ".homelab-backup"]),
        captured,
        "every other file is back, byte for byte"
    );
    let db = target.join("db.sqlite3");
    assert_eq!(integrity(&db), "ok");
    assert_eq!(rows(&db), 40);
    for side in ["db.sqlite3-wal", "db.sqlite3-shm"] {
        assert!(!target.join(side).exists(), "no {side} beside the copy");
    }
}

#[test]
fn restore_in_place_stops_sets_aside_swaps_and_starts_the_app() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = vault(&lab, 25);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let log = lab.path("app.log");
    let restore = format!(
        "[source.restore]\nstop = [[\"sh\", \"-c\", \"echo stop >> {log}\"]]\n\
         start = [[\"sh\", \"-c\", \"echo start >> {log}\"]]\nkeep = [\"icon_cache\"]\n",
        log = log.display()
    );
    let config = vault_config(&lab, &data, &restore);
    // Vaultwarden runs as nobody: its database must come back owned by it.
    let as_root = common::is_root();
    if as_root {
        std::os::unix::fs::chown(data.join("db.sqlite3"), Some(65534), Some(65534)).expect("chown");
    }
    std::fs::set_permissions(
        data.join("db.sqlite3"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let captured = file_tree(&data, &["icon_cache", "db.sqlite3"]);

    // What happened after the backup, and will be undone.
    std::fs::write(data.join("attachments/abc/file.bin"), b"overwritten").expect("file");
    std::fs::write(data.join("stray.txt"), b"new").expect("file");
    Connection::open(data.join("db.sqlite3"))
        .and_then(|c| c.execute("DELETE FROM ciphers WHERE id > 5", []))
        .expect("delete rows");
    let damaged = file_tree(&data, &[]);

    let out = lab.backup(
        &config,
        &[
            "restore",
            "--source",
            "vaultwarden",
            "--in-place",
            "--dry-run",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("move"), "{}", stdout(&out));
    assert!(stdout(&out).contains("dry run: nothing was changed"));
    assert_same_files(
        &file_tree(&data, &[]),
        &damaged,
        "a dry run changes nothing",
    );
    assert!(!log.exists(), "a dry run stops nothing");

    let out = lab.backup(
        &config,
        &["restore", "--source", "vaultwarden", "--in-place"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "stop\nstart\n",
        "stopped once, started once"
    );
    assert_same_files(
        &file_tree(&data, &["icon_cache", "db.sqlite3"]),
        &captured,
        "restored in place",
    );
    assert_eq!(rows(&data.join("db.sqlite3")), 25);
    let db_meta = std::fs::metadata(data.join("db.sqlite3")).expect("db");
    assert_eq!(
        db_meta.permissions().mode() & 0o7777,
        0o600,
        "the live database's mode"
    );
    if as_root {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (db_meta.uid(), db_meta.gid()),
            (65534, 65534),
            "the live database's owner"
        );
    }
    assert_eq!(integrity(&data.join("db.sqlite3")), "ok");
    assert!(!data.join("db.sqlite3-wal").exists());
    assert!(!data.join(".homelab-backup").exists());
    assert_eq!(
        std::fs::read(data.join("icon_cache/x.png")).expect("kept"),
        b"icon",
        "what the snapshot leaves out is carried over"
    );
    assert_eq!(
        std::fs::metadata(&data).expect("meta").permissions().mode() & 0o7777,
        0o750
    );
    let aside: Vec<PathBuf> = std::fs::read_dir(data.parent().expect("parent"))
        .expect("src")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("vaultwarden.before-restore-"))
        .collect();
    assert_eq!(aside.len(), 1, "the previous data is set aside: {aside:?}");
    let kept = file_tree(&aside[0], &[]);
    assert_eq!(
        kept.get(Path::new("stray.txt")).map(Vec::as_slice),
        Some(&b"new"[..])
    );
    assert!(
        stdout(&out).contains(&aside[0].display().to_string()),
        "{}",
        stdout(&out)
    );
    // The restored source backs up again as usual.
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
}

#[test]
fn restore_refuses_what_would_touch_live_data_or_cannot_be_undone() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = vault(&lab, 3);
    let config = vault_config(&lab, &data, "");
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let occupied = lab.path("occupied");
    std::fs::create_dir_all(&occupied).expect("dir");
    std::fs::write(occupied.join("x"), "x").expect("file");
    let cases = [
        (vec!["--in-place".to_owned()], "its app cannot be stopped"),
        (
            vec![
                "--target".to_owned(),
                data.join("sub").display().to_string(),
            ],
            "overlaps the live source",
        ),
        (
            vec![
                "--target".to_owned(),
                lab.path("repo/inside").display().to_string(),
            ],
            "inside (or around) the repository",
        ),
        (
            vec!["--target".to_owned(), occupied.display().to_string()],
            "not empty",
        ),
        (
            vec![
                "--target".to_owned(),
                format!("{}/../vaultwarden/sneaky", lab.path("elsewhere").display()),
            ],
            "without `.` or `..`",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["restore", "--source", "vaultwarden"];
        all.extend(args.iter().map(String::as_str));
        let out = lab.backup(&config, &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(!data.join("sub").exists());
}

#[test]
fn a_stop_command_that_fails_leaves_the_live_data_as_it_was_and_starts_the_app() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = vault(&lab, 3);
    let log = lab.path("app.log");
    let restore = format!(
        "[source.restore]\nstop = [[\"sh\", \"-c\", \"echo cannot stop >&2; exit 3\"]]\n\
         start = [[\"sh\", \"-c\", \"echo start >> {}\"]]\n",
        log.display()
    );
    let config = vault_config(&lab, &data, &restore);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let before = file_tree(&data, &[]);
    let out = lab.backup(
        &config,
        &["restore", "--source", "vaultwarden", "--in-place"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing live was touched"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("cannot stop"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "start\n");
    assert_same_files(&file_tree(&data, &[]), &before, "the live data");
    let siblings: Vec<String> = std::fs::read_dir(data.parent().expect("parent"))
        .expect("src")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        siblings,
        ["vaultwarden"],
        "no partial restore is left behind"
    );
}

#[test]
fn restore_in_place_loads_the_postgres_dump_as_immich_needs() {
    if !require(&["kopia", "initdb", "pg_ctl", "pg_dumpall", "psql"]) {
        return;
    }
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE immich");
    pg.psql(
        "immich",
        "CREATE TABLE assets (id serial PRIMARY KEY, path text NOT NULL);
         INSERT INTO assets (path) SELECT 'upload/' || g || '.jpg' FROM generate_series(1, 500) g;",
    );
    let lab = Lab::new();
    let immich = lab.source_dir("immich");
    std::fs::create_dir_all(immich.join("library/admin")).expect("dir");
    std::fs::write(immich.join("library/admin/a.jpg"), "jpeg").expect("file");
    std::fs::create_dir_all(immich.join("postgres")).expect("dir");
    std::fs::write(immich.join("postgres/PG_VERSION"), "15").expect("live data dir");
    let port = pg.port.to_string();
    let psql = format!(
        "[\"psql\", \"-h\", \"127.0.0.1\", \"-p\", \"{port}\", \"-U\", \"postgres\", \"-d\", \"postgres\", \"-q\"]"
    );
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"immich\"\npath = \"{}\"\nexclude = [\"/postgres/\"]\n\
             [source.dump]\nfile = \"immich.sql\"\n\
             command = [\"pg_dumpall\", \"-h\", \"127.0.0.1\", \"-p\", \"{port}\", \"-U\", \"postgres\", \"--clean\", \"--if-exists\"]\n\
             complete-marker = \"-- PostgreSQL database cluster dump complete\"\n\
             [source.restore]\nstop = []\nkeep = [\"postgres\"]\nload-dump = {psql}\n",
            immich.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    pg.psql("immich", "DELETE FROM assets WHERE id > 10");
    std::fs::remove_file(immich.join("library/admin/a.jpg")).expect("lose a photo");

    let out = lab.backup(&config, &["restore", "--source", "immich", "--in-place"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(pg.psql("immich", "SELECT count(*) FROM assets"), "500");
    assert_eq!(
        std::fs::read(immich.join("library/admin/a.jpg")).expect("photo"),
        b"jpeg"
    );
    assert_eq!(
        std::fs::read(immich.join("postgres/PG_VERSION")).expect("kept"),
        b"15",
        "the live Postgres folder stays with the app"
    );
}

#[test]
fn restore_from_the_mirror_falls_back_to_the_newest_snapshot_that_verifies() {
    if !require(&["kopia", "rclone"]) {
        return;
    }
    let lab = Lab::new();
    let s3 = S3Server::start(lab.path("s3"));
    let bucket = s3.root.join("mirror");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let data = lab.source_dir("photos");
    common::random_file(&data.join("old.jpg"), 2 << 20);
    let credentials = lab.s3_credentials(&s3.endpoint(), "mirror", S3_KEY_ID, S3_SECRET);
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[offsite]\ncredentials-file = \"{}\"\n\n[[source]]\nname = \"photos\"\npath = \"{}\"\n",
            credentials.display(),
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(
        lab.backup(&config, &["sync", "--init"]).status.code(),
        Some(0)
    );
    let first = file_tree(&data, &[]);
    let before: Vec<String> = std::fs::read_dir(&bucket)
        .expect("bucket")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    common::random_file(&data.join("new.jpg"), 3 << 20);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(lab.backup(&config, &["sync"]).status.code(), Some(0));
    // The second sync "cut off": its packs never arrived.
    for entry in std::fs::read_dir(&bucket).expect("bucket").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('p') && !before.contains(&name) {
            std::fs::remove_file(entry.path()).expect("remove pack");
        }
    }
    // The host is gone: no local repository, no sources.
    std::fs::remove_dir_all(lab.path("repo")).expect("lose the repository");
    std::fs::remove_dir_all(&data).expect("lose the data");

    let target = lab.path("restored");
    let out = lab.backup(
        &config,
        &[
            "restore",
            "--source",
            "photos",
            "--from",
            "offsite",
            "--target",
            &target.to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("does not verify, trying an older one"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        file_tree(&target, &[]),
        first,
        "the older, whole snapshot came back"
    );
}

#[test]
fn names_kopia_cannot_keep_apart_are_reported_not_silently_merged() {
    if !require(&["kopia"]) {
        return;
    }
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let lab = Lab::new();
    let data = lab.source_dir("files");
    // Two names that are not UTF-8: kopia stores both as `a\u{fffd}`, so one overwrites the
    // other on restore.
    std::fs::write(data.join(OsStr::from_bytes(b"a\xff")), "one").expect("file");
    std::fs::write(data.join(OsStr::from_bytes(b"a\xfe")), "two").expect("file");
    std::fs::write(data.join("ok"), "fine").expect("file");
    let log = lab.path("app.log");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"files\"\npath = \"{}\"\n\
             [source.restore]\nstop = [[\"sh\", \"-c\", \"echo stop >> {}\"]]\nstart = [[\"true\"]]\n",
            data.display(),
            log.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let before = file_tree(&data, &[]);
    let out = lab.backup(&config, &["restore", "--source", "files", "--in-place"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("restored 2 files / 7 bytes / 0 symlinks, the snapshot has 3"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("nothing live was touched"),
        "{}",
        stderr(&out)
    );
    assert!(!log.exists(), "the app was never stopped");
    assert_same_files(&file_tree(&data, &[]), &before, "the live data");
}

#[test]
fn a_database_behind_a_symlink_is_never_written_through_it() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    // The app keeps its database elsewhere and the source links to it: the link is snapshotted
    // as a link, so a restored tree points at the live database.
    let elsewhere = lab.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("dir");
    let db = Connection::open(elsewhere.join("db.sqlite3")).expect("db");
    db.execute_batch("CREATE TABLE ciphers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO ciphers (name) VALUES ('live');")
        .expect("schema");
    drop(db);
    let data = lab.source_dir("linked");
    std::os::unix::fs::symlink(&elsewhere, data.join("data")).expect("symlink");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"linked\"\npath = \"{}\"\n[source.sqlite]\ndatabases = [\"data/db.sqlite3\"]\n",
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let live_before = std::fs::read(elsewhere.join("db.sqlite3")).expect("live db");
    let target = lab.path("restored");
    let out = lab.backup(
        &config,
        &[
            "restore",
            "--source",
            "linked",
            "--target",
            &target.to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("through a symlink"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(elsewhere.join("db.sqlite3")).expect("live db"),
        live_before,
        "the live database behind the link is untouched"
    );
}

/// A kopia that, for `snapshot restore`, writes part of the target and then hangs (a restore
/// killed half-way); the real kopia for everything else. A stand-in, named so: the test kills
/// homelab at this point, deterministically, once the partial folder is there.
fn half_restoring_kopia(lab: &Lab) -> PathBuf {
    let kopia = common::which("kopia").expect("kopia");
    common::script(
        &lab.path("half-restoring-kopia"),
        &format!(
            "#!/bin/sh\nif [ \"$1 $2\" = \"snapshot restore\" ]; then mkdir -p \"$4\" && \
             echo partial > \"$4/partial.bin\" && exec sleep 600; fi\nexec {} \"$@\"\n",
            kopia.display()
        ),
    )
}

fn siblings_named(data: &Path, infix: &str) -> Vec<PathBuf> {
    let name = data
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mut found: Vec<PathBuf> = std::fs::read_dir(data.parent().expect("parent"))
        .expect("parent")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}.{infix}-")))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn leftovers_of_interrupted_restores_are_removed_or_named_and_status_lists_what_was_set_aside() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("notes");
    std::fs::write(data.join("a.txt"), "backed up").expect("file");
    // A plain source: nothing to stop, no captures.
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"notes\"\npath = \"{}\"\n[source.restore]\nstop = []\nstart = []\n",
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));

    // Killed while kopia restores: the partial folder stays behind.
    let mut child = lab
        .homelab()
        .args([
            "backup",
            "restore",
            "--source",
            "notes",
            "--in-place",
            "--config",
        ])
        .arg(&config)
        .env("HOMELAB_KOPIA", half_restoring_kopia(&lab))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("homelab runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !siblings_named(&data, "restoring")
        .iter()
        .any(|p| p.join("partial.bin").exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    let partial = siblings_named(&data, "restoring");
    assert_eq!(partial.len(), 1, "{partial:?}");

    // The rerun removes it and says so; a plain source gets no warning about captures.
    let out = lab.backup(&config, &["restore", "--source", "notes", "--in-place"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "removed {}, left by an interrupted restore",
            partial[0].display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(!partial[0].exists());
    assert!(
        !stderr(&out).contains("cannot remove"),
        "no warning on a plain source: {}",
        stderr(&out)
    );
    let aside = siblings_named(&data, "before-restore");
    assert_eq!(aside.len(), 1, "{aside:?}");

    // Killed between setting the live data aside and the swap: no live folder, the previous
    // data in its set-aside copy. The rerun names that copy as the previous data.
    std::fs::remove_dir_all(&data).expect("as the kill left it");
    let out = lab.backup(&config, &["restore", "--source", "notes", "--in-place"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "the previous data is in {}, set aside by an interrupted restore",
            aside[0].display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("there was no previous data"));

    // `backup status` lists what restores set aside, with size and age.
    let out = lab.backup(&config, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let copies = status["sources"][0]["set_aside"]
        .as_array()
        .expect("set_aside");
    assert_eq!(copies.len(), 1, "{status}");
    assert_eq!(copies[0]["path"], aside[0].display().to_string().as_str());
    assert_eq!(copies[0]["bytes"], 9, "{status}");
    assert!(copies[0]["age_seconds"].is_u64(), "{status}");
    let out = lab.backup(&config, &["status"]);
    assert!(
        stdout(&out).contains("set aside by an in-place restore"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_job_that_cannot_save_its_outcome_fails_status_instead_of_showing_an_older_one() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("notes");
    common::random_file(&data.join("a.bin"), 4 << 20);
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"notes\"\npath = \"{}\"\n",
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(lab.backup(&config, &["status"]).status.code(), Some(0));
    // The state file cannot be replaced (a folder stands where it goes; root ignores modes).
    let state = lab.path("state/state.json");
    std::fs::remove_file(&state).expect("rm");
    std::fs::create_dir(&state).expect("in the way");
    let out = lab.backup(&config, &["drill"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = lab.backup(&config, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("the last `backup drill` could not save its outcome"),
        "{}",
        stdout(&out)
    );
    // The drill's restores do not stay in kopia's cache.
    let cached: u64 = common::file_tree(&lab.path("state/kopia/cache"), &[])
        .values()
        .map(|bytes| bytes.len() as u64)
        .sum();
    assert!(cached < 64 * 1024, "{cached} bytes left in kopia's cache");
    // Once it can save again, the marker goes (the state file lost above is written anew by
    // the next run).
    std::fs::remove_dir(&state).expect("rm");
    assert_eq!(lab.backup(&config, &["drill"]).status.code(), Some(0));
    let out = lab.backup(&config, &["status"]);
    assert!(
        !stdout(&out).contains("could not save its outcome"),
        "{}",
        stdout(&out)
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(lab.backup(&config, &["status"]).status.code(), Some(0));
}
