#!/usr/bin/env bash
# Benchmark: holdfast mount against fuse2fs and the kernel's ext4 (loop mount), side by side.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench_mount.sh [--holdfast PATH] [--memory SIZE] [--holdfast-options "ARGS"] [--workdir DIR] [--only NAMES]

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
checks every image at the end. Prints seconds (or IOPS) per row and mount, and the ratios
fuse2fs/holdfast (> 1: holdfast is faster) and holdfast/kernel (seconds) or kernel/holdfast (IOPS).
"Unmount until final" waits for the FUSE server to exit (holdfast: `flock IMG true`).

Options:
  --holdfast PATH  holdfast binary (default: .build/release/holdfast here)
  --memory SIZE    holdfast's budget (default: 256M)
  --holdfast-options "ARGS"  more arguments for holdfast mount (e.g. "--cpu-latency off")
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
while [ $# -gt 0 ]; do
    case "$1" in
        --holdfast) HOLDFAST="$2"; shift 2 ;;
        --memory) MEMORY="$2"; shift 2 ;;
        --holdfast-options) HOLDFAST_OPTIONS="$2"; shift 2 ;;
        --workdir) WORK="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_mount.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
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

declare -A RESULT
run_mount() {
    local fs="$1" img="$WORK/$1.img" t
    rm -f "$img"
    mkfs.ext4 -q -F "$img" 4G
    sync
    mount_fs "$fs" "$img"
    t=$(now); cp -a "$TREE" "$MNT/t"; unmount_fs "$fs" "$img"; RESULT[$fs,cp]=$(elapsed "$t")
    mount_fs "$fs" "$img"
    t=$(now); ls -lR "$MNT" >/dev/null; RESULT[$fs,ls]=$(elapsed "$t")
    t=$(now); dd if=/dev/zero of="$MNT/big" bs=1M count=2048 conv=fsync status=none; RESULT[$fs,write]=$(elapsed "$t")
    unmount_fs "$fs" "$img"; mount_fs "$fs" "$img"
    t=$(now); dd if="$MNT/big" of=/dev/null bs=1M status=none; RESULT[$fs,read]=$(elapsed "$t")
    RESULT[$fs,randread]=$(fio_iops randread "$MNT/big" 2g)
    RESULT[$fs,randwrite]=$(fio_iops randwrite "$MNT/small" 512m)
    t=$(now); rm -rf "$MNT/t"; unmount_fs "$fs" "$img"; RESULT[$fs,rm]=$(elapsed "$t")
    if e2fsck -fn "$img" >/dev/null 2>&1; then RESULT[$fs,fsck]=clean; else RESULT[$fs,fsck]=PROBLEMS; fi
    rm -f "$img"
    echo "$fs done" >&2
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
    (sleep 5; rm -rf "$MNT/a") & stress+=($!)
    for pid in "${stress[@]}"; do wait "$pid" || true; done
    umount "$MNT"
    wait "$server" || true
    RESULT[$fs,rss]=$(cat "$out")
    rm -f "$img"
}

IFS=',' read -r -a MOUNTS <<<"$ONLY"
for fs in "${MOUNTS[@]}"; do run_mount "$fs"; done
for fs in "${MOUNTS[@]}"; do peak_rss "$fs"; done

ratio() { python3 -c "a, b = '$1', '$2'; print(f'{float(a) / float(b):.2f}x' if a and b and float(b) > 0 else '-')"; }
printf '%-10s %12s %12s %12s %16s %16s\n' row holdfast fuse2fs kernel fuse2fs/holdfast holdfast/kernel
for row in cp ls write read randread randwrite rm; do
    h=${RESULT[holdfast,$row]:-} f=${RESULT[fuse2fs,$row]:-} k=${RESULT[kernel,$row]:-}
    if [ "$row" = randread ] || [ "$row" = randwrite ]; then
        printf '%-10s %12s %12s %12s %16s %16s\n' "$row(iops)" "$h" "$f" "$k" "$(ratio "$h" "$f")" "$(ratio "$k" "$h")"
    else
        printf '%-10s %12s %12s %12s %16s %16s\n' "$row(s)" "$h" "$f" "$k" "$(ratio "$f" "$h")" "$(ratio "$h" "$k")"
    fi
done
printf '%-10s %12s %12s %12s\n' "rss(KiB)" "${RESULT[holdfast,rss]:--}" "${RESULT[fuse2fs,rss]:--}" "-"
printf '%-10s %12s %12s %12s\n' e2fsck "${RESULT[holdfast,fsck]:--}" "${RESULT[fuse2fs,fsck]:--}" "${RESULT[kernel,fsck]:--}"
