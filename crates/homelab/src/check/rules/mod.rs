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

use super::findings::{self as rules, Finding, Location, Rule};
use super::object::{kind, name, namespace, object_label, whole_encrypted};
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

/// What every rule works with: the loaded tree, the schemas, and the findings so far.
struct Checker<'a> {
    tree: &'a Tree,
    /// The rendered objects the rules judge: all but documents SOPS encrypted whole, which
    /// secrets/whole-document reports (their kind and name are ciphertext).
    objects: &'a [&'a Object],
    schemas: &'a mut Schemas,
    findings: Vec<Finding>,
}

/// How each rule of the registry is found: by the loader while it reads and renders the tree
/// (check/tree/), or by the one function named after it (`refs/claim`: `refs_claim`) in its
/// family's file here.
enum Check {
    Loader,
    Rule(fn(&mut Checker<'_>)),
}

/// Every rule of the registry, in its order, with how it is found: a unit test holds the two
/// equal, so no rule is left without its code.
const CHECKS: &[(&Rule, Check)] = &[
    (&rules::YAML_SYNTAX, Check::Loader),
    (&rules::ENCODING, Check::Loader),
    (&rules::DUPLICATE_KEY, Check::Loader),
    (&rules::NOT_AN_OBJECT, Check::Loader),
    (&rules::DUPLICATE_OBJECT, Check::Loader),
    (&rules::MISSING_ENTRY, Check::Loader),
    (&rules::UNSUPPORTED, Check::Loader),
    (&rules::ORPHAN_MANIFEST, Check::Loader),
    (&rules::SCHEMA, Check::Rule(|c| c.schema_invalid())),
    (&rules::TOO_LARGE, Check::Rule(|c| c.schema_too_large())),
    (
        &rules::UNKNOWN_KIND,
        Check::Rule(|c| c.schema_unknown_kind()),
    ),
    (&rules::SECRET_REF, Check::Rule(|c| c.refs_secret())),
    (&rules::CONFIG_MAP_REF, Check::Rule(|c| c.refs_config_map())),
    (&rules::CLAIM_REF, Check::Rule(|c| c.refs_claim())),
    (
        &rules::SERVICE_SELECTOR,
        Check::Rule(|c| c.refs_service_selector()),
    ),
    (&rules::TARGET_PORT, Check::Rule(|c| c.refs_target_port())),
    (
        &rules::INGRESS_BACKEND,
        Check::Rule(|c| c.refs_ingress_backend()),
    ),
    (
        &rules::ALERT_PROVIDER,
        Check::Rule(|c| c.refs_alert_provider()),
    ),
    (&rules::NAMESPACE, Check::Rule(|c| c.refs_namespace())),
    (
        &rules::BACKUP_COMMAND,
        Check::Rule(|c| c.refs_backup_command()),
    ),
    (&rules::HOST_PATH, Check::Rule(|c| c.storage_host_path())),
    (&rules::UNLISTED, Check::Rule(|c| c.storage_unlisted())),
    (
        &rules::NOT_BACKED_UP,
        Check::Rule(|c| c.storage_not_backed_up()),
    ),
    (
        &rules::ROUTE_INGRESS,
        Check::Rule(|c| c.exposure_route_ingress()),
    ),
    (
        &rules::INGRESS_UNROUTED,
        Check::Rule(|c| c.exposure_ingress_unrouted()),
    ),
    (&rules::TCP_ROUTE, Check::Rule(|c| c.exposure_tcp_route())),
    (
        &rules::SERVICE_TYPE,
        Check::Rule(|c| c.exposure_service_type()),
    ),
    (
        &rules::HOST_NETWORK,
        Check::Rule(|c| c.exposure_host_network()),
    ),
    (&rules::FIREWALL, Check::Rule(|c| c.exposure_firewall())),
    (
        &rules::PLAINTEXT_SECRET,
        Check::Rule(|c| c.secrets_plaintext()),
    ),
    (
        &rules::WHOLE_DOCUMENT,
        Check::Rule(|c| c.secrets_whole_document()),
    ),
    (
        &rules::ENCRYPTED_REGEX,
        Check::Rule(|c| c.secrets_encrypted_regex()),
    ),
    // The loader also reports a path_regex that is not a regular expression.
    (
        &rules::CREATION_RULE,
        Check::Rule(|c| c.secrets_creation_rule()),
    ),
    (
        &rules::FLUX_IDENTITY,
        Check::Rule(|c| c.secrets_flux_identity()),
    ),
    (
        &rules::SECRET_VALUE,
        Check::Rule(|c| c.secrets_secret_looking_value()),
    ),
    (&rules::DEPENDS_ON, Check::Rule(|c| c.flux_depends_on())),
    (&rules::DECRYPTION, Check::Rule(|c| c.flux_decryption())),
    (&rules::ALERTS, Check::Rule(|c| c.flux_alerts())),
    (&rules::INTERVAL, Check::Rule(|c| c.flux_interval())),
    // Found while following spec.path, which the loader does to render the tree.
    (&rules::PATH_MISSING, Check::Loader),
    (&rules::IMAGE_TAG, Check::Rule(|c| c.hygiene_image_tag())),
    (&rules::RESOURCES, Check::Rule(|c| c.hygiene_resources())),
    (&rules::PROBES, Check::Rule(|c| c.hygiene_probes())),
    (&rules::RECREATE, Check::Rule(|c| c.hygiene_recreate())),
    (&rules::SILENCE, Check::Rule(|c| c.check_silence())),
];

pub fn run(tree: &Tree, schemas: &mut Schemas) -> Vec<Finding> {
    let objects: Vec<&Object> = tree
        .objects
        .iter()
        .filter(|o| !whole_encrypted(&o.node))
        .collect();
    let mut checker = Checker {
        tree,
        objects: &objects,
        schemas,
        findings: tree.findings.clone(),
    };
    for (_, check) in CHECKS {
        if let Check::Rule(rule) = check {
            rule(&mut checker);
        }
    }
    let mut findings = checker.findings;
    findings.sort_by(|a, b| (&a.at, a.rule.id).cmp(&(&b.at, b.rule.id)));
    findings.dedup_by(|a, b| a.at == b.at && a.rule.id == b.rule.id && a.message == b.message);
    findings
}

impl<'a> Checker<'a> {
    fn file(&self, object: &Object) -> &'a str {
        &self.tree.files[object.file].path
    }

    /// The one way a rule reports: every finding goes through here. A finding at an object
    /// carries the object's label, and is dropped when the object's `homelab.check/ignore`
    /// annotation silences its rule.
    fn emit(&mut self, rule: &'static Rule, place: Place<'_>, message: String) {
        let (at, object) = match place {
            Place::Object(object, node) => {
                if silenced(&object.node, rule.id) {
                    return;
                }
                (
                    Location::at(self.file(object), node),
                    Some(object_label(&object.node)),
                )
            }
            Place::Node(file, node) => (Location::at(file, node), None),
            Place::Line(at) => (at, None),
            Place::Facts(offset) => (
                Location::new(
                    tree::FACTS_FILE,
                    tree::line_of_offset(&self.tree.files[0].text, offset),
                    0,
                ),
                None,
            ),
        };
        self.findings.push(Finding {
            rule,
            at,
            object,
            message,
        });
    }

    /// At `node` of a rendered object (the usual case).
    fn at(&mut self, rule: &'static Rule, object: &Object, node: &Node, message: String) {
        self.emit(rule, Place::Object(object, node), message);
    }

    fn objects(&self) -> impl Iterator<Item = &'a Object> + use<'a> {
        let objects: &'a [&'a Object] = self.objects;
        objects.iter().copied()
    }

    fn find(&self, kind_: &str, ns: &str, name_: &str) -> Option<&'a Object> {
        self.objects()
            .find(|o| kind(&o.node) == kind_ && namespace(&o.node) == ns && name(&o.node) == name_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_of_the_registry_is_checked_once_in_its_order() {
        let checked: Vec<&str> = CHECKS.iter().map(|(rule, _)| rule.id).collect();
        let registry: Vec<&str> = rules::ALL.iter().map(|rule| rule.id).collect();
        assert_eq!(checked, registry);
    }
}
