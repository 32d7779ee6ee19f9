"""Raw HTTP against the server: hostile and malformed input, limits, timeouts, disconnects, auth,
CORS, request ids, the side routes, configuration, and the SIGTERM drain. After each group the
server must still answer /health, run a normal completion, and be idle again (nothing running or
waiting, KV cache empty)."""
from __future__ import annotations

import http.client
import json
import select
import signal
import socket
import struct
import threading
import time

import pytest

import srvutil
from conftest import require_tiny, start_server, stop_and_check, tiny_args
from srvutil import (API_KEY, CORS_ORIGIN, MODELS, TIME_SCALE, TINY_NAME, assert_error_envelope, assert_serving,
                     parse_status, post_json, raw_exchange, request, response_json, scaled, sse_events)

pytestmark = pytest.mark.timeout(int(240 * TIME_SCALE))

OK_COMPLETION = {"model": TINY_NAME, "prompt": "In the beginning", "max_tokens": 2}
OK_CHAT = {"model": TINY_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
REQUEST_TIMEOUT = 2
KEEP_ALIVE_TIMEOUT = 3
HOSTILE_MAX_BODY = 1 << 20
HOSTILE_MAX_CONNECTIONS = 48


def with_(base: dict, **kw) -> bytes:
    d = dict(base)
    for k, v in kw.items():
        if v is DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return json.dumps(d).encode()


DROP = object()


def http_post(port: int, path: str, body: bytes, extra_headers: str = "") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra_headers}\r\n").encode()
    return raw_exchange(port, head + body)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Short request and keep-alive timeouts and a 1 MiB body limit."""
    require_tiny()
    srv = start_server(tmp_path_factory, "hostile",
                       tiny_args("--request-timeout", str(REQUEST_TIMEOUT), "--keep-alive-timeout",
                                 str(KEEP_ALIVE_TIMEOUT), "--max-body-bytes", str(HOSTILE_MAX_BODY),
                                 "--write-timeout", "3", "--max-connections", str(HOSTILE_MAX_CONNECTIONS)))
    yield srv
    stop_and_check(srv)


# ---- malformed and out-of-range bodies: 400 in OpenAI's envelope --------------------------------

BAD_COMPLETIONS = {
    "truncated_json": b'{"model": "tiny-qwen2", "prompt": ',
    "not_json": b"not json at all",
    "empty_body": b"",
    "array_body": b"[]",
    "string_body": b'"prompt"',
    "number_body": b"42",
    "null_body": b"null",
    "trailing_garbage": json.dumps(OK_COMPLETION).encode() + b" }",
    "missing_prompt": with_(OK_COMPLETION, prompt=DROP),
    "prompt_number": with_(OK_COMPLETION, prompt=42),
    "prompt_object": with_(OK_COMPLETION, prompt={"a": 1}),
    "prompt_float_ids": with_(OK_COMPLETION, prompt=[1.5, 2]),
    "prompt_negative_id": with_(OK_COMPLETION, prompt=[-1]),
    "prompt_huge_id": with_(OK_COMPLETION, prompt=[10**9]),
    "prompt_id_over_int64": b'{"model":"tiny-qwen2","prompt":[99999999999999999999999],"max_tokens":2}',
    "prompt_empty_list": with_(OK_COMPLETION, prompt=[]),
    "prompt_mixed_list": with_(OK_COMPLETION, prompt=["a", 5]),
    "model_number": with_(OK_COMPLETION, model=5),
    "max_tokens_string": with_(OK_COMPLETION, max_tokens="ten"),
    "max_tokens_negative": with_(OK_COMPLETION, max_tokens=-1),
    "max_tokens_zero": with_(OK_COMPLETION, max_tokens=0),
    "max_tokens_float": with_(OK_COMPLETION, max_tokens=1.5),
    "max_tokens_bool": with_(OK_COMPLETION, max_tokens=True),
    "max_tokens_huge": with_(OK_COMPLETION, max_tokens=10**30),
    "max_tokens_int32_overflow": with_(OK_COMPLETION, max_tokens=2**31),
    "max_tokens_many_digits": b'{"model":"tiny-qwen2","prompt":"x","max_tokens":1' + b"0" * 5000 + b"}",
    "temperature_string": with_(OK_COMPLETION, temperature="hot"),
    "temperature_negative": with_(OK_COMPLETION, temperature=-0.5),
    "temperature_overflow": b'{"model":"tiny-qwen2","prompt":"x","max_tokens":2,"temperature":1e400}',
    "temperature_nan": b'{"model":"tiny-qwen2","prompt":"x","max_tokens":2,"temperature":NaN}',
    "temperature_infinity": b'{"model":"tiny-qwen2","prompt":"x","max_tokens":2,"temperature":Infinity}',
    "top_p_negative": with_(OK_COMPLETION, top_p=-1),
    "top_p_over_one": with_(OK_COMPLETION, top_p=2),
    "n_zero": with_(OK_COMPLETION, n=0),
    "n_negative": with_(OK_COMPLETION, n=-1),
    "n_string": with_(OK_COMPLETION, n="2"),
    "n_million": with_(OK_COMPLETION, n=1_000_000),
    "stop_number": with_(OK_COMPLETION, stop=42),
    "stop_list_of_numbers": with_(OK_COMPLETION, stop=[1, 2]),
    "logprobs_negative": with_(OK_COMPLETION, logprobs=-1),
    "logprobs_huge": with_(OK_COMPLETION, logprobs=1000),
    "seed_string": with_(OK_COMPLETION, seed="x"),
    "logit_bias_bad_key": with_(OK_COMPLETION, logit_bias={"abc": 1}),
    "logit_bias_out_of_range": with_(OK_COMPLETION, logit_bias={"5": 1000}),
    "logit_bias_unknown_token": with_(OK_COMPLETION, logit_bias={"99999999": 1}),
    "stream_string": with_(OK_COMPLETION, stream="yes"),
    "ignore_eos_string": with_(OK_COMPLETION, ignore_eos="no"),
    "invalid_utf8": b'{"model":"tiny-qwen2","prompt":"\xff\xfe\xc3","max_tokens":2}',
    "lone_surrogate_escape": b'{"model":"tiny-qwen2","prompt":"\\ud800","max_tokens":2}',
    "deep_nesting_balanced": b'{"model":"tiny-qwen2","prompt":' + b"[" * 100000 + b"]" * 100000 + b"}",
    "deep_nesting_open": b"[" * 300000,
    "deep_objects": b'{"a":' * 100000 + b"1" + b"}" * 100000,
}

BAD_CHAT = {
    "missing_messages": with_(OK_CHAT, messages=DROP),
    "messages_empty": with_(OK_CHAT, messages=[]),
    "messages_string": with_(OK_CHAT, messages="hi"),
    "message_not_object": with_(OK_CHAT, messages=["hi"]),
    "message_no_role": with_(OK_CHAT, messages=[{"content": "hi"}]),
    "message_content_number": with_(OK_CHAT, messages=[{"role": "user", "content": 5}]),
    "message_role_number": with_(OK_CHAT, messages=[{"role": 5, "content": "hi"}]),
    "image_part": with_(OK_CHAT, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]),
    "text_part_without_text": with_(OK_CHAT, messages=[{"role": "user", "content": [{"type": "text"}]}]),
    "top_logprobs_negative": with_(OK_CHAT, logprobs=True, top_logprobs=-1),
    "max_completion_tokens_negative": with_(OK_CHAT, max_completion_tokens=-5),
    "deep_nested_content": b'{"model":"tiny-qwen2","messages":[{"role":"user","content":' + b"[" * 50000
                           + b"]" * 50000 + b"}]}",
}


def _check_400(port: int, path: str, body: bytes):
    resp = http_post(port, path, body)
    status = parse_status(resp)
    assert status == 400, f"POST {path} {body[:200]!r} -> {resp[:600]!r}"
    assert_error_envelope(response_json(resp))


@pytest.mark.parametrize("name", sorted(BAD_COMPLETIONS))
def test_bad_completion_body_is_400(server, name):
    _check_400(server.port, "/v1/completions", BAD_COMPLETIONS[name])


@pytest.mark.parametrize("name", sorted(BAD_CHAT))
def test_bad_chat_body_is_400(server, name):
    _check_400(server.port, "/v1/chat/completions", BAD_CHAT[name])


@pytest.mark.parametrize("path,body", [
    ("/tokenize", {"model": TINY_NAME, "prompt": 5}),
    ("/tokenize", {"model": TINY_NAME}),
    ("/detokenize", {"model": TINY_NAME, "tokens": [-1]}),
    ("/detokenize", {"model": TINY_NAME, "tokens": [99999999]}),
    ("/detokenize", {"model": TINY_NAME, "tokens": "abc"}),
    ("/detokenize", {"model": TINY_NAME}),
], ids=lambda v: v if isinstance(v, str) else json.dumps(v)[:60])
def test_bad_tokenize_bodies_are_400(server, path, body):
    _check_400(server.port, path, json.dumps(body).encode())


def test_server_survives_the_bad_bodies(server):
    # Runs after the parametrized groups above (file order).
    assert_serving(server.base)


def test_model_field_may_name_the_served_model_only(server):
    st, _, body, raw = post_json(server.base, "/v1/completions", dict(OK_COMPLETION, model="gpt-4"))
    assert st == 404, raw
    assert_error_envelope(body)


def test_prompt_over_context_is_400_context_length_exceeded(server):
    st, _, body, raw = post_json(server.base, "/v1/completions",
                                 dict(OK_COMPLETION, prompt="and it came to pass " * 400))
    assert st == 400, raw
    assert assert_error_envelope(body)["code"] == "context_length_exceeded"
    st, _, body, raw = post_json(server.base, "/v1/completions", dict(OK_COMPLETION, prompt=[5] * 1100))
    assert st == 400, raw
    assert assert_error_envelope(body)["code"] == "context_length_exceeded"
    assert_serving(server.base)


# ---- HTTP framing, routes, methods --------------------------------------------------------------

@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nope", 404),
    ("GET", "/v1/nope", 404),
    ("POST", "/v1/completions/extra", 404),
    ("POST", "/v2/chat/completions", 404),
    ("GET", "/v1/completions", 405),
    ("GET", "/v1/chat/completions", 405),
    ("POST", "/health", 405),
    ("PUT", "/v1/models", 405),
    ("DELETE", "/metrics", 405),
    ("GET", "/tokenize", 405),
])
def test_routes_and_methods(server, method, path, status):
    body = json.dumps(OK_COMPLETION).encode() if method in ("POST", "PUT") else None
    st, hdrs, data = request(method, server.base + path, body,
                             {"Content-Type": "application/json"} if body else None)
    assert st == status, (method, path, st, data[:300])
    assert_error_envelope(json.loads(data))
    if status == 405:
        assert "allow" in hdrs, f"405 without an Allow header: {hdrs}"


def test_query_strings_are_ignored_by_routing(server):
    assert request("GET", server.base + "/health?probe=1")[0] == 200
    st, _, data = request("GET", server.base + "/v1/models?limit=5")
    assert st == 200 and json.loads(data)["data"][0]["id"] == TINY_NAME


def test_declared_body_over_default_limit_is_413(server):
    # Default --max-body-bytes is 8 MiB; the server must answer from the headers alone.
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % ((8 << 20) + 1))
    resp = raw_exchange(server.port, head)
    assert parse_status(resp) == 413, resp[:400]
    assert_error_envelope(response_json(resp))
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"
    assert parse_status(raw_exchange(server.port, head)) in (400, 413)
    assert_serving(server.base)


def test_body_over_limit_is_413(hostile):
    body = b'{"model":"tiny-qwen2","prompt":"' + b"a" * (HOSTILE_MAX_BODY + 1024) + b'"}'
    # The server may answer from the headers and close before the body is all sent (as clients
    # like httpx do, keep reading after a failed send).
    s = socket.create_connection(("127.0.0.1", hostile.port), timeout=30 * TIME_SCALE)
    try:
        try:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = srvutil.read_response_bytes(s)
    finally:
        s.close()
    assert parse_status(resp) == 413, resp[:300]
    assert_error_envelope(response_json(resp))
    # Just under the limit is fine (and over the context: 400, not 413).
    body = json.dumps(dict(OK_COMPLETION, prompt="a " * 2000)).encode()
    assert len(body) < HOSTILE_MAX_BODY
    assert request("POST", hostile.base + "/v1/completions", body, {"Content-Type": "application/json"})[0] == 400
    assert_serving(hostile.base)


@pytest.mark.parametrize("cl", [b"-1", b"abc", b"10, 20", b"0x10"])
def test_bad_content_length_is_400(server, cl):
    resp = raw_exchange(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl +
                        b"\r\n\r\n{}")
    assert parse_status(resp) == 400, resp[:300]


def test_conflicting_content_lengths_are_400(server):
    resp = raw_exchange(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                     b"Content-Length: 5\r\n\r\n{}")
    assert parse_status(resp) == 400, resp[:300]


def test_chunked_request_body(server):
    body = json.dumps(dict(OK_COMPLETION, max_tokens=3, ignore_eos=True)).encode()
    half = len(body) // 2
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
    resp = raw_exchange(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
    assert parse_status(resp) == 200, resp[:400]
    assert response_json(resp)["usage"]["completion_tokens"] == 3


def test_chunked_body_over_limit_is_413(hostile):
    s = socket.create_connection(("127.0.0.1", hostile.port), timeout=30 * TIME_SCALE)
    try:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (64 << 10, b"a" * (64 << 10))
        try:
            for _ in range(HOSTILE_MAX_BODY // (64 << 10) + 4):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = srvutil.read_response_bytes(s)
    finally:
        s.close()
    assert parse_status(resp) == 413, resp[:300]
    assert_serving(hostile.base)


def test_headers_under_limit_work(server):
    st, _, _ = request("GET", server.base + "/health", headers={"X-Filler": "a" * (12 << 10)})
    assert st == 200


@pytest.mark.parametrize("shape", ["one_long_header", "many_headers", "long_request_line"])
def test_oversized_headers_are_rejected(server, shape):
    if shape == "one_long_header":
        payload = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (20 << 10) + b"\r\n\r\n"
    elif shape == "many_headers":
        payload = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(3000)) + b"\r\n"
    else:
        payload = b"GET /" + b"a" * (64 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        resp = raw_exchange(server.port, payload)
    except (ConnectionResetError, BrokenPipeError):
        resp = b""
    assert parse_status(resp) in (400, 413, 414, 431), resp[:300]
    assert_serving(server.base)


@pytest.mark.parametrize("payload", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nNoColonHere\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4,
    bytes((i * 37 + 11) % 256 for i in range(8192)),
], ids=["garbage", "no_path", "http99", "no_colon", "te_gzip", "tls_hello", "binary"])
def test_garbage_requests(server, payload):
    try:
        resp = raw_exchange(server.port, payload, shut_wr=True)
    except (ConnectionResetError, BrokenPipeError):
        resp = b""
    # A 4xx/5xx answer or a closed connection are both fine; never a 200, never a crash.
    if resp:
        st = parse_status(resp)
        assert 400 <= st < 600 and st != 500, resp[:300]
    assert_serving(server.base)


def test_http10_and_pipelining(server):
    resp = raw_exchange(server.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert parse_status(resp) == 200, resp[:200]
    # Two requests in one write: two responses, in order.
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30 * TIME_SCALE)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.count(b"HTTP/1.1 200") == 2, data[:600]
    assert data.index(b"HTTP/1.1 200") < data.index(TINY_NAME.encode())


def test_keep_alive_reuses_connection(server):
    # Many requests one after another on one connection, chat and completions, streaming and not:
    # every one is answered, and the connection is never dropped.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60 * TIME_SCALE)
    failures = []
    try:
        conn.connect()
        sock = conn.sock
        for i in range(300):
            path, body = ("/v1/chat/completions", dict(OK_CHAT, max_tokens=6, ignore_eos=True)) if i % 2 else \
                ("/v1/completions", dict(OK_COMPLETION, max_tokens=6, ignore_eos=True))
            if i % 3 == 0:
                body["stream"] = True
            try:
                conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    failures.append(f"request {i} {path}: {r.status} {data[:200]!r}")
            except (http.client.HTTPException, OSError) as e:
                failures.append(f"request {i} {path} stream={body.get('stream', False)}: {e!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60 * TIME_SCALE)
        assert not failures, (f"{len(failures)}/300 keep-alive requests failed (server closed the connection "
                              "without a response):\n" + "\n".join(failures[:10]))
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        assert conn.sock is sock
    finally:
        conn.close()


# ---- side routes --------------------------------------------------------------------------------

def test_version_and_health(server):
    st, hdrs, data = request("GET", server.base + "/version")
    assert st == 200 and isinstance(json.loads(data)["version"], str)
    assert request("GET", server.base + "/health")[0] == 200


def test_tokenize_detokenize_roundtrip(server):
    text = "In the beginning God created the heaven and the earth."
    st, _, body, raw = post_json(server.base, "/tokenize", {"model": TINY_NAME, "prompt": text})
    assert st == 200, raw
    assert body["count"] == len(body["tokens"]) > 0
    assert body["max_model_len"] == 1024
    assert all(isinstance(t, int) for t in body["tokens"])
    st, _, back, raw = post_json(server.base, "/detokenize", {"model": TINY_NAME, "tokens": body["tokens"]})
    assert st == 200, raw
    assert back["prompt"] == text


def test_metrics_format(server):
    st, hdrs, data = request("GET", server.base + "/metrics")
    assert st == 200
    assert hdrs.get("content-type", "").startswith("text/plain"), hdrs
    samples = srvutil.parse_metrics(data.decode())
    assert samples
    for name, labels, _ in samples:
        assert name.startswith("macserve:"), name
        assert labels.get("model_name") == TINY_NAME, (name, labels)


# ---- request ids, auth, CORS --------------------------------------------------------------------

def test_request_id_echoed(server):
    rid = "req-7f3e-unit"
    st, hdrs, _, raw = post_json(server.base, "/v1/completions", OK_COMPLETION, headers={"X-Request-Id": rid})
    assert st == 200 and hdrs.get("x-request-id") == rid, hdrs
    st, hdrs, _, _ = post_json(server.base, "/v1/chat/completions", dict(OK_CHAT, stream=True),
                               headers={"X-Request-Id": rid + "-s"})
    assert st == 200 and hdrs.get("x-request-id") == rid + "-s", hdrs
    st, hdrs, _, _ = post_json(server.base, "/v1/completions", dict(OK_COMPLETION, n=0),
                               headers={"X-Request-Id": rid + "-e"})
    assert st == 400 and hdrs.get("x-request-id") == rid + "-e", hdrs


def test_auth_raw(auth_server):
    b = auth_server.base
    for hdr in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic " + API_KEY},
                {"Authorization": "Bearer"}, {"Authorization": "Bearer " + API_KEY + "x"},
                {"Authorization": API_KEY}):
        st, _, body, raw = post_json(b, "/v1/completions", OK_COMPLETION, headers=hdr)
        assert st == 401, (hdr, raw)
        assert_error_envelope(body)
    ok = {"Authorization": "Bearer " + API_KEY}
    assert post_json(b, "/v1/completions", OK_COMPLETION, headers=ok)[0] == 200
    assert request("GET", b + "/v1/models")[0] == 401
    assert request("GET", b + "/v1/models", headers=ok)[0] == 200
    assert post_json(b, "/tokenize", {"model": TINY_NAME, "prompt": "x"})[0] == 401
    # Health and metrics stay open.
    assert request("GET", b + "/health")[0] == 200
    assert request("GET", b + "/metrics")[0] == 200
    assert_serving(b, headers=ok)


def test_cors_preflight(auth_server):
    b = auth_server.base
    st, hdrs, _ = request("OPTIONS", b + "/v1/chat/completions",
                          headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
                                   "Access-Control-Request-Headers": "authorization, content-type"})
    assert st in (200, 204), (st, hdrs)
    assert hdrs.get("access-control-allow-origin") in (CORS_ORIGIN, "*"), hdrs
    assert "POST" in hdrs.get("access-control-allow-methods", "").upper(), hdrs
    allowed = hdrs.get("access-control-allow-headers", "").lower()
    assert allowed == "*" or ("authorization" in allowed and "content-type" in allowed), hdrs
    # The actual request carries the header too.
    st, hdrs, _, _ = post_json(b, "/v1/completions", OK_COMPLETION,
                               headers={"Origin": CORS_ORIGIN, "Authorization": "Bearer " + API_KEY})
    assert st == 200 and hdrs.get("access-control-allow-origin") in (CORS_ORIGIN, "*"), hdrs
    # Another origin is not allowed.
    st, hdrs, _ = request("OPTIONS", b + "/v1/chat/completions",
                          headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert st < 500
    assert hdrs.get("access-control-allow-origin") not in ("http://evil.example", "*"), hdrs


# ---- timeouts and slow clients (hostile: --request-timeout 2, --keep-alive-timeout 3) -------------

def _wait_closed(s: socket.socket, limit: float) -> tuple[bool, bytes]:
    """Waits until the peer closes `s` (EOF or reset); returns (closed, bytes received)."""
    s.settimeout(limit)
    got = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return False, got
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


@pytest.mark.parametrize("partial", [
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    b'{"model": "t',
    b"GET /hea",
], ids=["partial_headers", "partial_body", "partial_request_line"])
def test_hanging_request_is_closed_after_request_timeout(hostile, partial):
    s = socket.create_connection(("127.0.0.1", hostile.port), timeout=10)
    try:
        s.sendall(partial)
        # Others are served meanwhile.
        assert_serving(hostile.base)
        closed, got = _wait_closed(s, REQUEST_TIMEOUT + 10 * TIME_SCALE)
        assert closed, "the server kept a hanging request open past --request-timeout"
        if got:
            assert parse_status(got) in (400, 408), got[:300]
    finally:
        s.close()
    assert_serving(hostile.base)


def test_slowloris_clients_are_closed(hostile):
    n = scaled(40, 16)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", hostile.port), timeout=10)
        s.setblocking(False)
        socks.append(s)
    line = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100000
    pos = [0] * n
    closed_at: list[float | None] = [None] * n
    stop = threading.Event()
    t0 = time.monotonic()

    def drip():
        # One byte per socket every 0.25 s: each keeps sending, so only a whole-request limit (not an
        # idle timeout) closes it.
        while not stop.is_set() and any(c is None for c in closed_at):
            for i, s in enumerate(socks):
                if closed_at[i] is not None:
                    continue
                try:
                    r, _, _ = select.select([s], [], [], 0)
                    if r and not s.recv(4096):
                        closed_at[i] = time.monotonic() - t0
                        continue
                    s.send(line[pos[i]:pos[i] + 1])
                    pos[i] += 1
                except (BrokenPipeError, ConnectionResetError, OSError):
                    closed_at[i] = time.monotonic() - t0
            time.sleep(0.25)

    th = threading.Thread(target=drip)
    th.start()
    try:
        assert_serving(hostile.base)
        th.join(REQUEST_TIMEOUT + 15 * TIME_SCALE)
    finally:
        stop.set()
        th.join()
        for s in socks:
            s.close()
    still_open = sum(c is None for c in closed_at)
    assert still_open == 0, f"{still_open}/{n} byte-dripping clients still connected after " \
                            f"{REQUEST_TIMEOUT + 15 * TIME_SCALE:.0f}s (--request-timeout {REQUEST_TIMEOUT})"
    assert_serving(hostile.base)


def test_connections_over_max_get_503(hostile):
    socks = [socket.create_connection(("127.0.0.1", hostile.port), timeout=10)
             for _ in range(HOSTILE_MAX_CONNECTIONS)]
    try:
        # Each held connection has sent a partial request, so none is idle-closed before the check.
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\n")
        resp = raw_exchange(hostile.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
        assert parse_status(resp) == 503, resp[:300]
    finally:
        for s in socks:
            s.close()
    # The server notices the closed connections asynchronously.
    deadline = time.monotonic() + 10 * TIME_SCALE
    while request("GET", hostile.base + "/health")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_serving(hostile.base)


def test_idle_keep_alive_connection_is_closed(hostile):
    conn = http.client.HTTPConnection("127.0.0.1", hostile.port, timeout=30)
    try:
        conn.request("GET", "/health")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        closed, _ = _wait_closed(conn.sock, KEEP_ALIVE_TIMEOUT + 10 * TIME_SCALE)
        assert closed, "idle keep-alive connection still open past --keep-alive-timeout"
    finally:
        conn.close()


def test_client_that_never_reads_is_cut_and_cancelled(hostile):
    # A streaming client with a tiny receive window that never reads: the server's writes stall,
    # --write-timeout (3 s) closes the connection and cancels the request (KV freed) instead of
    # finishing it.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", hostile.port))
    # ~1.3 KB of SSE per token (20 alternatives) x 4 choices x 1000 tokens: more than the ~2.3 MB
    # that the kernel buffers on loopback (server send buffer + our receive buffer).
    body = json.dumps({"model": TINY_NAME, "messages": [{"role": "user", "content": "Go on"}], "max_tokens": 1000,
                       "ignore_eos": True, "stream": True, "logprobs": True, "top_logprobs": 20, "n": 4}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    try:
        time.sleep(3 + 5 * TIME_SCALE)
        srvutil.wait_idle(hostile.base, timeout=60 * TIME_SCALE)
        closed, got = _wait_closed(s, 10 * TIME_SCALE)
        assert closed, "connection of a client that never reads still open after --write-timeout"
        assert b"data: [DONE]" not in got, "the whole stream was delivered: the test did not stall the writes"
    finally:
        s.close()
    assert_serving(hostile.base)


# ---- disconnects --------------------------------------------------------------------------------

def _streaming_request(i: int) -> bytes:
    if i % 2:
        body = {"model": TINY_NAME, "messages": [{"role": "user", "content": f"Tell me story {i}"}],
                "max_tokens": 200, "ignore_eos": True, "stream": True}
        path = "/v1/chat/completions"
    else:
        body = {"model": TINY_NAME, "prompt": f"Chapter {i}. It was", "max_tokens": 200, "ignore_eos": True,
                "stream": True}
        path = "/v1/completions"
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def test_many_clients_disconnect_mid_stream(server):
    n = scaled(200, 60)
    errors: list[str] = []
    go = threading.Barrier(n)

    def client(i):
        try:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=120 * TIME_SCALE)
            go.wait()
            s.sendall(_streaming_request(i))
            mode = i % 4
            if mode == 0:  # gone before any answer (queued or just admitted)
                s.close()
                return
            want = 1 if mode == 1 else 4  # data events to see before leaving
            buf = b""
            while buf.count(b"data:") < want:
                chunk = s.recv(4096)
                if not chunk:
                    errors.append(f"client {i}: closed by server early: {buf[:300]!r}")
                    return
                buf += chunk
            if not buf.startswith(b"HTTP/1.1 200"):
                errors.append(f"client {i}: {buf[:300]!r}")
            if mode == 3:  # abortive close (RST)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors[:10])
    srvutil.wait_idle(server.base, timeout=90 * TIME_SCALE)
    assert_serving(server.base)


# ---- configuration: --config file, environment, --chat-template, --max-output-tokens -------------

def test_config_file_env_and_chat_template(tmp_path_factory):
    require_tiny()
    d = tmp_path_factory.mktemp("cfg")
    template = d / "template.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}[assistant]{% endif %}")
    cfg = d / "serve.toml"
    cfg.write_text(f'model = "{srvutil.TINY_MODEL}"\nserved-model-name = "from-config"\nmax-model-len = 256\n'
                   f'chat-template = "{template}"\nmax-output-tokens = 8\n')
    srv = start_server(tmp_path_factory, "config", ["--config", str(cfg)], env={"MACSERVE_API_KEY": "env-key"})
    try:
        ok = {"Authorization": "Bearer env-key"}
        st, _, data = request("GET", srv.base + "/v1/models", headers=ok)
        assert st == 200 and json.loads(data)["data"][0]["id"] == "from-config", data
        assert request("GET", srv.base + "/v1/models")[0] == 401
        st, _, body, raw = post_json(srv.base, "/tokenize", {"model": "from-config", "prompt": "x"}, headers=ok)
        assert st == 200 and body["max_model_len"] == 256, raw
        msgs = [{"role": "user", "content": "In the beginning"}]
        st, _, body, raw = post_json(srv.base, "/v1/chat/completions",
                                     {"model": "from-config", "messages": msgs, "temperature": 0,
                                      "ignore_eos": True}, headers=ok)
        assert st == 200, raw
        # --max-output-tokens caps a chat request that gives no max_tokens.
        assert body["usage"]["completion_tokens"] == 8, body
        rendered = "[user]In the beginning\n[assistant]"
        st, _, tok, raw = post_json(srv.base, "/tokenize", {"model": "from-config", "prompt": rendered,
                                                            "add_special_tokens": False}, headers=ok)
        assert body["usage"]["prompt_tokens"] == tok["count"], (body, tok)
        assert_serving(srv.base, model="from-config", headers=ok)
    finally:
        stop_and_check(srv)


def test_model_without_chat_template_rejects_chat(tmp_path_factory):
    require_tiny()
    model = MODELS / "tiny-llama-sp"
    if not (model / "model.safetensors").exists():
        pytest.skip(f"test model not found: {model}")
    srv = start_server(tmp_path_factory, "nochat", ["--model", str(model), "--served-model-name", "plain",
                                                   "--max-model-len", "256"])
    try:
        st, _, body, raw = post_json(srv.base, "/v1/chat/completions", dict(OK_CHAT, model="plain"))
        assert st == 400, raw
        assert_error_envelope(body)
        assert_serving(srv.base, model="plain")
    finally:
        stop_and_check(srv)


# ---- SIGTERM drain ------------------------------------------------------------------------------

def test_sigterm_drains_streams_then_exits_0(tmp_path_factory):
    require_tiny()
    srv = start_server(tmp_path_factory, "drain", tiny_args())
    port = srv.port
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120 * TIME_SCALE)
        body = {"model": TINY_NAME, "prompt": "In the beginning", "max_tokens": 900, "ignore_eos": True,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        first = resp.readline()
        assert first.startswith(b"data:"), first
        srv.signal(signal.SIGTERM)
        time.sleep(0.3)
        # While draining: a new request is refused (connection refused or 503), never served.
        try:
            st, _, _, raw = post_json(f"http://127.0.0.1:{port}", "/v1/completions", OK_COMPLETION, timeout=30)
            assert st == 503, (st, raw[:300])
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            pass
        rest = resp.read()
        events = sse_events(first + b"\n" + rest)
        assert events[-1] == "[DONE]", events[-3:]
        usage = json.loads(events[-2])
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 900, usage
        finishes = [c.get("finish_reason") for e in events[:-2] for c in json.loads(e)["choices"]]
        assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
        conn.close()
        code = srv.proc.wait(60 * TIME_SCALE)
        assert code == 0, srv.log_tail()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        srv.kill()


def test_sigterm_drain_timeout_cuts_long_requests(tmp_path_factory):
    require_tiny()
    srv = start_server(tmp_path_factory, "drain-timeout", tiny_args("--drain-timeout", "0.5"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120 * TIME_SCALE)
        body = {"model": TINY_NAME, "prompt": "In the beginning", "max_tokens": 1000, "ignore_eos": True, "n": 2,
                "stream": True}
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.readline().startswith(b"data:")
        srv.signal(signal.SIGTERM)
        code = srv.proc.wait(60 * TIME_SCALE)
        assert code == 0, srv.log_tail()
        try:
            rest = resp.read()
        except (http.client.IncompleteRead, ConnectionResetError) as e:
            rest = getattr(e, "partial", b"")
        # 2 x 1000 tokens take seconds; 0.5 s after SIGTERM the request was cut short.
        tokens = sum(len(json.loads(e)["choices"]) for e in sse_events(rest) if e.startswith("{")
                     and json.loads(e).get("choices"))
        assert tokens < 2000, "the drain timeout did not cut the request"
        conn.close()
    finally:
        srv.kill()


def test_health_is_503_while_loading(server):
    # Statuses /health gave while the session server was starting: 503 until it is ready.
    seen = server.health_before_ready
    assert seen and seen[-1] == 200
    assert all(st == 503 for st in seen[:-1]), seen


def test_sigterm_when_idle_exits_0(tmp_path_factory):
    require_tiny()
    srv = start_server(tmp_path_factory, "idle", tiny_args())
    stop_and_check(srv)

