#!/usr/bin/env python3
"""Trees for the mkfs benchmark (scripts/bench_mkfs.sh).

Usage:
  scripts/make_spread.py DEST spread [--seed N]   20,000 files in 5,000 directories, ~700 MB
  scripts/make_spread.py DEST bigdir [--seed N]   one directory of 20,000 small files

File contents are pseudo-random (incompressible, never all zero, so no tool can
turn them into holes); times are whole seconds, which mke2fs -d keeps.
"""
import argparse
import os
import random


def write_file(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    os.utime(path, (1_600_000_000, 1_600_000_000))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dest")
    ap.add_argument("shape", choices=["spread", "bigdir"])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.dest)
    if a.shape == "bigdir":
        d = os.path.join(a.dest, "big")
        os.mkdir(d)
        for i in range(20_000):
            write_file(os.path.join(d, f"file-{i:05d}-{rng.randrange(1 << 30):08x}"), rng.randrange(1, 2048), rng)
        return
    dirs = []
    for i in range(5_000):
        parent = a.dest if i < 50 or not dirs else rng.choice(dirs)
        d = os.path.join(parent, f"d{i}")
        os.mkdir(d)
        dirs.append(d)
    # ~35 KB mean: mostly small files, a few large ones, ~700 MB in all.
    total = 0
    for i in range(20_000):
        r = rng.random()
        size = rng.randrange(1, 16 << 10) if r < 0.80 else rng.randrange(16 << 10, 128 << 10) if r < 0.995 else rng.randrange(1 << 20, 5 << 20)
        total += size
        write_file(os.path.join(rng.choice(dirs), f"f{i}"), size, rng)
    for d in reversed(dirs):
        os.utime(d, (1_600_000_000, 1_600_000_000))


if __name__ == "__main__":
    main()
