"""The lab as a vendor gets it: the wheel built from this checkout (pip wheel), and a fresh venv
outside the checkout with that wheel installed (tests/unit/test_packaging.py,
tests/integration/test_installed_wheel.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "harness", "kernels", "images")


def build(out: Path) -> Path:
    """The wheel, built from a copy of what it is made of: pip builds in the source tree, and its
    build/ and *.egg-info would be left in the checkout, and raced over by two builds at once."""
    with tempfile.TemporaryDirectory(prefix="livepatch-lab-src-") as tmp:
        src = Path(tmp)
        for name in SOURCES:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / name, src / name)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
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
