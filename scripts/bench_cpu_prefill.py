#!/usr/bin/env python3
"""CPU prompt throughput (issue 24): time to first token of `macserve generate` on long prompts,
with --attention full and mac, for the default model (SmolLM2-135M-Instruct, native Q4_1 weights).

Prompts are public-domain-like licence texts from /usr/share/common-licenses (GPL-3, GFDL-1.3,
Apache-2.0, MPL-2.0, LGPL-2.1, whitespace-normalised, repeated when a prompt needs more), cut to
about the requested number of tokens (~4.9 characters per SmolLM2 token); the row records the
exact prompt token count the server reports. Each run generates 8 tokens greedily (--ignore-eos);
prompt tok/s = prompt tokens / TTFT. Appends rows to docs/perf/cpu_prefill.csv with the command,
commit, date and the 1-minute load average before the run (the machine is shared: compare rows
taken back to back).

    python3 scripts/bench_cpu_prefill.py [--tokens 512,2100,8192] [--attention full,mac]
                                         [--binary build/bin/macserve] [--label NAME]
"""
import argparse
import datetime
import os
import re
import subprocess

import results_csv

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TEXTS = ["GPL-3", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "LGPL-2.1"]
CHARS_PER_TOKEN = 4.9


def corpus():
    text = " ".join(" ".join(open(os.path.join("/usr/share/common-licenses", t)).read().split())
                    for t in TEXTS)
    return text


def run(binary, prompt, attention, out_tokens):
    cmd = [binary, "--log-level", "warn", "generate", "--prompt", prompt, "--max-tokens",
           str(out_tokens), "--ignore-eos", "--attention", attention]
    timed = ["/usr/bin/time", "-f", "maxrss_kb=%M"] + cmd if os.path.exists("/usr/bin/time") else cmd
    p = subprocess.run(timed, capture_output=True, text=True, check=True)
    m = re.search(r"prompt_tokens=(\d+) .*ttft=([\d.]+)s decode=([\d.]+) tok/s", p.stderr)
    if not m:
        raise RuntimeError(f"no statistics line in: {p.stderr[-400:]}")
    rss = re.search(r"maxrss_kb=(\d+)", p.stderr)
    return int(m.group(1)), float(m.group(2)), float(m.group(3)), int(rss.group(1)) if rss else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="512,2100,8192")
    ap.add_argument("--attention", default="full,mac")
    ap.add_argument("--out-tokens", type=int, default=8)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bin", "macserve"))
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "perf", "cpu_prefill.csv"))
    args = ap.parse_args()
    text = corpus()
    commit = results_csv.commit()
    header = ["date", "commit", "label", "attention", "prompt_tokens", "ttft_s", "prompt_tok_s",
              "decode_tok_s", "maxrss_kb", "threads", "load_before", "command"]
    with results_csv.appending(args.out, header) as w:
        for n in (int(x) for x in args.tokens.split(",")):
            chars = int(n * CHARS_PER_TOKEN)
            prompt = (text * (chars // len(text) + 1))[:chars]
            for attention in args.attention.split(","):
                load = open("/proc/loadavg").read().split()[0]
                toks, ttft, decode, rss = run(args.binary, prompt, attention, args.out_tokens)
                cmd = (f"{os.path.relpath(args.binary, ROOT)} --log-level warn generate --prompt "
                       f"<{chars} chars of {'+'.join(TEXTS)}> --max-tokens {args.out_tokens} --ignore-eos "
                       f"--attention {attention}")
                w.writerow([datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), commit,
                            args.label, attention, toks, f"{ttft:.2f}", f"{toks / ttft:.1f}", f"{decode:.1f}",
                            rss, os.environ.get("OMP_NUM_THREADS", os.cpu_count()), load, cmd])
                print(f"{args.label or commit} {attention} {toks} tokens: TTFT {ttft:.2f} s "
                      f"({toks / ttft:.1f} prompt tok/s), decode {decode:.1f} tok/s, RSS {rss} kB, "
                      f"load {load}")


if __name__ == "__main__":
    main()
