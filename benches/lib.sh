# shellcheck shell=bash
# Sourced by every benchmark: checks the tools it needs, builds homelab in release mode, and makes
# a work folder that is removed on exit. Sets repo_root, homelab and work.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

bench_setup() { # $@: programs that must be on PATH
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not on PATH" >&2; exit 1; }
  done
  cargo build --release --quiet --manifest-path "$repo_root/Cargo.toml"
  # shellcheck disable=SC2034 # used by the benchmark that sources this file
  homelab=${CARGO_TARGET_DIR:-$repo_root/target}/release/homelab
  work=$(mktemp -d "${TMPDIR:-/tmp}/homelab-bench-XXXXXX")
  trap 'rm -rf "$work"' EXIT
}
