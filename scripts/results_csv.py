"""Appending benchmark rows to a results CSV under docs/perf: the header on a new file, and the
checkout's commit for each row. Used by the scripts/bench_*.py and mac_long_context.py runners."""
import contextlib
import csv
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit():
    """The checkout's short commit id ("" outside a git checkout)."""
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


@contextlib.contextmanager
def appending(path, header):
    """A csv.writer appending to path; writes header first when the file is new."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(header)
        yield w
