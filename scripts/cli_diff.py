#!/usr/bin/env python3
"""Judge the holdfast command-line tool's changes against the kernel's ext4.

Usage:
  scripts/cli_diff.py --holdfast BINARY --seed N --ops K [--work DIR] [--json OUT]
                      [--keep] [--strict]

Run as root (loop mounts, chown, chroot). Makes one fresh image (mkfs.ext4
-b 4096, 64 MiB, in a new directory under --work, default /dev/shm) and
copies it, so both twins share UUID and directory hash seed. The same K
operations from random.Random(N), generated independently of their results
over a small namespace (names a b c f g h x y, depth <= 3), then run
  kernel    as syscalls on a loop mount of one twin, in a child chrooted
            there (symlink targets, relative or absolute, resolve inside the
            image as holdfast resolves them), and
  holdfast  as one `holdfast COMMAND IMAGE ...` process each on the other
            twin (mkdir, write, put, rm, mv, ln, chmod, chown, truncate,
            fallocate, xattr).
Each op's result is only success or failure on each side (error texts are
not compared; holdfast exit status 1 is a failure, 2 to 5 or a signal never
match). Afterwards `e2fsck -fn` must pass on the holdfast twin (and, as a
sanity check, on the kernel's), then both twins are loop-mounted read-only
and the whole tree of each is snapshotted by the kernel (lost+found aside):
for every path its type, permission bits, nlink, uid, gid, size, st_blocks,
rdev, symlink target, sha1 of the data, the logical block ranges that are
allocated (FIEMAP, written or unwritten alike), the xattr names and values,
and hard links as "same inode as <first path>". Never inode numbers or
times. Layout, compared only with --strict: a directory's size and st_blocks
(hash seed, block reuse), and a file's st_blocks when its allocated ranges
and xattrs agree, which leaves only extent-tree index blocks (how fragmented
each allocator's choice came out).

How each command is mirrored on the kernel side (umask 0, running as root):
  mkdir P --mode M --owner U:G   mkdir(M & 01777) (a setgid parent gives its
                                 group and setgid bit), chmod(M) when M has
                                 setuid or setgid bits, chown(U, G) when
                                 --owner is given, as the CLI documents
  write P --offset O < DATA      open(O_WRONLY|O_CREAT, 0644) following a
                                 final symlink, pwrite(DATA, O)
  put HOST DEST                  DEST, or DEST/NAME when DEST is a directory
                                 (followed): created exclusively, then data,
                                 chown and chmod as the host file's
  rm P [-r]                      unlink or rmdir by lstat type; -r rmtree
  mv S D [--no-clobber|--exchange]  renameat2(S, D, flags); without
                                 --exchange, when D is a directory (followed)
                                 and not S itself, D/basename(S), as mv(1)
  ln T L / ln -s TEXT L          link(T, L) not following T / symlink(TEXT, L)
  chmod M P                      chmod(P, M), following, as chmod(1)
  chown U[:G] P                  chown(P, U, G or -1), following, as chown(1)
  truncate P S                   truncate(P, S), following
  fallocate P --offset --length [--keep-size|--punch-hole|--zero-range]
                                 open(O_WRONLY) + fallocate(2) with 0,
                                 KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE
                                 (|KEEP_SIZE with --keep-size)
  xattr P --set N=V / --remove N setxattr / removexattr, not following

--self-check (not in --help) runs the kernel syscalls on both twins instead:
it checks the script itself and must report 0 differences.

Exit status: 0 when results, trees and e2fsck agree; 1 on differences (the
first 25 are printed, each path with the last op that named it or a path
above or below it, as the holdfast command line); 2 on usage errors.
"""

import argparse
import errno
import fcntl
import hashlib
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import traceback

KiB = 1024
IMAGE_SIZE = "64M"
MKFS = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0"]
MAX_REPORTED = 25
HOLDFAST_TIMEOUT = 120
LAYOUT_KEYS = ("dir_size", "dir_blocks")   # compared only with --strict

RENAME_FLAGS = {"": 0, "no-clobber": 1, "exchange": 2}   # RENAME_NOREPLACE, RENAME_EXCHANGE
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
FALLOCATE_MODES = {  # name: (holdfast flags, fallocate(2) mode)
    "allocate": ([], 0),
    "keep-size": (["--keep-size"], FALLOC_FL_KEEP_SIZE),
    "punch-hole": (["--punch-hole"], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE),
    "zero-range": (["--zero-range"], FALLOC_FL_ZERO_RANGE),
    "zero-range-keep": (["--zero-range", "--keep-size"], FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE),
}

FILE_TYPES = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev",
    stat.S_IFSOCK: "socket",
}

# --------------------------------------------------------------------------
# libc calls that the os module lacks

from libc_calls import fallocate, renameat2  # noqa: E402


FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_HEADER, FIEMAP_EXTENT = struct.Struct("=QQIIII"), struct.Struct("=QQQQQI12x")
FIEMAP_BATCH = 256


def mapped_ranges(fd, block_size=4096):
    """The file's allocated logical blocks (written or not) as merged "first-last"
    ranges, from FIEMAP; holes are the gaps."""
    ranges, start = [], 0
    while True:
        request = bytearray(FIEMAP_HEADER.size + FIEMAP_BATCH * FIEMAP_EXTENT.size)
        FIEMAP_HEADER.pack_into(request, 0, start, (1 << 64) - 1 - start, FIEMAP_FLAG_SYNC, 0,
                                FIEMAP_BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, request)
        count = FIEMAP_HEADER.unpack_from(request, 0)[3]
        last = False
        for index in range(count):
            logical, _, length, _, _, flags = FIEMAP_EXTENT.unpack_from(
                request, FIEMAP_HEADER.size + index * FIEMAP_EXTENT.size)
            first, end = logical // block_size, (logical + length) // block_size
            if ranges and ranges[-1][1] == first:
                ranges[-1][1] = end
            else:
                ranges.append([first, end])
            start, last = logical + length, flags & FIEMAP_EXTENT_LAST
        if count < FIEMAP_BATCH or last:
            return [f"{first}-{end - 1}" for first, end in ranges]


def pattern(seed, size):
    return random.Random(seed).randbytes(size)

# --------------------------------------------------------------------------
# Random ops: [kind, args...], paths relative to the image's root

DIR_NAMES = ("a", "b", "c")            # intermediate components, mostly made by mkdir
LEAF_NAMES = ("f", "g", "h", "x", "y")  # mostly used by the other ops
NAME_POOL = DIR_NAMES + LEAF_NAMES
MODES = (0o4755, 0o2755, 0o6755, 0o2644, 0o1777, 0o000, 0o4644, 0o6644, 0o2710,
         0o644, 0o755, 0o600, 0o777)
MODE_WEIGHTS = (4, 4, 4, 3, 2, 2, 2, 2, 1, 2, 2, 1, 1)
DIR_MODES = (0o755, 0o777, 0o700, 0o2775, 0o2755, 0o1777, 0o3777)
IDS = (0, 1000, 1001)
XATTR_NAMES = ("user.a", "user.b", "user.long_" + "k" * 40, "security.hf")


def random_path(rng, usual_names=LEAF_NAMES):
    """A path of depth 1..3; its last name from usual_names most times."""
    depth = rng.choices((1, 2, 3), weights=(5, 3, 1))[0]
    parts = [rng.choice(DIR_NAMES) for _ in range(depth - 1)]
    last = rng.choice(usual_names if rng.random() < 0.85 else NAME_POOL)
    return "/".join(parts + [last])


class PathChooser:
    """Paths for generated ops. It remembers the paths earlier ops named (and
    which were meant to be directories) and reuses them often, the most
    recent ones most; it never sees any result."""

    def __init__(self, rng):
        self.rng = rng
        self.created = []
        self.directories = []
        self.recent = []

    def touch(self, path):
        self.recent = (self.recent + [path])[-5:]
        return path

    def existing(self):
        roll = self.rng.random()
        if self.recent and roll < 0.3:
            return self.touch(self.rng.choice(self.recent))
        if self.created and roll < 0.85:
            return self.touch(self.rng.choice(self.created))
        return self.touch(random_path(self.rng))

    def new(self, usual_names=LEAF_NAMES):
        """A path to create: most often in a directory that an earlier mkdir named."""
        parents = [d for d in self.directories if d.count("/") < 2]
        roll = self.rng.random()
        if parents and roll < 0.65:
            path = f"{self.rng.choice(parents)}/{self.rng.choice(usual_names)}"
        elif roll < 0.85:
            path = self.rng.choice(usual_names)
        else:
            path = random_path(self.rng, usual_names)
        self.created.append(path)
        return self.touch(path)

    def new_directory(self):
        path = self.new(DIR_NAMES)
        self.directories.append(path)
        return path

    def either(self, chance_existing):
        return self.existing() if self.rng.random() < chance_existing else self.new()

    def symlink_text(self, link):
        """A target text, relative or absolute (the kernel side runs chrooted into its
        mount): to a path ops named or a dangling name, sometimes longer than 60 bytes."""
        rng = self.rng
        if self.created and rng.random() < 0.8:
            target = rng.choice(self.created)
        else:
            target = random_path(rng)
        if rng.random() < 0.2:
            text = "/" + target
        else:
            text = os.path.relpath(target, os.path.dirname(link) or ".")
        if rng.random() < 0.2:   # a slow symlink: target stored in a data block
            text = "/." * 30 + text if text.startswith("/") else "./" * 30 + text
        return text


def choose_offset(rng):
    return rng.choice((0, 0, rng.randrange(64 * KiB), rng.randrange(600 * KiB),
                       4096 * rng.randrange(100)))


def choose_size(rng, limit):
    return rng.choice((0, rng.randrange(4 * KiB), rng.randrange(limit + 1),
                       rng.randrange(limit + 1), 4096 * rng.randrange(limit // 4096 + 1)))


def op_mkdir(p):
    rng = p.rng
    mode = rng.choice(DIR_MODES) if rng.random() < 0.7 else None
    owner = [rng.choice(IDS), rng.choice(IDS)] if rng.random() < 0.6 else None
    return [p.new_directory(), mode, owner]


def op_put(p):
    rng = p.rng
    return [p.either(0.2) if rng.random() < 0.7 else p.rng.choice(p.directories or ["."]),
            rng.choice(LEAF_NAMES), rng.choices(MODES, MODE_WEIGHTS)[0],
            rng.choice(IDS), rng.choice(IDS), choose_size(rng, 100 * KiB), rng.randrange(2**32)]


def op_symlink(p):
    link = p.new()
    return [p.symlink_text(link), link]


def op_setxattr(p):
    rng = p.rng
    size = rng.choice((0, rng.randrange(1, 40), rng.randrange(200), rng.randrange(3000)))
    return [p.existing(), rng.choice(XATTR_NAMES), size, rng.randrange(2**32)]


OPERATIONS = {  # kind: (weight, argument maker taking a PathChooser)
    "chmod": (14, lambda p: [p.existing(), p.rng.choices(MODES, MODE_WEIGHTS)[0]]),
    "chown": (12, lambda p: [p.existing(), p.rng.choice(IDS),
                             p.rng.choice(IDS) if p.rng.random() < 0.75 else None]),
    "write": (14, lambda p: [p.either(0.6), choose_offset(p.rng), choose_size(p.rng, 200 * KiB),
                             p.rng.randrange(2**32)]),
    "truncate": (6, lambda p: [p.existing(), choose_size(p.rng, 400 * KiB)]),
    "fallocate": (7, lambda p: [p.existing(), choose_offset(p.rng),
                                p.rng.randrange(1, 256 * KiB), p.rng.choice(list(FALLOCATE_MODES))]),
    "mkdir": (9, op_mkdir),
    "put": (3, op_put),
    "rm": (5, lambda p: [p.existing(), p.rng.random() < 0.4]),
    "mv": (7, lambda p: [p.existing(), p.either(0.5), p.rng.choice(("", "", "no-clobber", "exchange"))]),
    "link": (3, lambda p: [p.existing(), p.new()]),
    "symlink": (4, op_symlink),
    "setxattr": (5, op_setxattr),
    "removexattr": (2, lambda p: [p.existing(), p.rng.choice(XATTR_NAMES)]),
}


def generate_ops(seed, count):
    """The op list for a seed; it never depends on any operation's result. The
    first ops are mostly mkdir and write, to have a tree to work on."""
    rng = random.Random(seed)
    paths = PathChooser(rng)
    kinds = list(OPERATIONS)
    weights = [OPERATIONS[kind][0] for kind in kinds]
    start_weights = [weight * (8 if kind in ("mkdir", "write") else 1)
                     for kind, weight in zip(kinds, weights)]
    ops = []
    for index in range(count):
        kind = rng.choices(kinds, start_weights if index < 15 else weights)[0]
        ops.append([kind] + OPERATIONS[kind][1](paths))
    return ops


def named_paths(op):
    """The image paths (relative) an op names, for "last touched by"."""
    kind, *args = op
    if kind == "symlink":
        return [args[1]]
    if kind in ("mv", "link"):
        return [args[0], args[1]]
    if kind == "put":
        return [os.path.join(args[0], args[1])] + ([args[0]] if args[0] != "." else [])
    return [args[0]]

# --------------------------------------------------------------------------
# The holdfast side: one process per op


def image_path(relative):
    return "/" + relative if relative != "." else "/"


def holdfast_command(op, image, hostdir):
    """(argv after the binary, stdin bytes) for an op."""
    kind, *args = op
    if kind == "mkdir":
        path, mode, owner = args
        argv = ["mkdir", image, image_path(path)]
        if mode is not None:
            argv += ["--mode", format(mode, "o")]
        if owner is not None:
            argv += ["--owner", f"{owner[0]}:{owner[1]}"]
        return argv, b""
    if kind == "write":
        path, offset, size, seed = args
        return ["write", image, image_path(path), "--offset", str(offset)], pattern(seed, size)
    if kind == "put":
        return ["put", image, host_file_path(hostdir, op), image_path(args[0])], b""
    if kind == "rm":
        return ["rm", image, image_path(args[0])] + (["-r"] if args[1] else []), b""
    if kind == "mv":
        source, target, flag = args
        return ["mv", image, image_path(source), image_path(target)] + ([f"--{flag}"] if flag else []), b""
    if kind == "link":
        return ["ln", image, image_path(args[0]), image_path(args[1])], b""
    if kind == "symlink":
        return ["ln", image, args[0], image_path(args[1]), "-s"], b""
    if kind == "chmod":
        return ["chmod", image, format(args[1], "o"), image_path(args[0])], b""
    if kind == "chown":
        path, uid, gid = args
        return ["chown", image, str(uid) if gid is None else f"{uid}:{gid}", image_path(path)], b""
    if kind == "truncate":
        return ["truncate", image, image_path(args[0]), str(args[1])], b""
    if kind == "fallocate":
        path, offset, length, mode = args
        return (["fallocate", image, image_path(path), "--offset", str(offset), "--length", str(length)]
                + FALLOCATE_MODES[mode][0]), b""
    if kind == "setxattr":
        path, name, size, seed = args
        return ["xattr", image, image_path(path), "--set", f"{name}=0x{pattern(seed, size).hex()}"], b""
    if kind == "removexattr":
        return ["xattr", image, image_path(args[0]), "--remove", args[1]], b""
    raise ValueError(f"unknown op {kind}")


def host_file_path(hostdir, op):
    _, _, name, _, _, _, _, seed = op
    return os.path.join(hostdir, f"{seed:08x}", name)


def make_host_file(hostdir, op):
    """The host file a put op copies: its name, data, owner and mode from the op."""
    _, _, name, mode, uid, gid, size, seed = op
    path = host_file_path(hostdir, op)
    if not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(pattern(seed, size))
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return path


def run_holdfast(binary, op, image, hostdir):
    if op[0] == "put":
        make_host_file(hostdir, op)
    argv, data = holdfast_command(op, image, hostdir)
    try:
        done = subprocess.run([binary] + argv, input=data, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=HOLDFAST_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "timeout", f"no exit after {HOLDFAST_TIMEOUT} s"
    message = done.stderr.decode(errors="replace").strip().splitlines()
    message = message[-1] if message else ""
    if done.returncode == 0:
        return "ok", ""
    if done.returncode == 1:
        return "fail", message
    if done.returncode < 0:
        return f"signal {-done.returncode}", message
    return f"exit {done.returncode}", message


def describe_op(op):
    """The op as the holdfast command line that runs it (IMG for the image)."""
    argv, data = holdfast_command(op, "IMG", "HOST")
    if op[0] == "put":
        _, _, name, mode, uid, gid, size, seed = op
        argv[2] = f"HOST/{name}(mode {mode:o}, {uid}:{gid}, {size} bytes)"
    if op[0] == "setxattr" and len(argv[-1]) > 40:
        argv[-1] = argv[-1][:argv[-1].index("=") + 1] + f"<{op[3]} bytes>"
    text = "holdfast " + " ".join(argv)
    if op[0] == "write":
        text += f" < {len(data)} bytes"
    return text

# --------------------------------------------------------------------------
# The kernel side: syscalls on a mount


def kernel_mkdir(root, path, mode, owner):
    """holdfast mkdir as documented: mkdir(2) as root (umask 0; a setgid parent gives its group
    and setgid bit), then chmod to the exact mode when it has setuid or setgid bits (as coreutils'
    mkdir -m), then chown when --owner is given."""
    target = os.path.join(root, path)
    mode = 0o755 if mode is None else mode
    os.mkdir(target, mode & 0o1777)
    if mode & 0o6000:
        os.chmod(target, mode)
    if owner is not None:
        os.chown(target, *owner)


def kernel_write(root, path, offset, size, seed):
    data = pattern(seed, size)
    fd = os.open(os.path.join(root, path), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + done)
    finally:
        os.close(fd)


def kernel_put(root, op):
    """The host file's data, owner and mode are made from the op, as make_host_file makes them."""
    _, dest, name, mode, uid, gid, size, seed = op
    target = os.path.join(root, dest)
    try:
        into = stat.S_ISDIR(os.stat(target).st_mode)
    except OSError:
        into = False
    if into:
        target = os.path.join(target, name)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        data = pattern(seed, size)
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def kernel_rm(root, path, recursive):
    target = os.path.join(root, path)
    if stat.S_ISDIR(os.lstat(target).st_mode):
        if recursive:
            shutil.rmtree(target)
        else:
            os.rmdir(target)
    else:
        os.unlink(target)


def kernel_mv(root, source, target, flag):
    source_path, target_path = os.path.join(root, source), os.path.join(root, target)
    if flag != "exchange":
        try:
            directory = os.stat(target_path)
        except OSError:
            directory = None
        if directory is not None and stat.S_ISDIR(directory.st_mode):
            try:
                moved = os.lstat(source_path)
            except OSError:
                moved = None
            if moved is not None and moved.st_ino != directory.st_ino:
                target_path = os.path.join(target_path, os.path.basename(source))
    renameat2(source_path, target_path, RENAME_FLAGS[flag])


def kernel_chmod(root, path, mode):
    os.chmod(os.path.join(root, path), mode)


def kernel_fallocate(root, path, offset, length, mode):
    fd = os.open(os.path.join(root, path), os.O_WRONLY)
    try:
        fallocate(fd, FALLOCATE_MODES[mode][1], offset, length)
    finally:
        os.close(fd)


def run_kernel(root, op):
    kind, *args = op
    at = lambda relative: os.path.join(root, relative)
    actions = {
        "mkdir": lambda: kernel_mkdir(root, *args),
        "write": lambda: kernel_write(root, *args),
        "put": lambda: kernel_put(root, op),
        "rm": lambda: kernel_rm(root, *args),
        "mv": lambda: kernel_mv(root, *args),
        "link": lambda: os.link(at(args[0]), at(args[1]), follow_symlinks=False),
        "symlink": lambda: os.symlink(args[0], at(args[1])),
        "chmod": lambda: kernel_chmod(root, *args),
        "chown": lambda: os.chown(at(args[0]), args[1], -1 if args[2] is None else args[2]),
        "truncate": lambda: os.truncate(at(args[0]), args[1]),
        "fallocate": lambda: kernel_fallocate(root, *args),
        "setxattr": lambda: os.setxattr(at(args[0]), args[1], pattern(args[3], args[2]),
                                        follow_symlinks=False),
        "removexattr": lambda: os.removexattr(at(args[0]), args[1], follow_symlinks=False),
    }
    try:
        actions[kind]()
        return "ok", ""
    except OSError as exc:
        return "fail", f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"

def run_kernel_side(point, ops):
    """Every op's result on the kernel mount at point, run by a child chrooted there:
    a symlink's target then resolves inside the image as holdfast resolves it (an
    absolute one from the image's root, '..' at the root staying there), never
    through the host."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            os.chroot(point)
            os.chdir("/")
            payload = json.dumps([run_kernel("/", op) for op in ops]).encode()
            with os.fdopen(write_fd, "wb") as out:
                out.write(payload)
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"the kernel side's child failed (wait status {status})")
    return [tuple(result) for result in json.loads(payload)]


# --------------------------------------------------------------------------
# Snapshots


def describe_entry(path, st):
    kind = FILE_TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
    entry = {"type": kind, "mode": format(stat.S_IMODE(st.st_mode), "04o"), "nlink": st.st_nlink,
             "uid": st.st_uid, "gid": st.st_gid}
    if kind == "dir":
        entry["dir_size"], entry["dir_blocks"] = st.st_size, st.st_blocks
    else:
        entry["size"], entry["blocks"] = st.st_size, st.st_blocks
    if kind in ("chardev", "blockdev"):
        entry["rdev"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if kind == "symlink":
        entry["target"] = os.readlink(path)
    if kind == "file":
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
            entry["mapped"] = mapped_ranges(handle.fileno())
        entry["sha1"] = digest.hexdigest()
    xattrs = []
    for name in sorted(os.listxattr(path, follow_symlinks=False)):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:  # e.g. user.* on a symlink: listed, but the kernel will not read it
            xattrs.append(f"{name} (unreadable: {errno.errorcode.get(exc.errno, exc.errno)})")
            continue
        shown = value.hex() if len(value) <= 16 else f"{len(value)} bytes sha1:{hashlib.sha1(value).hexdigest()[:16]}"
        xattrs.append(f"{name}={shown}")
    entry["xattrs"] = xattrs
    return entry


def snapshot(root):
    """{relative path: description} for everything under root but /lost+found."""
    tree, first_path = {}, {}

    def visit(relative):
        path = os.path.join(root, relative)
        st = os.lstat(path)
        entry = describe_entry(path, st)
        if not stat.S_ISDIR(st.st_mode):
            first = first_path.setdefault(st.st_ino, relative)
            if first != relative:
                entry["same_inode_as"] = first
        tree[relative] = entry
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                if relative == "." and name == "lost+found":
                    continue
                visit(name if relative == "." else os.path.join(relative, name))

    visit(".")
    return tree

# --------------------------------------------------------------------------
# Images and mounts


def run_quiet(argv, check=True):
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): "
                           f"{done.stdout.decode(errors='replace').strip()}")
    return done


def mount(image, point, read_only=False):
    options = "ro,loop,noatime" if read_only else "loop,noatime"
    run_quiet(["mount", "-t", "ext4", "-o", options, image, point])


def unmount(point):
    if os.path.ismount(point):
        run_quiet(["umount", point])


def fsck(image):
    """(clean, output) of e2fsck -fn."""
    done = run_quiet(["e2fsck", "-fn", image], check=False)
    return done.returncode == 0, done.stdout.decode(errors="replace")


def take_snapshot(image, point):
    mount(image, point, read_only=True)
    try:
        return snapshot(point)
    finally:
        unmount(point)

# --------------------------------------------------------------------------
# Comparison


def last_touch(ops, relative):
    """(index, op) of the last op naming relative, a path above it or below it."""
    for index in range(len(ops) - 1, -1, -1):
        for named in named_paths(ops[index]):
            named = os.path.normpath(named)
            if named == relative or relative.startswith(named + "/") or named.startswith(relative + "/") \
                    or relative == ".":
                return index, ops[index]
    return None


def compare_results(ops, kernel_results, test_results, test_name):
    differences = []
    for index, (op, (k_result, k_text), (t_result, t_text)) in enumerate(
            zip(ops, kernel_results, test_results)):
        if k_result != t_result:
            lines = [f"    kernel {k_result}{': ' + k_text if k_text else ''}",
                     f"    {test_name} {t_result}{': ' + t_text if t_text else ''}"]
            differences.append(("result", f"op #{index} {describe_op(op)}", lines))
    return differences


def layout_only(key, k_entry, t_entry):
    """Is a difference in key one of layout, compared only with --strict? Directory
    sizes and blocks; a file's st_blocks when its mapped ranges and xattrs agree (the
    rest is an extent tree index block, which depends on how fragmented the
    allocation came out)."""
    if key in LAYOUT_KEYS:
        return True
    return (key == "blocks" and k_entry["type"] == t_entry["type"] == "file"
            and k_entry.get("mapped") == t_entry.get("mapped")
            and k_entry.get("xattrs") == t_entry.get("xattrs"))


def compare_trees(ops, kernel_tree, test_tree, strict, test_name):
    """(differences, paths compared, layout differences left out)"""
    differences, layout = [], 0
    paths = sorted(set(kernel_tree) | set(test_tree))
    for relative in paths:
        k_entry, t_entry = kernel_tree.get(relative), test_tree.get(relative)
        lines = []
        if k_entry is None or t_entry is None:
            present = k_entry or t_entry
            lines.append(f"    only in {'kernel' if k_entry else test_name}: {json.dumps(present)[:200]}")
        else:
            for key in list(k_entry) + [key for key in t_entry if key not in k_entry]:
                k_value, t_value = k_entry.get(key, "(absent)"), t_entry.get(key, "(absent)")
                if k_value == t_value:
                    continue
                note = ""
                if layout_only(key, k_entry, t_entry):
                    if not strict:
                        layout += 1
                        continue
                    note = "  (layout)"
                lines.append(f"    {key}: kernel {json.dumps(k_value)[:150]}  "
                             f"{test_name} {json.dumps(t_value)[:150]}{note}")
        if lines:
            touched = last_touch(ops, relative)
            if touched is not None:
                lines.append(f"    last op on it: #{touched[0]} {describe_op(touched[1])}")
            differences.append(("path", f"/{relative}" if relative != "." else "/", lines))
    return differences, len(paths), layout

# --------------------------------------------------------------------------
# Main


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for what is compared and how.")
    parser.add_argument("--holdfast", metavar="BINARY", help="the holdfast binary to judge")
    parser.add_argument("--seed", type=int, required=True, help="rng seed of the op list")
    parser.add_argument("--ops", type=int, required=True, help="number of operations")
    parser.add_argument("--work", metavar="DIR", default="/dev/shm",
                        help="where the images, mounts and host files go (default /dev/shm)")
    parser.add_argument("--json", metavar="OUT", help="write ops, results, snapshots, differences here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and images")
    parser.add_argument("--strict", action="store_true",
                        help="also compare layout: directory sizes and st_blocks, file st_blocks whose mapped ranges agree")
    parser.add_argument("--self-check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ops < 1:
        parser.error("--ops must be at least 1")
    if not args.self_check:
        if not args.holdfast:
            parser.error("--holdfast BINARY is required")
        if not (os.path.isfile(args.holdfast) and os.access(args.holdfast, os.X_OK)):
            parser.error(f"not an executable file: {args.holdfast}")
        args.holdfast = os.path.realpath(args.holdfast)
    if not os.path.isdir(args.work):
        parser.error(f"not a directory: {args.work}")
    if os.geteuid() != 0:
        parser.error("must run as root (loop mounts, chown)")
    return args


def run(args, work, ops):
    kernel_image, test_image = os.path.join(work, "kernel.img"), os.path.join(work, "holdfast.img")
    kernel_mount, test_mount = os.path.join(work, "kernel.mnt"), os.path.join(work, "test.mnt")
    hostdir = os.path.join(work, "host")
    for directory in (kernel_mount, test_mount, hostdir):
        os.mkdir(directory)
    with open(kernel_image, "wb") as image:
        image.truncate(0)
    run_quiet(MKFS + [kernel_image, IMAGE_SIZE])
    shutil.copyfile(kernel_image, test_image)
    test_name = "twin" if args.self_check else "holdfast"

    mount(kernel_image, kernel_mount)
    try:
        kernel_results = run_kernel_side(kernel_mount, ops)
    finally:
        unmount(kernel_mount)
    if args.self_check:
        mount(test_image, test_mount)
        try:
            test_results = run_kernel_side(test_mount, ops)
        finally:
            unmount(test_mount)
    else:
        test_results = [run_holdfast(args.holdfast, op, test_image, hostdir) for op in ops]

    differences = compare_results(ops, kernel_results, test_results, test_name)
    kernel_clean, kernel_fsck = fsck(kernel_image)
    test_clean, test_fsck = fsck(test_image)   # before any mount of it
    if not test_clean:
        differences.append(("fsck", f"e2fsck -fn on the {test_name} image is not clean",
                            ["    " + line for line in test_fsck.strip().splitlines()[:15]]))
    if not kernel_clean:
        differences.append(("fsck", "e2fsck -fn on the kernel image is not clean (environment?)",
                            ["    " + line for line in kernel_fsck.strip().splitlines()[:15]]))
    kernel_tree = take_snapshot(kernel_image, kernel_mount)
    test_tree = take_snapshot(test_image, test_mount)
    tree_differences, path_count, layout = compare_trees(ops, kernel_tree, test_tree, args.strict, test_name)
    differences += tree_differences

    if args.json:
        with open(args.json, "w") as out:
            json.dump({"seed": args.seed, "ops": ops,
                       "commands": [describe_op(op) for op in ops],
                       "kernel_results": kernel_results, f"{test_name}_results": test_results,
                       "kernel_tree": kernel_tree, f"{test_name}_tree": test_tree,
                       "fsck": {"kernel": kernel_fsck, test_name: test_fsck},
                       "differences": [{"kind": kind, "what": what, "lines": lines}
                                       for kind, what, lines in differences]}, out, indent=1)
    return differences, path_count, layout


def report(args, ops, differences, path_count, layout):
    for kind, what, lines in differences[:MAX_REPORTED]:
        print(what)
        for line in lines[:12]:
            print(line)
        if len(lines) > 12:
            print(f"    ... {len(lines) - 12} more")
    if len(differences) > MAX_REPORTED:
        print(f"... {len(differences) - MAX_REPORTED} more differences (--json for all)")
    if layout:
        print(f"({layout} layout differences left out: directory sizes, or st_blocks of files "
              f"whose mapped ranges agree; --strict shows them)")
    mode = " (self-check: kernel against kernel)" if args.self_check else ""
    print(f"cli_diff: seed {args.seed}, {args.ops} ops: {len(ops)} results, {path_count} paths compared, "
          f"{len(differences)} differences{mode}")


def main(argv=None):
    args = parse_args(argv)
    os.umask(0)
    work = tempfile.mkdtemp(prefix="cli_diff-", dir=os.path.abspath(args.work))
    try:
        ops = generate_ops(args.seed, args.ops)
        differences, path_count, layout = run(args, work, ops)
    finally:
        for point in ("kernel.mnt", "test.mnt"):
            try:
                unmount(os.path.join(work, point))
            except RuntimeError as exc:
                print(f"cli_diff: {exc}", file=sys.stderr)
        if args.keep:
            print(f"cli_diff: kept {work}", file=sys.stderr)
        elif not any(os.path.ismount(os.path.join(work, p)) for p in ("kernel.mnt", "test.mnt")):
            shutil.rmtree(work)
    report(args, ops, differences, path_count, layout)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
