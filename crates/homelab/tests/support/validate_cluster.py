"""Validates a Flux cluster tree offline; prints one finding per line, exits 1 if any.

Usage: validate_cluster.py REPO_ROOT CLUSTER_PATH CRD_SCHEMA_DIR KUBERNETES_VERSION

- `kubectl kustomize` renders CLUSTER_PATH and the path of every Flux Kustomization it holds
  (paths are relative to REPO_ROOT, as Flux reads them);
- every rendered resource is validated strictly: Flux, Traefik and k3s kinds against the JSON
  schemas in CRD_SCHEMA_DIR/<group>/<kind>_<version>.json, core kinds with kubernetes-validate;
- every document in a *.sops.yaml file carries SOPS metadata and has only encrypted values
  under data/stringData (the SOPS metadata is dropped before schema validation, as Flux's
  decryption drops it);
- every workload pins its images by tag (never `latest`), gives every container requests and
  limits and its main containers readiness and liveness probes, and a Deployment with a
  volume claim uses the Recreate strategy.
Prints `ingress-host: HOST` for every Ingress rule and `service-ip: NAMESPACE/NAME IP PORT…` for
every Service with a fixed cluster IP (stdout), for comparison with homelab.toml's routes.
"""

import json
import pathlib
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

FLUX_KUSTOMIZATION = ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")


def render(repo: pathlib.Path, path: str, findings: list) -> list:
    result = subprocess.run(
        ["kubectl", "kustomize", str(repo / path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        findings.append(f"{path}: kustomize build failed: {result.stderr.strip()}")
        return []
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def check_encrypted(repo: pathlib.Path, cluster: str, findings: list) -> None:
    for file in sorted((repo / cluster).rglob("*.sops.yaml")):
        shown = file.relative_to(repo)
        for doc in yaml.safe_load_all(file.read_text()):
            if not doc:
                continue
            if "sops" not in doc:
                findings.append(f"{shown}: not encrypted with SOPS (no sops metadata)")
                continue
            for field in ("data", "stringData"):
                for key, value in (doc.get(field) or {}).items():
                    if not str(value).startswith("ENC["):
                        findings.append(f"{shown}: {field}.{key} is not encrypted")


def validate(doc: dict, where: str, schemas: pathlib.Path, version: str, findings: list) -> None:
    doc = {k: v for k, v in doc.items() if k != "sops"}
    api_version = doc.get("apiVersion", "")
    kind = doc.get("kind", "")
    name = (doc.get("metadata") or {}).get("name", "?")
    label = f"{where}: {kind}/{name}"
    if "/" in api_version:
        group, version_part = api_version.split("/", 1)
        schema_file = schemas / group / f"{kind.lower()}_{version_part}.json"
        if schema_file.exists():
            schema = json.loads(schema_file.read_text())
            validator = jsonschema.Draft7Validator(schema)
            for error in sorted(validator.iter_errors(doc), key=str):
                path = ".".join(str(p) for p in error.absolute_path)
                findings.append(f"{label}: {path}: {error.message}")
            return
        if "." in group and not group.endswith(".k8s.io"):
            findings.append(f"{label}: no schema for {api_version} {kind} in {schemas}")
            return
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        findings.append(f"{label}: {path}: {error.message}")
    except kubernetes_validate.SchemaNotFoundError as error:
        findings.append(f"{label}: {error}")


WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


def check_workload(doc: dict, label: str, findings: list) -> None:
    spec = doc["spec"]["template"]["spec"]
    init = spec.get("initContainers") or []
    for container in (spec.get("containers") or []) + init:
        name = container.get("name")
        image = container.get("image", "")
        tag = image.split("@")[0].rsplit("/", 1)[-1]
        if ":" not in tag or tag.endswith(":latest"):
            findings.append(f"{label}: container {name}: image {image!r} is not pinned to a tag")
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            if not resources.get(part):
                findings.append(f"{label}: container {name}: no resources.{part}")
        if container in init:
            continue
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                findings.append(f"{label}: container {name}: no {probe}")
    claims = [v for v in spec.get("volumes") or [] if "persistentVolumeClaim" in v]
    strategy = (doc["spec"].get("strategy") or {}).get("type")
    if doc["kind"] == "Deployment" and claims and strategy != "Recreate":
        findings.append(f"{label}: uses a volume claim but not the Recreate strategy")


def main() -> int:
    repo = pathlib.Path(sys.argv[1])
    cluster, schemas, version = sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4]
    findings: list = []
    check_encrypted(repo, cluster, findings)
    root = render(repo, cluster, findings)
    rendered = {cluster: root}
    for doc in root:
        if (doc.get("apiVersion"), doc.get("kind")) == FLUX_KUSTOMIZATION:
            path = doc["spec"]["path"].removeprefix("./")
            rendered[path] = render(repo, path, findings)
    count = 0
    for where, docs in rendered.items():
        for doc in docs:
            validate(doc, where, schemas, version, findings)
            label = f"{where}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            if doc.get("kind") in WORKLOADS:
                check_workload(doc, label, findings)
            if doc.get("kind") == "Ingress":
                for rule in doc["spec"].get("rules") or []:
                    print(f"ingress-host: {rule.get('host')}")
            if doc.get("kind") == "Service" and (doc.get("spec") or {}).get("clusterIP"):
                meta = doc.get("metadata") or {}
                ports = " ".join(str(p.get("port")) for p in doc["spec"].get("ports") or [])
                print(f"service-ip: {meta.get('namespace')}/{meta.get('name')} {doc['spec']['clusterIP']} {ports}")
            count += 1
    for finding in findings:
        print(finding)
    print(f"{count} resources in {len(rendered)} kustomizations, {len(findings)} findings", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
