#!/usr/bin/env python3
"""Judge a mounted filesystem's POSIX behaviour against the kernel's ext4.

Usage:
  scripts/posix_diff.py semantics DIR_REF DIR_TEST [--json OUT] [--strict]
  scripts/posix_diff.py random DIR_REF DIR_TEST --seed N --ops K [--json OUT] [--strict]

DIR_REF is a directory on a kernel ext4 mount (the judge), DIR_TEST one on the
filesystem under test (e.g. `holdfast mount IMAGE DIR`). Run as root: cases
fork children that switch to uid/gid 1000, chown to 1000/1001 and make device
nodes. Some results depend on the block size (xattr space, symlink and file
size limits), so both sides should be made with the same mkfs parameters.

The same sequence of operations runs first in DIR_REF, then in DIR_TEST, each
time inside a fresh work directory (posix_diff-semantics or posix_diff-random,
removed first when left over from an earlier run, kept afterwards for
inspection). Every operation yields a record (step, result); the two record
lists are then compared step by step.

Results are recorded so that they are comparable across two filesystems:
return values, errno names, data as its bytes when short or else length and
sha1, stat as file type, permission bits in octal, nlink, uid, gid, size and
device numbers. Never absolute times or inode numbers: an operation is judged
by which timestamps it changed (atime and mtime are first set to a fixed old
value, ctime is compared with its value before the operation after a 20 ms
pause, which lasts into the next second when that ctime has no sub-second
part, so that filesystems with 1 s timestamps are judged fairly), inode
identity only as "same inode as". Listings are sorted and exclude '.' and
'..'.

semantics  a fixed suite of named cases (CASES below), each in its own
           directory; an exception ends only its own case and is recorded.
random     K operations from random.Random(N) over a small namespace, generated
           independently of their results (ops on missing paths record their
           errno); each op's result is recorded, and a snapshot of the whole
           tree every 10 ops and at the end.

--only CASE,...  /  --skip CASE,...   run only / leave out these cases
           (semantics; names as printed in the steps, e.g. --skip names when
           a broken filesystem would otherwise be wrecked for the later cases).
--strict   also compare st_blocks and directory sizes; these depend on the
           layout and differ even between two kernel ext4 images (a large
           directory's size depends on the per-image hash seed).
--known STEP,...   steps (or step prefixes) whose differences are known
           limits of the filesystem under test: they are listed as known and
           do not make the run fail; a known step that matches is reported too.
--json OUT write both record lists to OUT.

Exit status: 0 when the records are identical, 1 when they differ (the first
differences are printed), 2 on usage errors.
"""

import argparse
import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import shutil
import stat
import subprocess
import sys
import time
import traceback

KiB = 1024
MiB = 1024 * KiB
USER, OTHER = 1000, 1001           # unprivileged ids used by the cases
OLD_NS = 1_000_000_000 * 10**9     # the fixed "old" atime/mtime (2001-09-09)
TICK = 0.02                        # pause so that even a coarse clock moves
SHORT_DATA = 32                    # data up to this length is recorded as is
EXT4_SIZE_LIMITS = {  # maximum size of an extent-mapped file per block size
    f"{1 << bits}_byte_blocks": ((1 << 32) - 1) << bits for bits in (10, 11, 12)}
LAYOUT_KEYS = ("blocks", "dir_size")  # compared only with --strict
MAX_REPORTED = 25

AT_SYMLINK_FOLLOW = 0x400
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_ZERO_RANGE = 0x08, 0x10
FALLOC_FL_INSERT_RANGE = 0x20
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2

FILE_TYPES = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev",
    stat.S_IFSOCK: "socket",
}

# --------------------------------------------------------------------------
# libc calls that the os module lacks

from libc_calls import AT_FDCWD, check_libc, fallocate, libc_function, renameat2  # noqa: E402


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


LIBC_LINKAT = libc_function(
    "linkat", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int])
LIBC_UTIMENSAT = libc_function(
    "utimensat", [ctypes.c_int, ctypes.c_char_p,
                  ctypes.POINTER(Timespec), ctypes.c_int])


def link_following(source, target):
    """linkat with AT_SYMLINK_FOLLOW (os.link calls link(), which never follows)."""
    check_libc(LIBC_LINKAT(AT_FDCWD, os.fsencode(source), AT_FDCWD,
                           os.fsencode(target), AT_SYMLINK_FOLLOW))


def utimensat(path, atime, mtime):
    """atime and mtime: ns since the epoch, or UTIME_NOW / UTIME_OMIT."""
    def timespec(value):
        if value in (UTIME_NOW, UTIME_OMIT):
            return Timespec(0, value)
        return Timespec(*divmod(value, 10**9))
    times = (Timespec * 2)(timespec(atime), timespec(mtime))
    check_libc(LIBC_UTIMENSAT(AT_FDCWD, os.fsencode(path), times, 0))

# --------------------------------------------------------------------------
# Recording results


def errno_name(exc):
    return "E:" + errno.errorcode.get(exc.errno, str(exc.errno))


def data_summary(data):
    if len(data) <= SHORT_DATA:
        return repr(bytes(data))
    return f"{len(data)} bytes sha1:{hashlib.sha1(data).hexdigest()}"


def stat_summary(st):
    kind = FILE_TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
    summary = {"type": kind, "mode": oct(stat.S_IMODE(st.st_mode)),
               "nlink": st.st_nlink, "uid": st.st_uid, "gid": st.st_gid,
               "blocks": st.st_blocks}
    summary["dir_size" if kind == "dir" else "size"] = st.st_size
    if kind in ("chardev", "blockdev"):
        summary["rdev"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return summary


def normalize(value):
    if value is None:
        return "ok"
    if isinstance(value, (bytes, bytearray)):
        return data_summary(value)
    if isinstance(value, os.stat_result):
        return stat_summary(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def attempt(function, *args, **kwargs):
    """Call function; its normalized result, or the errno name it raised."""
    try:
        return normalize(function(*args, **kwargs))
    except OSError as exc:
        return errno_name(exc)


def describe_exception(exc, work):
    if isinstance(exc, OSError):
        text = errno_name(exc)
    else:
        text = f"{type(exc).__name__}: {exc}".replace(work, "<WORK>")
    own_frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
                  if frame.filename == __file__]
    return f"{text} (posix_diff.py line {own_frames[-1].lineno})"


class Records:
    """Ordered (step, result) records; repeated step names get #2, #3..."""

    def __init__(self):
        self.items = []
        self.counts = {}

    def add(self, step, result):
        count = self.counts.get(step, 0) + 1
        self.counts[step] = count
        self.items.append([step if count == 1 else f"{step}#{count}", result])

# --------------------------------------------------------------------------
# File helpers


def with_fd(path, flags, function, mode=0o644):
    fd = os.open(path, flags, mode)
    try:
        return function(fd)
    finally:
        os.close(fd)


def open_close(path, flags, mode=0o644):
    os.close(os.open(path, flags, mode))


def write_file(path, data=b"", flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    return with_fd(path, flags, lambda fd: os.write(fd, data))


def write_at(path, offset, data):
    return with_fd(path, os.O_WRONLY | os.O_CREAT,
                   lambda fd: os.pwrite(fd, data, offset))


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def read_range(path, offset, length):
    return with_fd(path, os.O_RDONLY, lambda fd: os.pread(fd, length, offset))


def readlink_summary(path):
    return data_summary(os.fsencode(os.readlink(path)))


def sorted_listing(path):
    return sorted(os.listdir(path))


def list_xattrs(path):
    return sorted(os.listxattr(path, follow_symlinks=False))


def same_inode(path_a, path_b):
    a, b = os.stat(path_a), os.stat(path_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def pattern(seed, size):
    return random.Random(seed).randbytes(size)


def segments(path):
    """[start, end) data segments as SEEK_DATA / SEEK_HOLE report them."""
    def scan(fd):
        size, found, position = os.fstat(fd).st_size, [], 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            position = os.lseek(fd, start, os.SEEK_HOLE)
            found.append([start, position])
        return found
    return with_fd(path, os.O_RDONLY, scan)


def seek_table(path, whence, offsets):
    return with_fd(path, os.O_RDONLY, lambda fd: {
        str(offset): attempt(os.lseek, fd, offset, whence)
        for offset in offsets})


def run_tool(cwd, *argv):
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    return {"rc": done.returncode, "stdout": done.stdout.splitlines(),
            "stderr": done.stderr.replace(cwd, "<CASE>").splitlines()}


def run_as(uid, gid, function):
    """Run function() in a forked child with these ids; its JSON result."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                payload = json.dumps(function())
            except OSError as exc:
                payload = json.dumps(errno_name(exc))
            except Exception as exc:
                payload = json.dumps(f"{type(exc).__name__}: {exc}")
            with os.fdopen(write_end, "w") as out:
                out.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(payload) if payload else "child died"


def changed_flags(path, ctime_before):
    st = os.lstat(path)
    return " ".join([
        "a+" if st.st_atime_ns != OLD_NS else "a-",
        "m+" if st.st_mtime_ns != OLD_NS else "m-",
        "c+" if st.st_ctime_ns > ctime_before else "c-"])


def time_changes(watched, operation):
    """Run operation; which of atime/mtime/ctime changed per watched path.

    watched maps a tag to a path, or to (path before, path after) for an
    inode that the operation moves.
    """
    pairs = {tag: (paths, paths) if isinstance(paths, str) else paths
             for tag, paths in watched.items()}
    ctimes = {}
    for tag, (before, _after) in pairs.items():
        os.utime(before, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
        ctimes[tag] = os.lstat(before).st_ctime_ns
    time.sleep(TICK)
    if any(ctime % 10**9 == 0 for ctime in ctimes.values()):
        time.sleep(1 - time.time() % 1 + TICK)
    changes = {"result": attempt(operation)}
    for tag, (_before, after) in pairs.items():
        changes[tag] = attempt(changed_flags, after, ctimes[tag])
    return changes


def exact_times(path):
    st = os.lstat(path)
    return {"atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns}

# --------------------------------------------------------------------------
# Semantics suite


class Case:
    """One named case of the suite, working in its own directory."""

    def __init__(self, name, directory, records):
        self.name, self.dir, self.records = name, directory, records

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def rec(self, label, result):
        self.records.add(f"{self.name}/{label}", result)

    def call(self, label, function, *args, **kwargs):
        self.rec(label, attempt(function, *args, **kwargs))

    def lstat(self, label, *parts):
        self.call(label, os.lstat, self.path(*parts))

    def content(self, label, *parts):
        self.call(label, read_bytes, self.path(*parts))

    def listing(self, label, *parts):
        self.call(label, sorted_listing, self.path(*parts))

    def nlinks(self, label, *names):
        self.rec(label, {name: attempt(lambda n=name: os.lstat(self.path(n)).st_nlink)
                         for name in names})

    def times(self, label, watched, operation):
        self.rec(label, time_changes(watched, operation))

    def as_user(self, label, function, uid=USER, gid=USER):
        self.rec(label, run_as(uid, gid, function))


def case_names(c):
    """255-byte names work; 256 bytes fail with ENAMETOOLONG, create nothing."""
    names_255 = {"ascii": "n" * 255, "utf8": "é" * 127 + "x",
                 "raw_bytes": os.fsdecode(b"\xff" * 255)}
    for label, name in names_255.items():
        c.call(f"create_255_{label}", write_file, c.path(name), b"data")
        c.lstat(f"stat_255_{label}", name)
        c.listing(f"listing_255_{label}")
        c.call(f"unlink_255_{label}", os.unlink, c.path(name))
    f, d, long = c.path("f"), c.path("d"), c.path("n" * 256)
    write_file(f, b"f")
    os.mkdir(d)
    c.listing("listing_before_256")
    operations = {
        "open_creat": lambda: write_file(long),
        "open_rdonly": lambda: open_close(long, os.O_RDONLY),
        "mkdir": lambda: os.mkdir(long),
        "symlink_as_link_name": lambda: os.symlink("f", long),
        "mkfifo": lambda: os.mkfifo(long),
        "mknod_chardev": lambda: os.mknod(long, stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        "link_as_new_name": lambda: os.link(f, long),
        "rename_file_to": lambda: os.rename(f, long),
        "rename_dir_to": lambda: os.rename(d, long),
        "rename_from": lambda: os.rename(long, c.path("g")),
        "rename_noreplace_to": lambda: renameat2(f, long, RENAME_NOREPLACE),
        "rename_exchange_with": lambda: renameat2(f, long, RENAME_EXCHANGE),
        "unlink": lambda: os.unlink(long),
        "rmdir": lambda: os.rmdir(long),
        "stat": lambda: os.stat(long),
        "lstat": lambda: os.lstat(long),
        "chmod": lambda: os.chmod(long, 0o600),
        "chown": lambda: os.chown(long, USER, USER),
        "truncate": lambda: os.truncate(long, 0),
        "utime": lambda: os.utime(long),
        "readlink": lambda: os.readlink(long),
        "setxattr": lambda: os.setxattr(long, "user.k", b"v"),
        "getxattr": lambda: os.getxattr(long, "user.k"),
        "listxattr": lambda: os.listxattr(long),
        "as_middle_component": lambda: os.stat(os.path.join(long, "x")),
        "create_in_subdir": lambda: write_file(os.path.join(d, "n" * 256)),
        "create_utf8": lambda: write_file(c.path("é" * 128)),
    }
    for label, operation in operations.items():
        c.call(f"{label}_256", operation)
    c.listing("listing_after_256")
    c.listing("subdir_listing_after_256", "d")
    c.content("f_unchanged", "f")


CHOWN_CASES = (  # label, type, mode, new uid, new gid
    ("file_6755_to_user", "file", 0o6755, USER, USER),
    ("file_2755_to_user", "file", 0o2755, USER, USER),
    ("file_2644_to_user", "file", 0o2644, USER, USER),
    ("file_6755_group_only", "file", 0o6755, -1, USER),
    ("file_6755_same_owner", "file", 0o6755, 0, 0),
    ("file_6755_minus_one", "file", 0o6755, -1, -1),
    ("dir_6755_to_user", "dir", 0o6755, USER, USER),
    ("dir_3775_minus_one", "dir", 0o3775, -1, -1),
)


def make_node(path, kind):
    if kind == "dir":
        os.mkdir(path)
    else:
        write_file(path, b"#!/bin/sh\n")


def case_chown(c):
    """chown by root clears S_ISUID of non-directories (S_ISGID with g+x)."""
    for label, kind, mode, uid, gid in CHOWN_CASES:
        path = c.path(label)
        make_node(path, kind)
        os.chmod(path, mode)
        c.call(f"{label}/chown", os.chown, path, uid, gid)
        c.lstat(f"{label}/after", label)
    link, target = c.path("link"), "file_2644_to_user"
    os.symlink(target, link)
    c.call("lchown_symlink", os.chown, link, OTHER, OTHER, follow_symlinks=False)
    c.lstat("symlink_after_lchown", "link")
    c.call("lchown_symlink_minus_one", os.chown, link, -1, -1, follow_symlinks=False)
    c.lstat("symlink_after_lchown_minus_one", "link")
    c.lstat("target_after_lchown", target)
    c.call("chown_through_symlink", os.chown, link, OTHER, OTHER)
    c.lstat("target_after_chown_through_symlink", target)


def case_chmod(c):
    """chmod by root, and by an owner that is not in the file's group."""
    for label, kind, mode in (("file_7777", "file", 0o7777),
                              ("dir_7777", "dir", 0o7777),
                              ("file_0000", "file", 0)):
        make_node(c.path(label), kind)
        c.call(f"{label}/chmod", os.chmod, c.path(label), mode)
        c.lstat(f"{label}/after", label)
    owners = {"own_foreign_group": (USER, 0), "own_own_group": (USER, USER),
              "own_suid": (USER, USER), "not_owned": (OTHER, OTHER),
              "own_foreign_2644": (USER, 0)}
    for name, (uid, gid) in owners.items():
        write_file(c.path(name), b"x")
        os.chown(c.path(name), uid, gid)
    os.chmod(c.path("own_foreign_2644"), 0o2644)  # setgid, no group-execute, a group USER is not in

    def as_user():
        return {
            "chmod_2755_foreign_group": attempt(os.chmod, c.path("own_foreign_group"), 0o2755),
            "chmod_2755_own_group": attempt(os.chmod, c.path("own_own_group"), 0o2755),
            "chmod_4755": attempt(os.chmod, c.path("own_suid"), 0o4755),
            "chmod_not_owner": attempt(os.chmod, c.path("not_owned"), 0o777),
            "chown_to_other_user": attempt(os.chown, c.path("own_own_group"), OTHER, -1),
            "chgrp_to_own_group": attempt(os.chown, c.path("own_foreign_group"), -1, USER),
            "chgrp_to_foreign_group": attempt(os.chown, c.path("own_suid"), -1, OTHER),
            "chgrp_suid_file_own_group": attempt(os.chown, c.path("own_suid"), -1, USER),
            "chgrp_2644_from_foreign_group": attempt(os.chown, c.path("own_foreign_2644"), -1, USER),
        }
    c.as_user("as_user", as_user)
    for name in owners:
        c.lstat(f"{name}/after", name)


SUID_WRITE_CASES = (  # label, owner uid, owner gid, mode, action by USER
    ("write_6775", USER, USER, 0o6775, "write"),
    ("pwrite_6775", USER, USER, 0o6775, "pwrite"),
    ("write_empty_6775", USER, USER, 0o6775, "write_empty"),
    ("truncate_6775", USER, USER, 0o6775, "truncate"),
    ("ftruncate_6775", USER, USER, 0o6775, "ftruncate"),
    ("open_trunc_6775", USER, USER, 0o6775, "open_trunc"),
    ("fallocate_6775", USER, USER, 0o6775, "fallocate"),
    ("write_6777_root_owned", 0, 0, 0o6777, "write"),
    ("truncate_6777_root_owned", 0, 0, 0o6777, "truncate"),
    ("write_2664_own_group", USER, USER, 0o2664, "write"),
    ("write_2664_foreign_group", USER, 0, 0o2664, "write"),
    ("truncate_2664_foreign_group", USER, 0, 0o2664, "truncate"),
    ("ftruncate_2664_foreign_group", USER, 0, 0o2664, "ftruncate"),
    ("open_trunc_2664_foreign_group", USER, 0, 0o2664, "open_trunc"),
)

WRITE_ACTIONS = {
    "write": lambda p: with_fd(p, os.O_WRONLY, lambda fd: os.write(fd, b"w")),
    "pwrite": lambda p: with_fd(p, os.O_WRONLY, lambda fd: os.pwrite(fd, b"p", 100)),
    "write_empty": lambda p: with_fd(p, os.O_WRONLY, lambda fd: os.write(fd, b"")),
    "truncate": lambda p: os.truncate(p, 5),
    "ftruncate": lambda p: with_fd(p, os.O_WRONLY, lambda fd: os.ftruncate(fd, 5)),
    "open_trunc": lambda p: open_close(p, os.O_WRONLY | os.O_TRUNC),
    "fallocate": lambda p: with_fd(p, os.O_WRONLY, lambda fd: fallocate(fd, 0, 0, 8192)),
}


def case_suid_cleared_by_write(c):
    """Writes and truncates by a non-root caller clear S_ISUID/S_ISGID."""
    os.chmod(c.dir, 0o777)
    for label, uid, gid, mode, _action in SUID_WRITE_CASES + (
            ("root_write_6775", USER, USER, 0o6775, "write"),):
        write_file(c.path(label), b"0123456789")
        os.chown(c.path(label), uid, gid)
        os.chmod(c.path(label), mode)
    c.as_user("as_user", lambda: {
        label: attempt(WRITE_ACTIONS[action], c.path(label))
        for label, _uid, _gid, _mode, action in SUID_WRITE_CASES})
    c.call("root_write_6775/write", WRITE_ACTIONS["write"], c.path("root_write_6775"))
    for label, *_ in SUID_WRITE_CASES + (("root_write_6775",),):
        c.lstat(f"{label}/after", label)


def append_after_pwrite(path):
    """An O_APPEND write after another fd extended the file; pwrite on it."""
    appender = os.open(path, os.O_WRONLY | os.O_APPEND)
    other = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(other, b"PW", 50)
        os.write(appender, b"AP")
        position = os.lseek(appender, 0, os.SEEK_CUR)
        os.pwrite(appender, b"pa", 0)
        return {"position_after_append": position,
                "position_after_pwrite": os.lseek(appender, 0, os.SEEK_CUR)}
    finally:
        os.close(appender)
        os.close(other)


def case_open_flags(c):
    """O_TRUNC, O_APPEND, O_EXCL, O_CREAT via symlinks, O_DIRECTORY, modes."""
    full, empty, rdonly = c.path("full"), c.path("empty"), c.path("rdonly")
    write_file(full, b"x" * 100)
    write_file(empty)
    write_file(rdonly, b"y" * 100)
    c.times("o_trunc_full", {"file": full}, lambda: open_close(full, os.O_WRONLY | os.O_TRUNC))
    c.lstat("o_trunc_full_stat", "full")
    c.times("o_trunc_empty", {"file": empty}, lambda: open_close(empty, os.O_WRONLY | os.O_TRUNC))
    c.times("o_rdonly_o_trunc", {"file": rdonly},
            lambda: open_close(rdonly, os.O_RDONLY | os.O_TRUNC))
    c.lstat("o_rdonly_o_trunc_stat", "rdonly")
    write_file(c.path("append"), b"0123456789")
    c.call("o_append_after_pwrite", append_after_pwrite, c.path("append"))
    c.content("o_append_data", "append")
    create_excl = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    c.call("o_excl_existing", open_close, full, create_excl)
    dangling = c.path("dangling")
    os.symlink("dangling_target", dangling)
    c.call("o_excl_dangling_symlink", open_close, dangling, create_excl)
    c.listing("listing_after_o_excl_dangling")
    c.call("o_creat_dangling_symlink", open_close, dangling, os.O_WRONLY | os.O_CREAT)
    c.lstat("dangling_target_created", "dangling_target")
    c.call("o_directory_on_file", open_close, full, os.O_RDONLY | os.O_DIRECTORY)
    c.call("o_directory_on_dir", open_close, c.dir, os.O_RDONLY | os.O_DIRECTORY)
    c.call("o_nofollow_on_symlink", open_close, dangling, os.O_RDONLY | os.O_NOFOLLOW)
    os.mkdir(c.path("d"))
    for label, flags in (("o_wronly", os.O_WRONLY), ("o_rdwr", os.O_RDWR),
                         ("o_creat", os.O_RDONLY | os.O_CREAT),
                         ("o_trunc", os.O_RDONLY | os.O_TRUNC)):
        c.call(f"dir_{label}", open_close, c.path("d"), flags)
    c.call("file_with_trailing_slash", open_close, full + "/", os.O_RDONLY)
    c.call("create_with_trailing_slash", open_close, c.path("new") + "/", os.O_WRONLY | os.O_CREAT)
    for mode in (0o777, 0o4777, 0o2777, 0o1777):
        name = f"created_{mode:o}"
        c.call(f"{name}/open", open_close, c.path(name), create_excl, mode)
        c.lstat(f"{name}/stat", name)


def case_sticky(c):
    """In a 01777 directory a user may remove and rename only its own files."""
    sticky, owned = c.path("sticky"), c.path("sticky_owned_by_user")
    for path, owner in ((sticky, 0), (owned, USER)):
        os.mkdir(path)
        os.chown(path, owner, owner)
        os.chmod(path, 0o1777)
    for name, owner in (("sticky/theirs", OTHER), ("sticky/victim", OTHER),
                        ("sticky/mine", USER), ("sticky/mine_too", USER),
                        ("sticky_owned_by_user/theirs", OTHER)):
        write_file(c.path(name), b"x")
        os.chown(c.path(name), owner, owner)
    os.mkdir(c.path("sticky/their_dir"))
    os.chown(c.path("sticky/their_dir"), OTHER, OTHER)

    def in_sticky(name):
        return os.path.join(sticky, name)

    c.as_user("as_user", lambda: {
        "unlink_theirs": attempt(os.unlink, in_sticky("theirs")),
        "rename_theirs": attempt(os.rename, in_sticky("theirs"), in_sticky("stolen")),
        "rmdir_their_dir": attempt(os.rmdir, in_sticky("their_dir")),
        "rename_mine_over_theirs": attempt(os.rename, in_sticky("mine_too"), in_sticky("victim")),
        "rename_mine": attempt(os.rename, in_sticky("mine"), in_sticky("mine_renamed")),
        "unlink_mine": attempt(os.unlink, in_sticky("mine_renamed")),
        "create_own": attempt(write_file, in_sticky("created")),
        "unlink_created": attempt(os.unlink, in_sticky("created")),
        "unlink_theirs_in_own_dir": attempt(os.unlink, os.path.join(owned, "theirs")),
    })
    c.listing("sticky_listing", "sticky")
    c.listing("owned_listing", "sticky_owned_by_user")


def case_rename_directory_move(c):
    """Moving a directory updates both parents' link counts and its '..'."""
    os.makedirs(c.path("p1", "d", "sub"))
    os.mkdir(c.path("p2"))
    c.nlinks("nlink_before", "p1", "p2", "p1/d")
    c.call("rename", os.rename, c.path("p1", "d"), c.path("p2", "d"))
    c.nlinks("nlink_after", "p1", "p2", "p2/d", "p2/d/sub")
    c.call("dotdot_is_new_parent", same_inode, c.path("p2/d/.."), c.path("p2"))
    c.call("sub_dotdot_is_moved_dir", same_inode, c.path("p2/d/sub/.."), c.path("p2/d"))
    c.listing("p1_listing", "p1")
    c.listing("p2_listing", "p2")
    c.call("move_up_via_dotdot", os.rename, c.path("p2/d/sub"), c.path("p2/d/../sub2"))
    c.nlinks("nlink_after_move_up", "p2", "p2/d", "p2/sub2")
    c.call("sub2_dotdot", same_inode, c.path("p2/sub2/.."), c.path("p2"))


def case_rename_replace(c):
    """rename onto existing names, and its errors."""
    write_file(c.path("a"), b"A")
    write_file(c.path("b"), b"B")
    os.link(c.path("b"), c.path("b_link"))
    c.call("file_over_file", os.rename, c.path("a"), c.path("b"))
    c.content("target_data", "b")
    c.lstat("replaced_inode", "b_link")
    c.listing("listing_after_file_over_file")
    for name in ("e1", "e2", "n1", "n2/child"):
        os.makedirs(c.path(name))
    c.nlinks("nlink_before_dir_over_empty", ".")
    c.call("dir_over_empty_dir", os.rename, c.path("e1"), c.path("e2"))
    c.nlinks("nlink_after_dir_over_empty", ".", "e2")
    c.call("dir_over_nonempty_dir", os.rename, c.path("n1"), c.path("n2"))
    c.call("file_over_dir", os.rename, c.path("b"), c.path("n1"))
    c.call("dir_over_file", os.rename, c.path("n1"), c.path("b"))
    c.call("dir_into_own_subdir", os.rename, c.path("n2"), c.path("n2/child/x"))
    c.call("dir_over_own_child", os.rename, c.path("n2"), c.path("n2/child"))
    c.call("dir_onto_itself", os.rename, c.path("n2"), c.path("n2"))
    c.call("missing_source", os.rename, c.path("missing"), c.path("x"))
    c.call("file_with_trailing_slash", os.rename, c.path("b") + "/", c.path("c"))
    c.call("dir_with_trailing_slashes", os.rename, c.path("n1") + "/", c.path("n3") + "/")
    c.call("dot_as_source", os.rename, c.path("n3", "."), c.path("n4"))
    os.symlink("b", c.path("s"))
    c.call("symlink", os.rename, c.path("s"), c.path("s2"))
    c.call("symlink_target_kept", readlink_summary, c.path("s2"))
    c.listing("final_listing")


def case_renameat2(c):
    """RENAME_NOREPLACE and RENAME_EXCHANGE, including file <-> directory."""
    f, g, h = c.path("f"), c.path("g"), c.path("h")
    write_file(f, b"F")
    write_file(g, b"G")
    c.call("noreplace_existing", renameat2, f, g, RENAME_NOREPLACE)
    c.call("noreplace_free", renameat2, f, h, RENAME_NOREPLACE)
    c.call("exchange_missing", renameat2, h, c.path("missing"), RENAME_EXCHANGE)
    c.call("noreplace_and_exchange", renameat2, h, g, RENAME_NOREPLACE | RENAME_EXCHANGE)
    c.call("exchange_files", renameat2, h, g, RENAME_EXCHANGE)
    c.content("h_after_exchange", "h")
    c.content("g_after_exchange", "g")
    os.mkdir(c.path("q1"))
    os.makedirs(c.path("q2/D/inner"))
    write_file(c.path("q1/f"), b"file")
    c.nlinks("nlink_before_exchange", "q1", "q2", "q2/D")
    c.call("exchange_file_dir", renameat2, c.path("q1/f"), c.path("q2/D"), RENAME_EXCHANGE)
    c.lstat("q1_f_after", "q1/f")
    c.lstat("q2_D_after", "q2/D")
    c.content("q2_D_data", "q2/D")
    c.nlinks("nlink_after_exchange", "q1", "q2", "q1/f")
    c.call("dotdot_of_moved_dir", same_inode, c.path("q1/f/.."), c.path("q1"))
    c.listing("moved_dir_listing", "q1/f")
    c.call("exchange_with_own_child", renameat2, c.path("q1/f"), c.path("q1/f/inner"),
           RENAME_EXCHANGE)
    c.call("exchange_same_name", renameat2, g, g, RENAME_EXCHANGE)


def case_rename_same_inode(c):
    """rename between two hard links of one inode is a successful no-op."""
    a, b = c.path("a"), c.path("b")
    write_file(a, b"same")
    os.link(a, b)
    c.call("onto_itself", os.rename, a, a)
    c.call("onto_other_hard_link", os.rename, a, b)
    c.listing("listing")
    c.nlinks("nlink", "a", "b")
    c.call("noreplace_onto_hard_link", renameat2, a, b, RENAME_NOREPLACE)
    c.call("exchange_hard_links", renameat2, a, b, RENAME_EXCHANGE)
    c.listing("listing_after_exchange")


def case_link(c):
    """Hard links: counts, ctime, shared data, errors."""
    f, g = c.path("f"), c.path("g")
    write_file(f, b"one")
    c.times("link", {"inode": f, "parent": c.dir}, lambda: os.link(f, g))
    c.nlinks("nlink_after_link", "f", "g")
    c.call("write_through_second_name", write_at, g, 3, b"two")
    c.content("data_through_first_name", "f")
    c.call("link_existing_name", os.link, f, g)
    c.call("link_missing_source", os.link, c.path("missing"), c.path("h"))
    os.mkdir(c.path("d"))
    c.call("link_directory", os.link, c.path("d"), c.path("d2"))
    c.call("link_into_missing_dir", os.link, f, c.path("nodir/x"))
    c.times("unlink_one_name", {"inode": f, "parent": c.dir}, lambda: os.unlink(g))
    c.nlinks("nlink_after_unlink", "f")
    os.symlink("f", c.path("s"))
    c.call("link_symlink_nofollow", os.link, c.path("s"), c.path("s_hard"), follow_symlinks=False)
    c.lstat("hard_link_of_symlink", "s_hard")
    c.call("link_symlink_follow", link_following, c.path("s"), c.path("f_hard"))
    c.lstat("hard_link_through_symlink", "f_hard")
    c.nlinks("nlink_final", "f", "s")


SET_TIMES = {  # explicit utime values (ns) whose stored result is recorded
    "utime_explicit": (1_234_567_890_123_456_789, 1_300_000_000_987_654_321),
    "utime_before_1970": (-31_536_000 * 10**9 + 123, -1),
    "utime_after_2038": (2**31 * 10**9 + 5, 2**32 * 10**9 + 7),
    "utime_year_2514": (2**34 * 10**9, 2**34 * 10**9),
}


def ftruncate_path(path, size):
    with_fd(path, os.O_WRONLY, lambda fd: os.ftruncate(fd, size))


def case_timestamps(c):
    """Which of atime/mtime/ctime each operation changes, on the inode and its parents."""
    t, t2 = c.path("t"), c.path("t2")
    os.mkdir(t)
    os.mkdir(t2)
    f = os.path.join(t, "f")
    c.times("create", {"parent": t}, lambda: write_file(f))
    c.times("write", {"file": f, "parent": t}, lambda: write_at(f, 0, b"hello world"))
    c.times("write_zero_bytes", {"file": f}, lambda: write_at(f, 0, b""))
    c.times("pwrite_past_eof", {"file": f}, lambda: write_at(f, 100, b"x"))
    c.times("ftruncate_same_size", {"file": f}, lambda: ftruncate_path(f, 101))
    c.times("truncate_same_size", {"file": f}, lambda: os.truncate(f, 101))
    c.times("ftruncate_grow", {"file": f}, lambda: ftruncate_path(f, 5000))
    c.times("truncate_shrink", {"file": f}, lambda: os.truncate(f, 50))
    c.times("read", {"file": f}, lambda: read_bytes(f))
    c.times("chmod", {"file": f, "parent": t}, lambda: os.chmod(f, 0o600))
    c.times("chmod_same_mode", {"file": f}, lambda: os.chmod(f, 0o600))
    c.times("chown", {"file": f}, lambda: os.chown(f, USER, USER))
    c.times("chown_minus_one", {"file": f}, lambda: os.chown(f, -1, -1))
    for label, (atime, mtime) in SET_TIMES.items():
        c.times(label, {"file": f}, lambda a=atime, m=mtime: os.utime(f, ns=(a, m)))
        c.call(f"{label}_stored", exact_times, f)
    c.times("utime_now", {"file": f}, lambda: os.utime(f))
    for label, atime, mtime in (("omit_now", UTIME_OMIT, UTIME_NOW),
                                ("now_omit", UTIME_NOW, UTIME_OMIT),
                                ("omit_omit", UTIME_OMIT, UTIME_OMIT),
                                ("set_omit", SET_TIMES["utime_explicit"][0], UTIME_OMIT)):
        c.times(f"utimensat_{label}", {"file": f}, lambda a=atime, m=mtime: utimensat(f, a, m))
    c.call("utimensat_set_omit_stored", exact_times, f)
    g = os.path.join(t, "g")
    c.times("link", {"file": f, "parent": t}, lambda: os.link(f, g))
    c.times("unlink", {"remaining": f, "parent": t}, lambda: os.unlink(g))
    f2, f3 = os.path.join(t, "f2"), os.path.join(t2, "f3")
    c.times("rename_same_dir", {"inode": (f, f2), "parent": t}, lambda: os.rename(f, f2))
    c.times("rename_cross_dir", {"inode": (f2, f3), "source_parent": t, "target_parent": t2},
            lambda: os.rename(f2, f3))
    victim, victim_link = os.path.join(t, "v"), os.path.join(t, "v_link")
    write_file(victim, b"v")
    os.link(victim, victim_link)
    c.times("rename_replace", {"inode": (f3, victim), "replaced": victim_link,
                               "source_parent": t2, "target_parent": t},
            lambda: os.rename(f3, victim))
    d, d2 = os.path.join(t, "d"), os.path.join(t2, "d")
    c.times("mkdir", {"parent": t}, lambda: os.mkdir(d))
    c.times("rename_dir_cross", {"dir": (d, d2), "source_parent": t, "target_parent": t2},
            lambda: os.rename(d, d2))
    c.times("rmdir", {"parent": t2}, lambda: os.rmdir(d2))
    c.times("setxattr", {"file": victim, "parent": t}, lambda: os.setxattr(victim, "user.k", b"v"))
    c.times("removexattr", {"file": victim}, lambda: os.removexattr(victim, "user.k"))
    c.times("symlink", {"parent": t}, lambda: os.symlink("v", os.path.join(t, "s")))
    c.times("mkfifo", {"parent": t}, lambda: os.mkfifo(os.path.join(t, "p")))
    c.times("readdir", {"dir": t}, lambda: sorted_listing(t))
    c.times("fallocate_keep_size", {"file": victim},
            lambda: with_fd(victim, os.O_WRONLY,
                            lambda fd: fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 8192)))
    c.times("fallocate_extend", {"file": victim},
            lambda: with_fd(victim, os.O_WRONLY, lambda fd: fallocate(fd, 0, 0, 8192)))
    c.times("exchange_file_dir", {"file": (victim, t2), "dir": (t2, victim),
                                  "file_parent": t, "dir_parent": c.dir},
            lambda: renameat2(victim, t2, RENAME_EXCHANGE))


MKNOD_CASES = (  # label, mode, device
    ("fifo", stat.S_IFIFO | 0o640, 0),
    ("chardev", stat.S_IFCHR | 0o620, os.makedev(1, 3)),
    ("chardev_large_numbers", stat.S_IFCHR | 0o600, os.makedev(300, 70000)),
    ("blockdev", stat.S_IFBLK | 0o660, os.makedev(7, 200)),
    ("socket", stat.S_IFSOCK | 0o755, 0),
    ("regular", stat.S_IFREG | 0o600, 0),
    ("type_zero", 0o600, 0),
    ("directory", stat.S_IFDIR | 0o755, 0),
)


def case_mknod(c):
    """Special files: fifo, devices (small and large numbers), socket."""
    for label, mode, device in MKNOD_CASES:
        c.call(f"{label}/mknod", os.mknod, c.path(label), mode, device)
        c.lstat(f"{label}/stat", label)
    c.call("mkfifo", os.mkfifo, c.path("mkfifo"), 0o666)
    c.lstat("mkfifo_stat", "mkfifo")
    c.call("mknod_existing", os.mknod, c.path("fifo"), stat.S_IFIFO | 0o600)
    c.listing("listing")


def symlink_target(length):
    return ("abcdefgh/" * (length // 9 + 1))[:length]


def case_symlinks(c):
    """Symlinks around the 60-byte inline limit, a 1 KiB block and PATH_MAX."""
    for length in (1, 59, 60, 61, 1023, 1024, 4095):
        name, target = f"len{length}", symlink_target(length)
        c.call(f"symlink_{length}", os.symlink, target, c.path(name))
        c.call(f"readlink_{length}", readlink_summary, c.path(name))
        c.call(f"readlink_matches_{length}", lambda p=c.path(name), t=target: os.readlink(p) == t)
        c.lstat(f"lstat_{length}", name)
    c.call("symlink_4096", os.symlink, symlink_target(4096), c.path("len4096"))
    write_file(c.path("file"), b"f")
    os.mkdir(c.path("dir"))
    c.call("readlink_regular_file", os.readlink, c.path("file"))
    c.call("readlink_directory", os.readlink, c.path("dir"))
    c.call("readlink_missing", os.readlink, c.path("missing"))
    c.call("symlink_empty_target", os.symlink, "", c.path("empty"))
    c.call("symlink_existing_name", os.symlink, "x", c.path("file"))
    os.symlink("loop_b", c.path("loop_a"))
    os.symlink("loop_a", c.path("loop_b"))
    c.call("open_loop", open_close, c.path("loop_a"), os.O_RDONLY)
    os.symlink("dir", c.path("dir_link"))
    write_file(c.path("dir/inside"), b"in")
    c.content("read_through_dir_link", "dir_link/inside")
    c.call("stat_through_dir_link", os.stat, c.path("dir_link"))
    c.listing("listing")


def case_directories(c):
    """mkdir/rmdir/unlink errors and directory link counts."""
    os.makedirs(c.path("d", "child"))
    write_file(c.path("file"))
    c.nlinks("nlink_initial", ".", "d")
    c.call("rmdir_nonempty", os.rmdir, c.path("d"))
    c.call("rmdir_dot", os.rmdir, c.path("d/child/."))
    c.call("rmdir_dotdot", os.rmdir, c.path("d/child/.."))
    c.call("rmdir_file", os.rmdir, c.path("file"))
    c.call("rmdir_missing", os.rmdir, c.path("missing"))
    c.call("unlink_dir", os.unlink, c.path("d"))
    c.call("unlink_file_trailing_slash", os.unlink, c.path("file") + "/")
    c.call("mkdir_existing_dir", os.mkdir, c.path("d"))
    c.call("mkdir_existing_file", os.mkdir, c.path("file"))
    c.call("mkdir_under_file", os.mkdir, c.path("file/x"))
    c.call("mkdir_missing_parent", os.mkdir, c.path("missing/x"))
    c.call("open_dir_for_write", open_close, c.path("d"), os.O_WRONLY)
    c.call("read_dir_fd", with_fd, c.path("d"), os.O_RDONLY, lambda fd: os.read(fd, 10))
    for index in range(5):
        os.mkdir(c.path(f"d/s{index}"))
    c.nlinks("nlink_after_5_mkdirs", "d")
    c.call("rmdir_subdir", os.rmdir, c.path("d/s0"))
    c.nlinks("nlink_after_rmdir", "d")
    c.call("mkdir_mode_7777", os.mkdir, c.path("m"), 0o7777)
    c.lstat("mkdir_mode_7777_stat", "m")
    c.call("rmdir_empty", os.rmdir, c.path("d/child"))
    c.nlinks("nlink_final", ".", "d")
    c.listing("listing_d", "d")
    c.lstat("stat_d", "d")


def case_setgid_directory(c):
    """Entries created in a setgid directory inherit its group (dirs: the bit)."""
    g = c.path("g")
    os.mkdir(g)
    os.chown(g, 0, OTHER)
    os.chmod(g, 0o2777)
    c.call("root_create_file", write_file, c.path("g/file"))
    c.call("root_mkdir", os.mkdir, c.path("g/sub"))
    c.lstat("sub/stat_after_mkdir", "g", "sub")
    os.chmod(c.path("g/sub"), 0o2777)
    c.call("root_mkfifo", os.mkfifo, c.path("g/fifo"))
    c.call("root_symlink", os.symlink, "file", c.path("g/link"))
    c.as_user("as_user", lambda: {
        "create_2755": attempt(open_close, c.path("g/user_file"), os.O_WRONLY | os.O_CREAT, 0o2755),
        "mkdir": attempt(os.mkdir, c.path("g/user_dir")),
        "mkdir_in_sub": attempt(os.mkdir, c.path("g/sub/deeper")),
    })
    for name in ("file", "sub", "fifo", "link", "user_file", "user_dir", "sub/deeper"):
        c.lstat(f"{name}/stat", "g", name)


def case_permissions(c):
    """Permission checks for an unprivileged caller, and root's exec check."""
    files = {"secret": 0o600, "readonly": 0o644, "shared": 0o666, "script": 0o644}
    for name, mode in files.items():
        write_file(c.path(name), name.encode())
        os.chmod(c.path(name), mode)
    for name, mode in (("closed", 0o700), ("unsearchable", 0o644)):
        os.mkdir(c.path(name))
        write_file(c.path(name, "inside"))
        os.chmod(c.path(name), mode)
    c.as_user("as_user", lambda: {
        "read_0600": attempt(read_bytes, c.path("secret")),
        "write_0644": attempt(write_at, c.path("readonly"), 0, b"x"),
        "truncate_0644": attempt(os.truncate, c.path("readonly"), 0),
        "write_0666": attempt(write_at, c.path("shared"), 0, b"x"),
        "stat_in_0700_dir": attempt(os.stat, c.path("closed/inside")),
        "list_0700_dir": attempt(sorted_listing, c.path("closed")),
        "list_0644_dir": attempt(sorted_listing, c.path("unsearchable")),
        "stat_in_0644_dir": attempt(os.stat, c.path("unsearchable/inside")),
        "create_in_0755_dir": attempt(write_file, c.path("user_file")),
        "unlink_in_0755_dir": attempt(os.unlink, c.path("shared")),
        "utime_now_0666": attempt(os.utime, c.path("shared")),
        "utime_explicit_0666": attempt(os.utime, c.path("shared"), ns=(1, 1)),
        "access_read_0600": attempt(os.access, c.path("secret"), os.R_OK),
        "access_write_0666": attempt(os.access, c.path("shared"), os.W_OK),
    })
    c.call("root_access_exec_0644", os.access, c.path("script"), os.X_OK)
    os.chmod(c.path("secret"), 0)
    c.call("root_read_0000", read_bytes, c.path("secret"))
    c.content("shared_after", "shared")


XATTR_SIZES = (0, 1, 100, 4000)


def case_xattrs(c):
    """user.* xattrs: sizes, create/replace flags, removal, limits, where allowed."""
    for size in XATTR_SIZES:
        path = c.path(f"v{size}")
        write_file(path)
        c.call(f"set_{size}", os.setxattr, path, "user.value", pattern(size, size))
        c.call(f"get_{size}", os.getxattr, path, "user.value")
    combined = c.path("combined")
    write_file(combined)
    for size in XATTR_SIZES:
        c.call(f"combined_set_{size}", os.setxattr, combined, f"user.v{size}", pattern(size, size))
    c.call("combined_list", list_xattrs, combined)
    f = c.path("f")
    write_file(f)
    c.call("create_new", os.setxattr, f, "user.k", b"1", os.XATTR_CREATE)
    c.call("create_existing", os.setxattr, f, "user.k", b"1", os.XATTR_CREATE)
    c.call("replace_missing", os.setxattr, f, "user.missing", b"1", os.XATTR_REPLACE)
    c.call("replace_existing", os.setxattr, f, "user.k", b"22", os.XATTR_REPLACE)
    c.call("get_replaced", os.getxattr, f, "user.k")
    c.call("get_missing", os.getxattr, f, "user.missing")
    c.call("remove", os.removexattr, f, "user.k")
    c.call("remove_missing", os.removexattr, f, "user.k")
    c.call("list_after_remove", list_xattrs, f)
    c.rec("many_set", {str(i): attempt(os.setxattr, f, f"user.m{i:02d}", pattern(i, 10))
                       for i in range(30)})
    c.call("many_list", list_xattrs, f)
    v1 = c.path("v1")
    c.call("value_8000", os.setxattr, c.path("v0"), "user.big", pattern(8, 8000))
    c.call("value_65537", os.setxattr, c.path("v0"), "user.huge", pattern(9, 65537))
    c.call("name_255", os.setxattr, v1, "user." + "k" * 250, b"n")
    c.call("name_256", os.setxattr, v1, "user." + "k" * 251, b"n")
    c.call("empty_suffix", os.setxattr, v1, "user.", b"x")
    c.call("unknown_namespace", os.setxattr, v1, "bogus.x", b"x")
    c.call("trusted_as_root", os.setxattr, v1, "trusted.t", b"t")
    os.symlink("f", c.path("link"))
    os.mkfifo(c.path("fifo"))
    os.mkdir(c.path("dir"))
    c.call("user_on_symlink", os.setxattr, c.path("link"), "user.x", b"1", follow_symlinks=False)
    c.call("trusted_on_symlink", os.setxattr, c.path("link"), "trusted.x", b"1",
           follow_symlinks=False)
    c.call("user_on_fifo", os.setxattr, c.path("fifo"), "user.x", b"1")
    c.call("user_on_dir", os.setxattr, c.path("dir"), "user.x", b"1")
    c.call("through_symlink", os.setxattr, c.path("link"), "user.via", b"1")
    c.call("f_list_after_through_symlink", list_xattrs, f)
    c.as_user("as_user", lambda: {
        "set_on_root_file": attempt(os.setxattr, v1, "user.u", b"1"),
        "get_on_root_file": attempt(os.getxattr, v1, "user.value"),
        "list_on_root_file": attempt(list_xattrs, v1),
        "get_trusted": attempt(os.getxattr, v1, "trusted.t"),
    })
    c.call("v1_list", list_xattrs, v1)


def case_posix_acl(c):
    """POSIX ACLs set with setfacl: mode bits, getfacl, raw xattrs, inheritance."""
    if shutil.which("setfacl") is None or shutil.which("getfacl") is None:
        print("note: setfacl/getfacl not installed (apt package acl): "
              "ACL case skipped", file=sys.stderr)
        c.rec("skipped", "setfacl not installed")
        return
    f, d = c.path("f"), c.path("d")
    write_file(f, b"acl")
    os.chmod(f, 0o644)
    os.mkdir(d)

    def getfacl(name):
        return run_tool(c.dir, "getfacl", "--omit-header", "--numeric", name)

    c.call("setfacl", run_tool, c.dir, "setfacl", "-m", f"u:{USER}:rw,g:{OTHER}:r", "f")
    c.lstat("mode_after_setfacl", "f")
    c.call("getfacl", getfacl, "f")
    c.call("raw_access_acl", os.getxattr, f, "system.posix_acl_access")
    c.call("listxattr", list_xattrs, f)
    c.as_user("user_write_granted_by_acl", lambda: attempt(write_at, f, 0, b"A"))
    c.call("chmod_0600", os.chmod, f, 0o600)
    c.call("getfacl_after_chmod", getfacl, "f")
    c.as_user("user_write_after_chmod", lambda: attempt(write_at, f, 0, b"B"))
    c.call("setfacl_default", run_tool, c.dir, "setfacl", "-d", "-m", f"u:{USER}:rwx", "d")
    c.call("getfacl_dir", getfacl, "d")
    c.call("create_in_acl_dir", open_close, c.path("d/new"), os.O_WRONLY | os.O_CREAT, 0o666)
    c.call("mkdir_in_acl_dir", os.mkdir, c.path("d/sub"))
    c.lstat("inherited_file_stat", "d/new")
    c.lstat("inherited_dir_stat", "d/sub")
    c.call("getfacl_inherited_file", getfacl, "d/new")
    c.call("getfacl_inherited_dir", getfacl, "d/sub")
    c.call("raw_default_acl", os.getxattr, c.path("d/sub"), "system.posix_acl_default")
    c.call("setfacl_remove_all", run_tool, c.dir, "setfacl", "-b", "f")
    c.lstat("mode_after_remove", "f")
    c.call("listxattr_after_remove", list_xattrs, f)


FALLOCATE_CASES = (  # label, mode, offset, length (on a 1 MiB file)
    ("allocate_extending", 0, MiB, 64 * KiB),
    ("keep_size_beyond_eof", FALLOC_FL_KEEP_SIZE, MiB, 64 * KiB),
    ("punch_aligned", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 64 * KiB, 128 * KiB),
    ("punch_unaligned", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 10000),
    ("punch_without_keep_size", FALLOC_FL_PUNCH_HOLE, 0, 4096),
    ("zero_range", FALLOC_FL_ZERO_RANGE, 1000, 10000),
    ("zero_range_extending", FALLOC_FL_ZERO_RANGE, MiB - 100, 8192),
    ("zero_range_keep_size", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, MiB - 100, 8192),
    ("collapse", FALLOC_FL_COLLAPSE_RANGE, 64 * KiB, 64 * KiB),
    ("collapse_unaligned", FALLOC_FL_COLLAPSE_RANGE, 1000, 4096),
    ("collapse_past_eof", FALLOC_FL_COLLAPSE_RANGE, MiB - 4096, 8192),
    ("insert", FALLOC_FL_INSERT_RANGE, 64 * KiB, 64 * KiB),
    ("insert_unaligned", FALLOC_FL_INSERT_RANGE, 100, 4096),
    ("insert_at_eof", FALLOC_FL_INSERT_RANGE, MiB, 4096),
    ("zero_length", 0, 0, 0),
    ("negative_offset", 0, -4096, 4096),
)


def case_fallocate(c):
    """fallocate modes on a 1 MiB file of known data: result, size, data."""
    base = pattern(1, MiB)
    for label, mode, offset, length in FALLOCATE_CASES:
        path = c.path(label)
        write_file(path, base)
        c.call(f"{label}/fallocate", with_fd, path, os.O_RDWR,
               lambda fd, m=mode, o=offset, n=length: fallocate(fd, m, o, n))
        c.content(f"{label}/data", label)
    c.call("punch_aligned/segments", segments, c.path("punch_aligned"))
    posix = c.path("posix_fallocate")
    write_file(posix, base)
    c.call("posix_fallocate", with_fd, posix, os.O_RDWR,
           lambda fd: os.posix_fallocate(fd, 2 * MiB, 4096))
    c.content("posix_fallocate/data", "posix_fallocate")


def case_seek_holes(c):
    """SEEK_DATA/SEEK_HOLE on a sparse file, a hole-only file and an empty file."""
    sparse = c.path("sparse")
    write_at(sparse, 0, pattern(6, 4096))
    write_at(sparse, MiB + 8192, pattern(7, 4096))
    size = MiB + 12288
    offsets = (0, 100, 4096, 5000, MiB, MiB + 8192, MiB + 10000, size - 1, size, size + 1)
    c.call("seek_data", seek_table, sparse, os.SEEK_DATA, offsets)
    c.call("seek_hole", seek_table, sparse, os.SEEK_HOLE, offsets)
    c.call("segments", segments, sparse)
    c.call("hole_reads_zero", read_range, sparse, 4096, MiB)
    c.call("fsync", with_fd, sparse, os.O_RDONLY, os.fsync)
    c.call("segments_after_fsync", segments, sparse)
    hole_only, empty = c.path("hole_only"), c.path("empty")
    write_file(hole_only)
    os.truncate(hole_only, MiB)
    write_file(empty)
    for label, path in (("hole_only", hole_only), ("empty", empty)):
        c.call(f"{label}/seek_data", seek_table, path, os.SEEK_DATA, (0, 10))
        c.call(f"{label}/seek_hole", seek_table, path, os.SEEK_HOLE, (0, 10))


def copy_range(source, target, count, source_offset, target_offset, target_flags=os.O_WRONLY):
    source_fd = os.open(source, os.O_RDONLY)
    try:
        return with_fd(target, target_flags, lambda target_fd: os.copy_file_range(
            source_fd, target_fd, count, source_offset, target_offset))
    finally:
        os.close(source_fd)


def copy_using_file_offsets(source, target):
    source_fd, target_fd = os.open(source, os.O_RDONLY), os.open(target, os.O_WRONLY)
    try:
        os.lseek(source_fd, 1000, os.SEEK_SET)
        os.lseek(target_fd, 5000, os.SEEK_SET)
        copied = os.copy_file_range(source_fd, target_fd, 3000)
        return {"copied": copied,
                "source_position": os.lseek(source_fd, 0, os.SEEK_CUR),
                "target_position": os.lseek(target_fd, 0, os.SEEK_CUR)}
    finally:
        os.close(source_fd)
        os.close(target_fd)


def case_copy_file_range(c):
    """copy_file_range between and within files: counts and resulting data."""
    source, target = c.path("source"), c.path("target")
    write_file(source, pattern(3, 300 * KiB))
    write_file(target, pattern(4, 100 * KiB))
    c.call("into_middle", copy_range, source, target, 50000, 1234, 70000)
    c.content("into_middle/data", "target")
    c.call("extending_target", copy_range, source, target, 10000, 0, 200 * KiB)
    c.content("extending_target/data", "target")
    c.call("crossing_source_eof", copy_range, source, target, 1000, 300 * KiB - 100, 0)
    c.call("from_past_source_eof", copy_range, source, target, 10, 400 * KiB, 0)
    c.call("same_file_overlapping", copy_range, source, source, 1000, 0, 100)
    c.call("same_file_disjoint", copy_range, source, source, 1000, 0, 200 * KiB)
    c.content("same_file_disjoint/data", "source")
    c.call("using_file_offsets", copy_using_file_offsets, source, target)
    c.call("into_append_fd", copy_range, source, target, 10, 0, None,
           os.O_WRONLY | os.O_APPEND)
    c.content("final_target", "target")


def case_unlinked_open_file(c):
    """An open file outlives its names; rename over an open file."""
    f = c.path("f")
    write_file(f, b"still here")
    fd = os.open(f, os.O_RDWR)
    try:
        c.call("unlink_while_open", os.unlink, f)
        c.call("fstat_after_unlink", os.fstat, fd)
        c.call("read_after_unlink", os.pread, fd, 100, 0)
        c.call("write_after_unlink", os.pwrite, fd, b" and more", 10)
        c.call("read_after_write", os.pread, fd, 100, 0)
        c.call("fchmod_after_unlink", os.fchmod, fd, 0o600)
        c.call("fsync_after_unlink", os.fsync, fd)
        c.call("fstat_final", os.fstat, fd)
        c.listing("listing_while_open")
    finally:
        os.close(fd)
    a, b = c.path("a"), c.path("b")
    write_file(a, b"linked")
    os.link(a, b)
    fd = os.open(a, os.O_RDONLY)
    try:
        c.call("unlink_first_name", os.unlink, a)
        c.call("fstat_one_name_left", os.fstat, fd)
        c.call("unlink_second_name", os.unlink, b)
        c.call("fstat_no_name_left", os.fstat, fd)
        c.call("read_without_names", os.pread, fd, 100, 0)
    finally:
        os.close(fd)
    victim, replacement = c.path("victim"), c.path("replacement")
    write_file(victim, b"old")
    write_file(replacement, b"new")
    fd = os.open(victim, os.O_RDONLY)
    try:
        c.call("rename_over_open_file", os.rename, replacement, victim)
        c.call("open_fd_reads_old", os.pread, fd, 100, 0)
        c.call("open_fd_fstat", os.fstat, fd)
        c.content("name_reads_new", "victim")
    finally:
        os.close(fd)
    c.listing("listing_at_end")


def case_tmpfile(c):
    """O_TMPFILE: nameless file, nlink 0, linked in through /proc/self/fd."""
    try:
        fd = os.open(c.dir, os.O_TMPFILE | os.O_RDWR, 0o640)
    except OSError as exc:
        c.rec("open_o_tmpfile", errno_name(exc))
        return
    c.rec("open_o_tmpfile", "ok")
    try:
        c.call("write", os.write, fd, b"tmp")
        c.call("fstat", os.fstat, fd)
        c.listing("listing_before_link")
        c.call("link_from_proc", link_following, f"/proc/self/fd/{fd}", c.path("linked"))
        c.call("fstat_after_link", os.fstat, fd)
    finally:
        os.close(fd)
    c.content("linked_data", "linked")


def ftruncate_down_up_cached(path):
    """Shrink then regrow through one fd; the old tail must read as zeros."""
    def shrink_and_grow(fd):
        os.write(fd, b"\xee" * 8192)
        os.ftruncate(fd, 1000)
        os.ftruncate(fd, 8192)
        return os.pread(fd, 8192, 0)
    return with_fd(path, os.O_RDWR | os.O_CREAT, shrink_and_grow)


def mmap_write(path):
    write_file(path, b"." * 8192)
    with open(path, "r+b") as handle:
        mapping = mmap.mmap(handle.fileno(), 8192)
        mapping[100:105] = b"MMAPD"
        mapping[5000:5005] = b"PAGE2"
        mapping.flush()
        mapping.close()


def read_in_chunks(path, chunk):
    def read_all(fd):
        digest, total = hashlib.sha1(), 0
        while block := os.read(fd, chunk):
            digest.update(block)
            total += len(block)
        return f"{total} bytes sha1:{digest.hexdigest()}"
    return with_fd(path, os.O_RDONLY, read_all)


def case_data_io(c):
    """Large and unaligned writes and reads, truncate zeroing, mmap, O_SYNC."""
    big = c.path("big")
    c.call("write_3mib", write_file, big, pattern(5, 3 * MiB + 123))
    c.content("read_3mib", "big")
    c.call("read_in_5000_byte_chunks", read_in_chunks, big, 5000)
    for offset, size in ((4095, 2), (MiB - 1, 4098), (3 * MiB + 100, 100)):
        c.call(f"pwrite_{offset}_{size}", write_at, big, offset, pattern(offset, size))
    c.content("after_pwrites", "big")
    size = os.lstat(big).st_size
    for offset, length in ((0, 10), (4090, 20), (MiB - 5, 10), (size - 5, 100), (size + 10, 10)):
        c.call(f"pread_{offset}_{length}", read_range, big, offset, length)
    tail = c.path("tail")
    write_file(tail, b"\xff" * 8192)
    c.call("truncate_down", os.truncate, tail, 1000)
    c.call("truncate_up", os.truncate, tail, 8192)
    c.content("tail_after_down_up", "tail")
    c.call("ftruncate_down_up_cached", ftruncate_down_up_cached, c.path("tail2"))
    c.call("write_past_eof", write_at, c.path("gap"), 100000, b"x")
    c.content("gap_data", "gap")
    c.call("mmap_write", mmap_write, c.path("mapped"))
    c.content("mmap_data", "mapped")
    c.call("o_sync_write", write_file, c.path("sync"), b"sync",
           os.O_WRONLY | os.O_CREAT | os.O_SYNC)
    c.content("o_sync_data", "sync")


def case_file_size_limits(c):
    """ext4's maximum file size, probed at the limit of each block size."""
    f = c.path("f")
    write_file(f)
    for label, limit in EXT4_SIZE_LIMITS.items():
        c.call(f"{label}/truncate_to_limit", os.truncate, f, limit)
        c.call(f"{label}/truncate_past_limit", os.truncate, f, limit + 1)
        c.call(f"{label}/size", lambda: os.lstat(f).st_size)
        c.call(f"{label}/pwrite_last_byte", write_at, f, limit - 1, b"z")
        c.call(f"{label}/pwrite_across_limit", write_at, f, limit - 1, b"zz")
        c.call(f"{label}/pwrite_at_limit", write_at, f, limit, b"z")
        c.call(f"{label}/pread_last_byte", read_range, f, limit - 1, 10)
        c.call(f"{label}/truncate_to_zero", os.truncate, f, 0)
    c.lstat("final", "f")


def listing_summary(path):
    names = sorted_listing(path)
    return {"count": len(names), "names": data_summary("\n".join(names).encode())}


def case_large_directory(c):
    """A directory of 400 long names (several blocks, hashed index), then deletions."""
    names = [f"{index:04d}_" + "x" * 120 for index in range(400)]
    for name in names:
        write_file(c.path(name), name[:4].encode())
    c.call("listing", listing_summary, c.dir)
    c.rec("all_found", sum(os.path.exists(c.path(name)) for name in names))
    for name in names[::2]:
        os.unlink(c.path(name))
    c.call("listing_after_unlinks", listing_summary, c.dir)
    c.lstat("lookup_removed", names[0])
    c.content("survivor_data", names[399])
    for index in range(60):
        os.mkdir(c.path(f"sub{index:02d}"))
    c.nlinks("nlink_after_60_mkdirs", ".")
    c.lstat("dir_stat")


CASES = (
    case_names, case_chown, case_chmod, case_suid_cleared_by_write,
    case_open_flags, case_sticky, case_rename_directory_move,
    case_rename_replace, case_renameat2, case_rename_same_inode, case_link,
    case_timestamps, case_mknod, case_symlinks, case_directories,
    case_setgid_directory, case_permissions, case_xattrs, case_posix_acl,
    case_fallocate, case_seek_holes, case_copy_file_range,
    case_unlinked_open_file, case_tmpfile, case_data_io,
    case_file_size_limits, case_large_directory,
)


def case_name(case_function):
    return case_function.__name__.removeprefix("case_")


def run_semantics(work, names):
    records = Records()
    for case_function in CASES:
        name = case_name(case_function)
        if name not in names:
            continue
        case = Case(name, os.path.join(work, name), records)
        try:
            os.mkdir(case.dir)
            case_function(case)
        except Exception as exc:
            case.rec("exception", describe_exception(exc, work))
    return records.items

# --------------------------------------------------------------------------
# Random mode

NAME_POOL = ("a", "b", "c", "file", "x1", "y2", "z3", "n", "d", "e", "dir",
             "longer_name_" + "q" * 30)
DIR_NAMES = NAME_POOL[:3]        # intermediate components, mostly made by mkdir
LEAF_NAMES = NAME_POOL[3:8]      # mostly used by the other ops
MODES = (0o644, 0o600, 0o755, 0o777, 0o000, 0o4755, 0o2755, 0o6755, 0o2644, 0o1777)
IDS = (0, USER, OTHER)
XATTR_NAMES = ("user.a", "user.b", "user.long_" + "k" * 50, "trusted.t")
RENAME_FLAGS = (0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE)
FALLOCATE_MODES = (0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)


def random_path(rng, usual_names=LEAF_NAMES):
    """A path of depth 1..3; its last name from usual_names 9 times in 10."""
    depth = rng.choices((1, 2, 3), weights=(5, 4, 1))[0]
    parts = [rng.choice(DIR_NAMES) for _ in range(depth - 1)]
    last = rng.choice(usual_names if rng.random() < 0.9 else NAME_POOL)
    return "/".join(parts + [last])


class PathChooser:
    """Paths for generated ops. It remembers the paths that earlier ops were
    meant to create and reuses them often; it never sees any result."""

    def __init__(self, rng):
        self.rng = rng
        self.created = []
        self.directories = []   # the created paths that mkdir ops named

    def existing(self):
        if self.created and self.rng.random() < 0.7:
            return self.rng.choice(self.created)
        return random_path(self.rng)

    def new(self, usual_names=LEAF_NAMES):
        parents = [d for d in self.directories if d.count("/") < 2]
        if parents and self.rng.random() < 0.5:
            path = f"{self.rng.choice(parents)}/{self.rng.choice(usual_names)}"
        else:
            path = random_path(self.rng, usual_names)
        self.created.append(path)
        return path

    def new_directory(self):
        path = self.new(DIR_NAMES)
        self.directories.append(path)
        return path

    def either(self, chance_existing):
        return self.existing() if self.rng.random() < chance_existing else self.new()

    def directory(self):
        return os.path.dirname(self.existing()) or "."


def random_time_ns(rng):
    return rng.randrange(2**31) * 10**9 + rng.randrange(10**9)


OPERATIONS = {  # kind: (weight, argument maker taking a PathChooser)
    "write": (20, lambda p: [p.either(0.5), p.rng.randrange(3 * MiB),
                             p.rng.randrange(300 * KiB + 1), p.rng.randrange(2**32)]),
    "read": (8, lambda p: [p.existing()]),
    "truncate": (8, lambda p: [p.existing(), p.rng.randrange(3 * MiB + 300 * KiB)]),
    "mkdir": (8, lambda p: [p.new_directory()]),
    "rmdir": (4, lambda p: [p.existing()]),
    "unlink": (6, lambda p: [p.existing()]),
    "rename": (8, lambda p: [p.existing(), p.either(0.4), p.rng.choice(RENAME_FLAGS)]),
    "link": (4, lambda p: [p.existing(), p.new()]),
    "symlink": (4, lambda p: [p.existing(), p.new()]),
    "chmod": (4, lambda p: [p.existing(), p.rng.choice(MODES)]),
    "chown": (4, lambda p: [p.existing(), p.rng.choice(IDS), p.rng.choice(IDS)]),
    "utime": (3, lambda p: [p.existing(), random_time_ns(p.rng), random_time_ns(p.rng)]),
    "setxattr": (4, lambda p: [p.existing(), p.rng.choice(XATTR_NAMES),
                               p.rng.randrange(2001), p.rng.randrange(2**32)]),
    "removexattr": (2, lambda p: [p.existing(), p.rng.choice(XATTR_NAMES)]),
    "fallocate": (4, lambda p: [p.existing(), p.rng.choice(FALLOCATE_MODES),
                                p.rng.randrange(3 * MiB), p.rng.randrange(1, 512 * KiB)]),
    "fsync": (2, lambda p: [p.existing()]),
    "readdir": (3, lambda p: [p.directory()]),
}


def generate_ops(seed, count):
    """The op list for a seed; it never depends on any operation's result."""
    rng = random.Random(seed)
    paths = PathChooser(rng)
    kinds = list(OPERATIONS)
    weights = [OPERATIONS[kind][0] for kind in kinds]
    ops = []
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        ops.append([kind] + OPERATIONS[kind][1](paths))
    return ops


def execute(work, op):
    """Run one random op inside work; its normalized result."""
    kind, *args = op
    path = os.path.join(work, args[0])
    actions = {
        "write": lambda offset, size, seed: write_at(path, offset, pattern(seed, size)),
        "read": lambda: read_bytes(path),
        "truncate": lambda size: os.truncate(path, size),
        "mkdir": lambda: os.mkdir(path),
        "rmdir": lambda: os.rmdir(path),
        "unlink": lambda: os.unlink(path),
        "rename": lambda target, flags: renameat2(path, os.path.join(work, target), flags),
        "link": lambda target: os.link(path, os.path.join(work, target), follow_symlinks=False),
        "symlink": lambda name: os.symlink(args[0], os.path.join(work, name)),
        "chmod": lambda mode: os.chmod(path, mode),
        "chown": lambda uid, gid: os.chown(path, uid, gid, follow_symlinks=False),
        "utime": lambda atime, mtime: os.utime(path, ns=(atime, mtime), follow_symlinks=False),
        "setxattr": lambda name, size, seed: os.setxattr(
            path, name, pattern(seed, size), follow_symlinks=False),
        "removexattr": lambda name: os.removexattr(path, name, follow_symlinks=False),
        "fallocate": lambda mode, offset, length: with_fd(
            path, os.O_WRONLY, lambda fd: fallocate(fd, mode, offset, length)),
        "fsync": lambda: with_fd(path, os.O_RDONLY, os.fsync),
        "readdir": lambda: sorted_listing(path),
    }
    return attempt(actions[kind], *args[1:])


def describe_entry(path, st):
    entry = stat_summary(st)
    if stat.S_ISREG(st.st_mode):
        entry["data"] = data_summary(read_bytes(path))
    elif stat.S_ISLNK(st.st_mode):
        entry["target"] = readlink_summary(path)
    xattrs = {name: data_summary(os.getxattr(path, name, follow_symlinks=False))
              for name in list_xattrs(path)}
    if xattrs:
        entry["xattrs"] = xattrs
    return entry


def snapshot(work):
    """Every path below work, sorted, with its description; hard links by first path."""
    tree, first_path = {}, {}

    def visit(relative):
        path = os.path.join(work, relative)
        st = os.lstat(path)
        entry = describe_entry(path, st)
        if not stat.S_ISDIR(st.st_mode):
            first = first_path.setdefault((st.st_dev, st.st_ino), relative)
            if first != relative:
                entry["same_inode_as"] = first
        tree[relative] = entry
        if stat.S_ISDIR(st.st_mode):
            for name in sorted_listing(path):
                visit(name if relative == "." else os.path.join(relative, name))

    visit(".")
    return tree


def run_random(work, seed, count):
    records = Records()
    for index, op in enumerate(generate_ops(seed, count), 1):
        records.add(f"{index:04d} " + " ".join(map(str, op)), execute(work, op))
        if index % 10 == 0 or index == count:
            records.add(f"{index:04d} snapshot", attempt(snapshot, work))
    return records.items

# --------------------------------------------------------------------------
# Comparison and reporting


def without_layout(value):
    if isinstance(value, dict):
        return {key: without_layout(sub) for key, sub in value.items()
                if key not in LAYOUT_KEYS}
    if isinstance(value, list):
        return [without_layout(sub) for sub in value]
    return value


def canonical(value):
    return json.dumps(value, sort_keys=True)


def leaves(value, prefix=""):
    if isinstance(value, dict) and value:
        found = {}
        for key, sub in value.items():
            found.update(leaves(sub, f"{prefix}/{key}" if prefix else str(key)))
        return found
    return {prefix: value}


def short(value):
    return canonical(value)[:150]


def explain_lists(key, ref, test):
    only_ref = [item for item in ref if item not in test]
    only_test = [item for item in test if item not in ref]
    if not only_ref and not only_test:
        return f"    {key}same items, other order: REF {short(ref)}  TEST {short(test)}"
    return f"    {key}only REF {short(only_ref)}  only TEST {short(only_test)}"


def explain(ref, test):
    """Lines naming each differing leaf of two results."""
    ref_leaves, test_leaves = leaves(ref), leaves(test)
    keys = list(ref_leaves) + [key for key in test_leaves if key not in ref_leaves]
    lines = []
    for key in keys:
        ref_value, test_value = ref_leaves.get(key, "(absent)"), test_leaves.get(key, "(absent)")
        if canonical(ref_value) == canonical(test_value):
            continue
        label = f"{key}: " if key else ""
        if isinstance(ref_value, list) and isinstance(test_value, list):
            lines.append(explain_lists(label, ref_value, test_value))
        else:
            lines.append(f"    {label}REF {short(ref_value)}  TEST {short(test_value)}")
    return lines


def compare(ref_records, test_records, strict):
    """[(step, explanation lines)] for every step whose results differ."""
    clean = (lambda value: value) if strict else without_layout
    ref, test = dict(ref_records), dict(test_records)
    steps = [step for step, _ in ref_records]
    steps += [step for step, _ in test_records if step not in ref]
    differences = []
    for step in steps:
        if step not in test or step not in ref:
            side = "TEST" if step not in test else "REF"
            differences.append((step, [f"    missing on {side}"]))
        elif canonical(clean(ref[step])) != canonical(clean(test[step])):
            differences.append((step, explain(clean(ref[step]), clean(test[step]))))
    return differences


def report(mode, ref_records, differences):
    if not differences:
        print(f"{mode}: {len(ref_records)} steps, no differences")
        return
    print(f"{mode}: {len(ref_records)} steps, {len(differences)} differ "
          f"(first {min(len(differences), MAX_REPORTED)} shown)")
    for step, lines in differences[:MAX_REPORTED]:
        print(step)
        for line in lines[:8]:
            print(line)
        if len(lines) > 8:
            print(f"    ... {len(lines) - 8} more")

# --------------------------------------------------------------------------
# Main


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for what is compared and how.")
    parser.add_argument("mode", choices=("semantics", "random"))
    parser.add_argument("ref", metavar="DIR_REF", help="directory on kernel ext4")
    parser.add_argument("test", metavar="DIR_TEST", help="directory on the filesystem under test")
    parser.add_argument("--seed", type=int, help="random mode: rng seed")
    parser.add_argument("--ops", type=int, help="random mode: number of operations")
    parser.add_argument("--only", metavar="CASE,...", help="semantics: run only these cases")
    parser.add_argument("--skip", metavar="CASE,...", help="semantics: leave out these cases")
    parser.add_argument("--known", metavar="STEP,...",
                        help="step prefixes whose differences are known limits (reported, not failing)")
    parser.add_argument("--json", metavar="OUT", help="write both record lists here")
    parser.add_argument("--strict", action="store_true",
                        help="also compare st_blocks and directory sizes")
    args = parser.parse_args(argv)
    if args.mode == "random" and (args.seed is None or args.ops is None or args.ops < 1):
        parser.error("random needs --seed N and --ops K (K >= 1)")
    if args.mode == "semantics" and (args.seed is not None or args.ops is not None):
        parser.error("--seed and --ops belong to random mode")
    if args.mode == "random" and (args.only or args.skip):
        parser.error("--only and --skip belong to semantics mode")
    args.cases = selected_cases(parser, args.only, args.skip)
    for directory in (args.ref, args.test):
        if not os.path.isdir(directory):
            parser.error(f"not a directory: {directory}")
    if os.path.realpath(args.ref) == os.path.realpath(args.test):
        parser.error("DIR_REF and DIR_TEST are the same directory")
    if os.geteuid() != 0:
        parser.error("must run as root (cases switch users, chown, mknod)")
    return args


def selected_cases(parser, only, skip):
    known = [case_name(function) for function in CASES]
    chosen = only.split(",") if only else known
    skipped = skip.split(",") if skip else []
    unknown = sorted(set(chosen + skipped) - set(known))
    if unknown:
        parser.error(f"unknown cases {', '.join(unknown)}; known: {', '.join(known)}")
    return [name for name in known if name in chosen and name not in skipped]


def fresh_workdir(top, mode):
    work = os.path.join(os.path.realpath(top), f"posix_diff-{mode}")
    if os.path.lexists(work):
        shutil.rmtree(work)
    os.mkdir(work, 0o755)
    return work


def run_side(args, side, top):
    work = fresh_workdir(top, args.mode)
    print(f"{side}: {args.mode} in {work}", file=sys.stderr)
    if args.mode == "semantics":
        return run_semantics(work, args.cases)
    return run_random(work, args.seed, args.ops)


def main(argv=None):
    args = parse_args(argv)
    os.umask(0o022)
    ref_records = run_side(args, "REF", args.ref)
    test_records = run_side(args, "TEST", args.test)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"mode": args.mode, "ref": ref_records, "test": test_records}, out, indent=1)
    differences = compare(ref_records, test_records, args.strict)
    known = [prefix for prefix in (args.known or "").split(",") if prefix]
    is_known = lambda step: any(step == p or step.startswith(p + "/") for p in known)
    expected = [d for d in differences if is_known(d[0])]
    differences = [d for d in differences if not is_known(d[0])]
    report(args.mode, ref_records, differences)
    for prefix in known:
        if not any(step == prefix or step.startswith(prefix + "/") for step, _ in expected):
            print(f"known difference no longer seen: {prefix}")
    if expected:
        print(f"{len(expected)} steps differ as known: " + ", ".join(step for step, _ in expected))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
