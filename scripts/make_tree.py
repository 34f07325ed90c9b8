#!/usr/bin/env python3
"""Create a deterministic directory tree for Holdfast tests and benchmarks.

Usage:
  scripts/make_tree.py DEST [--profile small|bench] [--seed N]

DEST must not exist or must be an empty directory.

Profiles:
  small  (default) a few MB of awkward content meant to exercise every corner
         of an ext4 extractor: many file sizes, sparse files (holes at start,
         middle and end, data past 4 GiB), deep nesting, a 3,000-entry
         directory, odd names (spaces, UTF-8, non-UTF-8, 255 bytes), all
         symlink flavours, hard links, FIFO, socket, device nodes (root only),
         xattrs (in-inode and spilling into an xattr block), unusual modes,
         owners (root only) and explicit nanosecond atime/mtime.
  bench  20,000 regular files in ~620 directories, ~700 MiB in total, with a
         size mix of small (1-16 KiB), medium (100 KiB-1 MiB) and large
         (10-50 MiB) files. Progress is printed to stderr every 1000 files.
         Timestamps are whole seconds (mkfs.ext4 -d drops nanoseconds).

The same --seed always yields byte-identical contents, names, modes, owners
and timestamps (inode numbers and ctimes naturally differ).

mkfs.ext4 -d (e2fsprogs 1.47.0) does not reproduce the small tree exactly: it
drops nanoseconds, wraps times after 2038 to 32 bits, does not copy the root
directory's times, turns all-zero blocks into holes and adds lost+found. So
check an extraction of such an image against a `mount -o ro,loop,noatime` of
the image, not against this tree.

Note: the tree is meant to be read without touching atimes (mount/bind-mount
it noatime, or use O_NOATIME as treediff.py does); plain reads update atime
under the default relatime mount option because ctime is "now".
"""

import argparse
import os
import random
import socket
import stat
import sys

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

IS_ROOT = os.geteuid() == 0


def die(msg, code=2):
    print(f"make_tree.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


class Builder:
    """Creates entries and remembers the metadata to apply at the end.

    Metadata (owner, mode, times) is applied after everything exists, because
    creating children changes a directory's mtime, chown clears setuid bits,
    and a setgid directory would change the group of new children.
    """

    def __init__(self, root, rng):
        self.root = os.fsencode(root)
        self.rng = rng
        self.base_time = 1_600_000_000  # 2020-09-13, well inside all ranges
        self.meta = []  # (path, kind, mode, uid, gid, atime_ns, mtime_ns)
        self.counter = 0
        self.whole_seconds = False

    def p(self, rel):
        rel = os.fsencode(rel)
        return os.path.join(self.root, rel) if rel else self.root

    def next_times(self):
        """Deterministic (atime_ns, mtime_ns) pair, with non-zero nanoseconds
        unless whole_seconds is set."""
        self.counter += 1
        m_s = self.base_time + self.rng.randrange(0, 100_000_000)
        a_s = m_s + self.rng.randrange(0, 10_000_000)
        if self.whole_seconds:
            return a_s * 1_000_000_000, m_s * 1_000_000_000
        m_ns = m_s * 1_000_000_000 + self.rng.randrange(1, 1_000_000_000)
        a_ns = a_s * 1_000_000_000 + self.rng.randrange(1, 1_000_000_000)
        return a_ns, m_ns

    def remember(self, rel, kind, mode=None, owner=None, times=None):
        if times is None:
            times = self.next_times()
        uid, gid = owner if owner else (None, None)
        self.meta.append((self.p(rel), kind, mode, uid, gid, times[0], times[1]))

    # -- creators ---------------------------------------------------------

    def mkdir(self, rel, mode=0o755, owner=None, times=None):
        os.mkdir(self.p(rel), 0o700)
        self.remember(rel, "dir", mode, owner, times)

    def file(self, rel, data=b"", mode=0o644, owner=None, times=None):
        with open(self.p(rel), "wb") as f:
            f.write(data)
        self.remember(rel, "file", mode, owner, times)

    def symlink(self, rel, target, owner=None, times=None):
        os.symlink(os.fsencode(target), self.p(rel))
        self.remember(rel, "symlink", None, owner, times)

    def hardlink(self, existing, rel):
        os.link(self.p(existing), self.p(rel))  # same inode: no extra metadata

    def fifo(self, rel, mode=0o640, owner=None):
        os.mkfifo(self.p(rel), 0o600)
        self.remember(rel, "fifo", mode, owner)

    def device(self, rel, kind, major, minor, mode, owner=None):
        fmt = stat.S_IFCHR if kind == "chr" else stat.S_IFBLK
        os.mknod(self.p(rel), fmt | 0o600, os.makedev(major, minor))
        self.remember(rel, kind, mode, owner)

    def unix_socket(self, rel, mode=0o755, owner=None):
        path = self.p(rel)
        parent, name = os.path.split(path)
        # sun_path is limited to 108 bytes: bind a relative name from inside
        # the parent directory instead of the (possibly long) absolute path.
        old = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(parent)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(name)
            finally:
                s.close()
        finally:
            os.fchdir(old)
            os.close(old)
        self.remember(rel, "socket", mode, owner)

    def xattr(self, rel, name, value):
        os.setxattr(self.p(rel), name, value, follow_symlinks=False)

    # -- finishing ----------------------------------------------------------

    def apply_metadata(self):
        # Owners first (chown clears setuid/setgid), then modes, then times.
        # Directories last and deepest first so populating them is over.
        nondirs = [m for m in self.meta if m[1] != "dir"]
        dirs = [m for m in self.meta if m[1] == "dir"]
        dirs.sort(key=lambda m: m[0].count(b"/"), reverse=True)
        for path, kind, mode, uid, gid, a_ns, m_ns in nondirs + dirs:
            is_link = kind == "symlink"
            if uid is not None and IS_ROOT:
                os.chown(path, uid, gid, follow_symlinks=False)
            if mode is not None:
                os.chmod(path, mode)
            os.utime(path, ns=(a_ns, m_ns), follow_symlinks=not is_link)


# ---------------------------------------------------------------------------
# profile: small
# ---------------------------------------------------------------------------

def build_small(b):
    rng = b.rng
    rb = rng.randbytes

    # The root itself: explicit mode and times (set last, like all dirs).
    b.remember("", "dir", 0o755)

    # Regular files of awkward sizes.
    b.mkdir("sizes")
    for n in (0, 1, 4095, 4096, 4097, 65537, 1 * MiB, 1_000_003):
        b.file(f"sizes/size_{n}", rb(n))
    # A file whose middle block is all zeros (some tools turn it into a hole).
    b.file("sizes/zero_block_middle", rb(4096) + bytes(8192) + rb(4096))
    b.file("sizes/all_zeros_64k", bytes(64 * KiB))

    # Sparse files.
    b.mkdir("sparse")
    path = b.p("sparse/holes_start_middle_end")
    with open(path, "wb") as f:
        f.seek(64 * KiB)            # hole at the start
        f.write(rb(8 * KiB))
        f.seek(512 * KiB)           # hole in the middle
        f.write(rb(12 * KiB + 7))
        f.truncate(2 * MiB + 123)   # hole at the end (trailing hole)
    b.remember("sparse/holes_start_middle_end", "file", 0o644)
    path = b.p("sparse/data_past_4g")
    with open(path, "wb") as f:
        f.seek(5 * GiB)
        f.write(rb(4 * KiB))
    b.remember("sparse/data_past_4g", "file", 0o644)
    path = b.p("sparse/only_hole_1m")
    with open(path, "wb") as f:
        f.truncate(1 * MiB)
    b.remember("sparse/only_hole_1m", "file", 0o644)

    # Nested directories, 4 deep, with files at every level.
    rel = "nest"
    b.mkdir(rel)
    for depth in range(1, 5):
        rel = f"{rel}/level{depth}"
        b.mkdir(rel, mode=0o750 if depth == 3 else 0o755)
        b.file(f"{rel}/file_at_{depth}", rb(100 * depth))

    # A large directory (htree when the fs is made with dir_index).
    b.mkdir("bigdir")
    for i in range(3000):
        data = rb(i % 17) if i % 100 == 0 else b""
        b.file(f"bigdir/entry-with-a-longer-name-{i:05d}", data)

    # Names.
    b.mkdir("names")
    b.file("names/with spaces in it", b"spaces\n")
    b.file("names/ leading and trailing ", b"lt\n")
    b.file("names/-starts-with-dash", b"dash\n")
    b.file("names/tab\there", b"tab\n")
    b.file("names/new\nline", b"newline\n")
    b.file("names/héllo wörld ☃ 日本語", b"utf8\n")
    b.file("names/" + "n" * 251 + ".255", b"255 ascii\n")
    b.file("names/" + "é" * 127 + "x", b"255 bytes of utf-8\n")  # 255 bytes
    b.mkdir("names/" + "d" * 255)
    b.file("names/" + "d" * 255 + "/inside", b"in a 255-byte dir\n")
    b.file(b"names/latin1-caf\xe9", b"not valid utf-8\n")  # non-UTF-8 bytes

    # Symlinks.
    b.mkdir("links")
    b.symlink("links/fast", "target", owner=(1000, 1000))
    slow = "slow-target/" + "/".join(f"component{i:02d}" for i in range(20))
    assert len(slow) > 200
    b.symlink("links/slow", slow)
    b.symlink("links/dangling", "does/not/exist")
    b.symlink("links/absolute_outside", "/etc/passwd")
    b.symlink("links/relative_outside", "../../../../outside")
    b.symlink("links/to_sizes_file", "../sizes/size_4097")
    b.symlink("links/to_dir", "../nest")
    b.symlink("links/exactly_59", "x" * 59)  # biggest that fits in i_block
    b.symlink("links/exactly_60", "y" * 60)  # smallest that does not

    # Hard links: 3 names for one file across directories, plus a pair.
    b.mkdir("hard")
    b.mkdir("hard/sub")
    b.file("hard/original", rb(5000), mode=0o640, owner=(1000, 1000))
    b.hardlink("hard/original", "hard/sub/second_name")
    b.hardlink("hard/original", "names/third_name")
    b.file("hard/empty_a", b"")
    b.hardlink("hard/empty_a", "hard/sub/empty_b")

    # Special files.
    b.mkdir("special")
    b.fifo("special/fifo")
    b.unix_socket("special/socket")
    if IS_ROOT:
        b.device("special/chr_null", "chr", 1, 3, 0o666)
        b.device("special/blk_loop0", "blk", 7, 0, 0o660, owner=(0, 6))
        b.device("special/chr_bigminor", "chr", 240, 70000, 0o600)

    # Extended attributes.
    b.mkdir("xattrs")
    b.file("xattrs/small", b"x\n")
    b.xattr("xattrs/small", "user.comment", b"hello")
    b.xattr("xattrs/small", "user.empty", b"")
    b.xattr("xattrs", "user.dir_attr", b"on a directory")
    # 3 x 300 bytes cannot fit in the inode (~100 bytes free in a 256-byte
    # inode) but do fit one 1 KiB xattr block; with 8 x 300 bytes,
    # mkfs.ext4 -d -b 1024 fails ("Insufficient space to store extended
    # attribute data").
    b.file("xattrs/many_large", b"big xattrs\n")
    for i in range(3):
        b.xattr("xattrs/many_large", f"user.large{i}", rb(300))
    b.xattr("sizes/size_1", "user.binary", bytes(range(256)))
    if IS_ROOT:
        b.symlink("xattrs/symlink_with_xattr", "small")
        b.xattr("xattrs/symlink_with_xattr", "trusted.holdfast", b"on a link")
        b.xattr("xattrs/small", "trusted.md5sum", b"0123456789abcdef")
        b.xattr("xattrs/small", "security.holdfast", b"sec")

    # Modes and owners.
    b.mkdir("modes")
    b.file("modes/m0600", b"0600\n", mode=0o600)
    b.file("modes/m0755", b"#!/bin/sh\n", mode=0o755)
    b.file("modes/m4755_setuid", b"suid\n", mode=0o4755, owner=(1000, 1000))
    b.file("modes/m2755_setgid", b"sgid\n", mode=0o2755, owner=(0, 100))
    b.file("modes/m0000", b"nobody may read\n", mode=0o000)
    b.file("modes/m7777", b"all bits\n", mode=0o7777)
    b.mkdir("modes/sticky_1777", mode=0o1777)
    b.file("modes/sticky_1777/inside", b"t\n", mode=0o666, owner=(65534, 100))
    b.mkdir("modes/setgid_dir_2775", mode=0o2775, owner=(1000, 1000))
    b.mkdir("modes/readonly_dir_0555", mode=0o555)
    b.file("modes/readonly_dir_0555/f", b"r\n", mode=0o444)
    b.file("modes/owner_1000", b"u\n", owner=(1000, 1000))
    b.file("modes/owner_65534_100", b"n\n", owner=(65534, 100))
    b.file("modes/owner_0", b"r\n", owner=(0, 0))
    b.mkdir("modes/dir_owner_1000", mode=0o700, owner=(1000, 1000))

    # Timestamps outside the usual range (ext4 extra epoch bits).
    b.mkdir("times")
    b.file("times/before_1970", b"old\n",
           times=(-100_000_000 * 10**9 + 123_456_789,
                  -200_000_000 * 10**9 + 987_654_321))
    b.file("times/after_2038", b"future\n",
           times=(4_102_444_800 * 10**9 + 1, 4_200_000_000 * 10**9 + 999_999_999))
    b.file("times/epoch_zero", b"zero\n", times=(0, 0))
    b.file("times/whole_seconds", b"ws\n",
           times=(1_500_000_000 * 10**9, 1_500_000_001 * 10**9))


# ---------------------------------------------------------------------------
# profile: bench
# ---------------------------------------------------------------------------

def build_bench(b):
    rng = b.rng
    # mkfs.ext4 -d (e2fsprogs 1.47) stores whole seconds only; whole-second
    # times let an extraction of such an image be compared with this tree.
    b.whole_seconds = True
    n_files = 20_000
    n_top, n_sub = 20, 30            # 20 + 600 directories
    n_large, n_medium = 10, 450
    target_total = 700 * MiB

    buf = rng.randbytes(MiB)
    buf2 = buf + buf

    dirs = []
    b.remember("", "dir", 0o755, times=(1_650_000_000 * 10**9, 1_650_000_000 * 10**9))
    for t in range(n_top):
        top = f"dir{t:02d}"
        b.mkdir(top)
        dirs.append(top)
        for s in range(n_sub):
            sub = f"{top}/sub{s:02d}"
            b.mkdir(sub)
            dirs.append(sub)

    # Sizes: small and medium drawn at random, large ones fill up the total.
    kinds = ["large"] * n_large + ["medium"] * n_medium
    kinds += ["small"] * (n_files - len(kinds))
    rng.shuffle(kinds)
    sizes = []
    for k in kinds:
        if k == "small":
            sizes.append(rng.randrange(1 * KiB, 16 * KiB + 1))
        elif k == "medium":
            sizes.append(rng.randrange(100 * KiB, 1 * MiB + 1))
        else:
            sizes.append(None)
    rest = target_total - sum(s for s in sizes if s is not None)
    large_lo, large_hi = 10 * MiB, 50 * MiB
    if not (n_large * large_lo <= rest <= n_large * large_hi):
        die(f"internal: cannot fit large files into {rest} bytes", 3)
    # Random split of `rest` into n_large parts, each within [lo, hi].
    weights = [rng.random() for _ in range(n_large)]
    spare = rest - n_large * large_lo
    large_sizes = [large_lo + int(spare * w / sum(weights)) for w in weights]
    large_sizes[-1] += rest - sum(large_sizes)
    for i, s in enumerate(large_sizes):  # clamp, pushing overflow forward
        if s > large_hi:
            large_sizes[i] = large_hi
            large_sizes[(i + 1) % n_large] += s - large_hi
    it = iter(large_sizes)
    sizes = [s if s is not None else next(it) for s in sizes]

    total = 0
    for i, size in enumerate(sizes):
        d = dirs[rng.randrange(len(dirs))]
        ext = (".txt", ".bin", ".dat", ".log", "")[i % 5]
        rel = f"{d}/file{i:05d}{ext}"
        off = rng.randrange(MiB)
        with open(b.p(rel), "wb") as f:
            left, chunk = size, 0
            while left > 0:
                o = (off + chunk * 7919) % MiB
                n = min(left, MiB)
                f.write(buf2[o:o + n])
                left -= n
                chunk += 1
        mode = 0o755 if i % 23 == 0 else 0o644
        b.remember(rel, "file", mode)
        total += size
        if (i + 1) % 1000 == 0:
            print(f"make_tree: {i + 1}/{n_files} files, {total / MiB:.0f} MiB",
                  file=sys.stderr, flush=True)
    return total


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s DEST [--profile small|bench] [--seed N]",
        epilog="Example: scripts/make_tree.py /tmp/tree --profile small --seed 1")
    ap.add_argument("dest", metavar="DEST",
                    help="directory to create (must not exist or be empty)")
    ap.add_argument("--profile", choices=("small", "bench"), default="small",
                    help="which tree to build (default: small)")
    ap.add_argument("--seed", type=int, default=1,
                    help="random seed (default: 1)")
    args = ap.parse_args()

    dest = os.path.abspath(args.dest)
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest):
            die(f"{dest} exists and is not a directory")
        if os.listdir(dest):
            die(f"{dest} is not empty")
    else:
        parent = os.path.dirname(dest)
        if not os.path.isdir(parent):
            die(f"parent directory {parent} does not exist")
        os.mkdir(dest)

    rng = random.Random(f"holdfast-{args.profile}-{args.seed}")
    b = Builder(dest, rng)
    os.umask(0o022)
    try:
        if args.profile == "small":
            if not IS_ROOT:
                print("make_tree: not root: skipping device nodes, owners and "
                      "trusted.*/security.* xattrs", file=sys.stderr)
            build_small(b)
            total = None
        else:
            total = build_bench(b)
        b.apply_metadata()
    except OSError as e:
        die(f"{e.strerror}: {os.fsdecode(e.filename) if e.filename else ''} "
            f"(while building profile {args.profile})", 1)

    n = len(b.meta)
    extra = f", {total} bytes of file data" if total is not None else ""
    print(f"make_tree: created {dest} (profile {args.profile}, seed {args.seed}, "
          f"{n} inodes with metadata{extra})", file=sys.stderr)


if __name__ == "__main__":
    main()
