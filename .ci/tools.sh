# shellcheck shell=bash
# Installs the pinned tools the tests and the demo need, cached in $HOMELAB_TOOLS
# (default ~/.cache/homelab-tools). Sourced by .ci/run and scripts/backup-demo.sh.

tools=${HOMELAB_TOOLS:-$HOME/.cache/homelab-tools}
kopia_version=v0.23.1
# The GitOps rehearsal (crates/homelab/tests/gitops_rehearsal.rs) runs these, built from Go
# modules. Kubernetes 1.35 is the k3s minor of nixpkgs 26.05, the release the host is moving to;
# v1.35.8 is the newest 1.35 patch the Go proxy serves.
kubernetes_version=v1.35.8
etcd_version=v3.6.16
# Flux 2.9.5, not 2.8: the Go proxy refuses every kustomize-controller v1.8.x (Flux 2.8's) and
# the checksum database has no flux2 v2.8.x. The controllers' versions are the ones this flux2
# release's manifests name (manifests/bases/*/kustomization.yaml), read from there, not repeated.
flux_version=v2.9.5
# flux2 v2.9.5 names notification-controller v1.9.4, which the Go proxy refuses; its manifests
# (CRDs, Deployment; the controller itself never runs here) come from the nearest it serves.
# Revisit with every flux_version bump: the one flux2 names may be served by then.
flux_notification_controller_version=v1.9.3
# k3s registers its HelmChart and HelmChartConfig CRDs from k3s-io/helm-controller's pkg/crds
# (the rehearsal applies them, then the HelmChartConfig nixos/modules/k3s.nix writes). k3s 1.35
# is on helm-controller v0.17.x (k8s 0.35 libraries; rancher/rke2#10812 moved release-1.35 to
# v0.17.5); v0.17.7 is the version k3s v1.36.4+k3s1 and k3s main vendor, the nearest to
# v1.35.x+k3s1 whose go.mod could be read (the proxy refuses every k3s version). The proxy
# serves v0.17.7 and v0.17.9, whose CRDs are the same but for a controller-gen annotation.
# Revisit with the host's k3s: `git show v1.35.N+k3s1:go.mod | grep helm-controller`.
k3s_helm_controller_version=v0.17.7

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

install_debian_packages() {
  say "Debian packages: $*"
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing Debian packages (${missing[*]}) and not root to install them"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_kopia() {
  say "kopia $kopia_version"
  mkdir -p "$tools/bin"
  # The cache key names the stamp too: a kopia built before it was stamped is rebuilt.
  local key="$kopia_version stamped"
  if [[ -x $tools/bin/kopia && $(cat "$tools/kopia.version" 2>/dev/null) == "$key" ]]; then
    return 0
  fi
  command -v go >/dev/null || die "Go is needed to build kopia"
  # `go install module@version` asks the proxy for the module's version list, which it refuses
  # for kopia; downloading the exact version and building inside it does not.
  local module_json module_dir commit
  module_json=$(go mod download -json "github.com/kopia/kopia@$kopia_version")
  module_dir=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])' <<<"$module_json")
  commit=$(python3 -c 'import json, sys; print(json.load(sys.stdin).get("Origin", {}).get("Hash", "go-module"))' <<<"$module_json")
  # Stamped as upstream's release build stamps it (its .goreleaser.yml ldflags), so that
  # `kopia --version` reports the pinned release; the tests check it does.
  (cd "$module_dir" && GOFLAGS=-mod=mod GOBIN="$tools/bin" go install -ldflags "\
    -X github.com/kopia/kopia/repo.BuildVersion=${kopia_version#v} \
    -X github.com/kopia/kopia/repo.BuildInfo=$commit \
    -X github.com/kopia/kopia/repo.BuildGitHubRepo=kopia/kopia" .)
  echo "$key" >"$tools/kopia.version"
}

install_cargo_tool() { # $1: crate, $2: version
  say "$1 $2"
  if [[ -x $tools/bin/$1 && $(cat "$tools/$1.version" 2>/dev/null) == "$2" ]]; then
    return 0
  fi
  cargo install --quiet --locked --root "$tools" "$1" --version "$2"
  echo "$2" >"$tools/$1.version"
}

install_npm_tool() { # $1: package, $2: version; binaries land in $tools/npm/node_modules/.bin
  say "$1 $2 (npm)"
  if [[ $(cat "$tools/npm/$1.version" 2>/dev/null) == "$2" ]]; then
    return 0
  fi
  command -v npm >/dev/null || die "npm is needed to install $1"
  mkdir -p "$tools/npm"
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" "$1@$2"
  echo "$2" >"$tools/npm/$1.version"
}

install_python_tools() { # $1: requirements file
  say "Python tools ($1)"
  [[ -x $tools/venv/bin/pip ]] || python3 -m venv "$tools/venv"
  if ! cmp -s "$1" "$tools/venv/requirements.txt"; then
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r "$1"
    cp "$1" "$tools/venv/requirements.txt"
  fi
}

# A writable copy of one exact module version (the module cache is read-only), in $2.
module_copy() { # $1: module@version, $2: destination
  local module_dir
  module_dir=$(go mod download -json "$1" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))') ||
    die "cannot download the Go module $1"
  rm -rf "$2"
  mkdir -p "$(dirname "$2")"
  cp -r "$module_dir" "$2"
  chmod -R u+w "$2"
}

# go.mod `replace`s that point at sibling folders of the upstream repository, which a module
# download does not contain.
local_replaces() { # in the current folder
  go mod edit -json | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("."):
        print(r["Old"]["Path"], r["New"]["Path"])'
}

version_is() { [[ $(cat "$tools/$1.version" 2>/dev/null) == "$2" ]]; }

install_etcd() {
  say "etcd $etcd_version"
  version_is etcd "$etcd_version" && [[ -x $tools/bin/etcd ]] && return 0
  local src=$tools/src/etcd old new
  module_copy "go.etcd.io/etcd/server/v3@$etcd_version" "$src"
  (
    cd "$src"
    while read -r old new; do
      if [[ $new == ../* ]]; then go mod edit -dropreplace="$old"; fi
    done < <(local_replaces)
    GOWORK=off GOFLAGS=-mod=mod go build -o "$tools/bin/etcd" .
  ) || die "building etcd $etcd_version failed"
  rm -rf "$src"
  echo "$etcd_version" >"$tools/etcd.version"
}

install_kube_apiserver() {
  say "kube-apiserver $kubernetes_version"
  version_is kube-apiserver "$kubernetes_version" && [[ -x $tools/bin/kube-apiserver ]] && return 0
  local src=$tools/src/kubernetes old new
  module_copy "k8s.io/kubernetes@$kubernetes_version" "$src"
  (
    cd "$src"
    # The staging folders are published as k8s.io/<name> v0.<minor>.<patch>.
    while read -r old new; do
      if [[ $new == ./staging/* ]]; then
        go mod edit -replace="$old=$old@v0.${kubernetes_version#v1.}"
      fi
    done < <(local_replaces)
    GOWORK=off GOFLAGS=-mod=mod go build -o "$tools/bin/kube-apiserver" ./cmd/kube-apiserver
  ) || die "building kube-apiserver $kubernetes_version failed"
  rm -rf "$src"
  echo "$kubernetes_version" >"$tools/kube-apiserver.version"
}

# The version of a Flux component that flux2 $flux_version installs (its manifests name them).
flux_component_version() { # $1: flux2 source folder, $2: component
  [[ $2 == notification-controller ]] && { echo "$flux_notification_controller_version"; return; }
  sed -n "s|.*github.com/fluxcd/$2/releases/download/\(v[^/]*\)/.*|\1|p" \
    "$1/manifests/bases/$2/kustomization.yaml" | head -n 1
}

# The flux CLI, and kustomize-controller at the version it installs. The CLI embeds the
# controllers' manifests, which upstream bundles from GitHub release files; those files are
# `kustomize build` of each controller module's config/crd and config/manager, rebuilt here from
# the modules. Only the default components: the extras' modules are refused by the proxy.
install_flux() {
  say "flux $flux_version, kustomize-controller"
  # Both pins shape the build (the embedded manifests): either one changing rebuilds it.
  local stamp="$flux_version $flux_notification_controller_version"
  version_is flux "$stamp" && [[ -x $tools/bin/flux && -x $tools/bin/kustomize-controller ]] &&
    return 0
  command -v kubectl >/dev/null || die "kubectl (kustomize) is needed to bundle Flux's manifests"
  local src=$tools/src/flux2 out component version module base old new
  module_copy "github.com/fluxcd/flux2/v2@$flux_version" "$src"
  out=$src/cmd/flux/manifests
  mkdir -p "$out"
  for component in source-controller kustomize-controller helm-controller notification-controller; do
    version=$(flux_component_version "$src" "$component")
    [[ -n $version ]] || die "no $component version in flux2 $flux_version's manifests"
    module=$tools/src/$component
    module_copy "github.com/fluxcd/$component@$version" "$module"
    base=$src/manifests/bases/$component
    kubectl kustomize "$module/config/crd" >"$base/$component.crds.yaml"
    kubectl kustomize "$module/config/manager" >"$base/$component.deployment.yaml"
    sed -i "s|https://github.com/fluxcd/$component/releases/download/[^/]*/||" "$base/kustomization.yaml"
    kubectl kustomize "$base" >"$out/$component.yaml"
    if [[ $component == kustomize-controller ]]; then
      (
        cd "$module"
        while read -r old new; do
          go mod edit -dropreplace="$old"
        done < <(local_replaces)
        GOWORK=off GOFLAGS=-mod=mod go build -o "$tools/bin/kustomize-controller" .
      ) || die "building kustomize-controller $version failed"
    fi
    rm -rf "$module"
  done
  kubectl kustomize "$src/manifests/rbac" >"$out/rbac.yaml"
  kubectl kustomize "$src/manifests/policies" >"$out/policies.yaml"
  (
    cd "$src"
    GOWORK=off GOFLAGS=-mod=mod go build -ldflags "-X main.VERSION=${flux_version#v}" \
      -o "$tools/bin/flux" ./cmd/flux
  ) || die "building flux $flux_version failed"
  rm -rf "$src"
  echo "$stamp" >"$tools/flux.version"
}

# k3s-crds: prints the CRDs k3s registers from helm-controller (.ci/k3s-crds/main.go, built
# against $k3s_helm_controller_version), and their YAML in $tools/k3s-crds.yaml.
install_k3s_crds() {
  say "k3s CRDs (helm-controller $k3s_helm_controller_version)"
  local src=$tools/src/k3s-crds here stamp
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  # The program's source is part of the cache key: a changed main.go is rebuilt.
  stamp="$k3s_helm_controller_version $(sha256sum <"$here/k3s-crds/main.go" | cut -c1-16)"
  version_is k3s-crds "$stamp" && [[ -x $tools/bin/k3s-crds && -s $tools/k3s-crds.yaml ]] &&
    return 0
  command -v go >/dev/null || die "Go is needed to build k3s-crds"
  rm -rf "$src"
  mkdir -p "$src" "$tools/bin"
  cp "$here/k3s-crds/main.go" "$src/"
  (
    cd "$src"
    export GOWORK=off GOFLAGS=-mod=mod
    go mod init homelab.local/k3s-crds &&
      go get "github.com/k3s-io/helm-controller@$k3s_helm_controller_version" &&
      go build -o "$tools/bin/k3s-crds" .
  ) || die "building k3s-crds against helm-controller $k3s_helm_controller_version failed"
  "$tools/bin/k3s-crds" >"$tools/k3s-crds.yaml" || die "k3s-crds printed no CRDs"
  grep -q '^  name: helmchartconfigs.helm.cattle.io$' "$tools/k3s-crds.yaml" ||
    die "k3s-crds: no HelmChartConfig CRD in helm-controller $k3s_helm_controller_version"
  rm -rf "$src"
  echo "$stamp" >"$tools/k3s-crds.version"
}
