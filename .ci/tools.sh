# shellcheck shell=bash
# Installs the pinned tools the tests and the demo need, cached in $HOMELAB_TOOLS
# (default ~/.cache/homelab-tools). Sourced by .ci/run and scripts/backup-demo.sh.

tools=${HOMELAB_TOOLS:-$HOME/.cache/homelab-tools}
kopia_version=v0.23.1

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
  if [[ -x $tools/bin/kopia && $(cat "$tools/kopia.version" 2>/dev/null) == "$kopia_version" ]]; then
    return 0
  fi
  command -v go >/dev/null || die "Go is needed to build kopia"
  # `go install module@version` asks the proxy for the module's version list, which it refuses
  # for kopia; downloading the exact version and building inside it does not.
  local module_dir
  module_dir=$(go mod download -json "github.com/kopia/kopia@$kopia_version" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  (cd "$module_dir" && GOFLAGS=-mod=mod GOBIN="$tools/bin" go install .)
  echo "$kopia_version" >"$tools/kopia.version"
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
