"""Many concurrent streaming clients get exactly what each prompt gets alone, and /metrics (valid
Prometheus text with every documented macserve:* name) accounts for them."""
from __future__ import annotations

import asyncio
import re
import shutil
import subprocess

import pytest

openai = pytest.importorskip("openai")

import srvutil  # noqa: E402
from srvutil import TIME_SCALE, TINY_NAME, metric, scaled  # noqa: E402

pytestmark = pytest.mark.timeout(int(300 * TIME_SCALE))

MAX_TOKENS = 40  # prompt + 40 passes --mac-min-context 32, so MAC decisions are eligible to hit

# (kind, prompt or messages, sampling): greedy ones, plus seeded sampling, which must not depend
# on what else is in the batch either.
SPECS = [
    ("completion", "It is a truth universally acknowledged", {"temperature": 0}),
    ("completion", "In the beginning God created", {"temperature": 0}),
    ("completion", "The hacker", {"temperature": 0}),
    ("completion", "And it came to pass", {"temperature": 0.9, "seed": 11}),
    ("chat", [{"role": "user", "content": "In the beginning"}], {"temperature": 0}),
    ("chat", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who was Emma?"}],
     {"temperature": 0}),
    ("chat", [{"role": "user", "content": "Tell me of the kernel"}], {"temperature": 0}),
    ("chat", [{"role": "user", "content": "Pride"}], {"temperature": 0.9, "seed": 12}),
]

# serving.md's Metrics section; histograms are checked through their _count series.
REQUIRED_METRICS = [
    "macserve:num_requests_running",
    "macserve:num_requests_waiting",
    "macserve:kv_cache_usage_perc",
    "macserve:prompt_tokens_total",
    "macserve:generation_tokens_total",
    "macserve:request_success_total",
    "macserve:time_to_first_token_seconds_count",
    "macserve:inter_token_latency_seconds_count",
    "macserve:e2e_request_latency_seconds_count",
    "macserve:request_queue_time_seconds_count",
    "macserve:num_preemptions_total",
    "macserve:prefix_cache_queries_total",
    "macserve:prefix_cache_hits_total",
    "macserve:mac_heads_total",
    "macserve:mac_hits_total",
    "macserve:mac_kv_bytes_read_total",
    "macserve:mac_kv_bytes_full_equivalent_total",
    "macserve:mac_ring_bytes",
    "macserve:mac_ring_slots",
    "macserve:mac_ring_slots_in_use",
    "macserve:mac_ring_slots_taken_total",
    "macserve:mac_ring_slot_misses_total",
]


async def run_one(client, spec, stream: bool):
    kind, inp, sampling = spec
    kw = dict(model=TINY_NAME, max_tokens=MAX_TOKENS, extra_body={"ignore_eos": True}, **sampling)
    if kind == "completion":
        if not stream:
            r = await client.completions.create(prompt=inp, **kw)
            return r.choices[0].text, r.usage.prompt_tokens
        text, finish = "", None
        async for chunk in await client.completions.create(prompt=inp, stream=True, **kw):
            for c in chunk.choices:
                text += c.text or ""
                finish = c.finish_reason or finish
        assert finish == "length"
        return text, None
    if not stream:
        r = await client.chat.completions.create(messages=inp, **kw)
        return r.choices[0].message.content, r.usage.prompt_tokens
    text, finish, first_role = "", None, None
    async for chunk in await client.chat.completions.create(messages=inp, stream=True, **kw):
        for c in chunk.choices:
            if first_role is None:
                first_role = c.delta.role
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert first_role == "assistant" and finish == "length"
    return text, None


def test_concurrent_streaming_clients_match_solo_runs(server):
    n = scaled(64, 24)

    async def main():
        client = openai.AsyncOpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0,
                                    timeout=300 * TIME_SCALE)
        try:
            solo = [await run_one(client, s, stream=False) for s in SPECS]
            before = await asyncio.to_thread(srvutil.settled_metrics, server.base)
            results = await asyncio.gather(*(run_one(client, SPECS[i % len(SPECS)], stream=True)
                                             for i in range(n)), return_exceptions=True)
            return solo, before, results
        finally:
            await client.close()

    solo, before, results = asyncio.run(main())
    failures = []
    for i, res in enumerate(results):
        want = solo[i % len(SPECS)][0]
        if isinstance(res, BaseException):
            failures.append(f"client {i}: {res!r}")
        elif res[0] != want:
            failures.append(f"client {i} ({SPECS[i % len(SPECS)][1]!r}): {res[0]!r} != solo {want!r}")
    assert not failures, f"{len(failures)}/{n} clients wrong:\n" + "\n".join(failures[:8])

    # The counters moved by exactly these requests (the suite runs its tests one after another).
    after = srvutil.settled_metrics(server.base)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    want = {
        "generation_tokens_total": n * MAX_TOKENS,
        # Every prompt token of every request, as usage.prompt_tokens reports them (prefix-cache hits
        # included, as vLLM counts them).
        "prompt_tokens_total": sum(solo[i % len(SPECS)][1] for i in range(n)),
        'request_success_total{finished_reason="length"}': n,
        "e2e_request_latency_seconds_count": n,
        "time_to_first_token_seconds_count": n,
        "request_queue_time_seconds_count": n,
    }
    got = {
        "generation_tokens_total": delta("macserve:generation_tokens_total"),
        "prompt_tokens_total": delta("macserve:prompt_tokens_total"),
        'request_success_total{finished_reason="length"}': delta("macserve:request_success_total",
                                                                 finished_reason="length"),
        "e2e_request_latency_seconds_count": delta("macserve:e2e_request_latency_seconds_count"),
        "time_to_first_token_seconds_count": delta("macserve:time_to_first_token_seconds_count"),
        "request_queue_time_seconds_count": delta("macserve:request_queue_time_seconds_count"),
    }
    wrong = {k: f"moved by {got[k]:g}, expected {want[k]}" for k in want if got[k] != want[k]}
    assert not wrong, f"metric deltas over {n} requests: {wrong}"
    assert delta("macserve:mac_heads_total") > 0
    read, full = delta("macserve:mac_kv_bytes_read_total"), delta("macserve:mac_kv_bytes_full_equivalent_total")
    assert 0 < read <= full


def test_metrics_names_and_labels(server):
    st, _, data = srvutil.request("GET", server.base + "/metrics")
    assert st == 200
    text = data.decode()
    names = {name for name, _, _ in srvutil.parse_metrics(text)}
    missing = [m for m in REQUIRED_METRICS if m not in names]
    assert not missing, f"missing metrics: {missing}"
    assert any(re.match(r"macserve:mac_audit\w*", n) for n in names), \
        f"no MAC audit error histogram among {sorted(n for n in names if 'mac' in n)}"
    for name, labels, _ in srvutil.parse_metrics(text):
        assert labels.get("model_name") == TINY_NAME, (name, labels)
    # TYPE lines: counters are counters, histograms histograms.
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types.get("macserve:num_requests_running") == "gauge", types
    assert types.get("macserve:e2e_request_latency_seconds") == "histogram", types
    assert types.get("macserve:generation_tokens_total", types.get("macserve:generation_tokens")) == "counter"


def test_metrics_pass_promtool(server):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; scripts/install_deps.sh installs it)")
    st, _, data = srvutil.request("GET", server.base + "/metrics")
    assert st == 200
    p = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True, timeout=60)
    # serving.md mandates vLLM-style names with a colon (macserve:*), which promtool's linter flags
    # as reserved for recording rules; every other finding (and any parse error) fails.
    problems = [ln for ln in (p.stdout + p.stderr).decode().splitlines()
                if ln.strip() and not ln.endswith("metric names should not contain ':'")]
    assert not problems, "\n".join(problems)
    assert p.returncode in (0, 3), (p.returncode, (p.stdout + p.stderr).decode()[:2000])
