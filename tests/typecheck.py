"""Run mypy over the package under its installed name: ``python tests/typecheck.py [MYPY ARGS]``.

The source tree's harness/ is the package livepatch_lab (pyproject.toml's package-dir). The
editable install reaches it through an import hook, which mypy does not follow, so this gives mypy
a directory where livepatch_lab is a link to harness/ ([tool.mypy] in pyproject.toml configures
the rest: which modules are strict)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mypy(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="livepatch-lab-mypy-") as tmp:
        (Path(tmp) / "livepatch_lab").symlink_to(ROOT / "harness")
        env = {**os.environ, "MYPYPATH": tmp}
        return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)


if __name__ == "__main__":
    out = mypy(*sys.argv[1:])
    sys.stdout.write(out.stdout + out.stderr)
    sys.exit(out.returncode)
