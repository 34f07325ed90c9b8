#!/usr/bin/env python3
"""Workloads the mount tests (Tests/HoldfastCLITests/MountTests.swift) run inside a mount.

Usage:
  mount_checks.py fsynced DIR     write 40 files with fsync, 20 without, unlink a file while
                                  open; print a line, then hold the file open until stdin closes
  mount_checks.py expected        the name and sha256 of each file `fsynced` writes
  mount_checks.py load DIR N      append, unlink and rename in DIR/wN until the mount goes away
  mount_checks.py orphan DIR      an unlinked open file's lifetime, and 256-byte names
  mount_checks.py pwrites FILE N  N writes of 4 KiB into FILE through one descriptor
  mount_checks.py beside DIR      a stream of lookups of new names while two copy_file_range calls
                                  of 256 MiB run; prints how many were answered while both ran
  mount_checks.py spliced-write DIR  DIR/s: data, a punched hole, a preallocated (unwritten)
                                  range and a hole at the end; what it holds is remembered in DIR/../s.expected
  mount_checks.py spliced-read DIR   reads DIR/s whole and in odd pieces against s.expected; then
                                  overwrites pieces, drops the kernel's copy of the file and
                                  reads it again (the server holds the new bytes, maybe dirty)
  mount_checks.py cpu-latency DIR    the kernel's CPU-latency target (/dev/cpu_dma_latency, in
                                  microseconds): its least value while 12 lookups in DIR trickle
                                  in 25 ms apart, its least while a thread looks up new names
                                  for 0.4 s, and its value 200 ms after that: "trickle=N busy=N idle=N"
  mount_checks.py cpu-latency-slow DIR  the target at the end of a stream of lookups, then 100 ms
                                  into a copy_file_range of 256 MiB sent right after it (one
                                  request, which keeps a server of one worker busy):
                                  "streamed=N during=N running=0|1"
"""
import errno
import hashlib
import os
import random
import struct
import subprocess
import sys
import threading
import time

KEPT = 40


def kept_data(i):
    return hashlib.sha256(str(i).encode()).digest() * (100 + 97 * i)


def fsynced(d):
    os.mkdir(d + '/kept')
    for i in range(KEPT):
        with open(f'{d}/kept/f{i}', 'wb') as f:
            f.write(kept_data(i))
            f.flush()
            os.fsync(f.fileno())
    dfd = os.open(d + '/kept', os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    for i in range(20):
        with open(f'{d}/loose{i}', 'wb') as f:
            f.write(b'x' * 50000)
    fd = os.open(d + '/open-unlinked', os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b'y' * 300000)
    os.fsync(fd)
    os.unlink(d + '/open-unlinked')
    os.fsync(fd)
    print(fd, flush=True)
    sys.stdin.read()


def expected():
    for i in range(KEPT):
        print(f'f{i}', hashlib.sha256(kept_data(i)).hexdigest())


def load(d, n):
    r = random.Random(n)
    os.makedirs(f'{d}/w{n}', exist_ok=True)
    print('started', flush=True)
    i = 0
    while True:
        try:
            p = f'{d}/w{n}/f{i % 50}'
            with open(p, 'ab') as f:
                f.write(os.urandom(r.randrange(1, 200000)))
            if i % 7 == 0:
                os.unlink(p)
            if i % 11 == 0:
                os.rename(f'{d}/w{n}', f'{d}/w{n}x')
                os.rename(f'{d}/w{n}x', f'{d}/w{n}')
        except FileNotFoundError:
            pass
        except OSError:
            break  # the mount went away
        i += 1


def orphan(d):
    before = os.statvfs(d)
    fd = os.open(d + '/victim', os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, os.urandom(2 << 20))
    os.fsync(fd)
    os.unlink(d + '/victim')
    assert os.fstat(fd).st_nlink == 0
    assert len(os.pread(fd, 3 << 20, 0)) == 2 << 20, 'an unlinked open file reads whole'
    during = os.statvfs(d)
    assert during.f_bfree < before.f_bfree - 1000, 'its blocks are still held while open'
    os.close(fd)
    # FUSE sends the release (and the forget that follows the unlinked inode's eviction) after
    # close(2) returns: the space comes back a moment later, not at once as on the kernel's ext4.
    deadline = time.monotonic() + 10
    while True:
        after = os.statvfs(d)
        if after.f_bfree >= before.f_bfree - 8 and after.f_ffree == before.f_ffree:
            break
        assert time.monotonic() < deadline, \
            f'blocks and inode freed after the last close: {before.f_bfree} {after.f_bfree}, {before.f_ffree} {after.f_ffree}'
        time.sleep(0.05)
    calls = (lambda n: os.mkdir(n), lambda n: os.open(n, os.O_CREAT | os.O_WRONLY), lambda n: os.symlink('t', n))
    for call in calls:
        try:
            call(d + '/' + 'n' * 256)
            raise SystemExit('a 256-byte name was accepted')
        except OSError as e:
            assert e.errno == errno.ENAMETOOLONG, e
    assert os.listdir(d) == ['lost+found'], os.listdir(d)
    print('ok')


def pwrites(path, n):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    for i in range(n):
        os.pwrite(fd, b'x' * 4096, i * 4096)
    os.close(fd)


def copy_whole(src, dst, finished):
    """copy_file_range of all 256 MiB of src into dst (the server does each call in one go);
    sets `finished` when done."""
    fin = os.open(src, os.O_RDONLY)
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    left = 256 << 20
    while left > 0:
        left -= os.copy_file_range(fin, fout, left)
    finished.set()
    os.close(fin)
    os.close(fout)


def beside(d):
    """Two slow requests (copy_file_range calls the server does in one go, each of 256 MiB), the
    second sent while the first runs, and beside them a stream of lookups of names that exist
    nowhere (each a round trip: nothing is cached), which keeps the server's reader awake. A
    server that serves one request at a time, or rescues the others from a first slow request
    only, answers no lookup while both copies run. Prints how many were answered then."""
    src = os.path.join(d, 'src')
    with open(src, 'wb') as f:
        f.write(os.urandom(1 << 20) * 256)
    finished = threading.Event()
    stop = threading.Event()
    looked = [0]

    def lookups():
        i = 0
        while not stop.is_set():
            i += 1
            assert not os.path.exists(os.path.join(d, f'missing-{i}'))
            looked[0] += 1

    looker = threading.Thread(target=lookups)
    looker.start()
    time.sleep(0.05)
    copies = [threading.Thread(target=copy_whole, args=(src, os.path.join(d, f'dst{k}'), finished)) for k in (0, 1)]
    copies[0].start()
    time.sleep(0.1)  # the first copy holds a worker; another reads the lookups
    copies[1].start()
    time.sleep(0.05)  # the second copy's request is in the server by now
    before = looked[0]
    answered = 0
    while not finished.is_set():
        answered = looked[0] - before
        time.sleep(0.005)
    stop.set()
    for t in copies + [looker]:
        t.join()
    print(answered)


MIB = 1 << 20


def spliced_expected(d):
    return os.path.join(os.path.dirname(os.path.abspath(d)), 's.expected')


def spliced_write(d):
    rng = random.Random(7)
    data = bytearray(rng.randbytes(6 * MIB))
    path = os.path.join(d, 's')
    with open(path, 'wb') as f:
        f.write(data)
    # A hole in the data, unwritten blocks past it, and a hole after those up to the odd size.
    subprocess.run(['fallocate', '-p', '-o', str(2 * MIB + 4096), '-l', str(MIB), path], check=True)
    data[2 * MIB + 4096:3 * MIB + 4096] = bytes(MIB)
    fd = os.open(path, os.O_RDWR)
    os.posix_fallocate(fd, 6 * MIB, 2 * MIB)
    size = 9 * MIB + 1234
    os.ftruncate(fd, size)
    os.close(fd)
    data += bytes(size - len(data))
    with open(spliced_expected(d), 'wb') as f:
        f.write(data)
    print('ok')


def spliced_check(path, want, what):
    with open(path, 'rb', buffering=0) as f:
        got = bytearray()
        while True:
            piece = f.read(MIB)
            if not piece:
                break
            got += piece
    if got != want:
        at = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        sys.exit(f'{what}: {len(got)} bytes read, {len(want)} expected, first difference at byte {at}')
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, count in [(12345, 300000), (2 * MIB - 100, 200), (6 * MIB - 5, MIB + 10), (len(want) - 10, 100)]:
            if os.pread(fd, count, offset) != want[offset:offset + count]:
                sys.exit(f'{what}: bytes {offset}..{offset + count} differ')
    finally:
        os.close(fd)


def spliced_read(d):
    path = os.path.join(d, 's')
    with open(spliced_expected(d), 'rb') as f:
        want = bytearray(f.read())
    spliced_check(path, want, 'after the remount')
    # New bytes through the mount, then the kernel's copy of the file goes: the reads reach the
    # server again, which holds the new bytes in its own cache.
    fd = os.open(path, os.O_RDWR)
    for offset, n in [(100000, 5000), (4 * MIB, 70000), (7 * MIB + 3, 10)]:
        piece = bytes([offset % 251 + 1]) * n
        os.pwrite(fd, piece, offset)
        want[offset:offset + n] = piece
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    spliced_check(path, want, 'after the overwrite')
    print('ok')


def latency_target():
    """The CPU-latency QoS target every request to the kernel adds up to (reading opens a request
    of its own, which asks for nothing)."""
    with open('/dev/cpu_dma_latency', 'rb') as f:
        return struct.unpack('i', f.read(4))[0]


def cpu_latency(d):
    least = latency_target()
    for i in range(12):  # a request now and then: no stream, no request for polling CPUs
        try:
            os.stat(os.path.join(d, 'trickle-%d' % i))
        except FileNotFoundError:
            pass
        least = min(least, latency_target())
        time.sleep(0.025)
    trickle = least
    stop = threading.Event()

    def lookups():  # a stream: each a LOOKUP of a name the kernel has not seen
        i = 0
        while not stop.is_set():
            try:
                os.stat(os.path.join(d, 'missing-%d' % i))
            except FileNotFoundError:
                pass
            i += 1

    worker = threading.Thread(target=lookups)
    worker.start()
    busy = latency_target()
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        busy = min(busy, latency_target())
        time.sleep(0.005)
    stop.set()
    worker.join()
    time.sleep(0.2)
    print('trickle=%d busy=%d idle=%d' % (trickle, busy, latency_target()))

def cpu_latency_slow(d):
    src = os.path.join(d, 'src')
    with open(src, 'wb') as f:
        chunk = os.urandom(1 << 20)
        for _ in range(256):
            f.write(chunk)
    time.sleep(0.2)
    end = time.monotonic() + 0.2
    i = 0
    while time.monotonic() < end:  # a stream: each a LOOKUP of a name the kernel has not seen
        assert not os.path.exists(os.path.join(d, 'missing-%d' % i))
        i += 1
    streamed = latency_target()
    finished = threading.Event()

    worker = threading.Thread(target=copy_whole, args=(src, os.path.join(d, 'dst'), finished))
    worker.start()
    time.sleep(0.1)
    during = latency_target()
    running = not finished.is_set()
    worker.join()
    print('streamed=%d during=%d running=%d' % (streamed, during, running))


if __name__ == '__main__':
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ('', [])
    if command == 'fsynced' and len(args) == 1:
        fsynced(args[0])
    elif command == 'expected' and not args:
        expected()
    elif command == 'load' and len(args) == 2:
        load(args[0], int(args[1]))
    elif command == 'orphan' and len(args) == 1:
        orphan(args[0])
    elif command == 'beside' and len(args) == 1:
        beside(args[0])
    elif command == 'spliced-write' and len(args) == 1:
        spliced_write(args[0])
    elif command == 'spliced-read' and len(args) == 1:
        spliced_read(args[0])
    elif command == 'cpu-latency' and len(args) == 1:
        cpu_latency(args[0])
    elif command == 'cpu-latency-slow' and len(args) == 1:
        cpu_latency_slow(args[0])
    elif command == 'pwrites' and len(args) == 2:
        pwrites(args[0], int(args[1]))
    else:
        sys.exit(__doc__)
