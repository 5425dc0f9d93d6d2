#!/usr/bin/env python3
"""What the job thread was doing while another pool thread waited for work.

A step's in-run serial share (`gradscope::idle_seconds`) says how long the pool's other threads
waited; this says why. Record a 2-thread run with call stacks, then pair every sample of a
waiting thread (its stack inside `stay_warm` with no job below it) with the other thread's sample
nearest in time, and count what that one was running:

    RAYON_NUM_THREADS=2 perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -o perf.data \\
        target/release/examples/bench yolo_step 4
    perf script -i perf.data -F tid,time,ip,sym --no-inline > perf.txt
    python3 tools/waits.py perf.txt

A kernel named here was running its parallel loop's last tasks on one thread (its split left the
other with nothing); code outside the kernels ("other: …") is work on one thread between loops.
"""
import bisect
import collections
import re
import sys

JOB = ("rayon", "gradscope", "gemm", "burn", "bench")
KERNEL = re.compile(r"gradscope::kernels::\w+::\w+")


def samples(path):
    """(tid, time, frames leaf first) of each sample of `perf script -F tid,time,ip,sym`."""
    cur = None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            if cur:
                yield cur
            cur = None
        elif line[0] not in "\t ":
            m = re.match(r"\s*(\d+)\s+([\d.]+):", line)
            cur = (int(m.group(1)), float(m.group(2)), []) if m else None
        elif cur:
            parts = line.strip().split(" ", 1)
            cur[2].append(re.sub(r"<.*?>", "<>", parts[1] if len(parts) > 1 else "?"))
    if cur:
        yield cur


def waiting(frames):
    """In `stay_warm` with no job running below it."""
    for f in frames:
        if "stay_warm" in f:
            return True
        if any(k in f for k in JOB):
            return False
    return False


def label(frames):
    for f in frames:
        m = KERNEL.search(f)
        if m and not any(k in f for k in ("avx512", "avx2", "closure", "host::", "simd")):
            return m.group(0)
    for f in frames:
        if ("gradscope" in f or "burn" in f) and "closure" not in f:
            return "other: " + f[:90]
    return "other"


def main(path, window=0.0006):
    by_tid = collections.defaultdict(list)
    for s in samples(path):
        by_tid[s[0]].append(s)
    tids = [t for t, v in by_tid.items() if len(v) >= 100]
    counts, waits, total = collections.Counter(), 0, 0
    for a in tids:
        for b in tids:
            if a == b:
                continue
            times = [s[1] for s in by_tid[b]]
            for _, t, frames in by_tid[a]:
                total += 1
                if not waiting(frames):
                    continue
                i = bisect.bisect_left(times, t)
                near = [j for j in (i - 1, i) if 0 <= j < len(times) and abs(times[j] - t) < window]
                if not near:
                    continue
                other = by_tid[b][min(near, key=lambda j: abs(times[j] - t))][2]
                if waiting(other):
                    continue
                waits += 1
                counts[label(other)] += 1
    print(f"{waits} samples of a thread waiting while the other ran ({total} samples in all)")
    tails = sum(n for name, n in counts.items() if not name.startswith("other"))
    print(f"in kernel loops (their last tasks): {100 * tails / max(waits, 1):.0f}%; "
          f"between loops: {100 * (waits - tails) / max(waits, 1):.0f}%")
    for name, n in counts.most_common(25):
        print(f"{n:6d} {100 * n / max(waits, 1):5.1f}%  {name}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
