#!/usr/bin/env bash
# Restore throughput from the loopback S3 mirror (rclone serve s3, standing in for R2): about
# 1 GiB shaped like the host's data (large photos, small files, a SQLite database), restored by
# `homelab backup restore --from offsite --target` and by bare `kopia snapshot restore` of the
# same snapshot from a client already connected to the mirror, alternately (goal: homelab adds at
# most 10 %). Needs kopia, rclone and python3 on PATH.
# Usage: benches/restore_overhead.sh [MiB, default 1024] [runs, default 3]
set -euo pipefail

size_mib=${1:-1024}
runs=${2:-3}
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup kopia rclone python3

rclone_pid=
cleanup() {
  [[ -n $rclone_pid ]] && kill "$rclone_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
src=$work/src/data
mkdir -p "$src/library" "$src/small" "$work/s3/mirror"
echo "bench password" >"$work/password"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rclone serve s3 --addr "127.0.0.1:$port" --auth-key bench,bench-secret --config /dev/null \
  --dir-cache-time 0s "$work/s3" >/dev/null 2>&1 &
rclone_pid=$!
cat >"$work/r2.env" <<ENV
R2_ENDPOINT=http://127.0.0.1:$port
R2_BUCKET=mirror
AWS_ACCESS_KEY_ID=bench
AWS_SECRET_ACCESS_KEY=bench-secret
ENV
cat >"$work/backup.toml" <<TOML
state-dir = "$work/state"

[repository]
path = "$work/repo"
password-file = "$work/password"
create = true

[offsite]
credentials-file = "$work/r2.env"

[[source]]
name = "data"
path = "$src"

[source.sqlite]
databases = ["db.sqlite3"]
TOML

echo "== $size_mib MiB of data: photos, small files, a SQLite database"
python3 - "$src" "$size_mib" <<'PY'
import os, sqlite3, sys
root, mib = sys.argv[1], int(sys.argv[2])
photos = mib * 80 // 100 // 4          # 4 MiB each: 80 %
for i in range(photos):
    with open(f"{root}/library/IMG_{i:05d}.jpg", "wb") as f:
        f.write(os.urandom(4 << 20))
small = mib * 10 // 100 * 16           # 64 KiB each: 10 %
for i in range(small):
    with open(f"{root}/small/{i:05d}.json", "wb") as f:
        f.write(os.urandom(64 << 10))
db = sqlite3.connect(f"{root}/db.sqlite3")   # the last 10 %
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE ciphers (id INTEGER PRIMARY KEY, data BLOB)")
db.executemany("INSERT INTO ciphers (data) VALUES (?)", ((os.urandom(1000),) for _ in range(mib * 100)))
db.commit()
PY
"$homelab" backup run --config "$work/backup.toml" >/dev/null 2>"$work/log"
"$homelab" backup sync --init --config "$work/backup.toml" >/dev/null 2>>"$work/log"

# A bare kopia client of the mirror, connected once.
export KOPIA_CONFIG_PATH=$work/bare/repository.config KOPIA_PASSWORD="bench password" \
  KOPIA_CHECK_FOR_UPDATES=false KOPIA_LOG_DIR=$work/bare/logs
kopia repository connect s3 --bucket mirror --endpoint "127.0.0.1:$port" --disable-tls \
  --access-key bench --secret-access-key bench-secret --readonly \
  --cache-directory "$work/bare/cache" >/dev/null 2>&1
snapshot=$(kopia snapshot list --all --json 2>/dev/null |
  python3 -c 'import json, sys; print(json.load(sys.stdin)[-1]["id"])')

seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>>"$work/log"
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.2f}')"
}
for ((i = 1; i <= runs; i++)); do
  rm -rf "$work/bare-target" "$work/homelab-target" "$work/bare/cache"
  bare=$(seconds kopia snapshot restore "$snapshot" "$work/bare-target" --no-progress)
  ours=$(seconds "$homelab" backup restore --config "$work/backup.toml" --source data \
    --from offsite --target "$work/homelab-target")
  python3 -c "print(f'run $i: kopia snapshot restore {$bare} s, homelab backup restore {$ours} s, \
overhead {($ours - $bare) / $bare * 100:+.1f} %, {$size_mib / $ours:.0f} MiB/s')"
done
