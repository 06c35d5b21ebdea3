//! What a check reports: a rule (id, severity, one-line explanation, fix hint) at a file and line.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub summary: &'static str,
    pub hint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Relative to the repository, `/`-separated.
    pub file: String,
    /// 1-based; 0 when the finding is about the file as a whole.
    pub line: usize,
    /// 0-based, in characters.
    pub col: usize,
}

impl Location {
    /// Where `node` was written in `file`.
    pub fn at(file: &str, node: &super::yaml::Node) -> Self {
        Self::new(file, node.line as usize, node.col as usize)
    }

    pub fn new(file: &str, line: usize, col: usize) -> Self {
        Self {
            file: file.to_owned(),
            line,
            col,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: &'static Rule,
    pub at: Location,
    pub message: String,
}

macro_rules! rules {
    ($($name:ident $id:literal $severity:ident $summary:literal $hint:literal;)*) => {
        $(pub const $name: Rule = Rule {
            id: $id,
            severity: Severity::$severity,
            summary: $summary,
            hint: $hint,
        };)*
        /// Every rule, in the order docs/check.md lists them.
        pub const ALL: &[&Rule] = &[$(&$name),*];
    };
}

rules! {
    YAML_SYNTAX "structure/yaml-syntax" Error
        "the file is not valid YAML"
        "fix the syntax at the position shown; Flux rejects the whole Kustomization";
    ENCODING "structure/encoding" Error
        "a file, or a file name, is not UTF-8: kustomize (and so Flux) refuses the file"
        "save the file as UTF-8 (and rename a file whose name is not)";
    DUPLICATE_KEY "structure/duplicate-key" Error
        "a mapping has the same key twice; only the last one counts"
        "merge the two entries into one";
    NOT_AN_OBJECT "structure/not-an-object" Error
        "a YAML document is not a Kubernetes object (no apiVersion, kind or metadata.name)"
        "give the document apiVersion, kind and metadata.name, or remove it";
    DUPLICATE_OBJECT "structure/duplicate-object" Error
        "the same object (kind, namespace, name) is rendered twice in one Flux path; kustomize refuses the build"
        "remove one of them, or give them different names";
    MISSING_ENTRY "structure/missing-entry" Error
        "a kustomization lists a file or folder that does not exist"
        "restore the file, or remove the entry from kustomization.yaml";
    UNSUPPORTED "structure/unsupported" Error
        "the tree uses something `homelab check` cannot follow, so it cannot vouch for it"
        "use the kustomize features the check knows (resources, namespace, labels) or extend the check";
    ORPHAN_MANIFEST "structure/orphan-manifest" Error
        "a manifest under the cluster folder is included by no kustomization, so Flux never applies it"
        "add it to the resources of the kustomization.yaml beside it, or delete it";
    SCHEMA "schema/invalid" Error
        "the object does not match the strict schema of its kind (unknown field, wrong type, missing field)"
        "compare with the API reference of the kind at the Kubernetes version the host runs";
    TOO_LARGE "schema/too-large" Error
        "an object the API server refuses for its size (a request over 3 MiB, ConfigMap or Secret data over 1 MiB)"
        "split the data over several objects, or keep it out of the cluster (a volume under /srv)";
    UNKNOWN_KIND "schema/unknown-kind" Error
        "no schema ships with `homelab check` for this apiVersion and kind"
        "check the apiVersion for typos; a new kind needs adding to scripts/vendor-check-schemas.py";
    SECRET_REF "refs/secret" Error
        "a workload reads a Secret or a Secret key that is not defined in its namespace"
        "add the key to the Secret (`sops edit`), or fix the name";
    CONFIG_MAP_REF "refs/config-map" Error
        "a workload reads a ConfigMap or a ConfigMap key that is not defined in its namespace"
        "add the ConfigMap or key, or fix the name";
    CLAIM_REF "refs/claim" Error
        "a claim does not bind to exactly one PersistentVolume that fits it, or a pod names a missing claim"
        "give the claim volumeName and the volume a claimRef back, with enough capacity and the same access mode";
    SERVICE_SELECTOR "refs/service-selector" Error
        "a Service selects no pod template in its namespace"
        "make the selector a subset of the pod template's labels";
    TARGET_PORT "refs/target-port" Error
        "a Service's named targetPort is not a port name of the pods it selects"
        "name the container port, or use the port number";
    INGRESS_BACKEND "refs/ingress-backend" Error
        "an Ingress backend names a Service or port that does not exist in its namespace"
        "point the backend at an existing Service and one of its port names or numbers";
    ALERT_PROVIDER "refs/alert-provider" Error
        "a Flux Alert names a Provider that does not exist in its namespace"
        "point providerRef.name at the Provider in manifests/alerts/";
    NAMESPACE "refs/namespace" Error
        "an object lives in a namespace nothing declares"
        "add the Namespace to manifests/cluster/namespaces.yaml";
    BACKUP_COMMAND "refs/backup-command" Error
        "a backup app or command in homelab.toml names a workload or pod selector the tree does not have"
        "use the Deployment/StatefulSet name and its pod labels (kubectl wait --for=delete passes when nothing matches)";
    HOST_PATH "storage/host-path" Error
        "a hostPath volume is outside /srv, where the host keeps (and backs up) app state"
        "move the data under /srv and add a [[storage]] entry in homelab.toml";
    UNLISTED "storage/unlisted" Error
        "a volume or backup source under /srv has no [[storage]] entry, so the host does not make it with its owner and mode"
        "add a [[storage]] entry (path, owner, mode) to homelab.toml";
    NOT_BACKED_UP "storage/not-backed-up" Error
        "state under /srv is covered by no backup source in homelab.toml"
        "add a [[backup.source]] for it, or `no-backup = \"<reason>\"` on its [[storage]] entry";
    ROUTE_INGRESS "exposure/route-ingress" Error
        "an http tunnel route has no Ingress for its hostname, or more than one"
        "add one Ingress with that host in the app's folder (or remove the route from homelab.toml)";
    INGRESS_UNROUTED "exposure/ingress-unrouted" Error
        "an Ingress serves a hostname the tunnel does not route"
        "add an http route to homelab.toml, or remove the rule";
    TCP_ROUTE "exposure/tcp-route" Error
        "a tcp tunnel route does not end at a Service with its fixed cluster IP and port"
        "give the app's Service `clusterIP:` and a port equal to the route's";
    SERVICE_TYPE "exposure/service-type" Error
        "a NodePort or LoadBalancer Service bypasses the tunnel"
        "use a ClusterIP Service behind an Ingress or a tcp route";
    HOST_NETWORK "exposure/host-network" Error
        "a pod uses the host's network or a hostPort, bypassing the tunnel and the firewall"
        "remove hostNetwork/hostPort; publish through the tunnel";
    FIREWALL "exposure/firewall" Error
        "the host firewall facts open something other than exactly TCP 22 and 6443"
        "set [firewall] tcp-ports = [22, 6443] in homelab.toml; everything else comes through the tunnel";
    PLAINTEXT_SECRET "secrets/plaintext" Error
        "a Secret is not in a SOPS-encrypted *.sops.yaml file, or holds an unencrypted value"
        "move it to <name>.sops.yaml and run `sops encrypt --in-place` on it";
    WHOLE_DOCUMENT "secrets/whole-document" Error
        "a Secret is encrypted whole (apiVersion, kind, metadata too), so nothing can check or apply it"
        "decrypt it and re-encrypt with `--encrypted-regex '^(data|stringData)$'` (the creation rule in .sops.yaml does this)";
    ENCRYPTED_REGEX "secrets/encrypted-regex" Error
        "a SOPS file was not encrypted with encrypted_regex ^(data|stringData)$"
        "re-encrypt it with the creation rule in .sops.yaml";
    CREATION_RULE "secrets/creation-rule" Error
        "no creation rule in .sops.yaml covers this SOPS file with encrypted_regex ^(data|stringData)$"
        "extend a path_regex in .sops.yaml to this path";
    FLUX_IDENTITY "secrets/flux-identity" Error
        "a key opens more than it should: a cluster secret Flux cannot decrypt, a host secret the cluster could, or a bootstrap that hands Flux another key than its own"
        "encrypt cluster secrets to homelab.toml's flux-age-recipient and the owner (.sops.yaml, then `sops updatekeys`); never the host's secrets; bootstrap with --age-key of the flux/age-key secret";
    SECRET_VALUE "secrets/secret-looking-value" Warning
        "a file that is not SOPS-encrypted holds a value that looks like a secret"
        "move the value into the app's secret.sops.yaml and reference it with secretKeyRef";
    DEPENDS_ON "flux/depends-on" Error
        "an app Kustomization does not wait for the infrastructure, or waits for one that does not exist"
        "add `dependsOn: [{name: infrastructure}]`";
    DECRYPTION "flux/decryption" Error
        "a Flux Kustomization applies SOPS files without decryption, so the cluster would get ciphertext"
        "add `decryption: {provider: sops, secretRef: {name: sops-age}}`";
    ALERTS "flux/alerts" Error
        "a Kustomization or HelmRelease whose errors no Flux Alert sends anywhere, or a Matrix Provider that posts elsewhere than homelab.toml's room"
        "add the object's kind and namespace to the Alert's eventSources; use backup.matrix-homeserver and matrix-room";
    INTERVAL "flux/interval" Error
        "the GitRepository is not polled at the documented interval (1m: a push is live within a minute)"
        "set spec.interval: 1m";
    PATH_MISSING "flux/path-missing" Error
        "a Flux Kustomization's path does not exist in the repository"
        "fix spec.path (relative to the repository root, starting ./)";
    IMAGE_TAG "hygiene/image-tag" Error
        "an image has no exact tag (missing, or latest)"
        "pin the release tag (Renovate keeps it current)";
    RESOURCES "hygiene/resources" Error
        "a container has no resource requests or limits"
        "set resources.requests and resources.limits (the README keeps the memory budget)";
    PROBES "hygiene/probes" Error
        "a long-running container has no readiness or liveness probe"
        "add readinessProbe and livenessProbe";
    RECREATE "hygiene/recreate" Error
        "a Deployment with a volume claim rolls out by starting the new pod before the old one stops"
        "set spec.strategy.type: Recreate (two pods on one database corrupt it)";
    SILENCE "check/silence" Error
        "a `homelab.check/ignore` annotation names an unknown rule or gives no reason"
        "write `<rule-id>: <why this is fine here>`, one per line";
}
