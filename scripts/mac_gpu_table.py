#!/usr/bin/env python3
"""Markdown tables of the MAC kernel sweep at one context (docs/perf/mac_gpu.csv, written by
tests/bench/mac_cuda_bench.cc on the H200): per KV layout, a row per batch with the full-attention
time and, per hit rate, MAC time (full / MAC) for head-independent / group-clustered hits.
With --floor, the same cells hold MAC time over its byte floor (goal M2 of performance.md: <= 1.3
at batch >= 16) and, in brackets, the achieved speedup over the byte model's (M5: >= 0.9 for
head-independent hits at 0.95). The floor: the KV bytes the step read (`mac_kv_frac` of full
attention's) plus the whole ring scan (M x Hq x head_dim bf16 query rows per sequence; the early
exit reads less, so this floor is generous to MAC), at 4.52 TB/s.

    python3 scripts/mac_gpu_table.py [CSV] [--context 130048] [--floor] [--window 512]
"""
import argparse
import csv
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def floor_cell(r, hkv, window, hq=32, d=128, tbps=4.52):
    batch, ctx = int(r["batch"]), int(r["context"])
    full = batch * ctx * hkv * d * 2 * 2  # K and V, bf16
    read = float(r["mac_kv_frac"]) * full + batch * window * hq * d * 2
    floor_us = read / (tbps * 1e6)
    achieved = float(r["full_us"]) / float(r["mac_us"])
    return f"{float(r['mac_us']) / floor_us:.2f} ({achieved / (full / read):.2f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv", nargs="?", default=os.path.join(ROOT, "docs", "perf", "mac_gpu.csv"))
    ap.add_argument("--context", type=int, default=130048)
    ap.add_argument("--floor", action="store_true", help="MAC time over its byte floor")
    ap.add_argument("--window", type=int, default=512, help="ring rows M the bench ran with")
    a = ap.parse_args()
    rows = [r for r in csv.DictReader(open(a.csv)) if int(r["context"]) == a.context]
    rates = sorted({float(r["hit_rate"]) for r in rows})
    for hkv in sorted({int(r["hkv"]) for r in rows}, reverse=True):
        what = "MAC / byte floor (achieved / byte-model speedup)" if a.floor else "MAC us (full / MAC)"
        print(f"Hkv {hkv} (G {32 // hkv}): {what}, head-independent / group-clustered hits\n")
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
                    if m and a.floor:
                        parts.append(floor_cell(m[0], hkv, a.window))
                    elif m:
                        parts.append(f"{float(m[0]['mac_us']):.0f} ({float(m[0]['ratio_full_over_mac']):.2f}x)")
                cells.append(" / ".join(parts))
            print(f"| {batch} | {float(sel[0]['full_us']):.0f} | {float(sel[0]['full_GBps']):.0f} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
