#!/usr/bin/env python3
"""Markdown tables of the MAC kernel sweep at one context (docs/perf/mac_gpu.csv, written by
tests/bench/mac_cuda_bench.cc on the H200): per KV layout, a row per batch with the full-attention
time and, per hit rate, MAC time (full / MAC) for head-independent / group-clustered hits.

    python3 scripts/mac_gpu_table.py [CSV] [--context 130048]
"""
import argparse
import csv
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv", nargs="?", default=os.path.join(ROOT, "docs", "perf", "mac_gpu.csv"))
    ap.add_argument("--context", type=int, default=130048)
    a = ap.parse_args()
    rows = [r for r in csv.DictReader(open(a.csv)) if int(r["context"]) == a.context]
    rates = sorted({float(r["hit_rate"]) for r in rows})
    for hkv in sorted({int(r["hkv"]) for r in rows}, reverse=True):
        print(f"Hkv {hkv} (G {32 // hkv}): MAC us (full / MAC), head-independent / group-clustered hits\n")
        print("| batch | full us | full GB/s | " + " | ".join(f"{x:g}" for x in rates) + " |")
        print("|---|---|---|" + "---|" * len(rates))
        for batch in sorted({int(r["batch"]) for r in rows}):
            sel = [r for r in rows if int(r["hkv"]) == hkv and int(r["batch"]) == batch]
            if not sel:
                continue
            cells = []
            for x in rates:
                parts = []
                for dist in ("head", "group"):
                    m = [r for r in sel if float(r["hit_rate"]) == x and r["dist"] == dist]
                    if m:
                        parts.append(f"{float(m[0]['mac_us']):.0f} ({float(m[0]['ratio_full_over_mac']):.2f}x)")
                cells.append(" / ".join(parts))
            print(f"| {batch} | {float(sel[0]['full_us']):.0f} | {float(sel[0]['full_GBps']):.0f} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
