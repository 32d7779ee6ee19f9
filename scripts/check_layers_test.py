#!/usr/bin/env python3
"""Self-test of check_layers.py on small temporary trees (ctest: check_layers_self_test).

One tree has only allowed includes (a scheduler header including core and cache, a relative
include inside backend, a test including the engine facade): the script must pass. The same tree
plus one upward include (core including the scheduler) must fail, naming the file, the line and
both modules; so must a file outside every module and an include of a missing project header.
"""
import os
import subprocess
import sys
import tempfile

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check_layers.py")


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def run(root):
    p = subprocess.run([sys.executable, SCRIPT, "--root", root], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def allowed_tree(root):
    write(root, "core/include/macserve/core/error.h", "#pragma once\n#include <string>\n")
    write(root, "engine/cache/include/macserve/cache/block_manager.h",
          '#pragma once\n#include "macserve/core/error.h"\n')
    write(root, "engine/scheduler/include/macserve/scheduler/scheduler.h",
          '#pragma once\n#include "macserve/cache/block_manager.h"\n#include "macserve/core/error.h"\n')
    write(root, "backend/src/helper.h", "#pragma once\n")
    write(root, "backend/src/cpu.cc", '#include "helper.h"\n#include "macserve/core/error.h"\n')
    write(root, "engine/include/macserve/engine/engine.h",
          '#pragma once\n#include "macserve/core/error.h"\n')
    write(root, "tests/unit/engine_test.cc",
          '#include "macserve/engine/engine.h"\n#include "macserve/scheduler/scheduler.h"\n')


def expect(cond, what, output):
    if not cond:
        print(f"FAIL: {what}\n--- check_layers output ---\n{output}")
        sys.exit(1)


def main():
    with tempfile.TemporaryDirectory() as root:
        allowed_tree(root)
        rc, out = run(root)
        expect(rc == 0, "a tree with allowed includes only must pass", out)

        # core sits below everything: an include of the scheduler is an upward edge.
        write(root, "core/src/bad.cc", '#include <vector>\n\n#include "macserve/scheduler/scheduler.h"\n')
        rc, out = run(root)
        expect(rc == 1, "an upward include must fail", out)
        expect("core/src/bad.cc:3: module core includes module scheduler (not allowed)" in out,
               "the violation names file:line and both modules", out)
        os.remove(os.path.join(root, "core/src/bad.cc"))

        # The cache may not include the scheduler through a relative path either.
        write(root, "engine/cache/src/sneaky.cc", '#include "../../scheduler/include/macserve/scheduler/scheduler.h"\n')
        rc, out = run(root)
        expect(rc == 1 and "engine/cache/src/sneaky.cc:1: module cache includes module scheduler (not allowed)" in out,
               "a relative upward include must fail", out)
        os.remove(os.path.join(root, "engine/cache/src/sneaky.cc"))

        write(root, "misc/orphan.cc", "int x;\n")
        rc, out = run(root)
        expect(rc == 1 and "misc/orphan.cc:1: file is in no module" in out, "a file outside every module fails", out)
        os.remove(os.path.join(root, "misc/orphan.cc"))

        write(root, "engine/scheduler/src/missing.cc", '#include "macserve/scheduler/no_such.h"\n')
        rc, out = run(root)
        expect(rc == 1 and "a project header that does not exist" in out, "a missing project header fails", out)
        os.remove(os.path.join(root, "engine/scheduler/src/missing.cc"))

        rc, out = run(root)
        expect(rc == 0, "the tree passes again once the violations are gone", out)
    print("check_layers self-test: ok")


if __name__ == "__main__":
    main()
