//! The schemas `homelab check` carries are the ones the vendoring script makes. (That the tree
//! passes the check, and that every volume has its [[storage]] entry, are tests/check.rs's and
//! the rule storage/unlisted's.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require, stderr};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
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
