//! What a check reports: a rule (id, severity, what it means, why it matters, how to fix it) at a
//! file and line. The registry below is the one table of rules; docs/check.md's table is compared
//! with it row by row.

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
    /// What the finding means.
    pub summary: &'static str,
    /// What goes wrong on the running box if it is pushed anyway.
    pub why: &'static str,
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
    /// The rendered object it is about (`Deployment vaultwarden/vaultwarden`), set by the one
    /// emitter of the rules; none for findings about files, lines and homelab.toml.
    pub object: Option<String>,
    pub message: String,
}

macro_rules! rules {
    ($($name:ident $id:literal $severity:ident $summary:literal $why:literal $hint:literal;)*) => {
        $(pub const $name: Rule = Rule {
            id: $id,
            severity: Severity::$severity,
            summary: $summary,
            why: $why,
            hint: $hint,
        };)*
        /// Every rule, in the order docs/check.md lists them.
        pub const ALL: &[&Rule] = &[$(&$name),*];
    };
}

rules! {
    YAML_SYNTAX "structure/yaml-syntax" Error
        "the file is not valid YAML"
        "Flux fails the whole Kustomization: nothing else in it applies until this is fixed"
        "fix the syntax at the position shown";
    ENCODING "structure/encoding" Error
        "a file, or a file name, is not UTF-8"
        "kustomize (and so Flux) refuses the file, and with it the whole Kustomization"
        "save the file as UTF-8 (and rename a file whose name is not)";
    DUPLICATE_KEY "structure/duplicate-key" Error
        "a mapping has the same key twice"
        "only the last one counts: the first (an env var, a port) is dropped without a word"
        "merge the two entries into one";
    NOT_AN_OBJECT "structure/not-an-object" Error
        "a YAML document is not a Kubernetes object (no apiVersion, kind or metadata.name)"
        "kustomize refuses a document it cannot name, and Flux applies nothing in that path"
        "give the document apiVersion, kind and metadata.name, or remove it";
    DUPLICATE_OBJECT "structure/duplicate-object" Error
        "the same object (kind, namespace, name) is rendered twice in one Flux path"
        "kustomize refuses the build, so nothing in that path applies"
        "remove one of them, or give them different names";
    MISSING_ENTRY "structure/missing-entry" Error
        "a kustomization lists a file or folder that does not exist"
        "kustomize fails on it, so nothing in that path applies"
        "restore the file, or remove the entry from kustomization.yaml";
    UNSUPPORTED "structure/unsupported" Error
        "the tree uses something `homelab check` cannot follow"
        "what the check cannot see it cannot vouch for: passing it would be a lie"
        "use the kustomize features the check knows (resources, namespace, labels) or extend the check";
    ORPHAN_MANIFEST "structure/orphan-manifest" Error
        "a manifest under the cluster folder is included by no kustomization"
        "Flux never applies it: the change looks committed but never reaches the box"
        "add it to the resources of the kustomization.yaml beside it, or delete it";
    SCHEMA "schema/invalid" Error
        "the object does not match the strict schema of its kind (unknown field, wrong type, missing field)"
        "the API server refuses it (or drops the field), and the Kustomization stalls with it"
        "compare with the API reference of the kind at the Kubernetes version the host runs";
    TOO_LARGE "schema/too-large" Error
        "an object is over the API server's size limits (a request over 3 MiB, ConfigMap or Secret data over 1 MiB)"
        "the API server refuses it, and the whole Kustomization fails to apply"
        "split the data over several objects, or keep it out of the cluster (a volume under /srv)";
    UNKNOWN_KIND "schema/unknown-kind" Error
        "no schema ships with `homelab check` for this apiVersion and kind"
        "the object cannot be validated, and a typo in apiVersion (the usual cause) makes Flux fail"
        "check the apiVersion for typos; a new kind needs adding to scripts/vendor-check-schemas.py";
    SECRET_REF "refs/secret" Error
        "a workload reads a Secret or a Secret key that is not defined in its namespace"
        "the pod never starts (CreateContainerConfigError) until the key exists"
        "add the key to the Secret (`sops edit`), or fix the name";
    CONFIG_MAP_REF "refs/config-map" Error
        "a workload reads a ConfigMap or a ConfigMap key that is not defined in its namespace"
        "the pod never starts (CreateContainerConfigError, or stuck mounting the volume)"
        "add the ConfigMap or key, or fix the name";
    CLAIM_REF "refs/claim" Error
        "a claim does not bind to exactly one PersistentVolume that fits it, or a pod names a missing claim"
        "the pod stays Pending, or the claim binds another folder than the one the host made and backs up"
        "give the claim volumeName and the volume a claimRef back, with enough capacity and the same access mode";
    SERVICE_SELECTOR "refs/service-selector" Error
        "a Service selects no pod template in its namespace"
        "the Service has no endpoints: the app runs but every request fails"
        "make the selector a subset of the pod template's labels";
    TARGET_PORT "refs/target-port" Error
        "a Service's named targetPort is not a port name of the pods it selects"
        "the Service has no port to send to: requests fail although the pod is healthy"
        "name the container port, or use the port number";
    INGRESS_BACKEND "refs/ingress-backend" Error
        "an Ingress backend names a Service or port that does not exist in its namespace"
        "Traefik has nowhere to send the hostname's requests and answers with an error"
        "point the backend at an existing Service and one of its port names or numbers";
    ALERT_PROVIDER "refs/alert-provider" Error
        "a Flux Alert names a Provider that does not exist in its namespace"
        "the Alert sends nothing: Flux's failures stay silent"
        "point providerRef.name at the Provider in manifests/alerts/";
    NAMESPACE "refs/namespace" Error
        "an object lives in a namespace nothing declares"
        "the API server refuses the object until the namespace exists, so the app never deploys"
        "add the Namespace to manifests/cluster/namespaces.yaml";
    BACKUP_COMMAND "refs/backup-command" Error
        "a backup app or command in homelab.toml names a workload or pod selector the tree does not have"
        "`kubectl wait --for=delete` passes at once when nothing matches: a snapshot or restore would run while the app still writes"
        "use the Deployment/StatefulSet name and its pod labels";
    HOST_PATH "storage/host-path" Error
        "a hostPath volume is outside /srv"
        "only /srv is made by the host and backed up: data elsewhere is lost with the disk, or exposes the host"
        "move the data under /srv and add a [[storage]] entry in homelab.toml";
    UNLISTED "storage/unlisted" Error
        "a volume or backup source under /srv has no [[storage]] entry"
        "the host does not make the folder with its owner and mode: the pod cannot start, or writes as the wrong user"
        "add a [[storage]] entry (path, owner, mode) to homelab.toml";
    NOT_BACKED_UP "storage/not-backed-up" Error
        "state under /srv is covered by no backup source in homelab.toml"
        "a dead disk takes that data with it for good"
        "add a [[backup.source]] for it, or `no-backup = \"<reason>\"` on its [[storage]] entry";
    ROUTE_INGRESS "exposure/route-ingress" Error
        "an http tunnel route has no Ingress for its hostname, or more than one"
        "the hostname reaches Traefik and finds nothing (404), or finds two and one wins by chance"
        "add one Ingress with that host in the app's folder (or remove the route from homelab.toml)";
    INGRESS_UNROUTED "exposure/ingress-unrouted" Error
        "an Ingress serves a hostname the tunnel does not route"
        "nobody outside can reach it: the tunnel is the only way in"
        "add an http route to homelab.toml, or remove the rule";
    TCP_ROUTE "exposure/tcp-route" Error
        "a tcp tunnel route does not end at a Service with its fixed cluster IP and port"
        "the tunnel carries the bytes to an address nothing listens on (the laptop's backups fail)"
        "give the app's Service `clusterIP:` and a port equal to the route's";
    SERVICE_TYPE "exposure/service-type" Error
        "a NodePort or LoadBalancer Service"
        "it opens a port on the host that bypasses the tunnel and Cloudflare Access"
        "use a ClusterIP Service behind an Ingress or a tcp route";
    HOST_NETWORK "exposure/host-network" Error
        "a pod uses the host's network or a hostPort"
        "it listens on the host itself, bypassing the tunnel, Cloudflare Access and the firewall's intent"
        "remove hostNetwork/hostPort; publish through the tunnel";
    FIREWALL "exposure/firewall" Error
        "the host firewall facts open something other than exactly TCP 22 and 6443"
        "every other open port is a way in that skips the tunnel and Cloudflare Access"
        "set [firewall] tcp-ports = [22, 6443] in homelab.toml; everything else comes through the tunnel";
    PLAINTEXT_SECRET "secrets/plaintext" Error
        "a Secret is not in a SOPS-encrypted *.sops.yaml file, or holds an unencrypted value"
        "once pushed it is public for good: it must be rotated, not just encrypted"
        "move it to <name>.sops.yaml and run `sops encrypt --in-place` on it";
    WHOLE_DOCUMENT "secrets/whole-document" Error
        "a document is encrypted whole (its apiVersion or kind is ciphertext), in a *.sops.yaml file or any other"
        "kustomize cannot build a document whose kind and name are ciphertext, so nothing can check or apply it"
        "decrypt it and re-encrypt with `--encrypted-regex '^(data|stringData)$'` (the creation rule in .sops.yaml does this)";
    ENCRYPTED_REGEX "secrets/encrypted-regex" Error
        "a SOPS file was not encrypted with encrypted_regex ^(data|stringData)$"
        "another regex either hides the object's kind and name (unbuildable) or leaves values in the clear"
        "re-encrypt it with the creation rule in .sops.yaml";
    CREATION_RULE "secrets/creation-rule" Error
        "no creation rule in .sops.yaml covers this SOPS file with encrypted_regex ^(data|stringData)$"
        "`sops updatekeys` and a new file at that path get no keys from .sops.yaml: a key change skips the file"
        "extend a path_regex in .sops.yaml to this path";
    FLUX_IDENTITY "secrets/flux-identity" Error
        "a key opens more than it should: a cluster secret Flux cannot decrypt, a host secret the cluster could, or a bootstrap that hands Flux another key than its own"
        "Flux stalls on a secret it cannot open; the host's own secrets must stay out of reach of anything in the cluster"
        "encrypt cluster secrets to homelab.toml's flux-age-recipient and the owner (.sops.yaml, then `sops updatekeys`); never the host's secrets; bootstrap with --age-key of the flux/age-key secret";
    SECRET_VALUE "secrets/secret-looking-value" Warning
        "a file that is not SOPS-encrypted holds a value that looks like a secret"
        "anyone who can read the repository can read it"
        "move the value into the app's secret.sops.yaml and reference it with secretKeyRef";
    DEPENDS_ON "flux/depends-on" Error
        "an app Kustomization does not wait for the infrastructure, or waits for one that does not exist"
        "the app applies before its namespace, volumes and Traefik exist and fails, or waits forever"
        "add `dependsOn: [{name: infrastructure}]`";
    DECRYPTION "flux/decryption" Error
        "a Flux Kustomization applies SOPS files without decryption"
        "the cluster gets ciphertext as the secret's values and the app starts with garbage credentials"
        "add `decryption: {provider: sops, secretRef: {name: sops-age}}`";
    ALERTS "flux/alerts" Error
        "a Kustomization or HelmRelease whose errors no Flux Alert sends anywhere, or a Matrix Provider that posts elsewhere than homelab.toml's room"
        "a failing reconcile stays silent: nothing tells the owner"
        "add the object's kind and namespace to the Alert's eventSources; use backup.matrix-homeserver and matrix-room";
    INTERVAL "flux/interval" Error
        "the GitRepository is not polled at the documented interval (1m)"
        "a push is no longer live within a minute, as the README promises"
        "set spec.interval: 1m";
    PATH_MISSING "flux/path-missing" Error
        "a Flux Kustomization's path does not exist in the repository"
        "Flux fails the Kustomization: nothing under it applies"
        "fix spec.path (relative to the repository root, starting ./)";
    IMAGE_TAG "hygiene/image-tag" Error
        "an image has no exact tag (missing, or latest)"
        "the image changes under the app at any restart, untested, and Renovate cannot propose the update"
        "pin the release tag (Renovate keeps it current)";
    RESOURCES "hygiene/resources" Error
        "a container has no resource requests or limits"
        "one runaway container can starve the whole box, and the kernel's OOM killer picks at random"
        "set resources.requests and resources.limits (the README keeps the memory budget)";
    PROBES "hygiene/probes" Error
        "a long-running container has no readiness or liveness probe"
        "a hung app looks healthy: nothing restarts it, and Flux and `homelab status` count it as ready"
        "add readinessProbe and livenessProbe";
    RECREATE "hygiene/recreate" Error
        "a Deployment with a volume claim rolls out by starting the new pod before the old one stops"
        "for a moment two pods write the same files: a database corrupts"
        "set spec.strategy.type: Recreate";
    SILENCE "check/silence" Error
        "a `homelab.check/ignore` annotation names an unknown rule or gives no reason"
        "a silence nobody can justify hides a real finding; a misspelt rule id silences nothing"
        "write `<rule-id>: <why this is fine here>`, one per line";
}
