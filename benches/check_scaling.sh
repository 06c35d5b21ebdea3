#!/usr/bin/env bash
# How `homelab check` grows with its input: a copy of this repository with one extra manifest in
# the libsql app, (a) one ConfigMap whose data mapping has as many keys as fit in SIZE, and
# (b) as many small ConfigMaps as fit in SIZE in one file, at 1, 4 and 16 MiB (or the sizes
# given). Prints wall time and peak memory (GNU time) per case. Numbers go in docs/check.md.
# Usage: benches/check_scaling.sh [MIB...]
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup python3 /usr/bin/time
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1 4 16)

app=flux/clusters/azalab-0/manifests/apps/libsql
printf '%-14s %8s %10s %12s\n' shape MiB seconds "peak KiB"
for shape in one-mapping many-documents; do
  for mib in "${sizes[@]}"; do
    copy=$work/$shape-$mib
    mkdir -p "$copy"
    cp -r "$repo_root/flux" "$repo_root/homelab.toml" "$repo_root/.sops.yaml" "$copy/"
    python3 - "$copy/$app/generated.yaml" "$shape" "$mib" <<'PY'
import sys
path, shape, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
limit = mib << 20
with open(path, "w") as out:
    written = 0
    if shape == "one-mapping":
        head = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: generated\ndata:\n"
        out.write(head)
        written = len(head)
        i = 0
        while written < limit:
            line = f"  key-{i:09d}: value-{i:09d}\n"
            out.write(line)
            written += len(line)
            i += 1
    else:
        i = 0
        while written < limit:
            doc = (f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: generated-{i:09d}\n"
                   f"data:\n  key: value-{i:09d}\n")
            out.write(doc)
            written += len(doc)
            i += 1
PY
    sed -i 's/^resources:$/resources:\n  - generated.yaml/' "$copy/$app/kustomization.yaml"
    /usr/bin/time -f '%e %M' -o "$work/time" "$homelab" check "$copy" >/dev/null 2>&1 || true
    # GNU time writes "Command exited with non-zero status 1" first when there are findings
    # (a mapping over 1 MiB is one: schema/too-large).
    read -r seconds kib < <(tail -n 1 "$work/time")
    printf '%-14s %8s %10s %12s\n' "$shape" "$mib" "$seconds" "$kib"
  done
done
