//! Loads the repository the way Flux and kustomize would see it, natively: homelab.toml's facts,
//! .sops.yaml, the root Flux folder and every folder a Flux Kustomization points at, rendered
//! with the kustomize features the tree uses (resources, namespace, labels). Anything else in a
//! kustomization is a finding, never silently ignored.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::findings::{self as rules, Finding, Location, Rule};
use super::yaml::{self, Node, Value};

mod render;
use render::{FLUX_TRANSFORMS, Loader};

/// Why the check could not run at all (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: not a homelab repository (no homelab.toml)")]
    NotARepository(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Facts {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}: the cluster folder for this host does not exist")]
    NoCluster(String),
}

#[derive(Debug)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

#[derive(Debug)]
pub struct Object {
    pub file: usize,
    /// The document as rendered (namespace and labels applied).
    pub node: Node,
    /// The Flux Kustomization whose path rendered it (index into `Tree::flux`); None for the root.
    pub flux: Option<usize>,
    /// Where its namespace was set when a kustomization's `namespace:` set it (a mistake there
    /// is reported there, not in each manifest).
    pub namespace_from: Option<Location>,
}

/// A document a kustomization rendered.
struct Rendered {
    file: usize,
    node: Node,
    namespace_from: Option<Location>,
}

#[derive(Debug)]
pub struct FluxPath {
    /// The Flux Kustomization object.
    pub object: usize,
    /// Its spec.path, as written.
    pub path: String,
    pub rendered: bool,
}

#[derive(Debug)]
pub struct SopsRule {
    pub path_regex: Option<regex::Regex>,
    pub encrypted_regex: Option<String>,
    /// The age recipients the rule encrypts to.
    pub recipients: Vec<String>,
    /// Where the rule is written in .sops.yaml.
    pub line: usize,
}

/// homelab.toml, as far as the check needs it; the rest belongs to other readers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Facts {
    pub hostname: String,
    pub domain: String,
    /// Flux's own age identity: what the cluster's secrets are encrypted to, and the host's
    /// never are.
    pub flux_age_recipient: Option<toml::Spanned<String>>,
    /// This repository's URL: the GitRepository that has it is the one check follows.
    pub source_repository: Option<String>,
    #[serde(default)]
    pub firewall: Firewall,
    #[serde(default)]
    pub tunnel: Tunnel,
    #[serde(default)]
    pub storage: Vec<Storage>,
    #[serde(default)]
    pub backup: Backup,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Firewall {
    #[serde(default)]
    pub tcp_ports: Option<toml::Spanned<Vec<u16>>>,
    #[serde(default)]
    pub udp_ports: Option<toml::Spanned<Vec<u16>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Tunnel {
    #[serde(default)]
    pub route: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Route {
    pub name: toml::Spanned<String>,
    pub kind: String,
    pub app: String,
    pub cluster_ip: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Storage {
    pub path: toml::Spanned<String>,
    pub no_backup: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Backup {
    #[serde(default)]
    pub source: Vec<BackupSource>,
    /// The owner's Matrix room: Flux's alert Provider must post there too.
    pub matrix_homeserver: Option<String>,
    pub matrix_room: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct BackupSource {
    pub path: toml::Spanned<String>,
    /// An app declared by name; nixos/lib/backup-config.nix expands it into kubectl commands.
    #[serde(default)]
    pub app: Option<toml::Spanned<App>>,
    #[serde(default)]
    pub quiesce: Option<Commands>,
    #[serde(default)]
    pub restore: Option<Commands>,
    #[serde(default)]
    pub dump: Option<Dump>,
}

/// `app = { namespace, deployment, stop }` of a backup source: a one-replica Deployment whose
/// pods carry app.kubernetes.io/name=<deployment>.
#[derive(Debug, Deserialize)]
pub struct App {
    pub namespace: String,
    pub deployment: String,
    pub stop: String,
}

pub type Argv = toml::Spanned<Vec<String>>;

/// The kubectl commands of a source's quiesce or restore steps.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Commands {
    #[serde(default)]
    pub stop: Vec<Argv>,
    #[serde(default)]
    pub start: Vec<Argv>,
    #[serde(default)]
    pub after_load: Vec<Argv>,
    #[serde(default)]
    pub load_dump: Option<Argv>,
}

#[derive(Debug, Deserialize)]
pub struct Dump {
    pub command: Argv,
}

impl BackupSource {
    pub fn commands(&self) -> impl Iterator<Item = &Argv> {
        let steps = [&self.quiesce, &self.restore].into_iter().flatten();
        steps
            .flat_map(|c| {
                c.stop
                    .iter()
                    .chain(&c.start)
                    .chain(&c.after_load)
                    .chain(&c.load_dump)
            })
            .chain(self.dump.as_ref().map(|d| &d.command))
    }
}

pub const FACTS_FILE: &str = "homelab.toml";
pub const SOPS_CONFIG: &str = ".sops.yaml";
pub const HOST_SECRETS: &str = "nixos/secrets";
pub const FLUX_MODULE: &str = "nixos/modules/flux.nix";

pub struct Tree {
    pub root: PathBuf,
    pub files: Vec<SourceFile>,
    pub objects: Vec<Object>,
    pub flux: Vec<FluxPath>,
    pub facts: Facts,
    pub sops_rules: Vec<SopsRule>,
    /// The cluster folder, relative: flux/clusters/<hostname>.
    pub cluster: String,
    /// Every document of every *.sops.yaml file under the cluster folder, rendered or not.
    pub sops_documents: Vec<(usize, Node)>,
    /// The host's SOPS files (nixos/secrets/*.sops.yaml), whole-document encrypted: only their
    /// `sops` metadata (recipients) is read.
    pub host_sops_documents: Vec<(usize, Node)>,
    /// nixos/modules/flux.nix, whose bootstrap must hand Flux its own key.
    pub flux_module: Option<usize>,
    pub findings: Vec<Finding>,
}

impl Tree {
    pub fn load(root: &Path) -> Result<Tree, LoadError> {
        let facts_path = root.join(FACTS_FILE);
        if !facts_path.is_file() {
            return Err(LoadError::NotARepository(root.to_owned()));
        }
        let facts_bytes = std::fs::read(&facts_path).map_err(|source| LoadError::Read {
            path: facts_path.clone(),
            source,
        })?;
        let facts_text = String::from_utf8(facts_bytes).map_err(|err| {
            let at = err.utf8_error().valid_up_to();
            LoadError::Facts {
                file: FACTS_FILE.to_owned(),
                line: err.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1,
                message: "not UTF-8 (TOML files must be)".to_owned(),
            }
        })?;
        // The strict loader's errors name the dotted key (`tunnel.route[2].kind`) and its line.
        let facts: Facts =
            crate::strict_toml::parse_toml(&facts_path, facts_text.clone(), |_| Ok(())).map_err(
                |err| LoadError::Facts {
                    file: FACTS_FILE.to_owned(),
                    line: err.line.unwrap_or(0),
                    message: format!("{}: {}", err.key, err.message),
                },
            )?;
        let cluster = format!("flux/clusters/{}", facts.hostname);
        if !root.join(&cluster).is_dir() {
            return Err(LoadError::NoCluster(cluster));
        }
        let mut tree = Tree {
            root: root.to_owned(),
            files: vec![SourceFile {
                path: FACTS_FILE.to_owned(),
                text: facts_text,
            }],
            objects: Vec::new(),
            flux: Vec::new(),
            facts,
            sops_rules: Vec::new(),
            cluster: cluster.clone(),
            sops_documents: Vec::new(),
            host_sops_documents: Vec::new(),
            flux_module: None,
            findings: Vec::new(),
        };
        let mut loader = Loader {
            parsed: HashMap::new(),
            included: BTreeSet::new(),
        };
        tree.load_sops_config(&mut loader)?;
        let root_objects = loader.render(&mut tree, &cluster, &mut Vec::new())?;
        tree.add_objects(root_objects, None);
        // Follow every Flux Kustomization, including ones a Flux path itself applies.
        let mut next = 0;
        while next < tree.objects.len() {
            let index = next;
            next += 1;
            if !is_flux_kustomization(&tree.objects[index].node) {
                continue;
            }
            let Some(path_node) = tree.objects[index].node.path(&["spec", "path"]).cloned() else {
                continue;
            };
            let source = tree.objects[index]
                .node
                .path(&["spec", "sourceRef"])
                .cloned();
            let source_name = source
                .as_ref()
                .and_then(|s| s.get("name"))
                .map(Node::scalar_text)
                .unwrap_or_default();
            let source_kind = source
                .as_ref()
                .and_then(|s| s.get("kind"))
                .map(Node::scalar_text)
                .unwrap_or_default();
            if source_kind != "GitRepository" || !tree.repositories().contains(&source_name) {
                let file = tree.objects[index].file;
                tree.report(
                    &rules::UNSUPPORTED,
                    file,
                    source.as_ref().unwrap_or(&path_node),
                    format!(
                        "sourceRef {source_kind}/{source_name} is not this repository's GitRepository; check follows only this repository"
                    ),
                );
                continue;
            }
            let path = path_node.scalar_text();
            let relative = normalize(&path);
            // Flux-side transformations change what is applied; the renderer does not imitate them.
            let spec = tree.objects[index].node.get("spec").cloned();
            for (key, _) in spec.as_ref().map(Node::entries).unwrap_or_default() {
                let field = key.scalar_text();
                if FLUX_TRANSFORMS.contains(&field.as_str()) {
                    let file = tree.objects[index].file;
                    tree.report(
                        &rules::UNSUPPORTED,
                        file,
                        key,
                        format!("Flux Kustomization field spec.{field} is not supported by check"),
                    );
                }
            }
            let flux_index = tree.flux.len();
            let exists = relative
                .as_deref()
                .is_some_and(|r| tree.root.join(r).is_dir());
            let already = relative.as_deref() == Some(cluster.as_str())
                || tree
                    .flux
                    .iter()
                    .any(|f| normalize(&f.path) == relative && f.rendered);
            tree.flux.push(FluxPath {
                object: index,
                path: path.clone(),
                rendered: exists && !already,
            });
            if !exists {
                let file = tree.objects[index].file;
                tree.report(
                    &rules::PATH_MISSING,
                    file,
                    &path_node,
                    format!("spec.path {path} is not a folder of the repository"),
                );
                continue;
            }
            if already {
                continue;
            }
            let Some(relative) = relative else { continue };
            let objects = loader.render(&mut tree, &relative, &mut Vec::new())?;
            tree.add_objects(objects, Some(flux_index));
        }
        tree.find_orphans_and_sops_files(&mut loader)?;
        tree.load_host_identity(&mut loader)?;
        Ok(tree)
    }

    fn add_objects(&mut self, objects: Vec<Rendered>, flux: Option<usize>) {
        // kustomize refuses a build with the same object twice; Flux then applies nothing.
        // Only where the first one was: a tree of many small objects keeps this map small.
        let mut seen: HashMap<(String, String, String), (usize, u32)> = HashMap::new();
        for rendered in &objects {
            let node = &rendered.node;
            let text = |path: &[&str]| node.path(path).map(Node::scalar_text).unwrap_or_default();
            let id = (
                format!("{}/{}", group(&text(&["apiVersion"])), text(&["kind"])),
                text(&["metadata", "namespace"]),
                text(&["metadata", "name"]),
            );
            if let Some(&(first_file, first_line)) = seen.get(&id) {
                let message = format!(
                    "{} {}/{} is also defined at {}:{first_line}; kustomize refuses the build",
                    id.0, id.1, id.2, self.files[first_file].path
                );
                let at = Location::at(&self.files[rendered.file].path, node);
                self.findings.push(Finding {
                    rule: &rules::DUPLICATE_OBJECT,
                    at,
                    object: Some(format!("{} {}/{}", id.0, id.1, id.2)),
                    message,
                });
            } else {
                seen.insert(id, (rendered.file, node.line));
            }
        }
        for Rendered {
            file,
            node,
            namespace_from,
        } in objects
        {
            self.objects.push(Object {
                file,
                node,
                flux,
                namespace_from,
            });
        }
    }

    /// Names of the GitRepositories that are this repository (by URL; `flux-system` when
    /// homelab.toml does not say).
    pub fn repositories(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| o.node.get("kind").and_then(Node::str) == Some("GitRepository"))
            .filter(|o| self.is_this_repository(&o.node))
            .filter_map(|o| o.node.path(&["metadata", "name"]).map(Node::scalar_text))
            .collect()
    }

    pub fn is_this_repository(&self, git_repository: &Node) -> bool {
        let url = git_repository.path(&["spec", "url"]).map(Node::scalar_text);
        match &self.facts.source_repository {
            Some(ours) => {
                url.is_some_and(|u| u.trim_end_matches(".git") == ours.trim_end_matches(".git"))
            }
            None => {
                git_repository
                    .path(&["metadata", "name"])
                    .map(Node::scalar_text)
                    .as_deref()
                    == Some("flux-system")
            }
        }
    }

    pub fn report(&mut self, rule: &'static Rule, file: usize, node: &Node, message: String) {
        let at = Location::at(&self.files[file].path, node);
        self.findings.push(Finding {
            rule,
            at,
            object: None,
            message,
        });
    }

    fn report_at(&mut self, rule: &'static Rule, file: usize, line: usize, message: String) {
        let at = Location::new(&self.files[file].path, line, 0);
        self.findings.push(Finding {
            rule,
            at,
            object: None,
            message,
        });
    }

    fn add_file(&mut self, relative: &str) -> Result<usize, LoadError> {
        if let Some(index) = self.files.iter().position(|f| f.path == relative) {
            return Ok(index);
        }
        let path = self.root.join(relative);
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Read { path, source })?;
        let (text, invalid) = match String::from_utf8(bytes) {
            Ok(text) => (text, None),
            Err(err) => {
                let at = err.utf8_error().valid_up_to();
                let bytes = err.into_bytes();
                let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
                let message = format!(
                    "byte 0x{:02x} on line {line} is not UTF-8; kustomize, and so Flux, refuses \
                     the whole file",
                    bytes[at]
                );
                (
                    String::from_utf8_lossy(&bytes).into_owned(),
                    Some((line, message)),
                )
            }
        };
        self.files.push(SourceFile {
            path: relative.to_owned(),
            text,
        });
        let index = self.files.len() - 1;
        if let Some((line, message)) = invalid {
            self.report_at(&rules::ENCODING, index, line, message);
        }
        Ok(index)
    }

    fn load_sops_config(&mut self, loader: &mut Loader) -> Result<(), LoadError> {
        if !self.root.join(SOPS_CONFIG).is_file() {
            return Ok(());
        }
        let file = self.add_file(SOPS_CONFIG)?;
        let documents = loader.documents(self, file);
        let Some(config) = documents.first() else {
            return Ok(());
        };
        for rule in config
            .get("creation_rules")
            .map(Node::items)
            .unwrap_or_default()
        {
            let path_regex = match rule.get("path_regex").map(Node::scalar_text) {
                None => None,
                Some(text) => match regex::Regex::new(&text) {
                    Ok(regex) => Some(regex),
                    Err(err) => {
                        self.report(
                            &rules::CREATION_RULE,
                            file,
                            rule,
                            format!("path_regex {text:?} is not a regular expression: {err}"),
                        );
                        continue;
                    }
                },
            };
            self.sops_rules.push(SopsRule {
                path_regex,
                encrypted_regex: rule.get("encrypted_regex").map(Node::scalar_text),
                recipients: rule
                    .get("age")
                    .map(Node::scalar_text)
                    .unwrap_or_default()
                    .split(',')
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
                    .collect(),
                line: rule.line as usize,
            });
        }
        Ok(())
    }

    /// What decides which key opens what on the host: its SOPS files' recipients and the
    /// Flux bootstrap's key file. Absent files are fine (a tree checked without its host).
    fn load_host_identity(&mut self, loader: &mut Loader) -> Result<(), LoadError> {
        let secrets = self.root.join(HOST_SECRETS);
        if let Ok(entries) = std::fs::read_dir(&secrets) {
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.ends_with(".sops.yaml"))
                .collect();
            names.sort();
            for name in names {
                let file = self.add_file(&format!("{HOST_SECRETS}/{name}"))?;
                for node in loader.documents(self, file) {
                    self.host_sops_documents.push((file, node));
                }
            }
        }
        if self.root.join(FLUX_MODULE).is_file() {
            self.flux_module = Some(self.add_file(FLUX_MODULE)?);
        }
        Ok(())
    }

    /// Every YAML file under the cluster folder must be rendered by some kustomization (or be
    /// one); every *.sops.yaml file is read whether rendered or not.
    fn find_orphans_and_sops_files(&mut self, loader: &mut Loader) -> Result<(), LoadError> {
        let mut files = Vec::new();
        let mut odd = Vec::new();
        walk(
            &self.root,
            &self.root.join(&self.cluster),
            &mut files,
            &mut odd,
        )?;
        for (path, rule, message) in odd {
            let at = Location::new(&path, 0, 0);
            self.findings.push(Finding {
                rule,
                at,
                object: None,
                message,
            });
        }
        // SOPS files a kustomization pulls in from outside the cluster folder count too.
        let outside: Vec<String> = loader
            .included
            .iter()
            .filter(|f| f.ends_with(".sops.yaml") && !files.contains(f))
            .cloned()
            .collect();
        for relative in outside {
            let file = self.add_file(&relative)?;
            for node in loader.documents(self, file) {
                self.sops_documents.push((file, node));
            }
        }
        for relative in files {
            let is_yaml = relative.ends_with(".yaml") || relative.ends_with(".yml");
            if !is_yaml {
                continue;
            }
            if relative.ends_with(".sops.yaml") {
                let file = self.add_file(&relative)?;
                for node in loader.documents(self, file) {
                    self.sops_documents.push((file, node));
                }
            }
            if !loader.included.contains(&relative) {
                let file = self.add_file(&relative)?;
                self.report_at(
                    &rules::ORPHAN_MANIFEST,
                    file,
                    1,
                    format!("{relative} is not listed in any kustomization Flux renders"),
                );
            }
        }
        Ok(())
    }
}

/// The API group of an apiVersion ("" for the core group).
fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

pub fn is_flux_kustomization(node: &Node) -> bool {
    node.get("kind").and_then(Node::str) == Some("Kustomization")
        && node
            .get("apiVersion")
            .and_then(Node::str)
            .is_some_and(|v| v.starts_with("kustomize.toolkit.fluxcd.io/"))
}

/// Every file under `dir` (relative to `root`), in order. Not followed, but reported in `odd`:
/// names that are not UTF-8 (Flux's checkout and kustomize cannot be trusted with them) and
/// symlinks that lead out of the repository (Flux's checkout would not have their target).
fn walk(
    root: &Path,
    dir: &Path,
    found: &mut Vec<String>,
    odd: &mut Vec<(String, &'static Rule, String)>,
) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let shown = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .escape_debug()
            .to_string()
    };
    for path in paths {
        // A symlink is not followed: a loop or a link out of the tree must not hang the check.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if path.file_name().and_then(|n| n.to_str()).is_none() {
            odd.push((
                shown(&path),
                &rules::ENCODING,
                "this name is not UTF-8; rename it (the check skipped what it holds)".to_owned(),
            ));
            continue;
        }
        if meta.is_symlink() {
            let inside = match (path.canonicalize(), root.canonicalize()) {
                (Ok(real), Ok(root)) => real.starts_with(root),
                _ => false,
            };
            if !inside {
                odd.push((
                    shown(&path),
                    &rules::MISSING_ENTRY,
                    format!(
                        "{} leads out of the repository through a symlink",
                        shown(&path)
                    ),
                ));
            }
        } else if meta.is_dir() {
            walk(root, &path, found, odd)?;
        } else if meta.is_file()
            && let Ok(relative) = path.strip_prefix(root)
        {
            found.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// A repository-relative path without `.` and `..`; None when it leaves the repository.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

pub fn line_of_offset(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn paths_stay_inside() {
        assert_eq!(normalize("./dir/a/../b").as_deref(), Some("dir/b"));
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("a/./b/").as_deref(), Some("a/b"));
    }
}
