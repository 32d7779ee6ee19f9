"""`macserve generate` as a user runs it: the text on stdout, and the --stats-json file whose
engine-wide per-layer MAC counts must cover every step of the single request (they were once read
before the engine had published its last step)."""
from __future__ import annotations

import json
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


def test_generate_bad_stats_path_fails_cleanly(tmp_path):
    require_tiny()
    out = subprocess.run(
        [str(srvutil.binary_path()), "generate", "--model", str(srvutil.TINY_MODEL), "--prompt", "Hello",
         "--max-tokens", "2", "--stats-json", str(tmp_path / "no" / "such" / "dir" / "s.json")],
        capture_output=True, text=True, timeout=240)
    assert out.returncode != 0
    assert "stats-json" in out.stderr, out.stderr[-2000:]
