#!/usr/bin/env python3
"""Tables and goal checks from a bench/run.sh results folder:

    python3 bench/summarize.py bench/work/results/latest

Reads raw.tsv (the corpus table: one row per tool, delay, rep and phase, the format of
../shared/bench/run_bench.sh), extras.tsv (TLS, memory and status cases) and machine.txt.
Prints markdown: the median table with ratios and round trips, the extra cases, and each
goal of issue 7 as met / NOT met with the measured figure.
"""
import csv
import os
import statistics
import sys
from collections import defaultdict

OUT = sys.argv[1] if len(sys.argv) > 1 else "bench/work/results/latest"
FP, FLOOR = "flightplan", "psql_onequery"


def load(name):
    path = os.path.join(OUT, name)
    return list(csv.DictReader(open(path), delimiter="\t")) if os.path.exists(path) else []


rows = load("raw.tsv")
runs = defaultdict(list)
for r in rows:
    runs[(r["tool"], int(r["delay_ms"]), r["phase"])].append(r)
tools = list(dict.fromkeys(r["tool"] for r in rows))
delays = sorted({int(r["delay_ms"]) for r in rows})
far = max(delays) if delays else 0


def ok_vals(rs, field):
    return [float(r[field]) for r in rs if r["rc"] == "0" and r[field] not in ("-", "")]


def med(tool, d, phase, field="seconds"):
    vals = ok_vals(runs.get((tool, d, phase), []), field)
    return statistics.median(vals) if vals else None


def cell(tool, d, phase, field="seconds", fmt="{:.3f}"):
    rs = runs.get((tool, d, phase), [])
    if not rs:
        return "n/a"
    vals = ok_vals(rs, field)
    if not vals:
        return f"FAILED ({len(rs)}x)"
    text = fmt.format(statistics.median(vals))
    if field == "seconds" and len(vals) > 1:
        text += " (" + fmt.format(min(vals)) + "–" + fmt.format(max(vals)) + ")"
    elif field != "seconds" and min(vals) != max(vals):
        text += " (" + fmt.format(min(vals)) + "–" + fmt.format(max(vals)) + ")"
    return text + (f" ({len(rs) - len(vals)} failed)" if len(vals) < len(rs) else "")


def ratio(tool, d, phase):
    a, b = med(tool, d, phase), med(FP, d, phase)
    return f"{a / b:.1f}×" if a and b else "n/a"


if rows:
    head = ["tool"]
    for d in delays:
        head += [f"D={d} apply, s", f"D={d} no-op, s"]
    if FP in tools:
        head += [f"D={far} apply ÷ flightplan", f"D={far} no-op ÷ flightplan"]
    head += [f"round trips apply (D={far})", f"round trips no-op (D={far})", f"connections apply/no-op (D={far})"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for t in tools:
        line = [t]
        for d in delays:
            line += [cell(t, d, "apply"), cell(t, d, "noop")]
        if FP in tools:
            line += [ratio(t, far, "apply"), ratio(t, far, "noop")]
        if far:
            line += [cell(t, far, "apply", "round_trips", "{:.0f}"), cell(t, far, "noop", "round_trips", "{:.0f}"),
                     cell(t, far, "apply", "connections", "{:.0f}") + " / " + cell(t, far, "noop", "connections", "{:.0f}")]
        else:
            line += ["n/a"] * 3
        print("| " + " | ".join(line) + " |")
    n = {len(v) for v in runs.values()}
    print(f"\nMedian (min–max) of {'/'.join(map(str, sorted(n)))} runs per cell, wall-clock seconds for the whole "
          "command. D = added round-trip ms (0: direct to 5432). Round trips and connections are counted by the "
          "proxy (TCP handshake not included). \"÷ flightplan\" is the tool's median over flightplan's (above 1: "
          "flightplan is faster). psql_onequery's no-op is connect + `select 1`.")
    if FP in tools and FLOOR in tools:
        for d in delays:
            a, f = med(FP, d, "apply"), med(FLOOR, d, "apply")
            if a and f:
                print(f"\nflightplan vs the floor at D={d}: apply {a / f:.2f}× psql_onequery", end="")
                a, f = med(FP, d, "noop"), med(FLOOR, d, "noop")
                if a and f:
                    print(f"; no-op {a / f:.2f}× connect + select 1", end="")
        print()

extras = load("extras.tsv")
xr = defaultdict(list)
for r in extras:
    xr[(r["case"], r["variant"])].append(r)


def xmed(case, variant, field="seconds"):
    vals = [float(r[field]) for r in xr.get((case, variant), []) if r["rc"] == "0" and r[field] not in ("-", "")]
    return statistics.median(vals) if vals else None


def xmax(case, variant, field):
    vals = [float(r[field]) for r in xr.get((case, variant), []) if r["rc"] == "0" and r[field] not in ("-", "")]
    return max(vals) if vals else None


def xfailed(case, variant):
    return sum(r["rc"] != "0" for r in xr.get((case, variant), []))


if extras:
    print("\n### Extra cases\n")
    print("| case | variant | runs | seconds, median (min–max) | max RSS, MiB (max of runs) | connections | round trips |")
    print("|---|---|---|---|---|---|---|")
    for (case, variant), rs in xr.items():
        ok = [r for r in rs if r["rc"] == "0"]
        secs = [float(r["seconds"]) for r in ok]
        rss = [float(r["max_rss_kb"]) for r in ok if r["max_rss_kb"] not in ("-", "")]
        rts = sorted({r["round_trips"] for r in ok})
        conns = sorted({r["connections"] for r in ok})
        t = (f"{statistics.median(secs):.3f} ({min(secs):.3f}–{max(secs):.3f})" if secs else "FAILED")
        print(f"| {case} | {variant} | {len(rs)}{f' ({len(rs) - len(ok)} failed)' if len(ok) < len(rs) else ''} | {t} | "
              f"{f'{max(rss) / 1024:.1f}' if rss else '-'} | {'/'.join(conns)} | {'/'.join(rts)} |")

# ---- goals of issue 7 ----
goals = []


def goal(text, measured, met):
    goals.append((text, measured, "n/a (not measured)" if met is None else ("met" if met else "**NOT met**")))


if rows and far:
    a = med(FP, far, "apply")
    f = med(FLOOR, far, "apply")
    measured = "n/a" if a is None else f"{a:.3f} s, {med(FP, far, 'apply', 'round_trips'):.0f} round trips"
    if a and f:
        measured += f"; {a / f:.2f}× the floor ({f:.3f} s)"
    goal(f"apply the corpus at D={far} in ≤ 0.65 s (≤ 1.5× the floor)", measured, None if a is None else a <= 0.65)
    peers = [t for t in tools if t != FP and not t.startswith(("psql", "fp_"))]
    best = min(((med(t, far, "apply"), t) for t in peers if med(t, far, "apply")), default=None)
    if a and best:
        goal(f"≥ 7× faster than the fastest peer at D={far}", f"{best[1]} {best[0]:.3f} s ÷ {a:.3f} s = {best[0] / a:.1f}×",
             best[0] / a >= 7)
    n = med(FP, far, "noop")
    goal(f"no-op at D={far} in ≤ 0.12 s", "n/a" if n is None else
         f"{n:.3f} s, {med(FP, far, 'noop', 'round_trips'):.0f} round trips", None if n is None else n <= 0.12)
if rows and 0 in delays:
    for phase in ("apply", "noop"):
        fp0, sq0 = med(FP, 0, phase), med("sqlx", 0, phase)
        goal(f"local (D=0) {phase.replace('noop', 'no-op')} not slower than sqlx-cli",
             "n/a" if not (fp0 and sq0) else f"flightplan {fp0:.3f} s vs sqlx-cli {sq0:.3f} s",
             None if not (fp0 and sq0) else fp0 <= sq0)
if extras:
    for phase in ("apply", "noop"):
        dr, rq = xmed(f"tls_flightplan_{phase}", "disable", "round_trips"), xmed(f"tls_flightplan_{phase}", "require", "round_trips")
        pd, pr = xmed("tls_psql_connect", "disable", "round_trips"), xmed("tls_psql_connect", "require", "round_trips")
        td, tr = xmed(f"tls_flightplan_{phase}", "disable"), xmed(f"tls_flightplan_{phase}", "require")
        if None not in (dr, rq, pd, pr):
            extra_ms = ((tr - td) - (xmed('tls_psql_connect', 'require') - xmed('tls_psql_connect', 'disable'))) * 1000
            goals_note = (f"; but {extra_ms:.0f} ms slower than the handshake explains (not round trips: see "
                          "BENCHMARKS.md, TLS)") if extra_ms > 30 else ""
            goal(f"TLS ({phase.replace('noop', 'no-op')}, D=20): no round trips beyond the handshake",
                 f"flightplan {dr:.0f} → {rq:.0f} round trips (+{rq - dr:.0f}), {td:.3f} → {tr:.3f} s "
                 f"(+{(tr - td) * 1000:.0f} ms); the handshake alone (psql connect + select 1): +{pr - pd:.0f} round trips, "
                 f"+{(xmed('tls_psql_connect', 'require') - xmed('tls_psql_connect', 'disable')) * 1000:.0f} ms"
                 + goals_note, rq - dr <= pr - pd)
    for case, label in (("mem_1000_apply", "1,000-migration corpus"), ("mem_big50_apply", "one 50 MiB migration file")):
        m = xmax(case, FP, "max_rss_kb")
        s = xmax(case, "sqlx", "max_rss_kb")
        if m is not None or xfailed(case, FP):
            goal(f"peak memory < 50 MB, {label}",
                 "FAILED to run" if m is None else f"{m / 1024:.1f} MiB max RSS" + (f" (sqlx-cli {s / 1024:.1f} MiB)" if s else ""),
                 False if m is None else m < 50 * 1024)
    for case in sorted({c for c, _ in xr if c.startswith("status10k_d")}):
        s = xmed(case, FP)
        d = case.split("_d")[1]
        goal(f"`migrate status` over a 10,000-row ledger < 1 s (D={d})",
             "FAILED" if s is None else f"{s:.3f} s median, {xmax(case, FP, 'max_rss_kb') / 1024:.1f} MiB",
             False if s is None else s < 1.0)

if goals:
    print("\n### Goals (issue 7)\n")
    print("| goal | measured | status |")
    print("|---|---|---|")
    for g in goals:
        print(f"| {g[0]} | {g[1]} | {g[2]} |")
