#!/usr/bin/env python3
"""Markdown table from docs/perf/mac_cpu_long_context.csv (one row per MAC run).

    python3 scripts/mac_table.py [CSV]
"""
import csv
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs", "perf", "mac_cpu_long_context.csv")
rows = [r for r in csv.DictReader(open(path)) if r["attention"] == "mac"]
rows.sort(key=lambda r: (r["model"], r["source"], float(r["threshold"])))
print("| model | text | prompt tokens | t | hit rate | KV read / full | same-prefix tokens (of 256) | "
      "positions equal | audit rel. L2 (median / max layer) |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    errs = sorted(float(x) for x in r["audit_rel_l2_per_layer"].split())
    med = errs[len(errs) // 2] if errs else float("nan")
    name = "SmolLM2-135M (Q4_1)" if r["model"] == "default" else r["model"]
    print(f"| {name} | {r['source']} | {r['prompt_tokens']} | {r['threshold']} | {float(r['hit_rate']):.3f} | "
          f"{float(r['kv_read_fraction']):.3f} | {r['agree_prefix']} | {float(r['agree_fraction']):.3f} | "
          f"{med:.3f} / {errs[-1] if errs else float('nan'):.3f} |")
