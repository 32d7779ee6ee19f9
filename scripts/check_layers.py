#!/usr/bin/env python3
"""Checks that no module includes a header of a module above it (docs/architecture.md, layers).

Walks every C++/CUDA source and header of the tree, maps each file to its module by folder
(MODULES), maps each `#include "macserve/<module>/..."` (and each relative include) to the module
of the header it names, and checks every such edge against ALLOWED, the one table of which modules
a module may include. Prints each violation as `file:line: module A includes module B (not
allowed)` and exits 1; a source file in no module or an include of an unknown project header is
an error too. Usage: scripts/check_layers.py [--root DIR] [--list]. ctest runs it (check_layers).
"""
import argparse
import os
import re
import sys

SOURCE_SUFFIXES = (".h", ".hpp", ".cc", ".cpp", ".cu", ".cuh")
SKIP_DIRS = {".git", "shared", "fixtures", "corpus", "__pycache__"}

# Folder (or file) prefix -> module, first match wins: the layer order, bottom up.
MODULES = [
    ("kernels/", "kernels"),
    ("core/", "core"),
    ("backend/", "backend"),
    ("tokenizer/", "tokenizer"),
    ("models/loader/", "loader"),
    ("models/include/macserve/models/loader/", "loader"),
    ("models/", "models"),
    ("engine/sampling/", "sampling"),
    ("engine/request/", "request"),
    ("engine/cache/include/macserve/cache/kv_pool.h", "kv_pool"),
    ("engine/cache/src/kv_pool.cc", "kv_pool"),
    ("engine/cache/", "cache"),
    ("engine/scheduler/", "scheduler"),
    ("engine/runner/", "runner"),
    ("engine/include/", "engine"),
    ("engine/src/", "engine"),
    ("proto/", "proto"),
    ("server/chat/", "chat"),
    ("server/openai/", "openai"),
    ("server/metrics/", "metrics"),
    ("server/http/", "http"),
    ("server/grpc_client/", "grpc_client"),
    ("server/grpc/", "grpc"),
    ("server/loadgen/", "loadgen"),
    ("server/", "server"),
    ("tests/", "tests"),
]

# Project headers generated into the build tree (no source file to classify): prefix -> module.
GENERATED = [("macserve/v1/", "proto")]

# module -> the modules it may include (itself always). The same table is in docs/architecture.md.
ALLOWED = {
    "kernels": set(),
    "core": set(),
    "backend": {"core", "kernels"},
    "tokenizer": {"core"},
    "loader": {"core"},
    "models": {"core", "kernels", "backend", "loader"},
    "sampling": {"core"},
    "request": {"core", "sampling"},
    "cache": {"core"},
    "kv_pool": {"core", "backend", "cache"},
    "scheduler": {"core", "cache", "request", "sampling", "tokenizer"},
    "runner": {"core", "backend", "models", "cache", "kv_pool", "scheduler", "request", "sampling"},
    "engine": {"core", "backend", "tokenizer", "loader", "models", "sampling", "request", "cache",
               "kv_pool", "scheduler", "runner"},
    "proto": set(),
    "chat": {"core"},
    "openai": {"core", "tokenizer", "sampling", "request", "chat"},
    "metrics": {"core", "request", "engine"},
    "http": {"core", "tokenizer", "sampling", "request", "engine", "chat", "openai", "metrics"},
    "grpc_client": {"proto"},
    "grpc": {"core", "tokenizer", "sampling", "request", "engine", "chat", "openai", "metrics",
             "proto"},
    "loadgen": {"core", "tokenizer", "loader", "proto", "grpc_client"},
    "server": {"core", "tokenizer", "sampling", "request", "engine", "chat", "openai", "metrics",
               "http", "grpc", "proto"},
    "tests": None,  # tests and benchmarks may include anything
}

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')


def module_of(rel_path):
    for prefix, module in MODULES:
        if rel_path == prefix or rel_path.startswith(prefix):
            return module
    return None


def source_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".") and
                             not (rel_dir == "." and d.startswith("build")))
        for name in sorted(filenames):
            if name.endswith(SOURCE_SUFFIXES):
                yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


def public_headers(files):
    """`macserve/...` include path -> the file that defines it (any */include/ folder)."""
    headers = {}
    for f in files:
        i = f.find("include/macserve/")
        if i == 0 or (i > 0 and f[i - 1] == "/"):
            headers[f[i + len("include/"):]] = f
    return headers


def resolve(root, including, target, headers):
    """The repository path, or ("generated", module), of an include; None for a system header."""
    if target.startswith("macserve/"):
        if target in headers:
            return headers[target]
        for prefix, module in GENERATED:
            if target.startswith(prefix):
                return ("generated", module)
        return ("unknown", target)
    # A relative include: the including file's folder, then each folder above it (include dirs such
    # as tests/ sit there). Anything else is a system or third-party header.
    d = os.path.dirname(including)
    while True:
        cand = os.path.normpath(os.path.join(d, target)).replace(os.sep, "/")
        if not cand.startswith("..") and os.path.isfile(os.path.join(root, cand)):
            return cand
        if d in ("", "."):
            return None
        d = os.path.dirname(d)


def check(root, out=sys.stdout):
    files = list(source_files(root))
    headers = public_headers(files)
    errors = []
    edges = {}
    for f in files:
        src_module = module_of(f)
        if src_module is None:
            errors.append(f"{f}:1: file is in no module (add its folder to MODULES in check_layers.py)")
            continue
        with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
        for lineno, line in enumerate(lines, 1):
            m = INCLUDE_RE.match(line)
            if not m:
                continue
            target = m.group(2)
            if m.group(1) == "<" and not target.startswith("macserve/"):
                continue
            hit = resolve(root, f, target, headers)
            if hit is None:
                continue
            if isinstance(hit, tuple):
                if hit[0] == "unknown":
                    errors.append(f"{f}:{lineno}: includes {target}, a project header that does not exist")
                    continue
                dst_module = hit[1]
            else:
                dst_module = module_of(hit)
                if dst_module is None:
                    errors.append(f"{f}:{lineno}: includes {hit}, which is in no module")
                    continue
            if dst_module == src_module:
                continue
            edges.setdefault((src_module, dst_module), f"{f}:{lineno}")
            allowed = ALLOWED.get(src_module, set())
            if allowed is not None and dst_module not in allowed:
                errors.append(f"{f}:{lineno}: module {src_module} includes module {dst_module} (not allowed)")
    return errors, edges


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                    help="repository root (default: this script's checkout)")
    ap.add_argument("--list", action="store_true", help="print every module edge found, with one example")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    errors, edges = check(root)
    if args.list:
        for (a, b), where in sorted(edges.items()):
            print(f"{a} -> {b}  ({where})")
    for e in errors:
        print(e)
    if errors:
        print(f"check_layers: {len(errors)} violation(s) of the layer table (docs/architecture.md)",
              file=sys.stderr)
        return 1
    print(f"check_layers: {len(edges)} module edges, all allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
