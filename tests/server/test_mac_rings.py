"""MAC-Attention ring slots on a running server, seen through /metrics: the pool size and its bytes
at start, no slot for a request whose context cannot reach --mac-min-context, and with the pool
exhausted, misses counted and every slot back once the server is idle."""
from __future__ import annotations

import pytest

import srvutil  # noqa: E402
from conftest import require_tiny, start_server, stop_and_check  # noqa: E402
from srvutil import TIME_SCALE, TINY_MODEL, TINY_NAME, metric  # noqa: E402

pytestmark = pytest.mark.timeout(int(300 * TIME_SCALE))

LONG_PROMPT = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)  # ~180 tokens


def completion(base: str, prompt: str, max_tokens: int, n: int = 1) -> dict:
    st, _, body, raw = srvutil.post_json(base, "/v1/completions", {
        "model": TINY_NAME, "prompt": prompt, "max_tokens": max_tokens, "n": n, "temperature": 0,
        "ignore_eos": True})
    assert st == 200, raw[:500]
    return body


@pytest.fixture(scope="module")
def ring_server(tmp_path_factory):
    require_tiny()
    srv = start_server(tmp_path_factory, "rings", [
        "--model", str(TINY_MODEL), "--served-model-name", TINY_NAME, "--max-model-len", "1024",
        "--kv-cache-tokens", "16384", "--mac-min-context", "150", "--mac-window", "64", "--mac-ring-slots", "2"])
    yield srv
    stop_and_check(srv)


def test_ring_pool_metrics(ring_server):
    base = ring_server.base
    start = srvutil.settled_metrics(base)
    assert metric(start, "macserve:mac_ring_slots") == 2
    assert metric(start, "macserve:mac_ring_slots_in_use") == 0
    assert metric(start, "macserve:mac_ring_bytes") > 0
    assert metric(start, "macserve:mac_ring_slots_taken_total") == 0
    assert metric(start, "macserve:mac_ring_slot_misses_total") == 0

    # A short request (prompt + max_tokens far below 150): no slot, no MAC decision.
    completion(base, "Hello there", 8)
    short = srvutil.settled_metrics(base)
    assert metric(short, "macserve:mac_ring_slots_taken_total") == 0
    assert metric(short, "macserve:mac_heads_total") == metric(start, "macserve:mac_heads_total")

    # Four completions of a long prompt at once (n = 4 runs them side by side): two slots, so at
    # least two of them miss and run exact attention; at the end every slot is free again.
    body = completion(base, LONG_PROMPT, 32, n=4)
    assert body["usage"]["prompt_tokens"] > 150
    assert len(body["choices"]) == 4
    after = srvutil.settled_metrics(base)
    assert metric(after, "macserve:mac_ring_slot_misses_total") >= 2
    assert metric(after, "macserve:mac_ring_slots_taken_total") >= 2
    assert metric(after, "macserve:mac_heads_total") > metric(short, "macserve:mac_heads_total")
    assert metric(after, "macserve:mac_ring_slots_in_use") == 0
    assert metric(after, "macserve:mac_ring_slots") == 2
