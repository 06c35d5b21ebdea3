//! `homelab backup sync` to an S3 server on loopback (rclone serve s3) standing in for R2: the
//! mirror, wrong buckets and keys, a frozen server, and a damaged mirror healed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    HttpStandIn, Lab, S3_KEY_ID, S3_SECRET, S3Server, notifications, notify_table, require,
    status_json, stderr, stdout, wait_bounded,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn credentials(lab: &Lab, endpoint: &str, bucket: &str) -> PathBuf {
    lab.s3_credentials(endpoint, bucket, S3_KEY_ID, S3_SECRET)
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files_under(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn mirror_snapshot_ids(lab: &Lab, s3: &S3Server, bucket: &str) -> Vec<String> {
    let config = lab.path(&format!("mirror-{bucket}.config"));
    let kopia = |args: &[&str]| {
        Command::new("kopia")
            .args(args)
            .args(["--no-progress", "--no-auto-maintenance"])
            .env("KOPIA_CONFIG_PATH", &config)
            .env("KOPIA_PASSWORD", "correct horse battery staple")
            .env("KOPIA_CHECK_FOR_UPDATES", "false")
            .env("KOPIA_LOG_DIR", lab.path("mirror-logs"))
            .output()
            .expect("kopia runs")
    };
    let out = kopia(&[
        "repository",
        "connect",
        "s3",
        "--bucket",
        bucket,
        "--endpoint",
        &format!("127.0.0.1:{}", s3.port),
        "--disable-tls",
        "--access-key",
        S3_KEY_ID,
        "--secret-access-key",
        S3_SECRET,
        "--readonly",
        "--cache-directory",
        &lab.path("mirror-cache").to_string_lossy(),
    ]);
    assert!(out.status.success(), "connect to mirror: {}", stderr(&out));
    let out = kopia(&["snapshot", "list", "--all", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut ids: Vec<String> = list
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The bytes of a blob in the local repository, as kopia stores them.
fn local_blob(lab: &Lab, id: &str) -> Vec<u8> {
    let out = lab.kopia(&["blob", "show", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
}

#[test]
fn sync_mirrors_refuses_wrong_buckets_and_retries_then_fails_when_s3_is_down() {
    if !require(&["kopia", "rclone"]) {
        return;
    }
    let lab = Lab::new();
    let hook = HttpStandIn::start();
    let mut s3 = S3Server::start(lab.path("s3"));
    std::fs::create_dir_all(s3.root.join("azalab-kopia")).expect("bucket");
    std::fs::create_dir_all(s3.root.join("someone-elses")).expect("bucket");
    std::fs::write(s3.root.join("someone-elses/keep.txt"), "not ours").expect("object");
    let data = lab.source_dir("data");
    common::random_file(&data.join("blob"), 3 << 20);
    let sources = |bucket: &str| {
        format!(
            "[offsite]\ncredentials-file = \"{}\"\nattempts = 3\nretry-delay = \"1s\"\n\n\
             [notify]\nwebhook-file = \"{}\"\n\n[[source]]\nname = \"data\"\npath = \"{}\"\n",
            credentials(&lab, &s3.endpoint(), bucket).display(),
            hook.url_file(&lab.path("webhook"), "/hc/fail").display(),
            data.display()
        )
    };
    let config = lab.write_config("backup.toml", &sources("azalab-kopia"));
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(0));

    // A bucket that holds no repository is refused: nothing gets written into it.
    let wrong = lab.write_config("wrong.toml", &sources("someone-elses"));
    let out = lab.backup(&wrong, &["sync"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds no Kopia repository"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        files_under(&s3.root.join("someone-elses")),
        1,
        "the wrong bucket is untouched"
    );
    assert_eq!(hook.received().len(), 1, "the refused sync notified");

    // The first sync is explicit; after it the bucket must hold this repository.
    let out = lab.backup(&config, &["sync", "--init"]);
    assert_eq!(out.status.code(), Some(0));
    std::fs::write(data.join("more"), "second snapshot").expect("file");
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(0));
    let out = lab.backup(&config, &["sync"]);
    assert_eq!(out.status.code(), Some(0));
    let mut local: Vec<String> = lab
        .snapshots(&data)
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    local.sort();
    assert_eq!(local.len(), 2);
    assert_eq!(
        mirror_snapshot_ids(&lab, &s3, "azalab-kopia"),
        local,
        "the mirror lists the same snapshots"
    );

    let out = lab.backup(&config, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["sync"]["stale"], false);

    // S3 down: retried with backoff, then exit 1 and a notification.
    s3.stop();
    let before = hook.received().len();
    let out = lab.backup(&config, &["sync"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.matches("retrying in").count(),
        2,
        "three attempts, two waits: {err}"
    );
    assert!(err.contains("gave up after 3 attempts"), "{err}");
    let sent = hook.received();
    assert_eq!(sent.len(), before + 1);
    assert!(
        sent.last()
            .expect("sent")
            .body
            .contains("backup sync failed")
    );
    let metrics =
        std::fs::read_to_string(lab.path("metrics/homelab_backup.prom")).expect("metrics");
    assert!(
        metrics.contains("homelab_backup_last_sync_success 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("homelab_backup_last_sync_timestamp_seconds "),
        "{metrics}"
    );
}

#[test]
fn a_damaged_mirror_is_found_and_repaired_from_the_local_copy() {
    if !require(&["kopia", "rclone"]) {
        return;
    }
    let lab = Lab::new();
    let s3 = S3Server::start(lab.path("s3"));
    let bucket = s3.root.join("azalab-kopia");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let data = lab.source_dir("data");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[offsite]\ncredentials-file = \"{}\"\nattempts = 1\n\n\
             [verify]\noffsite-pack-shares = 2\n\n[[source]]\nname = \"data\"\npath = \"{}\"\n",
            credentials(&lab, &s3.endpoint(), "azalab-kopia").display(),
            data.display()
        ),
    );
    common::random_file(&data.join("one"), 2 << 20);
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    assert_eq!(
        lab.backup(&config, &["sync", "--init"]).status.code(),
        Some(0)
    );

    // One metadata pack (q) loses its tail, one data pack (p) gets four bytes flipped.
    let pack = |prefix: char| {
        let mut packs: Vec<PathBuf> = std::fs::read_dir(&bucket)
            .expect("bucket")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .collect();
        packs.sort();
        packs
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("no {prefix} pack in the bucket"))
    };
    let id = |p: &PathBuf| p.file_name().expect("name").to_string_lossy().into_owned();
    let (truncated, flipped) = (pack('q'), pack('p'));
    let length = std::fs::metadata(&truncated).expect("pack").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .and_then(|f| f.set_len(length / 2))
        .expect("truncate");
    let mut bytes = std::fs::read(&flipped).expect("pack");
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 4] {
        *byte ^= 0xff;
    }
    std::fs::write(&flipped, &bytes).expect("flip");

    // The size is wrong: the next sync replaces that copy and says so.
    let out = lab.backup(&config, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("repaired the mirror: 1 damaged blob(s)") && said.contains(&id(&truncated)),
        "{said}"
    );
    assert_eq!(
        std::fs::read(&truncated).expect("pack"),
        local_blob(&lab, &id(&truncated))
    );
    // The flipped bytes kept the size: a listing cannot see them.
    assert_ne!(
        std::fs::read(&flipped).expect("pack"),
        local_blob(&lab, &id(&flipped))
    );

    // verify --offsite reads one share of the packs per run; within two runs every pack.
    let mut found = None;
    for run in 1..=2 {
        let out = lab.backup(&config, &["verify", "--offsite"]);
        if out.status.code() == Some(1) {
            assert!(stderr(&out).contains(&id(&flipped)), "{}", stderr(&out));
            found = Some(run);
            break;
        }
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("all equal to the local copies"),
            "{}",
            stdout(&out)
        );
    }
    assert!(found.is_some(), "two runs of two shares read every pack");
    let out = lab.backup(&config, &["status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a damaged mirror fails the status"
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        status["sync"]["damaged_blobs"][0],
        id(&flipped).as_str(),
        "{status}"
    );
    let metrics =
        std::fs::read_to_string(lab.path("metrics/homelab_backup.prom")).expect("metrics");
    assert!(
        metrics.contains("homelab_backup_mirror_damaged_blobs 1"),
        "{metrics}"
    );

    // The next sync deletes the rotten copy and uploads the local one again.
    let out = lab.backup(&config, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&id(&flipped)), "{}", stdout(&out));
    assert_eq!(
        std::fs::read(&flipped).expect("pack"),
        local_blob(&lab, &id(&flipped))
    );
    let out = lab.backup(&config, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["sync"]["damaged_blobs"], serde_json::json!([]));
    assert_eq!(status["sync"]["pack_shares_read"], found.expect("found"));

    // A damaged copy the bucket will not let go of (immutable on the server's disk): the sync
    // fails and names it, and status shows it, until a sync can replace it.
    let length = std::fs::metadata(&truncated).expect("pack").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .and_then(|f| f.set_len(length / 2))
        .expect("truncate");
    let chattr = |flag: &str| {
        let ok = Command::new("chattr")
            .arg(flag)
            .arg(&truncated)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chattr {flag} (needs root on ext4, as in CI)");
    };
    chattr("+i");
    let out = lab.backup(&config, &["sync"]);
    chattr("-i");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the mirror still differs") && stderr(&out).contains(&id(&truncated)),
        "{}",
        stderr(&out)
    );
    let out = lab.backup(&config, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        status["sync"]["differing_blobs"][0],
        id(&truncated).as_str(),
        "{status}"
    );
    let out = lab.backup(&config, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lab.backup(&config, &["status"]).status.code(), Some(0));
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
