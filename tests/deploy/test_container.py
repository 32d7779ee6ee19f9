"""Black-box tests of the macserve CPU image in a running container, which scripts/container_test.sh
builds and starts (it sets MACSERVE_CONTAINER*). In file order: health, non-root user, chat
completions (plain and streamed, equal at temperature 0), /metrics, the image's HEALTHCHECK, and
last a SIGTERM stop that must let a streamed request finish and exit 0."""

import json
import os
from pathlib import Path
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

CONTAINER = os.environ.get("MACSERVE_CONTAINER", "")
URL = os.environ.get("MACSERVE_CONTAINER_URL", "")
GRPC_ADDR = os.environ.get("MACSERVE_CONTAINER_GRPC", "")
ENGINE = shlex.split(os.environ.get("MACSERVE_CONTAINER_ENGINE", "podman"))
IMAGE_UID = 10001
# The container's --drain-timeout (container_test.sh sets it generously: a loaded machine decodes slowly).
DRAIN_TIMEOUT = float(os.environ.get("MACSERVE_CONTAINER_DRAIN_TIMEOUT", "30"))

pytestmark = pytest.mark.skipif(
    not CONTAINER, reason=os.environ.get("MACSERVE_CONTAINER_SKIP", "no container started (scripts/container_test.sh)"))


def engine(*args, check=True, timeout=120):
    out = subprocess.run([*ENGINE, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(ENGINE + list(args))}: rc {out.returncode}: {out.stderr}")
    return out


def inspect(fmt):
    return engine("inspect", "--format", fmt, CONTAINER).stdout.strip()


def get(path, timeout=10):
    with urllib.request.urlopen(URL + path, timeout=timeout) as r:
        return r.status, r.read().decode()


def post(path, body, timeout=120):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


def chat_body(**extra):
    return {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 24,
            "temperature": 0, **extra}


def sse_events(resp):
    for raw in resp:
        line = raw.decode().strip()
        if line.startswith("data: "):
            yield line[len("data: "):]


def test_health_answers():
    deadline = time.time() + 180
    while True:
        try:
            status, body = get("/health")
            if status == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert inspect("{{.State.Running}}") == "true", engine("logs", CONTAINER, check=False).stderr[-3000:]
        assert time.time() < deadline, "the container did not become healthy in 180 s"
        time.sleep(1)
    assert json.loads(body) == {"status": "ok"}


def test_runs_as_non_root():
    assert inspect("{{.Config.User}}") == f"{IMAGE_UID}:{IMAGE_UID}"
    ids = engine("exec", CONTAINER, "id", "-u").stdout.split()
    assert ids == [str(IMAGE_UID)]
    # The server process itself (PID 1 is macserve: no shell in between, so SIGTERM reaches it).
    status = engine("exec", CONTAINER, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(IMAGE_UID)}
    assert engine("exec", CONTAINER, "cat", "/proc/1/comm").stdout.strip() == "macserve"


def test_chat_completion_and_stream_agree():
    with post("/v1/chat/completions", chat_body()) as r:
        full = json.loads(r.read())
    choice = full["choices"][0]
    assert full["object"] == "chat.completion"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    assert full["usage"]["completion_tokens"] > 0

    with post("/v1/chat/completions", chat_body(stream=True, stream_options={"include_usage": True})) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = list(sse_events(r))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert text == choice["message"]["content"]
    assert finish == [choice["finish_reason"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == full["usage"]


def test_metrics():
    status, text = get("/metrics")
    assert status == 200
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    for gauge in ("macserve:num_requests_running", "macserve:num_requests_waiting", "macserve:kv_cache_usage_perc"):
        assert any(k.startswith(gauge + "{") for k in samples), gauge
    generated = sum(v for k, v in samples.items() if k.startswith("macserve:generation_tokens_total"))
    assert generated >= 2, "the two completions above generated tokens"


def test_grpc_health():
    """The gRPC front end (where the binary has one) reports SERVING on grpc.health.v1."""
    if "--grpc-port" not in engine("exec", CONTAINER, "macserve", "serve", "--help").stdout:
        pytest.skip("this build of macserve has no gRPC front end")
    grpc = pytest.importorskip("grpc")
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    with grpc.insecure_channel(GRPC_ADDR) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_compose_bench_job_runs_in_the_image():
    """docker/compose.yaml's load-client job, shortened to 2 prompts, inside the image."""
    if engine("exec", CONTAINER, "sh", "-c", "command -v macserve-bench", check=False).returncode != 0:
        pytest.skip("this build has no macserve-bench")
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker" / "compose.yaml").read_text())
    bench = compose["services"]["bench"]
    args = [a for a in bench["command"] if not a.startswith(("--num-prompts", "--request-rate", "--save-result",
                                                               "--result-dir", "--base-url", "--random-"))]
    args += ["--base-url=http://127.0.0.1:8000", "--num-prompts=2", "--request-rate=inf",
             "--random-input-len=16", "--random-output-len=4"]
    out = engine("exec", CONTAINER, *bench["entrypoint"], *args, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_image_healthcheck():
    assert "/health" in inspect("{{json .Config.Healthcheck.Test}}")
    out = engine("healthcheck", "run", CONTAINER, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sigterm_drains_a_streamed_request():
    """`stop` sends SIGTERM (the image's STOPSIGNAL): the server stops accepting, the request in
    flight streams to its end, and the process exits 0 before the stop timeout (no SIGKILL)."""
    max_tokens = 16
    result = {}
    first_chunk = threading.Event()

    def stream():
        try:
            body = chat_body(stream=True, max_tokens=max_tokens, ignore_eos=True,
                             stream_options={"include_usage": True})
            with post("/v1/chat/completions", body, timeout=300) as r:
                events = []
                for e in sse_events(r):
                    events.append((time.time(), e))
                    first_chunk.set()
                result["events"] = events
        except Exception as e:  # reported by the assertions below
            result["error"] = repr(e)
            first_chunk.set()

    t = threading.Thread(target=stream)
    t.start()
    assert first_chunk.wait(120), "no streamed chunk within 120 s"
    t0 = time.time()
    stop_timeout = int(DRAIN_TIMEOUT) + 30
    stop = engine("stop", "--time", str(stop_timeout), CONTAINER, check=False, timeout=stop_timeout + 60)
    stop_seconds = time.time() - t0
    t.join(30)
    assert not t.is_alive()
    assert "error" not in result, result.get("error")
    after_sigterm = sum(1 for at, _ in result["events"] if at > t0)
    events = [e for _, e in result["events"]]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] == max_tokens, "the drained request was cut short"
    assert after_sigterm >= 3, f"only {after_sigterm} chunks came after SIGTERM: nothing was drained"
    assert stop.returncode == 0, stop.stderr
    assert inspect("{{.State.Status}}") in ("exited", "stopped")
    # 0, not 137: the server ended by itself before `stop` would have sent SIGKILL.
    assert inspect("{{.State.ExitCode}}") == "0", f"exit code after a {stop_seconds:.0f} s stop"
    logs = engine("logs", CONTAINER).stderr + engine("logs", CONTAINER).stdout
    assert "stopped" in logs
