"""`macserve generate` as a user runs it: the text on stdout, and the --stats-json file whose
engine-wide per-layer MAC counts must cover every step of the single request (they were once read
before the engine had published its last step)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

import srvutil
from conftest import require_tiny

MAC = ["--attention", "mac", "--mac-window", "64", "--mac-band", "16", "--mac-min-context", "8",
       "--mac-threshold", "0.45"]


@pytest.mark.timeout(300)
def test_generate_stats_json_counts_every_step(tmp_path):
    require_tiny()
    for run in range(3):  # the stale read showed in about two runs of three
        stats = tmp_path / f"stats{run}.json"
        out = subprocess.run(
            [str(srvutil.binary_path()), "generate", "--model", str(srvutil.TINY_MODEL), "--prompt",
             "Once upon a time there was", "--max-tokens", "40", "--ignore-eos", *MAC, "--stats-json",
             str(stats)], capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip(), "no text on stdout"
        j = json.loads(stats.read_text())
        assert len(j["completion_ids"]) == 40
        assert j["finish_reason"] == "length"
        mac = j["mac"]
        assert mac["heads"] > 0 and mac["hit_heads"] > 0, mac
        assert sum(mac["layer_heads"]) == mac["heads"], (run, mac)
        assert sum(mac["layer_hits"]) == mac["hit_heads"], (run, mac)


@pytest.mark.timeout(300)
def test_generate_mac_below_min_context_equals_full(tmp_path):
    """A request whose prompt plus output stays below --mac-min-context takes MAC's plain path: the
    same token ids as --attention full, and no MAC head decisions at all."""
    require_tiny()
    ids = {}
    for attention in ("full", "mac"):
        stats = tmp_path / f"{attention}.json"
        out = subprocess.run(
            [str(srvutil.binary_path()), "generate", "--model", str(srvutil.TINY_MODEL), "--prompt",
             "Once upon a time there was a little", "--max-tokens", "48", "--ignore-eos", "--attention",
             attention, "--mac-min-context", "2048", "--stats-json", str(stats)],
            capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-2000:]
        j = json.loads(stats.read_text())
        ids[attention] = j["completion_ids"]
        if attention == "mac":
            assert j["mac"]["heads"] == 0 and j["mac"]["kv_bytes_read"] == 0, j["mac"]
    assert len(ids["full"]) == 48
    assert ids["mac"] == ids["full"]


def test_generate_bad_stats_path_fails_cleanly(tmp_path):
    require_tiny()
    out = subprocess.run(
        [str(srvutil.binary_path()), "generate", "--model", str(srvutil.TINY_MODEL), "--prompt", "Hello",
         "--max-tokens", "2", "--stats-json", str(tmp_path / "no" / "such" / "dir" / "s.json")],
        capture_output=True, text=True, timeout=240)
    assert out.returncode != 0
    assert "stats-json" in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("name,value,allowed", [
    ("MACSERVE_CPU_GEMM", "blas", "invariant, openblas"),
    ("MACSERVE_CUDA_ATTENTION", "fast", "auto, general"),
    ("MACSERVE_CUDA_GRAPHS", "yes", "1 (on) or 0 (off)"),
    ("MACSERVE_MAC_FORCE_HITS", "1.5", "RATE or RATE,clustered"),
    ("MACSERVE_LOG_LEVEL", "loud", "trace, debug, info"),
])
def test_bad_environment_value_is_named(name, value, allowed):
    # The environment is read once at start-up (server/environment.cc): a bad value stops the
    # program before any model loads, with an error naming the variable and the allowed values.
    env = dict(os.environ, **{name: value})
    out = subprocess.run([str(srvutil.binary_path()), "generate", "--model", "/nonexistent", "--prompt", "x"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert name in out.stderr and value in out.stderr and allowed in out.stderr, out.stderr[-2000:]
    assert "/nonexistent" not in out.stderr, out.stderr[-2000:]


def test_bad_enum_flag_lists_the_names():
    out = subprocess.run([str(srvutil.binary_path()), "generate", "--attention", "sparse"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--attention" in out.stderr and "mac" in out.stderr and "full" in out.stderr, out.stderr[-2000:]


@pytest.mark.timeout(300)
def test_generate_deterministic_is_accepted_logged_and_keeps_the_cpu_text(tmp_path):
    """--deterministic: generate takes it and says so at start-up; the CPU backend is batch-invariant
    already, so the text and token ids equal those without the flag. With MACSERVE_CPU_GEMM=openblas
    (not invariant) it warns that the switch is ignored and still gives the invariant kernel's
    output. serve lists the flag too."""
    require_tiny()
    runs = {}
    for name, flags, extra_env in (("default", [], {}), ("deterministic", ["--deterministic"], {}),
                                   ("openblas", ["--deterministic"], {"MACSERVE_CPU_GEMM": "openblas"})):
        stats = tmp_path / f"{name}.json"
        out = subprocess.run(
            [str(srvutil.binary_path()), "generate", "--model", str(srvutil.TINY_MODEL), "--prompt",
             "Once upon a time there was", "--max-tokens", "32", "--ignore-eos", *flags, "--stats-json",
             str(stats)], capture_output=True, text=True, timeout=240, env=dict(os.environ, **extra_env))
        assert out.returncode == 0, out.stderr[-2000:]
        runs[name] = (out.stdout, json.loads(stats.read_text())["completion_ids"], out.stderr)
    assert "deterministic mode: on" in runs["deterministic"][2], runs["deterministic"][2][-2000:]
    assert "deterministic mode" not in runs["default"][2], runs["default"][2][-2000:]
    assert "ignored under --deterministic" in runs["openblas"][2], runs["openblas"][2][-2000:]
    assert len(runs["default"][1]) == 32
    for name in ("deterministic", "openblas"):
        assert runs[name][1] == runs["default"][1], name
        assert runs[name][0] == runs["default"][0], name
    helped = subprocess.run([str(srvutil.binary_path()), "serve", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "--deterministic" in helped.stdout, helped.stdout[-2000:]
