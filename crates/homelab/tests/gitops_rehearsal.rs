//! The GitOps rehearsal: the cluster tree applied to a real kube-apiserver (with etcd, RBAC,
//! service-account tokens) by the real Flux kustomize-controller, after `homelab bootstrap` has
//! installed Flux there with the real `flux` CLI. All built by .ci/run from Go modules at the
//! versions pinned in .ci/tools.sh. Separately, the CRDs k3s registers (helm-controller's, at
//! the version pinned there) accept the HelmChartConfig nixos/modules/k3s.nix writes.
//!
//! What stands in for what cannot run here (no nodes, no container runtime, no GitHub):
//! - source-controller: the tree is packed as a tarball, served on loopback, and recorded in the
//!   GitRepository's `status.artifact` through the status subresource, as source-controller
//!   does after a fetch. kustomize-controller downloads and verifies it (digest) like any other.
//! - kubelet and kube-controller-manager: `flux install` waits for its Deployments to roll out;
//!   a stand-in thread writes their rolled-out status. One negative control writes a claim's
//!   Bound status, as the volume binder would. Nothing else's status is written.
//! - The apps' `wait: true` is set to `wait: false` in the rehearsal's copy: their health checks
//!   wait for pods and bound claims, which need nodes. The rehearsal asserts that every
//!   Kustomization *applied* its revision; infrastructure keeps `wait: true` (namespaces and
//!   volumes are healthy as soon as the API server holds them).
//! - Secrets: the real ones are encrypted to the owner's age key. Each `*.sops.yaml` is replaced
//!   by one with the same name, type and keys and dummy values, encrypted with sops to a key
//!   made here, which goes into `flux-system/sops-age` through `homelab bootstrap`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::kube::{self, Artifact, FileServer, Kube, age_key, base64, ready};
use common::{Guard, report, require, stderr};

const CLUSTER: &str = "flux/clusters/azalab-0";
/// The Flux install manifests the host applies at boot (scripts/flux-install-manifests.sh).
const FLUX_MANIFESTS: &str = "nixos/flux/install.yaml";
/// Bounds only against a hang; the whole tree reconciles in seconds.
const RECONCILE: Duration = Duration::from_secs(120);

/// The Flux Kustomizations a file at the cluster root declares, by name, in file order.
fn kustomizations_in(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(CLUSTER).join(file)).expect(file);
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("YAML");
    documents
        .iter()
        .filter(|d| d["kind"] == "Kustomization")
        .map(|d| d["metadata"]["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The apps: one Flux Kustomization each in apps.yaml.
fn apps() -> Vec<String> {
    kustomizations_in("apps.yaml")
}

/// Every Flux Kustomization the root applies (read from the root kustomization.yaml's files).
fn every_kustomization() -> Vec<String> {
    let root: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join(CLUSTER).join("kustomization.yaml")).expect("root"),
    )
    .expect("YAML");
    root["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|file| kustomizations_in(file.as_str().expect("file")))
        .collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn tools_present() -> bool {
    require(kube::TOOLS)
}

/// Wrappers that log each call's argv and exec the real program: proof of what reaches argv.
fn argv_recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("recorder");
    std::fs::create_dir_all(&bin).expect("recorder dir");
    let log = dir.join("argv.log");
    for tool in ["kubectl", "flux"] {
        let real = common::which(tool).expect("tool on PATH");
        common::script(
            &bin.join(tool),
            &format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        );
    }
    (bin, log)
}

fn homelab_bootstrap(kube: &Kube, key: &Path, recorder: &Path) -> Output {
    let path = format!(
        "{}:{}",
        recorder.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("bootstrap")
        .arg("--kubeconfig")
        .arg(&kube.kubeconfig)
        .arg("--age-key")
        .arg(key)
        .arg("--sync")
        .arg(repo().join(CLUSTER).join("flux-system-sync.yaml"))
        .args(["--api-timeout", "2m"])
        .arg("--flux-manifests")
        .arg(repo().join(FLUX_MANIFESTS))
        .env("PATH", path)
        .output()
        .expect("homelab runs")
}

/// The Flux release the host installs (homelab.toml), which is the one built for this test.
fn flux_version() -> String {
    let facts: toml::Table = std::fs::read_to_string(repo().join("homelab.toml"))
        .expect("homelab.toml")
        .parse()
        .expect("TOML");
    facts["flux-version"]
        .as_str()
        .expect("flux-version")
        .to_owned()
}

/// Kind/namespace/name → the objects `homelab bootstrap` makes, but for their resourceVersion:
/// the API server re-encodes a custom resource created by server-side apply on the first apply
/// that changes nothing (a new resourceVersion, the same content; the next ones keep it).
fn flux_install_objects(kube: &Kube) -> BTreeMap<String, serde_json::Value> {
    let mut all = objects(&kube.get_json(&[
        "crd,clusterroles,clusterrolebindings",
        "-l",
        "app.kubernetes.io/part-of=flux",
    ]));
    all.extend(objects(&kube.get_json(&[
        "namespaces,deployments,services,serviceaccounts,secrets,networkpolicies,resourcequotas,gitrepositories,kustomizations",
        "-n",
        "flux-system",
    ])));
    for object in all.values_mut() {
        // Only the custom resources get re-encoded; every other kind keeps its resourceVersion,
        // so a rewrite of sops-age or a Deployment with the same content is still seen.
        let custom = object["apiVersion"]
            .as_str()
            .is_some_and(|v| v.contains(".toolkit.fluxcd.io/"));
        if custom {
            object["metadata"]
                .as_object_mut()
                .map(|m| m.remove("resourceVersion"));
        }
    }
    for expected in [
        "CustomResourceDefinition//kustomizations.kustomize.toolkit.fluxcd.io",
        "CustomResourceDefinition//gitrepositories.source.toolkit.fluxcd.io",
        "Secret/flux-system/sops-age",
        "Deployment/flux-system/kustomize-controller",
    ] {
        assert!(
            all.keys().any(|k| k == expected),
            "bootstrap made no {expected}: {:?}",
            all.keys().collect::<Vec<_>>()
        );
    }
    all
}

fn objects(list: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| (key(o), o.clone()))
        .collect()
}

fn key(o: &serde_json::Value) -> String {
    let m = &o["metadata"];
    format!(
        "{}/{}/{}",
        o["kind"].as_str().unwrap_or_default(),
        m["namespace"].as_str().unwrap_or_default(),
        m["name"].as_str().unwrap_or_default()
    )
}

fn versions(list: &serde_json::Value) -> BTreeMap<String, String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| (key(o), version(o)))
        .collect()
}

#[test]
fn bootstrap_against_a_real_api_server_installs_flux_makes_sops_age_applies_the_sync_and_changes_nothing_the_second_time()
 {
    if !tools_present() {
        return;
    }
    // Bootstrap starts while the API server is still starting, as at boot.
    let kube = Kube::spawn();
    let (key, _) = age_key(kube.dir.path(), "flux-key.txt");
    let key_file = kube.dir.path().join("flux-key.txt");
    let (recorder, argv_log) = argv_recorder(kube.dir.path());

    let out = homelab_bootstrap(&kube, &key_file, &recorder);
    report("homelab bootstrap", &out);
    assert_eq!(out.status.code(), Some(0), "bootstrap failed");
    assert!(
        stderr(&out).contains("waiting for the Kubernetes API"),
        "bootstrap should have waited for the API server to become ready"
    );

    for crd in [
        "gitrepositories.source.toolkit.fluxcd.io",
        "ocirepositories.source.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
        "helmreleases.helm.toolkit.fluxcd.io",
    ] {
        kube.kubectl_ok(&["get", "crd", crd]);
    }
    let deployments = kube.get_json(&["deployments", "-n", "flux-system"]);
    let mut names: Vec<&str> = deployments["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "helm-controller",
            "kustomize-controller",
            "notification-controller",
            "source-controller"
        ]
    );

    let secret = kube.get_json(&["secret", "sops-age", "-n", "flux-system"]);
    assert_eq!(
        secret["data"]["age.agekey"].as_str(),
        Some(base64(key.as_bytes()).as_str()),
        "sops-age must hold Flux's key file under age.agekey"
    );
    assert!(
        secret["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .is_none(),
        "a client-side apply would copy the key into an annotation"
    );
    let source = kube.get_json(&["gitrepository", "flux-system", "-n", "flux-system"]);
    assert_eq!(source["spec"]["url"], "https://github.com/s1dny/homelab");
    let root = kube.kustomization("flux-system");
    assert_eq!(root["spec"]["path"], "./flux/clusters/azalab-0");

    let before = flux_install_objects(&kube);
    let again = homelab_bootstrap(&kube, &key_file, &recorder);
    report("homelab bootstrap, second run", &again);
    assert_eq!(again.status.code(), Some(0), "second bootstrap failed");
    let after = flux_install_objects(&kube);
    let changed: Vec<&String> = before
        .keys()
        .filter(|k| after.get(*k) != before.get(*k))
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .collect();
    assert!(changed.is_empty(), "a second bootstrap changed {changed:?}");

    let secret_part = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("secret line");
    let calls = std::fs::read_to_string(&argv_log).expect("argv log");
    assert!(
        !calls.contains(secret_part),
        "the key must never be in argv:\n{calls}"
    );
    // Offline: the flake's manifests, applied to the local API server; the flux CLI (which
    // would fetch from GitHub for another release) is never run.
    let manifests = repo().join(FLUX_MANIFESTS);
    assert!(
        calls.lines().any(|c| c.starts_with("kubectl")
            && c.ends_with(&format!(
                "apply --server-side --force-conflicts --field-manager=homelab -f {}",
                manifests.display()
            )))
            && calls.lines().any(|c| c.starts_with("kubectl")
                && c.ends_with(
                    "apply --server-side --force-conflicts --field-manager=homelab -f -"
                )),
        "expected the install manifests and an apply from stdin:\n{calls}"
    );
    assert!(
        !calls.lines().any(|c| c.starts_with("flux ")),
        "bootstrap ran the flux CLI:\n{calls}"
    );
    // Every image the manifests name is the pinned release's, and what CI built and ran.
    let deployments = kube.get_json(&["deployments", "-n", "flux-system"]);
    for deployment in deployments["items"].as_array().expect("items") {
        let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .expect("image");
        assert!(image.starts_with("ghcr.io/fluxcd/"), "{image}");
    }

    let missing = homelab_bootstrap(&kube, &kube.dir.path().join("missing.txt"), &recorder);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("flux/age-key"));
    // The repository's placeholder (before the owner makes Flux's key) is refused, loudly.
    let placeholder = kube.dir.path().join("placeholder.txt");
    std::fs::write(&placeholder, "REPLACE_ME\n").expect("placeholder");
    let refused = homelab_bootstrap(&kube, &placeholder, &recorder);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("still the placeholder"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn the_flux_manifests_the_host_applies_are_what_the_pinned_flux_cli_emits() {
    if !tools_present() {
        return;
    }
    let out = Command::new("flux")
        .args(["install", "--export"])
        .output()
        .expect("flux runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let checked_in = std::fs::read(repo().join(FLUX_MANIFESTS)).expect("manifests");
    assert!(
        checked_in == out.stdout,
        "{FLUX_MANIFESTS} differs from `flux install --export` of the pinned CLI: run \
         scripts/flux-install-manifests.sh"
    );
    let text = String::from_utf8_lossy(&checked_in);
    assert!(
        text.contains(&format!("# Flux Version: {}", flux_version())),
        "the file is of homelab.toml's flux-version"
    );
}

/// A cluster with Flux installed by `homelab bootstrap`, kustomize-controller running, and the
/// rehearsal's copy of the repository.
struct Rehearsal {
    _controller: Guard,
    server: FileServer,
    /// A copy of the repository's `flux/` under a temp root, what Git would hold.
    tree: PathBuf,
    revisions: usize,
    /// The owner's (host's) age recipient: a Secret encrypted only to it is Flux's to refuse.
    host_recipient: String,
    kube: Kube,
}

impl Rehearsal {
    fn start() -> Self {
        let kube = Kube::start();
        // Two identities, as on the host: Flux's key (sops-age) and the owner's (the host's).
        let (_, flux_recipient) = age_key(kube.dir.path(), "flux-key.txt");
        let (_, host_recipient) = age_key(kube.dir.path(), "host-key.txt");
        let key_file = kube.dir.path().join("flux-key.txt");
        {
            let (recorder, _) = argv_recorder(kube.dir.path());
            let out = homelab_bootstrap(&kube, &key_file, &recorder);
            if !out.status.success() {
                report("homelab bootstrap", &out);
                panic!("bootstrap failed");
            }
        }
        let recipient = format!("{flux_recipient},{host_recipient}");
        let tree = kube.dir.path().join("git");
        std::fs::create_dir_all(&tree).expect("tree");
        let copied = Command::new("cp")
            .arg("-r")
            .arg(repo().join("flux"))
            .arg(&tree)
            .status()
            .expect("cp");
        assert!(copied.success());
        for file in sops_files(&tree.join(CLUSTER)) {
            replace_secret(&file, &recipient, kube.dir.path());
        }
        let apps_file = tree.join(CLUSTER).join("apps.yaml");
        let text = std::fs::read_to_string(&apps_file).expect("apps.yaml");
        assert_eq!(
            text.matches("  wait: true\n").count(),
            apps().len(),
            "every app Kustomization waits"
        );
        // Pods and bound claims need nodes: see the file's doc.
        std::fs::write(
            &apps_file,
            text.replace("  wait: true\n", "  wait: false\n"),
        )
        .expect("write");
        let server = FileServer::start(kube.dir.path().join("artifacts"));
        // Enough workers for every Kustomization at once (the default 4 starves some).
        let controller = kube.start_kustomize_controller(every_kustomization().len() + 2);
        Self {
            _controller: controller,
            server,
            tree,
            revisions: 0,
            host_recipient,
            kube,
        }
    }

    fn file(&self, relative: &str) -> PathBuf {
        self.tree.join(CLUSTER).join(relative)
    }

    fn edit(&self, relative: &str, from: &str, to: &str) {
        let path = self.file(relative);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{relative} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }

    /// Packs the tree as the next revision and points the GitRepository at it.
    fn publish(&mut self) -> Artifact {
        self.revisions += 1;
        let artifact = kube::pack(
            &self.server,
            &self.tree,
            &format!("revision-{}.tar.gz", self.revisions),
        );
        self.kube.publish("flux-system", "flux-system", &artifact);
        artifact
    }

    fn applied(&self, name: &str, revision: &str) -> bool {
        let k = self.kube.kustomization(name);
        k["status"]["lastAppliedRevision"] == revision
            && ready(&k).is_some_and(|(status, _, _)| status == "True")
    }

    /// The reason and message of a Kustomization that is not Ready. Flux records no attempted
    /// revision when it stops before building (a missing path, a dependency), so the revision
    /// cannot tell which one failed: callers wait for the message they expect.
    fn failed(&self, name: &str) -> Option<(String, String)> {
        let (status, reason, message) = ready(&self.kube.kustomization(name))?;
        (status == "False").then_some((reason, message))
    }
}

fn sops_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(sops_files(&path));
        } else if path.to_string_lossy().ends_with(".sops.yaml") {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn dummy_value(secret: &str, key: &str) -> String {
    format!("rehearsal-{secret}-{key}")
}

/// Replaces an encrypted Secret by one with the same name, type and keys, dummy values,
/// encrypted to `recipient` the way the repository's rule encrypts (data and stringData only).
fn replace_secret(file: &Path, recipient: &str, work: &Path) {
    let text = std::fs::read_to_string(file).expect("secret");
    let encrypted: serde_json::Value = serde_saphyr::from_str(&text).expect("secret YAML");
    assert_eq!(encrypted["kind"], "Secret", "{}", file.display());
    let name = encrypted["metadata"]["name"].as_str().expect("name");
    let mut plain = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": encrypted["metadata"],
    });
    if let Some(kind) = encrypted.get("type") {
        plain["type"] = kind.clone();
    }
    for section in ["data", "stringData"] {
        let Some(keys) = encrypted[section].as_object() else {
            continue;
        };
        let values: serde_json::Map<String, serde_json::Value> = keys
            .keys()
            .map(|k| {
                let v = dummy_value(name, k);
                let v = if section == "data" {
                    base64(v.as_bytes())
                } else {
                    v
                };
                (k.clone(), serde_json::Value::String(v))
            })
            .collect();
        plain[section] = serde_json::Value::Object(values);
    }
    let input = work.join(format!("{name}.plain.json"));
    std::fs::write(&input, plain.to_string()).expect("plaintext");
    let out = Command::new("sops")
        .args(["--disable-version-check", "encrypt", "--age", recipient])
        .args(["--encrypted-regex", "^(data|stringData)$"])
        .args(["--input-type", "json", "--output-type", "yaml"])
        .arg(&input)
        .current_dir(work)
        .output()
        .expect("sops runs");
    if !out.status.success() {
        report("sops encrypt", &out);
        panic!("sops encrypt failed");
    }
    std::fs::remove_file(&input).expect("remove plaintext");
    std::fs::write(file, &out.stdout).expect("write secret");
}

/// The keys of every data/stringData section of the repository's encrypted Secrets, by
/// namespace/name (the namespace is the app's, set by its kustomization).
fn expected_secrets() -> Vec<(String, String, Vec<String>)> {
    let mut secrets = Vec::new();
    for file in sops_files(&repo().join(CLUSTER).join("manifests")) {
        let folder = file.parent().expect("folder");
        let kustomization: serde_json::Value = serde_saphyr::from_str(
            &std::fs::read_to_string(folder.join("kustomization.yaml")).expect("kustomization"),
        )
        .expect("YAML");
        let app = kustomization["namespace"]
            .as_str()
            .expect("the folder's kustomization sets the namespace")
            .to_owned();
        let doc: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).expect("read")).expect("YAML");
        let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
        let keys = ["data", "stringData"]
            .iter()
            .filter_map(|s| doc[*s].as_object())
            .flat_map(|m| m.keys().cloned())
            .collect();
        secrets.push((app, name, keys));
    }
    secrets
}

/// kind/namespace/name → resourceVersion of every object a Kustomization's inventory lists.
fn inventory_versions(kube: &Kube, names: &[&str]) -> BTreeMap<String, String> {
    let mut by_namespace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in names {
        let k = kube.kustomization(name);
        for entry in k["status"]["inventory"]["entries"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = entry["id"].as_str().expect("inventory id");
            // namespace_name_group_kind
            let parts: Vec<&str> = id.splitn(4, '_').collect();
            assert_eq!(parts.len(), 4, "inventory id {id}");
            let resource = if parts[2].is_empty() {
                format!("{}/{}", parts[3], parts[1])
            } else {
                format!("{}.{}/{}", parts[3], parts[2], parts[1])
            };
            by_namespace
                .entry(parts[0].to_owned())
                .or_default()
                .push(resource);
        }
    }
    let mut all = BTreeMap::new();
    for (namespace, resources) in by_namespace {
        let mut args: Vec<&str> = resources.iter().map(String::as_str).collect();
        if !namespace.is_empty() {
            args.extend(["-n", namespace.as_str()]);
        }
        let list = kube.get_json(&args);
        let list = if list["kind"] == "List" {
            list
        } else {
            serde_json::json!({ "items": [list] })
        };
        all.extend(versions(&list));
    }
    all
}

/// resourceVersion, but for Flux Kustomizations the generation: the test annotates them to
/// force the reconcile and their status records it; their spec must not change.
fn version(o: &serde_json::Value) -> String {
    let m = &o["metadata"];
    if o["kind"] == "Kustomization" {
        format!("generation {}", m["generation"])
    } else {
        m["resourceVersion"].as_str().unwrap_or_default().to_owned()
    }
}

#[test]
fn flux_applies_the_cluster_tree_in_dependency_order_decrypts_every_secret_and_a_second_reconcile_changes_nothing()
 {
    if !tools_present() {
        return;
    }
    let started = Instant::now();
    let mut r = Rehearsal::start();
    eprintln!("cluster up, Flux bootstrapped: {:?}", started.elapsed());

    // Revision 1 holds infrastructure back: the apps must wait for it.
    r.edit("infrastructure.yaml", "spec:\n", "spec:\n  suspend: true\n");
    let first = r.publish();
    let apps = apps();
    r.kube.wait_for(
        "the apps to be blocked on infrastructure",
        RECONCILE,
        |kube| {
            apps.iter().all(|app| {
                ready(&kube.kustomization(app))
                    .is_some_and(|(_, reason, _)| reason == "DependencyNotReady")
            })
        },
    );
    assert!(r.applied("flux-system", &first.revision));
    for app in &apps {
        let (status, _, message) = ready(&r.kube.kustomization(app)).expect("condition");
        assert_eq!(status, "False", "{app}");
        assert!(
            message.contains("infrastructure"),
            "{app} should name the dependency it waits for: {message}"
        );
        assert!(
            r.kube.kustomization(app)["status"]["lastAppliedRevision"].is_null(),
            "{app} applied before infrastructure"
        );
    }
    assert!(
        !r.kube
            .kubectl(&["get", "namespace", "libsql"])
            .status
            .success(),
        "infrastructure's namespaces exist although it is suspended"
    );

    // Revision 2: the tree as committed (but for the rehearsal's secrets and wait).
    r.edit("infrastructure.yaml", "spec:\n  suspend: true\n", "spec:\n");
    let second = r.publish();
    let every = every_kustomization();
    let all: Vec<&str> = every.iter().map(String::as_str).collect();
    r.kube
        .wait_for("every Kustomization to apply revision 2", RECONCILE, |_| {
            all.iter().all(|k| r.applied(k, &second.revision))
        });
    eprintln!("tree applied: {:?}", started.elapsed());

    // dependsOn: no app applied before infrastructure was ready.
    let infra_ready = condition_time(&r.kube.kustomization("infrastructure"));
    for app in &apps {
        let applied = condition_time(&r.kube.kustomization(app));
        assert!(
            applied >= infra_ready,
            "{app} became ready at {applied}, before infrastructure at {infra_ready}"
        );
    }

    // Every Secret arrived decrypted: the dummy values under the repository's keys, no sops.
    for (namespace, name, keys) in expected_secrets() {
        let secret = r.kube.get_json(&["secret", &name, "-n", &namespace]);
        assert!(
            secret.get("sops").is_none(),
            "{namespace}/{name} still carries sops metadata"
        );
        let data = secret["data"].as_object().expect("data");
        let mut found: Vec<&String> = data.keys().collect();
        found.sort();
        let mut want: Vec<&String> = keys.iter().collect();
        want.sort();
        assert_eq!(found, want, "{namespace}/{name} keys");
        for key in &keys {
            assert_eq!(
                data[key].as_str(),
                Some(base64(dummy_value(&name, key).as_bytes()).as_str()),
                "{namespace}/{name} {key} is not the decrypted value"
            );
        }
    }

    // A second reconcile, forced, changes nothing.
    let before = inventory_versions(&r.kube, &all);
    assert!(before.len() > 40, "inventories too small: {before:?}");
    let token = format!("rehearsal-{}", kube::now_rfc3339());
    for k in &all {
        r.kube.kubectl_ok(&[
            "annotate",
            "--overwrite",
            "kustomization",
            k,
            "-n",
            "flux-system",
            &format!("reconcile.fluxcd.io/requestedAt={token}"),
        ]);
    }
    r.kube.wait_for("the forced reconcile", RECONCILE, |kube| {
        all.iter().all(|k| {
            let k = kube.kustomization(k);
            k["status"]["lastHandledReconcileAt"] == token.as_str()
                && ready(&k).is_some_and(|(s, _, _)| s == "True")
        })
    });
    let after = inventory_versions(&r.kube, &all);
    // Changed, removed, or new in an inventory.
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "a second reconcile changed {changed:?}");
    eprintln!("rehearsal done: {:?}", started.elapsed());
}

fn condition_time(kustomization: &serde_json::Value) -> String {
    kustomization["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The app's rendered objects (`kubectl kustomize` of its folder in the rehearsal's copy).
fn rendered(r: &Rehearsal, path: &str) -> Vec<serde_json::Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(r.file(path))
        .output()
        .expect("kubectl kustomize");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("YAML")
}

fn find(objects: &[serde_json::Value], kind: &str, name: &str) -> serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .clone()
}

/// Server-side applies `object` over what Flux applied; the server must refuse it with `expect`.
fn refused(r: &Rehearsal, control: &str, object: &serde_json::Value, expect: &str) {
    let out = r.kube.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=rehearsal-control",
            "-f",
            "-",
        ],
        &object.to_string(),
    );
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains(expect),
        "negative control '{control}': the API server should refuse with {expect:?}, said ({}): {err}",
        out.status
    );
}

#[test]
fn negative_controls_the_api_server_and_flux_refuse_each_fault_with_its_own_error() {
    if !tools_present() {
        return;
    }
    let mut r = Rehearsal::start();
    let first = r.publish();
    let every = every_kustomization();
    let all: Vec<&str> = every.iter().map(String::as_str).collect();
    r.kube.wait_for("the tree to apply", RECONCILE, |_| {
        all.iter().all(|k| r.applied(k, &first.revision))
    });

    // Faults the schemas cannot see, refused by the API server.
    let libsql = rendered(&r, "manifests/apps/libsql");
    let deployment = find(&libsql, "Deployment", "libsql");

    let mut selector = deployment.clone();
    selector["metadata"]["name"] = "libsql-selector-control".into();
    selector["spec"]["selector"]["matchLabels"] =
        serde_json::json!({"app.kubernetes.io/name": "not-libsql"});
    refused(
        &r,
        "Deployment selector does not match the template's labels",
        &selector,
        "`selector` does not match template `labels`",
    );

    let mut port = deployment.clone();
    port["metadata"]["name"] = "libsql-port-control".into();
    port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] =
        "libsql-http-port".into();
    refused(
        &r,
        "container port name longer than 15 characters",
        &port,
        "must be no more than 15 characters",
    );

    let mut ingress = find(&libsql, "Ingress", "libsql");
    ingress["spec"]["rules"][0]["host"] = "https://db.aza.network".into();
    refused(
        &r,
        "Ingress host that is not a DNS name",
        &ingress,
        "spec.rules[0].host: Invalid value: \"https://db.aza.network\": a lowercase RFC 1123 subdomain",
    );

    let apps: Vec<serde_json::Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(r.file("apps.yaml")).expect("apps.yaml"),
    )
    .expect("YAML");
    let mut interval = find(&apps, "Kustomization", "libsql");
    interval["spec"]["interval"] = "10 minutes".into();
    refused(
        &r,
        "Flux interval that is not a Go duration",
        &interval,
        "spec.interval: Invalid value: \"10 minutes\": spec.interval in body should match",
    );

    let volumes = rendered(&r, "manifests/cluster");
    let mut volume = find(&volumes, "PersistentVolume", "libsql-data");
    volume["spec"]["hostPath"]["path"] = "/srv/libsql-moved".into();
    refused(
        &r,
        "changed hostPath of an existing PersistentVolume",
        &volume,
        "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation",
    );

    // Faults Flux finds, each in its own app so that each reports its own error, while the
    // other apps carry on.
    bind_claim_stand_in(&r.kube, "libsql", "libsql-data", "20Gi");
    r.edit(
        "manifests/apps/libsql/persistentvolumeclaim.yaml",
        "storage: 20Gi",
        "storage: 10Gi",
    );
    // Encrypted to the host's key alone (not Flux's): the cluster cannot, and must not, read it.
    replace_secret(
        &r.file("manifests/apps/kopia/secret.sops.yaml"),
        &r.host_recipient,
        r.kube.dir.path(),
    );
    r.edit(
        "apps.yaml",
        "path: ./flux/clusters/azalab-0/manifests/apps/vaultwarden",
        "path: ./flux/clusters/azalab-0/manifests/apps/vaultwarden-missing",
    );
    r.edit(
        "apps.yaml",
        "path: ./flux/clusters/azalab-0/manifests/apps/tuwunel\n  prune: true\n  wait: false\n  timeout: 10m\n  dependsOn:\n    - name: infrastructure",
        "path: ./flux/clusters/azalab-0/manifests/apps/tuwunel\n  prune: true\n  wait: false\n  timeout: 10m\n  dependsOn:\n    - name: nothing-by-this-name",
    );
    let faulty = r.publish();
    let controls = [
        (
            "shrunk PersistentVolumeClaim request",
            "libsql",
            "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity",
        ),
        (
            "Secret encrypted only to the host's key, not Flux's",
            "kopia",
            "decryption failed for 'Secret.v1.[noGrp]/kopia'",
        ),
        (
            "app path missing from the tree",
            "vaultwarden",
            "kustomization path not found",
        ),
        (
            "dependsOn naming no Kustomization",
            "tuwunel",
            "dependency 'flux-system/nothing-by-this-name' not found",
        ),
    ];
    r.kube
        .wait_for("each faulty app to report its fault", RECONCILE, |_| {
            // Each app must show its own fault: right after the new revision is published
            // every app briefly reports DependencyNotReady (infrastructure not yet at it).
            controls.iter().all(|(_, app, expect)| {
                r.failed(app)
                    .is_some_and(|(_, message)| message.contains(expect))
            }) && ["immich", "zeroclaw"]
                .iter()
                .all(|app| r.applied(app, &faulty.revision))
        });
    for (control, app, expect) in controls {
        let (reason, message) = r.failed(app).expect("failed");
        eprintln!("{app}: {reason}: {message}");
        assert!(
            message.contains(expect),
            "negative control '{control}': Flux should report {expect:?} for {app}, said {reason}: {message}"
        );
    }
    let (reason, _) = r.failed("tuwunel").expect("failed");
    assert_eq!(reason, "DependencyNotReady", "dependsOn naming nothing");
}

/// What kube-controller-manager's volume binder writes once a claim is bound to its volume.
fn bind_claim_stand_in(kube: &Kube, namespace: &str, name: &str, capacity: &str) {
    let patch = serde_json::json!({"status": {
        "phase": "Bound",
        "accessModes": ["ReadWriteOnce"],
        "capacity": {"storage": capacity},
    }});
    kube.patch_status("pvc", namespace, name, &patch);
}

/// The HelmChartConfig nixos/modules/k3s.nix puts in k3s' manifests folder, built here the way
/// the module builds it: homelab.toml's `[tunnel] traefik-cluster-ip`, the values as Nix's
/// `builtins.toJSON` writes them (keys sorted, no spaces). `k3s_nix_manifest` holds the two equal.
fn traefik_helm_chart_config() -> serde_json::Value {
    let facts: toml::Table = std::fs::read_to_string(repo().join("homelab.toml"))
        .expect("homelab.toml")
        .parse()
        .expect("TOML");
    let ip = facts["tunnel"]["traefik-cluster-ip"]
        .as_str()
        .expect("traefik-cluster-ip");
    serde_json::json!({
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChartConfig",
        "metadata": {"name": "traefik", "namespace": "kube-system"},
        "spec": {
            "valuesContent":
                format!(r#"{{"service":{{"spec":{{"clusterIP":"{ip}"}},"type":"ClusterIP"}}}}"#),
        },
    })
}

/// `services.k3s.manifests.<name>.content` as nixos/modules/k3s.nix sets it, evaluated from the
/// module itself (nixpkgs cannot be fetched here: `lib` is stubbed with the three functions the
/// module calls, and `homelab.*` holds the facts and defaults homelab-module.nix gives it).
fn k3s_nix_manifest(name: &str) -> serde_json::Value {
    let expression = format!(
        r#"
      let
        facts = builtins.fromTOML (builtins.readFile ./homelab.toml);
        lib = {{
          mkOption = option: option;
          mkIf = condition: content: {{ inherit condition content; }};
          types.str = "str";
        }};
        module = import ./nixos/modules/k3s.nix {{ inherit config lib; }};
        config.homelab = {{
          enable = true;
          inherit facts;
          k3s.traefikClusterIP = module.options.homelab.k3s.traefikClusterIP.default;
        }};
      in
      assert module.config.condition;
      module.config.content.services.k3s.manifests.{name}.content"#
    );
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expression])
        .current_dir(repo())
        .output()
        .expect("nix-instantiate runs");
    assert!(
        out.status.success(),
        "evaluating nixos/modules/k3s.nix failed: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn k3s_crds_accept_the_traefik_helm_chart_config_k3s_nix_writes_and_prune_an_unknown_field() {
    if !tools_present() || !require(&["k3s-crds", "nix-instantiate"]) {
        return;
    }
    let config = traefik_helm_chart_config();
    assert_eq!(
        k3s_nix_manifest("traefik-config"),
        config,
        "nixos/modules/k3s.nix no longer writes the HelmChartConfig this test applies"
    );

    let kube = Kube::start();
    // What k3s registers at startup (helm-controller's CRDs at the version .ci/tools.sh pins).
    let crds = Command::new("k3s-crds").output().expect("k3s-crds runs");
    assert!(crds.status.success(), "k3s-crds: {}", stderr(&crds));
    let out = kube.apply(&String::from_utf8_lossy(&crds.stdout));
    if !out.status.success() {
        report("apply k3s' CRDs", &out);
        panic!("the API server refused k3s' CRDs");
    }
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/helmcharts.helm.cattle.io",
        "crd/helmchartconfigs.helm.cattle.io",
        "--timeout=60s",
    ]);
    kube.kubectl_ok(&["get", "namespace", "kube-system"]);

    // Applied as kubectl applies by default: strict field validation.
    let out = kube.apply(&config.to_string());
    if !out.status.success() {
        report("apply the HelmChartConfig", &out);
        panic!("the API server refused k3s.nix's HelmChartConfig");
    }
    let stored = kube.get_json(&["helmchartconfig", "traefik", "-n", "kube-system"]);
    // As written, plus the one default the schema adds.
    let mut want = config["spec"].clone();
    want["failurePolicy"] = "reinstall".into();
    assert_eq!(stored["spec"], want, "stored as written");
    let values: serde_json::Value =
        serde_json::from_str(stored["spec"]["valuesContent"].as_str().expect("string"))
            .expect("valuesContent is JSON (a YAML document)");
    assert_eq!(values["service"]["type"], "ClusterIP");

    // Negative control: a misspelt spec field. The CRD's schema is structural and keeps unknown
    // fields only under spec.values, so the API server never stores one. What it does instead
    // depends on the validation the client asks for: server-side apply with strict validation
    // (kubectl's default, what this test and Flux use) refuses the object; a plain create that
    // asks for none gets the server's default, Warn: the object is accepted, the field pruned
    // and a warning returned. k3s' deploy controller applies the manifests folder with
    // wrangler, whose apply asks for none (wrangler v3's pkg/apply sets no fieldValidation):
    // on the host a misspelt key in k3s.nix would be dropped silently (a warning in k3s' log),
    // not refused.
    let mut typo = config.clone();
    typo["metadata"]["name"] = "traefik-typo-control".into();
    typo["spec"] = serde_json::json!({"valuesContnet": config["spec"]["valuesContent"]});
    let out = kube.apply(&typo.to_string());
    assert!(
        !out.status.success()
            && stderr(&out).contains(".spec.valuesContnet: field not declared in schema"),
        "negative control 'misspelt HelmChartConfig field', strict: should be refused, said ({}): {}",
        out.status,
        stderr(&out)
    );
    let out = kube.kubectl_stdin(&["create", "--validate=warn", "-f", "-"], &typo.to_string());
    assert!(
        out.status.success() && stderr(&out).contains(r#"unknown field "spec.valuesContnet""#),
        "negative control 'misspelt HelmChartConfig field', warn: should be accepted with a warning, said ({}): {}",
        out.status,
        stderr(&out)
    );
    let pruned = kube.get_json(&[
        "helmchartconfig",
        "traefik-typo-control",
        "-n",
        "kube-system",
    ]);
    assert_eq!(
        pruned["spec"],
        serde_json::json!({"failurePolicy": "reinstall"}),
        "the unknown field should have been pruned"
    );
}

/// `homelab status --json` with only the cluster part, against the rehearsal's API server:
/// the exit code and (level, message) by check id.
fn cluster_status(kube: &Kube) -> (i32, BTreeMap<String, (String, String)>) {
    let config = kube.dir.path().join("status.toml");
    std::fs::write(
        &config,
        format!(
            "state-dir = \"{}\"\n[cluster]\nkubeconfig = \"{}\"\n",
            kube.dir.path().join("status-state").display(),
            kube.kubeconfig.display()
        ),
    )
    .expect("status config");
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("homelab runs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        report("homelab status", &out);
        panic!("status printed no JSON: {err}")
    });
    let checks = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("id"), (s("level"), s("message")))
        })
        .collect();
    (out.status.code().expect("exit code"), checks)
}

#[test]
fn status_reports_each_flux_object_pod_and_claim_from_the_real_api_server() {
    if !tools_present() {
        return;
    }
    let mut r = Rehearsal::start();
    let first = r.publish();
    let every = every_kustomization();
    r.kube.wait_for("the tree to apply", RECONCILE, |_| {
        every.iter().all(|k| r.applied(k, &first.revision))
    });
    // No volume binder runs here: each claim gets the Bound status it would write (stand-in).
    let claims = r.kube.get_json(&["pvc", "--all-namespaces"]);
    for claim in claims["items"].as_array().expect("claims") {
        bind_claim_stand_in(
            &r.kube,
            claim["metadata"]["namespace"].as_str().expect("namespace"),
            claim["metadata"]["name"].as_str().expect("name"),
            claim["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .expect("request"),
        );
    }
    let (code, checks) = cluster_status(&r.kube);
    for k in &every {
        let id = format!("cluster/Kustomization/flux-system/{k}");
        assert_eq!(
            checks.get(&id).map(|c| c.0.as_str()),
            Some("ok"),
            "{id}: {checks:#?}"
        );
        assert!(checks[&id].1.contains(&first.revision), "{id}: {checks:#?}");
    }
    assert_eq!(
        checks["cluster/GitRepository/flux-system/flux-system"].0, "ok",
        "{checks:#?}"
    );
    assert_eq!(checks["cluster/claims/libsql"].0, "ok", "{checks:#?}");
    assert_eq!(code, 0, "{checks:#?}");

    // Two faults Flux finds, each reported with Flux's own message.
    let kopia_secret = r.file("manifests/apps/kopia/secret.sops.yaml");
    let kept = std::fs::read(&kopia_secret).expect("secret");
    let (_, stranger) = age_key(r.kube.dir.path(), "stranger-key.txt");
    replace_secret(&kopia_secret, &stranger, r.kube.dir.path());
    r.edit(
        "apps.yaml",
        "path: ./flux/clusters/azalab-0/manifests/apps/vaultwarden",
        "path: ./flux/clusters/azalab-0/manifests/apps/vaultwarden-missing",
    );
    r.publish();
    r.kube
        .wait_for("both faults to be reported", RECONCILE, |_| {
            r.failed("kopia")
                .is_some_and(|(_, m)| m.contains("decryption failed"))
                && r.failed("vaultwarden")
                    .is_some_and(|(_, m)| m.contains("kustomization path not found"))
        });
    let (code, checks) = cluster_status(&r.kube);
    assert_eq!(code, 1, "{checks:#?}");
    let kopia = &checks["cluster/Kustomization/flux-system/kopia"];
    assert_eq!(kopia.0, "fail", "{checks:#?}");
    let (_, _, flux_says) = ready(&r.kube.kustomization("kopia")).expect("condition");
    assert!(
        kopia
            .1
            .contains("decryption failed for 'Secret.v1.[noGrp]/kopia'")
            && kopia
                .1
                .contains(flux_says.lines().next().unwrap_or_default()),
        "status should carry Flux's message: {kopia:?} vs {flux_says}"
    );
    let vaultwarden = &checks["cluster/Kustomization/flux-system/vaultwarden"];
    assert_eq!(vaultwarden.0, "fail");
    assert!(
        vaultwarden.1.contains("kustomization path not found"),
        "{vaultwarden:?}"
    );
    assert_eq!(checks["cluster/Kustomization/flux-system/libsql"].0, "ok");

    // Fixed: every line ok again.
    std::fs::write(&kopia_secret, kept).expect("secret");
    r.edit("apps.yaml", "apps/vaultwarden-missing", "apps/vaultwarden");
    let fixed = r.publish();
    r.kube.wait_for("the fixed tree to apply", RECONCILE, |_| {
        every.iter().all(|k| r.applied(k, &fixed.revision))
    });
    let (code, checks) = cluster_status(&r.kube);
    assert_eq!(code, 0, "{checks:#?}");

    // A claim no volume binds, and a pod whose container keeps crashing. No kubelet runs here:
    // the pod's status is written through the API, as the kubelet would write it.
    // The namespace's default ServiceAccount is made by kube-controller-manager (not here);
    // admission refuses a pod without it.
    let applied = |manifest: &str| {
        let out = r.kube.apply(manifest);
        if !out.status.success() {
            report("kubectl apply", &out);
            panic!("apply failed");
        }
    };
    applied(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: immich\n",
    );
    applied(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: rehearsal-pending\n  namespace: libsql\n\
         spec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  resources:\n    requests:\n      storage: 1Gi\n",
    );
    applied(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: rehearsal-crashloop\n  namespace: immich\n\
         spec:\n  containers:\n    - name: server\n      image: ghcr.io/immich-app/immich-server:v3.2.0\n",
    );
    let waiting = serde_json::json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{
            "name": "server", "ready": false, "restartCount": 7,
            "image": "ghcr.io/immich-app/immich-server:v3.2.0", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                "message": "back-off 5m0s restarting failed container=server"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                "finishedAt": kube::now_rfc3339()}},
        }],
    }});
    r.kube
        .patch_status("pod", "immich", "rehearsal-crashloop", &waiting);
    let (code, checks) = cluster_status(&r.kube);
    assert_eq!(code, 1, "{checks:#?}");
    let claims = &checks["cluster/claims/libsql/rehearsal-pending"];
    assert_eq!(claims.0, "fail");
    assert!(
        claims.1.contains("rehearsal-pending is Pending"),
        "{claims:?}"
    );
    let pods = &checks["cluster/pods/immich/rehearsal-crashloop"];
    assert_eq!(pods.0, "fail");
    assert!(
        pods.1
            .contains("rehearsal-crashloop: container server CrashLoopBackOff (restarted 7 times)"),
        "{pods:?}"
    );
    // The claim-protection finalizer is removed by kube-controller-manager, which is not here.
    r.kube.kubectl_ok(&[
        "patch",
        "pvc",
        "rehearsal-pending",
        "-n",
        "libsql",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    r.kube.kubectl_ok(&[
        "delete",
        "pvc",
        "rehearsal-pending",
        "-n",
        "libsql",
        "--wait=false",
    ]);
    r.kube.kubectl_ok(&[
        "delete",
        "pod",
        "rehearsal-crashloop",
        "-n",
        "immich",
        "--grace-period=0",
        "--force",
    ]);
    r.kube
        .wait_for("the stand-in pod and claim to go", RECONCILE, |kube| {
            !kube
                .kubectl(&["get", "pod", "rehearsal-crashloop", "-n", "immich"])
                .status
                .success()
                && !kube
                    .kubectl(&["get", "pvc", "rehearsal-pending", "-n", "libsql"])
                    .status
                    .success()
        });
    let (code, checks) = cluster_status(&r.kube);
    assert_eq!(code, 0, "{checks:#?}");
}
