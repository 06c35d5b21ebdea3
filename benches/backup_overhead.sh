#!/usr/bin/env bash
# Orchestration overhead of `homelab backup run` over a bare `kopia snapshot create` of the same
# sources (no captures): full snapshots into a fresh repository, then unchanged re-snapshots.
# Needs kopia and hyperfine on PATH (bash .ci/run installs kopia; hyperfine is a Debian package).
# Usage: benches/backup_overhead.sh [MiB of data, default 1024]
set -euo pipefail

size_mib=${1:-1024}
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup kopia hyperfine python3

echo "bench password" >"$work/password"
export KOPIA_CONFIG_PATH=$work/state/kopia/repository.config
export KOPIA_PASSWORD="bench password"
export KOPIA_LOG_DIR=$work/state/kopia/logs
export KOPIA_CHECK_FOR_UPDATES=false
export KOPIA_PERSIST_CREDENTIALS_ON_CONNECT=false

# Five sources shaped like the host's: a few large files and many small ones.
python3 - "$work/src" "$size_mib" <<'PY'
import os, sys
root, mib = sys.argv[1], int(sys.argv[2])
names = ["libsql", "immich", "vaultwarden", "tuwunel", "nixos"]
per_source = mib * 1024 * 1024 // len(names)
for name in names:
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "small"), exist_ok=True)
    large = per_source * 9 // 10
    for i in range(8):
        with open(os.path.join(d, f"large{i}.bin"), "wb") as f:
            f.write(os.urandom(large // 8))
    small = per_source - large
    for i in range(max(1, small // 16384)):
        with open(os.path.join(d, "small", f"{i}.txt"), "wb") as f:
            f.write(os.urandom(16384))
PY

sources=()
{
  printf 'state-dir = "%s"\n\n[repository]\npath = "%s"\npassword-file = "%s"\n' \
    "$work/state" "$work/repo" "$work/password"
  for name in libsql immich vaultwarden tuwunel nixos; do
    printf '\n[[source]]\nname = "%s"\npath = "%s"\n' "$name" "$work/src/$name"
  done
} >"$work/backup.toml"
for name in libsql immich vaultwarden tuwunel nixos; do sources+=("$work/src/$name"); done

fresh_repo() {
  rm -rf "$work/repo" "$work/state"
  kopia repository create filesystem --path "$work/repo" \
    --cache-directory "$work/state/kopia/cache" --no-progress >/dev/null 2>&1
  # The retention policy homelab would set, so that neither side pays for setting it.
  kopia policy set --global --keep-latest=10 --keep-hourly=0 --keep-daily=10 \
    --keep-weekly=10 --keep-monthly=10 --keep-annual=0 --no-auto-maintenance >/dev/null 2>&1
}
export -f fresh_repo
export work

bare="kopia snapshot create ${sources[*]} --no-progress --no-auto-maintenance"
ours="$homelab backup run --config $work/backup.toml"

echo "== full snapshots of $size_mib MiB into a fresh repository"
hyperfine --shell=bash --runs 5 --prepare fresh_repo --export-markdown "$work/full.md" \
  -n "kopia snapshot create" "$bare" -n "homelab backup run" "$ours"
echo "== unchanged re-snapshots"
fresh_repo
$ours >/dev/null 2>&1
hyperfine --shell=bash --runs 10 --warmup 1 --export-markdown "$work/incremental.md" \
  -n "kopia snapshot create" "$bare" -n "homelab backup run" "$ours"
cat "$work/full.md" "$work/incremental.md"
