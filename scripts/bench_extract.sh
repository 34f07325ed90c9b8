#!/usr/bin/env bash
# Benchmark: Holdfast `extract` against `debugfs rdump` on the same image.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench_extract.sh [--holdfast PATH] [--runs N] [--workdir DIR]
                                [--out-fs tmpfs|disk]

Benchmark (not a test) of extracting a whole ext4 image to a directory:
  holdfast:  HOLDFAST extract IMG DEST
  debugfs:   debugfs -R 'rdump / DEST' IMG

Steps:
  1. Once, cached in the work dir: build the bench tree with
     scripts/make_tree.py --profile bench --seed 1 (20,000 files, ~700 MiB),
     and an image of it with mkfs.ext4 -q -d TREE -b 4096 IMG SIZE.
     (As root the tree is read through a read-only noatime bind mount so
     that mkfs does not change the tree's atimes.)
  2. One warm-up run of each tool (the page cache cannot be dropped
     reliably, so both tools are measured warm), then RUNS runs of each,
     alternating, each into a fresh empty DEST, timed with
     /usr/bin/time -f '%e %M'. By default (as root) DEST lives on a tmpfs
     mounted fresh for every run: on this VM's root ext4, creating files in
     the wake of a big rm -rf is 10-40x slower than on a fresh fs, which
     made disk runs swing between 4 s and 25 s. `sync` runs (untimed)
     before every run.
  3. A table: tool, median/min/max seconds, peak RSS MiB, and the ratio
     debugfs/holdfast of the medians (> 1 means holdfast is faster).
  4. The holdfast output of the last run is checked against the tree with
     scripts/treediff.py --no-owner --ignore-root-times (lost+found, which
     mkfs adds, is removed from the output first if it is empty).

Options:
  --holdfast PATH  holdfast binary (default: .build/release/holdfast in the
                   repository that holds this script)
  --runs N         measured runs per tool (default: 3)
  --workdir DIR    cache and scratch directory (default: /tmp/holdfast-bench);
                   needs about 2 GiB free (3.5 GiB with --out-fs disk)
  --out-fs KIND    where DEST lives: tmpfs (default when root; a fresh 2 GiB
                   tmpfs per run, ~1.5 GiB of RAM used at most) or disk
                   (WORKDIR/out-TOOL on the work dir's filesystem)
  -h, --help       this text

/usr/bin/time comes from the Debian package `time`; if it is missing the
script installs it with apt-get (as root) or tells you to.

If the holdfast binary is missing, the debugfs half still runs and is
reported, and the script exits 1 with a message saying so.
Exit status: 0 all good; 1 holdfast missing, a run failed or verification
failed; 2 usage error.
EOF
}

die() { echo "bench_extract.sh: error: $*" >&2; exit 1; }
usage_error() { echo "bench_extract.sh: $*" >&2; echo "Try --help." >&2; exit 2; }

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname -- "$SCRIPT_DIR")
HOLDFAST="$REPO/.build/release/holdfast"
RUNS=3
WORKDIR=/tmp/holdfast-bench
SEED=1
OUTFS=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --holdfast) [[ $# -ge 2 ]] || usage_error "--holdfast needs a PATH"; HOLDFAST=$2; shift 2 ;;
        --runs) [[ $# -ge 2 ]] || usage_error "--runs needs a number"; RUNS=$2; shift 2 ;;
        --workdir) [[ $# -ge 2 ]] || usage_error "--workdir needs a DIR"; WORKDIR=$2; shift 2 ;;
        --out-fs) [[ $# -ge 2 ]] || usage_error "--out-fs needs tmpfs or disk"; OUTFS=$2; shift 2 ;;
        --out-fs=*) OUTFS=${1#*=}; shift ;;
        --holdfast=*) HOLDFAST=${1#*=}; shift ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --workdir=*) WORKDIR=${1#*=}; shift ;;
        *) usage_error "unknown argument: $1" ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || usage_error "--runs must be a positive integer (got '$RUNS')"
if [[ -z "$OUTFS" ]]; then
    OUTFS=disk; [[ $EUID -eq 0 ]] && OUTFS=tmpfs
fi
case "$OUTFS" in
    tmpfs) [[ $EUID -eq 0 ]] || usage_error "--out-fs tmpfs needs root (mount)" ;;
    disk) ;;
    *) usage_error "--out-fs must be tmpfs or disk (got '$OUTFS')" ;;
esac

for tool in python3 mkfs.ext4 debugfs; do
    command -v "$tool" >/dev/null || die "required tool '$tool' not found (Debian: e2fsprogs, python3)"
done
if [[ ! -x /usr/bin/time ]]; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "bench: /usr/bin/time missing, installing Debian package 'time' with apt-get" >&2
        apt-get install -y -q time >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q time >/dev/null 2>&1; } \
            || die "could not install package 'time' (apt-get install time)"
    else
        die "/usr/bin/time not found: install the Debian package 'time' (apt-get install time)"
    fi
fi

HOLDFAST_OK=1
if [[ ! -x "$HOLDFAST" || -d "$HOLDFAST" ]]; then
    HOLDFAST_OK=0
    echo "bench_extract.sh: error: holdfast binary not found or not executable: $HOLDFAST" >&2
    echo "  build it with 'swift build -c release' or pass --holdfast PATH;" \
         "running the debugfs half only" >&2
fi

mkdir -p -- "$WORKDIR" || die "cannot create work dir $WORKDIR"
WORKDIR=$(cd -- "$WORKDIR" && pwd)
TREE="$WORKDIR/tree"
IMG="$WORKDIR/bench.img"
TREE_STAMP="$WORKDIR/tree.stamp"
IMG_STAMP="$WORKDIR/image.stamp"
TREE_ID="make_tree profile=bench seed=$SEED v1"
BIND=""
unmount_bind() {
    if [[ -n "$BIND" ]]; then
        if mountpoint -q "$BIND"; then umount "$BIND" || echo "bench: warning: could not unmount $BIND" >&2; fi
        rmdir "$BIND" 2>/dev/null || true
        BIND=""
    fi
}
# out_dir TOOL: the directory that holds DEST for TOOL.
out_dir() { echo "$WORKDIR/out-$1"; }
# clear_out TOOL: remove TOOL's previous output (unmount its tmpfs).
clear_out() {
    local d; d=$(out_dir "$1")
    if mountpoint -q "$d"; then umount "$d" || die "cannot unmount $d"; fi
    rm -rf -- "$d"
}
cleanup() {
    unmount_bind
    for t in holdfast debugfs; do
        local d="$WORKDIR/out-$t"
        if mountpoint -q "$d" 2>/dev/null; then umount "$d" || echo "bench: warning: could not unmount $d" >&2; fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -- 1. cached tree and image ---------------------------------------------------
if [[ ! -f "$TREE_STAMP" || "$(cat "$TREE_STAMP")" != "$TREE_ID" ]]; then
    echo "bench: building the bench tree in $TREE (one time)" >&2
    rm -rf -- "$TREE" "$TREE_STAMP" "$IMG_STAMP"
    python3 "$SCRIPT_DIR/make_tree.py" "$TREE" --profile bench --seed "$SEED" \
        || die "make_tree.py failed"
    echo "$TREE_ID" > "$TREE_STAMP"
fi
if [[ ! -f "$IMG_STAMP" || ! -f "$IMG" ]]; then
    SRC="$TREE"
    if [[ $EUID -eq 0 ]]; then
        BIND=$(mktemp -d "$WORKDIR/bind.XXXXXX")
        mount --bind -- "$TREE" "$BIND" && mount -o remount,bind,ro,noatime -- "$BIND" \
            || die "cannot bind-mount $TREE read-only at $BIND"
        SRC="$BIND"
    else
        echo "bench: warning: not root, mkfs.ext4 -d will update the tree's atimes" \
             "and verification may report atime differences" >&2
    fi
    # du reads directories, so it too must go through the noatime mount.
    TREE_KIB=$(du -s --apparent-size --block-size=1K -- "$SRC" | cut -f1)
    # 25 % headroom for metadata and partial blocks, plus 256 MiB.
    SIZE_KIB=$(( TREE_KIB * 5 / 4 + 256 * 1024 ))
    echo "bench: making $IMG (${SIZE_KIB}K) with mkfs.ext4 -d (one time)" >&2
    rm -f -- "$IMG"
    mkfs.ext4 -q -F -d "$SRC" -b 4096 "$IMG" "${SIZE_KIB}k" >&2 || die "mkfs.ext4 -d failed"
    unmount_bind
    echo "$TREE_ID size=${SIZE_KIB}k" > "$IMG_STAMP"
fi

# -- 2. runs ----------------------------------------------------------------------
RESULTS="$WORKDIR/results.tsv"
: > "$RESULTS"
TIMEFILE="$WORKDIR/time.out"
FAILED=0

# run_tool TOOL LABEL: extract into a fresh DEST, append timing to RESULTS.
run_tool() {
    local tool=$1 label=$2 out dest log="$WORKDIR/$1.log" rc=0
    out=$(out_dir "$tool")
    clear_out "$tool"
    mkdir -- "$out"
    if [[ $OUTFS == tmpfs ]]; then
        mount -t tmpfs -o size=2g,mode=0755 "holdfast-bench-$tool" "$out" \
            || die "cannot mount a tmpfs at $out"
    fi
    dest="$out/dest"
    mkdir -- "$dest"
    # Write back earlier runs' dirty pages now, so they do not slow this one.
    sync
    if [[ $tool == holdfast ]]; then
        /usr/bin/time -f '%e %M' -o "$TIMEFILE" \
            "$HOLDFAST" extract "$IMG" "$dest" >"$log" 2>&1 || rc=$?
    else
        /usr/bin/time -f '%e %M' -o "$TIMEFILE" \
            debugfs -R "rdump / \"$dest\"" "$IMG" >"$log" 2>&1 || rc=$?
        # debugfs exits 0 even when rdump fails; look for anything but its banner.
        if [[ $rc -eq 0 ]] && grep -qv '^debugfs [0-9]' "$log"; then rc=1; fi
    fi
    if [[ $rc -ne 0 ]]; then
        echo "bench: $tool $label FAILED (exit $rc); last lines of $log:" >&2
        tail -n 5 "$log" >&2
        FAILED=1
        return 1
    fi
    local secs kib
    read -r secs kib < <(tail -n 1 "$TIMEFILE")
    echo "bench: $tool $label: ${secs}s, $(( kib / 1024 )) MiB peak RSS" >&2
    [[ $label == warm-up ]] || printf '%s\t%s\t%s\n' "$tool" "$secs" "$kib" >> "$RESULTS"
}

TOOLS=(debugfs)
[[ $HOLDFAST_OK -eq 1 ]] && TOOLS=(holdfast debugfs)
for tool in "${TOOLS[@]}"; do run_tool "$tool" warm-up || true; done
for ((i = 1; i <= RUNS; i++)); do
    for tool in "${TOOLS[@]}"; do
        run_tool "$tool" "run $i/$RUNS" || true
        # Keep the last holdfast output for verification, drop the rest.
        if [[ ! ( $tool == holdfast && $i -eq $RUNS ) ]]; then clear_out "$tool"; fi
    done
done

# -- 3. table -------------------------------------------------------------------
echo
python3 - "$RESULTS" "$HOLDFAST_OK" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    tool, secs, kib = line.split("\t")
    rows.setdefault(tool, []).append((float(secs), int(kib)))
print(f"{'tool':<10} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MiB':>13}")
med = {}
for tool in ("holdfast", "debugfs"):
    r = rows.get(tool)
    if not r:
        why = "binary missing" if tool == "holdfast" and sys.argv[2] == "0" else "no successful run"
        print(f"{tool:<10} {'-':>4} {'-':>9} {'-':>7} {'-':>7} {'-':>13}   ({why})")
        continue
    secs = [s for s, _ in r]
    med[tool] = statistics.median(secs)
    peak = max(k for _, k in r) / 1024
    print(f"{tool:<10} {len(r):>4} {med[tool]:>9.2f} {min(secs):>7.2f} {max(secs):>7.2f} {peak:>13.1f}")
if "holdfast" in med and "debugfs" in med and med["holdfast"] > 0:
    print(f"ratio debugfs/holdfast (medians): {med['debugfs'] / med['holdfast']:.2f}x")
else:
    print("ratio debugfs/holdfast: n/a")
PY

# -- 4. verification ---------------------------------------------------------------
VERIFY=1
echo "(DEST on $OUTFS; $RUNS measured runs per tool after one warm-up each)"
if [[ $HOLDFAST_OK -eq 1 && -d "$(out_dir holdfast)/dest" ]]; then
    OUT="$(out_dir holdfast)/dest"
    if [[ -d "$OUT/lost+found" && ! -e "$TREE/lost+found" ]]; then
        rmdir -- "$OUT/lost+found" 2>/dev/null \
            || echo "bench: note: $OUT/lost+found is not empty, leaving it (will show as a difference)" >&2
    fi
    if python3 "$SCRIPT_DIR/treediff.py" --no-owner --ignore-root-times "$TREE" "$OUT" \
            > "$WORKDIR/treediff.txt"; then
        echo "verification: holdfast output of the last run equals the tree (treediff.py --no-owner --ignore-root-times)"
    else
        VERIFY=0
        echo "verification: FAILED, holdfast output differs from the tree:"
        head -n 20 "$WORKDIR/treediff.txt"
        echo "(full list: $WORKDIR/treediff.txt)"
    fi
    clear_out holdfast
elif [[ $HOLDFAST_OK -eq 1 ]]; then
    VERIFY=0
    echo "verification: skipped, the last holdfast run failed"
else
    echo "verification: skipped, holdfast binary missing ($HOLDFAST)"
fi

if [[ $HOLDFAST_OK -eq 0 ]]; then
    echo "bench_extract.sh: error: holdfast binary not found: $HOLDFAST (only debugfs was measured)" >&2
    exit 1
fi
[[ $FAILED -eq 0 && $VERIFY -eq 1 ]] || exit 1
exit 0
