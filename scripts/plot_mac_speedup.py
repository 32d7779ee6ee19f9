#!/usr/bin/env python3
"""Speedup of MAC-Attention over full attention against the hit rate, from the kernel sweep's CSV
(docs/perf/mac_gpu.csv, written by tests/bench/mac_cuda_bench.cc on the H200), as an SVG with one
panel per KV layout: a line per (batch, hit distribution) at one context length, log-scale speedup
(full-attention time / MAC time), 1x marked. No plotting library needed.

    python3 scripts/plot_mac_speedup.py [--csv docs/perf/mac_gpu.csv] [--context 130048]
        [--out docs/perf/mac_speedup.svg]
"""
import argparse
import csv
import math
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
COLORS = {1: "#1f77b4", 16: "#ff7f0e", 64: "#2ca02c"}
W, H = 460, 340            # one panel
ML, MR, MT, MB = 60, 20, 40, 50


def load(path, context):
    series = {}  # (hkv, batch, dist) -> {hit: ratio}
    with open(path) as f:
        for row in csv.DictReader(f):
            if int(row["context"]) != context:
                continue
            hkv, batch, hit = int(row["hkv"]), int(row["batch"]), float(row["hit_rate"])
            ratio = float(row["ratio_full_over_mac"])
            # Hit rates 0 and 1 are the same for both distributions (one row may stand for both).
            dists = ["head", "group"] if hit in (0.0, 1.0) else [row["dist"]]
            for d in dists:
                series.setdefault((hkv, batch, d), {})[hit] = ratio
    return series


def panel(series, hkv, x0, context, ymin, ymax):
    out = []
    pw, ph = W - ML - MR, H - MT - MB

    def px(hit):
        return x0 + ML + hit * pw

    def py(r):
        return MT + (math.log10(ymax) - math.log10(max(r, ymin))) / (math.log10(ymax) - math.log10(ymin)) * ph

    out.append(f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-size="14">'
               f'Hq 32, Hkv {hkv}, head_dim 128, context {context}</text>')
    out.append(f'<rect x="{x0 + ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    decade = 10 ** math.floor(math.log10(ymin))
    while decade <= ymax:
        for m in (1, 2, 5):
            v = decade * m
            if ymin <= v <= ymax:
                y = py(v)
                out.append(f'<line x1="{x0 + ML}" y1="{y:.1f}" x2="{x0 + ML + pw}" y2="{y:.1f}" stroke="#ddd"/>')
                out.append(f'<text x="{x0 + ML - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{v:g}x</text>')
        decade *= 10
    out.append(f'<line x1="{x0 + ML}" y1="{py(1):.1f}" x2="{x0 + ML + pw}" y2="{py(1):.1f}" stroke="#000" '
               'stroke-dasharray="4 3"/>')
    for hit in (0, 0.25, 0.5, 0.75, 0.9, 1.0):
        out.append(f'<text x="{px(hit):.1f}" y="{MT + ph + 16}" text-anchor="middle" font-size="11">{hit:g}</text>')
    out.append(f'<text x="{x0 + ML + pw / 2}" y="{H - 12}" text-anchor="middle" font-size="12">hit rate</text>')
    out.append(f'<text x="{x0 + 14}" y="{MT + ph / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {x0 + 14} {MT + ph / 2})">full / MAC time</text>')
    for (h, batch, dist), pts in sorted(series.items()):
        if h != hkv:
            continue
        xs = sorted(pts)
        path = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(pts[x]):.1f}" for i, x in enumerate(xs))
        dash = "" if dist == "head" else ' stroke-dasharray="6 3"'
        out.append(f'<path d="{path}" fill="none" stroke="{COLORS.get(batch, "#888")}" stroke-width="2"{dash}/>')
        for x in xs:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(pts[x]):.1f}" r="2.5" fill="{COLORS.get(batch, "#888")}"/>')
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=os.path.join(ROOT, "docs", "perf", "mac_gpu.csv"))
    ap.add_argument("--context", type=int, default=130048)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "perf", "mac_speedup.svg"))
    args = ap.parse_args()
    series = load(args.csv, args.context)
    if not series:
        raise SystemExit(f"no rows for context {args.context} in {args.csv}")
    ratios = [r for pts in series.values() for r in pts.values()]
    ymin = 10 ** math.floor(math.log10(min(ratios)))
    ymax = 10 ** math.ceil(math.log10(max(ratios)))
    layouts = sorted({k[0] for k in series}, reverse=True)
    total_w = W * len(layouts)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{H + 40}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>']
    for i, hkv in enumerate(layouts):
        svg += panel(series, hkv, i * W, args.context, ymin, ymax)
    lx = 20
    for batch, color in COLORS.items():
        svg.append(f'<line x1="{lx}" y1="{H + 20}" x2="{lx + 24}" y2="{H + 20}" stroke="{color}" stroke-width="2"/>')
        svg.append(f'<text x="{lx + 30}" y="{H + 24}" font-size="12">batch {batch}</text>')
        lx += 110
    svg.append(f'<text x="{lx}" y="{H + 24}" font-size="12">solid: hits drawn per head; dashed: per KV group '
               '(CUDA-graph replay, H200)</text>')
    svg.append("</svg>")
    with open(args.out, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {args.out}: {len(series)} series at context {args.context}")


if __name__ == "__main__":
    main()
