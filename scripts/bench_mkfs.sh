#!/usr/bin/env bash
# Benchmark: `holdfast mkfs --from DIR` against `mke2fs -d DIR`, side by side in one run.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench_mkfs.sh [--holdfast PATH] [--runs N] [--workdir DIR] [--shape spread|bigdir]

Benchmark (not a test) of building a populated ext4 image from a directory:
  holdfast:    HOLDFAST mkfs IMG SIZE --from TREE   (every commit through the journal)
  no-journal:  HOLDFAST mkfs IMG SIZE --from TREE --no-journal
  mke2fs:      mke2fs -q -F -t ext4 -d TREE IMG SIZE   (writes no journal blocks)
and of putting it into an empty image (made untimed by mke2fs, with and without a journal):
  put:         HOLDFAST put IMG TREE /t
  put-nojournal: the same into an image made with -O ^has_journal

Two trees, built once by scripts/make_spread.py and cached in the work dir:
  spread  20,000 files in 5,000 directories, ~700 MB   (image 2G)
  bigdir  one directory of 20,000 small files          (image 256M; mke2fs -d
          writes it as a linear directory and slows down; holdfast builds an htree)

Each tool runs RUNS times per tree, alternating, each into a fresh image file
(removed and `sync`ed, untimed, before every run; both tools end with an fsync).
Prints median/min/max seconds per tool, the ratio mke2fs/holdfast of the
medians (> 1: holdfast is faster) and the journal's cost holdfast/no-journal,
then checks the last images with e2fsck -fn.

Options:
  --holdfast PATH  holdfast binary (default: .build/release/holdfast here)
  --runs N         runs per tool and tree (default: 3)
  --workdir DIR    cache and scratch (default: /tmp/holdfast-mkfs-bench; ~3 GiB)
  --shape NAME     only this tree (default: both)
USAGE
}

HERE="$(cd "$(dirname "$0")" && pwd)"
HOLDFAST="$HERE/../.build/release/holdfast"
RUNS=3
WORK=/tmp/holdfast-mkfs-bench
SHAPES="spread bigdir"
while [ $# -gt 0 ]; do
    case "$1" in
        --holdfast) HOLDFAST="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --workdir) WORK="$2"; shift 2 ;;
        --shape) SHAPES="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_mkfs.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -x "$HOLDFAST" ] || { echo "bench_mkfs.sh: no holdfast binary at $HOLDFAST (make release)" >&2; exit 2; }
command -v mke2fs >/dev/null || { echo "bench_mkfs.sh: mke2fs not found (apt install e2fsprogs)" >&2; exit 2; }
mkdir -p "$WORK"

seconds() { # command... -> elapsed seconds on stdout
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}

stats() { # values... -> "median min max"
    printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f %.3f", a[int((NR+1)/2)], a[1], a[NR]}'
}

for shape in $SHAPES; do
    tree="$WORK/$shape"
    if [ ! -d "$tree" ]; then
        echo "building the $shape tree in $tree ..." >&2
        python3 "$HERE/make_spread.py" "$tree" "$shape"
    fi
    size=$([ "$shape" = spread ] && echo 2G || echo 256M)
    h=(); n=(); m=()
    for ((i = 0; i < RUNS; i++)); do
        rm -f "$WORK/h.img" "$WORK/n.img" "$WORK/m.img"; sync
        h+=("$(seconds "$HOLDFAST" mkfs "$WORK/h.img" "$size" --from "$tree")")
        rm -f "$WORK/n.img"; sync
        n+=("$(seconds "$HOLDFAST" mkfs "$WORK/n.img" "$size" --from "$tree" --no-journal)")
        rm -f "$WORK/m.img"; sync
        m+=("$(seconds mke2fs -q -F -t ext4 -d "$tree" "$WORK/m.img" "$size")")
    done
    read -r hm hmin hmax <<<"$(stats "${h[@]}")"
    read -r nm nmin nmax <<<"$(stats "${n[@]}")"
    read -r mm mmin mmax <<<"$(stats "${m[@]}")"
    printf '%-7s %-10s median %6.3f s  (min %.3f, max %.3f)\n' "$shape" holdfast "$hm" "$hmin" "$hmax"
    printf '%-7s %-10s median %6.3f s  (min %.3f, max %.3f)\n' "$shape" no-journal "$nm" "$nmin" "$nmax"
    printf '%-7s %-10s median %6.3f s  (min %.3f, max %.3f)\n' "$shape" mke2fs "$mm" "$mmin" "$mmax"
    printf '%-7s ratio mke2fs/holdfast: %.2fx\n' "$shape" "$(echo "$mm / $hm" | bc -l)"
    printf '%-7s journal cost holdfast/no-journal: %.2fx\n' "$shape" "$(echo "$hm / $nm" | bc -l)"
    p=(); q=()
    for ((i = 0; i < RUNS; i++)); do
        rm -f "$WORK/p.img" "$WORK/q.img"
        mke2fs -q -F -t ext4 "$WORK/p.img" "$size" >/dev/null 2>&1
        mke2fs -q -F -t ext4 -O ^has_journal "$WORK/q.img" "$size" >/dev/null 2>&1
        sync
        p+=("$(seconds "$HOLDFAST" put "$WORK/p.img" "$tree" /t)")
        q+=("$(seconds "$HOLDFAST" put "$WORK/q.img" "$tree" /t)")
    done
    read -r pm pmin pmax <<<"$(stats "${p[@]}")"
    read -r qm qmin qmax <<<"$(stats "${q[@]}")"
    printf '%-7s %-13s median %6.3f s  (min %.3f, max %.3f)\n' "$shape" put "$pm" "$pmin" "$pmax"
    printf '%-7s %-13s median %6.3f s  (min %.3f, max %.3f)\n' "$shape" put-nojournal "$qm" "$qmin" "$qmax"
    printf '%-7s journal cost put/put-nojournal: %.2fx\n' "$shape" "$(echo "$pm / $qm" | bc -l)"
    for img in h n m p q; do
        if e2fsck -fn "$WORK/$img.img" >/dev/null 2>&1; then echo "$shape $img.img: e2fsck clean"; else echo "$shape $img.img: e2fsck FOUND PROBLEMS"; fi
    done
done
rm -f "$WORK/h.img" "$WORK/n.img" "$WORK/m.img" "$WORK/p.img" "$WORK/q.img"
