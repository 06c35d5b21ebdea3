//! `homelab backup sync` to an S3 server on loopback (rclone) standing in for R2, and
//! `homelab backup verify` against a damaged repository.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{HttpStandIn, Lab, S3_KEY_ID, S3_SECRET, S3Server, require, stderr, stdout};

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
fn verify_reports_a_corrupted_blob() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("photos");
    for i in 0..4 {
        common::random_file(&data.join(format!("img{i}.jpg")), 2 << 20);
    }
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"photos\"\npath = \"{}\"\n",
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let out = lab.backup(&config, &["verify", "--percent", "100"]);
    assert_eq!(out.status.code(), Some(0), "a healthy repository verifies");

    // Flip bytes in the middle of the largest data pack (blob IDs starting with `p` live in
    // sharded folders named after their first characters).
    let mut packs: Vec<(u64, PathBuf)> = Vec::new();
    let repo = lab.path("repo");
    let mut stack: Vec<PathBuf> = std::fs::read_dir(&repo)
        .expect("repo")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('p') && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("repo dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                packs.push((entry.metadata().expect("meta").len(), path));
            }
        }
    }
    packs.sort();
    let (size, pack) = packs.pop().expect("a data pack");
    let mut bytes = std::fs::read(&pack).expect("read pack");
    let middle = (size / 2) as usize;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&pack, bytes).expect("corrupt pack");

    let out = lab.backup(&config, &["verify", "--percent", "100"]);
    assert_eq!(out.status.code(), Some(1), "verify must report the damage");
    assert!(
        stderr(&out).contains("verification of the local repository failed"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

/// The bytes of a blob in the local repository, as kopia stores them.
fn local_blob(lab: &Lab, id: &str) -> Vec<u8> {
    let out = lab.kopia(&["blob", "show", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
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
