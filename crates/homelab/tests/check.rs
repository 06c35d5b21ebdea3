//! `homelab check` on copies of the real repository, each broken in exactly one way a person could
//! really commit: the finding must name the rule, the file and the line. The unbroken tree passes.
//! Then trees the check was not written for: findings or a clean "unsupported", never a panic.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{copy_repo, repo, require, stderr, stdout};

const CLUSTER: &str = "flux/clusters/azalab-0";
const APPS: &str = "flux/clusters/azalab-0/manifests/apps";

/// Replaces the first `from` in `relative` by `to`; returns the 1-based line where `to` starts.
fn edit(root: &Path, relative: &str, from: &str, to: &str) -> usize {
    let path = root.join(relative);
    let text = std::fs::read_to_string(&path).expect("file to edit");
    let at = text
        .find(from)
        .unwrap_or_else(|| panic!("{relative} lacks {from:?}"));
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    text[..at].matches('\n').count() + 1
}

/// The 1-based number of the first line of `relative` that `matches`.
#[track_caller]
fn line_of(root: &Path, relative: &str, matches: impl Fn(&str) -> bool) -> usize {
    let text = std::fs::read_to_string(root.join(relative)).expect("file to read");
    text.lines()
        .position(matches)
        .unwrap_or_else(|| panic!("no such line in {relative}"))
        + 1
}

fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    std::fs::write(path, text).expect("write");
}

fn check(root: &Path) -> (Output, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["check", "--format", "json"])
        .arg(root)
        .output()
        .expect("homelab runs");
    assert!(
        !stderr(&out).contains("panicked"),
        "the check panicked:\n{}",
        stderr(&out)
    );
    let report = serde_json::from_str(&stdout(&out)).unwrap_or(serde_json::Value::Null);
    (out, report)
}

/// Asserts a finding of `rule` at `file:line` (line 0: any line) and returns every finding as
/// text for further checks.
#[track_caller]
fn assert_finding(root: &Path, rule: &str, file: &str, line: usize) -> String {
    let (out, report) = check(root);
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    let shown: Vec<String> = findings
        .iter()
        .map(|f| {
            format!(
                "{}:{}: {} {}",
                f["file"].as_str().unwrap_or(""),
                f["line"],
                f["rule"].as_str().unwrap_or(""),
                f["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    let all = shown.join("\n");
    let found = findings
        .iter()
        .any(|f| f["rule"] == rule && f["file"] == file && (line == 0 || f["line"] == line as u64));
    assert!(
        found,
        "expected {rule} at {file}:{line}; got:\n{all}\n{}",
        stderr(&out)
    );
    let severity = findings
        .iter()
        .find(|f| f["rule"] == rule)
        .map(|f| f["severity"].clone());
    let expected_code = if severity == Some("error".into()) {
        1
    } else {
        0
    };
    if findings.iter().any(|f| f["severity"] == "error") {
        assert_eq!(out.status.code(), Some(1), "errors exit 1:\n{all}");
    } else {
        assert_eq!(out.status.code(), Some(expected_code), "{all}");
    }
    all
}

#[test]
fn the_repository_passes_with_no_findings() {
    let (out, report) = check(&repo());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(report["findings"], serde_json::json!([]), "{report}");
    // And the text form, as on a terminal or in CI logs, says how much it read.
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("check")
        .current_dir(repo().join(APPS))
        .output()
        .expect("homelab runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("0 errors, 0 warnings in "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn text_output_names_file_line_rule_and_shows_the_snippet() {
    let copy = copy_repo();
    let file = format!("{APPS}/vaultwarden/deployment.yaml");
    let line = edit(
        copy.path(),
        &file,
        "vaultwarden/server:1.37.2",
        "vaultwarden/server:latest",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("check")
        .arg(copy.path())
        .output()
        .expect("homelab runs");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{file}:{line}:")) && text.contains("error[hygiene/image-tag]"),
        "{text}"
    );
    assert!(
        text.contains("vaultwarden/server:latest") && text.contains("fix: pin"),
        "{text}"
    );
    // The snippet names the object, and so does the JSON report.
    assert!(
        text.contains("╰── Deployment vaultwarden/vaultwarden"),
        "{text}"
    );
    let (_, report) = check(copy.path());
    assert_eq!(
        report["findings"][0]["object"], "Deployment vaultwarden/vaultwarden",
        "{report}"
    );
}

#[test]
fn structure_duplicate_key() {
    let copy = copy_repo();
    let root = copy.path();
    let file = format!("{APPS}/vaultwarden/deployment.yaml");
    let line = edit(
        root,
        &file,
        "  replicas: 1\n",
        "  replicas: 1\n  replicas: 2\n",
    ) + 1;
    assert_finding(root, "structure/duplicate-key", &file, line);
}

#[test]
fn structure_yaml_syntax() {
    let file = format!("{APPS}/vaultwarden/deployment.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(root, &file, "  replicas: 1\n", "  replicas: 1: 2\n");
    assert_finding(root, "structure/yaml-syntax", &file, line);
}

#[test]
fn structure_missing_entry() {
    let copy = copy_repo();
    let root = copy.path();
    std::fs::remove_file(root.join(CLUSTER).join("manifests/cluster/namespaces.yaml")).expect("rm");
    let kustomization = format!("{CLUSTER}/manifests/cluster/kustomization.yaml");
    let line = line_of(root, &kustomization, |l| l.contains("namespaces.yaml"));
    assert_finding(root, "structure/missing-entry", &kustomization, line);
}

#[test]
fn structure_unsupported() {
    let copy = copy_repo();
    let root = copy.path();
    let kustomization = format!("{APPS}/libsql/kustomization.yaml");
    let line = edit(
        root,
        &kustomization,
        "resources:",
        "configMapGenerator:\n  - name: extra\n    literals: [a=b]\nresources:",
    );
    assert_finding(root, "structure/unsupported", &kustomization, line);
}

#[test]
fn structure_orphan_manifest() {
    let copy = copy_repo();
    let root = copy.path();
    let orphan = format!("{APPS}/libsql/configmap.yaml");
    write(
        root,
        &orphan,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: forgotten\n",
    );
    assert_finding(root, "structure/orphan-manifest", &orphan, 1);
}

#[test]
fn structure_not_an_object() {
    let copy = copy_repo();
    let root = copy.path();
    let file = format!("{APPS}/libsql/service.yaml");
    let text = std::fs::read_to_string(root.join(&file)).expect("read");
    let line = text.lines().count() + 2;
    std::fs::write(
        root.join(&file),
        format!("{text}---\nmetadata:\n  name: half-written\n"),
    )
    .expect("write");
    assert_finding(root, "structure/not-an-object", &file, line);
}

#[test]
fn schema_invalid() {
    let copy = copy_repo();
    let root = copy.path();
    let volumes = format!("{CLUSTER}/manifests/cluster/persistent-volumes.yaml");
    let line = edit(root, &volumes, "  accessModes:", "  accesModes:");
    let all = assert_finding(root, "schema/invalid", &volumes, line);
    assert!(all.contains("accesModes"), "{all}");

    let copy = copy_repo();
    let root = copy.path();
    let apps = format!("{CLUSTER}/apps.yaml");
    let line = edit(root, &apps, "  interval: 10m", "  interval: 10 minutes");
    assert_finding(root, "schema/invalid", &apps, line);

    let copy = copy_repo();
    let root = copy.path();
    let infrastructure = format!("{CLUSTER}/infrastructure.yaml");
    let line = edit(
        root,
        &infrastructure,
        "  wait: true",
        "  wait: true\n  waitForever: true",
    ) + 1;
    let all = assert_finding(root, "schema/invalid", &infrastructure, line);
    assert!(all.contains("unknown field \"waitForever\""), "{all}");

    let copy = copy_repo();
    let root = copy.path();
    let file = format!("{APPS}/vaultwarden/service.yaml");
    let line = edit(root, &file, "      port: 8080", "      port: \"8080\"");
    assert_finding(root, "schema/invalid", &file, line);
}

#[test]
fn schema_unknown_kind() {
    let copy = copy_repo();
    let root = copy.path();
    let file = format!("{APPS}/vaultwarden/deployment.yaml");
    let line = edit(root, &file, "apiVersion: apps/v1", "apiVersion: app/v1");
    assert_finding(root, "schema/unknown-kind", &file, line + 1);
}

#[test]
fn refs_secret() {
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(root, &deployment, "key: admin-token", "key: admin_token");
    let all = assert_finding(root, "refs/secret", &deployment, line);
    assert!(
        all.contains("has no key \"admin_token\"") && all.contains("admin-token"),
        "{all}"
    );

    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &deployment,
        "                  name: vaultwarden\n                  key:",
        "                  name: vault\n                  key:",
    );
    assert_finding(root, "refs/secret", &deployment, line);

    // The Flux alert Provider's Secret must hold the token under `token`.
    let provider = format!("{CLUSTER}/manifests/alerts/provider.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &provider,
        "    name: flux-alerts-matrix",
        "    name: flux-alerts",
    );
    assert_finding(root, "refs/secret", &provider, line);
}

#[test]
fn refs_config_map() {
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &deployment,
        "            - name: ROCKET_PORT",
        "            - name: LOG_LEVEL\n              valueFrom:\n                configMapKeyRef:\n                  name: vaultwarden-settings\n                  key: log-level\n            - name: ROCKET_PORT",
    );
    assert_finding(root, "refs/config-map", &deployment, line + 3);
}

#[test]
fn refs_service_selector() {
    let copy = copy_repo();
    let root = copy.path();
    let service = format!("{APPS}/vaultwarden/service.yaml");
    let line = edit(
        root,
        &service,
        "    app.kubernetes.io/name: vaultwarden",
        "    app.kubernetes.io/name: vault",
    );
    assert_finding(root, "refs/service-selector", &service, line);
}

#[test]
fn refs_target_port() {
    let service = format!("{APPS}/vaultwarden/service.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(root, &service, "targetPort: http", "targetPort: web");
    assert_finding(root, "refs/target-port", &service, line);
}

#[test]
fn refs_ingress_backend() {
    let copy = copy_repo();
    let root = copy.path();
    let ingress = format!("{APPS}/vaultwarden/ingress.yaml");
    let line = edit(
        root,
        &ingress,
        "                  name: http",
        "                  name: https",
    );
    assert_finding(root, "refs/ingress-backend", &ingress, line);
}

#[test]
fn refs_claim() {
    // A volume made smaller than its claim (a claim bigger than its volume never binds).
    let copy = copy_repo();
    let root = copy.path();
    let volumes = format!("{CLUSTER}/manifests/cluster/persistent-volumes.yaml");
    edit(root, &volumes, "storage: 20Gi", "storage: 10Gi");
    let claim = format!("{APPS}/libsql/persistentvolumeclaim.yaml");
    let line = line_of(root, &claim, |l| l.contains("storage: 20Gi"));
    let all = assert_finding(root, "refs/claim", &claim, line);
    assert!(
        all.contains("asks for 20Gi but volume libsql-data has 10Gi"),
        "{all}"
    );

    // A claim without storageClassName gets k3s' default class and never binds the volume.
    let copy = copy_repo();
    let root = copy.path();
    edit(root, &claim, "  storageClassName: \"\"\n", "");
    let line = line_of(root, &claim, |l| l == "spec:");
    let all = assert_finding(root, "refs/claim", &claim, line);
    assert!(all.contains("storageClassName none differs"), "{all}");
}

#[test]
fn refs_namespace() {
    let copy = copy_repo();
    let root = copy.path();
    let namespaces = format!("{CLUSTER}/manifests/cluster/namespaces.yaml");
    edit(
        root,
        &namespaces,
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: libsql\n",
        "",
    );
    let kustomization = format!("{APPS}/libsql/kustomization.yaml");
    let line = line_of(root, &kustomization, |l| l == "namespace: libsql");
    let all = assert_finding(root, "refs/namespace", &kustomization, line);
    assert!(
        all.contains("namespace libsql is declared by no Namespace"),
        "{all}"
    );
}

#[test]
fn refs_backup_command() {
    // A written command whose selector matches no pod template.
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        "homelab.toml",
        "[backup.source.restore]\nstop = []\nstart = []",
        "[backup.source.restore]\nstop = [[\"kubectl\", \"--namespace\", \"libsql\", \"wait\", \"--for=delete\", \"pod\", \"--selector=app=libsql\"]]\nstart = []",
    ) + 1;
    let all = assert_finding(root, "refs/backup-command", "homelab.toml", line);
    assert!(
        all.contains("matches no pod template in namespace libsql"),
        "{all}"
    );
    assert_only(root, &["refs/backup-command"]);

    // An app declared by name that the tree does not have, or whose pods the generated stop
    // would not find.
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        "homelab.toml",
        "deployment = \"tuwunel\"",
        "deployment = \"tuwunel-server\"",
    );
    let all = assert_finding(root, "refs/backup-command", "homelab.toml", line);
    assert!(
        all.contains("no Deployment tuwunel/tuwunel-server"),
        "{all}"
    );
    let copy = copy_repo();
    let root = copy.path();
    // Metadata, selector and template alike: only the template is what the wait would see.
    let deployment = root.join(format!("{APPS}/zeroclaw/deployment.yaml"));
    let text = std::fs::read_to_string(&deployment).expect("read");
    let renamed = text.replace(
        "app.kubernetes.io/name: zeroclaw",
        "app.kubernetes.io/name: zero",
    );
    std::fs::write(&deployment, renamed).expect("write");
    let line = line_of(root, "homelab.toml", |l| {
        l.contains("deployment = \"zeroclaw\"")
    });
    let all = assert_finding(root, "refs/backup-command", "homelab.toml", line);
    assert!(
        all.contains("not labelled app.kubernetes.io/name=zeroclaw"),
        "{all}"
    );
}

#[test]
fn storage_host_path() {
    let volumes = format!("{CLUSTER}/manifests/cluster/persistent-volumes.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(root, &volumes, "path: /srv/libsql", "path: /var/lib/libsql");
    assert_finding(root, "storage/host-path", &volumes, line);
}

#[test]
fn storage_not_backed_up() {
    let volumes = format!("{CLUSTER}/manifests/cluster/persistent-volumes.yaml");
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        "homelab.toml",
        "no-backup = \"a new certificate is generated",
        "# no-backup = \"a new certificate is generated",
    );
    let line = line_of(root, &volumes, |l| l.contains("path: /srv/kopia/server"));
    assert_finding(root, "storage/not-backed-up", &volumes, line);
}

#[test]
fn storage_unlisted() {
    // A volume and a backup source without their [[storage]] entry: the host would not make
    // the folder with its owner and mode.
    let volumes = format!("{CLUSTER}/manifests/cluster/persistent-volumes.yaml");
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        "homelab.toml",
        "[[storage]]\npath = \"/srv/zeroclaw\"\nowner = \"65534:65534\"\nmode = \"0750\"\n",
        "",
    );
    let line = line_of(root, &volumes, |l| l.contains("path: /srv/zeroclaw"));
    assert_finding(root, "storage/unlisted", &volumes, line);
    let source_line = line_of(root, "homelab.toml", |l| l == "path = \"/srv/zeroclaw\"");
    let all = assert_finding(root, "storage/unlisted", "homelab.toml", source_line);
    assert!(
        all.contains("backup source /srv/zeroclaw has no [[storage]] entry"),
        "{all}"
    );
    assert_only(root, &["storage/unlisted"]);
}

#[test]
fn exposure_ingress_unrouted() {
    let copy = copy_repo();
    let root = copy.path();
    let ingress = format!("{APPS}/vaultwarden/ingress.yaml");
    let line = edit(
        root,
        &ingress,
        "host: vault.aza.network",
        "host: vaultwarden.aza.network",
    );
    assert_finding(root, "exposure/ingress-unrouted", &ingress, line);
    let route = line_of(root, "homelab.toml", |l| l == "name = \"vault\"");
    assert_finding(root, "exposure/route-ingress", "homelab.toml", route);
}

#[test]
fn exposure_tcp_route() {
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        &format!("{APPS}/kopia/service.yaml"),
        "clusterIP: 10.43.0.51",
        "clusterIP: 10.43.0.52",
    );
    let route = line_of(root, "homelab.toml", |l| l == "name = \"kopia\"");
    assert_finding(root, "exposure/tcp-route", "homelab.toml", route);

    let copy = copy_repo();
    let root = copy.path();
    let service = format!("{APPS}/vaultwarden/service.yaml");
    let line = edit(
        root,
        &service,
        "spec:\n",
        "spec:\n  clusterIP: 10.43.0.60\n",
    ) + 1;
    assert_finding(root, "exposure/tcp-route", &service, line);
}

#[test]
fn exposure_route_ingress() {
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        "homelab.toml",
        "name = \"db\"\nkind = \"http\"",
        "name = \"db\"\nkind = \"https\"",
    );
    assert_finding(root, "exposure/route-ingress", "homelab.toml", line);
}

#[test]
fn exposure_service_type() {
    let copy = copy_repo();
    let root = copy.path();
    let service = format!("{APPS}/vaultwarden/service.yaml");
    let line = edit(root, &service, "spec:\n", "spec:\n  type: NodePort\n") + 1;
    assert_finding(root, "exposure/service-type", &service, line);
}

#[test]
fn exposure_host_network() {
    let copy = copy_repo();
    let root = copy.path();
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let line = edit(
        root,
        &deployment,
        "      securityContext:\n        runAsNonRoot",
        "      hostNetwork: true\n      securityContext:\n        runAsNonRoot",
    );
    assert_finding(root, "exposure/host-network", &deployment, line);

    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &deployment,
        "              containerPort: 8080",
        "              containerPort: 8080\n              hostPort: 8080",
    ) + 1;
    assert_finding(root, "exposure/host-network", &deployment, line);
}

#[test]
fn exposure_firewall() {
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        "homelab.toml",
        "tcp-ports = [22, 6443]",
        "tcp-ports = [22, 80, 6443]",
    );
    assert_finding(root, "exposure/firewall", "homelab.toml", line);
}

/// sops as a person runs it, encrypting to a throwaway key.
fn sops_encrypt(root: &Path, plain: &str, extra: &[&str]) -> String {
    let key_file = root.join("test-age.key");
    if !key_file.exists() {
        let status = Command::new("age-keygen")
            .arg("-o")
            .arg(&key_file)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("age-keygen");
        assert!(status.success());
    }
    let recipient = Command::new("age-keygen")
        .arg("-y")
        .arg(&key_file)
        .output()
        .expect("age-keygen -y");
    let recipient = stdout(&recipient).trim().to_owned();
    let plain_file = root.join("plain.yaml");
    std::fs::write(&plain_file, plain).expect("plain");
    let out = Command::new("sops")
        .args([
            "encrypt",
            "--age",
            &recipient,
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
        ])
        .args(extra)
        .arg(&plain_file)
        .current_dir(root.parent().expect("outside the repository copy"))
        .output()
        .expect("sops");
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(plain_file).expect("rm");
    stdout(&out)
}

const PLAIN_SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vaultwarden\ntype: Opaque\nstringData:\n  admin-token: hunter2\n";

#[test]
fn secrets_whole_document() {
    if !require(&["sops", "age-keygen"]) {
        return;
    }
    let secret = format!("{APPS}/vaultwarden/secret.sops.yaml");
    // Encrypted whole: sops without the creation rule's --encrypted-regex.
    let copy = copy_repo();
    let root = copy.path();
    let whole = sops_encrypt(root, PLAIN_SECRET, &[]);
    std::fs::write(root.join(&secret), &whole).expect("write");
    let line = whole
        .lines()
        .position(|l| l.starts_with("kind: ENC["))
        .expect("kind")
        + 1;
    let all = assert_finding(root, "secrets/whole-document", &secret, line);
    assert!(
        all.contains("refs/secret"),
        "the Deployment's key is no longer visible:\n{all}"
    );

    // Outside a *.sops.yaml file too: a manifest whose apiVersion is ciphertext is no object
    // the other rules can judge (its interval here), so it must not pass unseen.
    let copy = copy_repo();
    let root = copy.path();
    let sync = format!("{CLUSTER}/flux-system-sync.yaml");
    let line = line_of(root, &sync, |l| l == "kind: GitRepository");
    edit(
        root,
        &sync,
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository",
        "apiVersion: ENC[AES256_GCM,data:bm90IGEga2luZA==,iv:aXY=,tag:dGFn,type:str]\nkind: GitRepository",
    );
    assert_finding(root, "secrets/whole-document", &sync, line);
}

#[test]
fn secrets_encrypted_regex() {
    if !require(&["sops", "age-keygen"]) {
        return;
    }
    let secret = format!("{APPS}/vaultwarden/secret.sops.yaml");
    // Encrypted with another regex than the creation rule's: plaintext left, and the rule.
    let copy = copy_repo();
    let root = copy.path();
    let partial = sops_encrypt(root, PLAIN_SECRET, &["--encrypted-regex", "^(data)$"]);
    std::fs::write(root.join(&secret), &partial).expect("write");
    let line = partial
        .lines()
        .position(|l| l.contains("admin-token: hunter2"))
        .expect("plain")
        + 1;
    assert_finding(root, "secrets/plaintext", &secret, line);
    let line = partial.lines().position(|l| l == "sops:").expect("sops") + 1;
    assert_finding(root, "secrets/encrypted-regex", &secret, line + 1);
}

#[test]
fn secrets_plaintext() {
    // A Secret committed in a plain manifest.
    let copy = copy_repo();
    let root = copy.path();
    let plain = format!("{APPS}/vaultwarden/extra-secret.yaml");
    write(
        root,
        &plain,
        &PLAIN_SECRET.replace("name: vaultwarden", "name: extra"),
    );
    edit(
        root,
        &format!("{APPS}/vaultwarden/kustomization.yaml"),
        "resources:\n",
        "resources:\n  - extra-secret.yaml\n",
    );
    assert_finding(root, "secrets/plaintext", &plain, 2);
}

#[test]
fn secrets_creation_rule() {
    let secret = format!("{APPS}/vaultwarden/secret.sops.yaml");
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        ".sops.yaml",
        "^flux/clusters/.*/manifests/.*\\.sops\\.yaml$",
        "^flux/clusters/.*/apps/.*\\.enc\\.yaml$",
    );
    assert_finding(root, "secrets/creation-rule", &secret, 1);

    // An empty *.sops.yaml no rule covers: the next `sops` run on it would find no keys.
    let copy = copy_repo();
    let root = copy.path();
    let extra = format!("{CLUSTER}/extra.sops.yaml");
    write(root, &extra, "---\n");
    edit(
        root,
        &format!("{CLUSTER}/kustomization.yaml"),
        "  - alerts.yaml",
        "  - alerts.yaml\n  - extra.sops.yaml",
    );
    assert_finding(root, "secrets/creation-rule", &extra, 1);
}

#[test]
fn secrets_secret_looking_value() {
    // A token written straight into the manifest: a warning, the check still passes.
    let copy = copy_repo();
    let root = copy.path();
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let line = edit(
        root,
        &deployment,
        "            - name: ROCKET_PORT",
        "            - name: PUSH_INSTALLATION_KEY_TOKEN\n              value: 3f1c9a\n            - name: ROCKET_PORT",
    ) + 1;
    assert_finding(root, "secrets/secret-looking-value", &deployment, line);

    // A file encrypted whole but not named *.sops.yaml keeps sops' `_unencrypted` keys in the
    // clear: still read for secrets.
    let copy = copy_repo();
    let root = copy.path();
    let token = format!("{APPS}/vaultwarden/token.yaml");
    write(
        root,
        &token,
        "apiVersion: ENC[AES256_GCM,data:dg==,iv:aXY=,tag:dGFn,type:str]\n\
         kind: ENC[AES256_GCM,data:U2VjcmV0,iv:aXY=,tag:dGFn,type:str]\n\
         metadata:\n  name: token\n\
         token_unencrypted: ghp_0123456789abcdefghijklmnopqrstuvwxyz\n",
    );
    edit(
        root,
        &format!("{APPS}/vaultwarden/kustomization.yaml"),
        "  - ingress.yaml",
        "  - ingress.yaml\n  - token.yaml",
    );
    assert_finding(root, "secrets/secret-looking-value", &token, 5);
    assert_finding(root, "secrets/whole-document", &token, 2);
}

#[test]
fn flux_depends_on() {
    let apps = format!("{CLUSTER}/apps.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &apps,
        "  dependsOn:\n    - name: infrastructure\n",
        "",
    );
    let all = assert_finding(root, "flux/depends-on", &apps, 0);
    assert!(
        all.contains("Kustomization libsql does not wait for infrastructure"),
        "{all}"
    );
    let _ = line;

    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &apps,
        "    - name: infrastructure\n",
        "    - name: infra\n",
    );
    assert_finding(root, "flux/depends-on", &apps, line);
}

#[test]
fn flux_decryption() {
    let apps = format!("{CLUSTER}/apps.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &apps,
        "  decryption:\n    provider: sops\n    secretRef:\n      name: sops-age\n",
        "",
    );
    let all = assert_finding(root, "flux/decryption", &apps, 0);
    assert!(
        all.contains("Kustomization libsql applies SOPS files"),
        "{all} {line}"
    );
}

#[test]
fn flux_interval() {
    let copy = copy_repo();
    let root = copy.path();
    let sync = format!("{CLUSTER}/flux-system-sync.yaml");
    let line = edit(root, &sync, "  interval: 1m", "  interval: 10m");
    assert_finding(root, "flux/interval", &sync, line);
}

#[test]
fn flux_path_missing() {
    let apps = format!("{CLUSTER}/apps.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(root, &apps, "apps/libsql", "apps/libsql-server");
    assert_finding(root, "flux/path-missing", &apps, line);
}

#[test]
fn flux_alerts() {
    let alerts = format!("{CLUSTER}/manifests/alerts");
    let alert = format!("{alerts}/alert.yaml");
    let provider = format!("{alerts}/provider.yaml");
    // Immich's HelmRelease lives in its own namespace: without its event source, its errors
    // go nowhere.
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        &alert,
        "    - kind: HelmRelease\n      name: \"*\"\n      namespace: immich\n",
        "",
    );
    let all = assert_only(root, &["flux/alerts"]);
    assert!(
        all.contains("HelmRelease immich/immich: no Flux Alert sends its errors anywhere"),
        "{all}"
    );
    assert_finding(
        root,
        "flux/alerts",
        &format!("{APPS}/immich/helmrelease.yaml"),
        0,
    );

    // An Alert on info-only events would miss nothing; one on a suspended Provider reaches no one.
    let copy = copy_repo();
    let root = copy.path();
    edit(root, &provider, "spec:\n", "spec:\n  suspend: true\n");
    let all = assert_only(root, &["flux/alerts"]);
    assert!(all.contains("Kustomization flux-system/libsql"), "{all}");

    // The room is one fact: homelab.toml's, where the host's notices go.
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &provider,
        "channel: \"!REPLACE_ME:matrix.aza.network\"",
        "channel: \"!other:matrix.aza.network\"",
    );
    assert_finding(root, "flux/alerts", &provider, line);
    assert_only(root, &["flux/alerts"]);
}

#[test]
fn refs_alert_provider() {
    let alerts = format!("{CLUSTER}/manifests/alerts");
    let alert = format!("{alerts}/alert.yaml");
    // An Alert naming a Provider that does not exist delivers nothing.
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(root, &alert, "    name: matrix", "    name: matrx");
    assert_finding(root, "refs/alert-provider", &alert, line);
    assert_only(root, &["refs/alert-provider", "flux/alerts"]);
}

#[test]
fn structure_encoding_bytes_and_names_that_are_not_utf8_and_symlinks_out_of_the_tree() {
    // A byte that is not UTF-8, even in a comment: kustomize (and Flux) refuse the whole file.
    let copy = copy_repo();
    let root = copy.path();
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let mut bytes = std::fs::read(root.join(&deployment)).expect("read");
    let at = bytes.iter().position(|&b| b == b'\n').expect("a line") + 1;
    bytes.splice(at..at, b"# caf\xe9\n".iter().copied());
    std::fs::write(root.join(&deployment), &bytes).expect("write");
    let all = assert_finding(root, "structure/encoding", &deployment, 2);
    assert!(all.contains("byte 0xe9 on line 2 is not UTF-8"), "{all}");

    // An unlisted file whose name is not UTF-8: a finding at its (escaped) path; the check goes
    // on and still finds the rest.
    let copy = copy_repo();
    let root = copy.path();
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"notes-\xff.yaml");
    std::fs::write(root.join(APPS).join("vaultwarden").join(odd), "a: 1\n").expect("odd name");
    let line = edit(
        root,
        &format!("{CLUSTER}/flux-system-sync.yaml"),
        "  interval: 1m",
        "  interval: 10m",
    );
    let (out, report) = check(root);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let findings = report["findings"].as_array().expect("findings");
    assert!(
        findings.iter().any(|f| f["rule"] == "structure/encoding"
            && f["file"]
                .as_str()
                .is_some_and(|p| p.ends_with("notes-\u{fffd}.yaml"))),
        "{report}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f["rule"] == "flux/interval" && f["line"] == line as u64),
        "the check went on: {report}"
    );

    // An unlisted *.sops.yaml that is a symlink out of the tree, like any such symlink.
    let copy = copy_repo();
    let root = copy.path();
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret.sops.yaml"), "kind: Secret\n").expect("outside");
    let link = format!("{APPS}/vaultwarden/extra.sops.yaml");
    std::os::unix::fs::symlink(outside.path().join("secret.sops.yaml"), root.join(&link))
        .expect("symlink");
    let all = assert_finding(root, "structure/missing-entry", &link, 0);
    assert!(
        all.contains("leads out of the repository through a symlink"),
        "{all}"
    );

    // Terminal escapes in a file never reach the terminal raw: shown as control pictures.
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        &deployment,
        "  replicas: 1",
        "  replicas: 1\n  \u{1b}[2Jbogus: 1",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("check")
        .arg(root)
        .output()
        .expect("homelab runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !out.stdout.contains(&0x1b),
        "an escape byte reached the output"
    );
    assert!(stdout(&out).contains('\u{241b}'), "{}", stdout(&out));
}

#[test]
fn schema_too_large_objects_the_api_server_refuses_for_their_size() {
    let copy = copy_repo();
    let root = copy.path();
    let big = format!("{APPS}/libsql/big.yaml");
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n");
    for i in 0..1100 {
        text.push_str(&format!("  key-{i:04}: {}\n", "x".repeat(1000)));
    }
    write(root, &big, &text);
    edit(
        root,
        &format!("{APPS}/libsql/kustomization.yaml"),
        "resources:\n",
        "resources:\n  - big.yaml\n",
    );
    let all = assert_finding(root, "schema/too-large", &big, 1);
    assert!(all.contains("more than 1048576"), "{all}");
    assert_only(root, &["schema/too-large"]);
    // Just under the limit: nothing.
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n");
    for i in 0..1000 {
        text.push_str(&format!("  key-{i:04}: {}\n", "x".repeat(1000)));
    }
    write(root, &big, &text);
    let (out, _) = check(root);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// The owner's age recipient (the host's key), as .sops.yaml names it.
const OWNER: &str = "age1w9s7424jtltmns70e4xw5u7gnnktxdn2de0ssvapee7lvp7xtyeskyrylx";

#[test]
fn secrets_flux_identity() {
    if !require(&["sops"]) {
        return;
    }
    // The cluster's rule without Flux's recipient: Flux could not decrypt what it makes.
    let copy = copy_repo();
    let root = copy.path();
    let sops_config = std::fs::read_to_string(root.join(".sops.yaml")).expect(".sops.yaml");
    let flux = regex::Regex::new(r"age: (age1[a-z0-9]+),")
        .expect("pattern")
        .captures(&sops_config)
        .map(|c| c[1].to_owned())
        .expect("the cluster rule names two recipients, Flux's first");
    edit(
        root,
        ".sops.yaml",
        &format!("age: {flux},{OWNER}"),
        &format!("age: {OWNER}"),
    );
    let all = assert_finding(root, "secrets/flux-identity", ".sops.yaml", 0);
    assert!(
        all.contains("does not encrypt to Flux's recipient"),
        "{all}"
    );

    // The host's rule with Flux's recipient: the cluster could read the host's secrets.
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        ".sops.yaml",
        &format!("    age: {OWNER}\n  # Kubernetes"),
        &format!("    age: {flux},{OWNER}\n  # Kubernetes"),
    );
    let all = assert_only(root, &["secrets/flux-identity"]);
    assert!(
        all.contains("the host's secrets encrypts to Flux's recipient"),
        "{all}"
    );

    // A cluster Secret encrypted to the host's (owner's) key alone: Flux cannot read it.
    let copy = copy_repo();
    let root = copy.path();
    let secret = format!("{APPS}/vaultwarden/secret.sops.yaml");
    let plain = root.join("plain.yaml");
    std::fs::write(
        &plain,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vaultwarden\ntype: Opaque\nstringData:\n  admin-token: x\n",
    )
    .expect("plain");
    let out = Command::new("sops")
        .args(["--disable-version-check", "encrypt", "--age", OWNER])
        .args(["--encrypted-regex", "^(data|stringData)$"])
        .args(["--input-type", "yaml", "--output-type", "yaml"])
        .arg(&plain)
        .current_dir(root.parent().expect("outside the repository copy"))
        .output()
        .expect("sops");
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(&plain).expect("rm");
    write(root, &secret, &stdout(&out));
    let all = assert_finding(root, "secrets/flux-identity", &secret, 0);
    assert!(all.contains("Flux cannot decrypt it"), "{all}");
    assert_only(root, &["secrets/flux-identity"]);

    // The bootstrap handing Flux the host's own key.
    let copy = copy_repo();
    let root = copy.path();
    let module = "nixos/modules/flux.nix";
    let line = edit(
        root,
        module,
        "--age-key ${config.sops.secrets.\"flux/age-key\".path}",
        "--age-key ${config.sops.age.keyFile}",
    );
    assert_finding(root, "secrets/flux-identity", module, line);
}

#[test]
fn hygiene_image_tag() {
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &deployment,
        "image: vaultwarden/server:1.37.2",
        "image: vaultwarden/server",
    );
    assert_finding(root, "hygiene/image-tag", &deployment, line);
}

#[test]
fn hygiene_resources() {
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &deployment,
        "            limits:\n              cpu: \"1\"\n              memory: 512Mi\n",
        "",
    );
    let all = assert_finding(root, "hygiene/resources", &deployment, line - 3);
    assert!(all.contains("no resources.limits"), "{all}");
}

#[test]
fn hygiene_probes() {
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        &deployment,
        "          livenessProbe:\n            httpGet:\n              path: /alive\n              port: http\n            initialDelaySeconds: 30\n            periodSeconds: 30\n",
        "",
    );
    let line = line_of(root, &deployment, |l| l.contains("- name: vaultwarden"));
    assert_finding(root, "hygiene/probes", &deployment, line);
}

#[test]
fn hygiene_recreate() {
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &deployment,
        "    type: Recreate",
        "    type: RollingUpdate",
    );
    assert_finding(root, "hygiene/recreate", &deployment, line);
}

#[test]
fn check_silence_needs_a_known_rule_and_a_reason() {
    let ingress = format!("{APPS}/immich/ingress.yaml");
    let copy = copy_repo();
    let root = copy.path();
    let text = std::fs::read_to_string(root.join(&ingress)).expect("read");
    let annotation = text
        .lines()
        .find(|l| l.contains("homelab.check/ignore"))
        .expect("a silence");
    let line = edit(
        root,
        &ingress,
        annotation,
        "    homelab.check/ignore: \"refs/ingress-backend:\"",
    );
    let all = assert_finding(root, "check/silence", &ingress, line);
    // Without its reason the silence no longer holds either.
    assert!(all.contains("refs/ingress-backend"), "{all}");
}

#[test]
fn trees_it_was_not_written_for_give_findings_never_a_panic() {
    // A file that is not YAML at all, listed as a resource.
    let copy = copy_repo();
    let root = copy.path();
    let file = format!("{APPS}/libsql/service.yaml");
    std::fs::write(
        root.join(&file),
        [0xff_u8, 0xfe, b'\t', b'{', b'[', 0, b'\n'],
    )
    .expect("write");
    assert_finding(root, "structure/yaml-syntax", &file, 0);

    // Flux-side transformations the renderer does not imitate.
    let copy = copy_repo();
    let root = copy.path();
    let apps = format!("{CLUSTER}/apps.yaml");
    let line = edit(
        root,
        &apps,
        "  prune: true\n",
        "  prune: true\n  targetNamespace: elsewhere\n",
    ) + 1;
    assert_finding(root, "structure/unsupported", &apps, line);

    // A Flux path to an empty folder: Flux would generate a kustomization; check says so.
    let copy = copy_repo();
    let root = copy.path();
    std::fs::create_dir_all(root.join(APPS).join("empty")).expect("dir");
    edit(
        root,
        &format!("{CLUSTER}/apps.yaml"),
        "apps/libsql\n",
        "apps/empty\n",
    );
    let all = assert_finding(root, "structure/unsupported", &format!("{APPS}/empty"), 0);
    assert!(all.contains("no kustomization.yaml"), "{all}");

    // A symlinked folder that includes itself, and one that leads out of the repository.
    let copy = copy_repo();
    let root = copy.path();
    let app = root.join(APPS).join("libsql");
    std::os::unix::fs::symlink(".", app.join("again")).expect("symlink");
    std::os::unix::fs::symlink("/etc", app.join("etc")).expect("symlink");
    let kustomization = format!("{APPS}/libsql/kustomization.yaml");
    edit(
        root,
        &kustomization,
        "resources:\n",
        "resources:\n  - again\n  - etc\n",
    );
    let all = assert_finding(
        root,
        "structure/unsupported",
        &format!("{APPS}/libsql/again"),
        0,
    );
    assert!(all.contains("includes itself"), "{all}");
    assert_finding(root, "structure/missing-entry", &kustomization, 0);

    // Not a repository: exit 2 with the reason.
    let empty = tempfile::tempdir().expect("dir");
    let (out, _) = check(empty.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a homelab repository"),
        "{}",
        stderr(&out)
    );

    // homelab.toml broken: exit 2 naming the line.
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        "homelab.toml",
        "hostname = \"azalab-0\"",
        "hostname = azalab-0",
    );
    let (out, _) = check(root);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("homelab.toml:{line}:")),
        "{}",
        stderr(&out)
    );
    // A value of the wrong type: the line and the dotted key.
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        "homelab.toml",
        "name = \"kopia\"\nkind = \"tcp\"",
        "name = \"kopia\"\nkind = 3",
    ) + 1;
    let (out, _) = check(root);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("homelab.toml:{line}: tunnel.route[2].kind:")),
        "{}",
        stderr(&out)
    );
}

/// The renderer is right: for every Flux path, the check's objects equal `kubectl kustomize`'s.
#[test]
fn every_flux_path_renders_exactly_as_kubectl_kustomize() {
    if !require(&["kubectl"]) {
        return;
    }
    let rendered = homelab::check::render(&repo()).expect("the repository renders");
    assert!(
        rendered.len() >= 8,
        "root, infrastructure and six apps: {}",
        rendered.len()
    );
    for (path, ours) in rendered {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(repo().join(&path))
            .output()
            .expect("kubectl runs");
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        let theirs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&stdout(&out)).expect("kustomize output parses");
        let sort = |mut objects: Vec<serde_json::Value>| {
            let mut keyed: Vec<(String, serde_json::Value)> =
                objects.drain(..).map(|o| (o.to_string(), o)).collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            keyed.into_iter().map(|(_, o)| o).collect::<Vec<_>>()
        };
        let (ours, theirs) = (sort(ours), sort(theirs));
        assert_eq!(ours.len(), theirs.len(), "{path}: object count");
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a, b, "{path}: objects differ");
        }
    }
}

/// The table in docs/check.md, row by row, is the registry (check/findings.rs): same ids, in
/// the same order, with the same severity, summary, why and fix. Nothing drifts.
#[test]
fn docs_table_is_the_registry_row_by_row() {
    let docs = std::fs::read_to_string(repo().join("docs/check.md")).expect("docs/check.md");
    let rule_row = regex::Regex::new(r"^\| `[a-z]+/[a-z-]+` \|").expect("pattern");
    // Markdown escapes a `|` inside a cell as `\|`.
    let rows: Vec<String> = docs
        .lines()
        .filter(|l| rule_row.is_match(l))
        .map(|l| l.replace("\\|", "|"))
        .collect();
    let wanted: Vec<String> = homelab::check::RULES
        .iter()
        .map(|rule| {
            format!(
                "| `{}` | {} | {} | {} | {} |",
                rule.id,
                match rule.severity {
                    homelab::check::Severity::Error => "error",
                    homelab::check::Severity::Warning => "warning",
                },
                rule.summary,
                rule.why,
                rule.hint
            )
        })
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|w| !rows.contains(w)).collect();
    let extra: Vec<&String> = rows.iter().filter(|r| !wanted.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/check.md drifted from the registry.\nexpected rows not found:\n{}\nrows naming no rule (or a stale text):\n{}",
        missing
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        extra
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Anything in the repository written like a rule id (`refs/backup-command`) names a rule: a
/// renamed or imagined rule in a comment or a doc is a stale pointer.
#[test]
fn every_rule_id_the_repository_mentions_exists() {
    let families = [
        "structure",
        "schema",
        "refs",
        "storage",
        "exposure",
        "secrets",
        "flux",
        "hygiene",
        "check",
    ];
    let mut known: Vec<String> = homelab::check::RULES
        .iter()
        .map(|r| r.id.to_owned())
        .collect();
    // The host secrets' names (`flux/age-key`) share the shape; they are read from the file.
    let secrets = std::fs::read_to_string(repo().join("nixos/secrets/host-secrets.sops.yaml"))
        .expect("host secrets");
    let mut group = String::new();
    for line in secrets.lines() {
        if let Some(top) = line
            .strip_suffix(':')
            .filter(|l| !l.starts_with([' ', '#']))
        {
            group = top.to_owned();
        } else if let Some((key, _)) = line.trim_start().split_once(':')
            && line.starts_with("    ")
            && !key.starts_with('#')
        {
            known.push(format!("{group}/{key}"));
        }
    }
    let files = Command::new("git")
        .args([
            "ls-files", "*.rs", "*.md", "*.toml", "*.nix", "*.yaml", "*.sh",
        ])
        .current_dir(repo())
        .output()
        .expect("git");
    let pattern = regex::Regex::new(r"([a-z]+)/([a-z]+(?:-[a-z]+)*)").expect("pattern");
    let mut unknown = Vec::new();
    for file in stdout(&files).lines() {
        let Ok(text) = std::fs::read_to_string(repo().join(file)) else {
            continue;
        };
        for found in pattern.captures_iter(&text) {
            let whole = found.get(0).expect("match");
            if !families.contains(&&found[1]) {
                continue;
            }
            // Paths are not rule ids: a slash or a word character around it, or a file suffix.
            let before = text[..whole.start()].chars().next_back();
            let after = text[whole.end()..].chars().next();
            let in_path = before.is_some_and(|c| {
                c == '/' || c == '.' || c.is_alphanumeric() || c == '_' || c == '-'
            }) || after
                .is_some_and(|c| c == '/' || c == '.' || c == '_' || c.is_alphanumeric());
            if in_path {
                continue;
            }
            let id = whole.as_str();
            if !known.iter().any(|k| k == id) {
                unknown.push(format!("{file}: {id}"));
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "rule ids that name no rule:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn every_rule_is_documented_and_tested() {
    let docs = std::fs::read_to_string(repo().join("docs/check.md")).expect("docs/check.md");
    let tests = include_str!("check.rs");
    for rule in homelab::check::RULES {
        assert!(
            docs.contains(&format!("| `{}` |", rule.id)),
            "docs/check.md lacks {}",
            rule.id
        );
        // Findable by name: `cargo test refs_claim` runs that rule's cases.
        let snake = rule.id.replace(['/', '-'], "_");
        assert!(
            tests.contains(&format!("fn {snake}")),
            "no test named after {} (fn {snake}…)",
            rule.id
        );
        // Asserted by a call, not merely mentioned.
        let call = regex::Regex::new(&format!(
            r#"assert_(finding|only)\(\s*root,\s*(&\[)?"{}""#,
            regex::escape(rule.id)
        ))
        .expect("pattern");
        assert!(call.is_match(tests), "no test asserts {}", rule.id);
    }
}

/// A rule's code is found by its id: `refs/claim` is `fn refs_claim` in check/rules/, and the
/// table in check/rules/mod.rs runs that function for that rule; a rule the loader finds is
/// registered there as such and reported from check/tree/.
#[test]
fn every_rule_has_its_function_or_is_the_loaders() {
    let src = repo().join("crates/homelab/src/check");
    let read_dir = |dir: &str| -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(src.join(dir))
            .expect("source dir")
            .flatten()
        {
            all.push_str(&std::fs::read_to_string(entry.path()).expect("source"));
        }
        all
    };
    let registry = std::fs::read_to_string(src.join("findings.rs")).expect("findings.rs");
    let rule_code = read_dir("rules");
    let loader_code = read_dir("tree");
    let registered: String = rule_code.split_whitespace().collect();
    for rule in homelab::check::RULES {
        let constant = regex::Regex::new(&format!(r#"(\w+) "{}""#, regex::escape(rule.id)))
            .expect("pattern")
            .captures(&registry)
            .map(|c| c[1].to_owned())
            .unwrap_or_else(|| panic!("{} is not in findings.rs", rule.id));
        let snake = rule.id.replace(['/', '-'], "_");
        // As written, whatever rustfmt made of the line breaks.
        let by_loader = registered.contains(&format!("(&rules::{constant},Check::Loader)"));
        let by_function =
            registered.contains(&format!("(&rules::{constant},Check::Rule(|c|c.{snake}())"));
        assert!(
            by_loader != by_function,
            "{}: register it once in check/rules/mod.rs CHECKS, as Check::Loader or as \
             Check::Rule(|c| c.{snake}())",
            rule.id
        );
        if by_loader {
            assert!(
                loader_code.contains(&format!("rules::{constant}")),
                "{} is registered as the loader's, but check/tree/ never reports it",
                rule.id
            );
        } else {
            assert!(
                rule_code.contains(&format!("fn {snake}(&mut self)")),
                "{}: no `fn {snake}(&mut self)` in check/rules/",
                rule.id
            );
        }
    }
}

/// Fails unless the check reports exactly these rules (each at least once) and nothing else:
/// a break must not drag false findings along.
#[track_caller]
fn assert_only(root: &Path, rules: &[&str]) -> String {
    let (_, report) = check(root);
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    let all: Vec<String> = findings
        .iter()
        .map(|f| format!("{}:{} {} {}", f["file"], f["line"], f["rule"], f["message"]))
        .collect();
    for finding in &findings {
        assert!(
            rules.iter().any(|r| finding["rule"] == *r),
            "unexpected finding {finding}\nall:\n{}",
            all.join("\n")
        );
    }
    for rule in rules {
        assert!(
            findings.iter().any(|f| f["rule"] == *rule),
            "no {rule}; got:\n{}",
            all.join("\n")
        );
    }
    all.join("\n")
}

#[test]
fn structure_duplicate_object() {
    // The same Service twice in one build: kustomize refuses, Flux applies nothing.
    let copy = copy_repo();
    let root = copy.path();
    let file = format!("{APPS}/libsql/service.yaml");
    let text = std::fs::read_to_string(root.join(&file)).expect("read");
    let second = text.lines().count() + 2;
    std::fs::write(
        root.join(&file),
        format!("{text}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: libsql\nspec:\n  selector:\n    app.kubernetes.io/name: libsql\n  ports:\n    - name: http\n      port: 8080\n      targetPort: http\n"),
    )
    .expect("write");
    assert_finding(root, "structure/duplicate-object", &file, second);
    assert_only(root, &["structure/duplicate-object"]);
}

#[test]
fn review_found_mistakes_are_caught_without_false_findings() {
    // A volume whose claimRef names another claim never binds the claim that names it.
    let copy = copy_repo();
    let root = copy.path();
    let volumes = format!("{CLUSTER}/manifests/cluster/persistent-volumes.yaml");
    edit(
        root,
        &volumes,
        "    name: libsql-data\n  hostPath",
        "    name: libsql-old\n  hostPath",
    );
    let claim = format!("{APPS}/libsql/persistentvolumeclaim.yaml");
    let line = line_of(root, &claim, |l| l.contains("volumeName:"));
    assert_finding(root, "refs/claim", &claim, line);
    assert_only(root, &["refs/claim"]);

    // A namespace typo in a kustomization: reported once, where it was written.
    let copy = copy_repo();
    let root = copy.path();
    let kustomization = format!("{APPS}/libsql/kustomization.yaml");
    let line = edit(
        root,
        &kustomization,
        "namespace: libsql",
        "namespace: libsq",
    );
    assert_finding(root, "refs/namespace", &kustomization, line);

    // dependsOn in a cycle, and infrastructure waiting for something that does not exist.
    let copy = copy_repo();
    let root = copy.path();
    let apps = format!("{CLUSTER}/apps.yaml");
    edit(
        root,
        &apps,
        "    - name: infrastructure\n  decryption",
        "    - name: infrastructure\n    - name: immich\n  decryption",
    );
    let text = std::fs::read_to_string(root.join(&apps)).expect("read");
    let immich = text.find("name: immich\n  namespace").expect("immich");
    let (head, tail) = text.split_at(immich);
    std::fs::write(
        root.join(&apps),
        format!(
            "{head}{}",
            tail.replacen(
                "    - name: infrastructure\n",
                "    - name: infrastructure\n    - name: libsql\n",
                1
            )
        ),
    )
    .expect("write");
    let all = assert_only(root, &["flux/depends-on"]);
    assert!(
        all.contains("libsql depends on itself") && all.contains("immich depends on itself"),
        "{all}"
    );
    let copy = copy_repo();
    let root = copy.path();
    let infrastructure = format!("{CLUSTER}/infrastructure.yaml");
    let line = edit(
        root,
        &infrastructure,
        "  sourceRef:",
        "  dependsOn:\n    - name: storage\n  sourceRef:",
    ) + 1;
    assert_finding(root, "flux/depends-on", &infrastructure, line);

    // A SOPS file applied by the root path, which does not decrypt.
    let copy = copy_repo();
    let root = copy.path();
    std::fs::copy(
        root.join(APPS).join("libsql/secret.sops.yaml"),
        root.join(CLUSTER).join("extra.sops.yaml"),
    )
    .expect("copy");
    edit(
        root,
        &format!("{CLUSTER}/kustomization.yaml"),
        "  - apps.yaml\n",
        "  - apps.yaml\n  - extra.sops.yaml\n",
    );
    assert_finding(
        root,
        "flux/decryption",
        &format!("{CLUSTER}/flux-system-sync.yaml"),
        0,
    );

    // Another repository's Kustomization is not followed into this one.
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &apps,
        "    kind: GitRepository\n    name: flux-system\n",
        "    kind: GitRepository\n    name: monitoring-charts\n",
    );
    let all = assert_finding(root, "structure/unsupported", &apps, line);
    assert!(!all.contains("flux/path-missing"), "{all}");

    // externalIPs bypass the firewall; a hostPath that climbs out of /srv is not under /srv.
    let copy = copy_repo();
    let root = copy.path();
    let service = format!("{APPS}/vaultwarden/service.yaml");
    let line = edit(
        root,
        &service,
        "spec:\n",
        "spec:\n  externalIPs:\n    - 192.168.1.10\n",
    ) + 2;
    assert_finding(root, "exposure/service-type", &service, line);
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &volumes,
        "path: /srv/libsql",
        "path: /srv/libsql/../../etc",
    );
    assert_finding(root, "storage/host-path", &volumes, line);

    // A typo in a custom resource's metadata (the silence annotation would be lost).
    let copy = copy_repo();
    let root = copy.path();
    let line = edit(
        root,
        &infrastructure,
        "  name: infrastructure\n",
        "  name: infrastructure\n  anotations:\n    x: y\n",
    ) + 1;
    assert_finding(root, "schema/invalid", &infrastructure, line);
    assert_only(root, &["schema/invalid"]);
}

#[test]
fn valid_variations_give_no_findings() {
    // Two rules for one host in one Ingress; a volume without storageClassName (the "" class);
    // a probe shared through a YAML merge key; labels on templates through the kustomization.
    let copy = copy_repo();
    let root = copy.path();
    edit(
        root,
        &format!("{APPS}/vaultwarden/ingress.yaml"),
        "  rules:\n",
        "  rules:\n    - host: vault.aza.network\n      http:\n        paths:\n          - path: /admin\n            pathType: Prefix\n            backend:\n              service:\n                name: vaultwarden\n                port:\n                  name: http\n",
    );
    edit(
        root,
        &format!("{CLUSTER}/manifests/cluster/persistent-volumes.yaml"),
        "  storageClassName: \"\"\n  claimRef:\n    namespace: immich",
        "  claimRef:\n    namespace: immich",
    );
    let deployment = format!("{APPS}/vaultwarden/deployment.yaml");
    edit(
        root,
        &deployment,
        "          readinessProbe:\n",
        "          readinessProbe: &probe\n",
    );
    edit(
        root,
        &deployment,
        "          livenessProbe:\n            httpGet:\n              path: /alive\n              port: http\n            initialDelaySeconds",
        "          livenessProbe:\n            <<: *probe\n            initialDelaySeconds",
    );
    edit(
        root,
        &format!("{APPS}/libsql/kustomization.yaml"),
        "resources:",
        "labels:\n  - pairs:\n      app.kubernetes.io/part-of: libsql\n    includeTemplates: true\nresources:",
    );
    let (out, report) = check(root);
    assert_eq!(report["findings"], serde_json::json!([]), "{report}");
    assert_eq!(out.status.code(), Some(0));
}

/// The kustomize features the check imitates, beyond what the real tree uses, against
/// `kubectl kustomize`: labels on templates (CronJob's too), a nested namespace overridden by
/// the outer one, merge keys, kustomize's integer forms.
#[test]
fn kustomize_features_render_exactly_as_kubectl_kustomize() {
    if !require(&["kubectl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path();
    write(
        root,
        "homelab.toml",
        "hostname = \"t\"\ndomain = \"example.org\"\n",
    );
    write(
        root,
        "flux/clusters/t/kustomization.yaml",
        "resources:\n  - apps\n",
    );
    write(
        root,
        "flux/clusters/t/apps/kustomization.yaml",
        "namespace: outer\nlabels:\n  - pairs:\n      team: home\n    includeTemplates: true\nresources:\n  - workloads.yaml\n  - inner\n",
    );
    write(
        root,
        "flux/clusters/t/apps/workloads.yaml",
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n            - name: job\n              image: busybox:1.37\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.29\n          readinessProbe: &probe\n            tcpSocket: {port: 80}\n          livenessProbe:\n            <<: *probe\n            periodSeconds: 1_0\n          volumeMounts:\n            - {name: config, mountPath: /c}\n      volumes:\n        - name: config\n          configMap: {name: web, defaultMode: 0644}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: outer\n",
    );
    write(
        root,
        "flux/clusters/t/apps/inner/kustomization.yaml",
        "namespace: inner\nresources:\n  - configmap.yaml\n",
    );
    write(
        root,
        "flux/clusters/t/apps/inner/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: elsewhere\ndata:\n  mode: \"0644\"\n",
    );
    let rendered = homelab::check::render(root).expect("renders");
    let (path, ours) = &rendered[0];
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join(path))
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let theirs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&stdout(&out)).expect("kustomize output parses");
    let key = |o: &serde_json::Value| format!("{}/{}", o["kind"], o["metadata"]["name"]);
    let mut ours = ours.clone();
    let mut theirs = theirs;
    ours.sort_by_key(key);
    theirs.sort_by_key(key);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "ours: {ours:#?}\ntheirs: {theirs:#?}"
    );
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "{}", key(a));
    }
}
