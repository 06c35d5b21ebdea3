#!/usr/bin/env bash
# Writes nixos/flux/install.yaml: the Flux controllers' install manifests of the release
# homelab.toml pins (`flux-version`), as that release's flux CLI emits them with no network
# (`flux install --export`, its embedded manifests). The host applies this file at boot
# (homelab bootstrap --flux-manifests), so booting needs neither GitHub nor the uplink.
# Run it after Renovate moves flux-version (with the new CLI on PATH; .ci/run builds it);
# tests/gitops_rehearsal.rs fails while the file differs from what the pinned CLI emits.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pinned=$(sed -n 's/^flux-version = "\(.*\)"$/\1/p' "$repo/homelab.toml")
[[ -n $pinned ]] || { echo "error: homelab.toml has no flux-version" >&2; exit 1; }
command -v flux >/dev/null || { echo "error: flux is not on PATH (.ci/run builds $pinned)" >&2; exit 1; }
cli=$(flux version --client | awk '{print $2}')
[[ $cli == "$pinned" ]] || {
  echo "error: the flux CLI on PATH is $cli, homelab.toml pins $pinned" >&2
  exit 1
}
out=$repo/nixos/flux/install.yaml
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
flux install --export >"$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out (flux $pinned)"
