#!/usr/bin/env python3
"""Fixtures for tests/unit/loader_test.cc and the loader fuzz targets, computed by the reference
Python readers (safetensors, gguf) so the C++ loader is checked against independent code.

Writes (all small, committed):
  tests/fixtures/loader/shared_models.json   per model in ../shared/models: per tensor shape, a few
                                             elements and the float64 sum, read by safetensors
  tests/fixtures/loader/*.gguf               tiny GGUF models written with gguf.GGUFWriter
                                             (F32/F16/BF16/Q8_0/Q4_0/Q4_1; llama, qwen2, qwen3)
  tests/fixtures/loader/gguf_expected.json   config, vocab and per-tensor samples of those files,
                                             dequantised by gguf.quants and (llama) un-permuted
  tests/fixtures/loader/smollm2_samples.json the same for the SmolLM2 default model, when found
  tests/fuzz/corpus/{safetensors_fuzz,gguf_fuzz}/  seed inputs

Usage: python3 scripts/gen_loader_fixtures.py [--shared DIR] [--smollm2 PATH]
"""
import argparse
import json
import math
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors import safe_open
from safetensors.numpy import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "loader")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
SHARED_MODELS = ["stories260K", "tiny-llama-sp", "tiny-qwen2-bpe", "tiny-qwen3-bpe"]
SAMPLES = 6


def samples(name, arr):
    """A few flat indices (first, last, and seeded random ones) with their float32 values."""
    flat = np.asarray(arr, dtype=np.float32).reshape(-1)
    rng = np.random.default_rng(abs(hash_name(name)))
    idx = sorted({0, flat.size - 1, *rng.integers(0, flat.size, SAMPLES).tolist()})
    return {
        "shape": list(arr.shape),
        "index": idx,
        "value": [float(flat[i]) for i in idx],  # float32 -> double is exact
        "sum": float(flat.astype(np.float64).sum()),
    }


def hash_name(name):
    h = 0xcbf29ce484222325
    for c in name.encode():
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFF


def shared_models(shared):
    out = {}
    for m in SHARED_MODELS:
        path = os.path.join(shared, "models", m, "model.safetensors")
        with safe_open(path, "pt") as f:  # torch handles bf16 natively
            out[m] = {k: samples(k, f.get_tensor(k).float().numpy()) for k in sorted(f.keys())}
    return out


# ---- GGUF ----------------------------------------------------------------------------------------

def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf's q/k row permutation (HF rotate-half -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(arr, qtype):
    """What the file stores for arr in qtype, and the float32 values a reader gets back."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == Q.F32:
        return arr, arr
    if qtype == Q.F16:
        h = arr.astype(np.float16)
        return h, h.astype(np.float32)
    q = gguf.quants.quantize(arr, qtype)
    return q, gguf.quants.dequantize(q, qtype).reshape(arr.shape).astype(np.float32)


def known_matrix(rows, cols):
    """HF-layout weights whose every element is predictable from (row, col) in the C++ test:
    w[r][c] = r + c / 1024 (exact in float32 for the sizes used here)."""
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    return (r + c / 1024.0).astype(np.float32)


def write_gguf(path, spec):
    arch, cfg = spec["arch"], spec["config"]
    rng = np.random.default_rng(spec["seed"])
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg["layers"])
    w.add_context_length(cfg["ctx"])
    w.add_embedding_length(cfg["hidden"])
    w.add_feed_forward_length(cfg["ffn"])
    w.add_head_count(cfg["heads"])
    w.add_head_count_kv(cfg["kv_heads"])
    if cfg.get("key_length"):
        w.add_key_length(cfg["key_length"])
        w.add_value_length(cfg["key_length"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["eps"])
    vocab = spec["vocab"]
    w.add_tokenizer_model(vocab["model"])
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_scores([float(-i) for i in range(len(vocab["tokens"]))])
    w.add_token_types([3 if t.startswith("<") else 1 for t in vocab["tokens"]])
    if vocab["merges"]:
        w.add_token_merges(vocab["merges"])
    w.add_bos_token_id(vocab["bos"])
    w.add_eos_token_id(vocab["eos"])
    w.add_add_bos_token(vocab["add_bos"])
    w.add_chat_template(vocab["chat_template"])

    expected = {}
    hd = cfg.get("key_length") or cfg["hidden"] // cfg["heads"]
    if spec.get("rope_freqs"):
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(hd, cfg["rope_theta"], **spec["rope_freqs"]))
    for gguf_name, hf_name, shape, qtype, kind in spec_tensors(spec, hd):
        if kind == "norm":
            hf = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif kind == "known":
            hf = known_matrix(*shape)
        else:
            hf = (0.05 * rng.standard_normal(shape)).astype(np.float32)
        heads = permuted_heads(arch, hf_name, cfg)
        stored = permute(hf, heads) if heads else hf
        data, back = encode(stored, qtype)
        w.add_tensor(gguf_name, data, raw_dtype=qtype)
        got = unpermute(back, heads) if heads else back
        if kind == "known" and qtype == Q.F32:
            assert np.array_equal(got, hf)
        expected[hf_name] = samples(hf_name, got) | {"type": qtype.name, "gguf_name": gguf_name}
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def llama3_rope_factors(dim, base, factor, low, high, original):
    """Per-frequency divisors as llama.cpp's converter stores Llama 3.1 rope scaling."""
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    low_wavelen, high_wavelen = original / low, original / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def permuted_heads(arch, hf_name, cfg):
    if arch != "llama":
        return 0
    if "q_proj" in hf_name:
        return cfg["heads"]
    if "k_proj" in hf_name:
        return cfg["kv_heads"]
    return 0


def spec_tensors(spec, hd):
    """(gguf name, hf name, torch shape, type, kind) for every tensor of a spec."""
    cfg, types = spec["config"], spec["types"]
    h, f, v = cfg["hidden"], cfg["ffn"], len(spec["vocab"]["tokens"])
    q, kv = cfg["heads"] * hd, cfg["kv_heads"] * hd
    out = [("token_embd.weight", "model.embed_tokens.weight", (v, h), types["embd"], "rand"),
           ("output_norm.weight", "model.norm.weight", (h,), Q.F32, "norm")]
    if not spec["tied"]:
        out.append(("output.weight", "lm_head.weight", (v, h), types["output"], "rand"))
    for i in range(cfg["layers"]):
        g, p = f"blk.{i}.", f"model.layers.{i}."
        lt = types["layers"][i]
        out += [
            (g + "attn_norm.weight", p + "input_layernorm.weight", (h,), Q.F32, "norm"),
            (g + "attn_q.weight", p + "self_attn.q_proj.weight", (q, h), lt["q"], lt.get("q_kind", "rand")),
            (g + "attn_k.weight", p + "self_attn.k_proj.weight", (kv, h), lt["k"], lt.get("k_kind", "rand")),
            (g + "attn_v.weight", p + "self_attn.v_proj.weight", (kv, h), lt["v"], "rand"),
            (g + "attn_output.weight", p + "self_attn.o_proj.weight", (h, q), lt["o"], "rand"),
            (g + "ffn_norm.weight", p + "post_attention_layernorm.weight", (h,), Q.F32, "norm"),
            (g + "ffn_gate.weight", p + "mlp.gate_proj.weight", (f, h), lt["gate"], "rand"),
            (g + "ffn_up.weight", p + "mlp.up_proj.weight", (f, h), lt["up"], "rand"),
            (g + "ffn_down.weight", p + "mlp.down_proj.weight", (h, f), lt["down"], "rand"),
        ]
        if spec.get("bias"):
            out += [(g + "attn_q.bias", p + "self_attn.q_proj.bias", (q,), Q.F32, "rand"),
                    (g + "attn_k.bias", p + "self_attn.k_proj.bias", (kv,), Q.F32, "rand"),
                    (g + "attn_v.bias", p + "self_attn.v_proj.bias", (kv,), Q.F32, "rand")]
        if spec.get("qk_norm"):
            out += [(g + "attn_q_norm.weight", p + "self_attn.q_norm.weight", (hd,), Q.F32, "norm"),
                    (g + "attn_k_norm.weight", p + "self_attn.k_norm.weight", (hd,), Q.F32, "norm")]
    return out


def tiny_vocab(model, n):
    specials = ["<unk>", "<s>", "</s>"]
    tokens = specials + [f"t{i}" for i in range(n - len(specials))]
    merges = [f"t{i} t{i + 1}" for i in range(4)] if model == "gpt2" else []
    return {"model": model, "pre": "default" if model == "llama" else "qwen2", "tokens": tokens,
            "merges": merges, "bos": 1, "eos": 2, "add_bos": model == "llama",
            "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}


def layer_types(**kw):
    base = {"q": Q.F32, "k": Q.F32, "v": Q.F32, "o": Q.F32, "gate": Q.F32, "up": Q.F32, "down": Q.F32}
    return base | kw


GGUF_SPECS = {
    # Llama: every supported type somewhere; layer 0 q/k are known F32 matrices (exact
    # un-permutation check), layer 1 q/k are quantised (un-permutation after dequantisation).
    "tiny_llama": {
        "arch": "llama", "seed": 1, "tied": False,
        "config": {"layers": 2, "ctx": 256, "hidden": 32, "ffn": 64, "heads": 4, "kv_heads": 2,
                   "rope_theta": 10000.0, "eps": 1e-5},
        "vocab": tiny_vocab("llama", 48),
        "types": {"embd": Q.Q8_0, "output": Q.Q4_1, "layers": [
            layer_types(q_kind="known", k_kind="known", v=Q.Q4_0, o=Q.Q4_1, gate=Q.F16, up=Q.BF16, down=Q.Q8_0),
            layer_types(q=Q.Q4_0, k=Q.Q8_0, v=Q.F16, o=Q.BF16, gate=Q.Q4_1, up=Q.Q4_0, down=Q.F32)]},
    },
    # Llama 3.1-style rope scaling, which llama.cpp stores as a rope_freqs.weight tensor.
    "tiny_llama3_rope": {
        "arch": "llama", "seed": 4, "tied": True,
        "rope_freqs": {"factor": 8.0, "low": 1.0, "high": 4.0, "original": 8192},
        "config": {"layers": 1, "ctx": 131072, "hidden": 32, "ffn": 64, "heads": 4, "kv_heads": 1,
                   "rope_theta": 500000.0, "eps": 1e-5},
        "vocab": tiny_vocab("llama", 40),
        "types": {"embd": Q.Q4_1, "layers": [layer_types(q=Q.Q8_0, k=Q.Q4_1, v=Q.Q4_0)]},
    },
    # Qwen2: tied embeddings, q/k/v biases, and no permutation (q is a known matrix stored as is).
    "tiny_qwen2": {
        "arch": "qwen2", "seed": 2, "tied": True, "bias": True,
        "config": {"layers": 1, "ctx": 512, "hidden": 32, "ffn": 64, "heads": 4, "kv_heads": 2,
                   "rope_theta": 1000000.0, "eps": 1e-6},
        "vocab": tiny_vocab("gpt2", 40),
        "types": {"embd": Q.F16, "layers": [
            layer_types(q_kind="known", v=Q.Q8_0, o=Q.Q4_0, gate=Q.Q4_1, up=Q.BF16, down=Q.Q8_0)]},
    },
    # Qwen3: q/k norms and head_dim (key_length) != hidden / heads.
    "tiny_qwen3": {
        "arch": "qwen3", "seed": 3, "tied": True, "qk_norm": True,
        "config": {"layers": 1, "ctx": 512, "hidden": 32, "ffn": 64, "heads": 4, "kv_heads": 2,
                   "key_length": 16, "rope_theta": 1000000.0, "eps": 1e-6},
        "vocab": tiny_vocab("gpt2", 40),
        "types": {"embd": Q.BF16, "layers": [
            layer_types(q=Q.Q8_0, k=Q.Q4_0, v=Q.Q4_1, o=Q.F16, gate=Q.Q8_0, up=Q.F32, down=Q.Q4_1)]},
    },
}


def gguf_fixtures():
    expected = {}
    for name, spec in GGUF_SPECS.items():
        path = os.path.join(OUT, name + ".gguf")
        tensors = write_gguf(path, spec)
        cfg, vocab = spec["config"], spec["vocab"]
        expected[name] = {
            "file": name + ".gguf", "arch": spec["arch"], "config": cfg, "tied": spec["tied"],
            "vocab": {k: vocab[k] for k in ("model", "pre", "bos", "eos", "add_bos", "chat_template")}
            | {"num_tokens": len(vocab["tokens"]), "num_merges": len(vocab["merges"]),
               "token_5": vocab["tokens"][5]},
            "tensors": tensors,
        }
        if spec.get("rope_freqs"):
            expected[name]["rope_llama3"] = spec["rope_freqs"]
    return expected


def smollm2_samples(path):
    """Reference values of the SmolLM2 default model: gguf.quants dequantisation, then the inverse
    of llama.cpp's q/k permutation (as transformers' GGUF loader does)."""
    r = gguf.GGUFReader(path)
    heads = int(r.fields["llama.attention.head_count"].contents())
    kv_heads = int(r.fields["llama.attention.head_count_kv"].contents())
    picks = ["token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
             "blk.0.attn_v.weight", "blk.7.ffn_down.weight", "blk.29.attn_norm.weight", "blk.29.ffn_up.weight"]
    out = {}
    for t in r.tensors:
        if t.name not in picks:
            continue
        shape = [int(x) for x in reversed(t.shape.tolist())]
        arr = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if t.name.endswith("attn_q.weight"):
            arr = unpermute(arr, heads)
        elif t.name.endswith("attn_k.weight"):
            arr = unpermute(arr, kv_heads)
        out[t.name] = samples(t.name, arr) | {"type": t.tensor_type.name}
    return out


def fuzz_seeds():
    st = os.path.join(CORPUS, "safetensors_fuzz")
    gg = os.path.join(CORPUS, "gguf_fuzz")
    os.makedirs(st, exist_ok=True)
    os.makedirs(gg, exist_ok=True)
    rng = np.random.default_rng(7)
    save_file({"a": rng.standard_normal((4, 3)).astype(np.float32),
               "b": rng.standard_normal((5,)).astype(np.float16)},
              os.path.join(st, "two_tensors.safetensors"), metadata={"format": "pt"})
    save_file({"w": np.arange(8, dtype=np.int64), "e": np.zeros((0, 3), np.float32)},
              os.path.join(st, "int_and_empty.safetensors"))
    spec = {
        "arch": "llama", "seed": 9, "tied": True,
        "config": {"layers": 1, "ctx": 64, "hidden": 32, "ffn": 32, "heads": 2, "kv_heads": 1,
                   "rope_theta": 10000.0, "eps": 1e-5},
        "vocab": tiny_vocab("llama", 8),
        "types": {"embd": Q.Q4_1, "layers": [
            layer_types(q=Q.Q8_0, k=Q.Q4_0, v=Q.F16, o=Q.BF16, gate=Q.Q4_1, up=Q.F32, down=Q.Q8_0)]},
    }
    write_gguf(os.path.join(gg, "tiny_llama.gguf"), spec)
    # Qwen2 (biases, tied, byte-level BPE with merges), stored as GGUF version 2.
    spec = {
        "arch": "qwen2", "seed": 10, "tied": True, "bias": True,
        "config": {"layers": 1, "ctx": 64, "hidden": 32, "ffn": 32, "heads": 2, "kv_heads": 2,
                   "rope_theta": 1000000.0, "eps": 1e-6},
        "vocab": tiny_vocab("gpt2", 8),
        "types": {"embd": Q.F16, "layers": [layer_types(q=Q.Q4_0, k=Q.Q4_1, v=Q.Q8_0, down=Q.BF16)]},
    }
    v2 = os.path.join(gg, "tiny_qwen2_v2.gguf")
    write_gguf(v2, spec)
    with open(v2, "r+b") as f:  # v2 and v3 share the little-endian layout
        f.seek(4)
        f.write((2).to_bytes(4, "little"))
    # Metadata only: every value type, nested arrays, no tensors.
    w = gguf.GGUFWriter(os.path.join(gg, "metadata_types.gguf"), "llama")
    w.add_uint8("u8", 7)
    w.add_int8("i8", -7)
    w.add_uint16("u16", 700)
    w.add_int16("i16", -700)
    w.add_uint32("u32", 70000)
    w.add_int32("i32", -70000)
    w.add_float32("f32", 0.5)
    w.add_bool("bool", True)
    w.add_string("str", "hello")
    w.add_uint64("u64", 1 << 40)
    w.add_int64("i64", -(1 << 40))
    w.add_float64("f64", 0.25)
    w.add_array("arr_str", ["a", "bc", ""])
    w.add_array("arr_nested", [[1, 2], [3]])
    w.add_custom_alignment(64)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--smollm2", default=os.environ.get("MACSERVE_DEFAULT_MODEL") or os.path.join(
        os.environ.get("MACSERVE_CACHE_DIR", os.path.expanduser("~/.cache/macserve")), "models",
        "SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    def dump(name, obj):
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")

    dump("shared_models.json", shared_models(args.shared))
    dump("gguf_expected.json", gguf_fixtures())
    if os.path.exists(args.smollm2):
        dump("smollm2_samples.json", smollm2_samples(args.smollm2))
    else:
        print(f"SmolLM2 GGUF not found at {args.smollm2}; smollm2_samples.json not regenerated")
    fuzz_seeds()


if __name__ == "__main__":
    main()
