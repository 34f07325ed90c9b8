#!/usr/bin/env bash
# Build an ext4 test image whose contents are written by the Linux kernel
# (not by mkfs -d), so it has the on-disk shapes only a real driver makes.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/kernel_image.sh IMAGE BLOCKSIZE [--no-csum]

Creates IMAGE (a sparse 6 GiB file, overwritten if it exists) with
  mkfs.ext4 -q -F -b BLOCKSIZE [-O ^metadata_csum] IMAGE 6G
then loop-mounts it read-write and lets the kernel write:
  /big            20,000 empty files f00000..f19999 plus 300 long names
                  (a multi-level htree with 1 KiB blocks)
  /churn          3,000 files, every 3rd deleted, then 1,000 new ones
                  (deleted dir entries, reused inodes and blocks)
  /prealloc       fallocate -l 8M (unwritten extents only)
  /prealloc_part  fallocate -l 8M, then 64 KiB+123 bytes written at 1 MiB
  /keep_size      4 KiB of data + fallocate -n (keep size) to 4 MiB (extents past EOF)
  /punched        1 MiB of data with a 256 KiB hole punched in the middle
  /deep           one block written every other block, 3,000 times
                  (extent tree of depth >= 2; checked)
  /sparse_5g      4 KiB written at offset 5 GiB
  /xattr_inode    a small user xattr (stays in the inode)
  /xattr_block_a, /xattr_block_b
                  identical sets of 500-byte user xattrs (in an xattr block,
                  which the kernel shares between the two files)
  /types/...      regular, dir, fast and slow symlink, hard link, fifo,
                  char device 1,3, block device 7,0, socket, a symlink with a
                  trusted.* xattr
  /times/...      nanosecond times before 1970 and after 2038
then unmounts and requires `e2fsck -fn IMAGE` to pass.

BLOCKSIZE is 1024, 2048 or 4096. --no-csum disables metadata_csum.
Needs root (loop mount, mknod), mkfs.ext4, e2fsck, debugfs, fallocate and
python3. Output: one summary line on stdout. Exit 0 on success, 1 on failure,
2 on usage errors.
EOF
}

die() { echo "kernel_image.sh: error: $*" >&2; exit 1; }

IMAGE="" BS="" CSUM=1
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --no-csum) CSUM=0 ;;
        -*) echo "kernel_image.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
        *)
            if [[ -z "$IMAGE" ]]; then IMAGE="$arg"
            elif [[ -z "$BS" ]]; then BS="$arg"
            else echo "kernel_image.sh: too many arguments" >&2; usage >&2; exit 2
            fi ;;
    esac
done
if [[ -z "$IMAGE" || -z "$BS" ]]; then usage >&2; exit 2; fi
case "$BS" in 1024|2048|4096) ;; *)
    echo "kernel_image.sh: BLOCKSIZE must be 1024, 2048 or 4096 (got $BS)" >&2; exit 2 ;;
esac
[[ $EUID -eq 0 ]] || die "must run as root (loop mount and mknod)"
for tool in mkfs.ext4 e2fsck debugfs fallocate python3 mount umount; do
    command -v "$tool" >/dev/null || die "required tool '$tool' not found"
done
[[ -d "$(dirname -- "$IMAGE")" ]] || die "directory of $IMAGE does not exist"

START=$SECONDS
MNT=""
cleanup() {
    if [[ -n "$MNT" ]]; then
        if mountpoint -q "$MNT"; then umount "$MNT" || echo "kernel_image.sh: warning: could not unmount $MNT" >&2; fi
        rmdir "$MNT" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -- mkfs -------------------------------------------------------------------
MKFS_OPTS=(-q -F -b "$BS")
[[ $CSUM -eq 1 ]] || MKFS_OPTS+=(-O ^metadata_csum)
truncate -s 0 -- "$IMAGE"
mkfs.ext4 "${MKFS_OPTS[@]}" "$IMAGE" 6G || die "mkfs.ext4 failed"

MNT=$(mktemp -d /tmp/holdfast-kimg.XXXXXX)
mount -o loop,rw -- "$IMAGE" "$MNT" || die "cannot loop-mount $IMAGE"

# -- content ----------------------------------------------------------------
# Python does the bulk work (20k files, 3k writes, xattrs, socket); it prints
# "reused=N" for the summary.
REUSED=$(python3 - "$MNT" "$BS" <<'PY'
import os, random, socket, subprocess, sys

mnt, bs = sys.argv[1], int(sys.argv[2])
rng = random.Random(f"holdfast-kernel-image-{bs}")
j = lambda *p: os.path.join(mnt, *p)

def write(path, data, offset=0, mode="wb"):
    with open(path, mode) as f:
        f.seek(offset)
        f.write(data)

# /big: a multi-level htree.
os.mkdir(j("big"))
for i in range(20000):
    os.close(os.open(j("big", f"f{i:05d}"), os.O_CREAT | os.O_WRONLY, 0o644))
for i in range(300):
    name = f"long-{i:03d}-" + "x" * (90 + (i * 7) % 150)
    os.close(os.open(j("big", name), os.O_CREAT | os.O_WRONLY, 0o644))

# /churn: delete every 3rd file, then create new ones (reused inodes).
os.mkdir(j("churn"))
for i in range(3000):
    write(j("churn", f"c{i:04d}"), rng.randbytes(100 + i % 1500))
os.sync()
freed = set()
for i in range(0, 3000, 3):
    p = j("churn", f"c{i:04d}")
    freed.add(os.lstat(p).st_ino)
    os.unlink(p)
os.sync()
reused = 0
for i in range(1000):
    p = j("churn", f"new-{i:04d}")
    write(p, rng.randbytes(50 + i % 700))
    reused += os.lstat(p).st_ino in freed

# /deep: one block written every other block -> 3,000 one-block extents.
fd = os.open(j("deep"), os.O_CREAT | os.O_WRONLY, 0o644)
block = rng.randbytes(bs)
for i in range(3000):
    os.pwrite(fd, block[i % 7:] + block[:i % 7], 2 * i * bs)
os.close(fd)

# Sparse file past 4 GiB.
write(j("sparse_5g"), rng.randbytes(4096), offset=5 << 30)

# xattrs: small one stays in the inode; big ones need an xattr block.
write(j("xattr_inode"), b"small xattr\n")
os.setxattr(j("xattr_inode"), "user.small", b"hello")
n_big = max(1, min(4, (bs - 64) // 540))   # what fits in one xattr block
values = [rng.randbytes(500) for _ in range(n_big)]
for name in ("xattr_block_a", "xattr_block_b"):
    write(j(name), b"big xattrs\n")
    for k, v in enumerate(values):
        os.setxattr(j(name), f"user.big{k}", v)
os.mkdir(j("xattr_dir"))
os.setxattr(j("xattr_dir"), "user.on_dir", b"directory xattr")

# Every file type.
t = j("types")
os.mkdir(t)
write(os.path.join(t, "regular"), rng.randbytes(10000))
os.mkdir(os.path.join(t, "dir"))
os.symlink("regular", os.path.join(t, "fast_symlink"))
os.symlink("/".join(f"segment-{k:02d}" for k in range(20)), os.path.join(t, "slow_symlink"))
os.symlink("regular", os.path.join(t, "symlink_xattr"))
os.setxattr(os.path.join(t, "symlink_xattr"), "trusted.holdfast", b"link xattr",
            follow_symlinks=False)
os.link(os.path.join(t, "regular"), os.path.join(t, "dir", "hard_link"))
os.mkfifo(os.path.join(t, "fifo"))
os.mknod(os.path.join(t, "char_1_3"), 0o20666, os.makedev(1, 3))
os.mknod(os.path.join(t, "block_7_0"), 0o60660, os.makedev(7, 0))
old = os.getcwd()
os.chdir(t)
s = socket.socket(socket.AF_UNIX)
s.bind("socket")
s.close()
os.chdir(old)

# Timestamps that need the extra epoch bits.
os.mkdir(j("times"))
for name, ns in (("before_1970", -123_456_789_987_654_321),
                 ("after_2038", 4_300_000_000_123_456_789)):
    write(j("times", name), name.encode())
    os.utime(j("times", name), ns=(ns, ns + 1))

print(reused)
PY
) || die "populating the image failed"

# fallocate cases through the fallocate(1) tool.
fallocate -l 8M "$MNT/prealloc" || die "fallocate failed"
fallocate -l 8M "$MNT/prealloc_part"
python3 -c 'import os,random,sys
fd=os.open(sys.argv[1],os.O_WRONLY)
os.pwrite(fd,random.Random(7).randbytes(65536+123),1<<20)
os.close(fd)' "$MNT/prealloc_part"
python3 -c 'import random,sys; open(sys.argv[1],"wb").write(random.Random(8).randbytes(4096))' "$MNT/keep_size"
fallocate -n -l 4M "$MNT/keep_size" || die "fallocate --keep-size failed"
python3 -c 'import random,sys; open(sys.argv[1],"wb").write(random.Random(9).randbytes(1<<20))' "$MNT/punched"
fallocate -p -o 256K -l 256K "$MNT/punched" || die "fallocate --punch-hole failed"

USED_INODES=$(find "$MNT" -xdev | wc -l)
sync
umount "$MNT"

# -- checks -------------------------------------------------------------------
FSCK_OUT=$(e2fsck -fn "$IMAGE" 2>&1) || { echo "$FSCK_OUT" >&2; die "e2fsck -fn $IMAGE reported problems"; }

# Extent depth of /deep: the largest "N/ M" in the Level column of `ex`.
DEPTH=$(debugfs -R 'ex /deep' "$IMAGE" 2>/dev/null \
    | awk 'NR > 1 { split($0, a, "/"); d = a[2] + 0; if (d > max) max = d } END { print max + 0 }')
[[ "$DEPTH" -ge 2 ]] || die "/deep has extent depth $DEPTH, expected >= 2"

HTREE=$(debugfs -R 'htree /big' "$IMAGE" 2>/dev/null | awk '/Indirect levels:/ { print $3; exit }')
[[ -n "$HTREE" ]] || die "/big is not an htree directory"
if [[ "$BS" -eq 1024 && "$HTREE" -lt 1 ]]; then
    die "/big has $HTREE indirect htree levels with 1 KiB blocks, expected >= 1"
fi

ACL_A=$(debugfs -R 'stat /xattr_block_a' "$IMAGE" 2>/dev/null | awk '/^File ACL:/ { print $3 }')
ACL_B=$(debugfs -R 'stat /xattr_block_b' "$IMAGE" 2>/dev/null | awk '/^File ACL:/ { print $3 }')
[[ -n "$ACL_A" && "$ACL_A" != 0 ]] || die "/xattr_block_a has no xattr block"
SHARED=no
[[ "$ACL_A" == "$ACL_B" ]] && SHARED=yes

echo "kernel_image: $IMAGE bs=$BS metadata_csum=$([[ $CSUM -eq 1 ]] && echo on || echo off)" \
     "paths=$USED_INODES htree_indirect_levels(/big)=$HTREE extent_depth(/deep)=$DEPTH" \
     "reused_inodes(/churn)=$REUSED/1000 shared_xattr_block=$SHARED e2fsck=clean" \
     "time=$((SECONDS - START))s"
