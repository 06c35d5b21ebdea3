//! Rendering a kustomization the way kustomize does, for the features the tree uses
//! (resources, namespace, labels), parsing each file once; anything else is a finding.

use std::collections::{BTreeSet, HashMap};

use super::*;

pub(super) struct Loader {
    pub(super) parsed: HashMap<usize, Vec<Node>>,
    /// Files that a rendered kustomization included (kustomization files themselves too).
    pub(super) included: BTreeSet<String>,
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

pub(super) const FLUX_TRANSFORMS: [&str; 8] = [
    "targetNamespace",
    "patches",
    "postBuild",
    "components",
    "images",
    "namePrefix",
    "nameSuffix",
    "commonMetadata",
];

/// Kinds kustomize never gives a namespace.
const CLUSTER_SCOPED: [&str; 11] = [
    "Namespace",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "CustomResourceDefinition",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
];

impl Loader {
    /// The documents of a file, parsed once; syntax errors and duplicate keys become findings.
    pub(super) fn documents(&mut self, tree: &mut Tree, file: usize) -> Vec<Node> {
        if let Some(documents) = self.parsed.get(&file) {
            return documents.clone();
        }
        let documents = Self::parse(tree, file);
        self.parsed.insert(file, documents.clone());
        documents
    }

    /// The documents of a manifest that is rendered: not kept, so that the tree holds one copy
    /// of a big file, not two (a file rendered twice is parsed twice; its findings are merged).
    pub(super) fn take_documents(&mut self, tree: &mut Tree, file: usize) -> Vec<Node> {
        self.parsed
            .remove(&file)
            .unwrap_or_else(|| Self::parse(tree, file))
    }

    fn parse(tree: &mut Tree, file: usize) -> Vec<Node> {
        match yaml::parse(&tree.files[file].text) {
            Ok(parsed) => {
                for duplicate in parsed.duplicates {
                    let at = Location::new(
                        &tree.files[file].path,
                        duplicate.line as usize,
                        duplicate.col as usize,
                    );
                    tree.findings.push(Finding {
                        rule: &rules::DUPLICATE_KEY,
                        at,
                        object: None,
                        message: format!(
                            "key {:?} is also on line {}",
                            duplicate.key, duplicate.first_line
                        ),
                    });
                }
                parsed.documents
            }
            Err(err) => {
                let at = Location::new(&tree.files[file].path, err.line, err.col);
                tree.findings.push(Finding {
                    rule: &rules::YAML_SYNTAX,
                    at,
                    object: None,
                    message: err.message,
                });
                Vec::new()
            }
        }
    }

    /// Renders the kustomization in `dir` (relative): its objects with their file.
    pub(super) fn render(
        &mut self,
        tree: &mut Tree,
        dir: &str,
        stack: &mut Vec<String>,
    ) -> Result<Vec<Rendered>, LoadError> {
        let Some(name) = KUSTOMIZATION_FILES
            .iter()
            .find(|name| tree.root.join(dir).join(name).is_file())
        else {
            let at = Location::new(dir, 0, 0);
            tree.findings.push(Finding {
                rule: &rules::UNSUPPORTED,
                at,
                object: None,
                message: format!(
                    "{dir} has no kustomization.yaml; Flux would generate one from every manifest \
                     below it, which the check does not imitate"
                ),
            });
            return Ok(Vec::new());
        };
        // Compared by real path: a symlinked folder must not render itself forever.
        let real = tree
            .root
            .join(dir)
            .canonicalize()
            .map_or_else(|_| dir.to_owned(), |p| p.to_string_lossy().into_owned());
        if stack.contains(&real) {
            let at = Location::new(dir, 0, 0);
            tree.findings.push(Finding {
                rule: &rules::UNSUPPORTED,
                at,
                object: None,
                message: format!("{dir} includes itself"),
            });
            return Ok(Vec::new());
        }
        stack.push(real);
        let relative = join(dir, name);
        self.included.insert(relative.clone());
        let file = tree.add_file(&relative)?;
        let documents = self.documents(tree, file);
        let mut objects = Vec::new();
        let mut namespace: Option<(String, Location)> = None;
        let mut labels: Vec<(Node, bool)> = Vec::new();
        if documents.len() > 1 {
            tree.report(
                &rules::UNSUPPORTED,
                file,
                &documents[1],
                "a kustomization file holds one document".to_owned(),
            );
        }
        let empty = Node {
            value: Value::Map(Vec::new()),
            line: 1,
            col: 0,
        };
        let kustomization = documents.first().unwrap_or(&empty);
        if !matches!(kustomization.value, Value::Map(_)) {
            tree.report(
                &rules::NOT_AN_OBJECT,
                file,
                kustomization,
                "a kustomization is a mapping".to_owned(),
            );
        }
        for (key, value) in kustomization.entries() {
            match key.scalar_text().as_str() {
                "apiVersion" | "kind" => {}
                "namespace" => {
                    let at = Location::at(&tree.files[file].path, value);
                    namespace = Some((value.scalar_text(), at));
                }
                "resources" => {
                    for entry in value.items() {
                        let target = entry.scalar_text();
                        objects.extend(self.resource(tree, dir, file, entry, &target, stack)?);
                    }
                }
                "labels" => {
                    for set in value.items() {
                        let mut templates = false;
                        let mut pairs = None;
                        for (k, v) in set.entries() {
                            match k.scalar_text().as_str() {
                                "pairs" => pairs = Some(v.clone()),
                                "includeTemplates" => {
                                    templates = matches!(v.value, Value::Bool(true));
                                }
                                "includeSelectors" if matches!(v.value, Value::Bool(false)) => {}
                                other => tree.report(
                                    &rules::UNSUPPORTED,
                                    file,
                                    k,
                                    format!("labels.{other} is not supported by check"),
                                ),
                            }
                        }
                        if let Some(pairs) = pairs {
                            labels.push((pairs, templates));
                        }
                    }
                }
                other => tree.report(
                    &rules::UNSUPPORTED,
                    file,
                    key,
                    format!("kustomization field `{other}` is not supported by check"),
                ),
            }
        }
        for rendered in &mut objects {
            let node = &mut rendered.node;
            let kind = node.get("kind").map(Node::scalar_text).unwrap_or_default();
            for (pairs, templates) in &labels {
                add_labels(node, &["metadata", "labels"], pairs);
                // kustomize's template label paths: only workloads have pod templates.
                let template: &[&str] = match kind.as_str() {
                    "Deployment"
                    | "ReplicaSet"
                    | "DaemonSet"
                    | "StatefulSet"
                    | "Job"
                    | "ReplicationController" => &["spec", "template", "metadata", "labels"],
                    "CronJob" => {
                        // kustomize labels the Job template and its pod template.
                        if *templates {
                            add_labels(node, &["spec", "jobTemplate", "metadata", "labels"], pairs);
                        }
                        &[
                            "spec",
                            "jobTemplate",
                            "spec",
                            "template",
                            "metadata",
                            "labels",
                        ]
                    }
                    _ => &[],
                };
                if *templates && !template.is_empty() {
                    add_labels(node, template, pairs);
                }
            }
            if let Some((namespace, at)) = &namespace
                && !CLUSTER_SCOPED.contains(&kind.as_str())
            {
                set_namespace(node, namespace);
                rendered.namespace_from = Some(at.clone());
            }
        }
        stack.pop();
        Ok(objects)
    }

    fn resource(
        &mut self,
        tree: &mut Tree,
        dir: &str,
        file: usize,
        entry: &Node,
        target: &str,
        stack: &mut Vec<String>,
    ) -> Result<Vec<Rendered>, LoadError> {
        if target.contains("://") || target.starts_with("github.com/") {
            tree.report(
                &rules::UNSUPPORTED,
                file,
                entry,
                format!("remote resource {target} is not supported by check"),
            );
            return Ok(Vec::new());
        }
        let Some(relative) = normalize(&join(dir, target)) else {
            tree.report(
                &rules::MISSING_ENTRY,
                file,
                entry,
                format!("{target} leaves the repository"),
            );
            return Ok(Vec::new());
        };
        let path = tree.root.join(&relative);
        let inside = match (path.canonicalize(), tree.root.canonicalize()) {
            (Ok(real), Ok(root)) => real.starts_with(root),
            _ => true,
        };
        if !inside {
            tree.report(
                &rules::MISSING_ENTRY,
                file,
                entry,
                format!("{target} leads out of the repository through a symlink"),
            );
            return Ok(Vec::new());
        }
        if path.is_dir() {
            return self.render(tree, &relative, stack);
        }
        if !path.is_file() {
            tree.report(
                &rules::MISSING_ENTRY,
                file,
                entry,
                format!("{target} does not exist (looked for {relative})"),
            );
            return Ok(Vec::new());
        }
        self.included.insert(relative.clone());
        let manifest = tree.add_file(&relative)?;
        let mut objects = Vec::new();
        for document in self.take_documents(tree, manifest) {
            if document.value == Value::Null {
                continue;
            }
            let named = document
                .path(&["metadata", "name"])
                .is_some_and(|n| !n.scalar_text().is_empty());
            let typed = ["apiVersion", "kind"]
                .iter()
                .all(|k| document.get(k).is_some_and(|v| v.str().is_some()));
            if !typed || !named {
                tree.report(
                    &rules::NOT_AN_OBJECT,
                    manifest,
                    &document,
                    "the document needs a string apiVersion, kind and metadata.name".to_owned(),
                );
                continue;
            }
            objects.push(Rendered {
                file: manifest,
                node: document,
                namespace_from: None,
            });
        }
        Ok(objects)
    }
}

fn add_labels(node: &mut Node, path: &[&str], pairs: &Node) {
    let Some(target) = ensure_map(node, path) else {
        return;
    };
    for (key, value) in pairs.entries() {
        if let Value::Map(entries) = &mut target.value {
            entries.retain(|(k, _)| k.scalar_text() != key.scalar_text());
            let text = Node {
                value: Value::Str(value.scalar_text()),
                ..value.clone()
            };
            entries.push((key.clone(), text));
        }
    }
}

fn set_namespace(node: &mut Node, namespace: &str) {
    let Some(metadata) = ensure_map(node, &["metadata"]) else {
        return;
    };
    if let Value::Map(entries) = &mut metadata.value {
        let at = (metadata.line, metadata.col);
        match entries
            .iter_mut()
            .find(|(k, _)| k.str() == Some("namespace"))
        {
            Some((_, value)) => value.value = Value::Str(namespace.to_owned()),
            None => entries.push((
                Node {
                    value: Value::Str("namespace".to_owned()),
                    line: at.0,
                    col: at.1,
                },
                Node {
                    value: Value::Str(namespace.to_owned()),
                    line: at.0,
                    col: at.1,
                },
            )),
        }
    }
}

/// The mapping at `path`, created (empty) where missing; None when something on the way is not
/// a mapping (the schema check reports that).
fn ensure_map<'a>(node: &'a mut Node, path: &[&str]) -> Option<&'a mut Node> {
    let Some((first, rest)) = path.split_first() else {
        return matches!(node.value, Value::Map(_)).then_some(node);
    };
    let (line, col) = (node.line, node.col);
    let Value::Map(entries) = &mut node.value else {
        return None;
    };
    let index = match entries.iter().position(|(k, _)| k.str() == Some(first)) {
        Some(index) => index,
        None => {
            let empty = Node {
                value: Value::Map(Vec::new()),
                line,
                col,
            };
            let key = Node {
                value: Value::Str((*first).to_owned()),
                line,
                col,
            };
            entries.push((key, empty));
            entries.len() - 1
        }
    };
    if entries[index].1.value == Value::Null {
        entries[index].1.value = Value::Map(Vec::new());
    }
    ensure_map(&mut entries[index].1, rest)
}
