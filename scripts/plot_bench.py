#!/usr/bin/env python3
"""Plots macserve-bench result files (--save-result JSON) with matplotlib: the CDFs of TTFT and of
per-request TPOT for every file, and output throughput against the median tokens/s per user
(1000 / median TPOT), one point per file, labelled by its concurrency or request rate. The image
format follows --out's extension (.png by default; .svg and .pdf work too).

    python3 scripts/plot_bench.py docs/perf/serving/random-*.json --out docs/perf/serving/random.png
"""
import argparse
import gzip
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def tpots(r):
    """Per-request time per output token after the first, in ms (vLLM's TPOT)."""
    out = []
    for q in r.get("requests", []):
        n, t = q.get("output_tokens"), q.get("token_times") or []
        if q.get("success") and n and n > 1 and t:
            out.append((t[-1] - t[0]) / (n - 1) * 1000.0)
    return out


def ttfts(r):
    return [(q["first_token"] - q["start"]) * 1000.0 for q in r.get("requests", [])
            if q.get("success") and q.get("first_token") is not None]


def label(path, r):
    c, rate = r.get("max_concurrency"), r.get("request_rate")
    name = f"c{c}" if c else f"rate {rate}" if rate not in (None, "inf") else os.path.basename(path)
    return f"{r['label']} {name}" if r.get("label") else name


def cdf(ax, series, title):
    for name, vals in series:
        if not vals:
            continue
        vals = sorted(vals)
        ax.step(vals, [(k + 1) / len(vals) for k in range(len(vals))], where="post", label=name)
    ax.set_title(title)
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if any(v for _, v in series):
        ax.legend(fontsize=8)


def load(paths):
    runs = []
    for p in paths:
        try:
            with (gzip.open(p, "rt") if p.endswith(".gz") else open(p)) as f:
                r = json.load(f)
        except (OSError, EOFError, json.JSONDecodeError) as e:
            sys.exit(f"plot_bench: {p}: {e}")
        if "requests" not in r or "output_throughput" not in r:
            sys.exit(f"plot_bench: {p}: not a macserve-bench result (--save-result) file")
        runs.append((p, r))
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="macserve-bench --save-result JSON files (or .json.gz)")
    ap.add_argument("--out", required=True, help="image file (.png, .svg or .pdf)")
    ap.add_argument("--title", default="", help="title above the three panels")
    a = ap.parse_args()
    runs = load(a.results)

    fig, (ax_ttft, ax_tpot, ax_tp) = plt.subplots(1, 3, figsize=(15, 4.5))
    cdf(ax_ttft, [(label(p, r), ttfts(r)) for p, r in runs], "TTFT")
    cdf(ax_tpot, [(label(p, r), tpots(r)) for p, r in runs], "TPOT (per request)")
    for p, r in runs:
        tpot = r.get("median_tpot_ms")
        x = 1000.0 / tpot if tpot else 0.0
        ax_tp.plot([x], [r["output_throughput"]], "o", color="C0")
        ax_tp.annotate(label(p, r), (x, r["output_throughput"]), textcoords="offset points", xytext=(5, 5),
                       fontsize=8)
    ax_tp.set_title("throughput vs interactivity")
    ax_tp.set_xlabel("tok/s per user (1000 / median TPOT)")
    ax_tp.set_ylabel("output tok/s")
    ax_tp.set_xlim(left=0)
    ax_tp.set_ylim(bottom=0)
    ax_tp.grid(alpha=0.3)
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
