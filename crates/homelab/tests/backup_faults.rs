//! Faults during `homelab backup run`: each must end with nothing lost and the next run working.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lab, is_root, pinned, require, stderr, stdout};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn spawn_run(lab: &Lab, config: &Path) -> Child {
    lab.homelab()
        .args(["backup", "run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("homelab starts")
}

/// Waits until some process's command line contains all of `needles`; returns its pid.
fn wait_for_process(needles: &[&str], within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(pid) = common::pids_with(needles).first() {
            return *pid;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no process with {needles:?} appeared within {within:?}");
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at its state instead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after_name
                .split_whitespace()
                .next()
                .is_none_or(|state| state != "Z")
        })
        .unwrap_or(false)
}

#[test]
fn kill_9_mid_snapshot_loses_nothing_and_the_next_run_succeeds() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("big");
    std::fs::write(data.join("small"), "first").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"big\"\npath = \"{}\"\n[source.sqlite]\ndatabases = [\"*.db\"]\n",
            data.display()
        ),
    );
    rusqlite::Connection::open(data.join("app.db"))
        .and_then(|db| db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);"))
        .expect("db");
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(0));
    let first = lab.snapshots(&data);
    assert_eq!(first.len(), 1);

    common::random_file(&data.join("blob"), 400 << 20);
    let mut run = spawn_run(&lab, &config);
    let kopia = wait_for_process(
        &["snapshot", "create", &data.to_string_lossy()],
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(150));
    run.kill().expect("kill -9");
    let _ = run.wait();
    // The orphaned kopia is told to stop (parent-death signal) rather than writing on.
    let deadline = Instant::now() + Duration::from_secs(40);
    while alive(kopia) {
        assert!(
            Instant::now() < deadline,
            "kopia {kopia} outlived the killed run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let after_kill = lab.snapshots(&data);
    assert!(
        after_kill
            .iter()
            .any(|s| s["id"] == first[0]["id"] && pinned(s)),
        "the last good snapshot is still there and pinned: {after_kill:?}"
    );
    let out = lab.backup(&config, &["run", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the lock of the killed run is recovered"
    );
    assert!(!data.join(".homelab-backup").exists());
    // kopia, told to stop by the parent-death signal, may have saved a "canceled" snapshot
    // carrying the pin; the successful run released every older pin.
    let pinned_now: Vec<serde_json::Value> =
        lab.snapshots(&data).into_iter().filter(pinned).collect();
    assert_eq!(
        pinned_now.len(),
        1,
        "one pin, on the new snapshot: {pinned_now:?}"
    );
    assert_eq!(pinned_now[0]["rootEntry"]["summ"]["numFailed"], 0);
    assert!(pinned_now[0].get("incomplete").is_none(), "{pinned_now:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(report["sources"][0]["bytes"].as_u64().expect("bytes") > 400 << 20);
    let out = lab.backup(&config, &["drill"]);
    assert_eq!(out.status.code(), Some(0));
    let out = lab.backup(&config, &["status"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_second_run_waits_for_the_lock_or_gives_up_clearly() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("slow");
    let sources = format!(
        "[[source]]\nname = \"slow\"\npath = \"{}\"\n\
         [source.dump]\nfile = \"slow.txt\"\ncommand = [\"sh\", \"-c\", \"sleep 4; echo done\"]\n",
        data.display()
    );
    let config = lab.write_config("backup.toml", &sources);
    let impatient = lab.write_config_with_top("impatient.toml", "lock-timeout = \"1s\"", &sources);
    let patient = lab.write_config_with_top("patient.toml", "lock-timeout = \"2m\"", &sources);

    let first = spawn_run(&lab, &config);
    wait_for_process(&["sleep 4; echo done"], Duration::from_secs(60));
    let out = lab.backup(&impatient, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("another backup job holds"), "{err}");
    assert!(err.contains("backup run, pid"), "names the holder: {err}");

    let out = lab.backup(&patient, &["run"]);
    assert_eq!(out.status.code(), Some(0), "a patient run waits its turn");
    assert!(stderr(&out).contains("waiting for the backup lock"));
    let first = first.wait_with_output().expect("first run");
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(lab.snapshots(&data).len(), 2);
}

/// A source standing for Tuwunel: "stopping the app" creates a marker file, "starting" removes
/// it. `more` is appended to the source's tables. Returns the source, the marker and the config.
fn quiesced_source(lab: &Lab, more: &str) -> (PathBuf, PathBuf, PathBuf) {
    let data = lab.source_dir("tuwunel");
    std::fs::write(data.join("db"), "rocks").expect("file");
    let stopped = lab.path("app-stopped");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"tuwunel\"\npath = \"{data}\"\n\
             [source.quiesce]\nstop = [[\"touch\", \"{stopped}\"]]\nstart = [[\"rm\", \"{stopped}\"]]\n{more}",
            data = data.display(),
            stopped = stopped.display()
        ),
    );
    (data, stopped, config)
}

#[test]
fn sigterm_during_a_capture_restarts_the_app_and_leaves_no_snapshot() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let (data, stopped, config) = quiesced_source(
        &lab,
        "[source.dump]\nfile = \"media.txt\"\ncommand = [\"sh\", \"-c\", \"sleep 60; echo late\"]\n",
    );
    let run = spawn_run(&lab, &config);
    wait_for_process(&["sleep 60; echo late"], Duration::from_secs(60));
    assert!(stopped.exists(), "the app was stopped before the capture");
    let started = Instant::now();
    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let out = run.wait_with_output().expect("run ends");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "SIGTERM must not wait for the dump"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stopped.exists(), "the start command ran after SIGTERM");
    assert!(
        !data.join(".homelab-backup").exists(),
        "staging removed after SIGTERM"
    );
    assert!(lab.snapshots(&data).is_empty());
    assert!(String::from_utf8_lossy(&out.stdout).contains("termination signal"));
}

#[test]
fn unreadable_configuration_is_a_usage_error() {
    let lab = Lab::new();
    let out = lab.backup(&lab.path("missing.toml"), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
    let config = lab.write_config(
        "backup.toml",
        "[[source]]\nname = \"a\"\npath = \"/srv/a\"\n",
    );
    let out = lab.backup(&config, &["run", "--source", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--source nope: no such source"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
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
fn sigterm_during_a_quiesced_snapshot_discards_it_and_restarts_the_app() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let (data, stopped, config) = quiesced_source(&lab, "");
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert!(
        !stopped.exists(),
        "the app was started again after a good snapshot"
    );
    let first = lab.snapshots(&data);

    common::random_file(&data.join("media"), 600 << 20);
    let run = spawn_run(&lab, &config);
    wait_for_process(
        &["snapshot", "create", &data.to_string_lossy()],
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let out = run.wait_with_output().expect("run ends");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stopped.exists(), "the app was started again");
    // kopia answers SIGTERM by saving a "canceled" snapshot, pinned and tagged like a good one:
    // the run must remove it.
    let after = lab.snapshots(&data);
    assert_eq!(
        after.len(),
        1,
        "only the earlier good snapshot remains: {after:?}"
    );
    assert_eq!(after[0]["startTime"], first[0]["startTime"]);
    assert!(pinned(&after[0]));
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let pins = lab.snapshots(&data).iter().filter(|s| pinned(s)).count();
    assert_eq!(pins, 1);
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
