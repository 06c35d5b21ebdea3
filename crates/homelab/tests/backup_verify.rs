//! `homelab backup verify`, of the local repository and (`--offsite`) of the mirror.

mod common;

use std::path::{Path, PathBuf};

use common::{
    HttpStandIn, Lab, S3_KEY_ID, S3_SECRET, S3Server, notifications, notify_table, require, stderr,
    stdout,
};

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
