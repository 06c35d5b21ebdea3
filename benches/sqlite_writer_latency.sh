#!/usr/bin/env bash
# Writer latency while `homelab backup run` copies a ~1 GiB WAL-mode SQLite database with the
# online backup API: p99 with and without the capture, and failed writes (goal: p99 within 2x,
# zero failures). Needs kopia and python3 on PATH.
# Usage: benches/sqlite_writer_latency.sh [MiB, default 1024]
set -euo pipefail

size_mib=${1:-1024}
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
writer=$repo_root/crates/homelab/tests/support/bank_writer.py
bench_setup kopia python3

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

echo "== building a $size_mib MiB database"
python3 - "$db" "$size_mib" <<'PY'
import os, sqlite3, sys
path, mib = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(path)
con.execute("PRAGMA journal_mode=WAL")
con.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, memo BLOB)")
rows = mib * 1024  # ~1 KiB each
con.executemany("INSERT INTO accounts VALUES (?, 1000, ?)", ((i, os.urandom(1000)) for i in range(1, rows + 1)))
con.commit()
con.close()
PY

run_writer() { # $1: stats file; writes until $1.stop exists
  python3 "$writer" "$db" "$1.stop" "$1" &
  while [[ ! -e $1.stop.ready ]]; do sleep 0.05; done
}

echo "== baseline: 15 s of writes, no capture"
run_writer "$work/baseline.json"
sleep 15
touch "$work/baseline.json.stop"
wait

echo "== writes during homelab backup run"
run_writer "$work/capture.json"
sleep 2
start=$(date +%s.%N)
"$homelab" backup run --config "$work/backup.toml" >/dev/null 2>"$work/run.log" || {
  cat "$work/run.log" >&2
  exit 1
}
end=$(date +%s.%N)
touch "$work/capture.json.stop"
wait

python3 - "$work/baseline.json" "$work/capture.json" "$start" "$end" "$size_mib" <<'PY'
import json, sys
base = json.load(open(sys.argv[1]))
cap = json.load(open(sys.argv[2]))
start, end, mib = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]
during = [l for l, t in zip(cap["latencies_ms"], cap["started_at"]) if start <= t <= end]
b99, c99 = pct(base["latencies_ms"], 99), pct(during, 99)
print(f"database: {mib} MiB; backup run took {end - start:.1f} s")
print(f"baseline: {base['writes']} writes, p50 {pct(base['latencies_ms'], 50):.2f} ms, p99 {b99:.2f} ms, failures {base['failures']}")
print(f"capture:  {len(during)} writes, p50 {pct(during, 50):.2f} ms, p99 {c99:.2f} ms, failures {cap['failures']}")
print(f"p99 ratio: {c99 / b99:.2f} (goal <= 2.0); failed writes: {cap['failures']} (goal 0)")
PY
