#!/usr/bin/env bash
# Measurement (not a test): writeback through the page cache against the kernel, and a put of
# 1.3 GB through a 16 MiB budget, with and without injected writeback allocation failures.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench_writeback.sh [--holdfast PATH] [--workdir DIR] [--seeds "1 2 3"] [--skip-put] [--skip-stream]

  1. stream: 2 GiB written sequentially into one file of a fresh 3 GiB image, side by side:
       holdfast write IMG /big --memory 16M  < data   (ends with close: written and fdatasync'ed)
       holdfast write IMG /big --memory 256M < data
       kernel: cp data to a loop mount of the same image, then sync and umount (timed)
     Prints seconds, MB/s, peak RSS and the ratio to the kernel's time.
  2. put: three 400 MB files and 5,000 small ones (1.3 GB) put into a fresh image with
     --memory 16M: peak RSS, e2fsck -fn, and the kernel reads back every file exactly
     (loop mount, cmp); then the same with --inject category=writeback,probability=0.3,seed=S
     for each seed: it must still succeed with exact data, and --stats shows the failures
     injected at writeback.vector and the retries.

Options:
  --holdfast PATH  holdfast binary (default: .build/release/holdfast here)
  --workdir DIR    data and images (default: /tmp/holdfast-writeback; ~8 GiB of disk)
  --seeds LIST     injection seeds (default: "1 2 3")
USAGE
}

HERE="$(cd "$(dirname "$0")" && pwd)"
HOLDFAST="$HERE/../.build/release/holdfast"
WORK=/tmp/holdfast-writeback
SEEDS="1 2 3"
PUT=1
STREAM=1
while [ $# -gt 0 ]; do
    case "$1" in
        --holdfast) HOLDFAST="$2"; shift 2 ;;
        --workdir) WORK="$2"; shift 2 ;;
        --seeds) SEEDS="$2"; shift 2 ;;
        --skip-put) PUT=0; shift ;;
        --skip-stream) STREAM=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_writeback.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -x "$HOLDFAST" ] || { echo "bench_writeback.sh: no holdfast binary at $HOLDFAST (make release)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench_writeback.sh: /usr/bin/time not found (apt install time)" >&2; exit 2; }
mkdir -p "$WORK" "$WORK/mnt"

can_mount() {
    mkfs.ext4 -q -F "$WORK/probe.img" 8M && mount -o loop "$WORK/probe.img" "$WORK/mnt" 2>/dev/null && umount "$WORK/mnt"
}

# run LABEL COMMAND... : runs with /usr/bin/time, prints "seconds peak_kib"
timed() {
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || {
        echo "FAILED: $*" >&2; cat "$WORK/err.txt" >&2; return 1; }
    cat "$WORK/time.txt"
}

if [ "$STREAM" = 1 ]; then
    data="$WORK/stream.bin"
    if [ ! -f "$data" ]; then
        echo "making 2 GiB of data in $data (once) ..."
        head -c $((2 << 30)) /dev/urandom >"$data"
    fi
    cat "$data" >/dev/null  # warm the host page cache for every contender alike
    bytes=$(stat -c %s "$data")
    declare -A secs
    for m in 16M 256M; do
        rm -f "$WORK/s.img"; mkfs.ext4 -q -F "$WORK/s.img" 3G; sync
        read -r s kib < <(timed "$HOLDFAST" write "$WORK/s.img" /big --memory "$m" --stats < "$data")
        secs[$m]=$s
        printf 'stream holdfast --memory %-5s %7.2f s  %7.1f MB/s  peak RSS %6d KiB\n' "$m" "$s" "$(echo "$bytes / $s / 1000000" | bc -l)" "$kib"
        grep pagecache "$WORK/err.txt" | sed 's/^/    /'
        e2fsck -fn "$WORK/s.img" >/dev/null 2>&1 && echo "    e2fsck -fn: clean" || echo "    e2fsck -fn: FOUND PROBLEMS"
    done
    if can_mount; then
        rm -f "$WORK/s.img"; mkfs.ext4 -q -F "$WORK/s.img" 3G; sync
        read -r s kib < <(timed bash -c "mount -o loop '$WORK/s.img' '$WORK/mnt' && cp '$data' '$WORK/mnt/big' && sync && umount '$WORK/mnt'")
        printf 'stream kernel (loop mount)     %7.2f s  %7.1f MB/s\n' "$s" "$(echo "$bytes / $s / 1000000" | bc -l)"
        for m in 16M 256M; do
            printf 'ratio holdfast/kernel time at --memory %-5s %.2fx\n' "$m" "$(echo "${secs[$m]} / $s" | bc -l)"
        done
    else
        echo "stream kernel: SKIPPED (loop mount not permitted here)"
    fi
fi

if [ "$PUT" = 1 ]; then
    tree="$WORK/put-tree"
    if [ ! -f "$tree/.done" ]; then
        echo "building the put tree in $tree (once) ..."
        rm -rf "$tree"; mkdir -p "$tree/small"
        for i in 1 2 3; do head -c 400000000 /dev/urandom >"$tree/big$i"; done
        python3 - "$tree/small" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(9)
for d in range(50):
    p = os.path.join(root, "d%02d" % d)
    os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p, "f%03d" % f), "wb") as out:
            out.write(rng.randbytes(rng.randint(100, 60000)))
PY
        touch "$tree/.done"
    fi
    total=$(du -sb "$tree" | cut -f1)
    check() { # image label
        e2fsck -fn "$1" >/dev/null 2>&1 && echo "    e2fsck -fn: clean" || echo "    e2fsck -fn: FOUND PROBLEMS"
        if can_mount; then
            mount -o ro,loop "$1" "$WORK/mnt"
            if diff -r --no-dereference "$tree" "$WORK/mnt/tree" >/dev/null; then echo "    the kernel reads back every file exactly"; else echo "    the kernel reads DIFFERENT data"; fi
            umount "$WORK/mnt"
        else
            echo "    kernel read-back: SKIPPED (loop mount not permitted here)"
        fi
    }
    rm -f "$WORK/p.img"; mkfs.ext4 -q -F "$WORK/p.img" 2G; sync
    read -r s kib < <(timed "$HOLDFAST" put "$WORK/p.img" "$tree" /tree --memory 16M --stats)
    printf 'put %d bytes --memory 16M: %.2f s, peak RSS %d KiB\n' "$total" "$s" "$kib"
    grep -E "^budget|pagecache" "$WORK/err.txt" | sed 's/^/    /'
    check "$WORK/p.img"
    for seed in $SEEDS; do
        rm -f "$WORK/p.img"; mkfs.ext4 -q -F "$WORK/p.img" 2G; sync
        read -r s kib < <(timed "$HOLDFAST" put "$WORK/p.img" "$tree" /tree --memory 16M --stats \
            --inject "category=writeback,probability=0.3,seed=$seed")
        printf 'put --inject category=writeback,probability=0.3,seed=%s: %.2f s, peak RSS %d KiB\n' "$seed" "$s" "$kib"
        grep -E "writeback.vector|pagecache|^inject" "$WORK/err.txt" | sed 's/^/    /'
        check "$WORK/p.img"
    done
fi
