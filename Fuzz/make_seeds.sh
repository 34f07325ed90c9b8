#!/usr/bin/env bash
# Seed corpora for the fuzz targets, generated with mkfs.ext4 (never committed):
#   make_seeds.sh OUT   ->  OUT/read (also the write target's), OUT/journal, OUT/directory
# Images of every kind Holdfast reads, kept small so that mutations land on metadata: 1 KiB and
# 4 KiB blocks, with and without metadata_csum, extents and block maps, inline data, an htree
# directory, orphan_file, a journal, and a journal that needs recovery (copied from a kernel
# mount; skipped, with a message, where loop mounts are not permitted).
set -euo pipefail
out=${1:?usage: make_seeds.sh OUT}
work=$(mktemp -d /dev/shm/holdfast-seeds.XXXXXX)
trap 'umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$out/read" "$out/journal" "$out/directory" "$work/mnt"

# A small tree with one of everything: data, a hole, a symlink of each kind, a device, a fifo,
# xattrs, a hard link, and a directory large enough for an htree.
tree=$work/tree
mkdir -p "$tree/etc" "$tree/big"
printf 'root:x:0:0::/root:/bin/sh\n' > "$tree/etc/passwd"
seq 1 3000 > "$tree/numbers"
truncate -s 40K "$tree/sparse" && printf tail >> "$tree/sparse"
ln -s etc/passwd "$tree/short-link"
ln -s "$(printf 'x%.0s' {1..90})" "$tree/long-link"
ln "$tree/numbers" "$tree/hard"
mknod "$tree/null" c 1 3 2>/dev/null || true
mkfifo "$tree/fifo"
setfattr -n user.origin -v seed "$tree/etc/passwd" 2>/dev/null || true
for i in $(seq 1 120); do : > "$tree/big/entry-with-a-longer-name-$i"; done

# The image without its trailing zero blocks (the harnesses extend an input with zeros to the
# size its superblock gives).
trimmed() {
  python3 - "$1" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
end = len(data)
while end > 2048 and not any(data[end - 1024:end]):
    end -= 1024
sys.stdout.buffer.write(data[:end])
PY
}

n=0
image() {  # image NAME SIZE MKFS-OPTIONS...
  local name=$1 size=$2; shift 2
  if mkfs.ext4 -q -F -d "$tree" "$@" "$work/$name.img" "$size" >"$work/mkfs.log" 2>&1; then
    trimmed "$work/$name.img" > "$out/read/$name.img"; n=$((n + 1))
  else
    echo "make_seeds: mkfs.ext4 $* refused ($(tail -1 "$work/mkfs.log")); no seed $name" >&2
  fi
}
image csum-1k        256K -b 1024 -N 200 -O ^has_journal,^resize_inode
image nocsum-1k      256K -b 1024 -N 200 -O ^has_journal,^resize_inode,^metadata_csum
image nocsum-4k      512K -b 4096 -N 200 -O ^has_journal,^resize_inode,^metadata_csum
image blockmap-1k    256K -b 1024 -N 200 -O ^has_journal,^resize_inode,^metadata_csum,^extent,^64bit,^flex_bg
image inline-1k      256K -b 1024 -N 200 -I 256 -O ^has_journal,^resize_inode,inline_data
image orphan-file-1k 2100K  -b 1024 -N 200 -O ^resize_inode,orphan_file,metadata_csum_seed -J size=1
image journal-1k     2100K  -b 1024 -N 200 -O ^resize_inode -J size=1

# A journal with transactions to replay: the kernel's, copied while it has the image mounted.
if [ -f "$work/journal-1k.img" ] && mount -o loop "$work/journal-1k.img" "$work/mnt" 2>/dev/null; then
  for i in 1 2 3; do mkdir "$work/mnt/new$i"; echo "$i" > "$work/mnt/new$i/f"; done
  rm "$work/mnt/numbers"
  sync -f "$work/mnt"
  trimmed "$work/journal-1k.img" > "$out/read/recover-1k.img"; n=$((n + 1))
  umount "$work/mnt"
  debugfs -R "dump <8> $work/recover.journal" "$out/read/recover-1k.img" >/dev/null 2>&1
  head -c 32768 "$work/recover.journal" > "$out/journal/recover.journal"
else
  echo "make_seeds: loop mounts are not permitted here: no seed with a journal to recover" >&2
fi
if [ -f "$work/journal-1k.img" ]; then
  debugfs -R "dump <8> $work/empty.journal" "$work/journal-1k.img" >/dev/null 2>&1
  head -c 32768 "$work/empty.journal" > "$out/journal/empty.journal"
fi

# Directory blocks: the control byte (block size 1 KiB << bits 0-1, checksums when bit 7 is
# set), then the block; a linear block and an htree root, leaf and (1 KiB) index of each image.
dirblock() {  # dirblock IMAGE PATH INDEX CONTROL NAME
  local block bs
  block=$(debugfs -R "bmap $2 $3" "$1" 2>/dev/null | tail -1)
  bs=$(dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Block size/ {gsub(/ /, "", $2); print $2}')
  [[ $block =~ ^[0-9]+$ ]] && [ "$block" != 0 ] || return 0
  { printf "\\x$(printf %02x "$4")"; dd if="$1" bs="$bs" skip="$block" count=1 status=none; } > "$out/directory/$5"
}
dirblock "$work/csum-1k.img"   /etc 0 128 linear-csum-1k
dirblock "$work/nocsum-1k.img" /etc 0 0   linear-1k
dirblock "$work/nocsum-4k.img" /etc 0 2   linear-4k
dirblock "$work/csum-1k.img"   /big 0 128 dxroot-csum-1k
dirblock "$work/csum-1k.img"   /big 1 128 dxleaf-csum-1k
dirblock "$work/nocsum-1k.img" /big 0 0   dxroot-1k
dirblock "$work/nocsum-1k.img" /big 2 0   dxleaf-1k
echo "make_seeds: $n images, $(ls "$out/journal" | wc -l) journals, $(ls "$out/directory" | wc -l) directory blocks in $out"
