//! flux/*: Flux Kustomizations wait for the infrastructure without cycles, decrypt what they apply, follow this repository every minute, and report their errors somewhere.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::tree::{self, Object, Tree};
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn flux_depends_on(&mut self) {
        let tree = self.tree;
        let names = self.flux_kustomizations();
        for flux in &tree.flux {
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
                        format!(
                            "Kustomization {this} depends on {target}, which no Flux \
                             Kustomization is"
                        ),
                    );
                }
            }
            if depends_in_a_cycle(&names, &this) {
                self.at(
                    &rules::DEPENDS_ON,
                    object,
                    spec.key_node("dependsOn").unwrap_or(spec),
                    format!(
                        "Kustomization {this} depends on itself through dependsOn; Flux waits \
                         forever"
                    ),
                );
            } else if !is_root
                && this != INFRASTRUCTURE
                && !reaches_infrastructure(&names, &this, &mut BTreeSet::new())
            {
                self.at(
                    &rules::DEPENDS_ON,
                    object,
                    spec.key_node("dependsOn").unwrap_or(spec),
                    format!("Kustomization {this} does not wait for {INFRASTRUCTURE}"),
                );
            }
        }
    }

    pub(super) fn flux_decryption(&mut self) {
        let tree = self.tree;
        for (index, flux) in tree.flux.iter().enumerate() {
            let object = &tree.objects[flux.object];
            let is_root = tree::normalize(&flux.path).as_deref() == Some(tree.cluster.as_str());
            let spec = object.node.get("spec").unwrap_or(&object.node);
            // The root folder's objects were rendered before any Flux path was followed. A
            // document encrypted whole is no object the rules see, but Flux must decrypt it all
            // the same: this asks about files, so every rendered object counts.
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
                    format!(
                        "Kustomization {} applies SOPS files but does not decrypt them",
                        name(&object.node)
                    ),
                );
            }
        }
    }

    pub(super) fn flux_interval(&mut self) {
        let tree = self.tree;
        for object in self
            .objects()
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
    pub(super) fn flux_alerts(&mut self) {
        let facts = &self.tree.facts.backup;
        // Per delivering Alert: its event sources as (kind, namespace, name).
        let mut routes: Vec<Vec<(String, String, String)>> = Vec::new();
        for alert in self.objects().filter(|o| kind(&o.node) == "Alert") {
            let ns = namespace(&alert.node);
            let spec = alert.node.get("spec").unwrap_or(&alert.node);
            let provider_name = spec
                .path(&["providerRef", "name"])
                .map(Node::scalar_text)
                .unwrap_or_default();
            let provider = self.find("Provider", &ns, &provider_name);
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
        for provider in self.matrix_providers() {
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
        }
    }
}

impl<'a> Checker<'a> {
    /// The Flux Kustomizations by name.
    fn flux_kustomizations(&self) -> BTreeMap<String, &'a Object> {
        let tree: &'a Tree = self.tree;
        tree.flux
            .iter()
            .map(|f| &tree.objects[f.object])
            .map(|o| (name(&o.node), o))
            .collect()
    }

    pub(super) fn matrix_providers(&self) -> impl Iterator<Item = &'a Object> + use<'a> {
        self.objects().filter(|o| {
            kind(&o.node) == "Provider"
                && o.node
                    .path(&["spec", "type"])
                    .map(Node::scalar_text)
                    .as_deref()
                    == Some("matrix")
        })
    }
}

fn reaches_infrastructure(
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
        .any(|d| d == INFRASTRUCTURE || reaches_infrastructure(names, &d, seen))
}

/// Whether following `dependsOn` from `from` comes back to it.
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
