#!/usr/bin/env bash
# `homelab check` on this repository against the pipeline people use for the same job:
# `kustomize build` of every Flux path piped into `kubeconform -strict` with local schemas (the
# same Kubernetes 1.35 strict schemas and ../shared CRD schemas; Secrets skipped, as Flux's own
# example validate.sh does, because their `sops:` block is not in the schema). Both sides run
# RUNS times, one after the other, on the same machine; prints the medians, the ratio, and
# homelab's peak memory. Needs kustomize and kubeconform on PATH (go install, versions below)
# and GNU time. Usage: benches/check_vs_kubeconform.sh [RUNS]
#   go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.0
#   go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
runs=${1:-20}
bench_setup kustomize kubeconform python3 /usr/bin/time

cluster=flux/clusters/$(sed -n 's/^hostname = "\(.*\)"/\1/p' "$repo_root/homelab.toml")
mapfile -t paths < <(
  {
    echo "$cluster"
    grep -h '^  path: ' "$repo_root/$cluster"/*.yaml | awk '{print $2}' | sed 's|^\./||'
  } | sort -u
)

# kubernetes-validate's strict schemas carry an https `$id` and refer to /api/_definitions.json;
# kubeconform resolves references against the `$id`, so drop it and point them at the file's
# own folder.
mkdir -p "$work/schemas"
python3 - "$work/schemas" <<'PY'
import json, pathlib, sys
import kubernetes_validate
source = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema/v1.35.0-local-strict"
for file in source.glob("*.json"):
    text = file.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
    schema = json.loads(text)
    schema.pop("$id", None)
    (pathlib.Path(sys.argv[1]) / file.name).write_text(json.dumps(schema))
PY
crds=$repo_root/../shared/schemas/crds

pipeline() {
  local path
  for path in "${paths[@]}"; do
    kustomize build "$repo_root/$path" |
      kubeconform -strict -summary=false -skip Secret \
        -schema-location "$work/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
        -schema-location "$crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
  done
}

median_ms() { # runs "$@" $runs times; prints the median wall time in ms
  local i start times=()
  for ((i = 0; i < runs; i++)); do
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1
    times+=($((($(date +%s%N) - start) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f\n", m/1000}'
}

pipeline >/dev/null || { echo "error: the kustomize | kubeconform pipeline fails on this tree" >&2; exit 1; }
"$homelab" check "$repo_root" >/dev/null 2>&1 || { echo "error: homelab check fails on this tree" >&2; exit 1; }

check_ms=$(median_ms "$homelab" check "$repo_root")
pipeline_ms=$(median_ms pipeline)
peak_kb=$(/usr/bin/time -f %M "$homelab" check "$repo_root" 2>&1 >/dev/null | tail -1)
echo "paths: ${#paths[@]}, runs: $runs"
echo "homelab check:              median ${check_ms} ms, peak RSS $((peak_kb / 1024)) MiB"
echo "kustomize | kubeconform:    median ${pipeline_ms} ms"
awk -v a="$pipeline_ms" -v b="$check_ms" 'BEGIN {printf "homelab check is %.0fx faster\n", a / b}'
