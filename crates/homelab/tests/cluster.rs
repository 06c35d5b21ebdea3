//! The Flux tree passes `homelab check` (the native loader, vendored strict schemas and rules;
//! tests/check.rs breaks it one rule at a time), its schemas are the ones the vendoring script
//! makes, and every volume has the host-side storage entry that creates it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require, stderr, stdout};

const CLUSTER: &str = "flux/clusters/azalab-0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

#[test]
fn the_cluster_tree_passes_homelab_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("check")
        .arg(repo())
        .output()
        .expect("homelab runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The schemas inside the binary are exactly what scripts/vendor-check-schemas.py makes from its
/// pinned sources (kubernetes-validate from .ci/requirements.txt, ../shared/schemas/crds).
#[test]
fn the_vendored_schemas_are_what_the_script_makes() {
    if !require(&["python3"]) {
        return;
    }
    let has_package = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_package {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubernetes-validate (.ci/requirements.txt) is not importable by python3"
        );
        eprintln!("SKIPPED: kubernetes-validate is not installed (run .ci/run)");
        return;
    }
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new("python3")
        .arg(repo().join("scripts/vendor-check-schemas.py"))
        .arg(out_dir.path())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let vendored = repo().join("crates/homelab/schemas");
    for file in ["kubernetes.json", "crds.json", "LICENSE-crds"] {
        let made = std::fs::read(out_dir.path().join(file)).expect("made");
        let kept = std::fs::read(vendored.join(file)).expect("vendored");
        assert!(
            made == kept,
            "crates/homelab/schemas/{file} differs from what the script makes: run scripts/vendor-check-schemas.py"
        );
    }
}

#[test]
fn every_volume_and_backup_source_under_srv_is_in_the_hosts_storage_tree() {
    let facts: toml::Table = std::fs::read_to_string(repo().join("homelab.toml"))
        .expect("homelab.toml")
        .parse()
        .expect("TOML");
    let storage: Vec<&str> = facts["storage"]
        .as_array()
        .expect("[[storage]]")
        .iter()
        .map(|s| s["path"].as_str().expect("path"))
        .collect();
    let volumes = std::fs::read_to_string(
        repo()
            .join(CLUSTER)
            .join("manifests/cluster/persistent-volumes.yaml"),
    )
    .expect("volumes");
    let host_paths: Vec<&str> = volumes
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path: "))
        .collect();
    assert!(!host_paths.is_empty());
    for path in &host_paths {
        assert!(
            storage.contains(path),
            "volume {path} has no [[storage]] entry (owner, mode)"
        );
    }
    for source in facts["backup"]["source"].as_array().expect("sources") {
        let path = source["path"].as_str().expect("path");
        if path.starts_with("/srv/") {
            assert!(
                storage.contains(&path),
                "backup source {path} has no [[storage]] entry"
            );
        }
    }
}
