#!/usr/bin/env bash
# What the full integrity_check on every SQLite copy costs: `homelab backup run` of a ~1 GiB
# WAL-mode database with an index (copy + integrity_check + snapshot), next to `PRAGMA
# quick_check` and `PRAGMA integrity_check` of the same database timed alone with sqlite3.
# Needs kopia, python3 and sqlite3 on PATH.
# Usage: benches/sqlite_capture_checks.sh [MiB, default 1024] [runs, default 3]
set -euo pipefail

size_mib=${1:-1024}
runs=${2:-3}
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup kopia python3 sqlite3

mkdir -p "$work/src/vaultwarden"
db=$work/src/vaultwarden/db.sqlite3
echo "bench password" >"$work/password"
cat >"$work/backup.toml" <<TOML
state-dir = "$work/state"

[repository]
path = "$work/repo"
password-file = "$work/password"
create = true

[[source]]
name = "vaultwarden"
path = "$work/src/vaultwarden"

[source.sqlite]
databases = ["db.sqlite3"]
TOML

echo "== building a $size_mib MiB database with an index"
python3 - "$db" "$size_mib" <<'PY'
import os, sqlite3, sys
path, mib = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(path)
con.execute("PRAGMA journal_mode=WAL")
con.execute("CREATE TABLE ciphers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, data BLOB)")
rows = mib * 1024  # ~1 KiB each
con.executemany("INSERT INTO ciphers VALUES (?, ?, ?)",
                ((i, f"item-{i:09d}", os.urandom(950)) for i in range(1, rows + 1)))
con.execute("CREATE INDEX ciphers_name ON ciphers (name)")
con.commit()
con.close()
PY

seconds() { # runs "$@" once, prints the wall time in seconds
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.2f}')"
}

for ((i = 1; i <= runs; i++)); do
  quick=$(seconds sqlite3 "$db" "PRAGMA quick_check")
  full=$(seconds sqlite3 "$db" "PRAGMA integrity_check")
  run=$(seconds "$homelab" backup run --config "$work/backup.toml")
  echo "run $i: quick_check ${quick}s  integrity_check ${full}s  homelab backup run ${run}s"
done
