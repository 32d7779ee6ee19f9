"""The gRPC front end (macserve.v1.Generation, health, reflection) against the built server: every
RPC, streaming and unary, text / chat / token-id input, the same sampling checks and greedy
tokens as HTTP, status codes, cancellation, deadlines, Abort, concurrency with HTTP traffic."""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time

import pytest

import grpcutil
import srvutil
from grpcutil import generate, modules, request
from srvutil import TIME_SCALE, TINY_NAME, metric, post_json, scaled, wait_idle

pytestmark = pytest.mark.timeout(int(300 * TIME_SCALE))

grpc, pb2, _ = modules()
Code = grpc.StatusCode
PROMPT = "It is a truth universally acknowledged"


@pytest.fixture(scope="module")
def chan(server):
    assert server.grpc_port, "the server wrote no --grpc-port-file"
    c = grpcutil.channel(server.grpc_target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def gen(chan):
    return grpcutil.stub(chan)


def expect_error(fn, code, *needles):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    err = info.value
    assert err.code() == code, (err.code(), err.details())
    for n in needles:
        assert n in err.details(), (n, err.details())
    return err.details()


def http_completion(base, prompt, **kw):
    body = {"model": TINY_NAME, "prompt": prompt, "temperature": 0, **kw}
    st, _, resp, raw = post_json(base, "/v1/completions", body)
    assert st == 200, raw[:500]
    return resp


def detokenize_each(base, ids):
    out = []
    for i in ids:
        st, _, resp, raw = post_json(base, "/detokenize", {"model": TINY_NAME, "tokens": [i]})
        assert st == 200, raw
        out.append(resp["prompt"])
    return out


# ---- health, reflection, info ---------------------------------------------------------------

def test_health_serving(chan):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    h = health_pb2_grpc.HealthStub(chan)
    for service in ("", "macserve.v1.Generation"):
        r = h.Check(health_pb2.HealthCheckRequest(service=service), timeout=grpcutil.timeout(10))
        assert r.status == health_pb2.HealthCheckResponse.SERVING, service
    expect_error(lambda: h.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10),
                 Code.NOT_FOUND)


def test_reflection_lists_and_describes_the_service(chan):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from google.protobuf import descriptor_pb2
    r = reflection_pb2_grpc.ServerReflectionStub(chan)
    reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="macserve.v1.Generation")]
    resps = list(r.ServerReflectionInfo(iter(reqs), timeout=grpcutil.timeout(10)))
    names = {s.name for s in resps[0].list_services_response.service}
    assert "macserve.v1.Generation" in names, names
    assert "grpc.health.v1.Health" in names, names
    files = resps[1].file_descriptor_response.file_descriptor_proto
    assert files, resps[1]
    fd = descriptor_pb2.FileDescriptorProto.FromString(files[0])
    assert fd.package == "macserve.v1"
    assert {m.name for m in fd.service[0].method} == {"Generate", "Abort", "GetModelInfo", "GetServerInfo"}


def test_model_and_server_info(gen, server):
    info = gen.GetModelInfo(pb2.GetModelInfoRequest(), timeout=grpcutil.timeout(10))
    assert info.name == TINY_NAME
    assert info.architecture == "Qwen2ForCausalLM"
    assert info.max_context == 1024
    assert info.vocab_size > 1000 and info.has_chat_template
    assert len(info.eos_token_ids) >= 1 and all(0 <= i < info.vocab_size for i in info.eos_token_ids)
    s = gen.GetServerInfo(pb2.GetServerInfoRequest(), timeout=grpcutil.timeout(10))
    assert s.version and s.device
    assert s.attention == "mac" and s.mac_min_context == 32 and s.mac_window > 0
    assert s.kv_capacity_tokens >= 16384 - s.block_size and s.block_size > 0
    assert s.max_num_seqs > 0 and s.uptime_seconds > 0
    wait_idle(server.base)


# ---- generation -----------------------------------------------------------------------------

def test_streaming_greedy_equals_http(gen, server):
    res = generate(gen, request(text=PROMPT, temperature=0, max_tokens=16, ignore_eos=True, return_logprobs=True))
    http = http_completion(server.base, PROMPT, max_tokens=16, ignore_eos=True, logprobs=0)
    ids = res.tokens[0]
    assert len(ids) == 16 and len(res.chunks) >= 2
    assert res.text[0] == http["choices"][0]["text"]
    # Token for token: the same pieces and (nearly) the same logprobs as HTTP's.
    lp = http["choices"][0]["logprobs"]
    assert detokenize_each(server.base, ids) == lp["tokens"]
    for got, want in zip(res.logprobs[0], lp["token_logprobs"]):
        assert abs(got.logprob - want) < 1e-4, (got.logprob, want)
    c = res.completes[0]
    assert c.finish_reason == pb2.FINISH_REASON_LENGTH
    assert c.completion_tokens == 16 and c.prompt_tokens == http["usage"]["prompt_tokens"]
    assert c.request_id
    assert c.timings.e2e_seconds >= c.timings.ttft_seconds > 0 and c.timings.queue_seconds >= 0
    # 9 prompt + 16 tokens never reach --mac-min-context 32: the plain path, no MAC stats.
    assert c.mac.decode_steps == 0 and c.mac.heads == 0
    # Running counts grow chunk by chunk.
    counts = [ch.completion_tokens for ch in res.chunks]
    assert counts == sorted(counts) and counts[-1] == 16


def test_complete_reports_the_requests_mac_stats(gen):
    # 9 prompt + 40 tokens pass --mac-min-context 32: the decodes from position 32 on go through MAC.
    c = generate(gen, request(text=PROMPT, temperature=0, max_tokens=40, ignore_eos=True)).completes[0]
    assert c.completion_tokens == 40
    assert 0 < c.mac.decode_steps <= 39 and c.mac.heads > 0
    assert c.mac.kv_bytes_full >= c.mac.kv_bytes_read > 0


def test_greedy_equals_macserve_generate(gen, tmp_path):
    import json
    import subprocess
    stats = tmp_path / "stats.json"
    out = subprocess.run([str(srvutil.binary_path()), "generate", "--model", str(srvutil.TINY_MODEL), "--prompt",
                          PROMPT, "--max-tokens", "16", "--temperature", "0", "--ignore-eos", "--max-model-len",
                          "1024", "--mac-min-context", "32", "--stats-json", str(stats)],
                         capture_output=True, text=True, timeout=240 * TIME_SCALE)
    assert out.returncode == 0, out.stderr[-2000:]
    res = generate(gen, request(text=PROMPT, temperature=0, max_tokens=16, ignore_eos=True))
    assert res.tokens[0] == json.loads(stats.read_text())["completion_ids"]


def test_unary_equals_streaming(gen):
    kw = dict(text=PROMPT, temperature=0, max_tokens=12, ignore_eos=True)
    streamed = generate(gen, request(**kw))
    unary = generate(gen, request(stream=False, **kw))
    assert unary.messages == 1 and not unary.chunks
    assert unary.tokens[0] == streamed.tokens[0] and unary.text[0] == streamed.text[0]
    assert unary.completes[0].completion_tokens == 12


def test_chat_input_equals_http_chat(gen, server):
    msgs = [("system", "Be brief."), ("user", "Who was Emma?")]
    res = generate(gen, request(chat=msgs, temperature=0, max_tokens=10, ignore_eos=True))
    body = {"model": TINY_NAME, "messages": [{"role": r, "content": c} for r, c in msgs], "temperature": 0,
            "max_tokens": 10, "ignore_eos": True}
    st, _, http, raw = post_json(server.base, "/v1/chat/completions", body)
    assert st == 200, raw[:300]
    assert res.text[0] == http["choices"][0]["message"]["content"]
    assert res.completes[0].prompt_tokens == http["usage"]["prompt_tokens"]
    # The rendered template: its token count equals tokenizing the ChatML text by hand.
    st, _, tok, _ = post_json(server.base, "/tokenize", {"model": TINY_NAME, "prompt": srvutil.chatml(
        [{"role": r, "content": c} for r, c in msgs]), "add_special_tokens": False})
    assert res.completes[0].prompt_tokens == tok["count"]


def test_token_id_input_equals_text_input(gen, server):
    st, _, tok, _ = post_json(server.base, "/tokenize", {"model": TINY_NAME, "prompt": PROMPT})
    by_text = generate(gen, request(text=PROMPT, temperature=0, max_tokens=8, ignore_eos=True))
    by_ids = generate(gen, request(token_ids=tok["tokens"], temperature=0, max_tokens=8, ignore_eos=True))
    assert by_ids.tokens[0] == by_text.tokens[0]
    assert by_ids.completes[0].prompt_tokens == len(tok["tokens"])


def test_n_completions_and_seed(gen):
    req = request(text="Once upon a time", temperature=1.0, seed=7, max_tokens=8, ignore_eos=True, n=3)
    a, b = generate(gen, req), generate(gen, req)
    assert sorted(a.completes) == [0, 1, 2]
    assert all(len(a.tokens[i]) == 8 for i in range(3))
    assert a.tokens == b.tokens  # seeded: reproducible
    assert len({tuple(t) for t in a.tokens.values()}) > 1  # the completions differ


def test_logprobs_with_alternatives(gen):
    res = generate(gen, request(text=PROMPT, temperature=0, max_tokens=5, ignore_eos=True, return_logprobs=True,
                                top_logprobs=3))
    lps = res.logprobs[0]
    assert len(lps) == 5
    for t, lp in zip(res.tokens[0], lps):
        assert lp.token_id == t and lp.logprob <= 0
        assert len(lp.top) == 3
        assert lp.top[0].token_id == t  # greedy: the sampled token is the most likely one
        assert lp.top[0].logprob >= lp.top[1].logprob >= lp.top[2].logprob


def test_stop_string_and_stop_token(gen):
    full = generate(gen, request(text=PROMPT, temperature=0, max_tokens=20, ignore_eos=True))
    text = full.text[0]
    stop = text[len(text) // 2:len(text) // 2 + 3]
    assert stop.strip(), text
    cut = generate(gen, request(text=PROMPT, temperature=0, max_tokens=20, ignore_eos=True, stop=[stop]))
    assert cut.completes[0].finish_reason == pb2.FINISH_REASON_STOP
    assert cut.text[0] == text[:text.index(stop)]
    third = full.tokens[0][2]
    by_id = generate(gen, request(text=PROMPT, temperature=0, max_tokens=20, ignore_eos=True,
                                  stop_token_ids=[third]))
    assert by_id.completes[0].finish_reason == pb2.FINISH_REASON_STOP
    assert by_id.tokens[0][:2] == full.tokens[0][:2] and len(by_id.tokens[0]) <= 3


# ---- errors ---------------------------------------------------------------------------------

INVALID = [
    (dict(text="x", temperature=3.0), "temperature"),
    (dict(text="x", temperature=-0.5), "temperature"),
    (dict(text="x", top_p=0.0), "top_p"),
    (dict(text="x", top_k=-2), "top_k"),
    (dict(text="x", min_p=1.5), "min_p"),
    (dict(text="x", repetition_penalty=0.0), "repetition_penalty"),
    (dict(text="x", presence_penalty=2.5), "presence_penalty"),
    (dict(text="x", frequency_penalty=-3.0), "frequency_penalty"),
    (dict(text="x", max_tokens=0), "max_tokens"),
    (dict(text="x", max_tokens=-5), "max_tokens"),
    (dict(text="x", max_tokens=5000), "max_tokens"),
    (dict(text="x", min_tokens=-1), "min_tokens"),
    (dict(text="x", min_tokens=9, max_tokens=4), "min_tokens"),
    (dict(text="x", n=0), "'n'"),
    (dict(text="x", n=129), "'n'"),
    (dict(text="x", n=-3), "'n'"),
    (dict(text="x", stop=["a"] * 17), "stop"),
    (dict(text="x", stop=[""]), "stop"),
    (dict(text="x", stop_token_ids=[10 ** 8]), "stop_token_ids"),
    (dict(text="x", stop_token_ids=[-4]), "stop_token_ids"),
    (dict(text="x", top_logprobs=3), "top_logprobs"),
    (dict(text="x", return_logprobs=True, top_logprobs=21), "top_logprobs"),
    (dict(text="x", top_logprobs=-1), "top_logprobs"),
    (dict(text="x", request_id="bad id with spaces"), "request_id"),
    (dict(token_ids=[5, 10 ** 8]), "token_ids"),
    (dict(token_ids=[-1]), "token_ids"),
    (dict(), "input"),
    (dict(chat=[]), "chat.messages"),
    (dict(chat=[("wizard", "hi")]), "role"),
]


@pytest.mark.parametrize("fields,needle", INVALID, ids=[f"{n}-{i}" for i, (_, n) in enumerate(INVALID)])
def test_invalid_arguments(gen, fields, needle):
    expect_error(lambda: generate(gen, request(**fields)), Code.INVALID_ARGUMENT, needle)


def test_logit_bias_checked(gen):
    req = request(text="x")
    req.sampling.logit_bias[5] = 300.0
    expect_error(lambda: generate(gen, req), Code.INVALID_ARGUMENT, "logit_bias")
    req = request(text="x", temperature=0, max_tokens=3, ignore_eos=True)
    req.sampling.logit_bias[42] = 100.0
    assert generate(gen, req).tokens[0] == [42, 42, 42]


def test_prompt_too_long_has_https_message(gen, server):
    long_prompt = " hello" * 1100
    msg = expect_error(lambda: generate(gen, request(text=long_prompt, max_tokens=10)), Code.INVALID_ARGUMENT,
                       "maximum context length is 1024 tokens")
    st, _, body, _ = post_json(server.base, "/v1/completions",
                               {"model": TINY_NAME, "prompt": long_prompt, "max_tokens": 10})
    assert st == 400 and body["error"]["code"] == "context_length_exceeded"
    assert msg == body["error"]["message"]


def test_same_validation_message_as_http(gen, server):
    msg = expect_error(lambda: generate(gen, request(text="x", temperature=3.0)), Code.INVALID_ARGUMENT)
    st, _, body, _ = post_json(server.base, "/v1/completions",
                               {"model": TINY_NAME, "prompt": "x", "temperature": 3.0})
    assert st == 400 and msg == body["error"]["message"]


def test_malformed_and_oversized_messages_keep_the_server_serving(chan, gen, server):
    raw = chan.unary_stream("/macserve.v1.Generation/Generate", request_serializer=lambda b: b,
                            response_deserializer=lambda b: b)
    ok = request(text=PROMPT, temperature=0, max_tokens=2, ignore_eos=True).SerializeToString()
    assert len(list(raw(ok, timeout=grpcutil.timeout(30)))) >= 2  # the same path takes valid bytes
    with pytest.raises(grpc.RpcError) as info:
        list(raw(b"\xff\xff\xff\xff\x0f\x12", timeout=grpcutil.timeout(10)))
    # gRPC's own answer to bytes it cannot parse (1.51 says UNIMPLEMENTED, no details).
    assert info.value.code() != Code.OK, info.value
    big = request(text="a" * (17 << 20))  # over the default --grpc-max-message-bytes (16 MiB)
    expect_error(lambda: generate(gen, big), Code.RESOURCE_EXHAUSTED)
    assert len(generate(gen, request(text=PROMPT, temperature=0, max_tokens=2, ignore_eos=True)).tokens[0]) == 2
    srvutil.assert_serving(server.base)


# ---- cancellation, deadlines, Abort ---------------------------------------------------------

def long_request(**kw):
    return request(text=PROMPT, temperature=0, max_tokens=900, ignore_eos=True, **kw)


def test_cancel_frees_the_request(gen, server):
    call = gen.Generate(long_request(), timeout=grpcutil.timeout(120))
    first = next(call)
    assert first.WhichOneof("response") == "chunk"
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == Code.CANCELLED
    wait_idle(server.base)


def test_cancel_storm_leaves_nothing_running(chan, gen, server):
    n = scaled(100, 30)
    calls = [gen.Generate(long_request(), timeout=grpcutil.timeout(300)) for _ in range(n)]
    time.sleep(0.5 * TIME_SCALE)
    for c in calls:
        c.cancel()
    for c in calls:
        with pytest.raises(grpc.RpcError):
            list(c)
    wait_idle(server.base, timeout=60 * TIME_SCALE)
    s = srvutil.get_metrics(server.base)
    assert metric(s, "macserve:num_requests_running") == 0
    assert metric(s, "macserve:kv_cache_usage_perc") == 0
    assert metric(s, "macserve:request_success_total", finished_reason="abort", frontend="grpc") >= n


def test_deadline_exceeded_frees_the_request(gen, server):
    expect_error(lambda: generate(gen, long_request(), seconds=0.5 / TIME_SCALE), Code.DEADLINE_EXCEEDED)
    wait_idle(server.base)


def test_abort_by_request_id(gen, server):
    rid = "abort-me-1"
    results = {}

    def run():
        results["r"] = generate(gen, long_request(request_id=rid))

    t = threading.Thread(target=run)
    t.start()
    aborted = 0
    deadline = time.monotonic() + 30 * TIME_SCALE
    while aborted == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        aborted = gen.Abort(pb2.AbortRequest(request_ids=[rid, "nobody"]), timeout=10).num_aborted
    t.join(60 * TIME_SCALE)
    assert aborted == 1
    c = results["r"].completes[0]
    assert c.finish_reason == pb2.FINISH_REASON_ABORT and c.request_id == rid
    assert c.completion_tokens < 900
    assert gen.Abort(pb2.AbortRequest(request_ids=[rid]), timeout=10).num_aborted == 0
    wait_idle(server.base)


# ---- concurrency and metrics ----------------------------------------------------------------

def test_concurrent_streams_with_http_traffic(gen, server):
    prompts = [f"{PROMPT} {i}" for i in range(8)]
    solo = {p: generate(gen, request(text=p, temperature=0, max_tokens=12, ignore_eos=True)).tokens[0]
            for p in prompts}
    http_solo = http_completion(server.base, "In the beginning", max_tokens=12, ignore_eos=True)["choices"][0]["text"]
    n = scaled(32, 12)
    with cf.ThreadPoolExecutor(max_workers=n + 4) as pool:
        futs = [pool.submit(generate, gen, request(text=prompts[i % len(prompts)], temperature=0, max_tokens=12,
                                                   ignore_eos=True)) for i in range(n)]
        https = [pool.submit(http_completion, server.base, "In the beginning", max_tokens=12, ignore_eos=True)
                 for _ in range(4)]
        for i, f in enumerate(futs):
            assert f.result().tokens[0] == solo[prompts[i % len(prompts)]], i
        for f in https:
            assert f.result()["choices"][0]["text"] == http_solo
    wait_idle(server.base)


def test_metrics_count_grpc_requests(gen, server):
    before = srvutil.settled_metrics(server.base)
    generate(gen, request(text=PROMPT, temperature=0, max_tokens=4, ignore_eos=True, n=2))
    after = srvutil.settled_metrics(server.base)
    key = dict(finished_reason="length", frontend="grpc")
    assert metric(after, "macserve:request_success_total", **key) == \
        metric(before, "macserve:request_success_total", **key) + 2
    assert metric(after, "macserve:e2e_request_latency_seconds_count", frontend="grpc") == \
        metric(before, "macserve:e2e_request_latency_seconds_count", frontend="grpc") + 2
    assert metric(after, "macserve:e2e_request_latency_seconds_count", frontend="http") == \
        metric(before, "macserve:e2e_request_latency_seconds_count", frontend="http")


# ---- auth -----------------------------------------------------------------------------------

def test_api_key(auth_server):
    c = grpcutil.channel(auth_server.grpc_target)
    try:
        g = grpcutil.stub(c)
        req = request(text=PROMPT, temperature=0, max_tokens=2, ignore_eos=True)
        expect_error(lambda: generate(g, req), Code.UNAUTHENTICATED, "API key")
        expect_error(lambda: generate(g, req, metadata=[("authorization", "Bearer wrong")]), Code.UNAUTHENTICATED)
        expect_error(lambda: g.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10), Code.UNAUTHENTICATED)
        ok = generate(g, req, metadata=[("authorization", f"Bearer {srvutil.API_KEY}")])
        assert len(ok.tokens[0]) == 2
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        h = health_pb2_grpc.HealthStub(c)
        assert h.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        c.close()


# ---- queue full, drain ----------------------------------------------------------------------

def test_queue_full_is_resource_exhausted_and_sigterm_drains_grpc(tmp_path_factory):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from conftest import require_tiny, start_server, tiny_args
    require_tiny()
    srv = start_server(tmp_path_factory, "grpc-drain", tiny_args("--max-num-seqs", "1", "--max-queued-requests", "1"))
    c = grpcutil.channel(srv.grpc_target)
    try:
        g = grpcutil.stub(c)
        h = health_pb2_grpc.HealthStub(c)
        # One runs, one waits; more are refused by the engine's queue.
        running = g.Generate(long_request(), timeout=grpcutil.timeout(120))
        assert next(running).WhichOneof("response") == "chunk"
        def small():
            try:
                generate(g, request(text="x", temperature=0, max_tokens=2, ignore_eos=True))
                return Code.OK, ""
            except grpc.RpcError as e:
                return e.code(), e.details()

        pool = cf.ThreadPoolExecutor(max_workers=4)
        futs = [pool.submit(small) for _ in range(4)]
        # One waits in the queue (behind the running stream); the others are refused at once.
        refused = []
        for f in cf.as_completed(futs, timeout=30 * TIME_SCALE):
            refused.append(f.result())
            if len(refused) == 3:
                break
        assert all(code == Code.RESOURCE_EXHAUSTED and "capacity" in msg for code, msg in refused), refused
        # SIGTERM: health goes NOT_SERVING, new calls are UNAVAILABLE, running and queued calls finish.
        srv.signal()
        deadline = time.monotonic() + 10 * TIME_SCALE
        status = None
        while time.monotonic() < deadline:
            status = h.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            time.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        expect_error(lambda: generate(g, request(text="x", max_tokens=2)), Code.UNAVAILABLE, "shutting down")
        rest = grpcutil.Result()
        for resp in running:
            rest.add(resp)
        assert rest.completes[0].finish_reason == pb2.FINISH_REASON_LENGTH
        assert rest.completes[0].completion_tokens == 900
        # The queued one ran once the slot was free (or was refused too, by timing); none failed otherwise.
        assert all(f.result()[0] in (Code.OK, Code.RESOURCE_EXHAUSTED) for f in futs)
        pool.shutdown()
        assert srv.proc.wait(60 * TIME_SCALE) == 0, srv.log_tail()
    finally:
        c.close()
        srv.kill()


def test_no_grpc_serves_http_only(tmp_path_factory):
    from conftest import require_tiny, start_server, stop_and_check, tiny_args
    require_tiny()
    srv = start_server(tmp_path_factory, "no-grpc", tiny_args("--no-grpc"))
    try:
        assert srv.grpc_port == 0
        srvutil.assert_serving(srv.base)
    finally:
        stop_and_check(srv)


def test_health_not_serving_while_loading(tmp_path):
    import signal
    import subprocess
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    model = srvutil.default_model_path()
    if not srvutil.binary_path().exists() or not model.exists():
        pytest.skip(f"needs the server binary and the default model ({model}) for a load that takes a while")
    gpf = tmp_path / "grpc_port"
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([str(srvutil.binary_path()), "serve", "--model", str(model), "--host", "127.0.0.1",
                             "--port", "0", "--grpc-port", "0", "--grpc-port-file", str(gpf), "--max-model-len", "512",
                             "--cpu-weights", "f32"],  # dequantized at load: a load that takes a while
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120 * TIME_SCALE
        while not (gpf.exists() and gpf.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.01)
        c = grpcutil.channel(f"127.0.0.1:{int(gpf.read_text())}")
        h = health_pb2_grpc.HealthStub(c)
        g = grpcutil.stub(c)
        seen = []
        while time.monotonic() < deadline:
            status = h.Check(health_pb2.HealthCheckRequest(service="macserve.v1.Generation"), timeout=10).status
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            if len(seen) == 1:  # while loading, Generate is refused (unless loading ended meanwhile)
                try:
                    generate(g, request(text="x", max_tokens=1))
                    now = h.Check(health_pb2.HealthCheckRequest(service="macserve.v1.Generation"), timeout=10).status
                    assert now == health_pb2.HealthCheckResponse.SERVING, "Generate served while NOT_SERVING"
                except grpc.RpcError as err:
                    assert err.code() == Code.UNAVAILABLE and "loading" in err.details(), (err.code(), err.details())
            time.sleep(0.01)
        if seen[0] == health_pb2.HealthCheckResponse.SERVING:
            pytest.skip("the model loaded before the first health probe")
        assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING], seen
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60 * TIME_SCALE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
