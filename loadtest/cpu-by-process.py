#!/usr/bin/env python3
"""Where a change's CPU goes on the whole machine, process by process.

Reads the samples of a system-wide `perf record` taken during a fan-out hold and splits them by
process inside each burst of the gateway's work (a change being written), so the CPU of the
gateway, the load generator, the ingest and Redis can be compared for the same change.

    perf record -a -F 499 -o all.data -- sleep 25      # during `PHASES=fanout HOLD=45s`
    perf script -i all.data -F pid,time > all.txt
    python3 loadtest/cpu-by-process.py all.txt --hz 499 \
        gateway=<pid> ingest=<pid> redis=<pid> load=<pid>,<pid>

A burst starts at the gateway's first sample after at least `--gap` seconds without one and
ends at its last sample before the next such gap; each line gives the burst's length and the
milliseconds of CPU each process took in it (samples / hz), every other process counted as
`other`, and the share of the burst's samples that were idle (pid 0: a core with nothing to
run). `--timeline MS` also prints each burst in steps of MS milliseconds, to see which process
held the cores when.
"""

import argparse
import collections
import statistics
import sys


def parse_labels(specs):
    labels = {}
    for spec in specs:
        name, _, pids = spec.partition("=")
        if not name or not pids:
            sys.exit(f"cpu-by-process: '{spec}' is not NAME=PID[,PID...]")
        for pid in pids.split(","):
            labels[int(pid)] = name
    if "gateway" not in labels.values():
        sys.exit("cpu-by-process: name the gateway's pid (gateway=PID): bursts are its work")
    return labels


def read_samples(path, labels):
    samples = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) < 2:
                continue
            pid = int(fields[0].split("/")[0])
            name = "idle" if pid == 0 else labels.get(pid, "other")
            samples.append((float(fields[-1].rstrip(":")), name))
    samples.sort()
    return samples


def bursts(samples, gap):
    spans = []
    for t, name in samples:
        if name != "gateway":
            continue
        if spans and t - spans[-1][1] <= gap:
            spans[-1][1] = t
        else:
            spans.append([t, t])
    return spans


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples", help="output of `perf script -F pid,time`")
    ap.add_argument("labels", nargs="+", help="NAME=PID[,PID...]")
    ap.add_argument("--hz", type=float, required=True, help="perf record's -F")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds that end a burst (0.05)")
    ap.add_argument("--min-ms", type=float, default=50, help="shorter bursts are left out (50)")
    ap.add_argument("--timeline", type=float, metavar="MS", help="print each burst in steps of MS")
    args = ap.parse_args()
    labels = parse_labels(args.labels)
    samples = read_samples(args.samples, labels)
    names = sorted(set(labels.values())) + ["other"]
    per_name = collections.defaultdict(list)
    totals = []
    for start, end in bursts(samples, args.gap):
        if (end - start) * 1000 < args.min_ms:
            continue
        inside = [(t, n) for t, n in samples if start <= t <= end]
        counts = collections.Counter(n for _, n in inside)
        ms = {n: counts[n] / args.hz * 1000 for n in names}
        total = sum(ms.values())
        totals.append(total)
        for n in names:
            per_name[n].append(ms[n])
        idle = 100 * counts["idle"] / max(1, len(inside))
        per_name["idle"].append(idle)
        cells = "  ".join(f"{n} {ms[n]:.0f}" for n in names)
        print(f"burst {1000 * (end - start):.0f} ms: CPU ms  {cells}  (all {total:.0f}; idle {idle:.0f} %)")
        if args.timeline:
            step = args.timeline / 1000
            at = start
            while at <= end:
                step_counts = collections.Counter(n for t, n in inside if at <= t < at + step)
                cells = "  ".join(f"{n} {step_counts[n]}" for n in names + ["idle"] if step_counts[n])
                print(f"  +{1000 * (at - start):4.0f} ms  samples: {cells}")
                at += step
    if not totals:
        sys.exit("cpu-by-process: no burst of the gateway's work in these samples")
    whole = statistics.median(totals)
    cells = "  ".join(
        f"{n} {statistics.median(per_name[n]):.0f} ({100 * statistics.median(per_name[n]) / whole:.0f} %)"
        for n in names
    )
    idle = statistics.median(per_name["idle"])
    print(f"median of {len(totals)} bursts: CPU ms  {cells}  (all {whole:.0f}; idle {idle:.0f} %)")


if __name__ == "__main__":
    main()
