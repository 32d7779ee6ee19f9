#!/usr/bin/env python3
"""Writes the long-text prompts of the GPU MAC test (tests/cuda/cuda_mac_model_test.cc, SmolLM2) to
tests/fixtures/mac_long_context/{kjv,jargon}.txt: the same passages scripts/mac_long_context.py
takes (from the middle of the text), from the Debian packages bible-kjv and jargon-text
(apt-get install bible-kjv jargon-text). The device machine has neither, so the files are kept.

    python3 scripts/gen_mac_long_context_fixtures.py [--chars 8000]
"""
import argparse
import importlib.util
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chars", type=int, default=8000)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("mlc", os.path.join(ROOT, "scripts", "mac_long_context.py"))
    mlc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mlc)
    out = os.path.join(ROOT, "tests", "fixtures", "mac_long_context")
    os.makedirs(out, exist_ok=True)
    for name in ("kjv", "jargon"):
        with open(os.path.join(out, name + ".txt"), "w") as f:
            f.write(mlc.text_source(name, args.chars))


if __name__ == "__main__":
    main()
