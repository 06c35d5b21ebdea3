//! The Flux tree renders and is valid, offline: `kubectl kustomize` on every path a Flux
//! Kustomization points at, strict schema validation of every resource (kubernetes-validate for
//! core kinds, ../shared/schemas/crds for Flux, Traefik and k3s kinds), SOPS encryption of every
//! Secret. Then the same checks on copies of the tree broken one way at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{require, stderr, stdout};

const CLUSTER: &str = "flux/clusters/azalab-0";
/// Kubernetes minor the schemas are checked against: k3s_1_35, the default k3s of nixpkgs 26.05.
const KUBERNETES: &str = "1.35.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn schemas() -> PathBuf {
    let dir = repo().join("../shared/schemas/crds");
    assert!(dir.is_dir(), "CRD schemas expected at {}", dir.display());
    dir
}

fn tools_present() -> bool {
    require(&["kubectl", "python3"])
}

fn validate(root: &Path) -> Output {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/validate_cluster.py"))
        .arg(root)
        .arg(CLUSTER)
        .arg(schemas())
        .arg(KUBERNETES)
        .output()
        .expect("python3 runs");
    eprintln!(
        "--- validate {}:\n{}{}",
        root.display(),
        stdout(&out),
        stderr(&out)
    );
    out
}

/// A copy of the Flux tree in a temp dir, laid out as in the repository.
fn copy_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new("cp")
        .arg("-r")
        .arg(repo().join("flux"))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(out.success());
    dir
}

fn edit(root: &Path, relative: &str, from: &str, to: &str) {
    let path = root.join(CLUSTER).join(relative);
    let text = std::fs::read_to_string(&path).expect("file to edit");
    assert!(text.contains(from), "{relative} lacks {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

/// The findings the validator printed (every stdout line but the ingress hosts and fixed
/// service IPs).
fn findings(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| !l.starts_with("ingress-host: ") && !l.starts_with("service-ip: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_cluster_tree_renders_and_validates_strictly() {
    if !tools_present() {
        return;
    }
    let out = validate(&repo());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(findings(&out).is_empty(), "findings: {:?}", findings(&out));
}

#[test]
fn every_tunnel_route_reaches_its_app_and_nothing_else_is_published() {
    if !tools_present() {
        return;
    }
    let facts: toml::Table = std::fs::read_to_string(repo().join("homelab.toml"))
        .expect("homelab.toml")
        .parse()
        .expect("TOML");
    let domain = facts["domain"].as_str().expect("domain");
    let routes = facts["tunnel"]["route"].as_array().expect("routes");
    let kind = |r: &toml::Value| {
        r["kind"]
            .as_str()
            .expect("every route has a kind")
            .to_owned()
    };
    let mut http: Vec<String> = routes
        .iter()
        .filter(|r| kind(r) == "http")
        .map(|r| format!("{}.{domain}", r["name"].as_str().expect("name")))
        .collect();
    http.sort();
    let out = validate(&repo());
    let printed = stdout(&out);
    let mut hosts: Vec<String> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("ingress-host: "))
        .map(str::to_owned)
        .collect();
    hosts.sort();
    assert_eq!(
        hosts, http,
        "Ingress hosts must be the tunnel's http routes, once each"
    );
    // A tcp route ends at a Service of its app with exactly the cluster IP and port it names,
    // and only tcp routes (and Traefik, outside the tree) have fixed cluster IPs.
    let fixed: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("service-ip: "))
        .collect();
    let tcp: Vec<&toml::Value> = routes.iter().filter(|r| kind(r) == "tcp").collect();
    assert!(!tcp.is_empty(), "the Kopia server has a tcp route");
    for route in &tcp {
        let app = route["app"].as_str().expect("app");
        let ip = route["cluster-ip"]
            .as_str()
            .expect("tcp routes name a cluster-ip");
        let port = route["port"].as_integer().expect("tcp routes name a port");
        let wanted = format!("{app}/{app} {ip} ");
        let service = fixed
            .iter()
            .find(|s| s.starts_with(&wanted))
            .unwrap_or_else(|| panic!("no Service {app}/{app} with cluster IP {ip}: {fixed:?}"));
        assert!(
            service.split(' ').skip(2).any(|p| p == port.to_string()),
            "Service {app}/{app} does not serve port {port}: {service}"
        );
    }
    assert_eq!(fixed.len(), tcp.len(), "fixed cluster IPs: {fixed:?}");
    for route in routes {
        assert!(
            ["http", "tcp"].contains(&kind(route).as_str()),
            "route kinds are http or tcp"
        );
    }
}

#[test]
fn an_unpinned_image_or_missing_limits_fail() {
    if !tools_present() {
        return;
    }
    let copy = copy_tree();
    edit(
        copy.path(),
        "manifests/apps/vaultwarden/deployment.yaml",
        "vaultwarden/server:1.37.2",
        "vaultwarden/server:latest",
    );
    edit(
        copy.path(),
        "manifests/apps/tuwunel/deployment.yaml",
        "            limits:\n              cpu: \"2\"\n              memory: 2Gi\n",
        "",
    );
    let out = validate(copy.path());
    assert_eq!(out.status.code(), Some(1));
    let found = findings(&out).join("\n");
    assert!(found.contains("Deployment/vaultwarden: container vaultwarden: image 'vaultwarden/server:latest' is not pinned"), "{found}");
    assert!(
        found.contains("Deployment/tuwunel: container tuwunel: no resources.limits"),
        "{found}"
    );
}

#[test]
fn an_unknown_field_in_a_core_resource_fails() {
    if !tools_present() {
        return;
    }
    let copy = copy_tree();
    edit(
        copy.path(),
        "manifests/cluster/persistent-volumes.yaml",
        "  accessModes:",
        "  accesModes:\n    - ReadWriteOnce\n  accessModes:",
    );
    let out = validate(copy.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("PersistentVolume/libsql-data"),
        "{}",
        stdout(&out)
    );
    assert!(
        findings(&out).join("\n").contains("accesModes"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unknown_field_in_a_flux_resource_fails() {
    if !tools_present() {
        return;
    }
    let copy = copy_tree();
    edit(
        copy.path(),
        "infrastructure.yaml",
        "  wait: true",
        "  wait: true\n  waitForever: true",
    );
    let out = validate(copy.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("Kustomization/infrastructure"),
        "{}",
        stdout(&out)
    );
    assert!(
        findings(&out).join("\n").contains("waitForever"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_file_missing_from_a_kustomization_fails() {
    if !tools_present() {
        return;
    }
    let copy = copy_tree();
    std::fs::remove_file(
        copy.path()
            .join(CLUSTER)
            .join("manifests/cluster/namespaces.yaml"),
    )
    .expect("remove");
    let out = validate(copy.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("kustomize build failed"),
        "{}",
        stdout(&out)
    );
    assert!(
        findings(&out).join("\n").contains("namespaces.yaml"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unencrypted_secret_fails() {
    if !tools_present() {
        return;
    }
    let copy = copy_tree();
    let secrets: Vec<PathBuf> = walk(&copy.path().join(CLUSTER))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".sops.yaml"))
        .collect();
    let first = secrets.first().expect("at least one SOPS file in the tree");
    std::fs::write(
        first,
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: leaked\n  namespace: default\nstringData:\n  password: hunter2\n",
    )
    .expect("write");
    let out = validate(copy.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("not encrypted with SOPS"),
        "{}",
        stdout(&out)
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
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
