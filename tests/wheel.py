"""The lab as a vendor gets it: the wheel built from this checkout (pip wheel), and a fresh venv
outside the checkout with that wheel installed (tests/unit/test_packaging.py,
tests/integration/test_installed_wheel.py)."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("livepatch_lab-*.whl")
    return wheel


def members(wheel: Path) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(wheel) as z:
        return {i.filename: i for i in z.infolist()}


def install(wheel: Path, venv: Path) -> Path:
    """A fresh venv at ``venv`` (no site packages of this one) with the wheel and its dependencies;
    returns its bin/ directory. pip is this interpreter's, pointed at the new venv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                           str(wheel)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv / "bin"
