#!/usr/bin/env bash
# Benchmark: holdfast mount against fuse2fs and the kernel's ext4 (loop mount), side by side.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench_mount.sh [--holdfast PATH] [--memory SIZE] [--holdfast-options "ARGS"] [--rounds N] [--workdir DIR] [--only NAMES]

Benchmark (not a test) of the same workload on three mounts of a fresh 4 GiB ext4 image each:
  holdfast  HOLDFAST mount --memory SIZE IMG DIR          (FUSE, journaled)
  fuse2fs   fuse2fs IMG DIR                              (FUSE, e2fsprogs; no journal writes)
  kernel    mount -o loop IMG DIR                        (the kernel's ext4)
(holdfast's server, run as root, asks the kernel for a CPU-latency target of 0 while requests
come: idle CPUs poll rather than sleep. --holdfast-options "--cpu-latency off" measures it without.)
Rows, in order, each on the same mount unless it says remount:
  cp        cp -a of a 20,000-file tree (~700 MiB, on tmpfs), then unmount until the image is final
  ls        ls -lR after a remount
  write     dd if=/dev/zero bs=1M count=2048 conv=fsync (2 GiB)
  read      dd bs=1M of that file to /dev/null after a remount
  randread  fio, 4 KiB random reads of that file, 20 s (IOPS, higher is better)
  randwrite fio, 4 KiB random writes into a 512 MiB file, 20 s, fsync at the end (IOPS)
  rm        rm -rf of the tree, then unmount until the image is final
And the peak RSS (KiB) of the server, holdfast at --memory 32M and fuse2fs, under a stress of
eight processes at once (two cp -a of subtrees, two dd writers, two fio randrw jobs, ls -lR,
rm -rf); the goal for holdfast is the budget + 48 MiB (81,920 KiB).
Images and the tree live on tmpfs (--workdir) so the noisy disk stays out of it; e2fsck -fn
checks every image at the end. The rows run in rounds (--rounds, default 3), the mounts in a
different order each round, so that a slow hour of the machine falls on all three alike. Prints
the median seconds (or IOPS) per row and mount over the rounds, and the ratios of the medians
fuse2fs/holdfast (> 1: holdfast is faster) and holdfast/kernel (seconds) or kernel/holdfast
(IOPS), each with the lowest and highest of the rounds' own ratios in brackets.
"Unmount until final" waits for the FUSE server to exit (holdfast: `flock IMG true`).

Options:
  --holdfast PATH  holdfast binary (default: .build/release/holdfast here)
  --memory SIZE    holdfast's budget (default: 256M)
  --holdfast-options "ARGS"  more arguments for holdfast mount (e.g. "--cpu-latency off")
  --rounds N       rounds of the rows (default: 3; about 4 minutes each)
  --workdir DIR    images, tree and mount points (default: /dev/shm/holdfast-mount-bench; ~6 GiB)
  --only NAMES     comma list of mounts to run (default: holdfast,fuse2fs,kernel)
USAGE
}

HERE="$(cd "$(dirname "$0")" && pwd)"
HOLDFAST="$HERE/../.build/release/holdfast"
MEMORY=256M
HOLDFAST_OPTIONS=""
WORK=/dev/shm/holdfast-mount-bench
ONLY="holdfast,fuse2fs,kernel"
ROUNDS=3
while [ $# -gt 0 ]; do
    case "$1" in
        --holdfast) HOLDFAST="$2"; shift 2 ;;
        --memory) MEMORY="$2"; shift 2 ;;
        --holdfast-options) HOLDFAST_OPTIONS="$2"; shift 2 ;;
        --workdir) WORK="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_mount.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "bench_mount.sh: --rounds: give a count of 1 or more" >&2; exit 2; }
for tool in fio fuse2fs mkfs.ext4 e2fsck flock; do
    command -v "$tool" >/dev/null || { echo "bench_mount.sh: $tool is missing (make deps)" >&2; exit 1; }
done
[ -x "$HOLDFAST" ] || { echo "bench_mount.sh: no holdfast binary at $HOLDFAST (make release)" >&2; exit 1; }

mkdir -p "$WORK"
TREE="$WORK/tree"
if [ ! -d "$TREE" ]; then
    echo "making the 20,000-file tree in $TREE (once)" >&2
    python3 "$HERE/make_spread.py" "$TREE" spread >/dev/null
fi
MNT="$WORK/mnt"
mkdir -p "$MNT"

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$(now) - $1:.2f}')"; }

# mount_fs NAME IMG / unmount_fs NAME IMG: unmount returns when the image is final.
mount_fs() {
    case "$1" in
        holdfast) "$HOLDFAST" mount --memory "$MEMORY" $HOLDFAST_OPTIONS "$2" "$MNT" ;;
        fuse2fs) fuse2fs "$2" "$MNT" >/dev/null ;;
        kernel) mount -o loop "$2" "$MNT" ;;
    esac
}
unmount_fs() {
    umount "$MNT"
    case "$1" in
        holdfast) flock "$2" true ;;
        fuse2fs) while pgrep -f "fuse2fs $2" >/dev/null; do sleep 0.02; done ;;
        kernel) ;;
    esac
}

fio_iops() {  # fio_iops RW FILE SIZE
    fio --name=bench --filename="$2" --rw="$1" --bs=4k --size="$3" --runtime=20 --time_based \
        --ioengine=psync --end_fsync=1 --output-format=terse --terse-version=3 2>/dev/null |
        awk -F';' -v rw="$1" '{ print (rw == "randread") ? $8 : $49 }'
}

# record NAME ROW VALUE: one figure of this round, into $RESULTS (round, mount, row, value).
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
ROUND=0
record() { printf '%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" >>"$RESULTS"; }

run_mount() {
    local fs="$1" img="$WORK/$1.img" t
    rm -f "$img"
    mkfs.ext4 -q -F "$img" 4G
    sync
    mount_fs "$fs" "$img"
    t=$(now); cp -a "$TREE" "$MNT/t"; unmount_fs "$fs" "$img"; record "$fs" cp "$(elapsed "$t")"
    mount_fs "$fs" "$img"
    t=$(now); ls -lR "$MNT" >/dev/null; record "$fs" ls "$(elapsed "$t")"
    t=$(now); dd if=/dev/zero of="$MNT/big" bs=1M count=2048 conv=fsync status=none; record "$fs" write "$(elapsed "$t")"
    unmount_fs "$fs" "$img"; mount_fs "$fs" "$img"
    t=$(now); dd if="$MNT/big" of=/dev/null bs=1M status=none; record "$fs" read "$(elapsed "$t")"
    record "$fs" randread "$(fio_iops randread "$MNT/big" 2g)"
    record "$fs" randwrite "$(fio_iops randwrite "$MNT/small" 512m)"
    t=$(now); rm -rf "$MNT/t"; unmount_fs "$fs" "$img"; record "$fs" rm "$(elapsed "$t")"
    if e2fsck -fn "$img" >/dev/null 2>&1; then record "$fs" fsck clean; else record "$fs" fsck PROBLEMS; fi
    rm -f "$img"
    echo "round $ROUND: $fs done" >&2
}

# peak_rss NAME: the server in the foreground under /usr/bin/time, eight processes at once.
peak_rss() {
    local fs="$1" img="$WORK/rss.img" out="$WORK/rss.txt"
    rm -f "$img" "$out"
    mkfs.ext4 -q -F "$img" 4G
    case "$fs" in
        holdfast) /usr/bin/time -f %M -o "$out" "$HOLDFAST" mount -f --memory 32M $HOLDFAST_OPTIONS "$img" "$MNT" & ;;
        fuse2fs) /usr/bin/time -f %M -o "$out" fuse2fs -f "$img" "$MNT" >/dev/null & ;;
        *) return ;;
    esac
    local server=$! stress=()
    while ! mountpoint -q "$MNT"; do sleep 0.05; done
    cp -a "$TREE/d1" "$MNT/a" & stress+=($!)
    cp -a "$TREE/d2" "$MNT/b" & stress+=($!)
    dd if=/dev/zero of="$MNT/big1" bs=1M count=512 conv=fsync status=none & stress+=($!)
    dd if=/dev/zero of="$MNT/big2" bs=64k count=8192 status=none & stress+=($!)
    fio --name=stress --directory="$MNT" --rw=randrw --bs=4k --size=64m --numjobs=2 --runtime=20 \
        --time_based --ioengine=psync >/dev/null & stress+=($!)
    (for _ in 1 2 3; do ls -lR "$MNT" >/dev/null; done) & stress+=($!)
    (sleep 5; rm -rf "$MNT/a" 2>/dev/null) & stress+=($!)  # races the cp -a into it: may leave some
    for pid in "${stress[@]}"; do wait "$pid" || true; done
    umount "$MNT"
    wait "$server" || true
    record "$fs" rss "$(cat "$out")"
    rm -f "$img"
}

IFS=',' read -r -a MOUNTS <<<"$ONLY"
# Round r starts with mount r (mod the count), so no mount always runs first or last.
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    for ((i = 0; i < ${#MOUNTS[@]}; i++)); do run_mount "${MOUNTS[(i + ROUND - 1) % ${#MOUNTS[@]}]}"; done
done
for fs in "${MOUNTS[@]}"; do peak_rss "$fs"; done

python3 - "$RESULTS" "$ROUNDS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r, fs, row, value = line.rstrip("\n").split("\t")
    rows.setdefault((fs, row), {})[int(r)] = value
rounds = int(sys.argv[2])
def numbers(fs, row):
    return {r: float(v) for r, v in rows.get((fs, row), {}).items() if v}
def ratio(a, b):
    # a/b of the medians, then the lowest and highest of the rounds' own a/b.
    if not a or not b: return "-"
    each = [a[r] / b[r] for r in a if r in b and b[r] > 0]
    text = f"{statistics.median(a.values()) / statistics.median(b.values()):.2f}x"
    return text + (f" ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else "")
def median(fs, row):
    n = numbers(fs, row)
    if not n: return "-"
    m = statistics.median(n.values())
    return f"{m:.0f}" if row in ("randread", "randwrite") else f"{m:.2f}"
print(f"median of {rounds} round{'s' if rounds > 1 else ''}; the ratios' range over the rounds in brackets")
print(f"{'row':<16}{'holdfast':>13}{'fuse2fs':>13}{'kernel':>13}  {'fuse2fs/holdfast':<22}{'holdfast/kernel':<22}")
for row in ("cp", "ls", "write", "read", "randread", "randwrite", "rm"):
    h, f, k = numbers("holdfast", row), numbers("fuse2fs", row), numbers("kernel", row)
    iops = row in ("randread", "randwrite")
    versus_fuse2fs = ratio(h, f) if iops else ratio(f, h)
    versus_kernel = ratio(k, h) if iops else ratio(h, k)
    label = f"{row}({'iops' if iops else 's'})"
    print(f"{label:<16}{median('holdfast', row):>13}{median('fuse2fs', row):>13}{median('kernel', row):>13}  {versus_fuse2fs:<22}{versus_kernel:<22}")
rss = lambda fs: next(iter(rows.get((fs, "rss"), {}).values()), "-")
print(f"{'rss(KiB)':<16}{rss('holdfast'):>13}{rss('fuse2fs'):>13}{'-':>13}")
def fsck(fs):
    seen = list(rows.get((fs, "fsck"), {}).values())
    if not seen: return "-"
    bad = seen.count("PROBLEMS")
    return "clean" if not bad else f"PROBLEMS {bad}/{len(seen)}"
print(f"{'e2fsck':<16}{fsck('holdfast'):>13}{fsck('fuse2fs'):>13}{fsck('kernel'):>13}")
PY
