//! The rules that run on a loaded tree. Each finding names its rule (findings.rs) and the file and
//! line it is about; a finding about an object can be silenced only by that object's
//! `homelab.check/ignore` annotation, one `<rule-id>: <reason>` per line.

use std::collections::{BTreeMap, BTreeSet};

use super::findings::{self as rules, Finding, Location, Rule};
use super::schema::{Outcome, Schemas};
use super::tree::{self, Object, Tree};
use super::yaml::{Node, Value};

pub const IGNORE_ANNOTATION: &str = "homelab.check/ignore";
/// `flux install` creates it; the rest exist in every cluster.
const BUILT_IN_NAMESPACES: [&str; 5] = [
    "flux-system",
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
];
const GIT_REPOSITORY_INTERVAL: &str = "1m";
const INFRASTRUCTURE: &str = "infrastructure";
const ENCRYPTED_REGEX: &str = "^(data|stringData)$";

struct Checker<'a> {
    tree: &'a Tree,
    findings: Vec<Finding>,
}

pub fn run(tree: &Tree, schemas: &mut Schemas) -> Vec<Finding> {
    let mut checker = Checker {
        tree,
        findings: tree.findings.clone(),
    };
    checker.schemas(schemas);
    checker.references();
    checker.claims();
    checker.namespaces();
    checker.storage();
    checker.exposure();
    checker.secrets();
    checker.flux();
    checker.alerts();
    checker.hygiene();
    checker.silence_annotations();
    let mut findings = checker.findings;
    findings.sort_by(|a, b| (&a.at, a.rule.id).cmp(&(&b.at, b.rule.id)));
    findings.dedup_by(|a, b| a.at == b.at && a.rule.id == b.rule.id && a.message == b.message);
    findings
}

fn kind(node: &Node) -> &str {
    node.get("kind").and_then(Node::str).unwrap_or("")
}

fn name(node: &Node) -> String {
    node.path(&["metadata", "name"])
        .map(Node::scalar_text)
        .unwrap_or_default()
}

fn namespace(node: &Node) -> String {
    node.path(&["metadata", "namespace"])
        .map(Node::scalar_text)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

fn label(node: &Node) -> String {
    format!("{}/{}", kind(node), name(node))
}

/// The pod template's spec of a workload, and its labels.
fn pod_spec(node: &Node) -> Option<&Node> {
    match kind(node) {
        "Pod" => node.get("spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            node.path(&["spec", "template", "spec"])
        }
        "CronJob" => node.path(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

fn pod_labels(node: &Node) -> Option<&Node> {
    match kind(node) {
        "Pod" => node.path(&["metadata", "labels"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            node.path(&["spec", "template", "metadata", "labels"])
        }
        _ => None,
    }
}

/// (container, is an init container)
fn containers(spec: &Node) -> impl Iterator<Item = (&Node, bool)> {
    let main = spec.get("containers").map(Node::items).unwrap_or_default();
    let init = spec
        .get("initContainers")
        .map(Node::items)
        .unwrap_or_default();
    main.iter()
        .map(|c| (c, false))
        .chain(init.iter().map(|c| (c, true)))
}

fn is_true(node: Option<&Node>) -> bool {
    matches!(node.map(|n| &n.value), Some(Value::Bool(true)))
}

/// Bytes in a Kubernetes quantity ("20Gi", "500M", "1.5"), None when it is not one.
fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    number.parse::<f64>().ok().map(|n| n * factor)
}

impl<'a> Checker<'a> {
    fn file(&self, object: &Object) -> &'a str {
        &self.tree.files[object.file].path
    }

    fn at(&mut self, rule: &'static Rule, object: &Object, node: &Node, message: String) {
        if silenced(&object.node, rule.id) {
            return;
        }
        let at = Location::at(self.file(object), node);
        self.findings.push(Finding { rule, at, message });
    }

    fn at_file(&mut self, rule: &'static Rule, file: &str, node: &Node, message: String) {
        let at = Location::at(file, node);
        self.findings.push(Finding { rule, at, message });
    }

    fn facts_at(&mut self, rule: &'static Rule, offset: usize, message: String) {
        let line = tree::line_of_offset(&self.tree.files[0].text, offset);
        let at = Location::new(tree::FACTS_FILE, line, 0);
        self.findings.push(Finding { rule, at, message });
    }

    fn objects(&self) -> impl Iterator<Item = &'a Object> + use<'a> {
        let tree: &'a Tree = self.tree;
        tree.objects.iter().filter(|o| !whole_encrypted(&o.node))
    }

    fn find(&self, kind_: &str, ns: &str, name_: &str) -> Option<&'a Object> {
        self.objects()
            .find(|o| kind(&o.node) == kind_ && namespace(&o.node) == ns && name(&o.node) == name_)
    }

    // ---- schema ----

    fn schemas(&mut self, schemas: &mut Schemas) {
        let tree = self.tree;
        for object in &tree.objects {
            if whole_encrypted(&object.node) {
                continue;
            }
            let mut json = object.node.to_json();
            // Flux drops the SOPS metadata when it decrypts; the API server never sees it.
            if let Some(map) = json.as_object_mut() {
                map.remove("sops");
            }
            let api_version = object
                .node
                .get("apiVersion")
                .map(Node::scalar_text)
                .unwrap_or_default();
            match schemas.validate(&api_version, kind(&object.node), &json) {
                Outcome::Valid => {}
                Outcome::UnknownKind => {
                    let at = object.node.get("kind").unwrap_or(&object.node);
                    self.at(
                        &rules::UNKNOWN_KIND,
                        object,
                        at,
                        format!("{} {}: no schema", api_version, kind(&object.node)),
                    );
                }
                Outcome::Invalid(violations) => {
                    for violation in violations {
                        let at = object.node.at_pointer(&violation.pointer);
                        let field = if violation.pointer.is_empty() {
                            String::new()
                        } else {
                            format!(" at {}", violation.pointer)
                        };
                        self.at(
                            &rules::SCHEMA,
                            object,
                            at,
                            format!("{}{field}: {}", label(&object.node), violation.message),
                        );
                    }
                }
            }
            self.size(object, &json);
        }
    }

    /// What the API server refuses for size alone: a request body over 3 MiB
    /// (k8s.io/apiserver pkg/server/config.go, `MaxRequestBodyBytes: 3 * 1024 * 1024`), and
    /// ConfigMap or Secret data over 1 MiB in total (k8s.io/kubernetes pkg/apis/core/types.go
    /// `MaxSecretSize`, enforced by ValidateConfigMap and ValidateSecret).
    fn size(&mut self, object: &Object, json: &serde_json::Value) {
        const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
        const MAX_DATA_BYTES: u64 = 1024 * 1024;
        let mut counter = ByteCounter(0);
        if serde_json::to_writer(&mut counter, json).is_ok() && counter.0 > MAX_REQUEST_BYTES {
            self.at(
                &rules::TOO_LARGE,
                object,
                &object.node,
                format!(
                    "{}: {} bytes as JSON; the API server refuses requests over {MAX_REQUEST_BYTES}",
                    label(&object.node),
                    counter.0
                ),
            );
        }
        let kind = kind(&object.node);
        if kind != "ConfigMap" && kind != "Secret" {
            return;
        }
        let mut total = 0u64;
        for (field, encoded) in [
            ("data", kind == "Secret"),
            ("stringData", false),
            ("binaryData", true),
        ] {
            for (_, value) in object
                .node
                .get(field)
                .map(Node::entries)
                .unwrap_or_default()
            {
                total += data_bytes(&value.scalar_text(), encoded);
            }
        }
        if total > MAX_DATA_BYTES {
            self.at(
                &rules::TOO_LARGE,
                object,
                &object.node,
                format!(
                    "{}: {total} bytes of data; the API server refuses a {kind} with more than \
                     {MAX_DATA_BYTES}",
                    label(&object.node)
                ),
            );
        }
    }

    // ---- references ----

    fn keys_of(&self, kind_: &str, ns: &str, name_: &str) -> Option<BTreeSet<String>> {
        let object = self.find(kind_, ns, name_)?;
        let mut keys = BTreeSet::new();
        for field in ["data", "stringData", "binaryData"] {
            for (key, _) in object
                .node
                .get(field)
                .map(Node::entries)
                .unwrap_or_default()
            {
                keys.insert(key.scalar_text());
            }
        }
        Some(keys)
    }

    fn reference(
        &mut self,
        object: &Object,
        at: &Node,
        kind_: &str,
        name_: &str,
        key: Option<&str>,
        optional: bool,
    ) {
        if optional {
            return;
        }
        let rule = if kind_ == "Secret" {
            &rules::SECRET_REF
        } else {
            &rules::CONFIG_MAP_REF
        };
        let ns = namespace(&object.node);
        let name_node = at
            .get("name")
            .or_else(|| at.get("secretName"))
            .unwrap_or(at);
        let key_node = at.get("key").unwrap_or(at);
        match self.keys_of(kind_, &ns, name_) {
            None => self.at(
                rule,
                object,
                name_node,
                format!(
                    "{}: {kind_} {ns}/{name_} is not defined",
                    label(&object.node)
                ),
            ),
            Some(keys) => {
                if let Some(key) = key
                    && !keys.contains(key)
                {
                    let known: Vec<&str> = keys.iter().map(String::as_str).collect();
                    self.at(
                        rule,
                        object,
                        key_node,
                        format!(
                            "{}: {kind_} {ns}/{name_} has no key {key:?} (it has: {})",
                            label(&object.node),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn references(&mut self) {
        for object in self.objects() {
            let Some(spec) = pod_spec(&object.node) else {
                continue;
            };
            for (container, _) in containers(spec) {
                for env in container.get("env").map(Node::items).unwrap_or_default() {
                    for (field, kind_) in
                        [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")]
                    {
                        if let Some(reference) = env.path(&["valueFrom", field]) {
                            let key = reference.get("key").map(Node::scalar_text);
                            self.reference(
                                object,
                                reference,
                                kind_,
                                &reference
                                    .get("name")
                                    .map(Node::scalar_text)
                                    .unwrap_or_default(),
                                key.as_deref(),
                                is_true(reference.get("optional")),
                            );
                        }
                    }
                }
                for source in container
                    .get("envFrom")
                    .map(Node::items)
                    .unwrap_or_default()
                {
                    for (field, kind_) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
                        if let Some(reference) = source.get(field) {
                            self.reference(
                                object,
                                reference,
                                kind_,
                                &reference
                                    .get("name")
                                    .map(Node::scalar_text)
                                    .unwrap_or_default(),
                                None,
                                is_true(reference.get("optional")),
                            );
                        }
                    }
                }
            }
            for volume in spec.get("volumes").map(Node::items).unwrap_or_default() {
                let mut sources: Vec<(&Node, &str, String)> = Vec::new();
                if let Some(secret) = volume.get("secret") {
                    let name_ = secret.get("secretName").map(Node::scalar_text);
                    sources.push((secret, "Secret", name_.unwrap_or_default()));
                }
                if let Some(config) = volume.get("configMap") {
                    let name_ = config.get("name").map(Node::scalar_text);
                    sources.push((config, "ConfigMap", name_.unwrap_or_default()));
                }
                for projected in volume
                    .path(&["projected", "sources"])
                    .map(Node::items)
                    .unwrap_or_default()
                {
                    for (field, kind_) in [("secret", "Secret"), ("configMap", "ConfigMap")] {
                        if let Some(source) = projected.get(field) {
                            let name_ = source.get("name").map(Node::scalar_text);
                            sources.push((source, kind_, name_.unwrap_or_default()));
                        }
                    }
                }
                for (source, kind_, name_) in sources {
                    let optional = is_true(source.get("optional"));
                    let items = source.get("items").map(Node::items).unwrap_or_default();
                    if items.is_empty() {
                        self.reference(object, source, kind_, &name_, None, optional);
                    }
                    for item in items {
                        let key = item.get("key").map(Node::scalar_text);
                        self.reference(object, item, kind_, &name_, key.as_deref(), optional);
                    }
                }
            }
        }
        self.services();
        self.ingresses();
        self.backup_commands();
    }

    /// kubectl commands in homelab.toml's backup sources: the workloads they scale or exec into
    /// and the pods they wait for must be the tree's. A namespace with a HelmRelease has objects
    /// the chart makes, which the check cannot see: names it does not find there pass.
    fn backup_commands(&mut self) {
        let tree = self.tree;
        for source in &tree.facts.backup.source {
            for argv in source.commands() {
                let args = argv.get_ref();
                if args.first().map(String::as_str) != Some("kubectl") {
                    continue;
                }
                let Some(ns) = flag_value(args, &["--namespace", "-n"]) else {
                    continue;
                };
                let charted = self
                    .objects()
                    .any(|o| kind(&o.node) == "HelmRelease" && namespace(&o.node) == ns);
                let offset = argv.span().start;
                for target in args.iter().skip(1) {
                    let Some((resource, workload)) = target.split_once('/') else {
                        continue;
                    };
                    let kind_ = match resource {
                        "deployment" | "deployments" | "deploy" => "Deployment",
                        "statefulset" | "statefulsets" | "sts" => "StatefulSet",
                        _ => continue,
                    };
                    if self.find(kind_, &ns, workload).is_none() && !charted {
                        self.facts_at(
                            &rules::BACKUP_COMMAND,
                            offset,
                            format!("{target}: no {kind_} {ns}/{workload} in the tree"),
                        );
                    }
                }
                let Some(selector) = flag_value(args, &["--selector", "-l"]) else {
                    continue;
                };
                let matched = self
                    .objects()
                    .filter(|o| namespace(&o.node) == ns)
                    .any(|o| {
                        pod_labels(&o.node)
                            .is_some_and(|labels| selector_matches(&selector, labels) == Some(true))
                    });
                if selector_matches(
                    &selector,
                    &Node {
                        value: Value::Map(Vec::new()),
                        line: 0,
                        col: 0,
                    },
                )
                .is_none()
                {
                    self.facts_at(
                        &rules::BACKUP_COMMAND,
                        offset,
                        format!("selector {selector:?} cannot be read"),
                    );
                } else if !matched && !charted {
                    self.facts_at(
                        &rules::BACKUP_COMMAND,
                        offset,
                        format!("selector {selector:?} matches no pod template in namespace {ns}"),
                    );
                }
            }
        }
    }

    fn services(&mut self) {
        let tree = self.tree;
        for service in tree.objects.iter().filter(|o| kind(&o.node) == "Service") {
            let ns = namespace(&service.node);
            let Some(selector) = service.node.path(&["spec", "selector"]) else {
                continue;
            };
            if selector.entries().is_empty() {
                continue;
            }
            let wanted: Vec<(String, String)> = selector
                .entries()
                .iter()
                .map(|(k, v)| (k.scalar_text(), v.scalar_text()))
                .collect();
            let matching: Vec<&Object> = self
                .objects()
                .filter(|o| namespace(&o.node) == ns)
                .filter(|o| {
                    pod_labels(&o.node).is_some_and(|labels| {
                        wanted
                            .iter()
                            .all(|(k, v)| labels.get(k).is_some_and(|l| &l.scalar_text() == v))
                    })
                })
                .collect();
            if matching.is_empty() {
                self.at(
                    &rules::SERVICE_SELECTOR,
                    service,
                    selector,
                    format!(
                        "Service {ns}/{}: no pod template in {ns} has these labels",
                        name(&service.node)
                    ),
                );
                continue;
            }
            let port_names: BTreeSet<String> = matching
                .iter()
                .filter_map(|o| pod_spec(&o.node))
                .flat_map(|spec| containers(spec).map(|(c, _)| c).collect::<Vec<_>>())
                .flat_map(|c| c.get("ports").map(Node::items).unwrap_or_default())
                .filter_map(|p| p.get("name").map(Node::scalar_text))
                .collect();
            for port in service
                .node
                .path(&["spec", "ports"])
                .map(Node::items)
                .unwrap_or_default()
            {
                if let Some(target) = port.get("targetPort")
                    && let Value::Str(target_name) = &target.value
                    && !port_names.contains(target_name)
                {
                    self.at(
                        &rules::TARGET_PORT,
                        service,
                        target,
                        format!(
                            "Service {ns}/{}: targetPort {target_name:?} is not a container port name of the pods it selects",
                            name(&service.node)
                        ),
                    );
                }
            }
        }
    }

    fn ingresses(&mut self) {
        let tree = self.tree;
        for ingress in tree.objects.iter().filter(|o| kind(&o.node) == "Ingress") {
            let ns = namespace(&ingress.node);
            let mut backends: Vec<&Node> = Vec::new();
            if let Some(default) = ingress.node.path(&["spec", "defaultBackend", "service"]) {
                backends.push(default);
            }
            for rule in ingress
                .node
                .path(&["spec", "rules"])
                .map(Node::items)
                .unwrap_or_default()
            {
                for path in rule
                    .path(&["http", "paths"])
                    .map(Node::items)
                    .unwrap_or_default()
                {
                    if let Some(service) = path.path(&["backend", "service"]) {
                        backends.push(service);
                    }
                }
            }
            for backend in backends {
                let service_name = backend
                    .get("name")
                    .map(Node::scalar_text)
                    .unwrap_or_default();
                let Some(service) = self.find("Service", &ns, &service_name) else {
                    self.at(
                        &rules::INGRESS_BACKEND,
                        ingress,
                        backend,
                        format!(
                            "Ingress {ns}/{}: Service {ns}/{service_name} does not exist",
                            name(&ingress.node)
                        ),
                    );
                    continue;
                };
                let ports = service
                    .node
                    .path(&["spec", "ports"])
                    .map(Node::items)
                    .unwrap_or_default();
                let port = backend.get("port");
                let found = match port {
                    None => true,
                    Some(port) => match (port.get("name"), port.get("number")) {
                        (Some(wanted), _) => ports.iter().any(|p| {
                            p.get("name").map(Node::scalar_text) == Some(wanted.scalar_text())
                        }),
                        (None, Some(number)) => ports.iter().any(|p| {
                            p.get("port").map(Node::scalar_text) == Some(number.scalar_text())
                        }),
                        (None, None) => true,
                    },
                };
                if !found {
                    self.at(
                        &rules::INGRESS_BACKEND,
                        ingress,
                        port.and_then(|p| p.get("name").or_else(|| p.get("number")))
                            .unwrap_or(backend),
                        format!(
                            "Ingress {ns}/{}: Service {ns}/{service_name} has no such port",
                            name(&ingress.node)
                        ),
                    );
                }
            }
        }
    }

    fn claims(&mut self) {
        let tree = self.tree;
        let mut bound: BTreeMap<String, String> = BTreeMap::new();
        let volumes: Vec<&Object> = self
            .objects()
            .filter(|o| kind(&o.node) == "PersistentVolume")
            .collect();
        for claim in tree
            .objects
            .iter()
            .filter(|o| kind(&o.node) == "PersistentVolumeClaim")
        {
            let ns = namespace(&claim.node);
            let claim_name = name(&claim.node);
            let volume_name = claim
                .node
                .path(&["spec", "volumeName"])
                .map(Node::scalar_text);
            // A volume binds this claim only when both sides agree: the claim's volumeName (if
            // set) names it, and its claimRef (if set) names this claim.
            let refers = |v: &Object| {
                v.node.path(&["spec", "claimRef"]).map(|r| {
                    r.get("name").map(Node::scalar_text).as_deref() == Some(claim_name.as_str())
                        && r.get("namespace").map(Node::scalar_text).as_deref() == Some(ns.as_str())
                })
            };
            let candidates: Vec<&&Object> = volumes
                .iter()
                .filter(|v| {
                    let named = volume_name.as_deref().map(|n| n == name(&v.node));
                    match (named, refers(v)) {
                        (Some(named), Some(refers)) => named && refers,
                        (Some(named), None) => named,
                        (None, Some(refers)) => refers,
                        (None, None) => false,
                    }
                })
                .collect();
            if let Some(wanted) = &volume_name
                && let Some(volume) = volumes.iter().find(|v| &name(&v.node) == wanted)
                && refers(volume) == Some(false)
            {
                let at = claim
                    .node
                    .path(&["spec", "volumeName"])
                    .unwrap_or(&claim.node);
                self.at(
                    &rules::CLAIM_REF,
                    claim,
                    at,
                    format!("claim {ns}/{claim_name} names volume {wanted}, whose claimRef names another claim"),
                );
                continue;
            }
            let spec = claim.node.get("spec").unwrap_or(&claim.node);
            let [volume] = candidates.as_slice() else {
                let message = if candidates.is_empty() {
                    format!(
                        "claim {ns}/{claim_name} binds to no PersistentVolume in the tree (no volumeName, no claimRef back)"
                    )
                } else {
                    let names: Vec<String> = candidates.iter().map(|v| name(&v.node)).collect();
                    format!(
                        "claim {ns}/{claim_name} could bind to several volumes: {}",
                        names.join(", ")
                    )
                };
                self.at(&rules::CLAIM_REF, claim, spec, message);
                continue;
            };
            if let Some(first) = bound.insert(name(&volume.node), format!("{ns}/{claim_name}")) {
                self.at(
                    &rules::CLAIM_REF,
                    claim,
                    spec,
                    format!(
                        "claim {ns}/{claim_name} and claim {first} both bind volume {}; only one ever will",
                        name(&volume.node)
                    ),
                );
            }
            let volume_spec = volume.node.get("spec");
            let class = |node: Option<&Node>| {
                node.and_then(|s| s.get("storageClassName"))
                    .map(Node::scalar_text)
            };
            // A volume without a class is in the "" class; a claim without one gets the default.
            let volume_class = class(volume_spec).or_else(|| Some(String::new()));
            if class(Some(spec)) != volume_class {
                let shown = |c: Option<String>| c.map_or("none".to_owned(), |c| format!("{c:?}"));
                let at = spec
                    .get("storageClassName")
                    .or_else(|| claim.node.key_node("spec"))
                    .unwrap_or(spec);
                self.at(
                    &rules::CLAIM_REF,
                    claim,
                    at,
                    format!(
                        "claim {ns}/{claim_name}: storageClassName {} differs from volume {}'s {} (a claim without one gets the default class and never binds a static volume)",
                        shown(class(Some(spec))),
                        name(&volume.node),
                        shown(volume_class)
                    ),
                );
            }
            let wanted = spec.path(&["resources", "requests", "storage"]);
            let offered = volume_spec.and_then(|s| s.path(&["capacity", "storage"]));
            if let (Some(wanted), Some(offered)) = (wanted, offered)
                && let (Some(w), Some(o)) = (
                    quantity(&wanted.scalar_text()),
                    quantity(&offered.scalar_text()),
                )
                && w > o
            {
                self.at(
                    &rules::CLAIM_REF,
                    claim,
                    wanted,
                    format!(
                        "claim {ns}/{claim_name} asks for {} but volume {} has {}",
                        wanted.scalar_text(),
                        name(&volume.node),
                        offered.scalar_text()
                    ),
                );
            }
            let modes = |node: Option<&Node>| -> BTreeSet<String> {
                node.and_then(|s| s.get("accessModes"))
                    .map(Node::items)
                    .unwrap_or_default()
                    .iter()
                    .map(Node::scalar_text)
                    .collect()
            };
            let missing: Vec<String> = modes(Some(spec))
                .difference(&modes(volume_spec))
                .cloned()
                .collect();
            if !missing.is_empty() {
                self.at(
                    &rules::CLAIM_REF,
                    claim,
                    spec.get("accessModes").unwrap_or(spec),
                    format!(
                        "claim {ns}/{claim_name} wants {} which volume {} does not offer",
                        missing.join(", "),
                        name(&volume.node)
                    ),
                );
            }
        }
        for object in self.objects() {
            let Some(spec) = pod_spec(&object.node) else {
                continue;
            };
            let ns = namespace(&object.node);
            for volume in spec.get("volumes").map(Node::items).unwrap_or_default() {
                if let Some(claim) = volume.path(&["persistentVolumeClaim", "claimName"]) {
                    let claim_name = claim.scalar_text();
                    if self
                        .find("PersistentVolumeClaim", &ns, &claim_name)
                        .is_none()
                    {
                        self.at(
                            &rules::CLAIM_REF,
                            object,
                            claim,
                            format!(
                                "{}: claim {ns}/{claim_name} does not exist",
                                label(&object.node)
                            ),
                        );
                    }
                }
            }
        }
    }

    fn namespaces(&mut self) {
        let tree = self.tree;
        let declared: BTreeSet<String> = self
            .objects()
            .filter(|o| kind(&o.node) == "Namespace")
            .map(|o| name(&o.node))
            .collect();
        for object in &tree.objects {
            let Some(ns) = object.node.path(&["metadata", "namespace"]) else {
                continue;
            };
            let text = ns.scalar_text();
            if declared.contains(&text) || BUILT_IN_NAMESPACES.contains(&text.as_str()) {
                continue;
            }
            match &object.namespace_from {
                // Once, where the kustomization set it.
                Some(at) => self.findings.push(Finding {
                    rule: &rules::NAMESPACE,
                    at: at.clone(),
                    message: format!("namespace {text} is declared by no Namespace in the tree"),
                }),
                None => self.at(
                    &rules::NAMESPACE,
                    object,
                    ns,
                    format!(
                        "{}: namespace {text} is declared by no Namespace in the tree",
                        label(&object.node)
                    ),
                ),
            }
        }
    }

    // ---- storage ----

    fn storage(&mut self) {
        let tree = self.tree;
        let sources: Vec<&str> = tree
            .facts
            .backup
            .source
            .iter()
            .map(|s| s.path.as_str())
            .collect();
        let under = |path: &str, root: &str| {
            path == root || path.starts_with(&format!("{}/", root.trim_end_matches('/')))
        };
        for object in self.objects() {
            let mut paths: Vec<&Node> = Vec::new();
            if kind(&object.node) == "PersistentVolume"
                && let Some(path) = object.node.path(&["spec", "hostPath", "path"])
            {
                paths.push(path);
            }
            if let Some(spec) = pod_spec(&object.node) {
                for volume in spec.get("volumes").map(Node::items).unwrap_or_default() {
                    if let Some(path) = volume.path(&["hostPath", "path"]) {
                        paths.push(path);
                    }
                }
            }
            for node in paths {
                let written = node.scalar_text();
                // `/srv/app/../../etc` is /etc: judge the path the kubelet mounts.
                let path = match tree::normalize(&written) {
                    Some(p) if written.starts_with('/') => format!("/{p}"),
                    _ => written.clone(),
                };
                if !under(&path, "/srv") || path == "/srv" {
                    self.at(
                        &rules::HOST_PATH,
                        object,
                        node,
                        format!("{}: hostPath {path} is not under /srv", label(&object.node)),
                    );
                    continue;
                }
                let covered = sources.iter().any(|s| under(&path, s));
                let excluded = tree.facts.storage.iter().any(|s| {
                    s.no_backup.as_deref().is_some_and(|r| !r.trim().is_empty())
                        && under(&path, s.path.get_ref())
                });
                if !covered && !excluded {
                    self.at(
                        &rules::NOT_BACKED_UP,
                        object,
                        node,
                        format!("{}: {path} is in no [[backup.source]] of homelab.toml and has no `no-backup` reason", label(&object.node)),
                    );
                }
            }
        }
    }

    // ---- exposure ----

    fn exposure(&mut self) {
        let tree = self.tree;
        let domain = &tree.facts.domain;
        let mut hosts: BTreeMap<String, Vec<(&Object, &Node)>> = BTreeMap::new();
        for ingress in self.objects().filter(|o| kind(&o.node) == "Ingress") {
            for rule in ingress
                .node
                .path(&["spec", "rules"])
                .map(Node::items)
                .unwrap_or_default()
            {
                if let Some(host) = rule.get("host") {
                    let seen = hosts.entry(host.scalar_text()).or_default();
                    if !seen.iter().any(|(o, _)| std::ptr::eq(*o, ingress)) {
                        seen.push((ingress, host));
                    }
                }
            }
        }
        let mut routed = BTreeSet::new();
        for route in &tree.facts.tunnel.route {
            let host = format!("{}.{domain}", route.name.get_ref());
            let offset = route.name.span().start;
            match route.kind.as_str() {
                "http" => {
                    routed.insert(host.clone());
                    let count = hosts.get(&host).map_or(0, Vec::len);
                    if count != 1 {
                        self.facts_at(
                            &rules::ROUTE_INGRESS,
                            offset,
                            format!("http route {host} is served by {count} Ingresses; exactly one expected"),
                        );
                    }
                }
                "tcp" => self.tcp_route(route, &host, offset),
                other => self.facts_at(
                    &rules::ROUTE_INGRESS,
                    offset,
                    format!("route {host}: kind {other:?} is neither \"http\" nor \"tcp\""),
                ),
            }
        }
        // A fixed cluster IP exists for a tcp route to end at; any other is a leftover.
        let tcp_ips: BTreeSet<&str> = tree
            .facts
            .tunnel
            .route
            .iter()
            .filter(|r| r.kind == "tcp")
            .filter_map(|r| r.cluster_ip.as_deref())
            .collect();
        for service in self.objects().filter(|o| kind(&o.node) == "Service") {
            if let Some(ip) = service.node.path(&["spec", "clusterIP"])
                && ip.scalar_text() != "None"
                && !tcp_ips.contains(ip.scalar_text().as_str())
            {
                self.at(
                    &rules::TCP_ROUTE,
                    service,
                    ip,
                    format!(
                        "Service {}/{} has a fixed cluster IP {} that no tcp route uses",
                        namespace(&service.node),
                        name(&service.node),
                        ip.scalar_text()
                    ),
                );
            }
        }
        for (host, ingresses) in &hosts {
            if !routed.contains(host) {
                for (ingress, node) in ingresses {
                    self.at(
                        &rules::INGRESS_UNROUTED,
                        ingress,
                        node,
                        format!("Ingress host {host} is not an http route in homelab.toml"),
                    );
                }
            }
        }
        for object in self.objects() {
            for field in ["externalIPs", "loadBalancerIP"] {
                if kind(&object.node) == "Service"
                    && let Some(value) = object.node.path(&["spec", field])
                {
                    self.at(
                        &rules::SERVICE_TYPE,
                        object,
                        value,
                        format!(
                            "Service {}/{} sets {field}: kube-proxy forwards that traffic before the host firewall sees it",
                            namespace(&object.node),
                            name(&object.node)
                        ),
                    );
                }
            }
            if kind(&object.node) == "Service"
                && let Some(kind_) = object.node.path(&["spec", "type"])
                && matches!(kind_.scalar_text().as_str(), "NodePort" | "LoadBalancer")
            {
                self.at(
                    &rules::SERVICE_TYPE,
                    object,
                    kind_,
                    format!(
                        "Service {}/{} is a {}",
                        namespace(&object.node),
                        name(&object.node),
                        kind_.scalar_text()
                    ),
                );
            }
            let Some(spec) = pod_spec(&object.node) else {
                continue;
            };
            if let Some(host) = spec.get("hostNetwork")
                && is_true(Some(host))
            {
                self.at(
                    &rules::HOST_NETWORK,
                    object,
                    host,
                    format!("{}: hostNetwork: true", label(&object.node)),
                );
            }
            for (container, _) in containers(spec) {
                for port in container.get("ports").map(Node::items).unwrap_or_default() {
                    if let Some(host_port) = port.get("hostPort") {
                        self.at(
                            &rules::HOST_NETWORK,
                            object,
                            host_port,
                            format!(
                                "{}: hostPort {}",
                                label(&object.node),
                                host_port.scalar_text()
                            ),
                        );
                    }
                }
            }
        }
        let firewall = &tree.facts.firewall;
        match &firewall.tcp_ports {
            Some(ports) if ports.get_ref() == &vec![22, 6443] => {}
            Some(ports) => self.facts_at(
                &rules::FIREWALL,
                ports.span().start,
                format!("[firewall] tcp-ports = {:?}", ports.get_ref()),
            ),
            None => self.facts_at(
                &rules::FIREWALL,
                0,
                "homelab.toml has no [firewall] tcp-ports".to_owned(),
            ),
        }
        if let Some(udp) = &firewall.udp_ports
            && !udp.get_ref().is_empty()
        {
            self.facts_at(
                &rules::FIREWALL,
                udp.span().start,
                format!("[firewall] udp-ports = {:?}", udp.get_ref()),
            );
        }
    }

    fn tcp_route(&mut self, route: &tree::Route, host: &str, offset: usize) {
        let (Some(ip), Some(port)) = (&route.cluster_ip, route.port) else {
            self.facts_at(
                &rules::TCP_ROUTE,
                offset,
                format!("tcp route {host} needs cluster-ip and port"),
            );
            return;
        };
        let found = self.objects().any(|o| {
            kind(&o.node) == "Service"
                && namespace(&o.node) == route.app
                && o.node
                    .path(&["spec", "clusterIP"])
                    .map(Node::scalar_text)
                    .as_deref()
                    == Some(ip.as_str())
                && o.node
                    .path(&["spec", "ports"])
                    .map(Node::items)
                    .unwrap_or_default()
                    .iter()
                    .any(|p| p.get("port").map(Node::scalar_text) == Some(port.to_string()))
        });
        if !found {
            self.facts_at(
                &rules::TCP_ROUTE,
                offset,
                format!("tcp route {host}: no Service in namespace {} has clusterIP {ip} and port {port}", route.app),
            );
        }
    }

    // ---- secrets ----

    fn secrets(&mut self) {
        let tree = self.tree;
        for object in tree.objects.iter().filter(|o| kind(&o.node) == "Secret") {
            if !self.file(object).ends_with(".sops.yaml") {
                let at = object.node.get("kind").unwrap_or(&object.node);
                self.at(
                    &rules::PLAINTEXT_SECRET,
                    object,
                    at,
                    format!(
                        "Secret {} is in {}, which is not a *.sops.yaml file",
                        name(&object.node),
                        self.file(object)
                    ),
                );
            }
        }
        for (file, document) in &tree.sops_documents {
            let path = &tree.files[*file].path;
            self.sops_document(path, document);
        }
        let sops_files: BTreeSet<&str> = tree
            .sops_documents
            .iter()
            .map(|(file, _)| tree.files[*file].path.as_str())
            .collect();
        for path in sops_files {
            let rule = tree
                .sops_rules
                .iter()
                .find(|r| r.path_regex.as_ref().is_none_or(|re| re.is_match(path)));
            let fine = rule.is_some_and(|r| r.encrypted_regex.as_deref() == Some(ENCRYPTED_REGEX));
            if !fine {
                let at = Location::new(path, 1, 0);
                self.findings.push(Finding {
                    rule: &rules::CREATION_RULE,
                    at,
                    message: match rule {
                        None => format!("no creation rule in .sops.yaml matches {path}"),
                        Some(_) => format!("the first creation rule matching {path} has no encrypted_regex {ENCRYPTED_REGEX}"),
                    },
                });
            }
        }
        self.secret_looking_values();
        self.flux_identity();
    }

    /// Two age identities: the owner's (the host's key) opens everything; Flux's opens the
    /// cluster's secrets only. Checked where each is written: .sops.yaml's rules, every SOPS
    /// file's recipients, and the key the bootstrap hands Flux.
    fn flux_identity(&mut self) {
        let tree = self.tree;
        let Some(flux) = &tree.facts.flux_age_recipient else {
            return;
        };
        let flux = flux.get_ref().as_str();
        let first_rule = |path: &str| {
            tree.sops_rules
                .iter()
                .find(|r| r.path_regex.as_ref().is_none_or(|re| re.is_match(path)))
        };
        let cluster_sample = format!("{}/manifests/app/secret.sops.yaml", tree.cluster);
        if let Some(rule) = first_rule(&cluster_sample)
            && !rule.recipients.iter().any(|r| r == flux)
        {
            self.findings.push(Finding {
                rule: &rules::FLUX_IDENTITY,
                at: Location::new(tree::SOPS_CONFIG, rule.line, 0),
                message: format!(
                    "the creation rule for the cluster's secrets does not encrypt to Flux's \
                     recipient {flux} (homelab.toml flux-age-recipient): Flux could not decrypt \
                     what it makes"
                ),
            });
        }
        let host_sample = format!("{}/host-secrets.sops.yaml", tree::HOST_SECRETS);
        if let Some(rule) = first_rule(&host_sample)
            && rule.recipients.iter().any(|r| r == flux)
        {
            self.findings.push(Finding {
                rule: &rules::FLUX_IDENTITY,
                at: Location::new(tree::SOPS_CONFIG, rule.line, 0),
                message: "the creation rule for the host's secrets encrypts to Flux's recipient: \
                          the cluster could read the R2 keys and the repository password"
                    .to_owned(),
            });
        }
        let recipients = |document: &Node| -> Vec<String> {
            document
                .path(&["sops", "age"])
                .map(Node::items)
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.get("recipient").map(Node::scalar_text))
                .collect()
        };
        for (file, document) in &tree.sops_documents {
            let found = recipients(document);
            if !found.is_empty() && !found.iter().any(|r| r == flux) {
                let at = document.key_node("sops").unwrap_or(document);
                self.at_file(
                    &rules::FLUX_IDENTITY,
                    &tree.files[*file].path,
                    at,
                    format!(
                        "encrypted to {} only, not to Flux's recipient {flux}: Flux cannot \
                         decrypt it (run `sops updatekeys` on it)",
                        found.join(", ")
                    ),
                );
            }
        }
        for (file, document) in &tree.host_sops_documents {
            if recipients(document).iter().any(|r| r == flux) {
                let at = document.key_node("sops").unwrap_or(document);
                self.at_file(
                    &rules::FLUX_IDENTITY,
                    &tree.files[*file].path,
                    at,
                    format!(
                        "a host secret encrypted to Flux's recipient {flux}: the cluster could \
                         decrypt it"
                    ),
                );
            }
        }
        if let Some(file) = tree.flux_module {
            let text = &tree.files[file].text;
            if let Some((index, line)) = text
                .lines()
                .enumerate()
                .find(|(_, l)| l.contains("--age-key"))
                && !line.contains("flux/age-key")
            {
                self.findings.push(Finding {
                    rule: &rules::FLUX_IDENTITY,
                    at: Location::new(tree::FLUX_MODULE, index + 1, 0),
                    message: "the Flux bootstrap's --age-key is not the flux/age-key secret: the \
                              cluster would get another key than Flux's own"
                        .to_owned(),
                });
            }
        }
    }

    fn sops_document(&mut self, path: &str, document: &Node) {
        if document.value == Value::Null {
            return;
        }
        if whole_encrypted(document) {
            self.at_file(
                &rules::WHOLE_DOCUMENT,
                path,
                document.get("kind").unwrap_or(document),
                format!("{path}: apiVersion and kind are ciphertext"),
            );
            return;
        }
        let Some(metadata) = document.get("sops") else {
            self.at_file(
                &rules::PLAINTEXT_SECRET,
                path,
                document,
                format!("{path}: a document without SOPS metadata (never encrypted)"),
            );
            return;
        };
        let regex = metadata.get("encrypted_regex").map(Node::scalar_text);
        if regex.as_deref() != Some(ENCRYPTED_REGEX) {
            self.at_file(
                &rules::ENCRYPTED_REGEX,
                path,
                metadata,
                format!("{path}: encrypted_regex is {:?}", regex.unwrap_or_default()),
            );
        }
        for field in ["data", "stringData"] {
            for (key, value) in document.get(field).map(Node::entries).unwrap_or_default() {
                if !value.scalar_text().starts_with("ENC[") {
                    self.at_file(
                        &rules::PLAINTEXT_SECRET,
                        path,
                        value,
                        format!("{path}: {field}.{} is not encrypted", key.scalar_text()),
                    );
                }
            }
        }
    }

    fn secret_looking_values(&mut self) {
        let tree = self.tree;
        for object in tree
            .objects
            .iter()
            .filter(|o| !tree.files[o.file].path.ends_with(".sops.yaml"))
        {
            let mut suspicious: Vec<(&Node, String)> = Vec::new();
            if let Some(spec) = pod_spec(&object.node) {
                for (container, _) in containers(spec) {
                    for env in container.get("env").map(Node::items).unwrap_or_default() {
                        let var = env.get("name").map(Node::scalar_text).unwrap_or_default();
                        if let Some(value) = env.get("value")
                            && secret_name(&var)
                            && !value.scalar_text().is_empty()
                            && !value.scalar_text().starts_with('/')
                        {
                            suspicious.push((value, format!("env {var} is set to a literal")));
                        }
                    }
                }
            }
            if kind(&object.node) == "ConfigMap" {
                for (key, value) in object
                    .node
                    .get("data")
                    .map(Node::entries)
                    .unwrap_or_default()
                {
                    if secret_name(&key.scalar_text()) && !value.scalar_text().is_empty() {
                        suspicious.push((value, format!("ConfigMap key {}", key.scalar_text())));
                    }
                }
            }
            visit_strings(&object.node, &mut |node, text| {
                if let Some(marker) = SECRET_MARKERS.iter().find(|m| text.contains(**m)) {
                    suspicious.push((node, format!("a value contains {marker:?}")));
                }
            });
            for (node, why) in suspicious {
                self.at(
                    &rules::SECRET_VALUE,
                    object,
                    node,
                    format!("{}: {why}", label(&object.node)),
                );
            }
        }
    }

    // ---- flux ----

    fn flux(&mut self) {
        let tree = self.tree;
        let names: BTreeMap<String, &Object> = tree
            .flux
            .iter()
            .map(|f| &tree.objects[f.object])
            .map(|o| (name(&o.node), o))
            .collect();
        for (index, flux) in tree.flux.iter().enumerate() {
            let object = &tree.objects[flux.object];
            let this = name(&object.node);
            let is_root = tree::normalize(&flux.path).as_deref() == Some(tree.cluster.as_str());
            let spec = object.node.get("spec").unwrap_or(&object.node);
            for dependency in spec.get("dependsOn").map(Node::items).unwrap_or_default() {
                let target = dependency
                    .get("name")
                    .map(Node::scalar_text)
                    .unwrap_or_default();
                if !names.contains_key(&target) {
                    self.at(
                        &rules::DEPENDS_ON,
                        object,
                        dependency,
                        format!("Kustomization {this} depends on {target}, which no Flux Kustomization is"),
                    );
                }
            }
            if depends_in_a_cycle(&names, &this) {
                self.at(
                    &rules::DEPENDS_ON,
                    object,
                    spec.key_node("dependsOn").unwrap_or(spec),
                    format!("Kustomization {this} depends on itself through dependsOn; Flux waits forever"),
                );
            } else if !is_root
                && this != INFRASTRUCTURE
                && !self.reaches_infrastructure(&names, &this, &mut BTreeSet::new())
            {
                self.at(
                    &rules::DEPENDS_ON,
                    object,
                    spec.key_node("dependsOn").unwrap_or(spec),
                    format!("Kustomization {this} does not wait for {INFRASTRUCTURE}"),
                );
            }
            // The root folder's objects were rendered before any Flux path was followed.
            let rendered_here = |o: &Object| {
                if is_root {
                    o.flux.is_none()
                } else {
                    o.flux == Some(index)
                }
            };
            let applies_sops = tree
                .objects
                .iter()
                .any(|o| rendered_here(o) && tree.files[o.file].path.ends_with(".sops.yaml"));
            let decrypts = spec
                .path(&["decryption", "provider"])
                .map(Node::scalar_text)
                .as_deref()
                == Some("sops")
                && spec.path(&["decryption", "secretRef", "name"]).is_some();
            if applies_sops && !decrypts {
                self.at(
                    &rules::DECRYPTION,
                    object,
                    spec.key_node("decryption").unwrap_or(spec),
                    format!("Kustomization {this} applies SOPS files but does not decrypt them"),
                );
            }
        }
        for object in tree
            .objects
            .iter()
            .filter(|o| kind(&o.node) == "GitRepository" && tree.is_this_repository(&o.node))
        {
            let interval = object.node.path(&["spec", "interval"]);
            if interval.map(Node::scalar_text).as_deref() != Some(GIT_REPOSITORY_INTERVAL) {
                self.at(
                    &rules::INTERVAL,
                    object,
                    interval.unwrap_or(&object.node),
                    format!(
                        "GitRepository {}: interval {} (documented: {GIT_REPOSITORY_INTERVAL})",
                        name(&object.node),
                        interval
                            .map(Node::scalar_text)
                            .unwrap_or_else(|| "missing".to_owned())
                    ),
                );
            }
        }
    }

    /// Flux's errors must reach the owner: every Kustomization and HelmRelease is covered by an
    /// Alert on errors whose Provider exists, and a Matrix Provider posts to homelab.toml's room.
    fn alerts(&mut self) {
        let tree = self.tree;
        let facts = &tree.facts.backup;
        // Per delivering Alert: its event sources as (kind, namespace, name).
        let mut routes: Vec<Vec<(String, String, String)>> = Vec::new();
        for alert in self.objects().filter(|o| kind(&o.node) == "Alert") {
            let ns = namespace(&alert.node);
            let spec = alert.node.get("spec").unwrap_or(&alert.node);
            let provider_ref = spec.path(&["providerRef", "name"]);
            let provider_name = provider_ref.map(Node::scalar_text).unwrap_or_default();
            let provider = self.find("Provider", &ns, &provider_name);
            if provider.is_none() {
                self.at(
                    &rules::ALERT_PROVIDER,
                    alert,
                    provider_ref.unwrap_or(spec),
                    format!(
                        "{}: Provider {ns}/{provider_name} is not defined",
                        label(&alert.node)
                    ),
                );
            }
            let severity = spec
                .get("eventSeverity")
                .map(Node::scalar_text)
                .unwrap_or_else(|| "info".to_owned());
            let delivers = provider.is_some_and(|p| !is_true(p.node.path(&["spec", "suspend"])))
                && !is_true(spec.get("suspend"))
                && (severity == "error" || severity == "info");
            if !delivers {
                continue;
            }
            let sources = spec
                .get("eventSources")
                .map(Node::items)
                .unwrap_or_default()
                .iter()
                .filter(|s| s.get("matchLabels").is_none())
                .map(|s| {
                    let field = |f: &str| s.get(f).map(Node::scalar_text);
                    (
                        field("kind").unwrap_or_default(),
                        field("namespace").unwrap_or_else(|| ns.clone()),
                        field("name").unwrap_or_default(),
                    )
                })
                .collect();
            routes.push(sources);
        }
        for object in self
            .objects()
            .filter(|o| matches!(kind(&o.node), "Kustomization" | "HelmRelease"))
            .filter(|o| {
                o.node
                    .get("apiVersion")
                    .is_some_and(|v| v.scalar_text().contains("toolkit.fluxcd.io"))
            })
        {
            let (k, ns, n) = (
                kind(&object.node),
                namespace(&object.node),
                name(&object.node),
            );
            let covered = routes.iter().any(|sources| {
                sources
                    .iter()
                    .any(|(sk, sns, sn)| sk == k && *sns == ns && (sn == "*" || *sn == n))
            });
            if !covered {
                self.at(
                    &rules::ALERTS,
                    object,
                    &object.node,
                    format!("{k} {ns}/{n}: no Flux Alert sends its errors anywhere"),
                );
            }
        }
        for provider in self
            .objects()
            .filter(|o| kind(&o.node) == "Provider")
            .filter(|o| {
                o.node
                    .path(&["spec", "type"])
                    .map(Node::scalar_text)
                    .as_deref()
                    == Some("matrix")
            })
        {
            let spec = provider.node.get("spec").unwrap_or(&provider.node);
            for (field, fact, key) in [
                ("address", &facts.matrix_homeserver, "matrix-homeserver"),
                ("channel", &facts.matrix_room, "matrix-room"),
            ] {
                let value = spec.get(field).map(Node::scalar_text);
                if let Some(fact) = fact
                    && value.as_deref() != Some(fact.as_str())
                {
                    self.at(
                        &rules::ALERTS,
                        provider,
                        spec.get(field).unwrap_or(spec),
                        format!(
                            "{}: {field} {:?} is not homelab.toml's backup.{key} {fact:?}",
                            label(&provider.node),
                            value.unwrap_or_default()
                        ),
                    );
                }
            }
            if let Some(secret) = spec.get("secretRef") {
                let secret_name = secret
                    .get("name")
                    .map(Node::scalar_text)
                    .unwrap_or_default();
                self.reference(
                    provider,
                    secret,
                    "Secret",
                    &secret_name,
                    Some("token"),
                    false,
                );
            }
        }
    }

    fn reaches_infrastructure(
        &self,
        names: &BTreeMap<String, &Object>,
        from: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        if !seen.insert(from.to_owned()) {
            return false;
        }
        let Some(object) = names.get(from) else {
            return false;
        };
        object
            .node
            .path(&["spec", "dependsOn"])
            .map(Node::items)
            .unwrap_or_default()
            .iter()
            .map(|d| d.get("name").map(Node::scalar_text).unwrap_or_default())
            .any(|d| d == INFRASTRUCTURE || self.reaches_infrastructure(names, &d, seen))
    }

    // ---- hygiene ----

    fn hygiene(&mut self) {
        for object in self.objects() {
            let Some(spec) = pod_spec(&object.node) else {
                continue;
            };
            let long_running = matches!(
                kind(&object.node),
                "Deployment" | "StatefulSet" | "DaemonSet"
            );
            for (container, init) in containers(spec) {
                let cname = container
                    .get("name")
                    .map(Node::scalar_text)
                    .unwrap_or_default();
                let what = format!("{}: container {cname}", label(&object.node));
                match container.get("image") {
                    None => self.at(
                        &rules::IMAGE_TAG,
                        object,
                        container,
                        format!("{what}: no image"),
                    ),
                    Some(image) => {
                        let text = image.scalar_text();
                        if !image_pinned(&text) {
                            self.at(
                                &rules::IMAGE_TAG,
                                object,
                                image,
                                format!("{what}: image {text:?} is not pinned to a release tag"),
                            );
                        }
                    }
                }
                let resources = container.get("resources");
                for part in ["requests", "limits"] {
                    if resources
                        .and_then(|r| r.get(part))
                        .is_none_or(|p| p.entries().is_empty())
                    {
                        self.at(
                            &rules::RESOURCES,
                            object,
                            resources.unwrap_or(container),
                            format!("{what}: no resources.{part}"),
                        );
                    }
                }
                if long_running && !init {
                    for probe in ["readinessProbe", "livenessProbe"] {
                        if container.get(probe).is_none() {
                            self.at(
                                &rules::PROBES,
                                object,
                                container,
                                format!("{what}: no {probe}"),
                            );
                        }
                    }
                }
            }
            if kind(&object.node) == "Deployment" {
                let has_claim = spec
                    .get("volumes")
                    .map(Node::items)
                    .unwrap_or_default()
                    .iter()
                    .any(|v| v.get("persistentVolumeClaim").is_some());
                let strategy = object.node.path(&["spec", "strategy", "type"]);
                if has_claim && strategy.map(Node::scalar_text).as_deref() != Some("Recreate") {
                    let at = strategy
                        .or_else(|| object.node.get("spec"))
                        .unwrap_or(&object.node);
                    self.at(
                        &rules::RECREATE,
                        object,
                        at,
                        format!(
                            "{}: uses a claim but not strategy Recreate",
                            label(&object.node)
                        ),
                    );
                }
            }
        }
    }

    fn silence_annotations(&mut self) {
        let tree = self.tree;
        for object in &tree.objects {
            let Some(annotation) =
                object
                    .node
                    .path(&["metadata", "annotations", IGNORE_ANNOTATION])
            else {
                continue;
            };
            for line in annotation
                .scalar_text()
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                let (id, reason) = line.split_once(':').unwrap_or((line, ""));
                let known = rules::ALL.iter().any(|r| r.id == id.trim());
                if !known || reason.trim().is_empty() {
                    let at = Location::at(self.file(object), annotation);
                    self.findings.push(Finding {
                        rule: &rules::SILENCE,
                        at,
                        message: if known {
                            format!("{IGNORE_ANNOTATION}: {} gives no reason", id.trim())
                        } else {
                            format!("{IGNORE_ANNOTATION}: no rule {:?}", id.trim())
                        },
                    });
                }
            }
        }
    }
}

/// Whether following `dependsOn` from `from` comes back to it.
/// Counts what would be written.
struct ByteCounter(u64);

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes a data value holds: base64 decoded when `encoded`; a SOPS-encrypted value
/// (`ENC[AES256_GCM,data:<base64 ciphertext>,…]`) by its ciphertext, which is as long as the
/// plaintext.
fn data_bytes(value: &str, encoded: bool) -> u64 {
    let base64_len = |text: &str| (text.trim_end_matches('=').len() as u64 * 3) / 4;
    let plain = match value
        .strip_prefix("ENC[")
        .and_then(|rest| rest.split(",data:").nth(1))
        .and_then(|rest| rest.split(',').next())
    {
        Some(ciphertext) => base64_len(ciphertext),
        None => value.len() as u64,
    };
    if encoded { plain * 3 / 4 } else { plain }
}

fn depends_in_a_cycle(names: &BTreeMap<String, &Object>, from: &str) -> bool {
    let mut stack = vec![from.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(current) = stack.pop() {
        let Some(object) = names.get(&current) else {
            continue;
        };
        for dependency in object
            .node
            .path(&["spec", "dependsOn"])
            .map(Node::items)
            .unwrap_or_default()
        {
            let target = dependency
                .get("name")
                .map(Node::scalar_text)
                .unwrap_or_default();
            if target == from {
                return true;
            }
            if seen.insert(target.clone()) {
                stack.push(target);
            }
        }
    }
    false
}

/// The value of `--flag VALUE`, `--flag=VALUE` or `-f VALUE`.
fn flag_value(args: &[String], names: &[&str]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, arg)| {
        names.iter().find_map(|name| {
            if arg == name {
                args.get(i + 1).cloned()
            } else {
                arg.strip_prefix(&format!("{name}=")).map(str::to_owned)
            }
        })
    })
}

/// Whether a label selector (`k=v`, `k!=v`, `k in (a,b)`, `k notin (…)`, `k`, `!k`, joined by
/// commas) matches labels; None when it cannot be read.
fn selector_matches(selector: &str, labels: &Node) -> Option<bool> {
    let mut requirements = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                requirements.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    requirements.push(&selector[start..]);
    let value = |key: &str| labels.get(key).map(Node::scalar_text);
    let mut all = true;
    for requirement in requirements {
        let requirement = requirement.trim();
        let set = |rest: &str| -> Option<Vec<String>> {
            let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        let holds = if let Some((key, rest)) = requirement.split_once(" notin ") {
            !set(rest)?.contains(&value(key.trim()).unwrap_or_default())
        } else if let Some((key, rest)) = requirement.split_once(" in ") {
            let wanted = set(rest)?;
            value(key.trim()).is_some_and(|v| wanted.contains(&v))
        } else if let Some((key, wanted)) = requirement.split_once("!=") {
            value(key.trim()).as_deref() != Some(wanted.trim())
        } else if let Some((key, wanted)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            value(key.trim()).as_deref() == Some(wanted.trim())
        } else if let Some(key) = requirement.strip_prefix('!') {
            value(key.trim()).is_none()
        } else if !requirement.is_empty() && !requirement.contains([' ', '(', ')']) {
            value(requirement).is_some()
        } else {
            return None;
        };
        all &= holds;
    }
    Some(all)
}

fn silenced(object: &Node, rule: &str) -> bool {
    object
        .path(&["metadata", "annotations", IGNORE_ANNOTATION])
        .map(Node::scalar_text)
        .is_some_and(|text| {
            text.lines().any(|line| {
                line.split_once(':')
                    .is_some_and(|(id, reason)| id.trim() == rule && !reason.trim().is_empty())
            })
        })
}

/// A document SOPS encrypted whole: its apiVersion or kind is ciphertext.
pub fn whole_encrypted(node: &Node) -> bool {
    ["apiVersion", "kind"].iter().any(|k| {
        node.get(k)
            .is_some_and(|v| v.scalar_text().starts_with("ENC["))
    })
}

fn image_pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => !tag.is_empty() && tag != "latest",
        None => false,
    }
}

fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "SECRET",
        "TOKEN",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

const SECRET_MARKERS: [&str; 6] = [
    "-----BEGIN PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "AGE-SECRET-KEY-1",
    "ghp_",
    "xoxb-",
];

fn visit_strings<'a>(node: &'a Node, visit: &mut impl FnMut(&'a Node, &str)) {
    match &node.value {
        Value::Str(text) => visit(node, text),
        Value::Seq(items) => items.iter().for_each(|i| visit_strings(i, visit)),
        Value::Map(entries) => entries.iter().for_each(|(_, v)| visit_strings(v, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels = crate::check::yaml::parse("a: x\nb: y\n")
            .unwrap()
            .documents
            .remove(0);
        assert_eq!(selector_matches("a=x", &labels), Some(true));
        assert_eq!(selector_matches("a=x,b in (z, y)", &labels), Some(true));
        assert_eq!(selector_matches("a in (z)", &labels), Some(false));
        assert_eq!(selector_matches("c notin (z),!c,a", &labels), Some(true));
        assert_eq!(selector_matches("a!=x", &labels), Some(false));
        assert_eq!(selector_matches("a in z", &labels), None);
    }

    #[test]
    fn quantities_and_images() {
        assert_eq!(quantity("20Gi"), Some(20.0 * 1_073_741_824.0));
        assert_eq!(quantity("1G"), Some(1e9));
        assert_eq!(quantity("x"), None);
        assert!(image_pinned("ghcr.io/a/b:v1.2.3"));
        assert!(image_pinned("registry:5000/a/b@sha256:abc"));
        assert!(!image_pinned("registry:5000/a/b"));
        assert!(!image_pinned("a/b:latest"));
        assert!(!image_pinned("a/b:"));
    }
}
