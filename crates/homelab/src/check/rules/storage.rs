//! storage/*: app state lives under /srv, and every piece of it is backed up or says why not.

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::tree::{self, Object};
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn storage_host_path(&mut self) {
        for (object, node, path) in self.host_paths() {
            if !under(&path, "/srv") || path == "/srv" {
                self.at(
                    &rules::HOST_PATH,
                    object,
                    node,
                    format!("{}: hostPath {path} is not under /srv", label(&object.node)),
                );
            }
        }
    }

    /// The host makes each /srv folder with its owner and mode from [[storage]]: a volume or a
    /// backup source without an entry would come up root-owned, or not at all.
    pub(super) fn storage_unlisted(&mut self) {
        let tree = self.tree;
        let listed = |path: &str| tree.facts.storage.iter().any(|s| s.path.get_ref() == path);
        for source in &tree.facts.backup.source {
            let path = source.path.get_ref();
            if path.starts_with("/srv/") && !listed(path) {
                self.emit(
                    &rules::UNLISTED,
                    Place::Facts(source.path.span().start),
                    format!("backup source {path} has no [[storage]] entry (owner, mode)"),
                );
            }
        }
        for (object, node, path) in self.host_paths() {
            if in_srv(&path) && !listed(&path) {
                self.at(
                    &rules::UNLISTED,
                    object,
                    node,
                    format!(
                        "{}: {path} has no [[storage]] entry in homelab.toml (owner, mode)",
                        label(&object.node)
                    ),
                );
            }
        }
    }

    pub(super) fn storage_not_backed_up(&mut self) {
        let facts = &self.tree.facts;
        for (object, node, path) in self.host_paths() {
            let covered = facts
                .backup
                .source
                .iter()
                .any(|s| under(&path, s.path.get_ref()));
            let excluded = facts.storage.iter().any(|s| {
                s.no_backup.as_deref().is_some_and(|r| !r.trim().is_empty())
                    && under(&path, s.path.get_ref())
            });
            if in_srv(&path) && !covered && !excluded {
                self.at(
                    &rules::NOT_BACKED_UP,
                    object,
                    node,
                    format!(
                        "{}: {path} is in no [[backup.source]] of homelab.toml and has no \
                         `no-backup` reason",
                        label(&object.node)
                    ),
                );
            }
        }
    }
}

impl<'a> Checker<'a> {
    /// Every hostPath of a PersistentVolume or a pod's volume, with the path the kubelet
    /// mounts: `/srv/app/../../etc` is /etc.
    fn host_paths(&self) -> Vec<(&'a Object, &'a Node, String)> {
        let mut found = Vec::new();
        for object in self.objects() {
            let mut nodes: Vec<&Node> = Vec::new();
            if kind(&object.node) == "PersistentVolume"
                && let Some(path) = object.node.path(&["spec", "hostPath", "path"])
            {
                nodes.push(path);
            }
            if let Some(spec) = pod_spec(&object.node) {
                for volume in spec.get("volumes").map(Node::items).unwrap_or_default() {
                    if let Some(path) = volume.path(&["hostPath", "path"]) {
                        nodes.push(path);
                    }
                }
            }
            for node in nodes {
                let written = node.scalar_text();
                let path = match tree::normalize(&written) {
                    Some(p) if written.starts_with('/') => format!("/{p}"),
                    _ => written,
                };
                found.push((object, node, path));
            }
        }
        found
    }
}

fn under(path: &str, root: &str) -> bool {
    path == root || path.starts_with(&format!("{}/", root.trim_end_matches('/')))
}

/// Below /srv, where app state belongs (anything else is storage/host-path).
fn in_srv(path: &str) -> bool {
    under(path, "/srv") && path != "/srv"
}
