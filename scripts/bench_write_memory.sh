#!/usr/bin/env bash
# Measurement (not a test): peak RSS while writing 4 GiB of data and 200,000 files under --memory 32M.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench_write_memory.sh [--holdfast PATH] [--memory SIZE] [--workdir DIR]

Writes, through holdfast with a fixed memory budget, and reports peak RSS beside the budget:
  1. mkfs --from TREE: a tree of 200,000 small files (1-3 KiB, in 2,000 directories)
     and four 1 GiB files, 4.6 GiB in all, into a 12 GiB image;
  2. write: 4 GiB streamed from standard input into one file of a fresh image.
Each image is then checked with e2fsck -fn, and one 1 GiB file is compared with its source.
The runtime floor (what holdfast takes before it caches anything) is `holdfast sites`.

Options:
  --holdfast PATH  holdfast binary (default: .build/release/holdfast here)
  --memory SIZE    the budget (default: 32M)
  --workdir DIR    tree and images (default: /tmp/holdfast-write-memory; ~22 GiB of disk)
USAGE
}

HERE="$(cd "$(dirname "$0")" && pwd)"
HOLDFAST="$HERE/../.build/release/holdfast"
MEMORY=32M
WORK=/tmp/holdfast-write-memory
while [ $# -gt 0 ]; do
    case "$1" in
        --holdfast) HOLDFAST="$2"; shift 2 ;;
        --memory) MEMORY="$2"; shift 2 ;;
        --workdir) WORK="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_write_memory.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -x "$HOLDFAST" ] || { echo "bench_write_memory.sh: no holdfast binary at $HOLDFAST (make release)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench_write_memory.sh: /usr/bin/time not found (apt install time)" >&2; exit 2; }
mkdir -p "$WORK"
tree="$WORK/tree"
if [ ! -f "$tree/.done" ]; then
    echo "building the tree in $tree (once) ..."
    rm -rf "$tree"
    python3 - "$tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(5)
for d in range(2000):
    path = os.path.join(root, "d%04d" % d)
    os.makedirs(path)
    for f in range(100):
        with open(os.path.join(path, "f%03d" % f), "wb") as out:
            out.write(rng.randbytes(rng.randint(1024, 3072)))
block = rng.randbytes(1 << 20)
for i in range(4):
    with open(os.path.join(root, "big%d" % i), "wb") as out:
        for j in range(1024):
            out.write(block[j % 251:] + block[:j % 251])
PY
    touch "$tree/.done"
fi

floor=$(/usr/bin/time -f %M "$HOLDFAST" sites 2>&1 >/dev/null | tail -1)
echo "runtime floor (holdfast sites): $floor KiB"

run() { # label, command... : prints peak RSS and the budget's peak
    local label="$1"; shift
    local log="$WORK/$label.log"
    /usr/bin/time -f "rss %M" "$@" --memory "$MEMORY" --stats >"$log.out" 2>"$log" || { echo "$label failed:"; tail -5 "$log"; exit 1; }
    local rss peak limit
    rss=$(grep '^rss ' "$log" | awk '{print $2}')
    peak=$(grep -o 'peak=[0-9]*' "$log" | head -1 | cut -d= -f2)
    limit=$(grep -o 'limit=[0-9]*' "$log" | head -1 | cut -d= -f2)
    printf '%-10s peak RSS %7d KiB   budget peak %6.1f MiB of %6.1f MiB   RSS - floor %6.1f MiB\n' \
        "$label" "$rss" "$(echo "$peak / 1048576" | bc -l)" "$(echo "$limit / 1048576" | bc -l)" "$(echo "($rss - $floor) / 1024" | bc -l)"
}

rm -f "$WORK/a.img" "$WORK/b.img"
s=$(date +%s)
run mkfs "$HOLDFAST" mkfs "$WORK/a.img" 12G --from "$tree"
echo "  ($(( $(date +%s) - s )) s) e2fsck -fn: $(e2fsck -fn "$WORK/a.img" >/dev/null 2>&1 && echo clean || echo PROBLEMS)"
cmp <("$HOLDFAST" cat "$WORK/a.img" /big2) "$tree/big2" && echo "  /big2 reads back identical"
"$HOLDFAST" mkfs "$WORK/b.img" 6G >/dev/null
s=$(date +%s)
stream() { cat "$tree/big0" "$tree/big1" "$tree/big2" "$tree/big3" | head -c 4G; }
export -f stream; export tree
run write bash -c "stream | \"\$0\" write \"\$1\" /stream \"\${@:2}\"" "$HOLDFAST" "$WORK/b.img"
echo "  ($(( $(date +%s) - s )) s) e2fsck -fn: $(e2fsck -fn "$WORK/b.img" >/dev/null 2>&1 && echo clean || echo PROBLEMS)"
cmp <("$HOLDFAST" cat "$WORK/b.img" /stream) <(stream) && echo "  /stream reads back identical (4 GiB)"
