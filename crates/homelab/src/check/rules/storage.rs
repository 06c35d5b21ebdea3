//! storage/*: app state lives under /srv, and every piece of it is backed up or says why not.

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::tree::{self};
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn storage(&mut self) {
        let tree = self.tree;
        for source in &tree.facts.backup.source {
            let path = source.path.get_ref();
            if path.starts_with("/srv/")
                && !tree.facts.storage.iter().any(|s| s.path.get_ref() == path)
            {
                self.emit(
                    &rules::UNLISTED,
                    Place::Facts(source.path.span().start),
                    format!("backup source {path} has no [[storage]] entry (owner, mode)"),
                );
            }
        }
        let sources: Vec<&str> = tree
            .facts
            .backup
            .source
            .iter()
            .map(|s| s.path.get_ref().as_str())
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
                // The host makes each /srv folder with its owner and mode from [[storage]]: a
                // volume without an entry would come up root-owned, or not at all.
                if !tree.facts.storage.iter().any(|s| s.path.get_ref() == &path) {
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
}
