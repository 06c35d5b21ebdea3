#!/usr/bin/env python3
"""Regenerates the strict JSON schemas `homelab check` carries inside the binary.

Usage: scripts/vendor-check-schemas.py [OUT_DIR]   (default: crates/homelab/schemas)

Sources, both pinned:
- core kinds: the `v<KUBERNETES>-local-strict` schemas of the `kubernetes-validate` package at
  the version .ci/requirements.txt pins (generated from Kubernetes' OpenAPI; Apache-2.0);
- Flux, Traefik and k3s custom resources: ../shared/schemas/crds (MIT, LICENSE beside them).
Only the kinds listed here are kept, with the definitions they reach, so the binary stays small;
a kind that is not here is reported by `homelab check` as having no schema.
"""

import json
import pathlib
import shutil
import sys

import kubernetes_validate

KUBERNETES = "1.35.0"  # the k3s minor nixpkgs 26.05 runs (tests/nix_files.rs, docs/nixos-options.md)
CORE_KINDS = [
    ("v1", "ConfigMap"), ("v1", "LimitRange"), ("v1", "Namespace"),
    ("v1", "PersistentVolume"), ("v1", "PersistentVolumeClaim"), ("v1", "Pod"),
    ("v1", "ResourceQuota"), ("v1", "Secret"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("apps/v1", "DaemonSet"), ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("batch/v1", "CronJob"), ("batch/v1", "Job"),
    ("networking.k8s.io/v1", "Ingress"), ("networking.k8s.io/v1", "IngressClass"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("scheduling.k8s.io/v1", "PriorityClass"), ("storage.k8s.io/v1", "StorageClass"),
]


def key(api_version: str, kind: str) -> str:
    return f"kind.{api_version.replace('/', '.')}.{kind}"


def rewrite(node, reached: set, defs: dict):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and "#/$defs/" in v:
                name = v.split("#/$defs/", 1)[1]
                if name not in reached:
                    reached.add(name)
                    reached_defs[name] = rewrite(defs[name], reached, defs)
                out[k] = "#/$defs/" + name
            else:
                out[k] = rewrite(v, reached, defs)
        return out
    if isinstance(node, list):
        return [rewrite(v, reached, defs) for v in node]
    return node


reached_defs: dict = {}


def core(source: pathlib.Path) -> dict:
    defs = json.loads((source / "_definitions.json").read_text())["$defs"]
    wanted = {(a, k) for a, k in CORE_KINDS}
    found = {}
    for file in sorted(source.glob("*.json")):
        if file.name.startswith("_"):
            continue
        schema = json.loads(file.read_text())
        props = schema.get("properties", {})
        versions = props.get("apiVersion", {}).get("enum", [])
        kinds = props.get("kind", {}).get("enum", [])
        for pair in ((a, k) for a in versions for k in kinds):
            if pair in wanted and pair not in found:
                found[pair] = schema
    missing = wanted - set(found)
    if missing:
        sys.exit(f"kubernetes-validate {KUBERNETES} has no schema for {sorted(missing)}")
    reached: set = set()
    bundle_defs = {}
    for (api_version, kind), schema in sorted(found.items()):
        bundle_defs[key(api_version, kind)] = rewrite(
            # Their own `$id` would move the base the rewritten `#/$defs/…` refs resolve against.
            {k: v for k, v in schema.items() if k not in ("$schema", "$id")}, reached, defs
        )
    bundle_defs.update(sorted(reached_defs.items()))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:homelab:kubernetes",
        "$comment": f"kubernetes-validate {kubernetes_validate.__version__}, v{KUBERNETES}-local-strict",
        "$defs": bundle_defs,
    }


def crds(source: pathlib.Path) -> dict:
    bundle = {}
    for file in sorted(source.glob("*/*.json")):
        group = file.parent.name
        schema = json.loads(file.read_text())
        props = schema.get("properties", {})
        kind = props.get("kind", {}).get("enum", [None])[0]
        version = file.stem.rsplit("_", 1)[1]
        if not kind:
            # The shared schemas name the kind only in the file name.
            kind = next(k for k in KIND_NAMES.get(group, []) if k.lower() == file.stem.rsplit("_", 1)[0])
        bundle[f"{group}/{version} {kind}"] = schema
    return bundle


KIND_NAMES = {
    "kustomize.toolkit.fluxcd.io": ["Kustomization"],
    "helm.toolkit.fluxcd.io": ["HelmRelease"],
    "source.toolkit.fluxcd.io": ["GitRepository", "OCIRepository", "HelmRepository", "HelmChart", "Bucket"],
    "notification.toolkit.fluxcd.io": ["Alert", "Provider", "Receiver"],
    "image.toolkit.fluxcd.io": ["ImageRepository", "ImagePolicy", "ImageUpdateAutomation"],
    "helm.cattle.io": ["HelmChart", "HelmChartConfig"],
    "traefik.io": ["IngressRoute", "Middleware", "IngressRouteTCP", "ServersTransport", "TLSOption"],
}


def main() -> None:
    repo = pathlib.Path(__file__).resolve().parent.parent
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else repo / "crates/homelab/schemas"
    package = pathlib.Path(kubernetes_validate.__file__).parent
    core_source = package / "kubernetes-json-schema" / f"v{KUBERNETES}-local-strict"
    crd_source = repo.parent / "shared/schemas/crds"
    out.mkdir(parents=True, exist_ok=True)
    (out / "kubernetes.json").write_text(json.dumps(core(core_source), sort_keys=True) + "\n")
    (out / "crds.json").write_text(json.dumps(crds(crd_source), sort_keys=True) + "\n")
    shutil.copyfile(crd_source.parent / "LICENSE", out / "LICENSE-crds")


if __name__ == "__main__":
    main()
