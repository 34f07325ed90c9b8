#!/usr/bin/env bash
# Benchmark (not a test): `holdfast ls -l` against `debugfs -R 'ls -l'` on a directory of
# 20,000 entries, side by side in one run (make bench).
#   scripts/bench_ls.sh [--holdfast PATH] [--entries N] [--runs N]
# The tree and image live on /dev/shm (tmpfs), so the disk's noise stays out. hyperfine runs
# both, warm, alternating; the table gives mean wall time and CPU time (user + sys, steadier on
# a shared machine) and the ratio debugfs/holdfast (> 1: holdfast is faster). Both listings are
# checked to hold every entry.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
holdfast=$repo/.build/release/holdfast
entries=20000
runs=30
while [ $# -gt 0 ]; do
  case $1 in
    --holdfast) holdfast=$2; shift 2 ;;
    --entries) entries=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_ls.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
[ -x "$holdfast" ] || { echo "bench_ls.sh: $holdfast is missing (make release)" >&2; exit 1; }
command -v hyperfine >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq hyperfine >/dev/null; } \
  || { echo "bench_ls.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }

work=/dev/shm/holdfast-bench-ls
image=$work/ls-$entries.img
if [ ! -f "$image" ]; then
  rm -rf "$work" && mkdir -p "$work/tree/dir"
  python3 - "$work/tree/dir" "$entries" <<'PY'
import os, sys
top, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    path = os.path.join(top, f"file-{i:06d}.dat")
    with open(path, "wb") as f:
        f.write(b"x" * (i % 4096))
    if i % 10 == 0:
        os.symlink(f"file-{i:06d}.dat", os.path.join(top, f"link-{i:06d}"))
PY
  mkfs.ext4 -q -F -b 4096 -d "$work/tree" "$image" 512M >/dev/null
  rm -rf "$work/tree"
fi

h=$("$holdfast" ls -l "$image" /dir | wc -l)
d=$(debugfs -R 'ls -l /dir' "$image" 2>/dev/null | grep -c -v '^ *$')
echo "entries listed: holdfast $h (without . and ..), debugfs $d (with . and ..)"
[ "$h" -ge "$entries" ] && [ "$d" -ge "$entries" ] || { echo "bench_ls.sh: a listing is short" >&2; exit 1; }

json=$work/result.json
hyperfine -N --warmup 3 --runs "$runs" --export-json "$json" \
  -n holdfast "$holdfast ls -l $image /dir" \
  -n debugfs "debugfs -R 'ls -l /dir' $image" >/dev/null 2>&1
python3 - "$json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
print(f"{'tool':<10} {'wall ms':>9} {'± ms':>7} {'cpu ms':>8}")
for name in ("holdfast", "debugfs"):
    x = r[name]
    print(f"{name:<10} {x['mean']*1e3:9.1f} {x['stddev']*1e3:7.1f} {(x['user']+x['system'])*1e3:8.1f}")
h, d = r["holdfast"], r["debugfs"]
print(f"debugfs/holdfast: wall {d['mean']/h['mean']:.2f}x, cpu {(d['user']+d['system'])/(h['user']+h['system']):.2f}x")
PY
