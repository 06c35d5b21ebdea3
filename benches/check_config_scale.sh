#!/usr/bin/env bash
# `homelab backup check-config` on configurations with many sources (1 000 to 16 000): the
# checks that compare sources with each other must stay near-linear.
# Usage: benches/check_config_scale.sh [largest count, default 16000]
set -euo pipefail

largest=${1:-16000}
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup python3

for ((count = largest / 16; count <= largest; count *= 2)); do
  file=$work/sources-$count.toml
  {
    printf 'state-dir = "/var/lib/homelab/backup"\n\n[repository]\n'
    printf 'path = "/srv/kopia/repository"\npassword-file = "/run/secrets/kopia"\n'
    for ((i = 0; i < count; i++)); do
      printf '\n[[source]]\nname = "s%d"\npath = "/srv/data/%d/app"\n' "$i" "$i"
      printf '[source.sqlite]\ndatabases = ["db.sqlite3"]\n'
    done
  } >"$file"
  start=$(date +%s.%N)
  "$homelab" backup check-config "$file" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'{$count:>6} sources: {$end - $start:.2f} s')"
done
