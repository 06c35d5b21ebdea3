#!/usr/bin/env bash
# The main job on data it makes itself: builds homelab (and kopia, if missing), creates sources
# shaped like the host's (a WAL-mode SQLite database, a pg_dumpall-like dump, plain files), then
# runs `homelab backup run`, `status`, `drill` and `verify` against a fresh Kopia repository.
# Usage: bash scripts/backup-demo.sh [WORK_DIR]   (default: a temp dir, removed afterwards)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=.ci/tools.sh
source "$repo/.ci/tools.sh"
command -v kopia >/dev/null || { install_kopia; export PATH="$tools/bin:$PATH"; }
command -v sqlite3 >/dev/null || install_debian_packages sqlite3
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
homelab=$repo/target/release/homelab

if [[ $# -ge 1 ]]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/homelab-demo-XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/srv/vaultwarden/attachments" "$work/srv/immich/library" "$work/etc/nixos"
sqlite3 "$work/srv/vaultwarden/db.sqlite3" \
  "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS ciphers (id INTEGER PRIMARY KEY, data TEXT);
   INSERT INTO ciphers (data) VALUES ('demo secret');" >/dev/null
echo "attachment" >"$work/srv/vaultwarden/attachments/a.bin"
echo "jpeg" >"$work/srv/immich/library/photo.jpg"
echo "{ }" >"$work/etc/nixos/flake.nix"
echo "demo repository password" >"$work/password"
cat >"$work/backup.toml" <<TOML
state-dir = "$work/state"
textfile-dir = "$work/metrics"

[repository]
path = "$work/repository"
password-file = "$work/password"
create = true

[[source]]
name = "vaultwarden"
path = "$work/srv/vaultwarden"
[source.sqlite]
databases = ["db.sqlite3"]

[[source]]
name = "immich"
path = "$work/srv/immich"
[source.dump]
file = "immich.sql"
command = ["sh", "-c", "echo 'CREATE TABLE assets (id int);'; echo '-- PostgreSQL database cluster dump complete'"]
complete-marker = "-- PostgreSQL database cluster dump complete"

[[source]]
name = "nixos"
path = "$work/etc/nixos"
TOML

set -x
"$homelab" backup check-config "$work/backup.toml"
"$homelab" backup run --config "$work/backup.toml"
"$homelab" backup status --config "$work/backup.toml"
"$homelab" backup drill --config "$work/backup.toml"
"$homelab" backup verify --config "$work/backup.toml" --percent 100
cat "$work/metrics/homelab_backup.prom"
