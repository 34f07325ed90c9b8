#!/usr/bin/env python3
"""Replays a fuzz corpus of images through the release `holdfast` binary, without sanitizers.

Usage: Fuzz/replay.py [--holdfast BIN] [--memory 16M] CORPUS_DIR [...]

Each input becomes an image as the harness makes it (zero-extended to the size its superblock
gives, up to 16 MiB). It is then read in full by `holdfast extract --memory 16M` into a
scratch folder on tmpfs and listed by `holdfast tree`; `/usr/bin/time` measures each run. The
replay fails (exit 1) on:
- a crash: a signal, or an exit status that is not one of holdfast's own (0 to 5);
- an input that takes over 1 s (--time-limit);
- a peak RSS over the budget plus 48 MiB.
It prints the number of inputs, the exit statuses, and the slowest and largest runs.
"""
import argparse
import collections
import os
import struct
import subprocess
import sys
import tempfile

LARGEST = 16 << 20


def as_image(data, path):
    with open(path, "wb") as f:
        f.write(data)
        if len(data) >= 1024 + 28:
            blocks, = struct.unpack_from("<I", data, 1024 + 4)
            shift, = struct.unpack_from("<I", data, 1024 + 24)
            if shift <= 6:
                claimed = blocks << (10 + shift)
                if len(data) < claimed <= LARGEST:
                    f.truncate(claimed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--holdfast", default=os.path.join(here, "..", ".build", "release", "holdfast"))
    parser.add_argument("--memory", default="16M")
    parser.add_argument("--time-limit", type=float, default=1.0, help="seconds an input may take (1; more for a debug build)")
    parser.add_argument("corpora", nargs="+")
    args = parser.parse_args()
    budget_mib = int(args.memory.rstrip("Mm"))
    limit_kib = (budget_mib + 48) << 10
    inputs = [os.path.join(d, n) for d in args.corpora for n in sorted(os.listdir(d))]
    work = tempfile.mkdtemp(prefix="holdfast-replay.", dir="/dev/shm")
    statuses = collections.Counter()
    slowest = (0.0, "")
    largest = (0, "")
    findings = []

    def check(path, command):
        nonlocal slowest, largest
        run = subprocess.run(["/usr/bin/time", "-f", "%M %e", args.holdfast] + command,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
        rss, seconds = run.stderr.strip().splitlines()[-1].split()[-2:]
        rss, seconds = int(rss), float(seconds)
        status = run.returncode
        statuses[status] += 1
        slowest = max(slowest, (seconds, path))
        largest = max(largest, (rss, path))
        what = f"{path} ({command[0]})"
        if "Command terminated by signal" in run.stderr or status not in range(0, 6):
            findings.append(f"{what}: exit {status}: {run.stderr.strip()[-300:]}")
        elif seconds > args.time_limit:
            findings.append(f"{what}: {seconds:.2f} s")
        elif rss > limit_kib:
            findings.append(f"{what}: peak RSS {rss} KiB over {limit_kib} KiB")

    try:
        image, out = os.path.join(work, "in.img"), os.path.join(work, "out")
        for path in inputs:
            with open(path, "rb") as f:
                as_image(f.read(), image)
            for command in (["extract", "--memory", args.memory, image, out], ["tree", "--memory", args.memory, image, "/"]):
                subprocess.run(["rm", "-rf", out])  # a hostile tree may nest deeper than shutil recurses
                check(path, command)
    finally:
        subprocess.run(["rm", "-rf", work])
    print(f"replay: {len(inputs)} inputs, extract and tree each; exit statuses {dict(sorted(statuses.items()))}; "
          f"slowest {slowest[0]:.2f} s; largest peak RSS {largest[1] and largest[0]} KiB (limit {limit_kib} KiB)")
    for f in findings[:20]:
        print("FINDING", f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
