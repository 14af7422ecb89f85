#!/usr/bin/env python3
"""Summarize a bench.sh results folder as Markdown: medians of the runs, side-by-side ratios.

Usage: summarize.py RESULTS_DIR
"""
import glob
import re
import json
import os
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def dig(r, *keys):
    for k in keys:
        if r is None:
            return None
        r = r.get(k) if isinstance(r, dict) else None
    return r


def med(values):
    v = [x for x in values if isinstance(x, (int, float))]
    return statistics.median(v) if v else None


def fmt(x, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float):
        x = round(x, 1) if abs(x) < 100 else round(x)
    return f"{x:,}{unit}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


# (label, path in the report, unit, lower is better)
METRICS = [
    ("subscribers established", ("connections", "established"), "", False),
    ("connect rate achieved /s", ("connections", "connect_rate_achieved"), "", False),
    ("errors (all kinds)", ("errors", "total"), "", True),
    ("streams closed by the server (clean close)", ("errors", "unexpected_close"), "", True),
    ("streams broken (read/write error, reset)", ("errors", "io_errors"), "", True),
    ("streams ended early: SSE", ("errors", "ended_early_sse"), "", True),
    ("streams ended early: WebSocket", ("errors", "ended_early_ws"), "", True),
    ("connects failed or timed out", ("errors", "connect_failed"), "", True),
    ("peak open subscribers", ("connections", "peak_open"), "", False),
    ("mean handshake ms", ("connections", "handshake_ms_mean"), "", True),
    ("fan-out p50 ms", ("fanout", "latency_ms_hold_cycles", "p50"), "", True),
    ("fan-out p90 ms", ("fanout", "latency_ms_hold_cycles", "p90"), "", True),
    ("fan-out p99 ms", ("fanout", "latency_ms_hold_cycles", "p99"), "", True),
    ("gateways' lag histogram p99 ms", ("server_lag", "p99_ms"), "", True),
    ("gateways' p99 / subscribers' p99", ("server_lag", "p99_over_client_p99"), "", False),
    ("fan-out max ms", ("fanout", "latency_ms_hold_cycles", "max"), "", True),
    ("worst cycle p99 ms", ("fanout", "per_cycle_worst", "p99"), "", True),
    ("first delivery of a cycle ms (median)", ("fanout", "per_cycle_median", "first_delivery"), "", True),
    ("hold cycles measured", ("fanout", "hold_cycles"), "", False),
    ("min coverage of a cycle", ("fanout", "coverage_min"), "", False),
    ("deliveries/s (hold mean)", ("deliveries", "per_second_hold_mean"), "", False),
    ("deliveries/s (peak second)", ("deliveries", "per_second_hold_peak"), "", False),
    ("bytes received by the subscribers (payload)", ("deliveries", "bytes"), "", True),
    ("server RSS MiB (end of hold)", ("server", "rss_mib_hold"), "", True),
    ("server RSS KiB / connection", ("server", "rss_kib_per_connection"), "", True),
    ("server RSS KiB / connection over baseline", ("server", "rss_kib_per_connection_over_baseline"), "", True),
    ("server PSS KiB / connection", ("server", "pss_kib_per_connection"), "", True),
    ("server CPU % during ramp", ("server", "cpu_percent_ramp"), "", True),
    ("server CPU % during hold", ("server", "cpu_percent_hold"), "", True),
    ("server CPU µs per delivery (hold)", ("server", "cpu_us_per_delivery_hold"), "", True),
    ("load generator CPU % during hold", ("client", "cpu_percent_hold"), "", True),
    ("load generator CPU µs per delivery (hold)", ("client", "cpu_us_per_delivery_hold"), "", True),
]


def table(columns):
    """columns: [(name, [reports])] -> Markdown table of medians, with a ratio when two."""
    names = [c[0] for c in columns]
    head = "| metric | " + " | ".join(names)
    sep = "|---|" + "---|" * len(names)
    for other in names[1:]:
        head += f" | first / {other}"
        sep += "---|"
    lines = [head + " |", sep]
    for label, path, unit, _ in METRICS:
        vals = [med([dig(r, *path) for r in reports]) for _, reports in columns]
        row = f"| {label} | " + " | ".join(fmt(v, unit) for v in vals)
        for v in vals[1:]:
            row += f" | {ratio(vals[0], v)}"
        lines.append(row + " |")
    return "\n".join(lines)


def main(out):
    parts = []
    machine = os.path.join(out, "machine.txt")
    if os.path.exists(machine):
        parts.append("```\n" + open(machine).read().strip() + "\n```")

    tsv = os.path.join(out, "get.tsv")
    if os.path.exists(tsv):
        rows = [l.split("\t") for l in open(tsv).read().splitlines() if l.strip()]
        by = {}
        for server, run, rps, p99, errs in (r + [""] * (5 - len(r)) for r in rows):
            try:
                by.setdefault(run, {})[server] = (float(rps), p99, errs)
            except ValueError:
                pass
        lines = ["## GET of one city document (acceptance 3)", "",
                 "| run | apura req/s | nginx static req/s | apura / nginx | apura p99 | nginx p99 |",
                 "|---|---|---|---|---|---|"]
        ratios, a_all, n_all = [], [], []
        for run in sorted(by, key=int):
            a, n = by[run].get("apura"), by[run].get("nginx")
            if not a or not n:
                continue
            ratios.append(a[0] / n[0])
            a_all.append(a[0])
            n_all.append(n[0])
            lines.append(f"| {run} | {a[0]:,.0f} | {n[0]:,.0f} | {a[0] / n[0]:.2f}× | {a[1]} | {n[1]} |")
        if ratios:
            lines.append(f"| **median** | **{med(a_all):,.0f}** | **{med(n_all):,.0f}** | **{med(ratios):.2f}×** | | |")
        parts.append("\n".join(lines))

    def reports(pattern):
        return [load(p) for p in sorted(glob.glob(os.path.join(out, pattern)))]

    fan, nch = reports("fanout-*.json"), [r for r in reports("nchan-*.json") if re.fullmatch(r"nchan-\d+", r.get("label", ""))]
    ncy = [r for r in reports("nchan-cycle-*.json") if re.fullmatch(r"nchan-cycle-\d+", r.get("label", ""))]
    if fan or nch or ncy:
        first = (fan or ncy or nch)[0]
        subs = dig(first, "config", "sse") + dig(first, "config", "ws")
        cols = []
        if fan:
            cols.append((f"apura, 1 gateway ({len(fan)} runs)", fan))
        if ncy:
            cols.append((f"nginx+nchan, stamped per cycle ({len(ncy)} runs)", ncy))
        if nch:
            cols.append((f"nginx+nchan, stamped per message ({len(nch)} runs)", nch))
        parts.append(f"## Fan-out, {subs:,} subscribers, one server process (medians)\n\n" + table(cols))

    fz = reports("fanoutz-*.json")
    if fz:
        subs = dig(fz[0], "config", "sse") + dig(fz[0], "config", "ws")
        cols = [(f"apura, compressed streams ({len(fz)} runs)", fz)]
        if fan:
            cols.append((f"apura, identity ({len(fan)} runs)", fan))
        lines = [f"## Compressed streams (gzip SSE, permessage-deflate WebSocket), {subs:,} subscribers, "
                 "one gateway (medians)", "", table(cols)]
        by_run = {dig(r, "label").split("-")[-1]: r for r in fan}
        rows = []
        for z in fz:
            p = by_run.get(dig(z, "label").split("-")[-1])
            if p is None:
                continue
            rows.append([dig(r, "server", k) for r in (p, z)
                         for k in ("cpu_us_per_delivery_hold", "rss_kib_per_connection_over_baseline")])
        if rows:
            lines += ["", "Per run, the compressed run right after the identity one on a fresh gateway:", "",
                      "| run | CPU µs / delivery identity | compressed | ratio | RSS KiB / connection over baseline identity | compressed | ratio |",
                      "|---|---|---|---|---|---|---|"]
            for n, (pc, pm, zc, zm) in enumerate(rows, 1):
                lines.append(f"| {n} | {fmt(pc)} | {fmt(zc)} | {ratio(zc, pc)} | {fmt(pm)} | {fmt(zm)} | {ratio(zm, pm)} |")
            if len(rows) > 1:
                m = [med([r[i] for r in rows]) for i in range(4)]
                lines.append(f"| **median** | **{fmt(m[0])}** | **{fmt(m[2])}** | **{ratio(m[2], m[0])}** "
                             f"| **{fmt(m[1])}** | **{fmt(m[3])}** | **{ratio(m[3], m[1])}** |")
        parts.append("\n".join(lines))

    fr = reports("freshness-*.json")
    if fr:
        # Labels are freshness-<ingest interval>-<run>: one column per interval, in the order run.
        by = {}
        for r in fr:
            by.setdefault(dig(r, "label").split("-")[1], []).append(r)
        cols = list(by.items())
        rows = [
            ("freshness p50 ms, every subscriber", ("freshness", "ms", "all", "p50")),
            ("freshness p90 ms, every subscriber", ("freshness", "ms", "all", "p90")),
            ("freshness p99 ms, every subscriber", ("freshness", "ms", "all", "p99")),
            ("freshness max ms, every subscriber", ("freshness", "ms", "all", "max")),
            ("freshness p50 ms, capitals", ("freshness", "ms", "capitals", "p50")),
            ("freshness p99 ms, capitals", ("freshness", "ms", "capitals", "p99")),
            ("freshness p50 ms, 50 most-subscribed topics", ("freshness", "ms", "top50", "p50")),
            ("freshness p99 ms, 50 most-subscribed topics", ("freshness", "ms", "top50", "p99")),
            ("freshness p50 ms, the rest", ("freshness", "ms", "rest", "p50")),
            ("freshness p99 ms, the rest", ("freshness", "ms", "rest", "p99")),
            ("file out to 99 % of subscribers ms, median tick", ("freshness", "to_99_percent_ms", "p50")),
            ("file out to 99 % of subscribers ms, p99 tick", ("freshness", "to_99_percent_ms", "p99")),
            ("file out to 99 % of subscribers ms, worst tick", ("freshness", "to_99_percent_ms", "max")),
            ("ticks counted", ("freshness", "ticks_counted"), ),
            ("ticks not reached by 99 % before the end", ("freshness", "to_99_percent_ms", "ticks_not_reached")),
            ("fan-out p99 ms (publication to delivery)", ("fanout", "latency_ms_hold_cycles", "p99")),
            ("subscribers established", ("connections", "established")),
            ("errors (all kinds)", ("errors", "total")),
        ]
        names = [f"ingest --interval {iv} ({len(rs)} runs)" for iv, rs in cols]
        lines = [f"## Freshness, consolidated layout, {dig(fr[0], 'config', 'sse') + dig(fr[0], 'config', 'ws'):,} "
                 "subscribers, one gateway (medians of the runs)", "",
                 "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for label, path in rows:
            lines.append(f"| {label} | " + " | ".join(fmt(med([dig(r, *path) for r in rs])) for _, rs in cols) + " |")
        lines += ["", "Per run, file out to 99 % of subscribers (ms, p99 over the run's ticks):", "",
                  "| run | " + " | ".join(iv for iv, _ in cols) + " |", "|---|" + "---|" * len(cols)]
        for n in sorted({dig(r, "label").split("-")[-1] for r in fr}, key=int):
            cells = []
            for iv, rs in cols:
                r = next((r for r in rs if dig(r, "label").split("-")[-1] == n), None)
                cells.append(fmt(dig(r, "freshness", "to_99_percent_ms", "p99")))
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))

    def runs(prefix):
        # `prefix.json` (one run) or `prefix-N.json` (run N of several).
        return [r for r in reports(prefix + "*.json") if re.fullmatch(re.escape(prefix) + r"(-\d+)?", r.get("label", ""))]

    a50, n50, c50 = runs("apura-50k"), runs("nchan-50k"), runs("nchan-50k-cycle")
    if a50 or n50:
        cols = []
        if a50:
            cols.append((f"apura, {len(dig(a50[0], 'server', 'pids') or [])} gateways ({len(a50)} runs)", a50))
        if c50:
            cols.append((f"nginx+nchan, stamped per cycle ({len(c50)} runs)", c50))
        if n50:
            cols.append((f"nginx+nchan, stamped per message ({len(n50)} runs)", n50))
        subs = dig((a50 or n50)[0], "config", "sse") + dig((a50 or n50)[0], "config", "ws")
        parts.append(f"## Fan-out at {subs:,} subscribers, several server processes (medians)\n\n" + table(cols))

    so, wo = reports("sse-only.json"), reports("ws-only.json")
    if so or wo:
        cols = [(n, r) for n, r in (("SSE only", so), ("WebSocket only", wo)) if r]
        parts.append("## Memory and cost by stream kind, one gateway\n\n" + table(cols))

    sc = runs("scale")
    if sc:
        r = sc[0]
        subs = dig(r, "config", "sse") + dig(r, "config", "ws")
        parts.append(f"## Scale: {subs:,} subscribers on {len(dig(r, 'server', 'pids') or [])} gateways, "
                     f"held {dig(r, 'config', 'hold_s')} s (medians)\n\n" + table([(f"apura ({len(sc)} runs)", sc)]))

    print("\n\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
