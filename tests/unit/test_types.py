"""The package type-checks: mypy over all of harness/ ([tool.mypy] in pyproject.toml: strict where
the code is new), as part of the suite `.ci/run` runs; and the unit tests' fakes implement the
protocols the lab's steps use (tests/unit/fakes/conformance.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from typecheck import mypy  # noqa: E402  (tests/typecheck.py: the package under its installed name)


def test_mypy_finds_no_type_error_in_the_package():
    out = mypy("--no-error-summary")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_fake_kernel_and_guest_implement_the_labs_protocols():
    out = mypy("--no-error-summary", "tests/unit/fakes/conformance.py")
    problems = [line for line in out.stdout.splitlines() if "annotation-unchecked" not in line]
    assert out.returncode == 0, "\n".join(problems) + out.stderr
