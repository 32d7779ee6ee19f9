"""Helpers of the black-box server tests: start `macserve serve`, raw HTTP, metrics parsing.

Nothing here knows the server's internals: it speaks HTTP to the built binary, as a client would.
"""
from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile
import time
from typing import Iterable

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("MACSERVE_SHARED_DIR", REPO.parent / "shared"))
MODELS = pathlib.Path(os.environ.get("MACSERVE_TEST_MODELS", SHARED / "models"))
# The tiny chat-capable model: ChatML chat_template in tokenizer_config.json, byte-level BPE.
TINY_MODEL = MODELS / "tiny-qwen2-bpe"
TINY_NAME = "tiny-qwen2"
API_KEY = "sk-test-3f9a1c"
CORS_ORIGIN = "http://allowed.example"


def binary_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("MACSERVE_BIN", REPO / "build" / "bin" / "macserve"))


def default_model_path() -> pathlib.Path:
    env = os.environ.get("MACSERVE_DEFAULT_MODEL")
    if env:
        return pathlib.Path(env)
    cache = os.environ.get("MACSERVE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "macserve")
    return pathlib.Path(cache) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _binary_has_asan(path: pathlib.Path) -> bool:
    try:
        with open(path, "rb") as f:
            data = f.read()
        return b"__asan_init" in data
    except OSError:
        return False


# env: MACSERVE_SLOW=1 (or an ASan-instrumented binary): fewer clients in the load tests and
# longer waits; the counts stay well above trivial.
SLOW = os.environ.get("MACSERVE_SLOW", "") not in ("", "0") or _binary_has_asan(binary_path())
TIME_SCALE = 4.0 if SLOW else 1.0


def scaled(n_fast: int, n_slow: int) -> int:
    return n_slow if SLOW else n_fast


def chatml(messages: Iterable[dict], add_generation_prompt: bool = True) -> str:
    """The tiny models' chat template, rendered by hand (to compare token counts)."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def openai_client(base_url: str, api_key: str = "unused", timeout: float = 120.0):
    import openai  # the official SDK (scripts/install_deps.sh installs it)
    return openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0,
                         timeout=timeout * TIME_SCALE)


# ---- the server process --------------------------------------------------------------------------

LIVE_SERVERS: list["Server"] = []


class ServerStartError(RuntimeError):
    pass


class Server:
    """One `macserve serve` process on a free port; its stdout+stderr go to a log file."""

    def __init__(self, args: list[str], env: dict | None = None, name: str = "server",
                 log_dir: str | None = None):
        self.args = args
        self.name = name
        self.env = dict(os.environ)
        # Frugal by default (the machine is shared with builds); the benchmark script does not do this.
        self.env.setdefault("OMP_NUM_THREADS", "1")
        self.env.setdefault("OPENBLAS_NUM_THREADS", "1")
        if env:
            self.env.update(env)
        self.dir = tempfile.mkdtemp(prefix=f"macserve-{name}-", dir=log_dir)
        self.log_path = os.path.join(self.dir, "server.log")
        self.port_file = os.path.join(self.dir, "port")
        self.grpc_port_file = os.path.join(self.dir, "grpc_port")
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.grpc_port = 0  # 0 with --no-grpc
        self.exit_code: int | None = None
        self.health_before_ready: list[int] = []  # /health statuses seen while starting

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0 * TIME_SCALE) -> "Server":
        # gRPC on a free port too (the default 50051 would clash between parallel servers).
        cmd = [str(binary_path()), "serve", "--host", "127.0.0.1", "--port", "0",
               "--port-file", self.port_file, "--grpc-port", "0", "--grpc-port-file", self.grpc_port_file] + self.args
        self.log = open(self.log_path, "wb")
        self.log.write(("$ " + " ".join(cmd) + "\n").encode())
        self.log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     stdin=subprocess.DEVNULL)
        LIVE_SERVERS.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"{self.name} exited with {self.proc.returncode} while starting:\n"
                                       + self.log_tail())
            if not self.port:
                try:
                    txt = pathlib.Path(self.port_file).read_text().strip()
                    if txt:
                        self.port = int(txt)
                except (OSError, ValueError):
                    pass
            if self.port:
                try:
                    st, _, _ = request("GET", self.base + "/health", timeout=5)
                    self.health_before_ready.append(st)
                    if st == 200:
                        self._read_grpc_port()
                        return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.kill()
        raise ServerStartError(f"{self.name} not healthy after {timeout:.0f}s:\n" + self.log_tail())

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _read_grpc_port(self):
        try:
            txt = pathlib.Path(self.grpc_port_file).read_text().strip()
            self.grpc_port = int(txt) if txt else 0
        except (OSError, ValueError):
            self.grpc_port = 0

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0 * TIME_SCALE) -> int:
        """SIGTERM, wait; returns the exit code (kills it and returns -9 when it hangs)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.exit_code = -9
                return self.exit_code
        self.exit_code = self.proc.returncode
        self._close()
        return self.exit_code

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self):
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        try:
            self.log.close()
        except Exception:
            pass

    def log_tail(self, n: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return f"--- {self.name} log tail ({self.log_path}) ---\n" + "\n".join(lines[-n:])


# ---- HTTP ----------------------------------------------------------------------------------------

def split_url(url: str) -> tuple[str, int, str]:
    m = re.match(r"http://([^:/]+):(\d+)(/.*)?$", url)
    assert m, url
    return m.group(1), int(m.group(2)), m.group(3) or "/"


def request(method: str, url: str, body: bytes | str | dict | None = None, headers: dict | None = None,
            timeout: float = 60.0 * TIME_SCALE):
    """One request on a fresh connection; returns (status, headers dict (lower-case), body bytes)."""
    host, port, path = split_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    hdrs = dict(headers or {})
    if isinstance(body, dict) or isinstance(body, list):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def post_json(base: str, path: str, obj, headers: dict | None = None, timeout: float = 60.0 * TIME_SCALE):
    st, hdrs, data = request("POST", base + path, obj, headers, timeout)
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return st, hdrs, parsed, data


def raw_exchange(port: int, payload: bytes, timeout: float = 30.0 * TIME_SCALE, shut_wr: bool = False) -> bytes:
    """Sends raw bytes, reads until the server closes or one full response arrived."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(payload)
        if shut_wr:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:  # the server already closed (and reset) the connection
                pass
        return read_response_bytes(s)
    finally:
        s.close()


def read_response_bytes(s: socket.socket) -> bytes:
    """Reads one HTTP response (Content-Length framed, or up to close)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        need = int(m.group(1))
        while len(rest) < need:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            rest += chunk
        return head + b"\r\n\r\n" + rest
    while True:  # no length: read to close
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def parse_status(resp: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
    return int(m.group(1)) if m else -1


def response_json(resp: bytes):
    _, _, body = resp.partition(b"\r\n\r\n")
    try:
        return json.loads(body)
    except ValueError:
        return None


def assert_error_envelope(body, status: int | None = None):
    """OpenAI's envelope: {"error": {"message", "type", "param", "code"}}."""
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not an error envelope: {body!r}"
    err = body["error"]
    for key in ("message", "type", "param", "code"):
        assert key in err, f"error envelope lacks {key!r}: {body!r}"
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["type"], str) and err["type"], body
    return err


def sse_events(data: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    out = []
    for block in data.decode("utf-8").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                out.append(line[5:].strip())
    return out


# ---- metrics -------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = dict(_LABEL.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def get_metrics(base: str) -> list[tuple[str, dict, float]]:
    st, _, data = request("GET", base + "/metrics", timeout=30 * TIME_SCALE)
    assert st == 200, (st, data[:500])
    return parse_metrics(data.decode())


def metric(samples, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    vals = [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]
    assert vals, f"metric {name}{labels or ''} not found"
    return sum(vals)


def wait_idle(base: str, timeout: float = 30.0 * TIME_SCALE):
    """Polls /metrics until nothing runs or waits and the KV cache is empty again."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        s = get_metrics(base)
        last = (metric(s, "macserve:num_requests_running"), metric(s, "macserve:num_requests_waiting"),
                metric(s, "macserve:kv_cache_usage_perc"))
        if last == (0.0, 0.0, 0.0):
            return
        time.sleep(0.2)
    raise AssertionError(f"server not idle after {timeout:.0f}s: running, waiting, kv_cache_usage_perc = {last}")


def settled_metrics(base: str, timeout: float = 30.0 * TIME_SCALE):
    """Idle, and the token counters no longer moving (the engine publishes its counters after the
    step that produced the response's last token, so a scrape may lag the response by a step)."""
    wait_idle(base, timeout)
    keys = ("macserve:generation_tokens_total", "macserve:prompt_tokens_total",
            "macserve:e2e_request_latency_seconds_count")
    prev = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = get_metrics(base)
        cur = tuple(metric(s, k) for k in keys)
        if cur == prev:
            return s
        prev = cur
        time.sleep(0.3)
    raise AssertionError("metrics still moving while idle")


def assert_serving(base: str, model: str = TINY_NAME, headers: dict | None = None):
    """/health 200, a normal completion works, and the server is idle afterwards."""
    st, _, data = request("GET", base + "/health", timeout=30 * TIME_SCALE)
    assert st == 200, (st, data)
    st, _, body, raw = post_json(base, "/v1/completions",
                                 {"model": model, "prompt": "In the beginning", "max_tokens": 3,
                                  "temperature": 0, "ignore_eos": True}, headers=headers)
    assert st == 200, (st, raw[:500])
    assert body["usage"]["completion_tokens"] == 3, body
    wait_idle(base)
