#!/usr/bin/env bash
# Benchmark: append+fsync latency, Holdfast against the kernel's ext4, side by side in one run.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench_fsync.sh [--bench PATH] [--count N] [--size BYTES] [--rounds N] [--workdir DIR]

Benchmark (not a test) of fsync latency: COUNT appends of SIZE bytes to one new file, each
followed by fsync, on two fresh 256M ext4 images (mkfs.ext4 defaults) in the same directory:
  holdfast:  holdfast-fsyncbench IMG /f COUNT SIZE   (every fsync commits through the journal)
  kernel:    the same loop in python3 (os.write, os.fsync) on a loop mount of the other image
The rounds alternate the two. Prints the median of each round's total and median latency per
tool, and the ratio holdfast/kernel (< 1: holdfast is faster), then e2fsck -fn on both images.
Run as root (loop mounts). WORKDIR must be on the disk under test, not tmpfs.

Options:
  --bench PATH    holdfast-fsyncbench binary (default: .build/release/holdfast-fsyncbench)
  --count N       appends per run (default: 1000)
  --size BYTES    bytes per append (default: 4096)
  --rounds N      runs per tool (default: 3)
  --workdir DIR   where the images go (default: /var/tmp/holdfast-fsync-bench)
USAGE
}

HERE="$(cd "$(dirname "$0")" && pwd)"
BENCH="$HERE/../.build/release/holdfast-fsyncbench"
COUNT=1000
SIZE=4096
ROUNDS=3
WORK=/var/tmp/holdfast-fsync-bench
while [ $# -gt 0 ]; do
    case "$1" in
        --bench) BENCH="$2"; shift 2 ;;
        --count) COUNT="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --workdir) WORK="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_fsync.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -x "$BENCH" ] || { echo "bench_fsync.sh: no benchmark binary at $BENCH (make release)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench_fsync.sh: run as root (the kernel's side needs a loop mount)" >&2; exit 2; }
mkdir -p "$WORK/mnt"
if [ "$(stat -f -c %T "$WORK")" = tmpfs ]; then
    echo "bench_fsync.sh: $WORK is on tmpfs, where fsync costs nothing; give a directory on disk" >&2
    exit 2
fi

kernel_loop() { # mountpoint -> the same output line as holdfast-fsyncbench
    python3 - "$1/f" "$COUNT" "$SIZE" <<'PY'
import os, sys, time
path, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes((i * 131 + 7) & 0xFF for i in range(size))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
lat = []
start = time.monotonic_ns()
for i in range(count):
    t = time.monotonic_ns()
    os.pwrite(fd, data, i * size)
    os.fsync(fd)
    lat.append(time.monotonic_ns() - t)
total = time.monotonic_ns() - start
os.close(fd)
lat.sort()
ms = lambda ns: "%.3f" % (ns / 1e6)
print("total_ms=%s median_ms=%s p99_ms=%s max_ms=%s" % (ms(total), ms(lat[count // 2]), ms(lat[min(count - 1, count * 99 // 100)]), ms(lat[-1])))
PY
}

field() { sed -E "s/.*$1=([0-9.]+).*/\\1/" <<<"$2"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ht=(); hm=(); kt=(); km=()
for ((r = 0; r < ROUNDS; r++)); do
    rm -f "$WORK/h.img" "$WORK/k.img"
    truncate -s 256M "$WORK/h.img" "$WORK/k.img"
    mkfs.ext4 -q -F "$WORK/h.img"
    mkfs.ext4 -q -F "$WORK/k.img"
    sync
    out=$("$BENCH" "$WORK/h.img" /f "$COUNT" "$SIZE")
    echo "round $r holdfast: $out"
    ht+=("$(field total_ms "$out")"); hm+=("$(field median_ms "$out")")
    mount -o loop "$WORK/k.img" "$WORK/mnt"
    out=$(kernel_loop "$WORK/mnt")
    umount "$WORK/mnt"
    echo "round $r kernel:   $out"
    kt+=("$(field total_ms "$out")"); km+=("$(field median_ms "$out")")
done
HT=$(median "${ht[@]}"); HM=$(median "${hm[@]}"); KT=$(median "${kt[@]}"); KM=$(median "${km[@]}")
printf 'holdfast: total %s ms, median append+fsync %s ms\n' "$HT" "$HM"
printf 'kernel:   total %s ms, median append+fsync %s ms\n' "$KT" "$KM"
printf 'ratio holdfast/kernel: total %.2fx, median %.2fx\n' "$(echo "$HT / $KT" | bc -l)" "$(echo "$HM / $KM" | bc -l)"
for img in h k; do
    if e2fsck -fn "$WORK/$img.img" >/dev/null 2>&1; then echo "$img.img: e2fsck clean"; else echo "$img.img: e2fsck FOUND PROBLEMS"; fi
done
rm -f "$WORK/h.img" "$WORK/k.img"
