//! What the rules ask of Kubernetes objects: names, kinds, pod templates, quantities, label
//! selectors, and whether SOPS encrypted a document whole.

use super::yaml::{Node, Value};

pub(crate) fn kind(node: &Node) -> &str {
    node.get("kind").and_then(Node::str).unwrap_or("")
}

pub(crate) fn name(node: &Node) -> String {
    node.path(&["metadata", "name"])
        .map(Node::scalar_text)
        .unwrap_or_default()
}

pub(crate) fn namespace(node: &Node) -> String {
    node.path(&["metadata", "namespace"])
        .map(Node::scalar_text)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// `Kind namespace/name`, or `Kind name` for an object written without a namespace.
pub(crate) fn object_label(node: &Node) -> String {
    match node.path(&["metadata", "namespace"]).map(Node::scalar_text) {
        Some(ns) if !ns.is_empty() => format!("{} {ns}/{}", kind(node), name(node)),
        _ => format!("{} {}", kind(node), name(node)),
    }
}

pub(crate) fn label(node: &Node) -> String {
    format!("{}/{}", kind(node), name(node))
}

/// The pod template's spec of a workload, and its labels.
pub(crate) fn pod_spec(node: &Node) -> Option<&Node> {
    match kind(node) {
        "Pod" => node.get("spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            node.path(&["spec", "template", "spec"])
        }
        "CronJob" => node.path(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

pub(crate) fn pod_labels(node: &Node) -> Option<&Node> {
    match kind(node) {
        "Pod" => node.path(&["metadata", "labels"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            node.path(&["spec", "template", "metadata", "labels"])
        }
        _ => None,
    }
}

/// (container, is an init container)
pub(crate) fn containers(spec: &Node) -> impl Iterator<Item = (&Node, bool)> {
    let main = spec.get("containers").map(Node::items).unwrap_or_default();
    let init = spec
        .get("initContainers")
        .map(Node::items)
        .unwrap_or_default();
    main.iter()
        .map(|c| (c, false))
        .chain(init.iter().map(|c| (c, true)))
}

pub(crate) fn is_true(node: Option<&Node>) -> bool {
    matches!(node.map(|n| &n.value), Some(Value::Bool(true)))
}

/// Bytes in a Kubernetes quantity ("20Gi", "500M", "1.5"), None when it is not one.
pub(crate) fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// Whether a label selector (`k=v`, `k!=v`, `k in (a,b)`, `k notin (…)`, `k`, `!k`, joined by
/// commas) matches labels; None when it cannot be read.
pub(crate) fn selector_matches(selector: &str, labels: &Node) -> Option<bool> {
    let mut requirements = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                requirements.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    requirements.push(&selector[start..]);
    let value = |key: &str| labels.get(key).map(Node::scalar_text);
    let mut all = true;
    for requirement in requirements {
        let requirement = requirement.trim();
        let set = |rest: &str| -> Option<Vec<String>> {
            let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        let holds = if let Some((key, rest)) = requirement.split_once(" notin ") {
            !set(rest)?.contains(&value(key.trim()).unwrap_or_default())
        } else if let Some((key, rest)) = requirement.split_once(" in ") {
            let wanted = set(rest)?;
            value(key.trim()).is_some_and(|v| wanted.contains(&v))
        } else if let Some((key, wanted)) = requirement.split_once("!=") {
            value(key.trim()).as_deref() != Some(wanted.trim())
        } else if let Some((key, wanted)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            value(key.trim()).as_deref() == Some(wanted.trim())
        } else if let Some(key) = requirement.strip_prefix('!') {
            value(key.trim()).is_none()
        } else if !requirement.is_empty() && !requirement.contains([' ', '(', ')']) {
            value(requirement).is_some()
        } else {
            return None;
        };
        all &= holds;
    }
    Some(all)
}

/// A document SOPS encrypted whole: its apiVersion or kind is ciphertext.
pub(crate) fn whole_encrypted(node: &Node) -> bool {
    ["apiVersion", "kind"].iter().any(|k| {
        node.get(k)
            .is_some_and(|v| v.scalar_text().starts_with("ENC["))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels = crate::check::yaml::parse("a: x\nb: y\n")
            .unwrap()
            .documents
            .remove(0);
        assert_eq!(selector_matches("a=x", &labels), Some(true));
        assert_eq!(selector_matches("a=x,b in (z, y)", &labels), Some(true));
        assert_eq!(selector_matches("a in (z)", &labels), Some(false));
        assert_eq!(selector_matches("c notin (z),!c,a", &labels), Some(true));
        assert_eq!(selector_matches("a!=x", &labels), Some(false));
        assert_eq!(selector_matches("a in z", &labels), None);
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("20Gi"), Some(20.0 * 1_073_741_824.0));
        assert_eq!(quantity("1G"), Some(1e9));
        assert_eq!(quantity("x"), None);
    }
}
