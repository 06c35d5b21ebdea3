//! `homelab backup drill`: every source restored into a scratch folder and checked.

mod common;

use std::path::PathBuf;

use common::{Lab, require, status_json, stdout};

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
