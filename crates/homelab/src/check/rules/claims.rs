//! refs/claim: every claim binds to exactly one PersistentVolume that fits it, both sides agreeing.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::tree::Object;
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn refs_claim(&mut self) {
        let mut bound: BTreeMap<String, String> = BTreeMap::new();
        let volumes: Vec<&Object> = self
            .objects()
            .filter(|o| kind(&o.node) == "PersistentVolume")
            .collect();
        for claim in self
            .objects()
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
}
