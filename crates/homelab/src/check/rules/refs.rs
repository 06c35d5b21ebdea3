//! refs/*: what an object names must exist — Secret and ConfigMap keys, Service selectors and ports, Ingress backends, namespaces, and the workloads homelab.toml's backup commands name.

use std::collections::BTreeSet;

use super::*;
use crate::check::findings::{self as rules, Rule};
use crate::check::object::*;
use crate::check::tree::Object;
use crate::check::yaml::{Node, Value};

impl Checker<'_> {
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

    fn reference(&mut self, rule: &'static Rule, reference: Reference<'_>) {
        let Reference {
            object,
            at,
            kind: kind_,
            name: name_,
            key,
            optional,
        } = reference;
        if optional {
            return;
        }
        let ns = namespace(&object.node);
        let name_node = at
            .get("name")
            .or_else(|| at.get("secretName"))
            .unwrap_or(at);
        let key_node = at.get("key").unwrap_or(at);
        match self.keys_of(kind_, &ns, &name_) {
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
                    && !keys.contains(&key)
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

    pub(super) fn refs_secret(&mut self) {
        for reference in self.config_references() {
            if reference.kind == "Secret" {
                self.reference(&rules::SECRET_REF, reference);
            }
        }
    }

    pub(super) fn refs_config_map(&mut self) {
        for reference in self.config_references() {
            if reference.kind == "ConfigMap" {
                self.reference(&rules::CONFIG_MAP_REF, reference);
            }
        }
    }

    pub(super) fn refs_alert_provider(&mut self) {
        for alert in self.objects().filter(|o| kind(&o.node) == "Alert") {
            let ns = namespace(&alert.node);
            let spec = alert.node.get("spec").unwrap_or(&alert.node);
            let provider_ref = spec.path(&["providerRef", "name"]);
            let provider_name = provider_ref.map(Node::scalar_text).unwrap_or_default();
            if self.find("Provider", &ns, &provider_name).is_none() {
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
        }
    }

    /// kubectl commands in homelab.toml's backup sources: the workloads they scale or exec into
    /// and the pods they wait for must be the tree's. A namespace with a HelmRelease has objects
    /// the chart makes, which the check cannot see: names it does not find there pass.
    pub(super) fn refs_backup_command(&mut self) {
        let tree = self.tree;
        // Apps declared by name: the generator's commands scale deployment/<deployment> in
        // <namespace> and wait for pods labelled app.kubernetes.io/name=<deployment>.
        for source in &tree.facts.backup.source {
            let Some(app) = &source.app else { continue };
            let offset = app.span().start;
            let app = app.get_ref();
            if app.stop != "restore" && app.stop != "snapshot" {
                self.emit(
                    &rules::BACKUP_COMMAND,
                    Place::Facts(offset),
                    format!(
                        "app.stop {:?}: expected \"restore\" or \"snapshot\"",
                        app.stop
                    ),
                );
            }
            match self.find("Deployment", &app.namespace, &app.deployment) {
                None => self.emit(
                    &rules::BACKUP_COMMAND,
                    Place::Facts(offset),
                    format!(
                        "app: no Deployment {}/{} in the tree",
                        app.namespace, app.deployment
                    ),
                ),
                Some(deployment) => {
                    let labelled = pod_labels(&deployment.node)
                        .and_then(|labels| labels.get("app.kubernetes.io/name"))
                        .map(Node::scalar_text);
                    if labelled.as_deref() != Some(app.deployment.as_str()) {
                        self.emit(
                            &rules::BACKUP_COMMAND,
                            Place::Facts(offset),
                            format!(
                                "app: the pods of Deployment {}/{} are not labelled \
                                 app.kubernetes.io/name={} (the stop would wait for nothing)",
                                app.namespace, app.deployment, app.deployment
                            ),
                        );
                    }
                }
            }
        }
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
                        self.emit(
                            &rules::BACKUP_COMMAND,
                            Place::Facts(offset),
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
                    self.emit(
                        &rules::BACKUP_COMMAND,
                        Place::Facts(offset),
                        format!("selector {selector:?} cannot be read"),
                    );
                } else if !matched && !charted {
                    self.emit(
                        &rules::BACKUP_COMMAND,
                        Place::Facts(offset),
                        format!("selector {selector:?} matches no pod template in namespace {ns}"),
                    );
                }
            }
        }
    }

    pub(super) fn refs_service_selector(&mut self) {
        for (service, selector, pods) in self.service_pods() {
            if pods.is_empty() {
                let ns = namespace(&service.node);
                self.at(
                    &rules::SERVICE_SELECTOR,
                    service,
                    selector,
                    format!(
                        "Service {ns}/{}: no pod template in {ns} has these labels",
                        name(&service.node)
                    ),
                );
            }
        }
    }

    /// A named targetPort must be a container port name of the pods the Service selects (a
    /// Service that selects none is refs/service-selector).
    pub(super) fn refs_target_port(&mut self) {
        for (service, _, pods) in self.service_pods() {
            let port_names: BTreeSet<String> = pods
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
                if !pods.is_empty()
                    && let Some(target) = port.get("targetPort")
                    && let Value::Str(target_name) = &target.value
                    && !port_names.contains(target_name)
                {
                    self.at(
                        &rules::TARGET_PORT,
                        service,
                        target,
                        format!(
                            "Service {}/{}: targetPort {target_name:?} is not a container port \
                             name of the pods it selects",
                            namespace(&service.node),
                            name(&service.node)
                        ),
                    );
                }
            }
        }
    }

    pub(super) fn refs_ingress_backend(&mut self) {
        for ingress in self.objects().filter(|o| kind(&o.node) == "Ingress") {
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

    pub(super) fn refs_namespace(&mut self) {
        let declared: BTreeSet<String> = self
            .objects()
            .filter(|o| kind(&o.node) == "Namespace")
            .map(|o| name(&o.node))
            .collect();
        for object in self.objects() {
            let Some(ns) = object.node.path(&["metadata", "namespace"]) else {
                continue;
            };
            let text = ns.scalar_text();
            if declared.contains(&text) || BUILT_IN_NAMESPACES.contains(&text.as_str()) {
                continue;
            }
            match &object.namespace_from {
                // Once, where the kustomization set it.
                Some(at) => self.emit(
                    &rules::NAMESPACE,
                    Place::Line(at.clone()),
                    format!("namespace {text} is declared by no Namespace in the tree"),
                ),
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
}

/// A workload's (or a Provider's) use of a Secret or ConfigMap, and of one of its keys.
struct Reference<'a> {
    object: &'a Object,
    /// The node that names it: the name's or key's node is found under it.
    at: &'a Node,
    kind: &'static str,
    name: String,
    key: Option<String>,
    optional: bool,
}

impl<'a> Checker<'a> {
    /// Every Secret and ConfigMap a pod template reads (env, envFrom, volumes, projected
    /// volumes), and the Secret of each Matrix Provider.
    fn config_references(&self) -> Vec<Reference<'a>> {
        let mut found = Vec::new();
        let name_of =
            |node: &Node, field: &str| node.get(field).map(Node::scalar_text).unwrap_or_default();
        for object in self.objects() {
            let Some(spec) = pod_spec(&object.node) else {
                continue;
            };
            for (container, _) in containers(spec) {
                for env in container.get("env").map(Node::items).unwrap_or_default() {
                    for (field, kind_) in
                        [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")]
                    {
                        if let Some(at) = env.path(&["valueFrom", field]) {
                            found.push(Reference {
                                object,
                                at,
                                kind: kind_,
                                name: name_of(at, "name"),
                                key: at.get("key").map(Node::scalar_text),
                                optional: is_true(at.get("optional")),
                            });
                        }
                    }
                }
                for source in container
                    .get("envFrom")
                    .map(Node::items)
                    .unwrap_or_default()
                {
                    for (field, kind_) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
                        if let Some(at) = source.get(field) {
                            found.push(Reference {
                                object,
                                at,
                                kind: kind_,
                                name: name_of(at, "name"),
                                key: None,
                                optional: is_true(at.get("optional")),
                            });
                        }
                    }
                }
            }
            for volume in spec.get("volumes").map(Node::items).unwrap_or_default() {
                let mut sources: Vec<(&Node, &'static str, String)> = Vec::new();
                if let Some(secret) = volume.get("secret") {
                    sources.push((secret, "Secret", name_of(secret, "secretName")));
                }
                if let Some(config) = volume.get("configMap") {
                    sources.push((config, "ConfigMap", name_of(config, "name")));
                }
                for projected in volume
                    .path(&["projected", "sources"])
                    .map(Node::items)
                    .unwrap_or_default()
                {
                    for (field, kind_) in [("secret", "Secret"), ("configMap", "ConfigMap")] {
                        if let Some(source) = projected.get(field) {
                            sources.push((source, kind_, name_of(source, "name")));
                        }
                    }
                }
                for (source, kind_, name_) in sources {
                    let optional = is_true(source.get("optional"));
                    let items = source.get("items").map(Node::items).unwrap_or_default();
                    if items.is_empty() {
                        found.push(Reference {
                            object,
                            at: source,
                            kind: kind_,
                            name: name_.clone(),
                            key: None,
                            optional,
                        });
                    }
                    for item in items {
                        found.push(Reference {
                            object,
                            at: item,
                            kind: kind_,
                            name: name_.clone(),
                            key: item.get("key").map(Node::scalar_text),
                            optional,
                        });
                    }
                }
            }
        }
        for provider in self.matrix_providers() {
            if let Some(at) = provider.node.path(&["spec", "secretRef"]) {
                found.push(Reference {
                    object: provider,
                    at,
                    kind: "Secret",
                    name: name_of(at, "name"),
                    key: Some("token".to_owned()),
                    optional: false,
                });
            }
        }
        found
    }

    /// Each Service with a selector, and the pod templates in its namespace it selects.
    fn service_pods(&self) -> Vec<(&'a Object, &'a Node, Vec<&'a Object>)> {
        let mut found = Vec::new();
        for service in self.objects().filter(|o| kind(&o.node) == "Service") {
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
            let pods = self
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
            found.push((service, selector, pods));
        }
        found
    }
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
