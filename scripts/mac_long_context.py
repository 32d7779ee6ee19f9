#!/usr/bin/env python3
"""MAC-Attention on real models over long public-domain inputs (issue: MAC on the CPU, "measure").

For each model and input, runs `macserve generate` greedy for N tokens with --attention full
(the baseline), then with MAC at each threshold t (audit on), and records per run: hit rate (total
and per layer), token agreement with full attention (common prefix and position-wise match over the
N tokens), relative L2 of attention outputs per layer from the audit, and KV bytes read vs full.
Inputs come from Debian packages: apt-get install bible-kjv jargon-text.

    python3 scripts/mac_long_context.py --out docs/perf/mac_cpu_long_context.csv
"""
import argparse
import datetime
import gzip
import json
import os
import subprocess
import tempfile

import results_csv

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def text_source(name, chars):
    if name == "kjv":
        out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
        lines = [l.split(" ", 1)[1] for l in out.splitlines() if " " in l]
        text = " ".join(lines)
    elif name == "jargon":
        with gzip.open("/usr/share/doc/jargon-text/jargon.txt.gz", "rt", errors="replace") as f:
            text = " ".join(f.read().split())
    else:
        raise ValueError(name)
    start = len(text) // 3  # a passage from the middle, not the famous opening
    return text[start:start + chars]


def generate(binary, model, prompt_file, args, extra):
    stats = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    with open(prompt_file) as f:
        prompt = f.read()
    cmd = [binary, "--log-level", "warn", "generate", "--prompt", prompt, "--max-tokens", str(args.tokens),
           "--ignore-eos", "--stats-json", stats, "--max-model-len", str(args.max_model_len[model])]
    if model != "default":
        cmd += ["--model", model]
    cmd += extra
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "generate failed")
    with open(stats) as f:
        result = json.load(f)
    os.remove(stats)
    shown = [c if len(c) < 60 else f"<{len(c)} chars from {prompt_file}>" for c in cmd]
    return result, " ".join(shown)


def agreement(a, b):
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    same = sum(1 for x, y in zip(a, b) if x == y)
    return prefix, same / max(1, len(a))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bin", "macserve"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "perf", "mac_cpu_long_context.csv"))
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--thresholds", default="0.3,0.45,0.6")
    ap.add_argument("--audit-rate", default="0.25")
    ap.add_argument("--models", default="tiny-llama-sp,default")
    ap.add_argument("--sources", default="kjv,jargon")
    ap.add_argument("--smollm2-chars", type=int, default=8000, help="passage length for SmolLM2 (~4 chars/token)")
    args = ap.parse_args()
    shared = os.environ.get("MACSERVE_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
    # model -> (input character counts, context cap, --mac-min-context)
    plans = {"tiny-llama-sp": ([6000], 2048, 512), "default": ([args.smollm2_chars], 8192, 1024)}
    args.max_model_len = {}
    commit = results_csv.commit()
    header = ["date", "commit", "model", "source", "prompt_tokens", "attention", "threshold",
              "min_context", "hit_rate", "hit_rate_per_layer", "kv_read_fraction", "agree_prefix",
              "agree_fraction", "audit_rel_l2_per_layer", "command"]
    with results_csv.appending(args.out, header) as w:
        for name in args.models.split(","):
            chars_list, ctx, min_ctx = plans[name]
            model = name if name == "default" else os.path.join(shared, "models", name)
            args.max_model_len[model] = ctx
            for source in args.sources.split(","):
                for chars in chars_list:
                    # Shrink the passage until prompt + generated tokens fit the model's context.
                    while True:
                        prompt_file = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
                        prompt_file.write(text_source(source, chars))
                        prompt_file.close()
                        try:
                            base, cmd = generate(args.binary, model, prompt_file.name, args, ["--attention", "full"])
                            break
                        except RuntimeError as e:
                            if "exceeds the context length" not in str(e):
                                raise
                            os.remove(prompt_file.name)
                            chars = int(chars * 0.85)
                    w.writerow([datetime.date.today(), commit, name, source, base["prompt_tokens"], "full", "",
                                "", 0, "", 1.0, args.tokens, 1.0, "", cmd])
                    for t in args.thresholds.split(","):
                        res, cmd = generate(args.binary, model, prompt_file.name, args,
                                            ["--attention", "mac", "--mac-threshold", t, "--mac-min-context",
                                             str(min_ctx), "--mac-audit-rate", args.audit_rate])
                        m = res["mac"]
                        per_layer = [h / max(1, n) for h, n in zip(m["layer_hits"], m["layer_heads"])]
                        prefix, frac = agreement(base["completion_ids"], res["completion_ids"])
                        row = [datetime.date.today(), commit, name, source, res["prompt_tokens"], "mac", t, min_ctx,
                               f"{m['hit_heads'] / max(1, m['heads']):.4f}",
                               " ".join(f"{x:.3f}" for x in per_layer),
                               f"{m['kv_bytes_read'] / max(1, m['kv_bytes_full']):.4f}", prefix, f"{frac:.4f}",
                               " ".join(f"{x:.2e}" for x in m["layer_audit_rel_l2"]), cmd]
                        w.writerow(row)
                        print(name, source, res["prompt_tokens"], "t", t, "hit", row[8], "kv", row[10],
                              "agree", prefix, row[12], flush=True)
                    os.remove(prompt_file.name)


if __name__ == "__main__":
    main()
