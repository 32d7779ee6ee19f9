"""/health must fail while the engine loop makes no progress: a single long model step (one 4000-token
prefill of the tiny model, in one chunk) outlasts a --health-stall-timeout of 0.15 s, so a health
probe during it answers 503 "stalled"; once the step is over the same probe answers 200 again.
"""
from __future__ import annotations

import json
import threading
import time

from conftest import require_tiny, start_server, stop_and_check
from srvutil import TIME_SCALE, TINY_MODEL, get_metrics, metric, post_json, request


def test_health_fails_while_a_step_stalls_the_engine_loop(tmp_path_factory):
    require_tiny()
    srv = start_server(tmp_path_factory, "stall",
                       ["--model", str(TINY_MODEL), "--served-model-name", "stall", "--max-model-len", "4096",
                        "--max-num-batched-tokens", "4096", "--health-stall-timeout", "0.15",
                        "--attention", "full"])
    try:
        # ~4000 prompt tokens: a token id prompt of repeated ordinary ids, prefilled in one step.
        prompt = [(i * 7919) % 2000 + 100 for i in range(4000)]
        statuses: list[tuple[int, str]] = []
        done = threading.Event()

        def probe():
            while not done.is_set():
                status, _, body = request("GET", srv.base + "/health", timeout=30)
                statuses.append((status, body.decode(errors="replace")))
                time.sleep(0.01)

        t = threading.Thread(target=probe)
        t.start()
        t0 = time.time()
        status, _, _, body = post_json(srv.base, "/v1/completions",
                                    {"model": "stall", "prompt": prompt, "max_tokens": 1, "temperature": 0},
                                    timeout=600 * TIME_SCALE)
        step_seconds = time.time() - t0
        done.set()
        t.join()
        assert status == 200, body
        stalled = [b for s, b in statuses if s == 503]
        assert stalled, f"no 503 during a {step_seconds:.2f} s request; statuses seen: {sorted(set(s for s, _ in statuses))}"
        assert all(json.loads(b)["status"] == "stalled" for b in stalled), stalled[:3]
        # After the step the loop ticks again and health recovers.
        deadline = time.time() + 5
        while time.time() < deadline:
            status, _, body = request("GET", srv.base + "/health", timeout=30)
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200, body
        assert metric(get_metrics(srv.base), "macserve:num_requests_running") == 0
    finally:
        stop_and_check(srv)
