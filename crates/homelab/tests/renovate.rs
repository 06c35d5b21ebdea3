//! Pins stay current: every image and chart pin in the Flux tree is one Renovate would update.
//! The config itself is validated offline by `renovate-config-validator` in `.ci/run`.

mod common;

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn renovate() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("renovate.json")).expect("renovate.json");
    serde_json::from_str(&text).expect("renovate.json is JSON")
}

/// A Renovate pattern `/…/` as a regex (JavaScript and Rust agree on what is used here).
fn pattern(value: &serde_json::Value) -> regex::Regex {
    let text = value.as_str().expect("a pattern");
    let inner = text
        .strip_prefix('/')
        .and_then(|t| t.strip_suffix('/'))
        .unwrap_or(text);
    regex::Regex::new(inner).expect("a valid pattern")
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn every_image_and_chart_pin_in_the_tree_has_a_renovate_rule_that_updates_it() {
    let config = renovate();
    let kubernetes: Vec<regex::Regex> = config["kubernetes"]["managerFilePatterns"]
        .as_array()
        .expect("kubernetes manager patterns")
        .iter()
        .map(pattern)
        .collect();
    let annotated: Vec<(Vec<regex::Regex>, regex::Regex)> = config["customManagers"]
        .as_array()
        .expect("custom managers")
        .iter()
        .filter(|m| m["managerFilePatterns"][0] == "/^flux/.+\\.ya?ml$/")
        .map(|m| {
            (
                m["managerFilePatterns"]
                    .as_array()
                    .expect("patterns")
                    .iter()
                    .map(pattern)
                    .collect(),
                pattern(&m["matchStrings"][0]),
            )
        })
        .collect();
    assert!(
        !annotated.is_empty(),
        "a custom manager covers annotated pins"
    );
    let mut files = Vec::new();
    yaml_files(&repo().join("flux"), &mut files);
    let mut uncovered = Vec::new();
    let mut pins = 0;
    for file in files {
        let relative = file
            .strip_prefix(repo())
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).expect("yaml");
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start().trim_start_matches("- ");
            let where_ = format!("{relative}:{}", n + 1);
            if let Some(image) = line.strip_prefix("image: ") {
                pins += 1;
                if !image.contains(':') {
                    uncovered.push(format!("{where_}: {image} has no tag"));
                } else if !kubernetes.iter().any(|p| p.is_match(&relative)) {
                    uncovered.push(format!("{where_}: no kubernetes manager pattern matches"));
                }
            } else if let Some(tag) = line.strip_prefix("tag: ") {
                pins += 1;
                let captured = annotated.iter().any(|(files, matcher)| {
                    files.iter().any(|p| p.is_match(&relative))
                        && matcher
                            .captures_iter(&text)
                            .any(|c| &c["currentValue"] == tag.trim_matches('"'))
                });
                if !captured {
                    uncovered.push(format!(
                        "{where_}: tag {tag} needs a `# renovate: datasource=… depName=…` line above it"
                    ));
                }
            }
        }
    }
    assert!(pins >= 9, "found only {pins} pins: the scan is broken");
    assert!(
        uncovered.is_empty(),
        "pins Renovate would never update:\n{}",
        uncovered.join("\n")
    );
}

#[test]
fn a_tag_without_an_annotation_is_caught() {
    // The check above must be able to fail: a values tag with no annotation.
    let config = renovate();
    let matcher = pattern(&config["customManagers"][0]["matchStrings"][0]);
    let annotated = "image:\n  # renovate: datasource=docker depName=ghcr.io/x/y\n  tag: v1.2.3\n";
    let bare = "image:\n  tag: v1.2.3\n";
    assert!(matcher.is_match(annotated));
    assert!(!matcher.is_match(bare));
}

#[test]
fn one_kopia_release_on_the_host_in_the_server_image_and_in_ci() {
    let read = |path: &str| std::fs::read_to_string(repo().join(path)).expect(path);
    let version_in = |path: &str, pattern: &str| -> Vec<String> {
        let found: Vec<String> = regex::Regex::new(pattern)
            .expect("pattern")
            .captures_iter(&read(path))
            .map(|c| c[1].to_owned())
            .collect();
        assert!(!found.is_empty(), "no kopia version found in {path}");
        found
    };
    let mut versions = Vec::new();
    for (path, pattern) in [
        ("nix/kopia.nix", r#"version = "([0-9.]+)";"#),
        (".ci/tools.sh", r"kopia_version=v([0-9.]+)"),
        (
            "flux/clusters/azalab-0/manifests/apps/kopia/deployment.yaml",
            r"image: kopia/kopia:([0-9.]+)",
        ),
    ] {
        for version in version_in(path, pattern) {
            versions.push(format!("{path}: {version}"));
        }
    }
    let distinct: std::collections::BTreeSet<&str> = versions
        .iter()
        .filter_map(|v| v.rsplit(' ').next())
        .collect();
    assert_eq!(
        distinct.len(),
        1,
        "kopia differs between the host, the server image and CI (docs/backup.md):\n{}",
        versions.join("\n")
    );
    // And the kopia the tests drive says it is that release (built stamped, as upstream's
    // release build is), so a test run can never pass on some other kopia by mistake.
    if !common::require(&["kopia"]) {
        return;
    }
    let pinned = distinct.iter().next().expect("one version");
    let out = std::process::Command::new("kopia")
        .arg("--version")
        .output()
        .expect("kopia runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&format!("{pinned} build: ")),
        "kopia on PATH reports {said:?}, the pin is {pinned}"
    );
}

#[test]
fn one_flux_release_on_the_host_and_in_the_rehearsal() {
    let facts = std::fs::read_to_string(repo().join("homelab.toml")).expect("homelab.toml");
    let tools = std::fs::read_to_string(repo().join(".ci/tools.sh")).expect("tools.sh");
    let host = regex::Regex::new(r#"(?m)^flux-version = "(v[0-9.]+)""#)
        .expect("pattern")
        .captures(&facts)
        .map(|c| c[1].to_owned());
    let ci = regex::Regex::new(r"(?m)^flux_version=(v[0-9.]+)")
        .expect("pattern")
        .captures(&tools)
        .map(|c| c[1].to_owned());
    assert!(host.is_some(), "homelab.toml has no flux-version");
    assert_eq!(
        host, ci,
        "homelab.toml flux-version and .ci/tools.sh flux_version differ"
    );
}
