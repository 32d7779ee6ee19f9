"""Fixtures of the black-box server suite: each starts the built `macserve serve` binary on a free
port, waits for /health, yields it, then SIGTERMs it and checks that it exited 0.

env: MACSERVE_BIN (default build/bin/macserve), MACSERVE_SHARED_DIR / MACSERVE_TEST_MODELS (the tiny
models), MACSERVE_DEFAULT_MODEL (SmolLM2 GGUF), MACSERVE_SLOW=1 (fewer clients, longer waits).
"""
from __future__ import annotations

import pytest

import srvutil
from srvutil import API_KEY, CORS_ORIGIN, TINY_MODEL, TINY_NAME, Server, openai_client



def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test limit (pytest-timeout)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # A failing test shows the tail of every live server's log next to its traceback.
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in list(srvutil.LIVE_SERVERS):
            rep.sections.append((f"{srv.name} log", srv.log_tail(40)))


def require_tiny():
    binary = srvutil.binary_path()
    if not binary.exists():
        pytest.skip(f"server binary not found: {binary} (build target macserve or set MACSERVE_BIN)")
    if not (TINY_MODEL / "model.safetensors").exists():
        pytest.skip(f"test model not found: {TINY_MODEL} (set MACSERVE_SHARED_DIR or MACSERVE_TEST_MODELS)")


def tiny_args(*extra: str) -> list[str]:
    # MAC matching from context 32 on, so serving runs real MAC decisions (and its metrics move).
    return ["--model", str(TINY_MODEL), "--served-model-name", TINY_NAME, "--max-model-len", "1024",
            "--kv-cache-tokens", "16384", "--mac-min-context", "32", *extra]


def start_server(tmp_path_factory, name: str, args: list[str], env: dict | None = None) -> Server:
    log_dir = str(tmp_path_factory.mktemp(name))
    try:
        return Server(args, env=env, name=name, log_dir=log_dir).start()
    except srvutil.ServerStartError as e:
        pytest.fail(str(e), pytrace=False)


def stop_and_check(srv: Server):
    code = srv.stop()
    assert code == 0, f"{srv.name} exited with {code} after SIGTERM\n{srv.log_tail()}"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The tiny model (tiny-qwen2-bpe, ChatML template) with default HTTP limits."""
    require_tiny()
    srv = start_server(tmp_path_factory, "tiny", tiny_args())
    yield srv
    stop_and_check(srv)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory):
    """The tiny model behind an API key (from a key file) with one allowed CORS origin."""
    require_tiny()
    key_file = tmp_path_factory.mktemp("key") / "api_key"
    key_file.write_text(API_KEY + "\n")
    srv = start_server(tmp_path_factory, "auth",
                       tiny_args("--api-key-file", str(key_file), "--cors-allowed-origins", CORS_ORIGIN))
    yield srv
    stop_and_check(srv)


@pytest.fixture(scope="session")
def base(server) -> str:
    return server.base


@pytest.fixture(scope="session")
def client(server):
    c = openai_client(server.base)
    yield c
    c.close()


@pytest.fixture(scope="session")
def smol_server(tmp_path_factory):
    """The embedded default model (SmolLM2-135M-Instruct Q4_1 GGUF): one real chat answer."""
    binary = srvutil.binary_path()
    if not binary.exists():
        pytest.skip(f"server binary not found: {binary}")
    model = srvutil.default_model_path()
    if not model.exists():
        pytest.skip(f"default model not found: {model} (run scripts/fetch_default_model.sh or set "
                    "MACSERVE_DEFAULT_MODEL)")
    srv = start_server(tmp_path_factory, "smollm2",
                       ["--model", str(model), "--served-model-name", "smollm2", "--max-model-len", "512",
                        "--max-num-seqs", "4"])
    yield srv
    stop_and_check(srv)
