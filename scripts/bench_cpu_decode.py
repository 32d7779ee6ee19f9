#!/usr/bin/env python3
"""CPU decode throughput against the memory-bandwidth floor (performance goal C1).

A batch-1 decode step reads every weight once (as loaded: float32, or the GGUF blocks with
--cpu-weights native, the default for quantized files), so the floor is
tokens/s = bandwidth / weight_bytes (KV reads are negligible at these lengths). Runs
`macserve generate` greedy with --ignore-eos for N tokens per model, parses its statistics line,
and appends rows to docs/perf/cpu_decode.csv with the command, commit and date.

    python3 scripts/bench_cpu_decode.py [--tokens 128] [--bandwidth-gbs 22] [MODEL ...]
"""
import argparse
import datetime
import os
import re
import subprocess

import results_csv

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def run(binary, model, tokens, prompt):
    cmd = [binary, "--log-level", "warn", "generate", "--prompt", prompt, "--max-tokens", str(tokens),
           "--ignore-eos"]
    if model != "default":
        cmd += ["--model", model]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = re.search(r"decode=([\d.]+) tok/s .* weight_bytes=(\d+)", p.stderr)
    if not m:
        raise RuntimeError(f"no statistics line in: {p.stderr[-400:]}")
    return float(m.group(1)), int(m.group(2)), " ".join(cmd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--bandwidth-gbs", type=float, default=22.0)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bin", "macserve"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "perf", "cpu_decode.csv"))
    args = ap.parse_args()
    shared = os.environ.get("MACSERVE_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
    models = args.models or [os.path.join(shared, "models", "tiny-llama-sp"), "default"]
    commit = results_csv.commit()
    header = ["date", "commit", "model", "tokens", "decode_tok_s", "weight_bytes", "floor_tok_s",
              "ratio_to_floor", "threads", "command"]
    with results_csv.appending(args.out, header) as w:
        for model in models:
            tps, wbytes, cmd = run(args.binary, model, args.tokens, "It is a truth universally acknowledged")
            floor = args.bandwidth_gbs * 1e9 / wbytes
            name = "SmolLM2-135M-Instruct (GGUF, weights as loaded)" if model == "default" else os.path.basename(model)
            row = [datetime.date.today().isoformat(), commit, name, args.tokens, f"{tps:.1f}", wbytes,
                   f"{floor:.1f}", f"{tps / floor:.3f}", os.environ.get("OMP_NUM_THREADS", os.cpu_count()), cmd]
            w.writerow(row)
            print(f"{name}: {tps:.1f} tok/s, floor {floor:.1f} tok/s at {args.bandwidth_gbs} GB/s -> "
                  f"{tps / floor:.2f}x")


if __name__ == "__main__":
    main()
