#!/usr/bin/env python3
"""Creates the HF-parity fixtures: small random models of every supported architecture variant,
with reference outputs computed by Hugging Face `transformers` (CPU, float32).

For each variant, tests/fixtures/hf_parity/<name>/ gets config.json, model.safetensors (float32)
and reference.json: a prompt, the logits at every prompt position, and a greedy continuation with
the logits of each generated step. The C++ engine must match the logits within 1e-4 and the tokens
exactly (tests/models/hf_parity_test.cc).

Needs torch (CPU) and transformers from PyPI; heavy, so the fixtures are committed and this script
is re-run only when variants change:
    python3 scripts/gen_hf_parity_fixtures.py [--out tests/fixtures/hf_parity]
"""
import argparse
import json
import os
import shutil

import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

VOCAB = 160
PROMPT_LEN = 40
NEW_TOKENS = 24

# name -> (model class, config class, config kwargs, write the old config form?)
VARIANTS = {
    "llama_mha_tied": (LlamaForCausalLM, LlamaConfig,
                       dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                            rope_theta=10000.0), True),
    "llama_gqa2_untied": (LlamaForCausalLM, LlamaConfig,
                          dict(hidden_size=48, intermediate_size=112, num_hidden_layers=3,
                               num_attention_heads=4, num_key_value_heads=2,
                               tie_word_embeddings=False, rope_theta=500000.0), False),
    "llama_gqa4_llama3_rope": (LlamaForCausalLM, LlamaConfig,
                               dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=8, num_key_value_heads=2,
                                    tie_word_embeddings=False, rope_theta=500000.0,
                                    max_position_embeddings=1024,
                                    rope_scaling=dict(rope_type="llama3", factor=8.0,
                                                      low_freq_factor=1.0, high_freq_factor=4.0,
                                                      original_max_position_embeddings=16)), True),
    "llama_mqa": (LlamaForCausalLM, LlamaConfig,
                  dict(hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                       rope_theta=10000.0), False),
    "qwen2_bias_tied": (Qwen2ForCausalLM, Qwen2Config,
                        dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                             rope_theta=1000000.0), True),
    "qwen2_bias_untied_gqa4": (Qwen2ForCausalLM, Qwen2Config,
                               dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=8, num_key_value_heads=2,
                                    tie_word_embeddings=False, rope_theta=1000000.0), False),
    "qwen3_head_dim_tied": (Qwen3ForCausalLM, Qwen3Config,
                            dict(hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 tie_word_embeddings=True, rope_theta=1000000.0), True),
    "qwen3_gqa4_untied": (Qwen3ForCausalLM, Qwen3Config,
                          dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=8, num_key_value_heads=2, head_dim=8,
                               tie_word_embeddings=False, rope_theta=1000000.0), False),
}


def randomize(model, seed):
    """Weights large enough that logits spread and greedy choices are not near-ties."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * 1.5)


def round_floats(x):
    """8 significant digits: float32 carries ~7.2, so nothing the 1e-4 tolerance sees is lost."""
    if isinstance(x, float):
        return float(f"{x:.8g}")
    if isinstance(x, list):
        return [round_floats(v) for v in x]
    if isinstance(x, dict):
        return {k: round_floats(v) for k, v in x.items()}
    return x


def to_old_form(cfg_path):
    """Rewrites config.json in the pre-5.0 form: top-level rope_theta/rope_scaling, torch_dtype."""
    with open(cfg_path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rp.get("rope_theta", cfg.get("rope_theta"))
    if rp.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)


def make_variant(name, spec, out_dir, seed):
    model_cls, cfg_cls, kwargs, old_form = spec
    torch.manual_seed(seed)
    cfg = cfg_cls(vocab_size=VOCAB, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                  attn_implementation="eager", **kwargs)
    model = model_cls(cfg).to(torch.float32).eval()
    randomize(model, seed)
    d = os.path.join(out_dir, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    if old_form:
        to_old_form(os.path.join(d, "config.json"))

    g = torch.Generator().manual_seed(seed + 1)
    prompt = [1] + torch.randint(3, VOCAB, (PROMPT_LEN - 1,), generator=g).tolist()
    with torch.no_grad():
        ids = torch.tensor([prompt])
        prompt_logits = model(ids).logits[0]
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                             eos_token_id=None)
    greedy = out.sequences[0, len(prompt):].tolist()
    step_logits = [l[0].tolist() for l in out.logits]
    ref = {
        "variant": name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "prompt_ids": prompt,
        "prompt_logits": prompt_logits.tolist(),
        "greedy_ids": greedy,
        "step_logits": step_logits,
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(round_floats(ref), f)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, greedy {greedy[:8]}...")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                  "hf_parity"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for i, (name, spec) in enumerate(VARIANTS.items()):
        make_variant(name, spec, args.out, seed=1000 + i)


if __name__ == "__main__":
    main()
