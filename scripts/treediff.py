#!/usr/bin/env python3
"""Compare two directory trees, metadata included.

Usage:
  scripts/treediff.py A B [--no-owner] [--no-devices] [--ignore-root-times]

Exit status: 0 when the trees are equal, 1 when they differ (every difference
is listed, printing capped at 50 lines plus a count), 2 on usage errors (and
on I/O errors that stop the walk).

Compared for every path (lstat, symlinks are never followed, names handled as
raw bytes so non-UTF-8 names work):
  - the set of names in each directory, and the file type
  - permission bits incl. setuid/setgid/sticky (mode & 0o7777), not for symlinks
  - uid and gid (unless --no-owner)
  - st_mtime_ns and st_atime_ns (never ctime); for symlinks only the mtime,
    reported as "symlink-mtime" (many tools cannot set it)
  - regular files: size and content (SHA-256 per 1 MiB chunk; chunks that lie
    in a hole are not read, so huge sparse files are cheap)
  - symlinks: target bytes; devices: st_rdev
  - xattrs (names and values); system.posix_acl* names that cannot be read
    are ignored
  - hard links: the partition of non-directory paths into groups sharing an
    inode must be the same in both trees, and st_nlink must be equal

Options:
  --no-owner           do not compare uid/gid
  --no-xattrs          do not compare xattrs
  --no-devices         skip character and block devices entirely (e.g. when
                       one side was extracted without the right to mknod)
  --ignore-root-times  do not compare atime/mtime of A and B themselves

Reading is done with O_NOATIME where permitted (owner or root), so running
this script does not change the atimes it compares.
"""

import argparse
import errno
import hashlib
import os
import stat
import sys

MAX_LINES = 50
CHUNK = 1 << 20


def show(rel):
    if not rel:
        return "."
    text = rel.decode("utf-8", "backslashreplace")  # bad bytes -> \\xNN
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                   for c in text)


def ftype(mode):
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "char device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return f"unknown type {stat.S_IFMT(mode):o}"


def open_noatime(path, flags):
    """open() with O_NOATIME, falling back when not permitted (EPERM)."""
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        return os.open(path, flags)


def list_dir(path):
    fd = open_noatime(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sorted(os.fsencode(n) for n in os.listdir(fd))
    finally:
        os.close(fd)


_ZERO_DIGESTS = {}


def _zero_digest(n):
    if n not in _ZERO_DIGESTS:
        _ZERO_DIGESTS[n] = hashlib.sha256(bytes(n)).digest()
    return _ZERO_DIGESTS[n]


def _next_data(fd, off, size):
    """Offset of the next data byte at or after off (size if none)."""
    try:
        return os.lseek(fd, off, os.SEEK_DATA)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return size
        return off  # SEEK_DATA unsupported: treat everything as data


def file_hash(path):
    """Digest of a file's bytes: SHA-256 over the SHA-256 of each 1 MiB chunk.

    Chunks lying entirely in a hole are not read (their digest is that of
    zeros), so a 5 GiB sparse file costs nothing. Holes and written zeros
    give the same digest, as they hold the same bytes.
    """
    h = hashlib.sha256()
    fd = open_noatime(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        off, data_at = 0, -1
        while off < size:
            end = min(off + CHUNK, size)
            if data_at < off:
                data_at = _next_data(fd, off, size)
            if data_at >= end:
                h.update(_zero_digest(end - off))
            else:
                parts, pos = [], off
                while pos < end:
                    buf = os.pread(fd, end - pos, pos)
                    if not buf:
                        raise OSError(errno.EIO, "file shrank while reading",
                                      path)
                    parts.append(buf)
                    pos += len(buf)
                h.update(hashlib.sha256(b"".join(parts)).digest())
            off = end
    finally:
        os.close(fd)
    return h.hexdigest()


def read_xattrs(path):
    """Return ({name: value}, [errors])."""
    out, errs = {}, []
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return out, errs
        return out, [f"listxattr failed: {e.strerror}"]
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if name.startswith("system.posix_acl"):
                continue
            errs.append(f"getxattr {name} failed: {e.strerror}")
    return out, errs


def short(value, limit=40):
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + f"... ({len(value)} bytes)"


def fmt_ns(ns):
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


class TreeDiff:
    def __init__(self, a, b, no_owner, no_devices, ignore_root_times, no_xattrs=False):
        self.no_xattrs = no_xattrs
        self.a, self.b = a, b
        self.no_owner = no_owner
        self.no_devices = no_devices
        self.ignore_root_times = ignore_root_times
        self.diffs = []
        # (st_dev, st_ino) -> [rel paths], for non-directories
        self.inodes = ({}, {})
        self.nlink = ({}, {})

    def diff(self, rel, label, detail):
        self.diffs.append(f"{show(rel)}: {label}: {detail}")

    def skip(self, st):
        return self.no_devices and (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode))

    def run(self):
        self.compare(b"")
        self.compare_hardlinks()
        return self.diffs

    def compare(self, rel):
        """Compare one path that exists in both trees, recursing into dirs."""
        pa = os.path.join(self.a, rel) if rel else self.a
        pb = os.path.join(self.b, rel) if rel else self.b
        sa, sb = os.lstat(pa), os.lstat(pb)
        ta, tb = ftype(sa.st_mode), ftype(sb.st_mode)
        if ta != tb:
            self.diff(rel, "type", f"{ta} != {tb}")
            return
        is_link = stat.S_ISLNK(sa.st_mode)
        is_dir = stat.S_ISDIR(sa.st_mode)

        if not is_link and stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
            self.diff(rel, "mode", f"{stat.S_IMODE(sa.st_mode):04o} != "
                                   f"{stat.S_IMODE(sb.st_mode):04o}")
        if not self.no_owner and (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid):
            self.diff(rel, "owner", f"{sa.st_uid}:{sa.st_gid} != {sb.st_uid}:{sb.st_gid}")
        if not (rel == b"" and self.ignore_root_times):
            if sa.st_mtime_ns != sb.st_mtime_ns:
                self.diff(rel, "symlink-mtime" if is_link else "mtime",
                          f"{fmt_ns(sa.st_mtime_ns)} != {fmt_ns(sb.st_mtime_ns)}")
            if not is_link and sa.st_atime_ns != sb.st_atime_ns:
                self.diff(rel, "atime",
                          f"{fmt_ns(sa.st_atime_ns)} != {fmt_ns(sb.st_atime_ns)}")
        if not is_dir:
            for side, st in enumerate((sa, sb)):
                self.inodes[side].setdefault((st.st_dev, st.st_ino), []).append(rel)
                self.nlink[side][rel] = st.st_nlink

        if stat.S_ISREG(sa.st_mode):
            if sa.st_size != sb.st_size:
                self.diff(rel, "size", f"{sa.st_size} != {sb.st_size}")
            else:
                try:
                    ha, hb = file_hash(pa), file_hash(pb)
                    if ha != hb:
                        self.diff(rel, "content", f"sha256 {ha[:16]}... != {hb[:16]}...")
                except OSError as e:
                    self.diff(rel, "content", f"cannot read: {e.strerror}: "
                                              f"{os.fsdecode(e.filename)}")
        elif is_link:
            la, lb = os.readlink(pa), os.readlink(pb)
            if la != lb:
                self.diff(rel, "symlink target", f"{short(la)} != {short(lb)}")
        elif stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
            if sa.st_rdev != sb.st_rdev:
                self.diff(rel, "rdev",
                          f"{os.major(sa.st_rdev)},{os.minor(sa.st_rdev)} != "
                          f"{os.major(sb.st_rdev)},{os.minor(sb.st_rdev)}")

        if not self.no_xattrs:
            xa, ea = read_xattrs(pa)
            xb, eb = read_xattrs(pb)
            for e in ea:
                self.diff(rel, "xattr", f"in A: {e}")
            for e in eb:
                self.diff(rel, "xattr", f"in B: {e}")
            for name in sorted(set(xa) | set(xb)):
                if name not in xb:
                    self.diff(rel, "xattr", f"{name} only in A")
                elif name not in xa:
                    self.diff(rel, "xattr", f"{name} only in B")
                elif xa[name] != xb[name]:
                    self.diff(rel, "xattr", f"{name} value {short(xa[name])} != {short(xb[name])}")

        if is_dir:
            self.compare_dir(rel, pa, pb)

    def compare_dir(self, rel, pa, pb):
        try:
            na, nb = list_dir(pa), list_dir(pb)
        except OSError as e:
            self.diff(rel, "directory", f"cannot list: {e.strerror}: "
                                        f"{os.fsdecode(e.filename)}")
            return
        sa_, sb_ = set(na), set(nb)
        for name in sorted(sa_ | sb_):
            child = os.path.join(rel, name) if rel else name
            if self.no_devices and any(
                    self.skip(os.lstat(os.path.join(root, name)))
                    for root, names in ((pa, sa_), (pb, sb_)) if name in names):
                continue
            if name in sa_ and name in sb_:
                self.compare(child)
                continue
            side, root = ("A", pa) if name in sa_ else ("B", pb)
            st = os.lstat(os.path.join(root, name))
            self.diff(child, "missing", f"only in {side} ({ftype(st.st_mode)})")

    def compare_hardlinks(self):
        def groups(side):
            g = {}
            for paths in self.inodes[side].values():
                key = frozenset(paths)
                for p in paths:
                    g[p] = key
            return g

        ga, gb = groups(0), groups(1)
        seen = set()
        for rel in sorted(set(ga) & set(gb)):
            if ga[rel] != gb[rel] and ga[rel] not in seen:
                seen.add(ga[rel])
                a_names = ", ".join(show(p) for p in sorted(ga[rel]))
                b_names = ", ".join(show(p) for p in sorted(gb[rel]))
                self.diff(rel, "hard links", f"A links [{a_names}], B links [{b_names}]")
            na, nb = self.nlink[0][rel], self.nlink[1][rel]
            if na != nb:
                self.diff(rel, "nlink", f"{na} != {nb}")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s A B [--no-owner] [--no-devices] [--ignore-root-times]")
    ap.add_argument("a", metavar="A", help="first tree")
    ap.add_argument("b", metavar="B", help="second tree")
    ap.add_argument("--no-owner", action="store_true", help="ignore uid/gid")
    ap.add_argument("--no-xattrs", action="store_true", help="do not compare xattrs")
    ap.add_argument("--no-devices", action="store_true",
                    help="skip char/block devices")
    ap.add_argument("--ignore-root-times", action="store_true",
                    help="ignore atime/mtime of the two roots")
    args = ap.parse_args()

    for p in (args.a, args.b):
        if not os.path.isdir(p) or os.path.islink(p):
            ap.error(f"{p} is not a directory")

    td = TreeDiff(os.fsencode(args.a), os.fsencode(args.b),
                  args.no_owner, args.no_devices, args.ignore_root_times, args.no_xattrs)
    try:
        diffs = td.run()
    except OSError as e:
        print(f"treediff.py: error: {e.strerror}: {os.fsdecode(e.filename or b'')}",
              file=sys.stderr)
        return 2
    if not diffs:
        print(f"treediff: equal: {args.a} == {args.b}")
        return 0
    for line in diffs[:MAX_LINES]:
        print(line)
    if len(diffs) > MAX_LINES:
        print(f"... and {len(diffs) - MAX_LINES} more differences")
    print(f"treediff: {len(diffs)} difference(s) between {args.a} and {args.b}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
