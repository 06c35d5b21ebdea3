//! The rules that run on a loaded tree. Each finding names its rule (findings.rs) and the file and
//! line it is about; a finding about an object can be silenced only by that object's
//! `homelab.check/ignore` annotation, one `<rule-id>: <reason>` per line.

mod claims;
mod exposure;
mod flux;
mod hygiene;
mod refs;
mod schema;
mod secrets;
mod silence;
mod storage;

use super::findings::{Finding, Location, Rule};
use super::object::{kind, name, namespace, whole_encrypted};
use super::schema::Schemas;
use super::tree::{self, Object, Tree};
use super::yaml::Node;
use silence::silenced;

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

/// Where a finding points.
enum Place<'p> {
    /// A node of a rendered object: its `homelab.check/ignore` annotation may silence the rule.
    Object(&'p Object, &'p Node),
    /// A node of a file no rendered object stands for (a SOPS file's metadata).
    Node(&'p str, &'p Node),
    /// A line of a file that holds no objects (.sops.yaml, a Nix module).
    Line(Location),
    /// A byte offset in homelab.toml.
    Facts(usize),
}

/// What every rule works with: the loaded tree, and the findings so far.
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
impl<'a> Checker<'a> {
    fn file(&self, object: &Object) -> &'a str {
        &self.tree.files[object.file].path
    }

    /// The one way a rule reports: every finding goes through here, and a finding at an object
    /// is dropped when the object's `homelab.check/ignore` annotation silences its rule.
    fn emit(&mut self, rule: &'static Rule, place: Place<'_>, message: String) {
        let at = match place {
            Place::Object(object, node) => {
                if silenced(&object.node, rule.id) {
                    return;
                }
                Location::at(self.file(object), node)
            }
            Place::Node(file, node) => Location::at(file, node),
            Place::Line(at) => at,
            Place::Facts(offset) => Location::new(
                tree::FACTS_FILE,
                tree::line_of_offset(&self.tree.files[0].text, offset),
                0,
            ),
        };
        self.findings.push(Finding { rule, at, message });
    }

    /// At `node` of a rendered object (the usual case).
    fn at(&mut self, rule: &'static Rule, object: &Object, node: &Node, message: String) {
        self.emit(rule, Place::Object(object, node), message);
    }

    fn objects(&self) -> impl Iterator<Item = &'a Object> + use<'a> {
        let tree: &'a Tree = self.tree;
        tree.objects.iter().filter(|o| !whole_encrypted(&o.node))
    }

    fn find(&self, kind_: &str, ns: &str, name_: &str) -> Option<&'a Object> {
        self.objects()
            .find(|o| kind(&o.node) == kind_ && namespace(&o.node) == ns && name(&o.node) == name_)
    }
}
