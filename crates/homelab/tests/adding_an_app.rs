//! docs/adding-an-app.md, done to a copy of the repository: every `new <file>` and
//! `append <file>` block applied in order gives a tree `homelab check` passes with the new
//! objects in it, a host backup configuration that stops the app around a restore, and a folder
//! kustomize builds; leaving out any `append` step makes the check name a rule the text before
//! that step names. So the walk-through cannot go stale, and no step in it is for nothing.

mod common;

use std::path::Path;
use std::process::Command;

use common::{copy_repo, generated_backup_config, repo, require, stderr, stdout};

const GUIDE: &str = "docs/adding-an-app.md";

#[derive(Debug, Clone)]
struct Step {
    append: bool,
    file: String,
    text: String,
    /// Rule ids in backticks in the prose between the previous block and this one.
    rules: Vec<String>,
}

fn steps() -> Vec<Step> {
    let guide = std::fs::read_to_string(repo().join(GUIDE)).expect("the guide");
    let rule_id = regex::Regex::new(r"`([a-z]+/[a-z-]+)`").expect("pattern");
    let mut steps = Vec::new();
    let mut prose = String::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            prose.push_str(line);
            prose.push('\n');
            continue;
        };
        let mut body = String::new();
        for inner in lines.by_ref() {
            if inner == "```" {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        let words: Vec<&str> = info.split_whitespace().collect();
        if let [_, verb @ ("new" | "append"), file] = words[..] {
            steps.push(Step {
                append: verb == "append",
                file: file.to_owned(),
                text: body,
                rules: rule_id
                    .captures_iter(&prose)
                    .map(|c| c[1].to_owned())
                    .collect(),
            });
        }
        prose.clear();
    }
    steps
}

fn apply(root: &Path, steps: &[&Step]) {
    for step in steps {
        let path = root.join(&step.file);
        if step.append {
            let mut text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (an append step needs the file)", step.file));
            if !text.ends_with('\n') {
                text.push('\n');
            }
            if path.extension().is_some_and(|e| e == "toml") {
                text.push('\n');
            }
            text.push_str(&step.text);
            std::fs::write(&path, text).expect("append");
        } else {
            assert!(!path.exists(), "{} already exists", step.file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(&path, &step.text).expect("write");
        }
    }
}

/// Exit code, the findings as `rule file:line message` lines, and the number of objects read.
fn check(root: &Path) -> (Option<i32>, Vec<(String, String)>, usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["check", "--format", "json"])
        .arg(root)
        .output()
        .expect("homelab runs");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    let findings = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().expect("rule").to_owned(),
                format!("{}:{} {}", f["file"], f["line"], f["message"]),
            )
        })
        .collect();
    let objects = regex::Regex::new(r"in (\d+) objects")
        .expect("pattern")
        .captures(&stderr(&out))
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("no object count in: {}", stderr(&out)));
    (out.status.code(), findings, objects)
}

/// Kubernetes objects in the steps' YAML: what the check must now read on top of the tree.
fn objects_in(steps: &[Step]) -> usize {
    steps
        .iter()
        .filter(|s| s.file.ends_with(".yaml") && !s.file.ends_with("/kustomization.yaml"))
        .flat_map(|s| s.text.split("\n---"))
        .filter(|document| document.lines().any(|l| l.starts_with("kind: ")))
        .count()
}

#[test]
fn the_guide_applied_passes_the_check_with_the_new_objects() {
    let steps = steps();
    assert!(
        steps.iter().any(|s| !s.append) && steps.iter().filter(|s| s.append).count() >= 5,
        "{GUIDE} lost its steps: {steps:?}"
    );
    let (code, findings, before) = check(&repo());
    assert_eq!((code, findings.len()), (Some(0), 0), "{findings:?}");

    let copy = copy_repo();
    apply(copy.path(), &steps.iter().collect::<Vec<_>>());
    let (code, findings, after) = check(copy.path());
    assert_eq!(
        code,
        Some(0),
        "the guide's app fails the check: {findings:#?}"
    );
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(
        after,
        before + objects_in(&steps),
        "the check must read every object the guide adds"
    );
}

#[test]
fn each_shared_list_step_left_out_is_named_by_the_check() {
    let steps = steps();
    for (skipped, step) in steps.iter().enumerate().filter(|(_, s)| s.append) {
        assert!(
            !step.rules.is_empty(),
            "the text before `append {}` must name the rule that catches its absence",
            step.file
        );
        let copy = copy_repo();
        let rest: Vec<&Step> = steps
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skipped)
            .map(|(_, s)| s)
            .collect();
        apply(copy.path(), &rest);
        let (code, findings, _) = check(copy.path());
        assert_eq!(
            code,
            Some(1),
            "without `append {}` the check must fail: {findings:#?}",
            step.file
        );
        assert!(
            findings.iter().any(|(rule, _)| step.rules.contains(rule)),
            "without `append {}` the check must report one of {:?}; it reported {findings:#?}",
            step.file,
            step.rules
        );
    }
}

#[test]
fn the_guide_app_gets_stop_and_start_commands_on_the_host() {
    if !require(&["nix-instantiate"]) {
        return;
    }
    let steps = steps();
    let copy = copy_repo();
    apply(copy.path(), &steps.iter().collect::<Vec<_>>());
    let config = generated_backup_config(&copy.path().join("homelab.toml"));
    let added = config["source"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == "actual")
        .expect("the guide's backup source");
    let stop = added["restore"]["stop"].to_string();
    for expected in [
        r#""--namespace","actual","scale","deployment/actual","--replicas=0""#,
        r#""--selector=app.kubernetes.io/name=actual""#,
    ] {
        assert!(stop.contains(expected), "{expected} not in {stop}");
    }

    // The host's loader takes it as the module would write it.
    let file = copy.path().join("homelab-backup.toml");
    std::fs::write(&file, toml::to_string(&config).expect("TOML")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["backup", "check-config"])
        .arg(&file)
        .output()
        .expect("homelab runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("source actual       /srv/actual"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_guide_folder_builds_with_kustomize() {
    if !require(&["kubectl"]) {
        return;
    }
    let steps = steps();
    let copy = copy_repo();
    apply(copy.path(), &steps.iter().collect::<Vec<_>>());
    let folder = steps
        .iter()
        .find(|s| s.file.ends_with("/kustomization.yaml") && !s.append)
        .map(|s| Path::new(&s.file).parent().expect("folder").to_owned())
        .expect("the app's kustomization.yaml");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(copy.path().join(&folder))
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let built = stdout(&out);
    let documents = built.split("\n---\n").count();
    let in_folder = objects_in(
        &steps
            .iter()
            .filter(|s| !s.append && Path::new(&s.file).starts_with(&folder))
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(documents, in_folder, "{built}");
    assert!(built.contains("namespace: actual"), "{built}");
}
