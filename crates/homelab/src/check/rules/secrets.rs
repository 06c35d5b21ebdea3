//! secrets/*: no plaintext, SOPS as the creation rules say, and each age identity opening only what it should.

use std::collections::BTreeSet;

use super::*;
use crate::check::findings::{self as rules, Location};
use crate::check::object::*;
use crate::check::tree::{self, Tree};
use crate::check::yaml::{Node, Value};

impl Checker<'_> {
    /// A Secret outside a *.sops.yaml file; in one, a document never encrypted or a value left
    /// in the clear.
    pub(super) fn secrets_plaintext(&mut self) {
        for object in self.objects().filter(|o| kind(&o.node) == "Secret") {
            if !self.file(object).ends_with(".sops.yaml") {
                let at = object.node.get("kind").unwrap_or(&object.node);
                self.at(
                    &rules::PLAINTEXT_SECRET,
                    object,
                    at,
                    format!(
                        "Secret {} is in {}, which is not a *.sops.yaml file",
                        name(&object.node),
                        self.file(object)
                    ),
                );
            }
        }
        for (path, document) in self.sops_documents() {
            if whole_encrypted(document) {
                continue;
            }
            if document.get("sops").is_none() {
                self.emit(
                    &rules::PLAINTEXT_SECRET,
                    Place::Node(path, document),
                    format!("{path}: a document without SOPS metadata (never encrypted)"),
                );
                continue;
            }
            for field in ["data", "stringData"] {
                for (key, value) in document.get(field).map(Node::entries).unwrap_or_default() {
                    if !value.scalar_text().starts_with("ENC[") {
                        self.emit(
                            &rules::PLAINTEXT_SECRET,
                            Place::Node(path, value),
                            format!("{path}: {field}.{} is not encrypted", key.scalar_text()),
                        );
                    }
                }
            }
        }
    }

    /// In a *.sops.yaml file or any other manifest: a document whose apiVersion or kind is
    /// ciphertext is no object any rule can judge, and kustomize cannot build it.
    pub(super) fn secrets_whole_document(&mut self) {
        for (path, document) in self.sops_documents() {
            if whole_encrypted(document) {
                self.emit(
                    &rules::WHOLE_DOCUMENT,
                    Place::Node(path, document.get("kind").unwrap_or(document)),
                    format!("{path}: apiVersion and kind are ciphertext"),
                );
            }
        }
        let tree = self.tree;
        for document in tree.objects.iter().filter(|o| whole_encrypted(&o.node)) {
            let path = tree.files[document.file].path.as_str();
            if !path.ends_with(".sops.yaml") {
                self.emit(
                    &rules::WHOLE_DOCUMENT,
                    Place::Node(path, document.node.get("kind").unwrap_or(&document.node)),
                    format!("{path}: apiVersion and kind are ciphertext"),
                );
            }
        }
    }

    pub(super) fn secrets_encrypted_regex(&mut self) {
        for (path, document) in self.sops_documents() {
            let Some(metadata) = document.get("sops") else {
                continue;
            };
            let regex = metadata.get("encrypted_regex").map(Node::scalar_text);
            if !whole_encrypted(document) && regex.as_deref() != Some(ENCRYPTED_REGEX) {
                self.emit(
                    &rules::ENCRYPTED_REGEX,
                    Place::Node(path, metadata),
                    format!("{path}: encrypted_regex is {:?}", regex.unwrap_or_default()),
                );
            }
        }
    }

    pub(super) fn secrets_creation_rule(&mut self) {
        let tree = self.tree;
        // Every *.sops.yaml file, an empty one too: the next `sops` run on it needs a rule.
        let sops_files: BTreeSet<&str> = tree
            .sops_documents
            .iter()
            .map(|(file, _)| tree.files[*file].path.as_str())
            .collect();
        for path in sops_files {
            let rule = tree
                .sops_rules
                .iter()
                .find(|r| r.path_regex.as_ref().is_none_or(|re| re.is_match(path)));
            let fine = rule.is_some_and(|r| r.encrypted_regex.as_deref() == Some(ENCRYPTED_REGEX));
            if !fine {
                let at = Location::new(path, 1, 0);
                self.emit(
                    &rules::CREATION_RULE,
                    Place::Line(at),
                    match rule {
                        None => format!("no creation rule in .sops.yaml matches {path}"),
                        Some(_) => format!(
                            "the first creation rule matching {path} has no encrypted_regex \
                             {ENCRYPTED_REGEX}"
                        ),
                    },
                );
            }
        }
    }

    /// Two age identities: the owner's (the host's key) opens everything; Flux's opens the
    /// cluster's secrets only. Checked where each is written: .sops.yaml's rules, every SOPS
    /// file's recipients, and the key the bootstrap hands Flux.
    pub(super) fn secrets_flux_identity(&mut self) {
        let tree = self.tree;
        let Some(flux) = &tree.facts.flux_age_recipient else {
            return;
        };
        let flux = flux.get_ref().as_str();
        let first_rule = |path: &str| {
            tree.sops_rules
                .iter()
                .find(|r| r.path_regex.as_ref().is_none_or(|re| re.is_match(path)))
        };
        let cluster_sample = format!("{}/manifests/app/secret.sops.yaml", tree.cluster);
        if let Some(rule) = first_rule(&cluster_sample)
            && !rule.recipients.iter().any(|r| r == flux)
        {
            self.emit(
                &rules::FLUX_IDENTITY,
                Place::Line(Location::new(tree::SOPS_CONFIG, rule.line, 0)),
                format!(
                    "the creation rule for the cluster's secrets does not encrypt to Flux's \
                     recipient {flux} (homelab.toml flux-age-recipient): Flux could not decrypt \
                     what it makes"
                ),
            );
        }
        let host_sample = format!("{}/host-secrets.sops.yaml", tree::HOST_SECRETS);
        if let Some(rule) = first_rule(&host_sample)
            && rule.recipients.iter().any(|r| r == flux)
        {
            self.emit(
                &rules::FLUX_IDENTITY,
                Place::Line(Location::new(tree::SOPS_CONFIG, rule.line, 0)),
                "the creation rule for the host's secrets encrypts to Flux's recipient: \
                          the cluster could read the R2 keys and the repository password"
                    .to_owned(),
            );
        }
        let recipients = |document: &Node| -> Vec<String> {
            document
                .path(&["sops", "age"])
                .map(Node::items)
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.get("recipient").map(Node::scalar_text))
                .collect()
        };
        for (file, document) in &tree.sops_documents {
            let found = recipients(document);
            if !found.is_empty() && !found.iter().any(|r| r == flux) {
                let at = document.key_node("sops").unwrap_or(document);
                self.emit(
                    &rules::FLUX_IDENTITY,
                    Place::Node(&tree.files[*file].path, at),
                    format!(
                        "encrypted to {} only, not to Flux's recipient {flux}: Flux cannot \
                         decrypt it (run `sops updatekeys` on it)",
                        found.join(", ")
                    ),
                );
            }
        }
        for (file, document) in &tree.host_sops_documents {
            if recipients(document).iter().any(|r| r == flux) {
                let at = document.key_node("sops").unwrap_or(document);
                self.emit(
                    &rules::FLUX_IDENTITY,
                    Place::Node(&tree.files[*file].path, at),
                    format!(
                        "a host secret encrypted to Flux's recipient {flux}: the cluster could \
                         decrypt it"
                    ),
                );
            }
        }
        if let Some(file) = tree.flux_module {
            let text = &tree.files[file].text;
            if let Some((index, line)) = text
                .lines()
                .enumerate()
                .find(|(_, l)| l.contains("--age-key"))
                && !line.contains("flux/age-key")
            {
                self.emit(
                    &rules::FLUX_IDENTITY,
                    Place::Line(Location::new(tree::FLUX_MODULE, index + 1, 0)),
                    "the Flux bootstrap's --age-key is not the flux/age-key secret: the \
                              cluster would get another key than Flux's own"
                        .to_owned(),
                );
            }
        }
    }

    pub(super) fn secrets_secret_looking_value(&mut self) {
        let tree = self.tree;
        // Every document of a file that is not *.sops.yaml, one encrypted whole too: what it
        // left readable (an `_unencrypted` key) is in the repository all the same.
        for object in tree
            .objects
            .iter()
            .filter(|o| !tree.files[o.file].path.ends_with(".sops.yaml"))
        {
            let mut suspicious: Vec<(&Node, String)> = Vec::new();
            if let Some(spec) = pod_spec(&object.node) {
                for (container, _) in containers(spec) {
                    for env in container.get("env").map(Node::items).unwrap_or_default() {
                        let var = env.get("name").map(Node::scalar_text).unwrap_or_default();
                        if let Some(value) = env.get("value")
                            && secret_name(&var)
                            && !value.scalar_text().is_empty()
                            && !value.scalar_text().starts_with('/')
                        {
                            suspicious.push((value, format!("env {var} is set to a literal")));
                        }
                    }
                }
            }
            if kind(&object.node) == "ConfigMap" {
                for (key, value) in object
                    .node
                    .get("data")
                    .map(Node::entries)
                    .unwrap_or_default()
                {
                    if secret_name(&key.scalar_text()) && !value.scalar_text().is_empty() {
                        suspicious.push((value, format!("ConfigMap key {}", key.scalar_text())));
                    }
                }
            }
            visit_strings(&object.node, &mut |node, text| {
                if let Some(marker) = SECRET_MARKERS.iter().find(|m| text.contains(**m)) {
                    suspicious.push((node, format!("a value contains {marker:?}")));
                }
            });
            for (node, why) in suspicious {
                self.at(
                    &rules::SECRET_VALUE,
                    object,
                    node,
                    format!("{}: {why}", label(&object.node)),
                );
            }
        }
    }
}

impl<'a> Checker<'a> {
    /// The documents of the cluster's *.sops.yaml files (not decrypted), with their file; empty
    /// documents left out.
    fn sops_documents(&self) -> impl Iterator<Item = (&'a str, &'a Node)> + use<'a> {
        let tree: &'a Tree = self.tree;
        tree.sops_documents
            .iter()
            .filter(|(_, document)| document.value != Value::Null)
            .map(|(file, document)| (tree.files[*file].path.as_str(), document))
    }
}

const SECRET_MARKERS: [&str; 6] = [
    "-----BEGIN PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "AGE-SECRET-KEY-1",
    "ghp_",
    "xoxb-",
];

fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "SECRET",
        "TOKEN",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

fn visit_strings<'a>(node: &'a Node, visit: &mut impl FnMut(&'a Node, &str)) {
    match &node.value {
        Value::Str(text) => visit(node, text),
        Value::Seq(items) => items.iter().for_each(|i| visit_strings(i, visit)),
        Value::Map(entries) => entries.iter().for_each(|(_, v)| visit_strings(v, visit)),
        _ => {}
    }
}
