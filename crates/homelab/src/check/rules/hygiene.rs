//! hygiene/*: exact image tags, resources, probes, and one pod at a time on a claim.

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::tree::Object;
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn hygiene_image_tag(&mut self) {
        for (object, container, what, _) in self.containers() {
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
        }
    }

    pub(super) fn hygiene_resources(&mut self) {
        for (object, container, what, _) in self.containers() {
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
        }
    }

    pub(super) fn hygiene_probes(&mut self) {
        for (object, container, what, init) in self.containers() {
            let long_running = matches!(
                kind(&object.node),
                "Deployment" | "StatefulSet" | "DaemonSet"
            );
            if !long_running || init {
                continue;
            }
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

    pub(super) fn hygiene_recreate(&mut self) {
        for object in self.objects().filter(|o| kind(&o.node) == "Deployment") {
            let has_claim = pod_spec(&object.node)
                .and_then(|spec| spec.get("volumes"))
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

impl<'a> Checker<'a> {
    /// Every container of every pod template: (object, container, "Kind/name: container c",
    /// is an init container).
    fn containers(&self) -> Vec<(&'a Object, &'a Node, String, bool)> {
        self.objects()
            .filter_map(|object| pod_spec(&object.node).map(|spec| (object, spec)))
            .flat_map(|(object, spec)| {
                containers(spec).map(move |(container, init)| {
                    let cname = container
                        .get("name")
                        .map(Node::scalar_text)
                        .unwrap_or_default();
                    let what = format!("{}: container {cname}", label(&object.node));
                    (object, container, what, init)
                })
            })
            .collect()
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn images() {
        use super::image_pinned;
        assert!(image_pinned("ghcr.io/a/b:v1.2.3"));
        assert!(image_pinned("registry:5000/a/b@sha256:abc"));
        assert!(!image_pinned("registry:5000/a/b"));
        assert!(!image_pinned("a/b:latest"));
        assert!(!image_pinned("a/b:"));
    }
}
