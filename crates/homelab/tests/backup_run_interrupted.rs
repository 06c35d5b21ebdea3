//! `homelab backup run` stopped from outside: SIGKILL, SIGTERM during a capture or a quiesced
//! snapshot, a second run and the lock, a kopia that hangs past the time limit. Each ends with
//! nothing lost, the app started again, and the next run working.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    HttpStandIn, Lab, notifications, notify_table, pinned, require, spawn_run, stderr, stdout,
    wait_bounded, wait_for_process,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
