"""macserve-bench (the bundled load client) against the real server on the tiny models: every
backend and dataset, checked through its result JSON against the server's own accounting (usage
fields and the /metrics deltas), plus the clear failure when no server is running.

env: MACSERVE_BENCH_BIN (default build/bin/macserve-bench).
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

import srvutil
from conftest import require_tiny, start_server, stop_and_check, tiny_args
from srvutil import MODELS, REPO, SHARED, TIME_SCALE, TINY_MODEL, TINY_NAME

pytestmark = pytest.mark.timeout(int(600 * TIME_SCALE))

LLAMA_SP = MODELS / "tiny-llama-sp"


def bench_binary() -> pathlib.Path:
    return pathlib.Path(os.environ.get("MACSERVE_BENCH_BIN", REPO / "build" / "bin" / "macserve-bench"))


def run_bench(args: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess:
    binary = bench_binary()
    if not binary.exists():
        pytest.skip(f"macserve-bench not found: {binary} (build target macserve-bench or set MACSERVE_BENCH_BIN)")
    return subprocess.run([str(binary), "--disable-tqdm", *args], capture_output=True, text=True,
                          timeout=timeout * TIME_SCALE)


def bench_json(tmp_path, server, args: list[str], name: str = "result.json", base_url: str | None = None) -> dict:
    out = tmp_path / name
    p = run_bench(["--base-url", base_url or server.base, *args, "--save-result", "--result-filename", str(out)])
    assert p.returncode == 0, f"macserve-bench failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    assert "Serving Benchmark Result" in p.stdout
    return json.loads(out.read_text())


def check_consistent(r: dict, num_prompts: int):
    assert r["completed"] == num_prompts and r["failed"] == 0, r["errors_by_kind"]
    reqs = r["requests"]
    assert len(reqs) == num_prompts and len(r["input_lens"]) == num_prompts
    for q in reqs:
        assert q["success"]
        assert q["start"] <= q["first_token"] <= q["end"]  # TTFT <= E2EL
        assert q["output_tokens"] == len(q["token_times"]) or q["output_tokens"] >= 1
        assert q["token_times"] == sorted(q["token_times"])
    assert r["total_output_tokens"] == sum(q["output_tokens"] for q in reqs) == sum(r["output_lens"])
    # The server's own count of generated tokens moved by exactly what the client received.
    assert r["server_metrics"]["generation_tokens"] == r["total_output_tokens"]
    assert r["mean_ttft_ms"] > 0 and r["p99_e2el_ms"] >= r["median_e2el_ms"] > 0


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """tiny-llama-sp (SentencePiece, BOS): completions only, its own process so deltas are exact."""
    require_tiny()
    if not (LLAMA_SP / "model.safetensors").exists():
        pytest.skip(f"test model not found: {LLAMA_SP}")
    args = tiny_args()
    args[args.index("--model") + 1] = str(LLAMA_SP)
    args[args.index("--served-model-name") + 1] = "tiny-llama"
    srv = start_server(tmp_path_factory, "bench-llama", args)
    yield srv
    stop_and_check(srv)


@pytest.fixture(scope="module")
def qwen_server(tmp_path_factory):
    require_tiny()
    srv = start_server(tmp_path_factory, "bench-qwen", tiny_args())
    yield srv
    stop_and_check(srv)


def test_random_completions_40_prompts_concurrency_8(tmp_path, llama_server):
    r = bench_json(tmp_path, llama_server, [
        "--backend", "openai", "--tokenizer", str(LLAMA_SP), "--dataset-name", "random", "--num-prompts", "40",
        "--max-concurrency", "8", "--random-input-len", "48", "--random-output-len", "12", "--ignore-eos",
        "--metric-percentiles", "50,90,99", "--goodput", "ttft:100000", "tpot:100000"])
    check_consistent(r, 40)
    assert r["max_concurrency"] == 8 and r["max_concurrent_requests"] <= 8
    assert r["model_id"] == "tiny-llama"  # taken from /v1/models
    for q in r["requests"]:
        assert q["server_prompt_tokens"] == q["prompt_len"] == 48  # exact, BOS included
        assert q["output_tokens"] == 12 and q["finish_reason"] == "length"
    assert r["total_input_tokens"] == 40 * 48
    assert r["server_metrics"]["prompt_tokens"] == 40 * 48
    assert r["request_goodput"] == pytest.approx(r["request_throughput"])
    assert "p90_tpot_ms" in r and "p50_itl_ms" in r


def test_chat_sharegpt(tmp_path, qwen_server):
    data = SHARED / "data" / "sharegpt_format_sample.json"
    if not data.exists():
        pytest.skip(f"dataset not found: {data}")
    r = bench_json(tmp_path, qwen_server, [
        "--backend", "openai-chat", "--model", TINY_NAME, "--tokenizer", str(TINY_MODEL), "--dataset-name",
        "sharegpt", "--dataset-path", str(data), "--num-prompts", "12", "--max-concurrency", "4",
        "--sharegpt-output-len", "10", "--request-rate", "20", "--burstiness", "0.5"])
    check_consistent(r, 12)
    assert r["endpoint"] == "/v1/chat/completions" and r["request_rate"] == 20
    for q in r["requests"]:
        # The chat template adds tokens around the message: the server counts more than the text.
        assert q["server_prompt_tokens"] > q["prompt_len"]
        assert 1 <= q["output_tokens"] <= 10


@pytest.mark.parametrize("endpoint", ["text", "chat"])
def test_grpc_backend(tmp_path, qwen_server, endpoint):
    if not qwen_server.grpc_port:
        pytest.skip("the server runs without gRPC")
    r = bench_json(tmp_path, qwen_server, [
        "--backend", "grpc", "--endpoint", endpoint, "--tokenizer", str(TINY_MODEL), "--num-prompts", "16",
        "--max-concurrency", "4", "--random-input-len", "40", "--random-output-len", "8", "--ignore-eos",
        "--metrics-url", qwen_server.base], base_url=f"grpc://{qwen_server.grpc_target}")
    check_consistent(r, 16)
    assert r["backend"] == "grpc" and r["model_id"] == TINY_NAME  # from GetModelInfo
    for q in r["requests"]:
        assert q["output_tokens"] == 8 and q["finish_reason"] == "length"
        if endpoint == "text":
            assert q["server_prompt_tokens"] == q["prompt_len"] == 40
        else:
            assert q["server_prompt_tokens"] > q["prompt_len"]


def test_prefix_repetition_hits_the_prefix_cache(tmp_path, qwen_server):
    r = bench_json(tmp_path, qwen_server, [
        "--tokenizer", str(TINY_MODEL), "--dataset-name", "prefix-repetition", "--num-prompts", "12",
        "--prefix-repetition-prefix-len", "64", "--prefix-repetition-suffix-len", "16",
        "--prefix-repetition-num-prefixes", "2", "--prefix-repetition-output-len", "4", "--max-concurrency", "1",
        "--ignore-eos", "--seed", "17"])  # a seed no other test uses: its prompts share nothing with theirs
    check_consistent(r, 12)
    sm = r["server_metrics"]
    # 12 prompts of 80 tokens: 4 full 16-token blocks each looked up; all but the first prompt of
    # each prefix find the 4 prefix blocks cached, never the suffix block.
    assert sm["prefix_cache_queries"] == 12 * 4
    assert 0 < sm["prefix_cache_hit_rate"] < 1
    assert sm["prefix_cache_hits"] == 10 * 4


def test_long_context_reports_accuracy(tmp_path, qwen_server):
    r = bench_json(tmp_path, qwen_server, [
        "--tokenizer", str(TINY_MODEL), "--dataset-name", "long-context", "--num-prompts", "3",
        "--long-context-input-len", "600", "--long-context-output-len", "8", "--max-concurrency", "3"])
    check_consistent(r, 3)
    assert r["long_context_checked"] == 3
    assert 0.0 <= r["long_context_accuracy"] <= 1.0  # tiny models cannot find needles; the figure is there
    assert all("answer_correct" in q for q in r["requests"])
    assert all(q["server_prompt_tokens"] == 600 for q in r["requests"])


def test_custom_jsonl_sweep_and_duration(tmp_path, qwen_server):
    data = SHARED / "data" / "mt_bench_questions.jsonl"
    if not data.exists():
        pytest.skip(f"dataset not found: {data}")
    out = tmp_path / "sweep.json"
    p = run_bench(["--base-url", qwen_server.base, "--tokenizer", str(TINY_MODEL), "--dataset-name", "custom",
                   "--dataset-path", str(data), "--custom-output-len", "6", "--num-prompts", "6",
                   "--max-concurrency", "1,3", "--save-result", "--result-filename", str(out), "--num-warmups", "2"])
    assert p.returncode == 0, p.stderr
    assert "Sweep: throughput vs latency" in p.stdout
    for c in (1, 3):
        r = json.loads((tmp_path / f"sweep-c{c}-rinf.json").read_text())
        check_consistent(r, 6)
        assert r["max_concurrency"] == c
    # A time limit stops sending: with 2 requests/s and 1.5 s, most of 50 prompts are never sent.
    p = run_bench(["--base-url", qwen_server.base, "--tokenizer", str(TINY_MODEL), "--num-prompts", "50",
                   "--random-input-len", "16", "--random-output-len", "2", "--request-rate", "2", "--duration", "1.5",
                   "--save-result", "--result-filename", str(tmp_path / "dur.json")])
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "dur.json").read_text())
    assert 1 <= r["completed"] < 50 and r["not_sent"] == 50 - r["completed"] - r["failed"]


def test_no_server_is_a_clear_error(tmp_path):
    require_tiny()
    p = run_bench(["--base-url", "http://127.0.0.1:9", "--tokenizer", str(TINY_MODEL), "--num-prompts", "2"])
    assert p.returncode != 0
    assert "cannot reach the server at http://127.0.0.1:9" in p.stderr


def test_bad_flags_are_clear_errors(tmp_path, qwen_server):
    p = run_bench(["--base-url", qwen_server.base, "--tokenizer", str(TINY_MODEL), "--request-rate", "fast"])
    assert p.returncode != 0 and "--request-rate" in p.stderr
    p = run_bench(["--base-url", qwen_server.base, "--tokenizer", str(TINY_MODEL), "--dataset-name", "sharegpt"])
    assert p.returncode != 0 and "needs --dataset-path" in p.stderr
    # Wrong model name: every request fails with the server's 404, and the run exits non-zero.
    p = run_bench(["--base-url", qwen_server.base, "--tokenizer", str(TINY_MODEL), "--model", "nope",
                   "--num-prompts", "2", "--random-input-len", "8", "--random-output-len", "2"])
    assert p.returncode != 0 and "http_404" in p.stdout


def test_client_overhead_probe():
    p = run_bench(["--measure-client-overhead", "--overhead-requests", "300", "--overhead-concurrency", "16"])
    assert p.returncode == 0, p.stderr
    assert "Requests (ok / sent):                    300 / 300" in p.stdout
    assert "Requests per second:" in p.stdout


def test_plot_bench_draws_png_from_results(tmp_path, qwen_server):
    pytest.importorskip("matplotlib", reason="matplotlib is installed by scripts/install_deps.sh")
    files = []
    for c in (1, 4):
        bench_json(tmp_path, qwen_server, [
            "--tokenizer", str(TINY_MODEL), "--dataset-name", "random", "--num-prompts", "6",
            "--max-concurrency", str(c), "--random-input-len", "16", "--random-output-len", "6", "--ignore-eos"],
            name=f"c{c}.json")
        files.append(str(tmp_path / f"c{c}.json"))
    plot = [os.environ.get("PYTHON", "python3"), str(REPO / "scripts" / "plot_bench.py")]
    out = tmp_path / "plot.png"
    p = subprocess.run([*plot, *files, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    bad = tmp_path / "bad.json"
    bad.write_text('{"completed": 1}')
    p = subprocess.run([*plot, str(bad), "--out", str(tmp_path / "bad.png")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "bad.json: not a macserve-bench result" in p.stderr
