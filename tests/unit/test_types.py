"""The package type-checks: mypy over all of harness/ ([tool.mypy] in pyproject.toml: strict where
the code is new), as part of the suite `.ci/run` runs; and the unit tests' fakes implement the
protocols the lab's steps use (tests/unit/fakes/conformance.py)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_type_error_in_the_package():
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_fake_kernel_and_guest_implement_the_labs_protocols():
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "tests/unit/fakes/conformance.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    problems = [line for line in out.stdout.splitlines() if "annotation-unchecked" not in line]
    assert out.returncode == 0, "\n".join(problems) + out.stderr
